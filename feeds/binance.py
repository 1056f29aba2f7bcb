"""Binance spot and USD-M futures feed stages: one combined-stream websocket each.

Spot: ``<ws_url>/stream?streams=...`` (bookTicker, depth@100ms, trade / aggTrade). USD-M since 2026-04-23
(shared/reference/EXCHANGES.md section 0 and 3.1): bookTicker and depth only on ``/public``, trades only on
``/market``; a stream on the wrong path receives nothing, silently. So a USD-M stage speaks either the public
streams or the trades, and a config that wants both runs two USD-M feed stages (one connection each).
The venue's pings are answered by websocket-client as they arrive; connections are renewed before the 24 h cut
(``max_age_s``). Books are synced with a REST depth snapshot by the documented U/u (spot) or U/u/pu (USD-M) rules.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from feeds.binance_messages import BinanceParser
from feeds.feed import FeedParams, WsFeed
from pipeline.config import PipelineConfig, StageSpec


class BinanceParams(FeedParams, forbid_unknown_fields=True):
    """Binance spot feed parameters (see ``FeedParams``)."""

    rest_url: str = "https://api.binance.com"
    """REST base (depth snapshots)."""
    ws_url: str = "wss://stream.binance.com:9443"
    """Websocket base; combined streams are at ``<ws_url>/stream``."""
    trade_stream: Literal["aggTrade", "trade"] = "aggTrade"
    """Which trade stream ``trades`` subscribes."""
    depth_speed: Literal["", "0ms", "100ms", "250ms", "500ms", "1000ms"] = "100ms"
    """Update speed suffix of the depth diff stream (``<sym>@depth@100ms``; "" = the venue's default speed)."""


class BinanceUsdmParams(BinanceParams, forbid_unknown_fields=True):
    """Binance USD-M futures feed parameters."""

    rest_url: str = "https://fapi.binance.com"
    ws_url: str = "wss://fstream.binance.com"
    """Websocket base; streams are at ``<ws_url>/public/stream`` (book) or ``<ws_url>/market/stream`` (trades)."""


class BinanceFeed(WsFeed):
    """One Binance spot combined-stream connection for every ``venue = "binance"`` instrument."""

    Params: ClassVar[type[msgspec.Struct]] = BinanceParams
    venue: ClassVar[str] = "binance"
    market: ClassVar[str] = "spot"

    def make_parser(self) -> BinanceParser:
        return BinanceParser(self.symbols, self.emit, market=self.market, books=self.p.books, depth=self.p.depth)

    def streams(self) -> list[str]:
        """Stream names of the connection."""
        out = []
        for sym in self.symbols:
            s = sym.lower()
            if self.p.tickers:
                out.append(f"{s}@bookTicker")
            if self.p.books:
                out.append(f"{s}@depth@{self.p.depth_speed}" if self.p.depth_speed else f"{s}@depth")
            if self.p.trades:
                out.append(f"{s}@{self.p.trade_stream}")
        return out

    def path(self) -> str:
        return "/stream"

    def connect_url(self) -> str:
        return f"{self.p.ws_url.rstrip('/')}{self.path()}?streams={'/'.join(self.streams())}"

    def snapshot_url(self, symbol: str) -> str:
        return f"{self.p.rest_url.rstrip('/')}/api/v3/depth?symbol={symbol}&limit=1000"


class BinanceUsdmFeed(BinanceFeed):
    """One Binance USD-M combined-stream connection: the ``/public`` streams (bookTicker, depth) or the
    ``/market`` trades, for every ``venue = "binance-usdm"`` instrument."""

    Params: ClassVar[type[msgspec.Struct]] = BinanceUsdmParams
    venue: ClassVar[str] = "binance-usdm"
    market: ClassVar[str] = "usdm"

    @classmethod
    def check_spec(cls, cfg: PipelineConfig, spec: StageSpec) -> str | None:
        problem = super().check_spec(cfg, spec)
        p = spec.params
        book_side = p.get("tickers", True) or p.get("books", False)
        if not problem and p.get("trades", False) and book_side:
            problem = ("USD-M serves bookTicker/depth on /public and trades on /market (since 2026-04-23): use two "
                       "feed stages, one with trades = false, one with tickers = false and trades = true")
        return problem

    def path(self) -> str:
        return "/market/stream" if self.p.trades else "/public/stream"

    def snapshot_url(self, symbol: str) -> str:
        return f"{self.p.rest_url.rstrip('/')}/fapi/v1/depth?symbol={symbol}&limit=1000"
