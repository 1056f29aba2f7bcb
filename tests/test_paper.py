"""execution.paper: the paper venue's fills against hand-walked books (exact Decimal), latency, partial fills,
post-only resting and maker fills, cancels, duplicate ids, validation and spot balances."""

from __future__ import annotations

import time
from decimal import Decimal

import numpy as np
import pytest

from execution.paper import PaperVenue
from execution.rules import Rules
from execution.venue import Ack, Done, Fill, OrderRequest, Reject

D = Decimal
MS = 1_000_000
T0 = 1_000 * 1_000_000_000

BTC = Rules("BTCUSDT", "paper", tick=D("0.01"), step=D("0.001"), min_price=D(0), max_price=D(0), min_qty=D("0.001"),
            max_qty=D(0), min_notional=D("5"), base="BTC", quote="USDT")
ETH = Rules("ETHUSDT", "paper", tick=D("0.01"), step=D("0.0001"), min_price=D(0), max_price=D(0),
            min_qty=D("0.0001"), max_qty=D(0), min_notional=D(0), base="ETH", quote="USDT")
RULES = {"BTCUSDT": BTC, "ETHUSDT": ETH}

ASKS = [(100.00, 0.5), (100.01, 0.3), (100.03, 1.0), (100.05, 2.0)]
BIDS = [(99.99, 0.7), (99.98, 0.6), (99.95, 5.0)]


class Clock:
    def __init__(self, t: int = T0) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def venue(clock: Clock, **kw) -> PaperVenue:
    kw.setdefault("latency_ms", 5.0)
    return PaperVenue(RULES, clock=clock, **kw)


def feed(v: PaperVenue, bids, asks, now: int, symbol: str = "BTCUSDT") -> None:
    """One BOOK record's levels (10 per side, zero padded, as the record carries them)."""
    arr = np.zeros((4, 10))
    for i, (p, q) in enumerate(bids):
        arr[0, i], arr[1, i] = p, q
    for i, (p, q) in enumerate(asks):
        arr[2, i], arr[3, i] = p, q
    v.on_book(symbol, arr[0], arr[1], arr[2], arr[3], len(bids), len(asks), now)


def drain(v: PaperVenue) -> list:
    out = []
    while not v.events.empty():
        out.append(v.events.get_nowait())
    return out


def req(cid: str, side: int, qty: str, price: str | None, kind: str = "ioc", symbol: str = "BTCUSDT") -> OrderRequest:
    return OrderRequest(cid, symbol, side, qty, price, kind)  # type: ignore[arg-type]


def fills_of(evs: list) -> list[tuple[Decimal, Decimal, Decimal]]:
    return [(e.price, e.qty, e.fee) for e in evs if isinstance(e, Fill)]


