"""Order entry of the exchange simulator (KuCoin spot, Binance spot, Binance USD-M) against a real
``python -m feeds.simulator`` process: requests signed here with hmac (no execution/ code), balances reconciled to
the last unit through ``/_sim/accounts``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import socket
import time
from collections.abc import Iterator
from decimal import ROUND_UP, Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
import websocket
from simulator_client import Sim

KEY, SECRET, PASS = "lowlat-sim-key", "lowlat-sim-secret", "lowlat-sim-pass"
D = Decimal
Q8 = D("1e-8")
SIM_ARGS = ("--seed", "7", "--rate-hz", "10")
Response = tuple[int, Any, dict[str, str]]


def now_ms() -> int:
    return int(time.time() * 1000)


# plumbing -----------------------------------------------------------------------------------------------------------
class Rest:
    """HTTP/1.1 keep-alive connection to the simulator."""

    def __init__(self, sim: Sim, timeout: float = 10.0) -> None:
        self.port, self.timeout = sim.port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=timeout)

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
             ) -> Response:
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            r = self.conn.getresponse()
            data = r.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            raise
        return r.status, json.loads(data), {k.lower(): v for k, v in r.getheaders()}

    def kucoin(self, method: str, path: str, body: Any = None, *, ts: int | None = None, secret: str = SECRET,
               key: str = KEY) -> Response:
        stamp = str(ts if ts is not None else now_ms())
        text = json.dumps(body, separators=(",", ":")) if body is not None else ""
        sign = base64.b64encode(hmac.new(secret.encode(), (stamp + method + path + text).encode(),
                                         hashlib.sha256).digest()).decode()
        phrase = base64.b64encode(hmac.new(secret.encode(), PASS.encode(), hashlib.sha256).digest()).decode()
        headers = {"KC-API-KEY": key, "KC-API-SIGN": sign, "KC-API-TIMESTAMP": stamp, "KC-API-PASSPHRASE": phrase,
                   "KC-API-KEY-VERSION": "3", "Content-Type": "application/json"}
        return self.call(method, path, text.encode() if body is not None else None, headers)

    def binance(self, method: str, path: str, params: dict[str, Any], *, ts: int | None = None,
                secret: str = SECRET, key: str = KEY, in_body: bool = False) -> Response:
        query = urlencode({**params, "timestamp": ts if ts is not None else now_ms()})
        signed = query + "&signature=" + hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
        headers = {"X-MBX-APIKEY": key}
        if in_body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            return self.call(method, path, signed.encode(), headers)
        return self.call(method, f"{path}?{signed}", None, headers)


def ws_signed(params: dict[str, Any], *, ts: int | None = None, secret: str = SECRET) -> dict[str, Any]:
    p = {**params, "apiKey": KEY, "timestamp": ts if ts is not None else now_ms()}
    payload = "&".join(f"{k}={p[k]}" for k in sorted(p))
    return {**p, "signature": hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()}


class WsApi:
    """A Binance WS-API connection; user-data events read while waiting for a response are kept in order."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(url, timeout=10)
        self.n = 0
        self.frames: list[Any] = []

    def send(self, method: str, params: dict[str, Any] | None = None) -> int:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params or {}}))
        return self.n

    def recv(self) -> Any:
        return self.frames.pop(0) if self.frames else json.loads(self.ws.recv())

    def response(self, rid: int) -> Any:
        kept = []
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == rid and "status" in m:
                self.frames = kept + self.frames
                return m
            kept.append(m)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.response(self.send(method, params))


def kucoin_private(sim: Sim, rest: Rest) -> websocket.WebSocket:
    status, body, _ = rest.kucoin("POST", "/api/v1/bullet-private")
    assert status == 200 and body["code"] == "200000"
    server = body["data"]["instanceServers"][0]
    ws = websocket.create_connection(f"{server['endpoint']}?token={body['data']['token']}&connectId=p1", timeout=10)
    assert json.loads(ws.recv())["type"] == "welcome"
    ws.send(json.dumps({"id": "s1", "type": "subscribe", "topic": "/spotMarket/tradeOrdersV2", "privateChannel": True,
                        "response": True}))
    assert json.loads(ws.recv()) == {"id": "s1", "type": "ack"}
    return ws


def accounts(sim: Sim) -> Any:
    return sim.get("/_sim/accounts")


def depth(sim: Sim, symbol: str) -> tuple[int, list[tuple[D, D]], list[tuple[D, D]]]:
    d = sim.get(f"/api/v3/depth?symbol={symbol.replace('-', '')}&limit=20")
    return (d["lastUpdateId"], [(D(p), D(q)) for p, q in d["bids"]], [(D(p), D(q)) for p, q in d["asks"]])


def fee_up(x: D) -> D:
    return x.quantize(Q8, ROUND_UP)


# venue adapters ---------------------------------------------------------------------------------------------------
class Venue:
    """One venue's order calls in a common form."""

    name = ""

    def __init__(self, rest: Rest) -> None:
        self.rest = rest

    def place(self, cid: str, side: str, qty: str, price: str | None, kind: str = "ioc", **kw: Any) -> Response:
        raise NotImplementedError

    def get(self, cid: str, symbol: str = "BTC-USDT") -> Response:
        raise NotImplementedError

    def cancel(self, cid: str, symbol: str = "BTC-USDT") -> Response:
        raise NotImplementedError

    def fills(self, cid: str, symbol: str = "BTC-USDT") -> list[dict[str, D | str | bool]]:
        raise NotImplementedError


