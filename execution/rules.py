"""Instrument rules (tick, step, bounds, minimum notional) parsed from the venues' symbol lists, and the
quantization of an order onto them with exact ``Decimal`` arithmetic.

Grids (EXCHANGES.md 1.6, 2.3, 3.3): KuCoin and Binance spot prices/quantities are multiples of the tick/step
(``price % tickSize == 0``); Binance USD-M counts from the minimum (``(price - minPrice) % tickSize == 0``,
``(qty - minQty) % stepSize == 0``), which only differs when the minimum is not itself on the tick/step grid.
A zero bound or increment means "no bound" / "no grid" (Binance: "any part 0 = disabled").

Not modelled (not in our reference or not needed for LIMIT/IOC/MARKET flows): PERCENT_PRICE(_BY_SIDE) bands,
MAX_NUM_ORDERS, Binance's ``avgPriceMins`` (market-order notional uses the caller's reference price).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, InvalidOperation
from functools import cached_property, lru_cache
from typing import Any

ZERO = Decimal(0)
_CTX = Context(prec=80)
"""Enough digits that no product or quotient of venue-sized numbers is ever rounded."""

REASONS = frozenset({"bad_price", "bad_qty", "qty_below_min", "qty_above_max", "notional_below_min",
                     "price_out_of_range", "symbol_halted"})


class LocalReject(ValueError):
    """An order refused locally before it reaches the venue; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


@dataclass(frozen=True)
class Rules:
    """One instrument's trading rules at one venue (all bounds: 0 = no bound)."""

    symbol: str
    venue: str
    """``kucoin``, ``binance`` or ``binance-usdm``."""
    tick: Decimal
    """Price increment (0: any price)."""
    step: Decimal
    """Quantity increment (0: any quantity)."""
    min_price: Decimal
    max_price: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    base: str
    quote: str
    # --- beyond the contract's fields (all defaulted) ---
    trading: bool = True
    """False when the venue says the symbol does not trade (Binance ``status != TRADING``, KuCoin
    ``enableTrading: false``): every order is refused with ``symbol_halted``."""
    max_notional: Decimal = ZERO
    """Binance spot ``NOTIONAL.maxNotional`` (0: none)."""
    market_min_qty: Decimal = ZERO
    """Binance ``MARKET_LOT_SIZE`` bounds and step for market orders (0: none)."""
    market_max_qty: Decimal = ZERO
    market_step: Decimal = ZERO

    @cached_property  # Rules is immutable; asked on every order
    def price_origin(self) -> Decimal:
        """Where the price grid starts: ``min_price`` on USD-M when it is off the tick grid, else 0."""
        return _origin(self.venue, self.min_price, self.tick)

    @cached_property  # Rules is immutable; asked on every order
    def qty_origin(self) -> Decimal:
        """Where the quantity grid starts: ``min_qty`` on USD-M when it is off the step grid, else 0."""
        return _origin(self.venue, self.min_qty, self.step)

    @cached_property  # Rules is immutable; asked on every order
    def price_dp(self) -> int:
        """Decimals of a price on the grid."""
        return max(_dp(self.tick), _dp(self.price_origin))

    @cached_property  # Rules is immutable; asked on every order
    def qty_dp(self) -> int:
        """Decimals of a quantity on the grid."""
        return max(_dp(self.step), _dp(self.qty_origin), _dp(self.market_step))

    def fmt_price(self, price: Decimal) -> str:
        """A price on the grid as a plain decimal string with the tick's decimals (``"7.612"``)."""
        return _fmt(price, self.price_dp if self.tick else None)

    def fmt_qty(self, qty: Decimal) -> str:
        """A quantity on the grid as a plain decimal string with the step's decimals (``"12"``)."""
        return _fmt(qty, self.qty_dp if self.step else None)

    def on_price_grid(self, price: Decimal) -> bool:
        """True when ``price`` is a multiple of the tick counted from the grid's origin."""
        return _on_grid(price, self.price_origin, self.tick)

    def on_qty_grid(self, qty: Decimal) -> bool:
        """True when ``qty`` is a multiple of the step counted from the grid's origin."""
        return _on_grid(qty, self.qty_origin, self.step)


@lru_cache(maxsize=1024)  # pure, and asked several times per order for the same few rules
def _origin(venue: str, minimum: Decimal, inc: Decimal) -> Decimal:
    if venue == "binance-usdm" and inc and minimum and minimum % inc:
        return minimum
    return ZERO


@lru_cache(maxsize=1024)
def _dp(x: Decimal) -> int:
    if not x:
        return 0
    exp = x.normalize().as_tuple().exponent
    assert isinstance(exp, int)
    return max(0, -exp)


