"""Instrument rules: parsing the venues' symbol entries (literal shapes and the simulator's real answers) and
quantization, checked on the reference rounding examples and by property tests against an independent
exact-fraction model of the venues' filter rules."""

from __future__ import annotations

import dataclasses
import json
import math
from decimal import Decimal
from fractions import Fraction as F

import pytest
from conftest import SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simulator_client import Sim

from execution.rules import LocalReject, Rules, quantize, rules_from_binance, rules_from_kucoin

D = Decimal
ROUNDING = json.loads((SHARED / "reference" / "test_vectors.json").read_text())["rounding_examples"]["cases"]


def _binance_sym(symbol: str, filters: dict[str, dict], status: str = "TRADING") -> dict:
    return {"symbol": symbol, "status": status, "baseAsset": symbol[:-4], "quoteAsset": symbol[-4:],
            "filters": [{"filterType": k, **v} for k, v in filters.items()]}


# ------------------------------------------------------------------------------------------ reference examples


def test_rounding_example_usdm_sushi() -> None:
    case = ROUNDING[0]
    assert case["symbol"] == "SUSHIUSDT"
    r = rules_from_binance(_binance_sym("SUSHIUSDT", case["filters"]), futures=True)
    assert (r.venue, r.tick, r.min_price, r.step, r.min_notional) == ("binance-usdm", D("0.001"), D("0.143"), 1, 5)
    inp, exp = case["inputs"], case["expected"]
    assert quantize(r, 1, D(inp["qty"]), D(inp["price"])) == (exp["qty_floor"], exp["price_floor"])
    assert quantize(r, -1, D(inp["qty"]), D(inp["price"])) == (exp["qty_floor"], exp["price_ceil"])
    assert exp["notional_ok_at_floor"] is True


def test_rounding_example_spot_nkn_legacy_min_notional() -> None:
    case = ROUNDING[1]
    assert case["symbol"] == "NKNUSDT"
    r = rules_from_binance(_binance_sym("NKNUSDT", case["filters"]), futures=False)
    assert r.min_notional == 10
    inp, exp = case["inputs"], case["expected"]
    with pytest.raises(LocalReject) as info:
        quantize(r, 1, D(inp["qty"]), D(inp["price"]))
    assert info.value.reason == "notional_below_min" and exp["notional_ok_at_floor"] is False
    assert exp["notional_at_floor"] in str(info.value) and "\n" not in str(info.value)
    loose = dataclasses.replace(r, min_notional=D(0))
    assert quantize(loose, 1, D(inp["qty"]), D(inp["price"])) == (exp["qty_floor"], exp["price_floor"])


def test_rounding_example_kucoin_req_eth() -> None:
    case = ROUNDING[2]
    r = rules_from_kucoin({"symbol": case["symbol"], "baseCurrency": "REQ", "quoteCurrency": "ETH",
                           **case["symbol_fields"]})
    assert (r.tick, r.min_price, r.step, r.min_qty, r.min_notional) == \
        (D("0.0000001"), D("0.0000001"), D("0.0001"), 1, D("0.0001"))
    inp, exp = case["inputs"], case["expected"]
    assert quantize(r, 1, D(inp["size"]), D(inp["price"])) == (exp["size_floor"], exp["price_floor"])


# ------------------------------------------------------------------------------------------ parsing

SPOT_BTC = {  # shape of feeds/simulator/binance.py _spot_info (and of the real exchangeInfo)
    "symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "baseAssetPrecision": 8, "quoteAsset": "USDT",
    "quotePrecision": 8, "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"], "isSpotTradingAllowed": True,
    "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000",
         "tickSize": "0.01000000"},
        {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000", "stepSize": "0.00001000"},
        {"filterType": "ICEBERG_PARTS", "limit": 10},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "100.00000000",
         "stepSize": "0.00000000"},
        {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2",
         "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
        {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
         "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200}],
}
USDM_BTC = {  # shape of _futures_info
    "symbol": "BTCUSDT", "pair": "BTCUSDT", "contractType": "PERPETUAL", "status": "TRADING", "baseAsset": "BTC",
    "quoteAsset": "USDT", "marginAsset": "USDT", "pricePrecision": 1, "quantityPrecision": 3,
    "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "556.80", "maxPrice": "4529764", "tickSize": "0.10"},
        {"filterType": "LOT_SIZE", "stepSize": "0.001", "maxQty": "1000", "minQty": "0.001"},
        {"filterType": "MARKET_LOT_SIZE", "stepSize": "0.001", "maxQty": "120", "minQty": "0.001"},
        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
        {"filterType": "MIN_NOTIONAL", "notional": "100"},
        {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
         "multiplierDecimal": "4"}],
    "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
}
KUCOIN_BTC = {  # shape of feeds/simulator/kucoin.py _symbol_info (GET /api/v2/symbols)
    "symbol": "BTC-USDT", "name": "BTC-USDT", "baseCurrency": "BTC", "quoteCurrency": "USDT", "feeCurrency": "USDT",
    "market": "USDS", "baseMinSize": "0.00001", "quoteMinSize": "0.1", "baseMaxSize": "10000000000",
    "quoteMaxSize": "99999999", "baseIncrement": "0.00000001", "quoteIncrement": "0.000001", "priceIncrement": "0.1",
    "priceLimitRate": "0.1", "minFunds": "0.1", "isMarginEnabled": True, "enableTrading": True, "feeCategory": 1,
    "makerFeeCoefficient": "1.00", "takerFeeCoefficient": "1.00", "st": False, "callauctionIsEnabled": False,
    "callauctionPriceFloor": None, "tradingStartTime": None,
}