class Kucoin(Venue):
    name = "kucoin"

    def place(self, cid: str, side: str, qty: str, price: str | None, kind: str = "ioc", symbol: str = "BTC-USDT",
              **kw: Any) -> Response:
        body: dict[str, Any] = {"clientOid": cid, "side": side.lower(), "symbol": symbol,
                                "type": "market" if kind == "market" else "limit", "size": qty}
        if price is not None:
            body["price"] = price
        if kind != "market":
            body["timeInForce"] = "IOC" if kind == "ioc" else "GTC"
        if kind == "post":
            body["postOnly"] = True
        body.update(kw)
        return self.rest.kucoin("POST", "/api/v1/hf/orders", body)

    def get(self, cid: str, symbol: str = "BTC-USDT") -> Response:
        return self.rest.kucoin("GET", f"/api/v1/hf/orders/client-order/{cid}?symbol={symbol}")

    def cancel(self, cid: str, symbol: str = "BTC-USDT") -> Response:
        return self.rest.kucoin("DELETE", f"/api/v1/hf/orders/client-order/{cid}?symbol={symbol}")

    def fills(self, cid: str, symbol: str = "BTC-USDT") -> list[dict[str, D | str | bool]]:
        oid = self.get(cid, symbol)[1]["data"]["id"]
        body = self.rest.kucoin("GET", f"/api/v1/hf/fills?symbol={symbol}&orderId={oid}")[1]
        return [{"price": D(f["price"]), "qty": D(f["size"]), "fee": D(f["fee"]), "asset": f["feeCurrency"],
                 "maker": f["liquidity"] == "maker", "funds": D(f["funds"])} for f in reversed(body["data"]["items"])]


class Binance(Venue):
    name = "binance"
    base = "/api/v3"

    def place(self, cid: str, side: str, qty: str, price: str | None, kind: str = "ioc", symbol: str = "BTC-USDT",
              **kw: Any) -> Response:
        p: dict[str, Any] = {"symbol": symbol.replace("-", ""), "side": side, "quantity": qty, "newClientOrderId": cid}
        if kind == "market":
            p["type"] = "MARKET"
        elif kind == "post" and self.name == "binance":
            p["type"] = "LIMIT_MAKER"
        else:
            p.update(type="LIMIT", timeInForce={"ioc": "IOC", "gtc": "GTC", "post": "GTX"}[kind])
        if price is not None:
            p["price"] = price
        if self.name == "binance-usdm":
            p["newOrderRespType"] = "RESULT"
        p.update(kw)
        return self.rest.binance("POST", self.base + "/order", p)

    def get(self, cid: str, symbol: str = "BTC-USDT") -> Response:
        return self.rest.binance("GET", self.base + "/order", {"symbol": symbol.replace("-", ""),
                                                               "origClientOrderId": cid})

    def cancel(self, cid: str, symbol: str = "BTC-USDT") -> Response:
        return self.rest.binance("DELETE", self.base + "/order", {"symbol": symbol.replace("-", ""),
                                                                  "origClientOrderId": cid})

    def fills(self, cid: str, symbol: str = "BTC-USDT") -> list[dict[str, D | str | bool]]:
        oid = self.get(cid, symbol)[1]["orderId"]
        path = "/fapi/v1/userTrades" if self.name == "binance-usdm" else "/api/v3/myTrades"
        rows = self.rest.binance("GET", path, {"symbol": symbol.replace("-", ""), "orderId": oid})[1]
        return [{"price": D(t["price"]), "qty": D(t["qty"]), "fee": D(t["commission"]), "asset": t["commissionAsset"],
                 "maker": t.get("isMaker", t.get("maker")), "funds": D(t["quoteQty"]),
                 "pnl": D(t.get("realizedPnl", "0"))} for t in rows]


class Usdm(Binance):
    name = "binance-usdm"
    base = "/fapi/v1"


ADAPTERS: dict[str, type[Venue]] = {"kucoin": Kucoin, "binance": Binance, "binance-usdm": Usdm}
VENUES = list(ADAPTERS)


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    s = Sim(*SIM_ARGS).ready()
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def rest(sim: Sim) -> Rest:
    return Rest(sim)


def venue_of(name: str, rest: Rest) -> Venue:
    return ADAPTERS[name](rest)


def balances(sim: Sim, venue: str) -> dict[str, D]:
    """Total per asset (spot) or the wallet (USD-M, key ``USDT``) and position amounts (``pos:<SYMBOL>``)."""
    a = accounts(sim)[venue]
    if venue == "binance-usdm":
        out = {"USDT": D(a["balances"]["USDT"]["wallet"])}
        out.update({f"pos:{s}": D(p["amount"]) for s, p in a["positions"].items()})
        return out
    assert all(D(b["locked"]) == 0 for b in a["balances"].values()), a["balances"]
    return {k: D(b["total"]) for k, b in a["balances"].items()}


def expected_delta(venue: str, side: str, fills: list[dict[str, Any]]) -> dict[str, D]:
    """Balance changes implied by fills, with each fee recomputed from the venue's rule."""
    out = {"USDT": D(0), "BTC": D(0), "pos:BTCUSDT": D(0)}
    sign = 1 if side == "BUY" else -1
    for f in fills:
        funds = f["price"] * f["qty"]
        assert f["funds"] == funds
        if venue == "kucoin":
            assert f["fee"] == funds * D("0.001") and f["asset"] == "USDT"
            out["USDT"] -= sign * funds + f["fee"]
            out["BTC"] += sign * f["qty"]
        elif venue == "binance":
            fee = fee_up(f["qty"] * D("0.001") if side == "BUY" else funds * D("0.001"))
            assert f["fee"] == fee and f["asset"] == ("BTC" if side == "BUY" else "USDT")
            out["USDT"] -= sign * funds + (fee if side == "SELL" else 0)
            out["BTC"] += sign * f["qty"] - (fee if side == "BUY" else 0)
        else:
            assert f["fee"] == fee_up(funds * (D("0.0002") if f["maker"] else D("0.0005"))) and f["asset"] == "USDT"
            out["USDT"] += f["pnl"] - f["fee"]
            out["pos:BTCUSDT"] += sign * f["qty"]
    return out


def check_delta(before: dict[str, D], after: dict[str, D], delta: dict[str, D]) -> None:
    for k, v in delta.items():
        if k in before:
            assert after[k] - before[k] == v, (k, before[k], after[k], v)