@lru_cache(maxsize=64)
def _quantum(dp: int) -> Decimal:
    return Decimal(1).scaleb(-dp)


# the grid arithmetic below calls _CTX's methods rather than entering localcontext(_CTX), which copies the
# context each time: quantize() took 29 µs a call that way, 12 µs now (warm, in a loop; the executor calls it 4
# times per decision)
def _fmt(x: Decimal, dp: int | None) -> str:
    if dp is None:  # no grid: shortest exact form
        return format(x.normalize(_CTX), "f")
    return format(x.quantize(_quantum(dp), context=_CTX), "f")


def _on_grid(x: Decimal, origin: Decimal, inc: Decimal) -> bool:
    if not inc:
        return True
    return _CTX.remainder(_CTX.subtract(x, origin), inc) == 0


def _snap(x: Decimal, origin: Decimal, inc: Decimal, rounding: str) -> Decimal:
    """``x`` rounded onto ``origin + k*inc`` (floor or ceiling); unchanged when ``inc`` is 0."""
    if not inc:
        return x
    k = _CTX.divide(_CTX.subtract(x, origin), inc).to_integral_value(rounding=rounding, context=_CTX)
    return _CTX.add(origin, _CTX.multiply(k, inc))


def _dec(field: str, value: Any) -> Decimal:
    """A venue field as a Decimal; missing / null / empty means 0 (no bound)."""
    if value is None or value == "":
        return ZERO
    try:
        d = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ValueError(f"{field}: not a decimal number: {value!r}") from None
    if not d.is_finite() or d < 0:
        raise ValueError(f"{field}: invalid value {value!r}")
    return d


def rules_from_kucoin(sym: dict[str, Any]) -> Rules:
    """Rules from one ``GET /api/v2/symbols`` entry. ``priceIncrement`` is both the tick and the minimum price;
    the minimum notional is the larger of ``minFunds`` and ``quoteMinSize`` (whichever the venue enforces)."""
    tick = _dec("priceIncrement", sym.get("priceIncrement"))
    return Rules(
        symbol=sym["symbol"], venue="kucoin", tick=tick, step=_dec("baseIncrement", sym.get("baseIncrement")),
        min_price=tick, max_price=ZERO,
        min_qty=_dec("baseMinSize", sym.get("baseMinSize")), max_qty=_dec("baseMaxSize", sym.get("baseMaxSize")),
        min_notional=max(_dec("minFunds", sym.get("minFunds")), _dec("quoteMinSize", sym.get("quoteMinSize"))),
        base=sym.get("baseCurrency", ""), quote=sym.get("quoteCurrency", ""),
        trading=bool(sym.get("enableTrading", True)))


def rules_from_binance(sym: dict[str, Any], futures: bool) -> Rules:
    """Rules from one exchangeInfo ``symbols`` entry: ``PRICE_FILTER``, ``LOT_SIZE``, ``MARKET_LOT_SIZE`` and
    spot ``NOTIONAL {minNotional, maxNotional}`` or legacy ``MIN_NOTIONAL {minNotional}`` / USD-M
    ``MIN_NOTIONAL {notional}``."""
    filters = {f.get("filterType"): f for f in sym.get("filters", [])}
    pf, lot, mlot = filters.get("PRICE_FILTER", {}), filters.get("LOT_SIZE", {}), filters.get("MARKET_LOT_SIZE", {})
    if futures:
        min_notional, max_notional = _dec("notional", filters.get("MIN_NOTIONAL", {}).get("notional")), ZERO
    elif "NOTIONAL" in filters:
        nf = filters["NOTIONAL"]
        min_notional = _dec("minNotional", nf.get("minNotional"))
        max_notional = _dec("maxNotional", nf.get("maxNotional"))
    else:
        min_notional, max_notional = _dec("minNotional", filters.get("MIN_NOTIONAL", {}).get("minNotional")), ZERO
    return Rules(
        symbol=sym["symbol"], venue="binance-usdm" if futures else "binance",
        tick=_dec("tickSize", pf.get("tickSize")), step=_dec("stepSize", lot.get("stepSize")),
        min_price=_dec("minPrice", pf.get("minPrice")), max_price=_dec("maxPrice", pf.get("maxPrice")),
        min_qty=_dec("minQty", lot.get("minQty")), max_qty=_dec("maxQty", lot.get("maxQty")),
        min_notional=min_notional, base=sym.get("baseAsset", ""), quote=sym.get("quoteAsset", ""),
        trading=sym.get("status", "TRADING") == "TRADING", max_notional=max_notional,
        market_min_qty=_dec("minQty", mlot.get("minQty")), market_max_qty=_dec("maxQty", mlot.get("maxQty")),
        market_step=_dec("stepSize", mlot.get("stepSize")))


