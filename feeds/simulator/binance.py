"""Binance spot and USD-M futures: REST routes and market streams (EXCHANGES.md sections 2 and 3).

One class, two instances. REST at the root and under the venue prefix:

* spot (``binance``): ``/api/v3/{time,ping,exchangeInfo,depth,klines,ticker/bookTicker}``; prices and sizes with
  8 decimals as on the venue; depth limit default 100, max 5000; klines max 1000.
* USD-M (``binance-usdm``): ``/fapi/v1/{time,ping,exchangeInfo,depth,klines,ticker/bookTicker}``; tick / lot
  decimals; depth ``{lastUpdateId,E,T,bids,asks}``, limit default 500; klines max 1500; ``MIN_NOTIONAL.notional``.

Websockets: spot ``/binance/ws[/<stream>...]`` (raw) and ``/binance/stream?streams=a/b`` (combined
``{"stream","data"}``); USD-M the same under ``/binance-usdm/public/`` (bookTicker, depth) and
``/binance-usdm/market/`` (trade, aggTrade, kline_*). A stream on the wrong USD-M path is accepted and never
gets data, as on the venue since 2026-04-23; the legacy ``/binance-usdm/ws`` and ``/stream`` do not exist.
Live ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` / ``SET_PROPERTY`` / ``GET_PROPERTY``.
Streams: ``<sym>@bookTicker`` (every top change; ``u`` = book update id then), ``<sym>@depth`` (spot 1000 ms,
USD-M 250 ms), ``@depth@100ms``, spot ``@depth@1000ms``, USD-M ``@depth@0ms`` (every event) / ``@depth@250ms`` /
``@depth@500ms``: diffs batched over aligned windows of simulated time, ``U`` = first and ``u`` = last update id
in the window, so spot ``U == prev u + 1`` and USD-M ``pu == prev u``; ``<sym>@trade``, ``<sym>@aggTrade`` (one
trade per aggregate), ``<sym>@kline_<1m..1d>`` (spot every 2 s, USD-M every 250 ms of simulated time, plus the
closed bar with ``x: true``). The server pings every ``binance_ping_ms`` / ``usdm_ping_ms`` and cuts a client
that has not answered a ping within the pong timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from .faults import malformed_frame
from .market import ASK, BID, US_PER_MIN, Instrument, MarketEvent
from .registry import Conn

if TYPE_CHECKING:
    from .engine import Engine

KLINES = {"1m": 1, "3m": 3, "5m": 5, "15m": 15, "30m": 30, "1h": 60, "2h": 120, "4h": 240, "6h": 360, "8h": 480,
          "12h": 720, "1d": 1440}
SPOT_DEPTH = {100: ("depth@100ms",), 1000: ("depth", "depth@1000ms")}
USDM_DEPTH = {0: ("depth@0ms",), 100: ("depth@100ms",), 250: ("depth", "depth@250ms"), 500: ("depth@500ms",)}
USDM_DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def err(code: int, msg: str, status: int = 400) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status, dumps=_dumps)


def js(obj: Any) -> web.Response:
    return web.json_response(obj, dumps=_dumps)


class _Depth:
    """Diff accumulator of one depth stream speed of one symbol."""

    __slots__ = ("asks", "bids", "first", "interval_us", "last", "names", "open", "prev", "stream", "t_last")

    def __init__(self, interval_ms: int, names: tuple[str, ...], prev: int) -> None:
        self.interval_us = interval_ms * 1000
        self.names = names
        self.stream = names[-1]
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.first = self.last = 0
        self.prev = prev
        self.open = False
        self.t_last = 0


class BinanceVenue:
    """Binance spot (``futures=False``) or USD-M (``futures=True``)."""

    def __init__(self, engine: Engine, futures: bool) -> None:
        self.engine = engine
        self.market = engine.market
        self.registry = engine.registry
        self.faults = engine.faults
        self.futures = futures
        o = engine.opts
        if futures:
            self.name, self.rest, self.prefix = "binance-usdm", "/fapi/v1", "/binance-usdm"
            self.book_scope, self.trade_scope = "binance-usdm/public", "binance-usdm/market"
            self.ping_s, self.pong_timeout_s = o.usdm_ping_ms / 1000, o.usdm_pong_timeout_ms / 1000
            self.kline_max, self.kline_period_us, depth = 1500, 250_000, USDM_DEPTH
            seq_base, self.trade_base = 5_100_000_000_000, 5_200_000_000
        else:
            self.name, self.rest, self.prefix = "binance", "/api/v3", "/binance"
            self.book_scope = self.trade_scope = "binance"
            self.ping_s, self.pong_timeout_s = o.binance_ping_ms / 1000, o.binance_pong_timeout_ms / 1000
            self.kline_max, self.kline_period_us, depth = 1000, 2_000_000, SPOT_DEPTH
            seq_base, self.trade_base = 50_000_000_000, 3_700_000_000
        n = len(self.market.instruments)
        self.seq_base = [seq_base + i * 10**9 for i in range(n)]
        self.depth = [[_Depth(iv, names, self.seq_base[i] + self.market.books[i].seq) for iv, names in depth.items()]
                      for i in range(n)]
        self.kline_state = [{name: [-(10**18), -1] for name in KLINES} for _ in range(n)]

    # formatting ----------------------------------------------------------------------------------------------------
    def px(self, ins: Instrument, ticks: int) -> str:
        return ins.price(ticks) if self.futures else ins.price(ticks, 8)

    def qty(self, ins: Instrument, lots: int) -> str:
        return ins.size(lots) if self.futures else ins.size(lots, 8)

    def quote(self, ins: Instrument, units: int) -> str:
        return ins.notional(units) if self.futures else ins.notional(units, 8)

    # routes --------------------------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        g = self.faults.rest_guard
        for pre in ("", self.prefix):
            r = pre + self.rest
            app.router.add_get(r + "/time", g(self.name, self.time))
            app.router.add_get(r + "/ping", g(self.name, self.ping))
            app.router.add_get(r + "/exchangeInfo", g(self.name, self.exchange_info))
            app.router.add_get(r + "/depth", g(self.name, self.depth_snapshot))
            app.router.add_get(r + "/klines", g(self.name, self.klines))
            app.router.add_get(r + "/ticker/bookTicker", g(self.name, self.book_ticker))
        scopes = [("public", self.book_scope), ("market", self.trade_scope)] if self.futures else [("", self.name)]
        for sub, scope in scopes:
            base = f"{self.prefix}/{sub}" if sub else self.prefix
            app.router.add_get(base + "/ws", self.websocket(scope, False))
            app.router.add_get(base + "/ws/{streams:.+}", self.websocket(scope, False))
            app.router.add_get(base + "/stream", self.websocket(scope, True))

    # REST ----------------------------------------------------------------------------------------------------------
    def _symbol(self, request: web.Request) -> tuple[int | None, web.Response | None]:
        name = request.query.get("symbol", "")
        if not name:
            return None, err(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        i = self.market.find(name)
        if i is None or self.market.instruments[i].binance != name:
            return None, err(-1121, "Invalid symbol.")
        return i, None

    async def time(self, request: web.Request) -> web.Response:
        return js({"serverTime": self.engine.venue_ms(self.name)})

    async def ping(self, request: web.Request) -> web.Response:
        return js({})

    async def exchange_info(self, request: web.Request) -> web.Response:
        q = request.query
        wanted = range(len(self.market.instruments))
        try:
            names = [q["symbol"]] if "symbol" in q else orjson.loads(q["symbols"]) if "symbols" in q else None
        except orjson.JSONDecodeError:
            return err(-1100, "Illegal characters found in parameter 'symbols'.")
        if names is not None:
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                return err(-1100, "Illegal characters found in parameter 'symbols'.")
            found = [self.market.find(s) for s in names]
            if any(i is None or self.market.instruments[i].binance != s for i, s in zip(found, names, strict=True)):
                return err(-1121, "Invalid symbol.")
            wanted = [i for i in found if i is not None]
        symbols = [self._futures_info(i) if self.futures else self._spot_info(i) for i in wanted]
        if self.futures:
            return js({"timezone": "UTC", "serverTime": self.engine.venue_ms(self.name), "futuresType": "U_MARGINED",
                       "rateLimits": [
                           {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                           {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                           {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300}],
                       "exchangeFilters": [],
                       "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
                       "symbols": symbols})
        return js({"timezone": "UTC", "serverTime": self.engine.venue_ms(self.name), "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000}],
            "exchangeFilters": [], "symbols": symbols})

    def _spot_info(self, i: int) -> dict[str, Any]:
        ins = self.market.instruments[i]
        tick, lot = ins.price(1, 8), ins.size(1, 8)
        return {
            "symbol": ins.binance, "status": "TRADING", "baseAsset": ins.base, "baseAssetPrecision": 8,
            "quoteAsset": ins.quote, "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
                           "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True, "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True, "cancelReplaceAllowed": True, "amendAllowed": True,
            "isSpotTradingAllowed": True, "isMarginTradingAllowed": True,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000", "tickSize": tick},
                {"filterType": "LOT_SIZE", "minQty": lot, "maxQty": "9000.00000000", "stepSize": lot},
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "100.00000000",
                 "stepSize": "0.00000000"},
                {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000,
                 "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000},
                {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2",
                 "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
                {"filterType": "NOTIONAL", "minNotional": f"{ins.min_notional}.00000000", "applyMinToMarket": True,
                 "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5}],
            "permissions": [], "permissionSets": [["SPOT", "MARGIN"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    def _futures_info(self, i: int) -> dict[str, Any]:
        ins = self.market.instruments[i]
        tick, lot = ins.tick_str, ins.lot_str
        return {
            "symbol": ins.binance, "pair": ins.binance, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000, "status": "TRADING", "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000", "baseAsset": ins.base, "quoteAsset": ins.quote,
            "marginAsset": ins.quote, "pricePrecision": ins.price_dp, "quantityPrecision": ins.size_dp,
            "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
            "settlePlan": 0, "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "4529764", "tickSize": tick},
                {"filterType": "LOT_SIZE", "stepSize": lot, "maxQty": "1000", "minQty": lot},
                {"filterType": "MARKET_LOT_SIZE", "stepSize": lot, "maxQty": "120", "minQty": lot},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                {"filterType": "MIN_NOTIONAL", "notional": str(ins.min_notional)},
                {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                 "multiplierDecimal": "4"}],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                           "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }

    async def depth_snapshot(self, request: web.Request) -> web.Response:
        i, problem = self._symbol(request)
        if problem is not None or i is None:
            return problem or err(-1121, "Invalid symbol.")
        try:
            limit = int(request.query.get("limit") or (500 if self.futures else 100))
        except ValueError:
            limit = -1
        if limit <= 0:
            return err(-1100, "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.")
        limit = next((x for x in USDM_DEPTH_LIMITS if x >= limit), 1000) if self.futures else min(limit, 5000)
        ins, book = self.market.instruments[i], self.market.books[i]
        out: dict[str, Any] = {"lastUpdateId": self.seq_base[i] + book.seq}
        if self.futures:
            out["E"] = self.engine.venue_ms(self.name)
            out["T"] = self.engine.venue_ms(self.name, self.engine.last_event_us // 1000)
        out["bids"] = [[self.px(ins, p), self.qty(ins, q)] for p, q in book.levels(BID, limit)]
        out["asks"] = [[self.px(ins, p), self.qty(ins, q)] for p, q in book.levels(ASK, limit)]
        return js(out)

    async def book_ticker(self, request: web.Request) -> web.Response:
        i, problem = self._symbol(request)
        if problem is not None or i is None:
            return problem or err(-1121, "Invalid symbol.")
        ins, book = self.market.instruments[i], self.market.books[i]
        top = book.top() or (0, 0, 0, 0)
        out: dict[str, Any] = {"symbol": ins.binance, "bidPrice": self.px(ins, top[0]), "bidQty": self.qty(ins, top[1]),
                               "askPrice": self.px(ins, top[2]), "askQty": self.qty(ins, top[3])}
        if self.futures:
            out["time"] = self.engine.venue_ms(self.name)
            out["lastUpdateId"] = self.seq_base[i] + book.seq
        return js(out)

    async def klines(self, request: web.Request) -> web.Response:
        i, problem = self._symbol(request)
        if problem is not None or i is None:
            return problem or err(-1121, "Invalid symbol.")
        q = request.query
        if "interval" not in q:
            return err(-1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        minutes = KLINES.get(q["interval"])
        if minutes is None:
            return err(-1120, "Invalid interval.")
        try:
            limit = int(q.get("limit") or 500)
            start, end = int(q.get("startTime") or 0), int(q.get("endTime") or 0)
        except ValueError:
            return err(-1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= self.kline_max:
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
        return js([[m * 60_000, self.px(ins, b[0]), self.px(ins, b[1]), self.px(ins, b[2]), self.px(ins, b[3]),
                    self.qty(ins, b[4]), (m + minutes) * 60_000 - 1, self.quote(ins, b[5]), b[6],
                    self.qty(ins, b[7]), self.quote(ins, b[8]), "0"] for m, b in bars])

    # websocket -----------------------------------------------------------------------------------------------------
    def websocket(self, scope: str, combined: bool) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.WebSocketResponse:
            tail = request.match_info.get("streams", "")
            streams = request.query.get("streams", "") if combined else tail

            def setup(conn: Conn) -> None:
                conn.combined, conn.scope = combined, scope
                for s in streams.split("/"):
                    if s:
                        self.registry.subscribe(conn, (scope, s))

            return await self.serve(request, self._on_text, setup)

        return handler

    async def serve(self, request: web.Request, on_text: Callable[[Conn, str], None] | None,
                    setup: Callable[[Conn], None] | None = None) -> web.WebSocketResponse:
        """One websocket of this venue (market streams, WS-API, user data): register it, ``setup`` it, keep it
        alive with pings, hand each text frame to ``on_text``, unregister it when it ends."""
        ws = web.WebSocketResponse(timeout=2.0, autoping=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        reg = self.registry
        conn = reg.open(self.name, ws, request)
        if setup is not None:
            setup(conn)
        keepalive = asyncio.get_running_loop().create_task(self._keepalive(conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and on_text is not None:
                    on_text(conn, msg.data)
                elif msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    conn.last_seen = time.monotonic()
        finally:
            keepalive.cancel()
            reg.close(conn)
        return ws

    async def _keepalive(self, conn: Conn) -> None:
        """Ping every ``ping_s``; cut the client when a ping has gone unanswered for ``pong_timeout_s``."""
        waiting_since: float | None = None
        next_ping = time.monotonic() + self.ping_s
        while not conn.closed:
            now = time.monotonic()
            if waiting_since is not None and conn.last_seen >= waiting_since:
                waiting_since = None
            if waiting_since is not None and now - waiting_since > self.pong_timeout_s:
                await self.registry.shut(conn, 1008, b"pong timeout")
                return
            if now >= next_ping:
                with contextlib.suppress(Exception):
                    await conn.ws.ping(str(self.engine.now_ms()).encode())
                if waiting_since is None:
                    waiting_since = now
                next_ping = now + self.ping_s
            due = [next_ping] + ([waiting_since + self.pong_timeout_s] if waiting_since is not None else [])
            await asyncio.sleep(max(0.005, min(due) - time.monotonic() + 0.001))

    def _on_text(self, conn: Conn, text: str) -> None:
        reg = self.registry
        try:
            m = orjson.loads(text)
            if not isinstance(m, dict):
                raise ValueError
        except ValueError:
            reg.send_control(conn, orjson.dumps({"error": {"code": 3, "msg": "Invalid JSON: expected value"},
                                                 "id": None}))
            return
        mid, method, params = m.get("id"), m.get("method"), m.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE") and isinstance(params, list) and all(
                isinstance(p, str) and "@" in p for p in params):
            for p in params:
                (reg.subscribe if method == "SUBSCRIBE" else reg.unsubscribe)(conn, (conn.scope, p))
            reply: dict[str, Any] = {"result": None, "id": mid}
        elif method == "LIST_SUBSCRIPTIONS":
            reply = {"result": sorted(name for _, name in conn.subs), "id": mid}
        elif method == "SET_PROPERTY" and isinstance(params, list) and len(params) == 2 and params[0] == "combined":
            conn.combined = bool(params[1])
            reply = {"result": None, "id": mid}
        elif method == "GET_PROPERTY" and params == ["combined"]:
            reply = {"result": conn.combined, "id": mid}
        else:
            reply = {"error": {"code": 2, "msg": f"Invalid request: unsupported method or params {method!r}"},
                     "id": mid}
        reg.send_control(conn, orjson.dumps(reply))

    # publishing ----------------------------------------------------------------------------------------------------
    def _publish(self, scope: str, stream: str, data: dict[str, Any], **spec: Any) -> None:
        subs = self.registry.subscribers((scope, stream))
        if not subs:
            return
        raw = orjson.dumps(data)
        head = b'{"stream":"' + stream.encode() + b'","data":'

        def combined(d: dict[str, Any]) -> bytes:
            return head + orjson.dumps(d) + b"}"

        kind = self.faults.next_malformed(self.name)
        bad_raw = malformed_frame(kind, data, orjson.dumps, **spec) if kind else None
        bad_comb = malformed_frame(kind, data, combined, **spec) if kind else None
        comb = head + raw + b"}"
        for conn in list(subs):
            if kind:
                self.registry.send(conn, bad_comb if conn.combined else bad_raw)  # type: ignore[arg-type]
            self.registry.send(conn, comb if conn.combined else raw)

    def on_event(self, ev: MarketEvent) -> None:
        i = ev.inst
        ins = self.market.instruments[i]
        sym, lsym = ins.binance, ins.binance.lower()
        base = self.seq_base[i]
        if ev.changes:
            for acc in self.depth[i]:
                if not acc.open:
                    acc.open = True
                    acc.first = base + ev.seq_start
                    if acc.interval_us:
                        end = (ev.t_us // acc.interval_us + 1) * acc.interval_us
                        self.engine.timers.at(end, lambda t, i=i, acc=acc: self._flush(i, acc, t))
                for side, p, q, _ in ev.changes:
                    (acc.bids if side == BID else acc.asks)[p] = q
                acc.last = base + ev.seq_end
                acc.t_last = ev.t_us
                if not acc.interval_us:
                    self._flush(i, acc, ev.t_us)
        t_ms = self.engine.venue_ms(self.name, ev.t_us // 1000)
        subs = self.registry.subscribers
        if ev.top_changed and subs((self.book_scope, f"{lsym}@bookTicker")):
            top = self.market.books[i].top()
            if top is not None:
                u = base + ev.seq_end
                b, bq, a, aq = self.px(ins, top[0]), self.qty(ins, top[1]), self.px(ins, top[2]), self.qty(ins, top[3])
                data = ({"e": "bookTicker", "u": u, "s": sym, "b": b, "B": bq, "a": a, "A": aq, "T": t_ms, "E": t_ms}
                        if self.futures else {"u": u, "s": sym, "b": b, "B": bq, "a": a, "A": aq})
                self._publish(self.book_scope, f"{lsym}@bookTicker", data, bid="b", ask="a", required="u")
        tr = ev.trade
        if tr is not None and (subs((self.trade_scope, f"{lsym}@trade")) or
                               subs((self.trade_scope, f"{lsym}@aggTrade"))):
            tid = self.trade_base + tr.id
            p, q, m = self.px(ins, tr.px), self.qty(ins, tr.qty), not tr.buy
            if self.futures:
                trade = {"e": "trade", "E": t_ms, "T": t_ms, "s": sym, "t": tid, "p": p, "q": q, "X": "MARKET", "m": m}
                agg = {"e": "aggTrade", "E": t_ms, "a": tid, "s": sym, "p": p, "q": q, "nq": q, "f": tid, "l": tid,
                       "T": t_ms, "m": m}
            else:
                trade = {"e": "trade", "E": t_ms, "s": sym, "t": tid, "p": p, "q": q, "T": t_ms, "m": m, "M": True}
                agg = {"e": "aggTrade", "E": t_ms, "s": sym, "a": tid, "p": p, "q": q, "f": tid, "l": tid, "T": t_ms,
                       "m": m, "M": True}
            self._publish(self.trade_scope, f"{lsym}@trade", trade, price="p", required="t")
            self._publish(self.trade_scope, f"{lsym}@aggTrade", agg, price="p", required="a")
        self._klines(i, ev)

    def _flush(self, i: int, acc: _Depth, t_us: int) -> None:
        acc.open = False
        bids, asks = acc.bids, acc.asks
        acc.bids, acc.asks = {}, {}
        prev, acc.prev = acc.prev, acc.last
        if self.faults.skip_due(self.name, i, acc.stream):
            return
        ins = self.market.instruments[i]
        lsym = ins.binance.lower()
        if not any(self.registry.subscribers((self.book_scope, f"{lsym}@{name}")) for name in acc.names):
            return
        b = [[self.px(ins, p), self.qty(ins, bids[p])] for p in sorted(bids)]
        a = [[self.px(ins, p), self.qty(ins, asks[p])] for p in sorted(asks)]
        if self.futures:
            data = {"e": "depthUpdate", "E": self.engine.venue_ms(self.name, t_us // 1000),
                    "T": self.engine.venue_ms(self.name, acc.t_last // 1000), "s": ins.binance,
                    "U": acc.first, "u": acc.last, "pu": prev, "b": b, "a": a}
        else:
            data = {"e": "depthUpdate", "E": self.engine.venue_ms(self.name, t_us // 1000), "s": ins.binance,
                    "U": acc.first, "u": acc.last, "b": b, "a": a}
        best_ask = self.market.books[i].best_ask()
        cross = self.px(ins, best_ask) if best_ask is not None else "0"
        for name in acc.names:
            self._publish(self.book_scope, f"{lsym}@{name}", data, levels=("b", "a"), required="U", cross_px=cross)

    def _klines(self, i: int, ev: MarketEvent) -> None:
        minute = ev.t_us // US_PER_MIN
        lsym = self.market.instruments[i].binance.lower()
        for name, k in KLINES.items():
            st = self.kline_state[i][name]
            bar = minute - minute % k
            if st[1] >= 0 and bar != st[1]:
                self._kline(i, name, k, st[1], True, ev.t_us, lsym)
                st[0], st[1] = ev.t_us, bar
                self._kline(i, name, k, bar, False, ev.t_us, lsym)
            elif ev.t_us - st[0] >= self.kline_period_us:
                st[0], st[1] = ev.t_us, bar
                self._kline(i, name, k, bar, False, ev.t_us, lsym)

    def _kline(self, i: int, name: str, k: int, bar: int, closed: bool, t_us: int, lsym: str) -> None:
        stream = f"{lsym}@kline_{name}"
        if not self.registry.subscribers((self.trade_scope, stream)):
            return
        rows = self.market.candles[i].bars(k, bar, bar + k - 1)
        if not rows:
            return
        ins, b = self.market.instruments[i], rows[0][1]
        last = self.trade_base + self.market.trade_count[i]
        e_ms = self.engine.venue_ms(self.name, t_us // 1000)
        self._publish(self.trade_scope, stream, {"e": "kline", "E": e_ms, "s": ins.binance, "k": {
            "t": bar * 60_000, "T": (bar + k) * 60_000 - 1, "s": ins.binance, "i": name,
            "f": last - b[6] + 1 if b[6] else -1, "L": last if b[6] else -1,
            "o": self.px(ins, b[0]), "c": self.px(ins, b[3]), "h": self.px(ins, b[1]), "l": self.px(ins, b[2]),
            "v": self.qty(ins, b[4]), "n": b[6], "x": closed, "q": self.quote(ins, b[5]), "V": self.qty(ins, b[7]),
            "Q": self.quote(ins, b[8]), "B": "0"}}, required="k")