# tests: taking orders -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VENUES)
def test_ioc_buy_fills_book_levels_with_fees_to_the_last_unit(sim: Sim, rest: Rest, name: str) -> None:
    """An IOC buy for the two best ask levels plus one lot, limited at the second level: fills both levels at their
    prices, the extra lot expires. Retried until the book did not change during the attempt; every attempt is
    reconciled to the last unit."""
    v = venue_of(name, rest)
    prev_seq, clean = -1, False
    for attempt in range(12):
        seq, _, asks = depth(sim, "BTC-USDT")
        if seq == prev_seq:
            time.sleep(0.02)
            continue
        (p0, q0), (p1, q1) = asks[0], asks[1]
        qty = q0 + q1 + D("0.00001")
        cid = f"ioc-{name}-{attempt}"
        before = balances(sim, name)
        status, body, headers = v.place(cid, "BUY", str(qty), str(p1))
        seq_after = depth(sim, "BTC-USDT")[0]
        assert status == 200, body
        fills = v.fills(cid)
        check_delta(before, balances(sim, name), expected_delta(name, "BUY", fills))
        if name == "kucoin":
            order = v.get(cid)[1]["data"]
            assert (order["active"], order["cancelExist"], order["inOrderBook"]) == (False, True, False)
            assert D(order["dealSize"]) + D(order["cancelledSize"]) == qty
            assert D(order["fee"]) == sum(f["fee"] for f in fills)
            assert int(headers["gw-ratelimit-remaining"]) < 4000 and int(headers["gw-ratelimit-reset"]) <= 30000
        else:
            assert body["status"] == "EXPIRED" and body["clientOrderId"] == cid
            assert D(body["executedQty"]) == sum(f["qty"] for f in fills)
            assert int(headers["x-mbx-order-count-10s"]) >= 1
            assert ("x-mbx-order-count-1m" if name == "binance-usdm" else "x-mbx-order-count-1d") in headers
            if name == "binance":
                assert [(D(f["price"]), D(f["qty"])) for f in body["fills"]] == [(f["price"], f["qty"]) for f in fills]
        if seq_after == seq:
            assert [(f["price"], f["qty"]) for f in fills] == [(p0, q0), (p1, q1)]
            assert all(not f["maker"] for f in fills)
            clean = True
            break
        prev_seq = seq_after
    assert clean, "the book changed during every attempt"
    ids = accounts(sim)[name]["client_ids"]
    assert all(n == 1 for k, n in ids.items() if k.startswith("ioc-"))


@pytest.mark.parametrize("name", VENUES)
def test_partial_fault_expires_remainder(sim: Sim, rest: Rest, name: str) -> None:
    v = venue_of(name, rest)
    _, _, asks = depth(sim, "BTC-USDT")
    limit = asks[-1][0]
    sim.fault(kind="order_partial", venue=name, count=1, ratio=0.5)
    status, body, _ = v.place(f"part-{name}", "BUY", "0.00015", str(limit))
    assert status == 200, body
    filled = sum(f["qty"] for f in v.fills(f"part-{name}"))
    assert filled == D("0.00007")  # floor(15 lots x 0.5)
    if name == "kucoin":
        order = v.get(f"part-{name}")[1]["data"]
        assert (D(order["dealSize"]), D(order["cancelledSize"]), order["active"]) == (filled, D("0.00008"), False)
    else:
        assert body["status"] == "EXPIRED" and D(body["executedQty"]) == filled
    # the fault is used up: the next IOC fills completely
    status, body, _ = v.place(f"part2-{name}", "BUY", "0.00015", str(limit))
    assert sum(f["qty"] for f in v.fills(f"part2-{name}")) == D("0.00015")


def test_usdm_round_trip_position_and_realized_pnl(sim: Sim, rest: Rest) -> None:
    v = Usdm(rest)
    a0 = accounts(sim)["binance-usdm"]
    wallet0, pos0 = D(a0["balances"]["USDT"]["wallet"]), D(a0["positions"]["ETHUSDT"]["amount"])
    assert pos0 == 0
    _, bids, asks = depth(sim, "ETH-USDT")
    assert v.place("rt-buy", "BUY", "0.5", str(asks[-1][0]), symbol="ETH-USDT")[1]["status"] == "FILLED"
    pos = rest.binance("GET", "/fapi/v2/positionRisk", {"symbol": "ETHUSDT"})[1][0]
    buys = v.fills("rt-buy", "ETH-USDT")
    cost = sum(f["price"] * f["qty"] for f in buys)
    assert D(pos["positionAmt"]) == D("0.5") and D(pos["entryPrice"]) == (cost / D("0.5")).quantize(Q8)
    _, bids, _ = depth(sim, "ETH-USDT")
    assert v.place("rt-sell", "SELL", "0.5", str(bids[-1][0]), symbol="ETH-USDT")[1]["status"] == "FILLED"
    sells = v.fills("rt-sell", "ETH-USDT")
    proceeds = sum(f["price"] * f["qty"] for f in sells)
    assert sum(f["pnl"] for f in sells) == proceeds - cost
    fees = sum(f["fee"] for f in buys + sells)
    a1 = accounts(sim)["binance-usdm"]
    assert D(a1["positions"]["ETHUSDT"]["amount"]) == 0 and D(a1["positions"]["ETHUSDT"]["cost"]) == 0
    assert D(a1["balances"]["USDT"]["wallet"]) == wallet0 + proceeds - cost - fees
    pos = rest.binance("GET", "/fapi/v2/positionRisk", {"symbol": "ETHUSDT"})[1][0]
    assert D(pos["positionAmt"]) == 0
    bal = rest.binance("GET", "/fapi/v2/balance", {})[1][0]
    assert D(bal["balance"]) == D(a1["balances"]["USDT"]["wallet"])


@pytest.mark.parametrize("name", ["kucoin", "binance-usdm"])
def test_gtc_takes_what_crosses_and_rests_the_rest(sim: Sim, rest: Rest, name: str) -> None:
    """A GTC buy at the best ask for more than it shows: takes that level, rests the remainder (KuCoin holds its
    funds with the fee), which later fills as maker at its own price or is cancelled; reconciled to the last unit."""
    v = venue_of(name, rest)
    before = balances(sim, name)
    _, _, asks = depth(sim, "BTC-USDT")
    limit, qty = asks[0][0], asks[0][1] + D("0.001")
    status, body, _ = v.place(f"gtc-{name}", "BUY", str(qty), str(limit), kind="gtc")
    assert status == 200, body
    acct = accounts(sim)[name]
    resting = [o for o in acct["open_orders"] if o["client_id"] == f"gtc-{name}"]
    if resting and name == "kucoin":
        left = D(resting[0]["qty"]) - D(resting[0]["filled"])
        assert D(resting[0]["locked"]) == left * limit * D("1.001") == D(acct["balances"]["USDT"]["locked"])
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and any(o["client_id"] == f"gtc-{name}"
                                              for o in accounts(sim)[name]["open_orders"]):
        time.sleep(0.05)
    if any(o["client_id"] == f"gtc-{name}" for o in accounts(sim)[name]["open_orders"]):
        assert v.cancel(f"gtc-{name}")[0] == 200
    fills = v.fills(f"gtc-{name}")
    assert all(f["price"] <= limit for f in fills)
    assert all(f["price"] == limit for f in fills if f["maker"])
    check_delta(before, balances(sim, name), expected_delta(name, "BUY", fills))


