"""Binance spot and USD-M order entry (EXCHANGES.md sections 2.4-2.8, 3.3-3.6): signed REST, the WS-APIs and the
user-data streams. One class, two instances, like ``binance.BinanceVenue``.

Spot, REST at the root and under ``/binance``: ``POST|DELETE|GET /api/v3/order``, ``GET|DELETE /api/v3/openOrders``,
``GET /api/v3/account``, ``GET /api/v3/myTrades``. WS-API ``/binance/ws-api/v3``: ``order.place``,
``order.cancel``, ``order.status``, ``openOrders.status``, ``account.status``, ``myTrades``,
``userDataStream.subscribe.signature`` (events ``{"subscriptionId","event"}``: ``executionReport``,
``outboundAccountPosition``), ``userDataStream.unsubscribe``, ``ping``, ``time``.

USD-M, REST at the root and under ``/binance-usdm``: ``POST|DELETE|GET /fapi/v1/order``, ``GET /fapi/v1/openOrders``,
``DELETE /fapi/v1/allOpenOrders``, ``GET /fapi/v1/userTrades``, ``GET /fapi/v2|v3/balance``,
``GET /fapi/v2|v3/positionRisk``, ``POST|PUT|DELETE /fapi/v1/listenKey`` (API key only). WS-API
``/binance-usdm/ws-fapi/v1``: ``order.place``, ``order.cancel``, ``order.status``, ``account.balance``,
``account.position`` (and their ``v2/`` names), ``ping``, ``time``. User data ``/binance-usdm/private/ws/<listenKey>``
(or ``/private/ws?listenKey=``): ``ORDER_TRADE_UPDATE``, ``ACCOUNT_UPDATE``, ``listenKeyExpired``.

Signing as the venue: REST ``X-MBX-APIKEY`` and a hex HMAC over the raw query string + the raw form body with the
``signature`` parameter taken out; WS-API over the params sorted by name. ``timestamp`` must be within
``recvWindow`` (default 5000, max 60000) behind and 1 s ahead of the simulated clock or the wall clock.
Orders: LIMIT (GTC / IOC; USD-M also GTX), MARKET, spot LIMIT_MAKER; FOK and the other types are refused (-1115 /
-1116). Errors: -2014 / -2015 (HTTP 401), -1022, -1021, -1102, -1100, -1106, -1111, -1115, -1116, -1117, -1121, -1013
filter failures (also on USD-M, where the venue answers some with -4014 / -4023), spot -2010 (insufficient balance /
"Order would immediately match and take." / "Duplicate order sent." for a client id already used on the account,
stricter than Binance), USD-M -2019, -5022, -4164, -4116, -2022; -2011 cancel of an unknown or finished order, -2013
unknown order.

Rate limits per account, fixed wall-clock windows as advertised in exchangeInfo: spot REQUEST_WEIGHT 6000 / min,
ORDERS 100 / 10 s and 200000 / day; USD-M REQUEST_WEIGHT 2400 / min, ORDERS 300 / 10 s and 1200 / min. REST answers
carry ``X-MBX-USED-WEIGHT-1M`` (this module's routes only), order placements ``X-MBX-ORDER-COUNT-10S`` and ``-1D``
(USD-M ``-1M``); WS-API answers carry ``rateLimits``. Past a limit: HTTP 429 with ``Retry-After`` (s), -1015 for
orders, -1003 for weight (WS-API: status 429, ``error.data.retryAfter`` in ms since the epoch, simulated clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from .accounts import (
    BUY,
    SELL,
    Account,
    Fill,
    Order,
    OrderSpec,
    Rejected,
    Update,
    Window,
    binance_sign,
    check_filters,
    decimal_places,
    param_text,
    same,
    text,
    timestamp_ok,
    to_decimal,
    wall_ms,
    ws_payload,
)
from .delivery import Outcome, delivery_mode, send_rest, send_ws
from .faults import error_body
from .registry import Conn

if TYPE_CHECKING:
    from .binance import BinanceVenue
    from .engine import Engine

Params = dict[str, Any]
Handler = Callable[[Params], Awaitable[Outcome]]
SPOT_CID = re.compile(r"^[a-zA-Z0-9-_]{1,36}$")
USDM_CID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
DECIMAL_RANGE = "legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'."
GTX_MSG = ("Due to the order could not be executed as maker, the Post Only order will be rejected. The order will "
           "not be recorded in the order history")
STP = "EXPIRE_MAKER"


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def err(code: int, msg: str, status: int = 400) -> Outcome:
    return Outcome(status, {"code": code, "msg": msg})


def missing(name: str) -> Outcome:
    return err(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


class BinanceOrders:
    """Order entry, account queries and user data of Binance spot (``futures=False``) or USD-M."""

    def __init__(self, engine: Engine, venue: BinanceVenue, account: Account) -> None:
        self.engine, self.venue, self.account = engine, venue, account
        self.market, self.registry, self.faults, self.opts = engine.market, engine.registry, engine.faults, engine.opts
        self.futures, self.name = venue.futures, venue.name
        if self.futures:
            self.weight = Window(2400, 60_000)
            self.order_windows = [("SECOND", 10, "10S", Window(300, 10_000)), ("MINUTE", 1, "1M", Window(1200, 60_000))]
        else:
            self.weight = Window(6000, 60_000)
            self.order_windows = [("SECOND", 10, "10S", Window(100, 10_000)),
                                  ("DAY", 1, "1D", Window(200_000, 86_400_000))]
        self.user_key = (self.name + "/user", "account")
        self.listen_key: str | None = None
        self.sub_ids = itertools.count(0)
        self.tasks: set[asyncio.Task[None]] = set()
        account.listeners.append(self.publish)

    # formatting ----------------------------------------------------------------------------------------------------
    def px(self, o: Order, ticks: int | None) -> str:
        return self.venue.px(o.ins, ticks or 0)

    def qty(self, o: Order, lots: int) -> str:
        return self.venue.qty(o.ins, lots)

    def amount(self, d: Decimal) -> str:
        return text(d, 8)

    def side(self, o: Order) -> str:
        return "BUY" if o.side == BUY else "SELL"

    def tif(self, o: Order) -> str:
        return {"POST": "GTX" if self.futures else "GTC"}.get(o.spec.tif, o.spec.tif if o.spec.px else "GTC")

    def avg(self, o: Order, filled: int, quote: Decimal) -> str:
        return text(quote / self.account.qty(o.ins, filled), 8) if filled else "0"

    # routes --------------------------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        r = app.router
        if self.futures:
            for pre in ("", "/binance-usdm"):
                r.add_post(pre + "/fapi/v1/order", self._rest(0, self.place, order=True))
                r.add_delete(pre + "/fapi/v1/order", self._rest(1, self.cancel, order=True))
                r.add_get(pre + "/fapi/v1/order", self._rest(1, self.status))
                r.add_get(pre + "/fapi/v1/openOrders", self._rest(1, self.open_orders))
                r.add_delete(pre + "/fapi/v1/allOpenOrders", self._rest(1, self.cancel_all, order=True))
                r.add_get(pre + "/fapi/v1/userTrades", self._rest(5, self.trades))
                for v in ("v2", "v3"):
                    r.add_get(pre + f"/fapi/{v}/balance", self._rest(5, self.balance))
                    r.add_get(pre + f"/fapi/{v}/positionRisk", self._rest(5, self.position_risk))
                for add in (r.add_post, r.add_put, r.add_delete):
                    add(pre + "/fapi/v1/listenKey", self._rest(1, self.listen_key_call, signed=False))
            r.add_get("/binance-usdm/ws-fapi/v1", self.ws_api)
            r.add_get("/binance-usdm/private/ws/{listenKey}", self.user_ws)
            r.add_get("/binance-usdm/private/ws", self.user_ws)
        else:
            for pre in ("", "/binance"):
                r.add_post(pre + "/api/v3/order", self._rest(1, self.place, order=True))
                r.add_delete(pre + "/api/v3/order", self._rest(1, self.cancel, order=True))
                r.add_get(pre + "/api/v3/order", self._rest(4, self.status))
                r.add_get(pre + "/api/v3/openOrders", self._rest(6, self.open_orders))
                r.add_delete(pre + "/api/v3/openOrders", self._rest(1, self.cancel_all, order=True))
                r.add_get(pre + "/api/v3/account", self._rest(20, self.account_status))
                r.add_get(pre + "/api/v3/myTrades", self._rest(20, self.trades))
            r.add_get("/binance/ws-api/v3", self.ws_api)

    def _rest(self, weight: int, fn: Handler, order: bool = False, signed: bool = True) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            body = await request.text()
            params: Params = dict(parse_qsl(body, keep_blank_values=True))
            params.update(request.query)
            out = self._weigh(weight)
            if out is None:
                if order and self.opts.order_latency_ms > 0:
                    await asyncio.sleep(self.opts.order_latency_ms / 1000)
                if signed:
                    out = self._key(request.headers.get("X-MBX-APIKEY")) or self._sig_rest(
                        request.query_string, body) or self._time(params)
                else:
                    out = self._key(request.headers.get("X-MBX-APIKEY"))
                if out is None:
                    params["_method"] = request.method
                    out = await fn(params)
            headers = {"X-MBX-USED-WEIGHT-1M": str(self.weight.count(wall_ms()))}
            if out.order_count:
                for _, _, unit, w in self.order_windows:
                    headers[f"X-MBX-ORDER-COUNT-{unit}"] = str(w.count(wall_ms()))
            if out.retry_after is not None:
                headers["Retry-After"] = str(out.retry_after)
            resp = web.json_response(out.body, status=out.status, headers=headers, dumps=_dumps)
            return await send_rest(request, resp, out)

        return self.faults.rest_guard(self.name, handler)

    # checks --------------------------------------------------------------------------------------------------------
    def _weigh(self, weight: int) -> Outcome | None:
        now = wall_ms()
        if self.weight.full(now, weight):
            limit = self.weight.limit
            out = err(-1003, f"Too much request weight used; current limit is {limit} request weight per 1 MINUTE. "
                      "Please use WebSocket Streams for live updates to avoid polling the API.", 429)
            out.retry_after = -(-self.weight.reset_ms(now) // 1000)
            return out
        self.weight.add(now, weight)
        return None

    def _count_order(self) -> Outcome | None:
        now = wall_ms()
        for interval, num, _, w in self.order_windows:
            if w.full(now):
                out = err(-1015, f"Too many new orders; current limit is {w.limit} orders per {num} {interval}.", 429)
                out.retry_after, out.order_count = -(-w.reset_ms(now) // 1000), True
                return out
        for *_, w in self.order_windows:
            w.add(now)
        return None

    def _key(self, key: str | None) -> Outcome | None:
        if not key:
            return err(-2014, "API-key format invalid.", 401)
        if not same(key, self.opts.api_key):
            return err(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        return None

    def _sig_rest(self, query: str, body: str) -> Outcome | None:
        sig: str | None = None
        kept: list[str] = []
        for raw in (query, body):
            parts = []
            for part in raw.split("&") if raw else []:
                if part.startswith("signature="):
                    sig = part[len("signature="):]
                else:
                    parts.append(part)
            kept.append("&".join(parts))
        if not sig:
            return missing("signature")
        if not same(sig.lower(), binance_sign(self.opts.api_secret, kept[0] + kept[1])):
            return err(-1022, "Signature for this request is not valid.")
        return None

    def _sig_ws(self, params: Params) -> Outcome | None:
        if "apiKey" not in params:
            return missing("apiKey")
        out = self._key(str(params["apiKey"]))
        if out is not None:
            return out
        sig = params.get("signature")
        if not sig:
            return missing("signature")
        if not same(str(sig).lower(), binance_sign(self.opts.api_secret, ws_payload(params))):
            return err(-1022, "Signature for this request is not valid.")
        return None

    def _time(self, params: Params) -> Outcome | None:
        raw = param_text(params.get("timestamp", ""))
        if not raw.isdigit():
            return missing("timestamp")
        ts = int(raw)
        if ts > 10**14:
            ts //= 1000  # microseconds
        window = to_decimal(params.get("recvWindow", 5000))
        if window is None or window <= 0:
            return err(-1100, "Illegal characters found in parameter 'recvWindow'; " + DECIMAL_RANGE)
        if window > 60000:
            return err(-1131, "recvWindow must be less than 60000")
        skew = self.engine.faults.skew_ms[self.venue.name]
        if timestamp_ok(ts, self.engine.now_ms(), int(window), 1000, skew):
            return None
        if ts >= max(self.engine.now_ms(), wall_ms()) + skew + 1000:
            return err(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        return err(-1021, "Timestamp for this request is outside of the recvWindow.")

    def _symbol(self, params: Params, required: bool = True) -> tuple[int | None, Outcome | None]:
        name = param_text(params.get("symbol", ""))
        if not name:
            return None, missing("symbol") if required else None
        i = self.market.find(name)
        if i is None or self.market.instruments[i].binance != name:
            return None, err(-1121, "Invalid symbol.")
        return i, None

    # order placement -----------------------------------------------------------------------------------------------
    async def place(self, params: Params) -> Outcome:
        out = self._count_order() or self._parse(params)
        if isinstance(out, Outcome):
            out.order_count = True
            return out
        spec, resp_type = out
        out = self._execute(spec, resp_type)
        out.order_count = True
        return out

    def _parse(self, params: Params) -> Outcome | tuple[OrderSpec, str]:
        p = {k: param_text(v) for k, v in params.items()}
        i, problem = self._symbol(p)
        if problem is not None or i is None:
            return problem or missing("symbol")
        for name in ("side", "type"):
            if not p.get(name):
                return missing(name)
        side = {"BUY": BUY, "SELL": SELL}.get(p["side"])
        if side is None:
            return err(-1117, "Invalid side.")
        kind = p["type"]
        if kind not in (("LIMIT", "MARKET") if self.futures else ("LIMIT", "MARKET", "LIMIT_MAKER")):
            return err(-1116, "Invalid orderType.")
        tif = p.get("timeInForce", "")
        if kind == "LIMIT":
            if not tif:
                return missing("timeInForce")
            if tif not in (("GTC", "IOC", "GTX") if self.futures else ("GTC", "IOC")):
                return err(-1115, "Invalid timeInForce.")
        elif tif and not self.futures:
            return err(-1106, "Parameter 'timeInForce' sent when not required.")
        if kind == "MARKET" and p.get("price"):
            return err(-1106, "Parameter 'price' sent when not required.")
        names = ("quantity", "price") if kind != "MARKET" else ("quantity",)
        values: dict[str, Decimal] = {}
        for name in names:
            if not p.get(name):
                return missing(name)
            d = to_decimal(p[name])
            if d is None or d < 0 or not re.fullmatch(r"[0-9]{1,20}(\.[0-9]{1,20})?", p[name]):
                return err(-1100, f"Illegal characters found in parameter '{name}'; " + DECIMAL_RANGE)
            ins = self.market.instruments[i]
            dp = 8 if not self.futures else ins.size_dp if name == "quantity" else ins.price_dp
            if decimal_places(p[name].rstrip("0")) > dp:
                return err(-1111, "Precision is over the maximum defined for this asset.")
            values[name] = d
        cid = p.get("newClientOrderId") or "x-" + secrets.token_hex(10)
        if not (USDM_CID if self.futures else SPOT_CID).match(cid):
            legal = USDM_CID.pattern if self.futures else SPOT_CID.pattern
            return err(-1100, f"Illegal characters found in parameter 'newClientOrderId'; legal range is '{legal}'.")
        reduce = p.get("reduceOnly", "false").lower()
        if self.futures and reduce not in ("true", "false"):
            return err(-1100, "Illegal characters found in parameter 'reduceOnly'; legal range is 'true, false'.")
        reduce_only = self.futures and reduce == "true"
        types = ("ACK", "RESULT") if self.futures else ("ACK", "RESULT", "FULL")
        resp_type = p.get("newOrderRespType") or ("ACK" if self.futures or kind == "LIMIT_MAKER" else "FULL")
        if resp_type not in types:
            return err(-1100, "Illegal characters found in parameter 'newOrderRespType'; legal range is "
                       f"'{', '.join(types)}'.")
        ins = self.market.instruments[i]
        market = kind == "MARKET"
        max_qty = Decimal(("120" if market else "1000") if self.futures else ("100" if market else "9000"))
        max_price = Decimal("4529764" if self.futures else "1000000")
        problem_name, px, lots = check_filters(ins, values.get("price"), values["quantity"], max_qty, max_price,
                                               self.account.mid(i))
        if problem_name == "notional":
            if self.futures and not reduce_only:
                return err(-4164, f"Order's notional must be no smaller than {ins.min_notional} (unless you choose "
                           "reduce only).")
            if not self.futures:
                return err(-1013, "Filter failure: NOTIONAL")
        elif problem_name:
            filt = "PRICE_FILTER" if problem_name.startswith("price") else "MARKET_LOT_SIZE" if market else "LOT_SIZE"
            return err(-1013, f"Filter failure: {filt}")
        post = kind == "LIMIT_MAKER" or tif == "GTX"
        spec = OrderSpec(i, side, lots, px, "POST" if post else "IOC" if market else tif, cid, reduce_only, kind)
        return spec, resp_type

    def _reject(self, reason: str) -> Outcome:
        if self.futures:
            code, msg = {"insufficient": (-2019, "Margin is insufficient."), "would_take": (-5022, GTX_MSG),
                         "duplicate": (-4116, "ClientOrderId is duplicated."),
                         "reduce_only": (-2022, "ReduceOnly Order is rejected.")}[reason]
        else:
            code, msg = -2010, {"insufficient": "Account has insufficient balance for requested action.",
                                "would_take": "Order would immediately match and take.",
                                "duplicate": "Duplicate order sent."}[reason]
        return err(code, msg)

    def _execute(self, spec: OrderSpec, resp_type: str) -> Outcome:
        acct = self.account
        acct.note(spec.client_id)
        rej = self.faults.order_due(self.name, "order_reject")
        if rej is not None:
            out = self._reject("insufficient")
            if "code" in rej:
                text_code = str(rej["code"])
                code = int(text_code) if text_code.lstrip("-").isdigit() else -2010
                known = {-2010: "Account has insufficient balance for requested action.", -2019: "Margin is "
                         "insufficient.", -4116: "ClientOrderId is duplicated.", -5022: GTX_MSG}
                out = err(code, known.get(code, "Order rejected (simulated fault)."))
            return out
        partial = self.faults.orders.get(("order_partial", self.name)) if spec.tif == "IOC" else None
        ratio = partial["ratio"] if partial and partial["count"] > 0 else None
        try:
            o, ups = acct.place(spec, self.engine.venue_ms(self.venue.name), ratio)
        except Rejected as e:
            return self._reject(e.reason)
        if ratio is not None:
            self.faults.order_due(self.name, "order_partial")
        if self.futures:
            body = self.usdm_order(o, final=resp_type == "RESULT")
        elif resp_type == "ACK":
            body = {"symbol": o.ins.binance, "orderId": o.id, "orderListId": -1, "clientOrderId": o.client_id,
                    "transactTime": o.t_ms}
        else:
            body = self.spot_order(o, "full" if resp_type == "FULL" else "result")
        return Outcome(200, body, acct, ups, delivery_mode(self.faults, self.name))

    # other calls ---------------------------------------------------------------------------------------------------
    def _lookup(self, params: Params) -> tuple[Order | None, int | None, Outcome | None]:
        i, problem = self._symbol(params)
        if problem is not None:
            return None, None, problem
        cid = param_text(params.get("origClientOrderId", ""))
        oid = param_text(params.get("orderId", ""))
        if not cid and not oid:
            return None, i, err(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        o = self.account.order(client_id=cid) if cid else self.account.order(order_id=int(oid)) if oid.isdigit() \
            else None
        if o is not None and oid and cid and str(o.id) != oid:
            o = None
        return (o if o is not None and o.spec.inst == i else None), i, None

    async def status(self, params: Params) -> Outcome:
        o, _, problem = self._lookup(params)
        if problem is not None:
            return problem
        if o is None:
            return err(-2013, "Order does not exist.")
        return Outcome(200, self.usdm_order(o, final=True, query=True) if self.futures else self.spot_order(o, "query"))

    async def cancel(self, params: Params) -> Outcome:
        o, _, problem = self._lookup(params)
        if problem is not None:
            return problem
        try:
            _, ups = self.account.cancel(o, self.engine.venue_ms(self.venue.name))
        except Rejected:
            return err(-2011, "Unknown order sent.")
        assert o is not None
        if self.futures:
            return Outcome(200, self.usdm_order(o, final=True), self.account, ups)
        o.cancel_id = param_text(params.get("newClientOrderId", "")) or "x-" + secrets.token_hex(10)
        return Outcome(200, self.spot_order(o, "cancel"), self.account, ups)

    async def cancel_all(self, params: Params) -> Outcome:
        i, problem = self._symbol(params)
        if problem is not None or i is None:
            return problem or missing("symbol")
        done: list[Order] = []
        ups: list[Update] = []
        for o in self.account.open_orders(i):
            if not self.futures:
                o.cancel_id = "x-" + secrets.token_hex(10)
            ups += self.account.cancel(o, self.engine.venue_ms(self.venue.name))[1]
            done.append(o)
        if self.futures:
            return Outcome(200, {"code": 200, "msg": "The operation of cancel all open order is done."},
                           self.account, ups)
        if not done:
            return err(-2011, "Unknown order sent.")
        return Outcome(200, [self.spot_order(o, "cancel") for o in done], self.account, ups)

    async def open_orders(self, params: Params) -> Outcome:
        i, problem = self._symbol(params, required=False)
        if problem is not None:
            return problem
        orders = self.account.open_orders(i)
        return Outcome(200, [self.usdm_order(o, final=True, query=True) if self.futures else
                             self.spot_order(o, "query") for o in orders])

    async def trades(self, params: Params) -> Outcome:
        i, problem = self._symbol(params)
        if problem is not None:
            return problem
        oid = param_text(params.get("orderId", ""))
        try:
            limit = min(max(int(param_text(params.get("limit", "500"))), 1), 1000)
        except ValueError:
            return err(-1100, "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.")
        fills = [f for f in self.account.fills if f.order.spec.inst == i and (not oid or str(f.order.id) == oid)]
        return Outcome(200, [self.trade_json(f) for f in fills[-limit:]])

    async def account_status(self, params: Params) -> Outcome:
        acct = self.account
        return Outcome(200, {
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": "0.00100000", "taker": "0.00100000", "buyer": "0.00000000",
                                "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": acct.updated_ms,
            "accountType": "SPOT", "balances": [{"asset": a, "free": self.amount(acct.free[a]),
                                                 "locked": self.amount(acct.locked[a])} for a in sorted(acct.free)],
            "permissions": ["SPOT"], "uid": 354937868})

    async def balance(self, params: Params) -> Outcome:
        acct = self.account
        up = sum((acct.unrealized(i) for i in range(len(self.market.instruments))), Decimal(0))
        avail = self.amount(acct.available())
        return Outcome(200, [{"accountAlias": "SgsR", "asset": "USDT", "balance": self.amount(acct.wallet),
                              "crossWalletBalance": self.amount(acct.wallet), "crossUnPnl": self.amount(up),
                              "availableBalance": avail, "maxWithdrawAmount": avail, "marginAvailable": True,
                              "updateTime": acct.updated_ms}])

    async def position_risk(self, params: Params) -> Outcome:
        i, problem = self._symbol(params, required=False)
        if problem is not None:
            return problem
        acct, out = self.account, []
        for k, ins in enumerate(self.market.instruments):
            if i is not None and k != i:
                continue
            pos, mid = acct.positions[k], acct.mid(k) or Decimal(0)
            amt = acct.qty(ins, pos.lots)
            out.append({"symbol": ins.binance, "positionAmt": text(amt, ins.size_dp),
                        "entryPrice": text(acct.entry_price(k)), "breakEvenPrice": text(acct.entry_price(k)),
                        "markPrice": self.amount(mid), "unRealizedProfit": self.amount(acct.unrealized(k)),
                        "liquidationPrice": "0", "leverage": "20", "maxNotionalValue": "20000000",
                        "marginType": "cross", "isolatedMargin": "0.00000000", "isAutoAddMargin": "false",
                        "positionSide": "BOTH", "notional": self.amount(amt * mid), "isolatedWallet": "0",
                        "updateTime": pos.updated_ms})
        return Outcome(200, out)

    async def listen_key_call(self, params: Params) -> Outcome:
        method = params.get("_method")
        if method == "POST":
            if self.listen_key is None:
                self.listen_key = secrets.token_urlsafe(48)[:64]
            return Outcome(200, {"listenKey": self.listen_key})
        if self.listen_key is None:
            return err(-1125, "This listenKey does not exist.")
        if method == "PUT":
            return Outcome(200, {"listenKey": self.listen_key})
        key, self.listen_key = self.listen_key, None
        frame = orjson.dumps({"e": "listenKeyExpired", "E": self.engine.venue_ms(self.venue.name),
                              "listenKey": key})
        for conn in list(self.registry.subscribers(self.user_key)):
            self.registry.send_control(conn, frame)
            asyncio.get_running_loop().create_task(self.registry.shut(conn, 1000, b"listenKey expired"))
        return Outcome(200, {})

    # shapes --------------------------------------------------------------------------------------------------------
    def spot_order(self, o: Order, shape: str) -> dict[str, Any]:
        """``result`` / ``full`` (placement), ``query`` (status, open orders) or ``cancel``."""
        out: dict[str, Any] = {"symbol": o.ins.binance}
        if shape == "cancel":
            out["origClientOrderId"] = o.client_id
        out.update(orderId=o.id, orderListId=-1, clientOrderId=o.cancel_id if shape == "cancel" else o.client_id)
        if shape in ("result", "full", "cancel"):
            out["transactTime"] = o.updated_ms if shape == "cancel" else o.t_ms
        out.update(price=self.px(o, o.spec.px), origQty=self.qty(o, o.spec.lots), executedQty=self.qty(o, o.filled),
                   cummulativeQuoteQty=self.amount(o.quote), status=o.status, timeInForce=self.tif(o),
                   type=o.spec.type_name, side=self.side(o))
        if shape == "query":
            out.update(stopPrice="0.00000000", icebergQty="0.00000000", time=o.t_ms, updateTime=o.updated_ms,
                       isWorking=o.resting, workingTime=o.t_ms, origQuoteOrderQty="0.00000000")
        elif shape in ("result", "full"):
            out.update(origQuoteOrderQty="0.00000000", workingTime=o.t_ms)
        out["selfTradePreventionMode"] = STP
        if shape == "full":
            out["fills"] = [{"price": self.px(o, f.px), "qty": self.qty(o, f.lots), "commission": self.amount(f.fee),
                             "commissionAsset": f.fee_asset, "tradeId": f.trade_id} for f in o.fills]
        return out

    def usdm_order(self, o: Order, final: bool, query: bool = False) -> dict[str, Any]:
        """The USD-M order object: ``final`` the current state, else as accepted (ACK)."""
        filled, quote = (o.filled, o.quote) if final else (0, Decimal(0))
        out = {"orderId": o.id, "symbol": o.ins.binance, "status": o.status if final else "NEW",
               "clientOrderId": o.client_id, "price": self.px(o, o.spec.px), "avgPrice": self.avg(o, filled, quote),
               "origQty": self.qty(o, o.spec.lots), "executedQty": self.qty(o, filled), "cumQty": self.qty(o, filled),
               "cumQuote": self.amount(quote), "timeInForce": self.tif(o), "type": o.spec.type_name,
               "reduceOnly": o.spec.reduce_only, "closePosition": False, "side": self.side(o),
               "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE", "priceProtect": False,
               "origType": o.spec.type_name, "priceMatch": "NONE", "selfTradePreventionMode": STP,
               "goodTillDate": 0, "updateTime": o.updated_ms if final else o.t_ms}
        if query:
            out["time"] = o.t_ms
        return out

    def trade_json(self, f: Fill) -> dict[str, Any]:
        o = f.order
        base = {"symbol": o.ins.binance, "id": f.trade_id, "orderId": o.id}
        if self.futures:
            return {**base, "side": self.side(o), "price": self.px(o, f.px), "qty": self.qty(o, f.lots),
                    "realizedPnl": self.amount(f.realized), "quoteQty": self.amount(f.quote),
                    "commission": self.amount(f.fee), "commissionAsset": f.fee_asset, "time": f.t_ms,
                    "buyer": o.side == BUY, "maker": f.maker, "positionSide": "BOTH", "marginAsset": "USDT"}
        return {**base, "orderListId": -1, "price": self.px(o, f.px), "qty": self.qty(o, f.lots),
                "quoteQty": self.amount(f.quote), "commission": self.amount(f.fee), "commissionAsset": f.fee_asset,
                "time": f.t_ms, "isBuyer": o.side == BUY, "isMaker": f.maker, "isBestMatch": True}

    def _execution_report(self, u: Update, now: int) -> dict[str, Any]:
        o, f = u.order, u.fill
        x = {"new": "NEW", "trade": "TRADE", "canceled": "CANCELED", "expired": "EXPIRED"}[u.kind]
        cancel = u.kind == "canceled" and bool(o.cancel_id)
        return {
            "e": "executionReport", "E": now, "s": o.ins.binance, "c": o.cancel_id if cancel else o.client_id,
            "S": self.side(o), "o": o.spec.type_name, "f": self.tif(o), "q": self.qty(o, o.spec.lots),
            "p": self.px(o, o.spec.px), "P": "0.00000000", "F": "0.00000000", "g": -1,
            "C": o.client_id if cancel else "", "x": x, "X": u.status, "r": "NONE", "i": o.id,
            "l": self.qty(o, f.lots if f else 0), "z": self.qty(o, u.filled), "L": self.px(o, f.px if f else 0),
            "n": self.amount(f.fee) if f else "0", "N": f.fee_asset if f else None, "T": u.t_ms,
            "t": f.trade_id if f else -1, "I": o.id * 2 + len(o.fills), "w": u.status in ("NEW", "PARTIALLY_FILLED"),
            "m": bool(f and f.maker), "M": False, "O": o.t_ms, "Z": self.amount(u.quote),
            "Y": self.amount(f.quote) if f else "0.00000000", "Q": "0.00000000", "W": o.t_ms, "V": STP}

    def _order_update(self, u: Update, now: int) -> dict[str, Any]:
        o, f = u.order, u.fill
        x = {"new": "NEW", "trade": "TRADE", "canceled": "CANCELED", "expired": "EXPIRED"}[u.kind]
        return {"e": "ORDER_TRADE_UPDATE", "E": now, "T": u.t_ms, "o": {
            "s": o.ins.binance, "c": o.client_id, "S": self.side(o), "o": o.spec.type_name, "f": self.tif(o),
            "q": self.qty(o, o.spec.lots), "p": self.px(o, o.spec.px), "ap": self.avg(o, u.filled, u.quote),
            "sp": "0", "x": x, "X": u.status, "i": o.id, "l": self.qty(o, f.lots if f else 0),
            "z": self.qty(o, u.filled), "L": self.px(o, f.px if f else 0), "N": "USDT",
            "n": self.amount(f.fee) if f else "0", "T": u.t_ms, "t": f.trade_id if f else 0, "b": "0", "a": "0",
            "m": bool(f and f.maker), "R": o.spec.reduce_only, "wt": "CONTRACT_PRICE", "ot": o.spec.type_name,
            "ps": "BOTH", "cp": False, "rp": self.amount(f.realized) if f else "0", "pP": False, "si": 0, "ss": 0,
            "V": STP, "pm": "NONE", "gtd": 0}}

    def _account_event(self, ups: list[Update], now: int) -> dict[str, Any]:
        acct = self.account
        insts = sorted({u.order.spec.inst for u in ups})
        if self.futures:
            pos = []
            for i in insts:
                ins, p = self.market.instruments[i], acct.positions[i]
                pos.append({"s": ins.binance, "pa": text(acct.qty(ins, p.lots)), "ep": text(acct.entry_price(i)),
                            "bep": text(acct.entry_price(i)), "cr": self.amount(p.realized),
                            "up": self.amount(acct.unrealized(i)), "mt": "cross", "iw": "0", "ps": "BOTH",
                            "ma": "USDT"})
            return {"e": "ACCOUNT_UPDATE", "E": now, "T": ups[-1].t_ms, "a": {"m": "ORDER", "B": [
                {"a": "USDT", "wb": self.amount(acct.wallet), "cw": self.amount(acct.wallet), "bc": "0"}], "P": pos}}
        assets = sorted({a for i in insts for a in (self.market.instruments[i].base, self.market.instruments[i].quote)})
        return {"e": "outboundAccountPosition", "E": now, "u": acct.updated_ms, "B": [
            {"a": a, "f": self.amount(acct.free[a]), "l": self.amount(acct.locked[a])} for a in assets]}

    def publish(self, ups: list[Update]) -> set[Conn]:
        """Account listener: user-data events to the subscribed connections."""
        conns = self.registry.subscribers(self.user_key)
        if not conns:
            return set()
        now = self.engine.venue_ms(self.venue.name)
        if self.futures:
            events = [self._order_update(u, now) for u in ups if u.kind != "open"]
            if any(u.kind == "trade" for u in ups):
                events.append(self._account_event(ups, now))
        else:
            events = [self._execution_report(u, now) for u in ups if u.kind != "open"]
            events.append(self._account_event(ups, now))
        for conn in list(conns):
            for ev in events:
                frame = ev if self.futures else {"subscriptionId": conn.meta["subscription"], "event": ev}
                self.registry.send_control(conn, orjson.dumps(frame))
        return set(conns)

    # websockets ----------------------------------------------------------------------------------------------------
    async def user_ws(self, request: web.Request) -> web.WebSocketResponse:
        """USD-M ``/private/ws/<listenKey>``: user-data events of the account."""
        key = request.match_info.get("listenKey") or request.query.get("listenKey", "")
        if not key or key != self.listen_key:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            with contextlib.suppress(Exception):
                await ws.close(code=1008, message=b"invalid listenKey")
            return ws
        return await self.venue.serve(request, None, lambda conn: self.registry.subscribe(conn, self.user_key))

    async def ws_api(self, request: web.Request) -> web.WebSocketResponse:
        return await self.venue.serve(request, self._ws_text)

    def _ws_text(self, conn: Conn, data: str) -> None:
        task = asyncio.get_running_loop().create_task(self._ws_request(conn, data))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _ws_request(self, conn: Conn, data: str) -> None:
        try:
            m = orjson.loads(data)
            if not isinstance(m, dict):
                raise ValueError
        except ValueError:
            self.registry.send_control(conn, self._ws_frame(None, err(-1100 if self.futures else -2, "Invalid JSON.")))
            return
        rid, method, params = m.get("id"), m.get("method"), m.get("params") or {}
        if not isinstance(params, dict) or not isinstance(method, str):
            out = err(-1100, "Invalid request: 'method' and 'params' expected.")
            self.registry.send_control(conn, self._ws_frame(rid, out))
            return
        due = self.faults.rest_due(self.name)
        if due is not None:
            status, retry = due
            out = Outcome(status, error_body("binance", status))
            if status in (429, 418):
                out.retry_after = retry
            self.registry.send_control(conn, self._ws_frame(rid, out))
            return
        out = await self._ws_call(conn, method, params)
        await send_ws(self.registry, conn, self._ws_frame(rid, out), out)

    async def _ws_call(self, conn: Conn, method: str, params: Params) -> Outcome:
        calls: dict[str, tuple[int, Handler | None]] = {
            "order.place": (0 if self.futures else 1, self.place), "order.cancel": (1, self.cancel),
            "order.status": (1 if self.futures else 4, self.status)}
        if self.futures:
            for prefix in ("", "v2/"):
                calls[prefix + "account.balance"] = (5, self.balance)
                calls[prefix + "account.position"] = (5, self.position_risk)
        else:
            calls.update({"openOrders.status": (6, self.open_orders), "account.status": (20, self.account_status),
                          "myTrades": (20, self.trades), "userDataStream.subscribe.signature": (2, None)})
        if method in ("ping", "time"):
            return self._weigh(1) or Outcome(200, {} if method == "ping" else
                                             {"serverTime": self.engine.venue_ms(self.venue.name)})
        if method == "userDataStream.unsubscribe" and not self.futures:
            self.registry.unsubscribe(conn, self.user_key)
            return Outcome(200, {})
        if method not in calls:
            return err(-1020, "This operation is not supported.")
        weight, fn = calls[method]
        out = self._weigh(weight)
        if out is not None:
            return out
        if method.startswith("order.") and method != "order.status" and self.opts.order_latency_ms > 0:
            await asyncio.sleep(self.opts.order_latency_ms / 1000)
        out = self._sig_ws(params) or self._time(params)
        if out is not None:
            return out
        if fn is None:
            return self._subscribe(conn)
        return await fn(params)

    def _subscribe(self, conn: Conn) -> Outcome:
        if self.user_key in conn.subs:
            return err(-2035, "User Data Stream subscription already active.")
        conn.meta["subscription"] = next(self.sub_ids)
        self.registry.subscribe(conn, self.user_key)
        return Outcome(200, {"subscriptionId": conn.meta["subscription"]})

    def _ws_frame(self, rid: Any, out: Outcome) -> bytes:
        now = wall_ms()
        limits = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                   "limit": self.weight.limit, "count": self.weight.count(now)}]
        if out.order_count:
            limits += [{"rateLimitType": "ORDERS", "interval": interval, "intervalNum": num, "limit": w.limit,
                        "count": w.count(now)} for interval, num, _, w in self.order_windows]
        reply: dict[str, Any] = {"id": rid, "status": out.status}
        if out.status == 200:
            reply["result"] = out.body
        else:
            reply["error"] = dict(out.body)
            if out.retry_after is not None:
                now = self.engine.venue_ms(self.venue.name)
                reply["error"]["data"] = {"serverTime": now, "retryAfter": now + out.retry_after * 1000}
        reply["rateLimits"] = limits
        return orjson.dumps(reply)
