"""Live venue clients (execution/kucoin_client.py, execution/binance_client.py) against a real simulator process
speaking the venues' order protocols, with the simulator's public test credentials.

Per venue (KuCoin spot, Binance spot, Binance USD-M): start + rules; an IOC buy and a market sell that fill (Ack,
Fills with the venue's fee and fee asset, Done) checked against ``GET /_sim/accounts``; two legs that do not wait
for each other (one never answered, the other acked) and are on the wire before either ack; rejects
(insufficient balance, duplicate client id, post-only that would take); order queries (known / unknown); a
resting post-only order in open_orders, then cancelled; Unknown on a missing / lost / 5xx answer and the order
found (or not) by query afterwards; a partial IOC expiring; fills from both the response and the user stream
emitted once; user-stream reconnect; a venue 429 making the next order refused locally; bad credentials; the
venue clock offset.
"""

from __future__ import annotations

import logging
import queue
import socket
import time
from collections.abc import Callable, Iterator
from decimal import ROUND_UP, Decimal
from itertools import count

import pytest
from simulator_client import Sim

from execution.binance_client import BinanceClient
from execution.kucoin_client import KucoinClient
from execution.rules import Rules, quantize
from execution.signing import SIMULATOR, Credentials
from execution.venue import Ack, Done, Event, Fill, OrderRequest, Reject, StreamState, Unknown, VenueError

VENUES = ("kucoin", "binance", "binance-usdm")
SYM = {"kucoin": {"BTC": "BTC-USDT", "ETH": "ETH-USDT"}, "binance": {"BTC": "BTCUSDT", "ETH": "ETHUSDT"},
       "binance-usdm": {"BTC": "BTCUSDT", "ETH": "ETHUSDT"}}
INSUFFICIENT = {"kucoin": "200004", "binance": "-2010", "binance-usdm": "-2019"}
DUPLICATE = {"kucoin": "400100", "binance": "-2010", "binance-usdm": "-4116"}
BAD_SECRET = {"kucoin": "400004", "binance": "-1022", "binance-usdm": "-1022"}
"""A wrong secret: KuCoin checks the passphrase (HMAC of it under the secret) first, Binance the signature."""
TAKER_FEE = {"kucoin": Decimal("0.001"), "binance": Decimal("0.001"), "binance-usdm": Decimal("0.0005")}
_ids = count(1)


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    s = Sim("--seed", "7").ready()
    yield s
    s.stop()


def make(sim: Sim, venue: str, creds: Credentials = SIMULATOR, timeout_s: float = 2.0):
    if venue == "kucoin":
        return KucoinClient(sim.http + "/kucoin", creds, timeout_s=timeout_s)
    if venue == "binance":
        return BinanceClient(sim.http + "/binance", sim.ws + "/binance/ws-api/v3", "", creds, futures=False,
                             timeout_s=timeout_s)
    return BinanceClient(sim.http + "/binance-usdm", sim.ws + "/binance-usdm/ws-fapi/v1",
                         sim.ws + "/binance-usdm/private/ws", creds, futures=True, timeout_s=timeout_s)


