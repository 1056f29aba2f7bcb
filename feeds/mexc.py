"""MEXC spot v3 feed stage: one websocket (``wss://wbs-api.mexc.com/ws``), aggre bookTicker / deals / depth.

Protocol (shared/reference/EXCHANGES.md section 4): JSON text control frames, binary protobuf data frames
(``feeds/mexc_messages.py``). After connecting, one ``{"method":"SUBSCRIPTION","params":[...]}`` names every
channel: ``spot@public.aggre.bookTicker.v3.api.pb@100ms@SYM`` (tickers), ``spot@public.aggre.deals.v3.api.pb@100ms@SYM``
(trades), ``spot@public.aggre.depth.v3.api.pb@100ms@SYM`` (books); the venue allows at most 30 per connection
(``check_spec`` refuses more). The venue cuts a connection that sent nothing for 60 s, so the feed sends
``{"method":"PING"}`` every ``ping_interval_s`` and treats a PONG missing for ``pong_timeout_s`` as a dead
connection. Books are synced with ``GET /api/v3/depth?symbol=X&limit=1000`` by the fromVersion / toVersion rules
(``MexcSync``).
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

import msgspec
import websocket

from feeds.feed import FeedError, FeedParams, WsFeed
from feeds.mexc_messages import MexcParser
from pipeline.config import PipelineConfig, StageSpec

MAX_SUBSCRIPTIONS = 30
"""MEXC's limit of subscriptions per connection."""

CHANNELS = {"tickers": "spot@public.aggre.bookTicker.v3.api.pb", "trades": "spot@public.aggre.deals.v3.api.pb",
            "books": "spot@public.aggre.depth.v3.api.pb"}
"""Channel of each feed switch."""


class MexcParams(FeedParams, forbid_unknown_fields=True):
    """MEXC feed parameters (see ``FeedParams``)."""

    rest_url: str = "https://api.mexc.com"
    """REST base (depth snapshots); the simulator's is ``http://127.0.0.1:PORT/mexc``."""
    ws_url: str = "wss://wbs-api.mexc.com/ws"
    """Websocket URL (the simulator's: ``ws://127.0.0.1:PORT/mexc/ws``)."""
    speed: Literal["100ms", "10ms"] = "100ms"
    """Push interval of the aggre channels."""
    ping_interval_s: float = 20.0
    """Send a PING this often (the venue cuts a connection silent for 60 s)."""
    pong_timeout_s: float = 10.0
    """A PING unanswered for this long means the connection is dead: reconnect."""


def channels(symbols: list[str], tickers: bool, trades: bool, books: bool, speed: str = "100ms") -> list[str]:
    """The channels a feed with these switches subscribes."""
    on = [CHANNELS[k] for k, v in (("tickers", tickers), ("trades", trades), ("books", books)) if v]
    return [f"{ch}@{speed}@{sym}" for sym in symbols for ch in on]


class MexcFeed(WsFeed):
    """One MEXC spot v3 websocket connection for every configured ``venue = "mexc"`` instrument."""

    Params: ClassVar[type[msgspec.Struct]] = MexcParams
    venue: ClassVar[str] = "mexc"

    @classmethod
    def check_spec(cls, cfg: PipelineConfig, spec: StageSpec) -> str | None:
        problem = super().check_spec(cfg, spec)
        if problem:
            return problem
        p = spec.params
        syms = [i.symbol for i in cfg.instruments if i.venue == cls.venue]
        n = len(channels(syms, bool(p.get("tickers", True)), bool(p.get("trades", False)),
                         bool(p.get("books", False))))
        if n > MAX_SUBSCRIPTIONS:
            return (f"{n} MEXC channels ({len(syms)} symbols) exceed the venue's {MAX_SUBSCRIPTIONS} subscriptions "
                    "per connection: split the instruments over several feed stages")
        if not n:
            return "nothing to subscribe: set at least one of tickers, trades, books"
        return None

    def make_parser(self) -> MexcParser:
        self.last_ping = 0.0
        self.awaiting_pong = 0.0
        return MexcParser(self.symbols, self.emit, books=self.p.books, depth=self.p.depth)

    def connect_url(self) -> str:
        return self.p.ws_url

    def subscribe(self, ws: websocket.WebSocket) -> None:
        """Send one SUBSCRIPTION for every channel (the acks come back as control frames)."""
        params = channels(list(self.symbols), self.p.tickers, self.p.trades, self.p.books, self.p.speed)
        ws.send(msgspec.json.encode({"method": "SUBSCRIPTION", "params": params}).decode())
        self.last_ping = time.monotonic()
        self.awaiting_pong = 0.0

    def ping(self, ws: websocket.WebSocket, now: float) -> None:
        if self.awaiting_pong and now - self.awaiting_pong > self.p.pong_timeout_s:
            raise FeedError(f"no PONG within {self.p.pong_timeout_s:g} s")
        if now - self.last_ping >= self.p.ping_interval_s:
            ws.send('{"method":"PING"}')
            self.last_ping = now
            if not self.awaiting_pong:
                self.awaiting_pong = now

    def on_control(self, control) -> None:
        kind = getattr(control, "type", "")
        if kind == "pong":
            self.awaiting_pong = 0.0
        elif kind == "error":
            self.ctx.error("venue_error", f"mexc: {control.text}")

    def snapshot_url(self, symbol: str) -> str:
        return f"{self.p.rest_url.rstrip('/')}/api/v3/depth?symbol={symbol}&limit=1000"