def test_parse_binance_spot() -> None:
    r = rules_from_binance(SPOT_BTC, futures=False)
    assert r == Rules("BTCUSDT", "binance", D("0.01"), D("0.00001"), D("0.01"), D(1000000), D("0.00001"), D(9000),
                      D(5), "BTC", "USDT", trading=True, max_notional=D(9000000), market_max_qty=D(100))
    assert quantize(r, 1, D("0.0123456"), D("65000.019")) == ("0.01234", "65000.01")
    assert quantize(r, -1, 0.0123456, 65000.011) == ("0.01234", "65000.02")
    assert quantize(r, 1, D("0.5"), None) == ("0.50000", None)  # market: no price
    with pytest.raises(LocalReject, match="qty_above_max"):  # MARKET_LOT_SIZE maxQty
        quantize(r, 1, D("150"), None)
    assert quantize(r, 1, D("150"), D("1"))[0] == "150.00000"  # the limit-order LOT_SIZE allows it
    with pytest.raises(LocalReject, match="qty_above_max"):  # maxNotional 9e6
        quantize(r, 1, D("150"), D("65000"))
    with pytest.raises(LocalReject, match="notional_below_min"):  # market notional at the reference price
        quantize(r, -1, D("0.00005"), None, ref_price=D("65000"))


def test_parse_binance_spot_legacy_and_halted() -> None:
    legacy = dict(SPOT_BTC, status="BREAK", filters=[
        f if f["filterType"] != "NOTIONAL" else {"filterType": "MIN_NOTIONAL", "minNotional": "10.00000000",
                                                  "applyToMarket": True, "avgPriceMins": 5}
        for f in SPOT_BTC["filters"]])
    r = rules_from_binance(legacy, futures=False)
    assert (r.min_notional, r.max_notional, r.trading) == (10, 0, False)
    with pytest.raises(LocalReject) as info:
        quantize(r, 1, D(1), D(100))
    assert info.value.reason == "symbol_halted" and "BTCUSDT" in info.value.message


def test_parse_binance_usdm_off_grid_min_price() -> None:
    r = rules_from_binance(USDM_BTC, futures=True)
    assert (r.venue, r.tick, r.min_price, r.step, r.min_qty, r.min_notional, r.market_max_qty) == \
        ("binance-usdm", D("0.1"), D("556.8"), D("0.001"), D("0.001"), 100, 120)
    assert r.price_origin == 0  # 556.80 is on the 0.10 grid
    off = dataclasses.replace(r, min_price=D("556.85"))
    assert off.price_origin == D("556.85")
    assert quantize(off, 1, D("0.01"), D("60000.19")) == ("0.010", "60000.15")
    assert quantize(off, -1, D("0.01"), D("60000.19")) == ("0.010", "60000.25")
    assert quantize(r, 1, D("0.01"), D("60000.19")) == ("0.010", "60000.1")
    with pytest.raises(LocalReject, match="notional_below_min"):
        quantize(r, 1, D("0.001"), D("60000"))


def test_parse_kucoin() -> None:
    r = rules_from_kucoin(KUCOIN_BTC)
    assert r == Rules("BTC-USDT", "kucoin", D("0.1"), D("0.00000001"), D("0.1"), D(0), D("0.00001"),
                      D(10000000000), D("0.1"), "BTC", "USDT")
    assert quantize(r, 1, D("0.000123456789"), D("30000.09")) == ("0.00012345", "30000.0")
    assert quantize(r, -1, D("0.000123456789"), D("30000.01")) == ("0.00012345", "30000.1")
    with pytest.raises(LocalReject, match="symbol_halted"):
        quantize(rules_from_kucoin(dict(KUCOIN_BTC, enableTrading=False)), 1, 1, 1)
    sparse = rules_from_kucoin({"symbol": "X-Y", "priceIncrement": "0.01", "baseIncrement": "1",
                                "baseMinSize": "1", "minFunds": None})
    assert (sparse.max_qty, sparse.min_notional) == (0, 0)


