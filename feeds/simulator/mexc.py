"""MEXC spot v3: REST routes under ``/mexc`` and the ``/mexc/ws`` websocket, in the venue's shapes (EXCHANGES.md
section 4).

REST only under the ``/mexc`` prefix (base ``http://127.0.0.1:P/mexc``; Binance spot owns ``/api/v3`` at the root):
``/api/v3/{ping,time,exchangeInfo,depth,klines,ticker/bookTicker}``. ``exchangeInfo`` has MEXC's quirks
(``status`` "1", ``baseSizePrecision`` = the lot, ``quoteAmountPrecision`` = the minimum order value, integer
precisions, no filters); ``?symbol=X`` or ``?symbols=A,B``. ``depth`` is ``{lastUpdateId, bids, asks, timestamp}``
(limit default 100, max 5000); ``klines`` rows ``[openTime, o, h, l, c, volume, closeTime, quoteVolume]``,
intervals ``1m 5m 15m 30m 60m 4h 1d 1W``, limit default 500, max 1000. Errors: HTTP 400 ``{"code", "msg"}``.

Websocket ``/mexc/ws``: JSON text control frames, binary protobuf pushes (``PushDataV3ApiWrapper``, classes
compiled from ``feeds/proto``). ``{"method":"SUBSCRIPTION"|"UNSUBSCRIPTION","params":[...]}`` is answered
``{"id":0,"code":0,"msg":"<channels, comma-joined>"}``, or ``"Not Subscribed successfully! [...]. Reason: ..."``
for unknown channels / symbols or more than 30 subscriptions; ``{"method":"PING"}`` -> ``msg`` ``PONG``. A
client without a subscription for 30 s, or silent (no PING, no request) for 60 s, is disconnected. Channels, per
symbol, with ``@100ms`` or ``@10ms``: ``spot@public.aggre.bookTicker.v3.api.pb@100ms@BTCUSDT`` (315),
``spot@public.aggre.deals.v3.api.pb@100ms@BTCUSDT`` (314), ``spot@public.aggre.depth.v3.api.pb@100ms@BTCUSDT``
(313); and ``spot@public.limit.depth.v3.api.pb@BTCUSDT@(5|10|20)`` (303). Pushes are batched over aligned windows
of simulated time: at a window's end go the depth diff (``fromVersion`` = the first, ``toVersion`` = the last
book update id of the window, so ``fromVersion == prev toVersion + 1``), the window's deals (``tradeType`` 1 buy
/ 2 sell, numeric ``tradeId``), then the bookTicker when the top changed (``version`` = the book's update id then,
equal to the depth's ``toVersion``), then the limit depth. ``sendTime`` is the window's end, ``createTime`` the
last event in it. A window only opens while one of its channels has a subscriber.

Faults: ``skip_seq`` withholds one depth diff of each depth stream of the symbol; ``malformed`` sends before a
push a broken copy: ``truncated`` alternates between a protobuf frame cut inside its body and a cut JSON text
frame, ``missing_field`` clears a required string (bid price, deal price, ``fromVersion``), the price variants
change the first price, ``crossed`` swaps bid and ask (depth: a bid at the best ask; deals: NaN price).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from feeds.proto import load as load_proto

from .binance import err, js  # MEXC answers in Binance's {"code", "msg"} shape
from .market import ASK, BID, Instrument, MarketEvent
from .registry import Binary, Conn

if TYPE_CHECKING:
    from .engine import Engine

VENUE = "mexc"
PREFIX = "/mexc"
MAX_SUBSCRIPTIONS = 30
INTERVALS = (100, 10)
"""Push windows (ms of simulated time) of the aggre channels."""
LIMIT_LEVELS = (5, 10, 20)
KLINES = {"1m": 1, "5m": 5, "15m": 15, "30m": 30, "60m": 60, "4h": 240, "1d": 1440, "1W": 10080}
BOOK_TICKER, DEALS, DEPTH = "spot@public.aggre.bookTicker.v3.api.pb", "spot@public.aggre.deals.v3.api.pb", \
    "spot@public.aggre.depth.v3.api.pb"
LIMIT_DEPTH = "spot@public.limit.depth.v3.api.pb"
SEQ_BASE = 30_000_000_000
TRADE_BASE = 700_000_000


@dataclass
class _Window:
    """What one symbol's aggre channels of one push interval collect until the window's end."""

    interval_us: int
    open: bool = False
    first: int = 0
    last: int = 0
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    trades: list[Any] = field(default_factory=list)
    t_last: int = 0
    top_sent: tuple[int, int, int, int] | None = None


class MexcVenue:
    """MEXC spot v3 routes and market-data publishing."""

    name = VENUE

    def __init__(self, engine: Engine, sub_timeout_s: float = 30.0, idle_s: float = 60.0) -> None:
        self.engine = engine
        self.market = engine.market
        self.registry = engine.registry
        self.faults = engine.faults
        self.sub_timeout_s = sub_timeout_s
        self.idle_s = idle_s
        self.pb = load_proto()
        n = len(self.market.instruments)
        self.seq_base = [SEQ_BASE + i * 10**9 for i in range(n)]
        self.windows = [[_Window(iv * 1000) for iv in INTERVALS] for _ in range(n)]
        self.channels = [[[f"{ch}@{iv}ms@{ins.binance}" for ch in (BOOK_TICKER, DEALS, DEPTH)] +
                          ([f"{LIMIT_DEPTH}@{ins.binance}@{k}" for k in LIMIT_LEVELS] if iv == INTERVALS[0] else [])
                          for iv in INTERVALS] for ins in self.market.instruments]
        """Per instrument and window: the channels it feeds (a window nobody listens to collects nothing)."""
        self._truncations = 0

    # routes --------------------------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        g = self.faults.rest_guard
        r = PREFIX + "/api/v3"
        app.router.add_get(r + "/ping", g(VENUE, self.ping))
        app.router.add_get(r + "/time", g(VENUE, self.time))
        app.router.add_get(r + "/exchangeInfo", g(VENUE, self.exchange_info))
        app.router.add_get(r + "/depth", g(VENUE, self.depth_snapshot))
        app.router.add_get(r + "/klines", g(VENUE, self.klines))
        app.router.add_get(r + "/ticker/bookTicker", g(VENUE, self.book_ticker))
        app.router.add_get(PREFIX + "/ws", self.websocket)

    # REST ----------------------------------------------------------------------------------------------------------
    def _find(self, name: str) -> int | None:
        i = self.market.find(name)
        return i if i is not None and self.market.instruments[i].binance == name else None

    def _symbol(self, request: web.Request) -> tuple[int | None, web.Response | None]:
        name = request.query.get("symbol", "")
        if not name:
            return None, err(700002, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        i = self._find(name)
        return (i, None) if i is not None else (None, err(-1121, "Invalid symbol."))

    async def ping(self, request: web.Request) -> web.Response:
        return js({})

    async def time(self, request: web.Request) -> web.Response:
        return js({"serverTime": self.engine.now_ms()})

    def _info(self, i: int) -> dict[str, Any]:
        ins = self.market.instruments[i]
        return {
            "symbol": ins.binance, "status": "1", "baseAsset": ins.base, "baseAssetPrecision": ins.size_dp,
            "quoteAsset": ins.quote, "quotePrecision": ins.price_dp, "quoteAssetPrecision": ins.price_dp,
            "baseCommissionPrecision": ins.size_dp, "quoteCommissionPrecision": ins.price_dp,
            "orderTypes": ["LIMIT", "MARKET", "LIMIT_MAKER"], "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False, "quoteAmountPrecision": str(ins.min_notional),
            "baseSizePrecision": ins.lot_str, "permissions": ["SPOT"], "filters": [],
            "maxQuoteAmount": "2000000", "makerCommission": "0", "takerCommission": "0.0005",
            "quoteAmountPrecisionMarket": str(ins.min_notional), "maxQuoteAmountMarket": "100000",
            "fullName": ins.base, "tradeSideType": 1, "st": False,
        }

    async def exchange_info(self, request: web.Request) -> web.Response:
        q = request.query
        wanted: list[int] = list(range(len(self.market.instruments)))
        names = [q["symbol"]] if "symbol" in q else q["symbols"].split(",") if "symbols" in q else None
        if names is not None:
            found = [self._find(s.strip()) for s in names]
            if any(i is None for i in found):
                return err(-1121, "Invalid symbol.")
            wanted = [i for i in found if i is not None]
        return js({"timezone": "CST", "serverTime": self.engine.now_ms(), "rateLimits": [], "exchangeFilters": [],
                   "symbols": [self._info(i) for i in wanted]})

    def _depth_body(self, i: int, limit: int) -> dict[str, Any]:
        ins, book = self.market.instruments[i], self.market.books[i]
        return {"lastUpdateId": self.seq_base[i] + book.seq,
                "bids": [[ins.price(p), ins.size(q)] for p, q in book.levels(BID, limit)],
                "asks": [[ins.price(p), ins.size(q)] for p, q in book.levels(ASK, limit)],
                "timestamp": self.engine.now_ms()}

    async def depth_snapshot(self, request: web.Request) -> web.Response:
        i, problem = self._symbol(request)
        if i is None:
            return problem or err(-1121, "Invalid symbol.")
        try:
            limit = int(request.query.get("limit") or 100)
        except ValueError:
            limit = -1
        if not 1 <= limit <= 5000:
            return err(-1100, "Illegal characters found in parameter 'limit'; legal range is 1..5000.")
        return js(self._depth_body(i, limit))

    async def book_ticker(self, request: web.Request) -> web.Response:
        i, problem = self._symbol(request)
        if i is None:
            return problem or err(-1121, "Invalid symbol.")
        ins, top = self.market.instruments[i], self.market.books[i].top() or (0, 0, 0, 0)
        return js({"symbol": ins.binance, "bidPrice": ins.price(top[0]), "bidQty": ins.size(top[1]),
                   "askPrice": ins.price(top[2]), "askQty": ins.size(top[3])})

    async def klines(self, request: web.Request) -> web.Response:
        i, problem = self._symbol(request)
        if i is None:
            return problem or err(-1121, "Invalid symbol.")
        q = request.query
        minutes = KLINES.get(q.get("interval", ""))
        if minutes is None:
            return err(-1121, f"Invalid interval; one of {', '.join(KLINES)}.")
        try:
            limit = int(q.get("limit") or 500)
            start, end = int(q.get("startTime") or 0), int(q.get("endTime") or 0)
        except ValueError:
            return err(-1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= 1000:
            return err(-1130, "Data sent for parameter 'limit' is not valid.")
        now_min = self.engine.now_ms() // 60_000
        last = min(end // 60_000 if end else now_min, now_min)
        store = self.market.candles[i]
        if start:
            first = -(-start // 60_000)
            bars = store.bars(minutes, first, min(last, first + limit * minutes))[:limit]
        else:
            bars = store.bars(minutes, last - limit * minutes + 1, last)[-limit:]
        ins = self.market.instruments[i]
        return js([[m * 60_000, ins.price(b[0]), ins.price(b[1]), ins.price(b[2]), ins.price(b[3]),
                    ins.size(b[4]), (m + minutes) * 60_000, ins.notional(b[5])] for m, b in bars])

    # websocket -----------------------------------------------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=2.0, max_msg_size=1 << 20)
        await ws.prepare(request)
        reg = self.registry
        conn = reg.open(VENUE, ws, request)
        conn.meta["opened"] = time.monotonic()
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
        """Cut a client with no subscription after ``sub_timeout_s``, or silent for ``idle_s``."""
        while not conn.closed:
            now = time.monotonic()
            if not conn.subs and now - conn.meta["opened"] > self.sub_timeout_s:
                await self.registry.shut(conn, 1000, b"no valid subscription")
                return
            if now - conn.last_seen > self.idle_s:
                await self.registry.shut(conn, 1000, b"no data from the client")
                return
            await asyncio.sleep(0.25)

    def _reply(self, conn: Conn, ident: Any, msg: str, code: int = 0) -> None:
        self.registry.send_control(conn, orjson.dumps({"id": ident if isinstance(ident, int) else 0, "code": code,
                                                       "msg": msg}))

    def _on_text(self, conn: Conn, text: str) -> None:
        try:
            m = orjson.loads(text)
            if not isinstance(m, dict):
                raise ValueError
        except ValueError:
            self._reply(conn, 0, "Invalid request: not a JSON object", 1)
            return
        conn.last_seen = time.monotonic()
        method, params, ident = m.get("method"), m.get("params", []), m.get("id", 0)
        if method == "PING":
            self._reply(conn, ident, "PONG")
        elif method in ("SUBSCRIPTION", "UNSUBSCRIPTION"):
            if not isinstance(params, list) or not params or not all(isinstance(p, str) for p in params):
                self._reply(conn, ident, "Not Subscribed successfully! []. Reason: params must be a list of "
                                         "channels")
                return
            bad = [p for p in params if not self._channel_ok(p)]
            if method == "SUBSCRIPTION" and not bad and len(conn.subs | {(VENUE, p) for p in params}) > \
                    MAX_SUBSCRIPTIONS:
                self._reply(conn, ident, f"Not Subscribed successfully! [{','.join(params)}]. Reason: more than "
                                         f"{MAX_SUBSCRIPTIONS} subscriptions")
                return
            if bad:
                self._reply(conn, ident, f"Not Subscribed successfully! [{','.join(bad)}]. Reason: Blocked! ")
                return
            for p in params:
                (self.registry.subscribe if method == "SUBSCRIPTION" else self.registry.unsubscribe)(conn, (VENUE, p))
            self._reply(conn, ident, ",".join(params))
        else:
            self._reply(conn, ident, f"Invalid request: unknown method {str(method)[:40]!r}", 1)

    def _channel_ok(self, channel: str) -> bool:
        parts = channel.split("@")
        if len(parts) != 4:
            return False
        name, a, b = f"{parts[0]}@{parts[1]}", parts[2], parts[3]
        if name in (BOOK_TICKER, DEALS, DEPTH):
            return a in {f"{iv}ms" for iv in INTERVALS} and self._find(b) is not None
        if name == LIMIT_DEPTH:
            return b in {str(n) for n in LIMIT_LEVELS} and self._find(a) is not None
        return False

    # publishing ----------------------------------------------------------------------------------------------------
    def _wrapper(self, channel: str, ins: Instrument, t_create_us: int, t_send_us: int) -> Any:
        return self.pb.PushDataV3ApiWrapper(channel=channel, symbol=ins.binance, createTime=t_create_us // 1000,
                                            sendTime=t_send_us // 1000)

    def _publish(self, channel: str, w: Any, broken: Callable[[Any, str], None]) -> None:
        """Send wrapper ``w`` to the channel's subscribers, after a broken copy when a ``malformed`` fault is due
        (``broken(copy, variant)`` spoils the copy's body)."""
        subs = self.registry.subscribers((VENUE, channel))
        if not subs:
            return
        body = Binary(w.SerializeToString())
        kind = self.faults.next_malformed(VENUE)
        bad: bytes | None = None
        if kind == "truncated":
            self._truncations += 1
            if self._truncations % 2:
                inner = getattr(w, w.WhichOneof("body")).ByteSize()
                bad = Binary(body[: len(body) - max(1, inner // 2)])  # the body's length prefix overruns the frame
            else:
                bad = orjson.dumps({"id": 0, "code": 0, "msg": channel})[:20]  # cut JSON text
        elif kind:
            copy = self.pb.PushDataV3ApiWrapper()
            copy.CopyFrom(w)
            broken(copy, kind)
            bad = Binary(copy.SerializeToString())
        for conn in list(subs):
            if bad is not None:
                self.registry.send(conn, bad)
            self.registry.send(conn, body)

    def on_event(self, ev: MarketEvent) -> None:
        if not (ev.changes or ev.trade is not None or ev.top_changed):
            return
        i = ev.inst
        base = self.seq_base[i]
        subs = self.registry.subscribers
        for win, names in zip(self.windows[i], self.channels[i], strict=True):
            if not win.open and not any(subs((VENUE, ch)) for ch in names):
                continue  # the next diff starts at the window it opens: clients join it with a newer snapshot
            if not win.open:
                win.open = True
                end = (ev.t_us // win.interval_us + 1) * win.interval_us
                self.engine.timers.at(end, lambda t, i=i, win=win: self._flush(i, win, t))
            if ev.changes:
                if not win.first:
                    win.first = base + ev.seq_start
                for side, p, q, _ in ev.changes:
                    (win.bids if side == BID else win.asks)[p] = q
                win.last = base + ev.seq_end
            if ev.trade is not None:
                win.trades.append(ev.trade)
            win.t_last = ev.t_us

    def _flush(self, i: int, win: _Window, t_us: int) -> None:
        win.open = False
        ins, book = self.market.instruments[i], self.market.books[i]
        sym, iv = ins.binance, f"{win.interval_us // 1000}ms"
        subs = self.registry.subscribers
        if win.first:
            first, last, bids, asks = win.first, win.last, win.bids, win.asks
            win.first, win.bids, win.asks = 0, {}, {}
            channel = f"{DEPTH}@{iv}@{sym}"
            if not self.faults.skip_due(VENUE, i, f"aggre.depth@{iv}") and subs((VENUE, channel)):
                w = self._wrapper(channel, ins, win.t_last, t_us)
                d = w.publicAggreDepths
                for p in sorted(asks):
                    d.asks.add(price=ins.price(p), quantity=ins.size(asks[p]))
                for p in sorted(bids, reverse=True):
                    d.bids.add(price=ins.price(p), quantity=ins.size(bids[p]))
                d.eventType = f"{DEPTH}@{iv}"
                d.fromVersion, d.toVersion = str(first), str(last)
                d.lastOrderCreateTime = win.t_last // 1000
                best_ask = book.best_ask()
                cross = ins.price(best_ask) if best_ask is not None else "0"
                self._publish(channel, w, lambda c, kind, cross=cross: _spoil_depth(c, kind, cross))
        if win.trades:
            trades, win.trades = win.trades, []
            channel = f"{DEALS}@{iv}@{sym}"
            if subs((VENUE, channel)):
                w = self._wrapper(channel, ins, win.t_last, t_us)
                d = w.publicAggreDeals
                for tr in trades:
                    d.deals.add(price=ins.price(tr.px), quantity=ins.size(tr.qty), tradeType=1 if tr.buy else 2,
                                time=tr.t_us // 1000, tradeId=str(TRADE_BASE + tr.id))
                d.eventType = f"{DEALS}@{iv}"
                self._publish(channel, w, _spoil_deals)
        top = book.top()
        if top is not None and top != win.top_sent:
            win.top_sent = top
            channel = f"{BOOK_TICKER}@{iv}@{sym}"
            if subs((VENUE, channel)):
                w = self._wrapper(channel, ins, win.t_last, t_us)
                b = w.publicAggreBookTicker
                b.bidPrice, b.bidQuantity = ins.price(top[0]), ins.size(top[1])
                b.askPrice, b.askQuantity = ins.price(top[2]), ins.size(top[3])
                b.version = str(self.seq_base[i] + book.seq)
                b.lastOrderCreateTime = win.t_last // 1000
                self._publish(channel, w, _spoil_ticker)
        if win.interval_us == INTERVALS[0] * 1000:
            self._limit_depth(i, t_us, win.t_last)

    def _limit_depth(self, i: int, t_us: int, t_last: int) -> None:
        ins, book = self.market.instruments[i], self.market.books[i]
        for n in LIMIT_LEVELS:
            channel = f"{LIMIT_DEPTH}@{ins.binance}@{n}"
            if not self.registry.subscribers((VENUE, channel)):
                continue
            w = self._wrapper(channel, ins, t_last, t_us)
            d = w.publicLimitDepths
            for p, q in book.levels(ASK, n):
                d.asks.add(price=ins.price(p), quantity=ins.size(q))
            for p, q in book.levels(BID, n):
                d.bids.add(price=ins.price(p), quantity=ins.size(q))
            d.eventType = LIMIT_DEPTH
            d.version = str(self.seq_base[i] + book.seq)
            self._publish(channel, w, _spoil_depth_limit)


def _bad(kind: str, value: str) -> str:
    return {"nan_price": "NaN", "negative_price": "-" + value.lstrip("-"), "zero_price": "0"}.get(kind, "NaN")


def _spoil_ticker(w: Any, kind: str) -> None:
    b = w.publicAggreBookTicker
    if kind == "missing_field":
        b.bidPrice = ""
    elif kind == "crossed":
        b.bidPrice, b.askPrice = b.askPrice, b.bidPrice
    else:
        b.bidPrice = _bad(kind, b.bidPrice)


def _spoil_deals(w: Any, kind: str) -> None:
    d = w.publicAggreDeals.deals[0]
    d.price = "" if kind == "missing_field" else _bad(kind, d.price)


def _spoil_depth(w: Any, kind: str, cross_px: str) -> None:
    d = w.publicAggreDepths
    if kind == "missing_field":
        d.fromVersion = ""
    elif kind == "crossed":
        qty = d.bids[0].quantity if d.bids else d.asks[0].quantity if d.asks else "1"
        _insert_bid(d, cross_px, qty if qty.strip("0.") else "1")
    else:
        rows = d.bids if d.bids else d.asks
        if rows:
            rows[0].price = _bad(kind, rows[0].price)


def _insert_bid(d: Any, price: str, qty: str) -> None:
    """Put a bid level ``price x qty`` first in a depth body."""
    old = [(x.price, x.quantity) for x in d.bids]
    del d.bids[:]
    d.bids.add(price=price, quantity=qty)
    for p, q in old:
        d.bids.add(price=p, quantity=q)


def _spoil_depth_limit(w: Any, kind: str) -> None:
    d = w.publicLimitDepths
    rows = d.bids if d.bids else d.asks
    if rows:
        rows[0].price = "" if kind == "missing_field" else _bad(kind, rows[0].price)