# tests: post-only ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VENUES)
def test_post_only_crossing_refused(sim: Sim, rest: Rest, name: str) -> None:
    v = venue_of(name, rest)
    _, _, asks = depth(sim, "BTC-USDT")
    status, body, _ = v.place(f"cross-{name}", "BUY", "0.001", str(asks[0][0] + 10), kind="post")
    if name == "kucoin":  # KuCoin accepts the order and cancels it at once
        assert status == 200 and body["code"] == "200000"
        order = v.get(f"cross-{name}")[1]["data"]
        assert (order["active"], order["cancelExist"], order["dealSize"], order["postOnly"]) == (False, True, "0", True)
    elif name == "binance":
        assert (status, body) == (400, {"code": -2010, "msg": "Order would immediately match and take."})
    else:
        assert status == 400 and body["code"] == -5022
    if name == "kucoin":
        assert v.fills(f"cross-{name}") == []
    else:  # refused: the venue does not know the order
        assert v.get(f"cross-{name}")[1]["code"] == -2013


@pytest.mark.parametrize("name", VENUES)
def test_post_only_rests_locks_then_cancels(sim: Sim, rest: Rest, name: str) -> None:
    v = venue_of(name, rest)
    before = accounts(sim)[name]
    _, bids, _ = depth(sim, "BTC-USDT")
    price = (bids[0][0] * D("0.97")).quantize(D("0.1"))
    status, body, _ = v.place(f"rest-{name}", "BUY", "0.01", str(price), kind="post")
    assert status == 200, body
    acct = accounts(sim)[name]
    (o,) = [o for o in acct["open_orders"] if o["client_id"] == f"rest-{name}"]
    notional = price * D("0.01")
    if name == "kucoin":
        assert D(o["locked"]) == notional * D("1.001") == D(acct["balances"]["USDT"]["locked"])
        assert v.get(f"rest-{name}")[1]["data"]["inOrderBook"] is True
    elif name == "binance":
        assert D(o["locked"]) == notional == D(acct["balances"]["USDT"]["locked"])
        assert v.get(f"rest-{name}")[1]["isWorking"] is True
    else:
        avail0, avail1 = D(before["balances"]["USDT"]["available"]), D(acct["balances"]["USDT"]["available"])
        assert avail0 - avail1 == notional / 20
    status, body, _ = v.cancel(f"rest-{name}")
    assert status == 200, body
    state = v.get(f"rest-{name}")[1]
    if name == "kucoin":
        assert state["data"]["active"] is False and state["data"]["cancelExist"] is True
    else:
        assert body["status"] == state["status"] == "CANCELED"
    after = accounts(sim)[name]
    assert after["balances"] == before["balances"] and not after["open_orders"]
    status, body, _ = v.cancel(f"rest-{name}")  # already cancelled
    assert (status, body.get("code")) == ((404, "400100") if name == "kucoin" else (400, -2011))


# tests: validation --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VENUES)
def test_validation_errors(sim: Sim, rest: Rest, name: str) -> None:
    v = venue_of(name, rest)
    _, bids, _ = depth(sim, "BTC-USDT")
    low = str((bids[0][0] * D("0.5")).quantize(D("0.1")))
    cases: list[tuple[str, str | None, str, str]] = [  # qty, price, KuCoin message, Binance spot filter
        ("0.001", str(D(low) + D("0.05")), "Price increment invalid.", "PRICE_FILTER"),
        ("0.0010001", low, "Order size increment invalid.", "LOT_SIZE"),
        ("0.00001", low, "Order funds below the minimum requirement.", "NOTIONAL"),
    ]
    for k, (qty, price, kmsg, filt) in enumerate(cases):
        status, body, _ = v.place(f"bad-{name}-{k}", "BUY", qty, price)
        if name == "kucoin":
            assert (status, body) == (400, {"code": "400100", "msg": kmsg})
        elif name == "binance":
            assert (status, body) == (400, {"code": -1013, "msg": f"Filter failure: {filt}"})
        elif filt != "NOTIONAL":  # more decimals than USD-M's pricePrecision / quantityPrecision
            assert (status, body) == (400, {"code": -1111, "msg": "Precision is over the maximum defined for this "
                                            "asset."})
        else:
            assert (status, body["code"]) == (400, -4164)
    # insufficient balance / margin
    status, body, _ = v.place(f"big-{name}", "BUY", "1000", low)
    assert (status, body) == (400, {
        "kucoin": {"code": "200004", "msg": "Balance insufficient!"},
        "binance": {"code": -2010, "msg": "Account has insufficient balance for requested action."},
        "binance-usdm": {"code": -2019, "msg": "Margin is insufficient."}}[name])
    # limit without a price, unknown symbol
    status, body, _ = v.place(f"noprice-{name}", "BUY", "0.001", None)
    assert status == 400 and (body["msg"] == "Parameter [price] is required." if name == "kucoin" else
                              body == {"code": -1102, "msg": "Mandatory parameter 'price' was not sent, was "
                                       "empty/null, or malformed."})
    status, body, _ = v.place(f"nosym-{name}", "BUY", "0.001", low, symbol="DOGE-USDT")
    assert status == 400 and (body["code"] == "400100" if name == "kucoin" else body["code"] == -1121)
    # a rejected order does not take its client id; an accepted one does, for good
    ids = accounts(sim)[name]["client_ids"]
    assert ids["big-" + name] == 0 and ids["ioc-" + name + "-0"] == 1
    status, body, _ = v.place(f"ioc-{name}-0", "BUY", "0.001", low)
    assert status == 400 and body == {"kucoin": {"code": "400100", "msg": "The clientOid is duplicated"},
                                      "binance": {"code": -2010, "msg": "Duplicate order sent."},
                                      "binance-usdm": {"code": -4116, "msg": "ClientOrderId is duplicated."}}[name]
    assert accounts(sim)[name]["client_ids"]["ioc-" + name + "-0"] == 1