def test_zero_fields_mean_no_bound() -> None:
    r = rules_from_binance(_binance_sym("ABCUSDT", {
        "PRICE_FILTER": {"minPrice": "0", "maxPrice": "0", "tickSize": "0"},
        "LOT_SIZE": {"minQty": "0.00000000", "maxQty": "0", "stepSize": "0.00000000"}}), futures=False)
    assert (r.tick, r.step, r.min_price, r.max_price, r.min_qty, r.max_qty, r.min_notional) == (0,) * 7
    assert quantize(r, 1, D("123.456789"), D("0.000012345")) == ("123.456789", "0.000012345")
    assert quantize(r, 1, D("1E+3"), D("5E-7")) == ("1000", "0.0000005")


def test_simulator_symbol_lists() -> None:
    """The simulator's real exchangeInfo / v2 symbols answers parse and quantize consistently."""
    sim = Sim("--seed", "7").ready()
    try:
        spot = sim.get("/binance/api/v3/exchangeInfo")["symbols"]
        usdm = sim.get("/binance-usdm/fapi/v1/exchangeInfo")["symbols"]
        kucoin = sim.get("/api/v2/symbols")["data"]
    finally:
        sim.stop()
    rules = [rules_from_binance(s, futures=False) for s in spot] + [rules_from_binance(s, futures=True)
                                                                       for s in usdm]
    rules += [rules_from_kucoin(s) for s in kucoin]
    assert len(rules) == len(spot) + len(usdm) + len(kucoin) > 3
    by_venue = {(r.venue, r.base, r.quote): r for r in rules}
    for (venue, base, quote), r in by_venue.items():
        assert r.trading and r.tick > 0 and r.step > 0 and r.min_notional > 0, r
        k = by_venue[("kucoin", base, quote)]
        assert (r.tick, r.step, r.min_notional) == (k.tick, k.step, k.min_notional), venue
        price = r.tick * 1234567
        qty_s, price_s = quantize(r, 1, (r.min_notional / price + r.step * 3) * D("1.5"), price + r.tick / 3)
        assert D(price_s) == price and D(qty_s) * price >= r.min_notional


# ------------------------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 0.0, -1.0, D("NaN"), D("sNaN"), D("Infinity"),
                                 D(0), D("-0.5"), 0, -3, "abc", True, [1]])
def test_bad_inputs(bad: object) -> None:
    r = rules_from_kucoin(KUCOIN_BTC)
    for call, reason in ((lambda: quantize(r, 1, bad, D(100)), "bad_qty"),  # type: ignore[arg-type]
                         (lambda: quantize(r, -1, D(1), bad), "bad_price"),  # type: ignore[arg-type]
                         (lambda: quantize(r, 1, D(1), None, ref_price=bad), "bad_price")):  # type: ignore[arg-type]
        with pytest.raises(LocalReject) as info:
            call()
        assert info.value.reason == reason and "\n" not in str(info.value)


def test_bad_inputs_market_none_is_fine() -> None:
    r = rules_from_kucoin(KUCOIN_BTC)
    assert quantize(r, 1, D(1), None, ref_price=None) == ("1.00000000", None)
    with pytest.raises(ValueError, match="side"):
        quantize(r, 0, D(1), D(1))


# ------------------------------------------------------------------------------------------ property tests

INCREMENTS = st.builds(lambda m, k: D(m).scaleb(-k), st.sampled_from([1, 2, 5, 25]), st.integers(-1, 9))


def _dec(lo: int, hi: int, digits: int = 9) -> st.SearchStrategy[Decimal]:
    """Positive decimals with up to ``digits`` significant digits, scaled by 10**lo..10**hi."""
    return st.builds(lambda m, e: D(m).scaleb(e), st.integers(1, 10**digits), st.integers(lo, hi))


@st.composite
def rules_st(draw: st.DrawFn) -> Rules:
    venue = draw(st.sampled_from(["kucoin", "binance", "binance-usdm"]))
    tick = draw(st.one_of(INCREMENTS, st.just(D(0)))) if venue != "kucoin" else draw(INCREMENTS)
    step = draw(st.one_of(INCREMENTS, st.just(D(0))))

    def minimum(inc: Decimal) -> Decimal:
        return draw(st.one_of(st.just(D(0)), st.integers(1, 20).map(lambda k: inc * k), _dec(-15, -9)))

    min_price = tick if venue == "kucoin" else minimum(tick)
    min_qty = minimum(step)
    return Rules("T", venue, tick, step, min_price,
                 draw(st.one_of(st.just(D(0)), _dec(0, 3))).max(min_price),
                 min_qty, draw(st.one_of(st.just(D(0)), _dec(0, 3))).max(min_qty),
                 draw(st.one_of(st.just(D(0)), _dec(-14, -9))), "B", "Q")