def test_ioc_and_market_walk_the_captured_book_exactly():
    clk = Clock()
    v = venue(clk, taker_fee=0.001)
    feed(v, BIDS, ASKS, T0 - MS)
    v.place(req("b1", 1, "1.2", "100.03"))
    # a later book (before the order arrives) does not change what the order sees: the decision-time book
    feed(v, [(90.0, 100.0)], [(110.0, 100.0)], T0 + MS)
    v.poll(T0 + 5 * MS)
    evs = drain(v)
    assert isinstance(evs[0], Ack) and evs[0].client_id == "b1"
    assert fills_of(evs) == [(D("100.00"), D("0.5"), D("0.0500000")), (D("100.01"), D("0.3"), D("0.030003")),
                             (D("100.03"), D("0.4"), D("0.040012"))]
    assert all(e.fee_asset == "USDT" and not e.maker for e in evs if isinstance(e, Fill))
    assert evs[-1] == Done("b1", "filled", D("1.2"), T0 + 5 * MS)
    assert len({e.trade_id for e in evs if isinstance(e, Fill)}) == 3

    # sell IOC: walks the bids down to its limit, the rest expires
    clk.t = T0 + 10 * MS
    feed(v, BIDS, ASKS, clk.t)
    v.place(req("s1", -1, "2", "99.98"))
    v.poll(clk.t + 5 * MS)
    evs = drain(v)
    assert fills_of(evs) == [(D("99.99"), D("0.7"), D("0.0699930")), (D("99.98"), D("0.6"), D("0.0599880"))]
    assert evs[-1] == Done("s1", "expired", D("1.3"), clk.t + 5 * MS)

    # market buy: walks every level shown
    v.place(req("m1", 1, "4", None, "market"))
    v.poll(clk.t + 5 * MS)
    evs = drain(v)
    assert [q for _, q, _ in fills_of(evs)] == [D("0.5"), D("0.3"), D("1.0"), D("2.0")]
    assert evs[-1].status == "expired" and evs[-1].filled_qty == D("3.8")

    # an IOC whose limit is below the book: acked, nothing fills, expired
    v.place(req("b2", 1, "1", "99.99"))
    v.poll(clk.t + 5 * MS)
    assert [type(e) for e in drain(v)] == [Ack, Done]

    # unlimited balances: net change per asset; positions: net fills
    bought = D("1.2") + D("3.8")
    assert v.positions() == {"BTCUSDT": bought - D("1.3")}
    cost = (D("100.00") * D("0.5") + D("100.01") * D("0.3") + D("100.03") * D("0.4")
            + D("100.00") * D("0.5") + D("100.01") * D("0.3") + D("100.03") * D("1.0") + D("100.05") * D("2.0"))
    proceeds = D("99.99") * D("0.7") + D("99.98") * D("0.6")
    fees = (cost + proceeds) * D("0.001")
    assert v.balances() == {"BTC": bought - D("1.3"), "USDT": proceeds - cost - fees}
    st = v.order("BTCUSDT", "b1")
    assert st is not None and st.status == "filled" and st.filled_qty == D("1.2") and len(st.fills) == 3
    assert v.order("BTCUSDT", "s1", with_fills=False).fills == []
    assert v.order("ETHUSDT", "b1") is None and v.order("BTCUSDT", "nope") is None
    assert v.open_orders([]) == []


def test_latency_nothing_before_due_time():
    clk = Clock()
    v = venue(clk, latency_ms=5.0)
    feed(v, BIDS, ASKS, T0)
    assert v.place(req("a", 1, "0.1", "100.00")) == T0
    assert v.order("BTCUSDT", "a") is None  # not at the venue yet
    assert v.poll(T0 + 5 * MS - 1) == 0
    feed(v, BIDS, ASKS, T0 + 5 * MS - 1)  # a book feed processes due events too
    assert v.events.empty()
    assert v.poll(T0 + 5 * MS) == 3
    evs = drain(v)
    assert [type(e) for e in evs] == [Ack, Fill, Done]
    assert all(e.t_ns == T0 + 5 * MS for e in evs)
    assert v.order("BTCUSDT", "a").status == "filled"
    # a poll long after still stamps the due time
    v.place(req("b", 1, "0.1", "100.00"))
    v.poll(T0 + 3600 * 1_000_000_000)
    assert {e.t_ns for e in drain(v)} == {T0 + 5 * MS}


def test_latency_with_the_real_monotonic_clock():
    v = PaperVenue(RULES, latency_ms=30.0)
    feed(v, BIDS, ASKS, time.monotonic_ns())
    t0 = v.place(req("a", -1, "0.1", "99.99"))
    v.poll(time.monotonic_ns())
    assert v.events.empty() or time.monotonic_ns() >= t0 + 30 * MS
    while time.monotonic_ns() < t0 + 30 * MS:
        time.sleep(0.005)
    v.poll(time.monotonic_ns())
    evs = drain(v)
    assert [type(e) for e in evs] == [Ack, Fill, Done] and evs[0].t_ns == t0 + 30 * MS
    assert evs[1].ts_ms == pytest.approx(time.time() * 1000, abs=1000)


