"""execution.positions: average-cost positions, realized PnL, fee assets and fill de-duplication, checked against
hand-computed examples and, over random fill sequences, against a wallet (cash-flow) reference and an exact
rational average-cost reference."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execution.positions import Ledger
from execution.venue import Fill

D = Decimal


def fill(cid: str, tid: str, price: str, qty: str, fee: str = "0", fee_asset: str = "USDT") -> Fill:
    return Fill(cid, "v" + cid, tid, D(price), D(qty), D(fee), fee_asset, False, 1_700_000_000_000, 1)


def test_average_realized_and_cross_through_zero():
    led = Ledger()
    assert led.apply(fill("a", "1", "100", "1"), 1, "BTC", "USDT", symbol="BTCUSDT")
    assert led.apply(fill("a", "2", "110", "1"), 1, "BTC", "USDT", symbol="BTCUSDT")
    p = led.positions["BTCUSDT"]
    assert (p.qty, p.avg_price, p.realized) == (D(2), D(105), D(0))
    # reduction: avg unchanged, realized (120 - 105) x 1.5
    led.apply(fill("b", "3", "120", "1.5"), -1, "BTC", "USDT", symbol="BTCUSDT")
    assert (p.qty, p.avg_price, p.realized) == (D("0.5"), D(105), D("22.5"))
    # cross through zero: closes 0.5 at 100 (-2.5), the remaining 0.5 opens short at 100
    led.apply(fill("c", "4", "100", "1"), -1, "BTC", "USDT", symbol="BTCUSDT")
    assert (p.qty, p.avg_price, p.realized) == (D("-0.5"), D(100), D(20))
    # short reduction: (exit - avg) x closed x sign = (90 - 100) x 0.25 x -1 = 2.5
    led.apply(fill("d", "5", "90", "0.25"), 1, "BTC", "USDT", symbol="BTCUSDT")
    assert (p.qty, p.avg_price, p.realized) == (D("-0.25"), D(100), D("22.5"))
    led.apply(fill("d", "6", "80", "0.25"), 1, "BTC", "USDT", symbol="BTCUSDT")
    assert (p.qty, p.avg_price, p.realized) == (D(0), D(0), D("27.5"))
    assert led.realized_pnl == D("27.5") and led.open_symbols() == []


def test_fee_assets_spot_and_futures():
    led = Ledger()
    # spot BUY, fee in base: holding grows by qty - fee, fee counted at fee x price in quote
    led.apply(fill("a", "1", "200", "1", "0.001", "ETH"), 1, "ETH", "USDT", False, symbol="ETHUSDT")
    assert led.position("ETHUSDT") == D("0.999")
    assert led.fees == D("0.2")
    # spot SELL, fee in quote
    led.apply(fill("b", "2", "210", "0.999", "0.20979", "USDT"), -1, "ETH", "USDT", False, symbol="ETHUSDT")
    assert led.position("ETHUSDT") == 0
    assert led.realized_pnl == D("9.99")  # (210 - 200) x 0.999
    assert led.fees == D("0.40979")
    assert led.net_pnl == D("9.58021")
    # futures: a base fee does not move the position
    led.apply(fill("c", "3", "100", "2", "0.002", "BTC"), 1, "BTC", "USDT", True, symbol="BTCUSDT-PERP")
    assert led.position("BTCUSDT-PERP") == 2 and led.fees == D("0.60979")
    # other assets: kept apart, case-insensitive asset names
    led.apply(fill("d", "4", "100", "1", "0.0005", "bnb"), -1, "BTC", "USDT", True, symbol="BTCUSDT-PERP")
    led.apply(fill("d", "5", "100", "1", "0.0007", "BNB"), -1, "BTC", "USDT", True, symbol="BTCUSDT-PERP")
    assert led.fees_other == {"BNB": D("0.0012")} and led.fees == D("0.60979")
    # a rebate (negative fee) lowers the fees
    led.apply(fill("e", "6", "100", "1", "-0.01", "USDT"), 1, "BTC", "USDT", True, symbol="BTCUSDT-PERP")
    assert led.fees == D("0.59979")
    snap = led.snapshot()
    assert orjson.loads(orjson.dumps(snap)) == snap
    assert snap["fees"] == "0.59979" and snap["fees_other"] == {"BNB": "0.0012"}
    assert snap["realized_pnl"] == "9.99"
    assert snap["positions"]["ETHUSDT"] == {"position": "0", "avg_price": "0", "realized_pnl": "9.99",
                                            "fees": "0.40979"}
    assert snap["positions"]["BTCUSDT-PERP"]["position"] == "1"
    assert snap["positions"]["BTCUSDT-PERP"]["avg_price"] == "100"


def test_dedup_on_client_and_trade_id():
    led = Ledger()
    f = fill("a", "1", "100", "1", "0.1")
    assert led.apply(f, 1, "BTC", "USDT", symbol="X")
    before = led.snapshot()
    assert not led.apply(f, 1, "BTC", "USDT", symbol="X")
    assert not led.apply(fill("a", "1", "999", "5", "7"), -1, "BTC", "USDT", symbol="X")  # same key
    assert led.snapshot() == before and led.positions["X"].fills == 1
    # the same trade id under another order is a different fill
    assert led.apply(fill("b", "1", "100", "1"), 1, "BTC", "USDT", symbol="X")
    assert led.position("X") == 2


def test_bad_input_raises_and_changes_nothing():
    led = Ledger()
    for f, side in ((fill("a", "1", "100", "0"), 1), (fill("a", "2", "-1", "1"), 1), (fill("a", "3", "1", "1"), 0),
                    (fill("a", "4", "NaN", "1"), 1), (fill("a", "5", "1", "1", "Infinity"), 1)):
        with pytest.raises(ValueError):
            led.apply(f, side, "BTC", "USDT", symbol="X")
    assert led.snapshot() == {"positions": {}, "realized_pnl": "0", "fees": "0", "fees_other": {}}
    led.apply(fill("a", "6", "100", "1"), 1, "BTC", "USDT", symbol="X")
    with pytest.raises(KeyError):
        led.unrealized({})  # an open position needs a mark


# --- random sequences against references ---------------------------------------------------------------------

SYMS = {"AUSDT": ("A", "USDT", False), "BUSDT": ("B", "USDT", False), "BPERP": ("B", "USDT", True)}

fills_st = st.lists(
    st.tuples(
        st.sampled_from(sorted(SYMS)),
        st.sampled_from([1, -1]),
        st.integers(1, 10**7).map(lambda n: D(n).scaleb(-3)),  # price 0.001 .. 10000, tick 0.001
        st.integers(1, 10**6).map(lambda n: D(n).scaleb(-5)),  # qty 0.00001 .. 10, step 0.00001
        st.sampled_from(["quote", "base", "other", "none"]),
        st.integers(-5, 100).map(lambda n: D(n).scaleb(-5)),  # fee rate -0.005 % .. 0.1 %
        st.booleans(),  # replay the fill (must be ignored)
    ),
    max_size=60,
)


class AvgCostRef:
    """Exact rational average-cost reference of one symbol."""

    def __init__(self) -> None:
        self.pos = Fraction(0)
        self.avg = Fraction(0)
        self.realized = Fraction(0)

    def trade(self, delta: Fraction, price: Fraction) -> None:
        if self.pos == 0 or (self.pos > 0) == (delta > 0):
            new = self.pos + delta
            self.avg = (self.avg * abs(self.pos) + price * abs(delta)) / abs(new)
            self.pos = new
            return
        sign = 1 if self.pos > 0 else -1
        closed = min(abs(delta), abs(self.pos))
        self.realized += (price - self.avg) * closed * sign
        self.pos -= sign * closed
        rest = abs(delta) - closed
        if rest:
            self.pos, self.avg = -sign * rest, price
        elif self.pos == 0:
            self.avg = Fraction(0)


@settings(max_examples=300, deadline=None)
@given(fills_st, st.integers(1, 10**7).map(lambda n: D(n).scaleb(-3)))
def test_random_fills_match_wallet_and_average_cost_references(seq, mark):
    led = Ledger()
    # wallet reference: what the account actually holds (spot: base asset; futures: position), and quote cash
    holding: dict[str, Decimal] = dict.fromkeys(SYMS, D(0))
    cash = D(0)  # quote cash flow, including fees paid in quote (and in base for futures, at the fill price)
    other: dict[str, Decimal] = {}
    refs = {s: AvgCostRef() for s in SYMS}
    n = 0
    for i, (sym, side, price, qty, fee_kind, rate, replay) in enumerate(seq):
        base, quote, futures = SYMS[sym]
        fee_asset = {"quote": quote, "base": base, "other": "BNB", "none": quote}[fee_kind]
        fee = D(0) if fee_kind == "none" else (qty * price * rate if fee_kind != "base" else qty * rate)
        f = Fill(f"c{i % 7}", "v", f"t{i}", price, qty, fee, fee_asset, False, 0, 0)
        assert led.apply(f, side, base, quote, futures, symbol=sym)
        n += 1
        if replay:
            assert not led.apply(f, side, base, quote, futures, symbol=sym)
        cash -= side * qty * price
        delta = side * qty
        if fee_kind in ("quote", "none"):
            cash -= fee
        elif fee_kind == "base":
            if futures:
                cash -= fee * price
            else:
                delta -= fee
        else:
            other["BNB"] = other.get("BNB", D(0)) + fee
        holding[sym] += delta
        refs[sym].trade(Fraction(delta), Fraction(price))

    for sym in SYMS:
        assert led.position(sym) == holding[sym]
    marks = dict.fromkeys(SYMS, mark)
    # cash-flow identity, exact to the last unit (summed as fractions: the test's own arithmetic must not round)
    lhs = Fraction(led.realized_pnl) - Fraction(led.fees) + Fraction(led.unrealized(marks))
    assert lhs == Fraction(cash) + sum(Fraction(h) * Fraction(mark) for h in holding.values())
    assert {k: v for k, v in led.fees_other.items() if v} == {k: v for k, v in other.items() if v}
    # average cost: the one rounding is the cost removed on partial reductions (<= 0.5e-30 each)
    tol = Fraction(n, 10**30)
    for sym, ref in refs.items():
        p = led.positions.get(sym)
        realized = Fraction(p.realized) if p else Fraction(0)
        assert abs(realized - ref.realized) <= tol
        if p and p.qty:
            assert abs(Fraction(p.avg_price) - ref.avg) <= Fraction(1, 10**18)
    assert abs(Fraction(led.realized_pnl) - sum(r.realized for r in refs.values())) <= tol