def _exact(x: object) -> F:
    return F(D(repr(x))) if isinstance(x, float) else F(x)  # type: ignore[arg-type]


def _model(r: Rules, side: int, qty: object, price: object) -> tuple[F, F] | str:
    """The venues' rules applied with exact fractions: the expected (qty, price) or the reject reason."""
    def origin(minimum: Decimal, inc: Decimal) -> F:
        return F(minimum) if r.venue == "binance-usdm" and inc and minimum and F(minimum) % F(inc) else F(0)

    def snap(x: F, o: F, inc: Decimal, up: bool) -> F:
        if not inc:
            return x
        k = (x - o) / F(inc)
        return o + (math.ceil(k) if up else math.floor(k)) * F(inc)

    q = snap(_exact(qty), origin(r.min_qty, r.step), r.step, False)
    if q <= 0 or (r.min_qty and q < r.min_qty):
        return "qty_below_min"
    if r.max_qty and q > r.max_qty:
        return "qty_above_max"
    p = snap(_exact(price), origin(r.min_price, r.tick), r.tick, side == -1)
    if p <= 0 or (r.min_price and p < r.min_price) or (r.max_price and p > r.max_price):
        return "price_out_of_range"
    if r.min_notional and p * q < r.min_notional:
        return "notional_below_min"
    return q, p


def _venue_accepts(r: Rules, q: F, p: F) -> bool:
    """The filter rules as the venues state them (EXCHANGES.md 1.6, 2.3, 3.3)."""
    po = F(r.min_price) if r.venue == "binance-usdm" else F(0)
    qo = F(r.min_qty) if r.venue == "binance-usdm" else F(0)
    return ((not r.tick or (p - po) % F(r.tick) == 0) and (not r.step or (q - qo) % F(r.step) == 0)
            and (not r.min_price or p >= r.min_price) and (not r.max_price or p <= r.max_price)
            and (not r.min_qty or q >= r.min_qty) and (not r.max_qty or q <= r.max_qty)
            and p * q >= F(r.min_notional) and p > 0 and q > 0)


def _plain(s: str, dp: int | None) -> None:
    assert "e" not in s.lower() and format(D(s), "f") == s and not s.startswith("-")
    if dp is not None:
        assert len(s.partition(".")[2]) == dp


NUMBER = st.one_of(_dec(-15, -3, 12), st.floats(min_value=1e-9, max_value=1e6, allow_nan=False, allow_infinity=False))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules_st(), st.sampled_from([1, -1]), NUMBER, NUMBER)
def test_quantize_properties(r: Rules, side: int, qty: object, price: object) -> None:
    expected = _model(r, side, qty, price)
    try:
        q_s, p_s = quantize(r, side, qty, price)  # type: ignore[arg-type]
    except LocalReject as e:
        assert e.reason == expected, (e, expected)
        return
    assert p_s is not None and not isinstance(expected, str), expected
    _plain(q_s, r.qty_dp if r.step else None)
    _plain(p_s, r.price_dp if r.tick else None)
    q, p = F(D(q_s)), F(D(p_s))
    assert (q, p) == expected
    assert _venue_accepts(r, q, p)
    assert q <= _exact(qty) and (not r.step or q > _exact(qty) - F(r.step))
    if side == 1:
        assert p <= _exact(price) and (not r.tick or p > _exact(price) - F(r.tick))
    else:
        assert p >= _exact(price) and (not r.tick or p < _exact(price) + F(r.tick))


@settings(max_examples=200, deadline=None)
@given(rules_st(), st.sampled_from([1, -1]), NUMBER, st.one_of(st.none(), NUMBER))
def test_quantize_market_properties(r: Rules, side: int, qty: object, ref: object) -> None:
    try:
        q_s, p_s = quantize(r, side, qty, None, ref_price=ref)  # type: ignore[arg-type]
    except LocalReject as e:
        assert e.reason in ("qty_below_min", "qty_above_max", "notional_below_min")
        if e.reason == "notional_below_min":
            assert ref is not None
        return
    assert p_s is None
    q = F(D(q_s))
    assert q <= _exact(qty) and q > 0 and (not r.min_qty or q >= r.min_qty) and (not r.max_qty or q <= r.max_qty)
    assert ref is None or q * _exact(ref) >= F(r.min_notional)
