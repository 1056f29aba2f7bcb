"""KuCoin spot feed stage: token from ``bullet-public``, one websocket, tickers / level2 book / matches.

Protocol (shared/reference/EXCHANGES.md section 1): ``POST /api/v1/bullet-public`` gives a token and servers;
connect to ``<endpoint>?token=..&connectId=..``; use the connection only after the welcome; ping every
``pingInterval`` (a missing pong within ``pingTimeout`` means the connection is dead); subscribe with
comma-separated symbols (at most 100 per topic). Every reconnect asks for a fresh token. Books are synced with a
``level2_100`` REST snapshot by the documented sequence rules (``feeds/book.py``).
"""

from __future__ import annotations

import time
from typing import ClassVar

import msgspec
import websocket

from feeds.feed import FeedError, FeedParams, WsFeed, http
from feeds.kucoin_messages import KucoinParser

TOPIC_SYMBOLS = 100
"""KuCoin's limit of symbols per subscribe topic."""


class KucoinParams(FeedParams, forbid_unknown_fields=True):
    """KuCoin feed parameters (see ``FeedParams``)."""

    rest_url: str = "https://api.kucoin.com"
    """REST base (the simulator: ``http://127.0.0.1:PORT``); the websocket endpoint comes from bullet-public."""


class _Server(msgspec.Struct):
    endpoint: str
    pingInterval: int = 18000
    pingTimeout: int = 10000


class _Bullet(msgspec.Struct):
    token: str
    instanceServers: list[_Server]


class _BulletReply(msgspec.Struct):
    code: str
    data: _Bullet | None = None
    msg: str = ""


_bullet = msgspec.json.Decoder(_BulletReply)


class KucoinFeed(WsFeed):
    """One KuCoin spot websocket connection for every configured ``venue = "kucoin"`` instrument."""

    Params: ClassVar[type[msgspec.Struct]] = KucoinParams
    venue: ClassVar[str] = "kucoin"

    def make_parser(self) -> KucoinParser:
        self.ping_interval = 18.0
        self.ping_timeout = 10.0
        self.last_ping = 0.0
        self.awaiting_pong = 0.0
        self.ping_id = 0
        return KucoinParser(self.symbols, self.emit, books=self.p.books, depth=self.p.depth)

    def connect_url(self) -> str:
        url = self.p.rest_url.rstrip("/") + "/api/v1/bullet-public"
        try:
            reply = _bullet.decode(http("POST", url, self.p.timeout_s, b""))
        except msgspec.DecodeError as e:
            raise FeedError(f"POST {url}: unexpected answer: {e}") from None
        if reply.code != "200000" or reply.data is None or not reply.data.instanceServers:
            raise FeedError(f"POST {url}: code {reply.code} {reply.msg}")
        server = reply.data.instanceServers[0]
        self.ping_interval = server.pingInterval / 1000
        self.ping_timeout = server.pingTimeout / 1000
        self.connect_id = str(time.time_ns())
        return f"{server.endpoint}?token={reply.data.token}&connectId={self.connect_id}"

    def subscribe(self, ws: websocket.WebSocket) -> None:
        """Wait for the welcome, then subscribe (acks are checked as they arrive)."""
        _, data = ws.recv_data()
        try:
            welcome = msgspec.json.decode(data)
        except msgspec.DecodeError:
            welcome = {}
        if not isinstance(welcome, dict) or welcome.get("type") != "welcome":
            raise FeedError(f"expected a welcome from {self.url.split('?')[0]}, got {data[:120]!r}")
        syms = list(self.symbols)
        topics = [t for t, on in (("/market/ticker:", self.p.tickers), ("/market/match:", self.p.trades),
                                  ("/market/level2:", self.p.books)) if on]
        n = 0
        for topic in topics:
            for i in range(0, len(syms), TOPIC_SYMBOLS):
                n += 1
                ws.send(msgspec.json.encode({"id": str(n), "type": "subscribe",
                                             "topic": topic + ",".join(syms[i:i + TOPIC_SYMBOLS]),
                                             "privateChannel": False, "response": True}).decode())
        self.last_ping = time.monotonic()
        self.awaiting_pong = 0.0

    def ping(self, ws: websocket.WebSocket, now: float) -> None:
        if self.awaiting_pong and now - self.awaiting_pong > self.ping_timeout:
            raise FeedError(f"no pong within {self.ping_timeout:g} s")
        if now - self.last_ping >= self.ping_interval:
            self.ping_id += 1
            ws.send(f'{{"id":"p{self.ping_id}","type":"ping"}}')
            self.last_ping = now
            if not self.awaiting_pong:
                self.awaiting_pong = now

    def on_control(self, control) -> None:
        if getattr(control, "type", "") == "pong":
            self.awaiting_pong = 0.0
        else:
            super().on_control(control)

    def snapshot_url(self, symbol: str) -> str:
        return f"{self.p.rest_url.rstrip('/')}/api/v1/market/orderbook/level2_100?symbol={symbol}"