def test_fill_ratio_caps_and_floors_to_step():
    clk = Clock()
    v = venue(clk, fill_ratio=0.3, taker_fee=0.0)
    feed(v, BIDS, ASKS, T0)
    v.place(req("a", 1, "2", "100.05"))  # cap 0.6: 0.5 at 100.00 + 0.1 at 100.01
    v.place(req("b", 1, "0.057", "100.05"))  # 0.0171 floored to 0.017
    v.poll(T0 + 5 * MS)
    evs = drain(v)
    a = [e for e in evs if e.client_id == "a"]
    b = [e for e in evs if e.client_id == "b"]
    assert fills_of(a) == [(D("100.00"), D("0.5"), D(0)), (D("100.01"), D("0.1"), D(0))]
    assert a[-1] == Done("a", "expired", D("0.6"), T0 + 5 * MS)
    assert fills_of(b) == [(D("100.00"), D("0.017"), D(0))]
    assert b[-1].status == "expired" and b[-1].filled_qty == D("0.017")
    # a cap of zero steps: acked, nothing fills
    feed(v, BIDS, ASKS, T0, symbol="ETHUSDT")
    v.place(req("c", 1, "0.0003", "100.05", symbol="ETHUSDT"))  # 0.00009 -> 0
    v.poll(T0 + 5 * MS)
    evs = drain(v)
    assert [type(e) for e in evs] == [Ack, Done] and evs[-1].filled_qty == 0
    with pytest.raises(ValueError):
        PaperVenue(RULES, fill_ratio=0.0)


def test_post_only_rests_then_fills_as_maker_on_later_books():
    clk = Clock()
    v = venue(clk, maker_fee=0.0002)
    feed(v, BIDS, ASKS, T0)
    # crossing the decision-time book: rejected
    v.place(req("x", 1, "1", "100.00", "post_only"))
    v.place(req("y", -1, "1", "99.99", "post_only"))
    v.place(req("p", 1, "1", "99.99", "post_only"))
    v.poll(T0 + 5 * MS)
    evs = drain(v)
    assert [(type(e), e.client_id) for e in evs] == [(Reject, "x"), (Reject, "y"), (Ack, "p")]
    assert evs[0].code == evs[1].code == "post_only_would_cross" and "best ask 100.00" in evs[0].reason
    [st] = v.open_orders(["BTCUSDT"])
    assert (st.client_id, st.status, st.price, st.filled_qty) == ("p", "new", D("99.99"), 0)
    # a book that does not reach the price: nothing
    feed(v, [(99.98, 1.0)], [(100.00, 1.0)], T0 + 6 * MS)
    assert v.events.empty()
    # the asks come down through the price: fills the size at or through 99.99, at 99.99, as maker
    feed(v, [(99.97, 1.0)], [(99.98, 0.2), (99.99, 0.3), (100.00, 5.0)], T0 + 7 * MS)
    evs = drain(v)
    assert len(evs) == 1 and isinstance(evs[0], Fill)
    f = evs[0]
    assert (f.price, f.qty, f.fee, f.fee_asset, f.maker, f.t_ns) == (
        D("99.99"), D("0.5"), D("0.009999"), "USDT", True, T0 + 7 * MS)
    assert v.order("BTCUSDT", "p").status == "partially_filled"
    feed(v, [(99.97, 1.0)], [(99.99, 2.0)], T0 + 8 * MS)
    evs = drain(v)
    assert fills_of(evs) == [(D("99.99"), D("0.5"), D("0.009999"))]
    assert evs[-1] == Done("p", "filled", D("1"), T0 + 8 * MS)
    assert v.open_orders([]) == []
    feed(v, [(99.97, 1.0)], [(99.90, 2.0)], T0 + 9 * MS)  # filled: nothing more
    assert v.events.empty()
    assert v.positions() == {"BTCUSDT": D(1)}

    # a resting sell fills when the bids come up to it
    v.place(req("s", -1, "0.25", "100.02", "post_only"))
    v.poll(T0 + 14 * MS)
    drain(v)
    feed(v, [(100.04, 0.1), (100.02, 0.1), (100.01, 9.0)], [(100.05, 1.0)], T0 + 15 * MS)
    evs = drain(v)
    assert fills_of(evs) == [(D("100.02"), D("0.2"), D("0.00400080"))]
    assert v.order("BTCUSDT", "s").filled_qty == D("0.2")


