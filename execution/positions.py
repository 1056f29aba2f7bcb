"""Positions and PnL from fills, in exact ``Decimal`` arithmetic.

Each symbol keeps its signed base position and its cost basis (position x average entry price). A fill that
increases the position adds to the cost at the fill price (weighted average); a fill that reduces it realizes
``(exit - avg) x closed qty x sign`` in quote and leaves the average unchanged; a fill that crosses through zero
closes the old position and opens the remainder at the fill price.

Spot: a fee charged in the base asset changes the holding (a BUY of ``qty`` with a base fee adds ``qty - fee``);
the net base change is treated as traded at the fill price and the fee is counted at ``fee x price`` in quote, so
``realized - fees + unrealized(mark) == quote cash flow + position x mark`` holds exactly. Futures: the position
moves by the fill quantity only. Fees in the quote asset count as they are; fees in any other asset (BNB, KCS)
are kept per asset and reported separately.

The executor rebuilds a ledger by re-applying its journaled fills; fills are de-duplicated on
``(client_id, trade_id)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

from execution.venue import Fill

ZERO = Decimal(0)
_CTX = Context(prec=100)
"""Enough digits that sums and products of venue-sized numbers are never rounded."""
_COST_QUANTUM = Decimal(1).scaleb(-30)
"""The one rounded quantity: the cost removed on a partial reduction (cost x closed / position)."""
_AVG_QUANTUM = Decimal(1).scaleb(-18)
"""Average prices are reported to 18 decimals."""


def _fmt(x: Decimal) -> str:
    """A plain decimal string without exponent or trailing zeros (``"0"`` for zero)."""
    if not x:
        return "0"
    s = format(x.normalize(_CTX), "f")
    return s


@dataclass(slots=True)
class Position:
    """One symbol's position."""

    symbol: str
    qty: Decimal = ZERO
    """Signed base position (long > 0)."""
    cost: Decimal = ZERO
    """Cost basis in quote: ``qty x average entry price`` (signed like ``qty``)."""
    realized: Decimal = ZERO
    """Realized PnL in quote, before fees."""
    fees: Decimal = ZERO
    """Fees in quote (base fees at the fill price); other fee assets are in ``Ledger.fees_other``."""
    fills: int = 0
    """Fills applied."""

    @property
    def avg_price(self) -> Decimal:
        """Average entry price of the open position (0 when flat), to 18 decimals."""
        if not self.qty:
            return ZERO
        with localcontext(_CTX):
            return (self.cost / self.qty).quantize(_AVG_QUANTUM, rounding=ROUND_HALF_EVEN)

    def unrealized(self, mark: Decimal) -> Decimal:
        """Unrealized PnL at ``mark`` in quote (exact): ``qty x mark - cost``."""
        with localcontext(_CTX):
            return self.qty * mark - self.cost

    def trade(self, delta: Decimal, price: Decimal) -> Decimal:
        """Apply a signed base change at ``price``; return the PnL it realized."""
        with localcontext(_CTX):
            if not delta:
                return ZERO
            pos = self.qty
            if not pos or (pos > 0) == (delta > 0):  # opens or increases
                self.qty = pos + delta
                self.cost += delta * price
                return ZERO
            sign = 1 if pos > 0 else -1
            closed = min(abs(delta), abs(pos))
            if closed == abs(pos):
                removed = self.cost
            else:
                removed = (self.cost * closed / abs(pos)).quantize(_COST_QUANTUM, rounding=ROUND_HALF_EVEN)
            pnl = sign * closed * price - removed
            self.realized += pnl
            self.cost -= removed
            self.qty = pos - sign * closed
            rest = abs(delta) - closed
            if rest:  # crossed through zero: the remainder opens at the fill price
                self.qty = -sign * rest
                self.cost = -sign * rest * price
            return pnl

    def snapshot(self) -> dict[str, str]:
        """JSON-ready: position, average price, realized PnL and fees (quote) as decimal strings."""
        return {"position": _fmt(self.qty), "avg_price": _fmt(self.avg_price), "realized_pnl": _fmt(self.realized),
                "fees": _fmt(self.fees)}