@pytest.mark.parametrize("name", VENUES)
def test_auth_errors(sim: Sim, rest: Rest, name: str) -> None:
    orders = accounts(sim)[name]["orders"]
    if name == "kucoin":
        body = {"clientOid": "auth-1", "side": "buy", "symbol": "BTC-USDT", "type": "limit", "price": "1000",
                "size": "0.01", "timeInForce": "IOC"}
        status, out, _ = rest.kucoin("POST", "/api/v1/hf/orders", body, secret="wrong")
        assert (status, out["code"]) == (401, "400004")  # the passphrase is signed with the secret too
        ts = str(now_ms())
        phrase = base64.b64encode(hmac.new(SECRET.encode(), PASS.encode(), hashlib.sha256).digest()).decode()
        headers = {"KC-API-KEY": KEY, "KC-API-SIGN": "AAAA", "KC-API-TIMESTAMP": ts, "KC-API-PASSPHRASE": phrase,
                   "KC-API-KEY-VERSION": "3", "Content-Type": "application/json"}
        status, out, _ = rest.call("POST", "/api/v1/hf/orders", json.dumps(body).encode(), headers)
        assert (status, out) == (401, {"code": "400005", "msg": "Invalid KC-API-SIGN"})
        status, out, _ = rest.kucoin("POST", "/api/v1/hf/orders", body, ts=now_ms() - 10_000)
        assert (status, out["code"]) == (401, "400002")
        status, out, _ = rest.kucoin("POST", "/api/v1/hf/orders", body, key="nobody")
        assert (status, out["code"]) == (401, "400003")
        status, out, _ = rest.call("POST", "/api/v1/hf/orders", json.dumps(body).encode())
        assert (status, out["code"]) == (401, "400001")
        status, out, _ = rest.kucoin("POST", "/kucoin/api/v1/hf/orders", {**body, "clientOid": "auth-2"})
        assert status == 200, out  # the /kucoin prefix: the endpoint signed without it is accepted too
    else:
        v = venue_of(name, rest)
        path = v.base + "/order"  # type: ignore[attr-defined]
        p = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC", "quantity": "0.01",
             "price": "1000", "newClientOrderId": "auth-1"}
        assert rest.binance("POST", path, p, secret="wrong")[:2] == (
            400, {"code": -1022, "msg": "Signature for this request is not valid."})
        assert rest.binance("POST", path, p, ts=now_ms() - 10_000)[:2] == (
            400, {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."})
        assert rest.binance("POST", path, {**p, "recvWindow": 20000}, ts=now_ms() - 10_000)[0] == 200
        assert rest.binance("POST", path, {**p, "newClientOrderId": "auth-2"}, key="nobody")[:2] == (
            401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
        status, out, _ = rest.binance("POST", path, {**p, "newClientOrderId": "auth-3"}, in_body=True)
        assert status == 200 and out["clientOrderId"] == "auth-3"
    assert accounts(sim)[name]["orders"] == orders + (1 if name == "kucoin" else 2)


def test_order_queries_known_and_unknown(sim: Sim, rest: Rest) -> None:
    k = Kucoin(rest)
    assert k.get("nope")[:2] == (404, {"code": "400100", "msg": "order not exist."})
    order = k.get("ioc-kucoin-0")[1]["data"]
    assert order["clientOid"] == "ioc-kucoin-0" and order["symbol"] == "BTC-USDT"
    status, body, _ = rest.kucoin("GET", f"/api/v1/hf/orders/{order['id']}?symbol=BTC-USDT")
    assert status == 200 and body["data"]["clientOid"] == "ioc-kucoin-0"
    status, body, _ = rest.kucoin("GET", "/api/v1/accounts?type=trade&currency=BTC")
    acct = accounts(sim)["kucoin"]["balances"]["BTC"]
    assert [(a["currency"], a["balance"], a["available"], a["holds"]) for a in body["data"]] == [
        ("BTC", acct["total"], acct["free"], acct["locked"])]
    for v in (Binance(rest), Usdm(rest)):
        assert v.get("nope")[:2] == (400, {"code": -2013, "msg": "Order does not exist."})
        status, body, _ = v.get(f"ioc-{v.name}-0")
        assert status == 200 and body["clientOrderId"] == f"ioc-{v.name}-0" and "time" in body
    status, body, _ = rest.binance("GET", "/api/v3/account", {})
    bal = {b["asset"]: (D(b["free"]), D(b["locked"])) for b in body["balances"]}
    acct = accounts(sim)["binance"]["balances"]
    assert all(bal[a] == (D(b["free"]), D(b["locked"])) for a, b in acct.items())
    ws = WsApi(f"{sim.ws}/binance/ws-api/v3")
    reply = ws.call("order.status", ws_signed({"symbol": "BTCUSDT", "origClientOrderId": "nope"}))
    assert (reply["status"], reply["error"]) == (400, {"code": -2013, "msg": "Order does not exist."})
    reply = ws.call("order.status", ws_signed({"symbol": "BTCUSDT", "origClientOrderId": "ioc-binance-0"}))
    assert reply["status"] == 200 and reply["result"]["clientOrderId"] == "ioc-binance-0"
    assert reply["rateLimits"][0]["rateLimitType"] == "REQUEST_WEIGHT"
    ws.ws.close()


# tests: user streams ------------------------------------------------------------------------------------------------
def test_kucoin_private_order_stream(sim: Sim, rest: Rest) -> None:
    public = sim.request("/api/v1/bullet-public", method="POST")[1]["data"]["token"]
    pws = websocket.create_connection(f"{sim.ws}/kucoin/ws?token={public}&connectId=x", timeout=10)
    assert json.loads(pws.recv())["type"] == "welcome"
    pws.send(json.dumps({"id": "p", "type": "subscribe", "topic": "/spotMarket/tradeOrdersV2", "privateChannel": True,
                         "response": True}))
    assert json.loads(pws.recv())["type"] == "error"  # the private topic needs a bullet-private token
    pws.close()
    ws = kucoin_private(sim, rest)
    _, _, asks = depth(sim, "BTC-USDT")
    status, body, _ = Kucoin(rest).place("ks-1", "BUY", "0.0002", str(asks[-1][0]))
    assert status == 200
    frames = [json.loads(ws.recv()) for _ in range(3)]
    assert [(f["data"]["type"], f["data"]["status"]) for f in frames] == [
        ("received", "new"), ("match", "match"), ("filled", "done")]  # 0.0002 BTC: always within the best level
    m = frames[1]
    assert {k: m[k] for k in ("type", "topic", "subject", "channelType")} == {
        "type": "message", "topic": "/spotMarket/tradeOrdersV2", "subject": "orderChange", "channelType": "private"}
    d = m["data"]
    assert d["orderId"] == body["data"]["orderId"] and d["clientOid"] == "ks-1" and d["liquidity"] == "taker"
    assert d["matchSize"] == d["filledSize"] == "0.0002" and d["ts"] > 10**18
    fills = Kucoin(rest).fills("ks-1")
    assert str(fills[0]["price"]) == d["matchPrice"]
    # an IOC remainder: canceled, done, canceledSize
    sim.fault(kind="order_partial", venue="kucoin", count=1, ratio=0.5)
    assert Kucoin(rest).place("ks-2", "BUY", "0.0003", str(asks[-1][0]))[0] == 200
    frames = [json.loads(ws.recv())["data"]]
    while frames[-1]["status"] != "done":
        frames.append(json.loads(ws.recv())["data"])
    assert frames[0]["type"] == "received" and {f["type"] for f in frames[1:-1]} == {"match"}
    assert frames[-1]["type"] == "canceled"
    assert (frames[-1]["canceledSize"], frames[-1]["filledSize"], frames[-1]["remainSize"]) == ("0.00015", "0.00015",
                                                                                               "0")
    ws.close()


def test_binance_ws_api_order_and_user_stream(sim: Sim) -> None:
    ws = WsApi(f"{sim.ws}/binance/ws-api/v3")
    reply = ws.call("userDataStream.subscribe.signature", ws_signed({}))
    assert reply["status"] == 200
    sub = reply["result"]["subscriptionId"]
    _, _, asks = depth(sim, "BTC-USDT")
    p = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC", "quantity": "0.0002",
         "price": str(asks[-1][0]), "newClientOrderId": "ws-1"}
    reply = ws.call("order.place", ws_signed(p))
    assert ws.frames == []  # the response comes before the events
    assert reply["status"] == 200 and reply["result"]["status"] == "FILLED" and reply["result"]["fills"]
    assert {r["rateLimitType"] for r in reply["rateLimits"]} == {"REQUEST_WEIGHT", "ORDERS"}
    events = [ws.recv()]
    while events[-1]["event"]["e"] != "outboundAccountPosition":
        events.append(ws.recv())
    assert all(e["subscriptionId"] == sub for e in events)
    new, trades, pos = events[0], [e["event"] for e in events[1:-1]], events[-1]
    assert (new["event"]["e"], new["event"]["x"], new["event"]["X"]) == ("executionReport", "NEW", "NEW")
    assert [t["x"] for t in trades] == ["TRADE"] * len(trades) and trades[-1]["X"] == "FILLED"
    assert [(t["c"], t["l"], t["L"], t["n"], t["N"], t["t"], t["m"]) for t in trades] == [
        ("ws-1", f["qty"], f["price"], f["commission"], "BTC", f["tradeId"], False) for f in reply["result"]["fills"]]
    acct = accounts(sim)["binance"]["balances"]
    assert {b["a"]: D(b["f"]) for b in pos["event"]["B"]} == {a: D(acct[a]["free"]) for a in ("BTC", "USDT")}
    # fill_before_ack: the events first on the same socket
    sim.fault(kind="fill_before_ack", venue="binance", count=1)
    ws.send("order.place", ws_signed({**p, "newClientOrderId": "ws-2"}))
    frames = [ws.recv()]
    while "status" not in frames[-1]:
        frames.append(ws.recv())
    kinds = [f["event"].get("x", f["event"]["e"]) for f in frames[:-1]]
    assert kinds[0] == "NEW" and kinds[-1] == "outboundAccountPosition" and "TRADE" in kinds
    assert frames[-1]["status"] == 200 and frames[-1]["result"]["clientOrderId"] == "ws-2"
    # a resting maker order filled by the market later (ETH moves fast), else cancelled (with a cancel id)
    filled = False
    for k in range(8):
        bid = depth(sim, "ETH-USDT")[1][0][0]
        cid = f"maker-{k}"
        rp = {"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT_MAKER", "quantity": "0.01", "price": str(bid),
              "newClientOrderId": cid}
        reply = ws.call("order.place", ws_signed(rp))
        if reply["status"] != 200:
            continue
        assert set(reply["result"]) == {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}  # ACK
        deadline = time.monotonic() + 2.0
        ws.ws.settimeout(0.2)
        while time.monotonic() < deadline and not filled:
            try:
                e = ws.recv().get("event", {})
            except websocket.WebSocketTimeoutException:
                continue
            if e.get("x") == "TRADE" and e.get("c") == cid:
                assert (e["m"], e["X"], D(e["L"]), e["N"]) == (True, "FILLED", bid, "ETH")
                assert D(e["n"]) == fee_up(D("0.01") * D("0.001"))
                filled = True
        ws.ws.settimeout(10)
        if filled:
            break
        reply = ws.call("order.cancel", ws_signed({"symbol": "ETHUSDT", "origClientOrderId": cid,
                                                   "newClientOrderId": f"cx-{k}"}))
        if reply["status"] == 200:
            assert reply["result"]["origClientOrderId"] == cid and reply["result"]["clientOrderId"] == f"cx-{k}"
            assert reply["result"]["status"] == "CANCELED"
    assert filled, "a resting order at the best bid never filled"
    assert any(f["maker"] and f["client_id"].startswith("maker-") for f in accounts(sim)["binance"]["fill_log"])
    ws.ws.close()


def test_usdm_listen_key_stream_and_ws_api(sim: Sim, rest: Rest) -> None:
    status, body, _ = rest.call("POST", "/fapi/v1/listenKey", None, {"X-MBX-APIKEY": KEY})
    assert status == 200
    key = body["listenKey"]
    assert rest.call("PUT", "/fapi/v1/listenKey", None, {"X-MBX-APIKEY": KEY})[1] == {"listenKey": key}
    assert rest.call("POST", "/fapi/v1/listenKey", None, {})[1]["code"] == -2014
    user = websocket.create_connection(f"{sim.ws}/binance-usdm/private/ws/{key}", timeout=10)
    api = WsApi(f"{sim.ws}/binance-usdm/ws-fapi/v1")
    _, _, asks = depth(sim, "BTC-USDT")
    p = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC", "quantity": "0.002",
         "price": str(asks[-1][0]), "newClientOrderId": "fws-1", "newOrderRespType": "RESULT"}
    reply = api.call("order.place", ws_signed(p))
    assert reply["status"] == 200 and reply["result"]["status"] == "FILLED", reply
    assert {(r["rateLimitType"], r["interval"]) for r in reply["rateLimits"]} == {
        ("REQUEST_WEIGHT", "MINUTE"), ("ORDERS", "SECOND"), ("ORDERS", "MINUTE")}
    events = [json.loads(user.recv())]
    while events[-1]["e"] != "ACCOUNT_UPDATE":
        events.append(json.loads(user.recv()))
    ups = [e["o"] for e in events[:-1]]
    assert ups[0]["x"] == "NEW" and ups[-1]["X"] == "FILLED" and all(u["x"] == "TRADE" for u in ups[1:])
    trades = Usdm(rest).fills("fws-1")
    assert [(D(u["L"]), D(u["l"]), D(u["n"])) for u in ups[1:]] == [(t["price"], t["qty"], t["fee"]) for t in trades]
    acct = events[-1]["a"]
    state = accounts(sim)["binance-usdm"]
    assert D(acct["B"][0]["wb"]) == D(state["balances"]["USDT"]["wallet"])
    assert D(acct["P"][0]["pa"]) == D(state["positions"]["BTCUSDT"]["amount"])
    reply = api.call("order.status", ws_signed({"symbol": "BTCUSDT", "origClientOrderId": "fws-1"}))
    assert reply["result"]["status"] == "FILLED"
    reply = api.call("order.status", ws_signed({"symbol": "BTCUSDT", "origClientOrderId": "nope"}))
    assert (reply["status"], reply["error"]["code"]) == (400, -2013)
    reply = api.call("order.cancel", ws_signed({"symbol": "BTCUSDT", "origClientOrderId": "fws-1"}))
    assert (reply["status"], reply["error"]["code"]) == (400, -2011)
    reply = api.call("order.place", ws_signed({**p, "newClientOrderId": "fws-2"}, secret="bad"))
    assert (reply["status"], reply["error"]["code"]) == (400, -1022)
    reply = api.call("order.place", ws_signed({**p, "newClientOrderId": "fws-2"}, ts=now_ms() - 60_000))
    assert (reply["status"], reply["error"]["code"]) == (400, -1021)
    assert rest.call("DELETE", "/fapi/v1/listenKey", None, {"X-MBX-APIKEY": KEY})[0] == 200
    assert json.loads(user.recv())["e"] == "listenKeyExpired"
    user.close()
    api.ws.close()


# tests: faults ------------------------------------------------------------------------------------------------------
def test_order_faults(sim: Sim, rest: Rest) -> None:
    faults0 = sim.stats()["faults_hit"]
    _, _, asks = depth(sim, "BTC-USDT")
    top = str(asks[-1][0])
    # order_reject: the insufficient-balance error (or the given code), then normal again
    sim.fault(kind="order_reject", venue="binance", count=1)
    assert Binance(rest).place("rj-1", "BUY", "0.0002", top)[:2] == (
        400, {"code": -2010, "msg": "Account has insufficient balance for requested action."})
    assert Binance(rest).place("rj-1", "BUY", "0.0002", top)[0] == 200  # the id was not taken by the reject
    sim.fault(kind="order_reject", venue="kucoin", count=1, code="400100")
    assert Kucoin(rest).place("rj-2", "BUY", "0.0002", top)[:2] == (
        400, {"code": "400100", "msg": "Order rejected (simulated fault)."})
    # order_drop_ack: executed, connection aborted
    sim.fault(kind="order_drop_ack", venue="binance-usdm", count=1)
    with pytest.raises((http.client.HTTPException, OSError)):
        Usdm(rest).place("drop-1", "BUY", "0.002", top)
    status, body, _ = Usdm(rest).get("drop-1")
    assert status == 200 and body["status"] == "FILLED"
    # order_timeout: executed, never answered (REST), the user stream reports it
    ws = kucoin_private(sim, rest)
    sim.fault(kind="order_timeout", venue="kucoin", count=1)
    slow = Rest(sim, timeout=1.0)
    with pytest.raises((TimeoutError, socket.timeout, OSError)):
        Kucoin(slow).place("to-1", "BUY", "0.0002", top)
    kinds = [json.loads(ws.recv())["data"]["type"]]
    while kinds[-1] != "filled":
        kinds.append(json.loads(ws.recv())["data"]["type"])
    assert kinds[0] == "received" and "match" in kinds
    assert Kucoin(rest).get("to-1")[1]["data"]["dealSize"] == "0.0002"
    ws.close()
    # order_timeout on the WS-API: no answer; the order exists; the retry is a duplicate
    api = WsApi(f"{sim.ws}/binance/ws-api/v3")
    sim.fault(kind="order_timeout", venue="binance", count=1)
    p = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC", "quantity": "0.0002",
         "price": top, "newClientOrderId": "to-2"}
    api.send("order.place", ws_signed(p))
    api.ws.settimeout(1.0)
    with pytest.raises(websocket.WebSocketTimeoutException):
        api.ws.recv()
    api.ws.settimeout(10)
    reply = api.call("order.place", ws_signed(p))
    assert (reply["status"], reply["error"]) == (400, {"code": -2010, "msg": "Duplicate order sent."})
    assert accounts(sim)["binance"]["client_ids"]["to-2"] == 1
    # rest_error reaches the order endpoints and the WS-API
    sim.fault(kind="rest_error", venue="kucoin", status=429, count=1)
    status, body, _ = Kucoin(rest).place("re-1", "BUY", "0.0002", top)
    assert (status, body["code"]) == (429, "429000")
    sim.fault(kind="rest_error", venue="binance", status=429, count=1, retry_after=2)
    reply = api.call("order.place", ws_signed({**p, "newClientOrderId": "re-2"}))
    assert reply["status"] == 429 and reply["error"]["code"] == -1003
    assert reply["error"]["data"]["retryAfter"] - reply["error"]["data"]["serverTime"] == 2000
    assert "re-2" not in accounts(sim)["binance"]["client_ids"]
    api.ws.close()
    hit = sim.stats()["faults_hit"]
    expected = {"order_reject": 2, "order_drop_ack": 1, "order_timeout": 2, "rest_error": 2}
    assert {k: hit[k] - faults0.get(k, 0) for k in expected} == expected
    applied = sim.stats()["faults_applied"]
    assert applied["order_partial"] >= 4 and applied["fill_before_ack"] == 1