def test_cancel():
    clk = Clock()
    v = venue(clk)
    feed(v, BIDS, ASKS, T0)
    v.place(req("p", 1, "1", "99.90", "post_only"))
    v.poll(T0 + 5 * MS)
    drain(v)
    feed(v, [(99.80, 1.0)], [(99.90, 0.4)], T0 + 6 * MS)  # partial maker fill
    drain(v)
    clk.t = T0 + 10 * MS
    v.cancel("BTCUSDT", "p")
    feed(v, [(99.80, 1.0)], [(99.90, 0.1)], T0 + 12 * MS)  # before the cancel arrives: still fills
    assert fills_of(drain(v)) == [(D("99.90"), D("0.1"), D(0))]
    assert v.poll(T0 + 15 * MS - 1) == 0
    assert v.poll(T0 + 15 * MS) == 1
    assert drain(v) == [Done("p", "canceled", D("0.5"), T0 + 15 * MS)]
    assert v.open_orders(["BTCUSDT"]) == [] and v.order("BTCUSDT", "p").status == "canceled"
    feed(v, [(99.80, 1.0)], [(99.00, 5.0)], T0 + 16 * MS)  # canceled: no more fills
    assert v.events.empty()
    # canceling a done, an unknown, or another symbol's order: no event
    v.cancel("BTCUSDT", "p")
    v.cancel("BTCUSDT", "nope")
    v.place(req("q", 1, "1", "98.00", "post_only"))
    v.cancel("ETHUSDT", "q")
    v.poll(T0 + 100 * MS)
    assert [type(e) for e in drain(v)] == [Ack]
    assert [o.client_id for o in v.open_orders(["BTCUSDT"])] == ["q"]
    assert v.open_orders(["ETHUSDT"]) == []


def test_duplicate_client_id():
    clk = Clock()
    v = venue(clk)
    feed(v, BIDS, ASKS, T0)
    v.place(req("a", 1, "0.1", "100.00"))
    v.place(req("a", -1, "0.1", "99.99"))  # while the first is in flight
    v.poll(T0 + 5 * MS)
    evs = drain(v)
    assert [type(e) for e in evs] == [Ack, Fill, Done, Reject]
    assert evs[-1].duplicate and evs[-1].code == "duplicate" and evs[-1].client_id == "a"
    v.place(req("a", 1, "0.1", "100.00"))  # and after it is done
    v.poll(T0 + 5 * MS)
    [r] = drain(v)
    assert isinstance(r, Reject) and r.duplicate
    assert v.positions() == {"BTCUSDT": D("0.1")} and v.order("BTCUSDT", "a").side == 1
    # a refused order does not take the id
    v.place(req("b", 1, "0.1234", "100.00"))
    v.place(req("b", 1, "0.1", "100.00"))
    v.poll(T0 + 5 * MS)
    evs = drain(v)
    assert isinstance(evs[0], Reject) and evs[0].code == "bad_qty" and not evs[0].duplicate
    assert isinstance(evs[1], Ack)


