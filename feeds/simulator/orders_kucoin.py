"""KuCoin spot order entry (EXCHANGES.md sections 1.7-1.9): signed REST at the root and under ``/kucoin``, and the
private order topic on the ``/kucoin/ws`` socket.

Routes: ``POST /api/v1/bullet-private``; ``POST /api/v1/hf/orders``; ``GET|DELETE
/api/v1/hf/orders/client-order/{clientOid}?symbol=``; ``GET|DELETE /api/v1/hf/orders/{orderId}?symbol=``;
``GET /api/v1/hf/orders/active?symbol=``; ``GET /api/v1/hf/fills?symbol=[&orderId=]``; ``GET /api/v1/accounts``.
Every call is signed (KC-API-KEY / -SIGN / -TIMESTAMP / -PASSPHRASE, key version 2 or 3) and checked as KuCoin does:
HTTP 401 with 400001 (headers missing), 400002 (timestamp more than 5 s off), 400003 (key), 400004 (passphrase),
400005 (signature). The signed endpoint is the path without the ``/kucoin`` prefix (the prefixed path is accepted
too), plus ``?query`` (as sent or unquoted). Errors are HTTP 400 ``{"code","msg"}``: 400100 parameter errors and
duplicate clientOid (simulator rule, unverified text), 200004 insufficient balance; an unknown order is HTTP 404
400100 ``order not exist.`` (unverified). A postOnly order that would take is accepted and cancelled at once (done,
``canceledSize`` = size). Orders support ``size`` only (no ``funds``), timeInForce GTC / IOC.

Rate limit: the Spot pool, 4000 weight per 30 s (fixed wall-clock windows), counted per account on these routes
(bullet 10, order / cancel 1, queries 2, accounts 5); every answer carries ``gw-ratelimit-limit``,
``gw-ratelimit-remaining`` and ``gw-ratelimit-reset`` (ms); past the limit: HTTP 429 ``429000``.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from .accounts import (
    BUY,
    SELL,
    Account,
    Order,
    OrderSpec,
    Rejected,
    Update,
    Window,
    check_filters,
    kucoin_sign,
    same,
    text,
    timestamp_ok,
    to_decimal,
    wall_ms,
)
from .delivery import Outcome, delivery_mode, send_rest
from .registry import Conn

if TYPE_CHECKING:
    from .engine import Engine
    from .kucoin import KucoinVenue

VENUE = "kucoin"
TOPIC = "/spotMarket/tradeOrdersV2"
USER_ID = "65a1c0ffee0000000000sim1"
POOL, POOL_MS = 4000, 30_000
CLIENT_OID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
MAX_SIZE, MAX_PRICE = Decimal("10000000000"), Decimal("1000000000")
FILTER_MSG = {"price_step": "Price increment invalid.", "price_range": "Price invalid.",
              "qty_step": "Order size increment invalid.", "qty_min": "Order size below the minimum requirement.",
              "qty_max": "Order size above the maximum requirement.",
              "notional": "Order funds below the minimum requirement."}
REJECT = {"insufficient": ("200004", "Balance insufficient!"), "duplicate": ("400100", "The clientOid is duplicated"),
          "not_found": ("400100", "order not exist.")}

Handler = Callable[[web.Request, str], Awaitable[Outcome]]


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def ok(data: Any, **kw: Any) -> Outcome:
    return Outcome(200, {"code": "200000", "data": data}, **kw)


def fail(code: str, msg: str, status: int = 400) -> Outcome:
    return Outcome(status, {"code": code, "msg": msg})


class KucoinOrders:
    """KuCoin order routes and the private order stream of the account."""

    def __init__(self, engine: Engine, venue: KucoinVenue, account: Account) -> None:
        self.engine, self.venue, self.account = engine, venue, account
        self.market, self.registry, self.faults = engine.market, engine.registry, engine.faults
        self.opts = engine.opts
        self.pool = Window(POOL, POOL_MS)
        account.listeners.append(self.publish)
        account.id_text = self.oid_of

    def oid(self, o: Order) -> str:
        return self.oid_of(o.id)

    @staticmethod
    def oid_of(n: int) -> str:
        return f"{n:024x}"

    # routes --------------------------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        r = app.router
        for pre in ("", "/kucoin"):
            r.add_post(pre + "/api/v1/bullet-private", self._route(10, self.bullet))
            r.add_post(pre + "/api/v1/hf/orders", self._route(1, self.place, order=True))
            r.add_get(pre + "/api/v1/hf/orders/active", self._route(2, self.active))
            r.add_get(pre + "/api/v1/hf/orders/client-order/{clientOid}", self._route(2, self.get_order))
            r.add_delete(pre + "/api/v1/hf/orders/client-order/{clientOid}", self._route(1, self.cancel, order=True))
            r.add_get(pre + "/api/v1/hf/orders/{orderId}", self._route(2, self.get_order))
            r.add_delete(pre + "/api/v1/hf/orders/{orderId}", self._route(1, self.cancel, order=True))
            r.add_get(pre + "/api/v1/hf/fills", self._route(2, self.fills))
            r.add_get(pre + "/api/v1/accounts", self._route(5, self.accounts))

    def _route(self, weight: int, fn: Handler, order: bool = False) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            body = await request.text()
            now = wall_ms()
            if self.pool.full(now, weight):
                out = fail("429000", "Too Many Requests", 429)
            else:
                self.pool.add(now, weight)
                if order and self.opts.order_latency_ms > 0:
                    await asyncio.sleep(self.opts.order_latency_ms / 1000)
                out = self._auth(request, body) or await fn(request, body)
            now = wall_ms()
            headers = {"gw-ratelimit-limit": str(POOL), "gw-ratelimit-remaining": str(POOL - self.pool.count(now)),
                       "gw-ratelimit-reset": str(self.pool.reset_ms(now))}
            resp = web.json_response(out.body, status=out.status, headers=headers, dumps=_dumps)
            return await send_rest(request, resp, out)

        return self.faults.rest_guard(VENUE, handler)

    def _auth(self, request: web.Request, body: str) -> Outcome | None:
        h = request.headers
        key, sign, ts, phrase = (h.get(k, "") for k in ("KC-API-KEY", "KC-API-SIGN", "KC-API-TIMESTAMP",
                                                         "KC-API-PASSPHRASE"))
        if not (key and sign and ts and phrase):
            return fail("400001", "Please check the header of your request for KC-API-KEY, KC-API-SIGN, "
                        "KC-API-TIMESTAMP, KC-API-PASSPHRASE", 401)
        if not ts.isdigit() or not timestamp_ok(int(ts), self.engine.now_ms(), 5000, 5001,
                                                    self.faults.skew_ms[VENUE]):
            return fail("400002", "KC-API-TIMESTAMP Invalid -- Time differs from server time by more than 5 seconds",
                        401)
        if not same(key, self.opts.api_key):
            return fail("400003", "KC-API-KEY not exists", 401)
        version = h.get("KC-API-KEY-VERSION", "1")
        want = kucoin_sign(self.opts.api_secret, self.opts.api_passphrase) if version in ("2", "3") else \
            self.opts.api_passphrase
        if not same(phrase, want):
            return fail("400004", "Invalid KC-API-PASSPHRASE", 401)
        path, qs = request.path, request.query_string
        paths = {path, path.removeprefix("/kucoin")}
        queries = {qs, unquote(qs)}
        for p in paths:
            for q in queries:
                payload = f"{ts}{request.method}{p}{'?' + q if q else ''}{body}"
                if same(sign, kucoin_sign(self.opts.api_secret, payload)):
                    return None
        return fail("400005", "Invalid KC-API-SIGN", 401)

    def _symbol(self, name: str) -> int | None:
        i = self.market.find(name)
        return i if i is not None and self.market.instruments[i].symbol == name else None

    # handlers ------------------------------------------------------------------------------------------------------
    async def bullet(self, request: web.Request, body: str) -> Outcome:
        return ok(self.venue.bullet_data(request, private=True))

    async def place(self, request: web.Request, body: str) -> Outcome:
        try:
            m = orjson.loads(body or "{}")
        except orjson.JSONDecodeError:
            m = None
        if not isinstance(m, dict):
            return fail("400100", "The request body must be a JSON object.")
        i = self._symbol(str(m.get("symbol") or ""))
        if i is None:
            return fail("400100", "symbol not exists") if m.get("symbol") else \
                fail("400100", "Parameter [symbol] is required.")
        side = {"buy": BUY, "sell": SELL}.get(str(m.get("side")))
        kind = str(m.get("type") or "limit")
        tif = str(m.get("timeInForce") or "GTC")
        if side is None:
            return fail("400100", "Parameter [side] invalid.")
        if kind not in ("limit", "market"):
            return fail("400100", "Parameter [type] invalid.")
        if tif not in ("GTC", "IOC"):
            return fail("400100", f"timeInForce {tif} is not supported by the simulator (GTC, IOC).")
        cid = m.get("clientOid")
        if cid is None:
            cid = uuid.uuid4().hex
        if not isinstance(cid, str) or not CLIENT_OID.match(cid):
            return fail("400100", "Parameter [clientOid] invalid.")
        if m.get("funds") is not None:
            return fail("400100", "funds orders are not supported by the simulator; send size.")
        size = to_decimal(m.get("size"))
        if size is None:
            return fail("400100", "Parameter [size] is required." if m.get("size") is None else
                        "Parameter [size] invalid.")
        price = None
        if kind == "limit":
            price = to_decimal(m.get("price"))
            if price is None:
                return fail("400100", "Parameter [price] is required." if m.get("price") is None else
                            "Parameter [price] invalid.")
        ins = self.market.instruments[i]
        problem, px, lots = check_filters(ins, price, size, MAX_SIZE, MAX_PRICE, self.account.mid(i))
        if problem:
            return fail("400100", FILTER_MSG[problem])
        post = bool(m.get("postOnly")) and kind == "limit" and tif == "GTC"
        spec = OrderSpec(i, side, lots, px, "POST" if post else ("IOC" if kind == "market" else tif), cid,
                         type_name=kind)
        return self._execute(spec)

    def _execute(self, spec: OrderSpec) -> Outcome:
        acct = self.account
        acct.note(spec.client_id)
        rej = self.faults.order_due(VENUE, "order_reject")
        if rej is not None:
            code = str(rej.get("code", "200004"))
            msg = "Balance insufficient!" if code == "200004" else "Order rejected (simulated fault)."
            return fail(code, msg)
        partial = self.faults.orders.get(("order_partial", VENUE)) if spec.tif == "IOC" else None
        ratio = partial["ratio"] if partial and partial["count"] > 0 else None
        try:
            o, ups = acct.place(spec, self.engine.venue_ms(VENUE), ratio)
        except Rejected as e:
            return fail(*REJECT.get(e.reason, ("400100", e.reason)))
        if ratio is not None:
            self.faults.order_due(VENUE, "order_partial")
        return ok({"orderId": self.oid(o), "clientOid": o.client_id}, account=acct, updates=ups,
                  mode=delivery_mode(self.faults, VENUE))

    def _find(self, request: web.Request) -> tuple[Order | None, Outcome | None]:
        sym = request.query.get("symbol", "")
        i = self._symbol(sym)
        if i is None:
            return None, fail("400100", "symbol not exists" if sym else "Parameter [symbol] is required.")
        cid, oid = request.match_info.get("clientOid"), request.match_info.get("orderId")
        o = self.account.order(client_id=cid) if cid else None
        if oid:
            o = next((x for x in self.account.orders.values() if self.oid(x) == oid), None)
        if o is None or o.spec.inst != i:
            return None, fail("400100", "order not exist.", 404)
        return o, None

    async def cancel(self, request: web.Request, body: str) -> Outcome:
        o, problem = self._find(request)
        if problem is not None:
            return problem
        try:
            _, ups = self.account.cancel(o, self.engine.venue_ms(VENUE))
        except Rejected:
            return fail("400100", "order not exist.", 404)
        data = {"clientOid": o.client_id} if "clientOid" in request.match_info else {"orderId": self.oid(o)}
        return ok(data, account=self.account, updates=ups)

    async def get_order(self, request: web.Request, body: str) -> Outcome:
        o, problem = self._find(request)
        return problem or ok(self.order_json(o))  # type: ignore[arg-type]

    async def active(self, request: web.Request, body: str) -> Outcome:
        sym = request.query.get("symbol", "")
        i = self._symbol(sym)
        if i is None:
            return fail("400100", "symbol not exists" if sym else "Parameter [symbol] is required.")
        return ok([self.order_json(o) for o in self.account.open_orders(i)])

    async def fills(self, request: web.Request, body: str) -> Outcome:
        q = request.query
        i = self._symbol(q.get("symbol", ""))
        if i is None:
            return fail("400100", "symbol not exists" if q.get("symbol") else "Parameter [symbol] is required.")
        try:
            limit = min(max(int(q.get("limit") or 20), 1), 100)
        except ValueError:
            return fail("400100", "Parameter [limit] invalid.")
        oid = q.get("orderId")
        items = [f for f in reversed(self.account.fills) if f.order.spec.inst == i and
                 (not oid or self.oid(f.order) == oid)][:limit]
        ins = self.market.instruments[i]
        out = [{"id": f.trade_id * 2, "orderId": self.oid(f.order), "counterOrderId": f"{f.counter_id:024x}",
                "tradeId": f.trade_id, "symbol": ins.symbol, "side": "buy" if f.order.side == BUY else "sell",
                "liquidity": "maker" if f.maker else "taker", "type": f.order.spec.type_name, "forceTaker": False,
                "price": ins.kprice(f.px), "size": ins.ksize(f.lots), "funds": text(f.quote), "fee": text(f.fee),
                "feeRate": text(self.account.maker_rate if f.maker else self.account.taker_rate),
                "feeCurrency": f.fee_asset, "stop": "", "tradeType": "TRADE", "taxRate": "0", "tax": "0",
                "createdAt": f.t_ms} for f in items]
        return ok({"items": out, "lastId": out[-1]["id"] if out else 0})

    async def accounts(self, request: web.Request, body: str) -> Outcome:
        q = request.query
        acct = self.account
        if q.get("type", "trade") != "trade":
            return ok([])
        assets = [a for a in sorted(acct.free) if not q.get("currency") or a == q.get("currency")]
        return ok([{"id": f"{0x5BD6E9286D99522A52E45800 + n:024x}", "currency": a, "type": "trade",
                    "balance": text(acct.free[a] + acct.locked[a]), "available": text(acct.free[a]),
                    "holds": text(acct.locked[a])} for n, a in enumerate(assets)])

    # shapes --------------------------------------------------------------------------------------------------------
    def order_json(self, o: Order) -> dict[str, Any]:
        ins = o.ins
        canceled = o.left if o.status in ("CANCELED", "EXPIRED") else 0
        return {
            "id": self.oid(o), "clientOid": o.client_id, "symbol": ins.symbol, "opType": "DEAL",
            "type": o.spec.type_name, "side": "buy" if o.side == BUY else "sell",
            "price": ins.kprice(o.spec.px) if o.spec.px is not None else "0", "size": ins.ksize(o.spec.lots),
            "funds": "0", "dealSize": ins.ksize(o.filled), "dealFunds": text(o.quote), "fee": text(o.fee),
            "feeCurrency": ins.quote, "stp": None, "timeInForce": "IOC" if o.spec.tif == "IOC" else "GTC",
            "postOnly": o.spec.tif == "POST", "hidden": False, "iceberg": False, "visibleSize": "0",
            "cancelAfter": 0, "channel": "API", "remark": None, "tags": None, "cancelExist": canceled > 0,
            "tradeType": "TRADE", "inOrderBook": o.resting, "cancelledSize": ins.ksize(canceled),
            "cancelledFunds": "0", "remainSize": ins.ksize(o.left if o.active else 0), "remainFunds": "0",
            "active": o.active, "createdAt": o.t_ms, "lastUpdatedAt": o.updated_ms}

    def _change(self, u: Update, kind: str, status: str) -> bytes:
        o, ins = u.order, u.order.ins
        lots = o.spec.lots
        canceled = lots - u.filled if kind == "canceled" else 0
        data: dict[str, Any] = {
            "symbol": ins.symbol, "orderType": o.spec.type_name, "side": "buy" if o.side == BUY else "sell",
            "orderId": self.oid(o), "clientOid": o.client_id,
            "price": ins.kprice(o.spec.px) if o.spec.px is not None else "0", "size": ins.ksize(lots),
            "originSize": ins.ksize(lots), "filledSize": ins.ksize(u.filled),
            "remainSize": ins.ksize(0 if status == "done" else lots - u.filled), "canceledSize": ins.ksize(canceled),
            "status": status, "type": kind, "orderTime": o.t_ms, "ts": u.t_ms * 1_000_000}
        f = u.fill
        if kind == "match" and f is not None:
            data.update(matchPrice=ins.kprice(f.px), matchSize=ins.ksize(f.lots), tradeId=str(f.trade_id),
                        liquidity="maker" if f.maker else "taker", feeType="makerFee" if f.maker else "takerFee")
        return orjson.dumps({"type": "message", "topic": TOPIC, "subject": "orderChange", "channelType": "private",
                             "userId": USER_ID, "data": data})

    def publish(self, ups: list[Update]) -> set[Conn]:
        """Account listener: ``orderChange`` messages to the private subscribers."""
        conns = self.registry.subscribers((VENUE, TOPIC))
        if not conns:
            return set()
        frames: list[bytes] = []
        for u in ups:
            if u.kind == "new":
                frames.append(self._change(u, "received", "new"))
            elif u.kind == "open":
                frames.append(self._change(u, "open", "open"))
            elif u.kind == "trade":
                frames.append(self._change(u, "match", "match"))
                if u.status == "FILLED":
                    frames.append(self._change(u, "filled", "done"))
            else:
                frames.append(self._change(u, "canceled", "done"))
        for conn in list(conns):
            for fr in frames:
                self.registry.send_control(conn, fr)
        return set(conns)