def test_rate_limits_answer_429_with_retry_after() -> None:
    s = Sim(*SIM_ARGS).ready()
    try:
        rest = Rest(s)
        p = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC", "quantity": "0.001",
             "price": "20000"}
        for name, path, limit in (("binance", "/api/v3/order", 100), ("binance-usdm", "/fapi/v1/order", 300)):
            for n in range(2 * limit + 2):
                status, body, headers = rest.binance("POST", path, {**p, "newClientOrderId": f"rl-{n}"})
                if status == 429:
                    break
                assert status == 200 and body["status"] == ("NEW" if name == "binance-usdm" else "EXPIRED")  # ACK
            assert status == 429 and body["code"] == -1015, (name, n)
            assert 1 <= int(headers["retry-after"]) <= 10 and headers["x-mbx-order-count-10s"] == str(limit)
        for _ in range(1000):
            status, body, headers = rest.kucoin("POST", "/api/v1/bullet-private")
            if status == 429:
                break
            assert status == 200
        assert (status, body["code"], headers["gw-ratelimit-remaining"]) == (429, "429000", "0")
        assert 0 < int(headers["gw-ratelimit-reset"]) <= 30000
    finally:
        assert s.stop() == 0


def test_order_latency_option() -> None:
    s = Sim(*SIM_ARGS, "--order-latency-ms", "150", "--balances", "USDT=100,BTC=0").ready()
    try:
        rest = Rest(s)
        assert accounts(s)["binance"]["balances"]["USDT"]["free"] == "100"
        assert accounts(s)["binance-usdm"]["balances"]["USDT"]["wallet"] == "100"
        t0 = time.monotonic()
        status, body, _ = Binance(rest).place("lat-1", "BUY", "0.002", "60000")  # 120 USDT > 100
        assert time.monotonic() - t0 >= 0.15
        assert (status, body["code"]) == (400, -2010)
    finally:
        assert s.stop() == 0