@dataclass(slots=True)
class Ledger:
    """Positions per symbol, realized PnL and fees over every applied fill."""

    positions: dict[str, Position] = field(default_factory=dict)
    realized_pnl: Decimal = ZERO
    """Realized PnL in quote over all symbols, before fees."""
    fees: Decimal = ZERO
    """Fees in quote over all symbols (base fees converted at the fill price)."""
    fees_other: dict[str, Decimal] = field(default_factory=dict)
    """Fees paid in assets that are neither the base nor the quote, per asset."""
    seen: set[tuple[str, str]] = field(default_factory=set)
    """``(client_id, trade_id)`` of every applied fill."""

    def apply(self, fill: Fill, side: int, base: str, quote: str, futures: bool = False, *, symbol: str) -> bool:
        """Apply one fill of an order on ``symbol`` (``side`` 1 buy, -1 sell; ``base``/``quote`` its assets);
        False (and nothing changes) when this ``(client_id, trade_id)`` was already applied. Raises ValueError
        on a bad side, a non-positive quantity or price, or a non-finite fee."""
        if side not in (1, -1):
            raise ValueError(f"side must be 1 or -1, not {side!r}")
        if not (fill.qty.is_finite() and fill.qty > 0 and fill.price.is_finite() and fill.price > 0):
            raise ValueError(f"fill {fill.client_id}/{fill.trade_id}: bad qty {fill.qty} or price {fill.price}")
        if not fill.fee.is_finite():
            raise ValueError(f"fill {fill.client_id}/{fill.trade_id}: bad fee {fill.fee}")
        key = (fill.client_id, fill.trade_id)
        if key in self.seen:
            return False
        self.seen.add(key)
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position(symbol)
        asset = fill.fee_asset.upper()
        with localcontext(_CTX):
            delta = side * fill.qty
            fee_quote = ZERO
            if fill.fee:
                if asset == quote.upper():
                    fee_quote = fill.fee
                elif asset == base.upper():
                    fee_quote = fill.fee * fill.price
                    if not futures:
                        delta -= fill.fee  # the fee is taken out of the base holding
                else:
                    self.fees_other[asset] = self.fees_other.get(asset, ZERO) + fill.fee
            self.realized_pnl += pos.trade(delta, fill.price)
            pos.fees += fee_quote
            self.fees += fee_quote
        pos.fills += 1
        return True

    def position(self, symbol: str) -> Decimal:
        """Signed base position of ``symbol`` (0 when never traded)."""
        pos = self.positions.get(symbol)
        return pos.qty if pos is not None else ZERO

    @property
    def net_pnl(self) -> Decimal:
        """Realized PnL minus fees in quote (fees in other assets not included): what ``Risk.on_pnl`` takes."""
        with localcontext(_CTX):
            return self.realized_pnl - self.fees

    def open_symbols(self) -> list[str]:
        """Symbols with a non-zero position."""
        return [s for s, p in self.positions.items() if p.qty]

    def unrealized(self, marks: dict[str, Decimal]) -> Decimal:
        """Unrealized PnL in quote at the given marks (symbols without a mark must be flat)."""
        total = ZERO
        with localcontext(_CTX):
            for s, p in self.positions.items():
                if p.qty:
                    if s not in marks:
                        raise KeyError(f"no mark price for {s} (position {p.qty})")
                    total += p.unrealized(marks[s])
        return total

    def snapshot(self) -> dict:
        """JSON-ready: ``{"positions": {symbol: {"position", "avg_price", "realized_pnl", "fees"}},
        "realized_pnl", "fees", "fees_other": {asset: str}}``, every number a decimal string."""
        return {"positions": {s: p.snapshot() for s, p in self.positions.items()},
                "realized_pnl": _fmt(self.realized_pnl), "fees": _fmt(self.fees),
                "fees_other": {a: _fmt(v) for a, v in self.fees_other.items()}}