def test_validation_rejects():
    clk = Clock()
    v = venue(clk)
    feed(v, BIDS, ASKS, T0)
    cases = {
        "unknown_symbol": req("u", 1, "1", "1", symbol="XYZ"),
        "bad_price": req("p", 1, "0.1", "100.001"),
        "bad_qty": req("q", 1, "0.0005", "100.00"),
        "notional_below_min": req("n", 1, "0.049", "100.00"),
        "no_book": req("e", 1, "1", "2000.00", symbol="ETHUSDT"),
        "bad_side": OrderRequest("s", "BTCUSDT", 0, "1", "100.00"),
        "bad_kind": OrderRequest("k", "BTCUSDT", 1, "1", "100.00", "fok"),  # type: ignore[arg-type]
    }
    for r in cases.values():
        v.place(r)
    v.place(req("nan", 1, "NaN", "100.00"))
    v.place(req("neg", 1, "1", "-100.00"))
    v.place(req("none", 1, "1", None))  # an IOC needs a price
    v.poll(T0 + 5 * MS)
    evs = drain(v)
    assert all(isinstance(e, Reject) and not e.duplicate for e in evs)
    assert [e.code for e in evs] == [*cases, "bad_qty", "bad_price", "bad_price"]
    assert all(e.reason for e in evs)
    # a post-only order without a book rests (nothing to cross)
    v.place(req("e2", 1, "1", "2000.00", "post_only", symbol="ETHUSDT"))
    v.poll(T0 + 5 * MS)
    assert [type(e) for e in drain(v)] == [Ack]
    feed(v, [(1999.0, 1.0)], [(2000.0, 0.5)], T0 + 6 * MS, symbol="ETHUSDT")
    assert fills_of(drain(v)) == [(D("2000.00"), D("0.5"), D(0))]
    assert v.rules(["ETHUSDT"]) == {"ETHUSDT": ETH}
    with pytest.raises(Exception, match="unknown_symbol"):
        v.rules(["XYZ"])


def test_spot_balances():
    clk = Clock()
    v = venue(clk, taker_fee=0.001, balances={"USDT": D("1000"), "BTC": D("1")})
    feed(v, BIDS, [(100.00, 50.0)], T0)
    v.place(req("b1", 1, "10", "100.00"))  # needs 1000 + 1 fee
    v.place(req("s1", -1, "1.5", "99.99"))  # beyond the base balance
    v.poll(T0 + 5 * MS)
    evs = drain(v)
    assert [(e.code, e.client_id) for e in evs] == [("insufficient_balance", "b1"), ("insufficient_balance", "s1")]
    assert "USDT" in evs[0].reason and "BTC" in evs[1].reason
    v.place(req("b2", 1, "9.99", "100.00"))  # 999 + 0.999 fee
    v.poll(T0 + 5 * MS)
    assert drain(v)[-1].status == "filled"
    assert v.balances() == {"USDT": D("0.001"), "BTC": D("10.99")}
    # a resting sell locks its base; a second sell of the same coins is refused until it is canceled
    v.place(req("r", -1, "10", "101.00", "post_only"))
    v.place(req("s2", -1, "1", "99.99"))
    v.poll(T0 + 5 * MS)
    evs = drain(v)
    assert isinstance(evs[0], Ack) and evs[1].code == "insufficient_balance"
    assert v.balances()["BTC"] == D("10.99")  # balances() reports the total, locked included
    clk.t = T0 + 10 * MS
    v.cancel("BTCUSDT", "r")
    v.place(req("s3", -1, "10.99", "99.95"))
    v.poll(T0 + 20 * MS)
    evs = drain(v)
    assert evs[0] == Done("r", "canceled", D(0), T0 + 15 * MS)
    assert fills_of(evs) == [(D("99.99"), D("0.7"), D("0.0699930")), (D("99.98"), D("0.6"), D("0.0599880")),
                             (D("99.95"), D("5.0"), D("0.4997500"))]
    assert evs[-1].status == "expired"
    proceeds = D("99.99") * D("0.7") + D("99.98") * D("0.6") + D("99.95") * D("5.0")
    assert v.balances() == {"USDT": D("0.001") + proceeds * D("0.999"), "BTC": D("10.99") - D("6.3")}
    assert v.positions() == {"BTCUSDT": D("9.99") - D("6.3")}