@pytest.fixture(params=VENUES)
def venue(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def client(sim: Sim, venue: str) -> Iterator:
    c = make(sim, venue)
    c.start()
    yield c
    c.close()


def cid(tag: str) -> str:
    return f"t{next(_ids)}-{tag}-{time.time_ns() % 10**9}"


class Events:
    """Everything a client emitted, pulled on demand."""

    def __init__(self, client) -> None:
        self.client = client
        self.seen: list[Event] = []

    def until(self, pred: Callable[[Event], bool], timeout: float = 5.0) -> Event:
        for ev in self.seen:
            if pred(ev):
                return ev
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching event within {timeout} s; seen {self.seen}")
            try:
                ev = self.client.events.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(ev)
            if pred(ev):
                return ev

    def done(self, client_id: str, timeout: float = 5.0) -> Done:
        ev = self.until(lambda e: isinstance(e, Done) and e.client_id == client_id, timeout)
        assert isinstance(ev, Done)
        return ev

    def of(self, client_id: str, kind: type) -> list:
        return [e for e in self.seen if isinstance(e, kind) and getattr(e, "client_id", None) == client_id]


def book(sim: Sim, venue: str, sym: str) -> tuple[Decimal, Decimal]:
    if venue == "kucoin":
        d = sim.get(f"/api/v1/market/orderbook/level2_20?symbol={sym}")["data"]
        return Decimal(d["bids"][0][0]), Decimal(d["asks"][0][0])
    path = "/binance/api/v3" if venue == "binance" else "/binance-usdm/fapi/v1"
    d = sim.get(f"{path}/ticker/bookTicker?symbol={sym}")
    return Decimal(d["bidPrice"]), Decimal(d["askPrice"])


def accounts(sim: Sim, venue: str) -> dict:
    return sim.get("/_sim/accounts")[venue]


def ioc(sim: Sim, client, venue: str, side: int, coin: str = "BTC", qty: str = "0.002",
        client_id: str | None = None) -> OrderRequest:
    """A marketable IOC order 0.3 % through the touch."""
    sym = SYM[venue][coin]
    rules = client.rules([sym])[sym]
    bid, ask = book(sim, venue, sym)
    px = ask * Decimal("1.003") if side > 0 else bid * Decimal("0.997")
    q, p = quantize(rules, side, Decimal(qty), px)
    return OrderRequest(client_id or cid("ioc"), sym, side, q, p)


def ceil8(x: Decimal) -> Decimal:
    return x.quantize(Decimal("1e-8"), rounding=ROUND_UP)


# ---------------------------------------------------------------------------------------------------- tests


def test_round_trip_fills_fees_balances(sim: Sim, venue: str, client) -> None:
    ev = Events(client)
    assert isinstance(ev.until(lambda e: isinstance(e, StreamState)), StreamState)
    sym = SYM[venue]["BTC"]
    r = client.rules([sym])[sym]
    assert isinstance(r, Rules) and r.tick == Decimal("0.1") and r.step == Decimal("0.00001")
    with pytest.raises(VenueError):
        client.rules(["NOPE-USDT" if venue == "kucoin" else "NOPEUSDT"])

    for side in (1, -1):
        req = ioc(sim, client, venue, side)
        if side < 0:  # the way back as a market order
            req = OrderRequest(req.client_id, req.symbol, -1, req.qty, None, kind="market")
        t_write = client.place(req)
        assert t_write > 0
        done = ev.done(req.client_id)
        ev.until(lambda e, r=req: isinstance(e, Ack) and e.client_id == r.client_id)  # USD-M: the user stream
        acks, fills = ev.of(req.client_id, Ack), ev.of(req.client_id, Fill)          # may overtake the response
        assert len(acks) == 1 and acks[0].t_ns > t_write and acks[0].venue_order_id
        assert done.status == "filled" and done.filled_qty == Decimal(req.qty)
        assert fills and sum(f.qty for f in fills) == Decimal(req.qty)
        assert ev.seen.index(done) > max(ev.seen.index(f) for f in fills), "Done follows the fills"
        log = {x["trade_id"]: x for x in accounts(sim, venue)["fill_log"] if x["client_id"] == req.client_id}
        assert {f.trade_id for f in fills} == {str(k) for k in log}
        for f in fills:
            x = log[int(f.trade_id)] if int(f.trade_id) in log else log[f.trade_id]
            assert f.fee == Decimal(x["fee"]) and f.fee_asset == x["fee_asset"] and not f.maker
            assert f.price == Decimal(x["price"]) and f.venue_order_id == acks[0].venue_order_id
            assert abs(f.ts_ms - time.time() * 1000) < 60_000
            notional = f.price * f.qty
            if venue == "kucoin":
                assert f.fee_asset == "USDT" and f.fee == notional * TAKER_FEE[venue]
            elif venue == "binance" and side > 0:
                assert f.fee_asset == "BTC" and f.fee == ceil8(f.qty * TAKER_FEE[venue])
            else:
                assert f.fee_asset == "USDT" and f.fee == ceil8(notional * TAKER_FEE[venue])
        if venue == "binance-usdm" and side > 0:
            assert client.positions() == {sym: Decimal(req.qty)}

    acct = accounts(sim, venue)
    bal = client.balances()
    if venue == "binance-usdm":
        assert bal["USDT"] == Decimal(acct["balances"]["USDT"]["wallet"]) < Decimal(1_000_000)
        assert client.positions() == {}
    else:
        assert {a: bal[a] for a in acct["balances"]} == {a: Decimal(v["total"]) for a, v in acct["balances"].items()}
        assert bal["USDT"] < Decimal(1_000_000)  # fees; Binance takes a buy's fee in BTC, KuCoin all in USDT
        assert (bal["BTC"] < Decimal(10)) == (venue == "binance")
        assert client.positions() == {}
    # no connection set-up per order: the order sockets are long-lived and unbuffered
    if venue == "kucoin":
        sock = client.lanes[0].conn.conn.sock
    else:
        sock = client._ws.sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert "lowlat-sim-secret" not in repr(client)
    if venue == "binance":  # the limiter took the venue's windows from exchangeInfo
        assert set(client.limiter.windows) == {"REQUEST_WEIGHT_1M", "ORDERS_10S", "ORDERS_1D", "RAW_REQUESTS_5M"}


def test_two_legs_go_out_without_waiting_for_each_other(sim: Sim, venue: str) -> None:
    c = make(sim, venue, timeout_s=1.0)
    c.start()
    try:
        ev = Events(c)
        # leg A never gets an answer (the venue sits on it): leg B is acked meanwhile
        sim.fault(kind="order_timeout", venue=venue, count=1)
        a, b = ioc(sim, c, venue, 1, "BTC"), ioc(sim, c, venue, 1, "ETH", "0.05")
        c.place(a)
        c.place(b)
        ev.until(lambda e: isinstance(e, Ack) and e.client_id == b.client_id, timeout=0.9)
        assert not ev.of(a.client_id, Ack) and not ev.of(a.client_id, Unknown)
        ev.until(lambda e: isinstance(e, Unknown) and e.client_id == a.client_id)
        # both legs on the wire before either ack (retried: a loaded 2-core test box may preempt the caller
        # between the two writes for longer than the simulator's round trip)
        wins = 0
        for _ in range(5):
            a, b = ioc(sim, c, venue, -1, "BTC"), ioc(sim, c, venue, -1, "ETH", "0.05")
            ta = c.place(a)
            tb = c.place(b)
            ack_a = ev.until(lambda e, x=a: isinstance(e, Ack) and e.client_id == x.client_id)
            ack_b = ev.until(lambda e, x=b: isinstance(e, Ack) and e.client_id == x.client_id)
            assert ev.done(a.client_id).status == ev.done(b.client_id).status == "filled"
            assert 0 < ta < tb
            wins += tb < min(ack_a.t_ns, ack_b.t_ns)
            if wins:
                break
        assert wins, "the second leg was never written before the first leg's ack"
    finally:
        c.close()


def test_reject_and_duplicate(sim: Sim, venue: str, client) -> None:
    ev = Events(client)
    sim.fault(kind="order_reject", venue=venue, count=1)
    req = ioc(sim, client, venue, 1)
    assert client.place(req) > 0
    rej = ev.until(lambda e: isinstance(e, Reject) and e.client_id == req.client_id)
    assert rej.code == INSUFFICIENT[venue] and rej.reason and not rej.duplicate
    assert not ev.of(req.client_id, Ack)

    first = ioc(sim, client, venue, 1)
    client.place(first)
    ev.done(first.client_id)
    again = ioc(sim, client, venue, -1, client_id=first.client_id)
    client.place(again)
    dup = ev.until(lambda e: isinstance(e, Reject) and e.client_id == first.client_id)
    assert dup.duplicate and dup.code == DUPLICATE[venue], dup


def test_order_query(sim: Sim, venue: str, client) -> None:
    ev = Events(client)
    req = ioc(sim, client, venue, 1)
    client.place(req)
    ev.done(req.client_id)
    st = client.order(req.symbol, req.client_id)
    assert st is not None and st.client_id == req.client_id and st.status == "filled"
    assert st.filled_qty == st.qty == Decimal(req.qty) and st.side == 1 and st.symbol == req.symbol
    assert {(f.trade_id, f.fee) for f in st.fills} == {(f.trade_id, f.fee) for f in ev.of(req.client_id, Fill)}
    assert client.order(req.symbol, "never-placed-" + cid("x")) is None


def test_open_orders_and_cancel(sim: Sim, venue: str, client) -> None:
    ev = Events(client)
    sym = SYM[venue]["BTC"]
    rules = client.rules([sym])[sym]
    bid, _ = book(sim, venue, sym)
    q, p = quantize(rules, 1, Decimal("0.002"), bid * Decimal("0.97"))
    req = OrderRequest(cid("rest"), sym, 1, q, p, kind="post_only")
    assert client.place(req) > 0
    ev.until(lambda e: isinstance(e, Ack) and e.client_id == req.client_id)
    open_ = {o.client_id: o for o in client.open_orders([sym])}
    assert req.client_id in open_
    o = open_[req.client_id]
    assert o.status == "new" and o.price == Decimal(p) and o.qty == Decimal(q) and o.filled_qty == 0
    client.cancel(sym, req.client_id)
    done = ev.done(req.client_id)
    assert done.status == "canceled" and done.filled_qty == 0
    assert req.client_id not in {o.client_id for o in client.open_orders([sym])}
    st = client.order(sym, req.client_id, with_fills=False)
    assert st is not None and st.status == "canceled" and st.fills == []
    # a post-only order that would take: Binance refuses it, KuCoin accepts and cancels it at once
    _, ask = book(sim, venue, sym)
    q, p = quantize(rules, 1, Decimal("0.002"), ask * Decimal("1.01"))
    cross = OrderRequest(cid("cross"), sym, 1, q, p, kind="post_only")
    client.place(cross)
    if venue == "kucoin":
        assert ev.done(cross.client_id).status == "canceled"
    else:
        rej = ev.until(lambda e: isinstance(e, Reject) and e.client_id == cross.client_id)
        assert rej.code == {"binance": "-2010", "binance-usdm": "-5022"}[venue] and not rej.duplicate


def test_unknown_outcome_then_found_by_query(sim: Sim, venue: str) -> None:
    c = make(sim, venue, timeout_s=1.0)
    c.start()
    try:
        ev = Events(c)
        for fault in ("order_timeout", "order_drop_ack"):
            sim.fault(kind=fault, venue=venue, count=1)
            req = ioc(sim, c, venue, 1)
            t0 = time.monotonic()
            assert c.place(req) > 0
            unk = ev.until(lambda e, r=req: isinstance(e, Unknown) and e.client_id == r.client_id, timeout=3.0)
            assert unk.reason and time.monotonic() - t0 < 2.5
            assert not ev.of(req.client_id, Ack) and not ev.of(req.client_id, Reject)
            st = c.order(req.symbol, req.client_id)
            assert st is not None and st.status == "filled" and st.filled_qty == Decimal(req.qty)
            assert sum(f.qty for f in st.fills) == Decimal(req.qty) and all(f.fee > 0 for f in st.fills)
            if venue == "binance" and fault == "order_drop_ack":
                # spot user data rides on the aborted WS-API session: its events are lost with it, the client
                # says so and re-subscribes on the new session
                down = ev.until(lambda e: isinstance(e, StreamState) and not e.up)
                ev.until(lambda e, d=down: isinstance(e, StreamState) and e.up and e.t_ns > d.t_ns)
                continue
            # the user stream still reports the fills, once each
            done = ev.done(req.client_id)
            assert done.status == "filled"
            fills = ev.of(req.client_id, Fill)
            assert sum(f.qty for f in fills) == Decimal(req.qty) and len({f.trade_id for f in fills}) == len(fills)
        # the order path recovered (Binance: the WS-API session reconnected after the abort)
        deadline = time.monotonic() + 5
        while venue != "kucoin" and not c.session_up and time.monotonic() < deadline:
            time.sleep(0.05)
        req = ioc(sim, c, venue, 1)
        c.place(req)
        ev.until(lambda e: isinstance(e, Ack) and e.client_id == req.client_id)
        assert ev.done(req.client_id).status == "filled"
    finally:
        c.close()


def test_venue_429_blocks_the_next_order_locally(sim: Sim, venue: str, client) -> None:
    ev = Events(client)
    req = ioc(sim, client, venue, 1)
    before = accounts(sim, venue)["orders"]
    sim.fault(kind="rest_error", venue=venue, status=429, count=1, retry_after=5)
    with pytest.raises(VenueError) as info:
        client.balances()
    assert info.value.status == 429
    assert client.place(req) == 0
    rej = ev.until(lambda e: isinstance(e, Reject) and e.client_id == req.client_id)
    assert rej.code == "rate_limit" and "429" in rej.reason and "not sent" in rej.reason
    assert accounts(sim, venue)["orders"] == before


def test_bad_credentials(sim: Sim, venue: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bad = Credentials(SIMULATOR.api_key, "not-the-secret", SIMULATOR.passphrase)
    c = make(sim, venue, bad)
    try:
        if venue == "binance-usdm":  # the listenKey needs the key only: the signature fails on the first order
            c.start()
            ev = Events(c)
            req = ioc(sim, c, venue, 1)
            c.place(req)
            rej = ev.until(lambda e: isinstance(e, Reject) and e.client_id == req.client_id)
            assert rej.code == BAD_SECRET[venue] and rej.reason
        else:
            with pytest.raises(VenueError) as info:
                c.start()
            assert info.value.code == BAD_SECRET[venue]
            assert "not-the-secret" not in str(info.value)
    finally:
        c.close()
    assert "not-the-secret" not in repr(c) and "not-the-secret" not in caplog.text
    assert "signature=" not in caplog.text and "KC-API-SIGN" not in caplog.text
    if venue == "binance-usdm":
        wrong_key = make(sim, venue, Credentials("nobody", "x"))
        with pytest.raises(VenueError) as info:
            wrong_key.start()
        assert info.value.code == "-2015"


def test_partial_ioc_expires_and_fills_are_not_doubled(sim: Sim, venue: str, client) -> None:
    ev = Events(client)
    sim.fault(kind="order_partial", venue=venue, count=1, ratio=0.5)
    req = ioc(sim, client, venue, 1)
    client.place(req)
    done = ev.done(req.client_id)
    assert done.status == "expired" and done.filled_qty == Decimal(req.qty) / 2
    assert sum(f.qty for f in ev.of(req.client_id, Fill)) == done.filled_qty
    # user-stream events before the order's own answer (spot: the same trade also comes in the FULL response)
    sim.fault(kind="fill_before_ack", venue=venue, count=1)
    req = ioc(sim, client, venue, -1)
    client.place(req)
    ev.until(lambda e: isinstance(e, Ack) and e.client_id == req.client_id)
    assert ev.done(req.client_id).status == "filled"
    time.sleep(0.3)  # anything duplicated would have arrived by now
    while True:
        try:
            ev.seen.append(client.events.get_nowait())
        except queue.Empty:
            break
    fills = ev.of(req.client_id, Fill)
    assert len(fills) == len({f.trade_id for f in fills}) and sum(f.qty for f in fills) == Decimal(req.qty)
    assert len(ev.of(req.client_id, Done)) == 1 and len(ev.of(req.client_id, Ack)) == 1


def test_stream_reconnects_and_5xx_is_unknown(sim: Sim, venue: str, client) -> None:
    ev = Events(client)
    ev.until(lambda e: isinstance(e, StreamState) and e.up)
    sim.fault(kind="drop", venue=venue)
    down = ev.until(lambda e: isinstance(e, StreamState) and not e.up)
    ev.until(lambda e: isinstance(e, StreamState) and e.up and e.t_ns > down.t_ns)
    deadline = time.monotonic() + 5
    while venue != "kucoin" and not client.session_up and time.monotonic() < deadline:
        time.sleep(0.02)
    req = ioc(sim, client, venue, 1)
    client.place(req)
    assert ev.done(req.client_id).status == "filled" and ev.of(req.client_id, Fill)
    # a 5xx answer to an order: outcome unknown, never a reject (here the venue had not executed it)
    req = ioc(sim, client, venue, -1)
    sim.fault(kind="rest_error", venue=venue, status=503, count=1)
    client.place(req)
    unk = ev.until(lambda e: isinstance(e, Unknown) and e.client_id == req.client_id)
    assert "503" in unk.reason and not ev.of(req.client_id, Reject)
    assert client.order(req.symbol, req.client_id) is None


def test_venue_clock_offset() -> None:
    """The simulator's clock an hour behind the host's: the clients measure the offset and sign with it."""
    behind = Sim("--seed", "7", "--start-ms", str(int(time.time() * 1000) - 3_600_000)).ready()
    try:
        for venue in ("kucoin", "binance"):
            c = make(behind, venue)
            c.start()
            try:
                assert abs(c.offset_ms + 3_600_000) < 2_000
                assert abs(c.now_ms() - (time.time() * 1000 - 3_600_000)) < 2_000
                ev = Events(c)
                req = ioc(behind, c, venue, 1)
                c.place(req)
                assert ev.done(req.client_id).status == "filled"
            finally:
                c.close()
    finally:
        behind.stop()


def test_kucoin_orders_queue_behind_a_busy_lane(sim: Sim) -> None:
    """With one lane, a second order waits for the first one's answer and is then written by the lane."""
    c = KucoinClient(sim.http, SIMULATOR, timeout_s=2.0, lanes=1)
    c.start()
    try:
        ev = Events(c)
        a, b = ioc(sim, c, "kucoin", 1), ioc(sim, c, "kucoin", -1)
        assert c.place(a) > 0 and c.place(b) > 0
        ack_a = ev.until(lambda e: isinstance(e, Ack) and e.client_id == a.client_id)
        ack_b = ev.until(lambda e: isinstance(e, Ack) and e.client_id == b.client_id)
        assert ack_a.t_ns < ack_b.t_ns
        assert ev.done(a.client_id).status == ev.done(b.client_id).status == "filled"
    finally:
        c.close()