def test_clock_skew_moves_every_time_the_venue_sends_and_the_window_it_checks() -> None:
    s = Sim(*SIM_ARGS).ready()
    try:
        rest = Rest(s)
        body = {"clientOid": "skew-1", "side": "buy", "symbol": "BTC-USDT", "type": "market", "size": "0.0001"}
        assert abs(s.get("/api/v1/timestamp")["data"] - now_ms()) < 1000
        assert s.fault(kind="clock_skew", venue="kucoin", ms=7000)["ok"]
        assert abs(s.get("/api/v1/timestamp")["data"] - now_ms() - 7000) < 1000
        assert abs(s.get("/api/v3/time")["serverTime"] - now_ms()) < 1000, "only the venue asked for moves"
        # a client on the host clock is now 7 s behind the venue: refused as a real KuCoin does
        assert rest.kucoin("POST", "/api/v1/hf/orders", body)[1]["code"] == "400002"
        status, out, _ = rest.kucoin("POST", "/api/v1/hf/orders", body, ts=now_ms() + 7000)
        assert status == 200 and out["code"] == "200000", out
        order = rest.kucoin("GET", "/api/v1/hf/orders/client-order/skew-1?symbol=BTC-USDT", ts=now_ms() + 7000)[1]
        assert abs(order["data"]["createdAt"] - now_ms() - 7000) < 1000, order
        # market data carries the venue's clock
        token = s.request("/api/v1/bullet-public", method="POST")[1]["data"]
        ws = websocket.create_connection(f"{token['instanceServers'][0]['endpoint']}?token={token['token']}"
                                         "&connectId=skew", timeout=10)
        assert json.loads(ws.recv())["type"] == "welcome"
        ws.send(json.dumps({"id": 1, "type": "subscribe", "topic": "/market/ticker:BTC-USDT", "response": True}))
        msg = json.loads(ws.recv())
        while msg.get("type") != "message":
            msg = json.loads(ws.recv())
        assert abs(msg["data"]["time"] - now_ms() - 7000) < 1000, msg
        ws.close()
        # Binance: a venue clock behind the host's, -1021 until the client follows it
        s.fault(kind="clock_skew", venue="binance", ms=-9000)
        assert abs(s.get("/api/v3/time")["serverTime"] - now_ms() + 9000) < 1000
        p = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.0001", "newClientOrderId": "skew-2"}
        assert rest.binance("POST", "/api/v3/order", p)[1] == {
            "code": -1021, "msg": "Timestamp for this request was 1000ms ahead of the server's time."}
        status, out, _ = rest.binance("POST", "/api/v3/order", p, ts=now_ms() - 9000)
        assert status == 200 and abs(out["transactTime"] - now_ms() + 9000) < 1000, out
        assert s.stats()["clock_skew_ms"] == {"kucoin": 7000, "binance": -9000}
        # 0 puts a venue back; nonsense is refused with the reason
        s.fault(kind="clock_skew", venue="all", ms=0)
        assert abs(s.get("/api/v1/timestamp")["data"] - now_ms()) < 1000 and s.stats()["clock_skew_ms"] == {}
        for bad, why in (({"ms": 1.5}, "whole number"), ({"venue": "mexc", "ms": 5}, "not mexc")):
            status, out, _ = s.request("/_sim/fault", {"kind": "clock_skew", **bad})
            assert status == 400 and why in out["error"], out
    finally:
        assert s.stop() == 0