def _positive(value: object, reason: str, what: str) -> Decimal:
    """An input as an exact Decimal (a float is taken as its shortest repr, i.e. the number as written)."""
    if isinstance(value, bool):
        raise LocalReject(reason, f"{what} {value!r} is not a number")
    try:
        if isinstance(value, float):
            if not math.isfinite(value):
                raise LocalReject(reason, f"{what} {value!r} is not finite")
            d = Decimal(repr(value))
        elif isinstance(value, Decimal):
            d = value
        elif isinstance(value, int | str):
            d = Decimal(value)
        else:
            raise LocalReject(reason, f"{what} {value!r} is not a number")
    except InvalidOperation:
        raise LocalReject(reason, f"{what} {value!r} is not a number") from None
    if not d.is_finite():
        raise LocalReject(reason, f"{what} {value} is not finite")
    if d <= 0:
        raise LocalReject(reason, f"{what} {value} is not positive")
    return d


def quantize(rules: Rules, side: int, qty: float | Decimal, price: float | Decimal | None, *,
             ref_price: float | Decimal | None = None) -> tuple[str, str | None]:
    """An order snapped onto the instrument's grid: ``(qty, price)`` as plain decimal strings (no exponent,
    the tick's/step's decimals). ``qty`` is floored to the step (never more than asked); ``price`` is floored
    for a buy and ceiled for a sell (never worse than the given limit); ``price=None`` is a market order whose
    notional is checked at ``ref_price`` when given. Raises ``LocalReject`` when the result would break a
    rule (quantity/price bounds, minimum notional) or an input is NaN, infinite or not positive."""
    if side not in (1, -1):
        raise ValueError(f"side must be 1 (buy) or -1 (sell), not {side!r}")
    if not rules.trading:
        raise LocalReject("symbol_halted", f"{rules.symbol} is not trading on {rules.venue}")
    q_in = _positive(qty, "bad_qty", "quantity")
    p_in = None if price is None else _positive(price, "bad_price", "price")
    ref = p_in if p_in is not None else (None if ref_price is None else _positive(ref_price, "bad_price", "price"))
    market = p_in is None

    # quantity: floor onto the step grid (and the market-order step when it is a coarser grid)
    q = _snap(q_in, rules.qty_origin, rules.step, ROUND_FLOOR)
    min_q, max_q = rules.min_qty, rules.max_qty
    if market:
        if rules.market_step and rules.market_step != rules.step:
            q = _snap(q, ZERO, rules.market_step, ROUND_FLOOR)
            if not rules.on_qty_grid(q):
                raise LocalReject("bad_qty", f"{rules.symbol}: no quantity <= {q_in} fits both steps "
                                             f"{rules.step} and {rules.market_step}")
        min_q = max(min_q, rules.market_min_qty)
        if rules.market_max_qty:
            max_q = min(max_q, rules.market_max_qty) if max_q else rules.market_max_qty
    if q <= 0:
        raise LocalReject("qty_below_min", f"{rules.symbol}: quantity {q_in} is below one step {rules.step}")
    if min_q and q < min_q:
        raise LocalReject("qty_below_min", f"{rules.symbol}: quantity {q_in} -> {q} is below the minimum {min_q}")
    if max_q and q > max_q:
        raise LocalReject("qty_above_max", f"{rules.symbol}: quantity {q} is above the maximum {max_q}")

    # price: buy floored, sell ceiled onto the tick grid
    p: Decimal | None = None
    if p_in is not None:
        p = _snap(p_in, rules.price_origin, rules.tick, ROUND_FLOOR if side == 1 else ROUND_CEILING)
        if p <= 0 or (rules.min_price and p < rules.min_price):
            raise LocalReject("price_out_of_range", f"{rules.symbol}: price {p_in} -> {p} is below the minimum "
                                                    f"{rules.min_price or rules.tick}")
        if rules.max_price and p > rules.max_price:
            raise LocalReject("price_out_of_range", f"{rules.symbol}: price {p_in} -> {p} is above the maximum "
                                                    f"{rules.max_price}")
        ref = p

    # notional at the quantized price (or the market order's reference price)
    if ref is not None:
        notional = _CTX.multiply(q, ref)
        if rules.min_notional and notional < rules.min_notional:
            raise LocalReject("notional_below_min", f"{rules.symbol}: notional {q} x {ref} = {notional.normalize():f}"
                                                    f" is below the minimum {rules.min_notional}")
        if rules.max_notional and notional > rules.max_notional:
            raise LocalReject("qty_above_max", f"{rules.symbol}: notional {q} x {ref} = {notional.normalize():f}"
                                               f" is above the maximum {rules.max_notional}")
    return rules.fmt_qty(q), None if p is None else rules.fmt_price(p)
