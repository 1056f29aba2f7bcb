"""KuCoin spot: REST routes and the ``/kucoin/ws`` websocket, in the venue's shapes (EXCHANGES.md section 1).

REST at the root and under ``/kucoin`` (base ``http://127.0.0.1:P`` or ``http://127.0.0.1:P/kucoin``):
``POST /api/v1/bullet-public``, ``GET /api/v2/symbols[/{symbol}]``, ``/api/v1/market/candles``,
``/api/v1/market/orderbook/level2_20`` / ``level2_100``, ``/api/v3/market/orderbook/level2`` (full depth; no
signature asked), ``/api/v1/timestamp``. Errors: HTTP 400 with ``{"code":"400100","msg":...}``.

Websocket ``/kucoin/ws?token=T&connectId=C``: topics ``/market/ticker:``, ``/market/level2:``, ``/market/match:``
with comma-separated symbols; with a ``bullet-private`` token also ``/spotMarket/tradeOrdersV2`` (privateChannel,
order entry in ``orders_kucoin``). Frames copy the recorded 2021 frames' shapes and key order; level2 adds ``time``
as the current venue does. Matches use the recorded ``trade.l3match`` shape (``symbol, sequence, side, size,
price, takerOrderId, time`` (ns, string), ``type, makerOrderId, tradeId``), which is also what ``/market/match``
sends today. Sequences are the book's change counter plus a per-symbol base; every change takes one sequence.
Tickers go out on a BBO change or trade, at most every ``kucoin_ticker_ms`` of simulated time per symbol, and
carry the book sequence at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from .faults import malformed_frame
from .market import ASK, BID, MarketEvent
from .registry import Conn

if TYPE_CHECKING:
    from .engine import Engine

VENUE = "kucoin"
TOPICS = ("/market/ticker:", "/market/level2:", "/market/match:")
PRIVATE_TOPICS = ("/spotMarket/tradeOrdersV2",)
"""Served to connections opened with a ``bullet-private`` token (frames built in ``orders_kucoin``)."""
CANDLE_TYPES = {"1min": 1, "3min": 3, "5min": 5, "15min": 15, "30min": 30, "1hour": 60, "2hour": 120,
                "4hour": 240, "6hour": 360, "8hour": 480, "12hour": 720, "1day": 1440}
SEQ_BASE = 1_613_000_000_000
ID_BASE = 0x66A0 << 80


def ok(data: Any) -> web.Response:
    return web.json_response({"code": "200000", "data": data}, dumps=_dumps)


def fail(msg: str, code: str = "400100", status: int = 400) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _message(topic: str, subject: str) -> Callable[[dict[str, Any]], bytes]:
    def wrap(data: dict[str, Any]) -> bytes:
        return orjson.dumps({"data": data, "subject": subject, "topic": topic, "type": "message"})

    return wrap


class KucoinVenue:
    """KuCoin spot routes and market-data publishing."""

    name = VENUE

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.market = engine.market
        self.registry = engine.registry
        self.faults = engine.faults
        self.tokens: set[str] = set()
        self.private_tokens: set[str] = set()
        """Tokens from ``bullet-private`` (order entry): they may also subscribe to the private topics."""
        n = len(self.market.instruments)
        self.seq_base = [SEQ_BASE + i * 10**9 for i in range(n)]
        self.ticker_us = engine.opts.kucoin_ticker_ms * 1000
        self.last_ticker = [-(10**18)] * n
        self.ticker_timer = [False] * n

    # routes --------------------------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        g = self.faults.rest_guard
        for pre in ("", "/kucoin"):
            app.router.add_post(pre + "/api/v1/bullet-public", g(VENUE, self.bullet))
            app.router.add_get(pre + "/api/v2/symbols", g(VENUE, self.symbols))
            app.router.add_get(pre + "/api/v2/symbols/{symbol}", g(VENUE, self.symbol))
            app.router.add_get(pre + "/api/v1/market/candles", g(VENUE, self.candles))
            app.router.add_get(pre + "/api/v1/market/orderbook/level2_20", g(VENUE, self.book(20)))
            app.router.add_get(pre + "/api/v1/market/orderbook/level2_100", g(VENUE, self.book(100)))
            app.router.add_get(pre + "/api/v3/market/orderbook/level2", g(VENUE, self.book(None)))
            app.router.add_get(pre + "/api/v1/timestamp", g(VENUE, self.timestamp))
        app.router.add_get("/kucoin/ws", self.websocket)

    # REST ----------------------------------------------------------------------------------------------------------
    async def bullet(self, request: web.Request) -> web.Response:
        return ok(self.bullet_data(request, private=False))

    def bullet_data(self, request: web.Request, private: bool) -> dict[str, Any]:
        """A new token (public, or private for ``bullet-private``) and the instance server list."""
        token = secrets.token_urlsafe(24)
        (self.private_tokens if private else self.tokens).add(token)
        o = self.engine.opts
        return {"token": token, "instanceServers": [{
            "endpoint": f"ws://{request.host}/kucoin/ws", "encrypt": False, "protocol": "websocket",
            "pingInterval": o.ping_interval_ms, "pingTimeout": o.ping_timeout_ms}]}

    def _symbol_info(self, i: int) -> dict[str, Any]:
        ins = self.market.instruments[i]
        return {
            "symbol": ins.symbol, "name": ins.symbol, "baseCurrency": ins.base, "quoteCurrency": ins.quote,
            "feeCurrency": ins.quote, "market": "USDS", "baseMinSize": ins.lot_str,
            "quoteMinSize": str(ins.min_notional),
            "baseMaxSize": "10000000000", "quoteMaxSize": "99999999", "baseIncrement": ins.lot_str,
            "quoteIncrement": "0.000001", "priceIncrement": ins.tick_str, "priceLimitRate": "0.1",
            "minFunds": str(ins.min_notional), "isMarginEnabled": True, "enableTrading": True, "feeCategory": 1,
            "makerFeeCoefficient": "1.00", "takerFeeCoefficient": "1.00", "st": False,
            "callauctionIsEnabled": False, "callauctionPriceFloor": None, "callauctionPriceCeiling": None,
            "callauctionFirstStageStartTime": None, "callauctionSecondStageStartTime": None,
            "callauctionThirdStageStartTime": None, "tradingStartTime": None,
        }

    async def symbols(self, request: web.Request) -> web.Response:
        return ok([self._symbol_info(i) for i in range(len(self.market.instruments))])

    async def symbol(self, request: web.Request) -> web.Response:
        i = self._find(request.match_info["symbol"])
        return fail("symbol not exists") if i is None else ok(self._symbol_info(i))

    async def timestamp(self, request: web.Request) -> web.Response:
        return ok(self.engine.venue_ms(VENUE))

    def _find(self, symbol: str) -> int | None:
        i = self.market.find(symbol)
        return i if i is not None and self.market.instruments[i].symbol == symbol else None

    def book(self, depth: int | None) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            i = self._find(request.query.get("symbol", ""))
            if i is None:
                return fail("symbol not exists")
            ins, book = self.market.instruments[i], self.market.books[i]
            return ok({
                "time": self.engine.venue_ms(VENUE), "sequence": str(self.seq_base[i] + book.seq),
                "bids": [[ins.kprice(p), ins.ksize(q)] for p, q in book.levels(BID, depth)],
                "asks": [[ins.kprice(p), ins.ksize(q)] for p, q in book.levels(ASK, depth)]})

        return handler

    async def candles(self, request: web.Request) -> web.Response:
        q = request.query
        i = self._find(q.get("symbol", ""))
        if i is None:
            return fail("symbol not exists")
        minutes = CANDLE_TYPES.get(q.get("type", ""))
        if minutes is None:
            return fail(f"type must be one of {', '.join(CANDLE_TYPES)}")
        try:
            start_at, end_at = int(q.get("startAt") or 0), int(q.get("endAt") or 0)
        except ValueError:
            return fail("startAt and endAt must be integers (seconds)")
        now_min = self.engine.now_ms() // 60_000
        last = min(end_at // 60 if end_at > 0 else now_min, now_min)
        first = max(-(-start_at // 60), last - 1500 * minutes + 1)
        ins, store = self.market.instruments[i], self.market.candles[i]
        bars = store.bars(minutes, first, last)[-1500:]
        rows = [[str(m * 60), ins.kprice(b[0]), ins.kprice(b[3]), ins.kprice(b[1]), ins.kprice(b[2]),
                 ins.ksize(b[4]), ins.notional(b[5]).rstrip("0").rstrip(".") or "0"] for m, b in bars]
        rows.reverse()
        return ok(rows)

    # websocket -----------------------------------------------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        token = request.query.get("token", "")
        cid = request.query.get("connectId") or str(time.time_ns())
        ws = web.WebSocketResponse(timeout=2.0, max_msg_size=1 << 20)
        await ws.prepare(request)
        if token not in self.tokens and token not in self.private_tokens:
            with contextlib.suppress(Exception):
                await ws.send_str(_dumps({"id": cid, "type": "error", "code": 401, "data": "token is invalid"}))
                await ws.close(code=1008, message=b"token is invalid")
            return ws
        reg = self.registry
        conn = reg.open(VENUE, ws, request)
        conn.meta["private"] = token in self.private_tokens
        reg.send_control(conn, orjson.dumps({"id": cid, "type": "welcome"}))
        watchdog = asyncio.get_running_loop().create_task(self._watchdog(conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(conn, msg.data)
        finally:
            watchdog.cancel()
            reg.close(conn)
        return ws

    async def _watchdog(self, conn: Conn) -> None:
        """Drop a client that sent no ping for pingInterval + pingTimeout."""
        o = self.engine.opts
        limit = (o.ping_interval_ms + o.ping_timeout_ms) / 1000
        while not conn.closed:
            left = conn.last_seen + limit - time.monotonic()
            if left <= 0:
                await self.registry.shut(conn, 1000, b"ping timeout")
                return
            await asyncio.sleep(left + 0.01)

    def _on_text(self, conn: Conn, text: str) -> None:
        reg = self.registry
        try:
            m = orjson.loads(text)
            if not isinstance(m, dict):
                raise ValueError
        except ValueError:
            reg.send_control(conn, orjson.dumps({"id": "", "type": "error", "code": 415, "data": "invalid json"}))
            return
        kind, mid = m.get("type"), m.get("id")
        sid = "" if mid is None else str(mid)
        if kind == "ping":
            conn.last_seen = time.monotonic()
            reg.send_control(conn, orjson.dumps({"id": mid, "type": "pong"}))
        elif kind in ("subscribe", "unsubscribe"):
            keys, problem = self._topic_keys(str(m.get("topic", "")), conn, bool(m.get("privateChannel")))
            if problem:
                reg.send_control(conn, orjson.dumps({"id": sid, "type": "error", "code": 404, "data": problem}))
                return
            for key in keys:
                (reg.subscribe if kind == "subscribe" else reg.unsubscribe)(conn, key)
            if m.get("response"):
                reg.send_control(conn, orjson.dumps({"id": sid, "type": "ack"}))
        else:
            reg.send_control(conn, orjson.dumps(
                {"id": sid, "type": "error", "code": 415, "data": f"unsupported message type {kind!r}"}))

    def _topic_keys(self, topic: str, conn: Conn, private: bool) -> tuple[list[tuple[str, str]], str]:
        if topic in PRIVATE_TOPICS:
            if not conn.meta.get("private") or not private:
                return [], f"topic {topic!r} needs a bullet-private token and privateChannel: true"
            return [(VENUE, topic)], ""
        prefix, sep, rest = topic.partition(":")
        prefix += sep
        if prefix not in TOPICS:
            return [], f"topic {topic!r} not found"
        symbols = [s.strip() for s in rest.split(",") if s.strip()]
        bad = [s for s in symbols if self._find(s) is None]
        if not symbols or bad:
            return [], f"topic {topic!r}: unknown symbol(s) {', '.join(bad) or '(none given)'}"
        return [(VENUE, prefix + s) for s in symbols], ""

    # publishing ----------------------------------------------------------------------------------------------------
    def _publish(self, topic: str, subject: str, data: dict[str, Any], **spec: Any) -> None:
        subs = self.registry.subscribers((VENUE, topic))
        if not subs:
            return
        wrap = _message(topic, subject)
        body = wrap(data)
        kind = self.faults.next_malformed(VENUE)
        bad = malformed_frame(kind, data, wrap, **spec) if kind else None
        for conn in list(subs):
            if bad is not None:
                self.registry.send(conn, bad)
            self.registry.send(conn, body)

    def on_event(self, ev: MarketEvent) -> None:
        i = ev.inst
        ins = self.market.instruments[i]
        base = self.seq_base[i]
        subs = self.registry.subscribers
        if ev.changes and not self.faults.skip_due(VENUE, i, "level2") and \
                subs((VENUE, f"/market/level2:{ins.symbol}")):
            asks = [[ins.kprice(p), ins.ksize(q), str(base + s)] for side, p, q, s in ev.changes if side == ASK]
            bids = [[ins.kprice(p), ins.ksize(q), str(base + s)] for side, p, q, s in ev.changes if side == BID]
            book = self.market.books[i]
            ask = book.best_ask()
            self._publish(f"/market/level2:{ins.symbol}", "trade.l2update", {
                "sequenceStart": base + ev.seq_start, "symbol": ins.symbol,
                "changes": {"asks": asks, "bids": bids}, "sequenceEnd": base + ev.seq_end,
                "time": self.engine.venue_ms(VENUE, ev.t_us // 1000)}, levels=("changes.bids", "changes.asks"),
                required="sequenceStart", cross_px=ins.kprice(ask) if ask is not None else "0")
        tr = ev.trade
        if tr is not None and subs((VENUE, f"/market/match:{ins.symbol}")):
            self._publish(f"/market/match:{ins.symbol}", "trade.l3match", {
                "symbol": ins.symbol, "sequence": str(base + tr.seq), "side": "buy" if tr.buy else "sell",
                "size": ins.ksize(tr.qty), "price": ins.kprice(tr.px), "takerOrderId": f"{ID_BASE + 2 * tr.id:024x}",
                "time": str(tr.t_us * 1000 + self.faults.skew_ms[VENUE] * 1_000_000), "type": "match",
                "makerOrderId": f"{ID_BASE + 2 * tr.id + 1:024x}",
                "tradeId": f"{ID_BASE + (i << 64) + tr.id:024x}"}, price="price", required="sequence")
        if ev.top_changed or tr is not None:
            self._ticker_due(i, ev.t_us)

    def _ticker_due(self, i: int, t_us: int) -> None:
        if t_us - self.last_ticker[i] >= self.ticker_us:
            self._ticker(i, t_us)
        elif not self.ticker_timer[i]:
            self.ticker_timer[i] = True
            self.engine.timers.at(self.last_ticker[i] + self.ticker_us, lambda t, i=i: self._ticker(i, t))

    def _ticker(self, i: int, t_us: int) -> None:
        self.ticker_timer[i] = False
        self.last_ticker[i] = t_us
        ins, book = self.market.instruments[i], self.market.books[i]
        top = book.top()
        if top is None or not self.registry.subscribers((VENUE, f"/market/ticker:{ins.symbol}")):
            return
        tr = self.market.last_trade[i]
        price, size = (ins.kprice(tr.px), ins.ksize(tr.qty)) if tr else (ins.kprice(top[0]), "0")
        self._publish(f"/market/ticker:{ins.symbol}", "trade.ticker", {
            "sequence": str(self.seq_base[i] + book.seq), "bestAsk": ins.kprice(top[2]), "size": size,
            "bestBidSize": ins.ksize(top[1]), "price": price, "time": self.engine.venue_ms(VENUE, t_us // 1000),
            "bestAskSize": ins.ksize(top[3]), "bestBid": ins.kprice(top[0])},
            bid="bestBid", ask="bestAsk", required="sequence")
