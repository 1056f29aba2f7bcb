"""Trading accounts of the simulated venues: balances, USD-M positions, orders, matching, fees, client ids, and
the signature and rate-limit arithmetic the order endpoints share. No HTTP here (``orders_kucoin`` and
``orders_binance`` speak the protocols).

Matching never changes the market: orders are matched against ``market.books[i]`` (ticks, lots) read-only, and
our fills are not printed on the public trade streams, so every public stream stays a pure function of the seed.
Rules (EXCHANGES.md sections 1.8, 2.5, 3.4 for the shapes; the matching is the simulator's own model):

* A taking order (limit IOC / GTC, market) walks the opposite side best level first while the level's price is at
  or better than its limit, up to the level's visible lots. Lots our account took stay taken until the book of that
  symbol changes again (next market event), so two orders in a row do not both take the same lots.
* IOC / market remainders expire; a GTC remainder rests. A post-only order that would cross is refused (Binance
  spot, USD-M) or accepted and cancelled at once (KuCoin, ``post_only_cancels``); otherwise it rests.
* A resting order fills completely at its own price, as maker, on the first later market event whose opposite best
  price reaches it (best ask <= buy price, best bid >= sell price).
* Amounts are ``Decimal`` and exact. Fees: KuCoin 0.1 % of the funds in the quote currency, exact (9 decimals on
  BTC-USDT); Binance spot 0.1 % of what the order receives (a buy pays in the base asset, a sell in the quote
  asset), rounded up to 8 decimals; USD-M taker 0.05 % / maker 0.02 % of the notional in USDT, rounded up to 8
  decimals. Spot buys lock ``qty x limit`` (KuCoin: plus the fee), sells lock the base quantity.
* USD-M (one-way mode, leverage 20): a position keeps its signed lots and the exact cost of its open lots; closing
  lots realize ``exit value - their share of the cost`` (share rounded to 8 decimals unless the position closes
  completely, so a round trip realizes exactly proceeds - cost) into the wallet, fees are debited from it.
  Available margin = wallet - |position| x entry / 20 - open orders' notional / 20 (unrealized PnL is ignored).
* A client id is taken once an order with it was accepted on the account (even after the order is done): a second
  order with it is refused. Rejected orders do not take their id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, ROUND_UP, Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from .market import ASK, BID, Book, Instrument, MarketEvent

BUY, SELL = 1, -1
Q8 = Decimal("1e-8")
ZERO = Decimal(0)
LEVERAGE = 20
FEES = {"kucoin": (Decimal("0.001"), Decimal("0.001")), "binance": (Decimal("0.001"), Decimal("0.001")),
        "binance-usdm": (Decimal("0.0005"), Decimal("0.0002"))}
"""Per venue: (taker, maker) fee rate."""
FEE_DP = {"kucoin": None, "binance": 8, "binance-usdm": 8}
"""Fee rounding (up) per venue; None: exact."""
DEFAULT_BALANCES = "USDT=1000000,BTC=10,ETH=100"
TERMINAL = ("FILLED", "CANCELED", "EXPIRED")


class Rejected(Exception):
    """An order the account refuses; ``reason`` is one of ``insufficient``, ``would_take``, ``duplicate``,
    ``reduce_only``, ``not_found``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_balances(text: str) -> dict[str, Decimal]:
    """``"USDT=1000000,BTC=10"`` -> ``{"USDT": Decimal("1000000"), ...}``."""
    out: dict[str, Decimal] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        asset, sep, amount = part.partition("=")
        try:
            value = Decimal(amount.strip())
        except InvalidOperation:
            value = Decimal("NaN")
        if not sep or not asset.strip() or not value.is_finite() or value < 0:
            raise ValueError(f"--balances: {part!r} is not ASSET=AMOUNT")
        out[asset.strip().upper()] = value
    return out


def text(d: Decimal, dp: int | None = None) -> str:
    """A decimal as plain text: ``dp`` fixed decimals, or trimmed (``"0.5"``, ``"0"``) when dp is None."""
    if dp is not None:
        return f"{d.quantize(Decimal(1).scaleb(-dp), rounding=ROUND_HALF_EVEN):f}"
    s = f"{d:f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def units(value: Decimal, unit: Decimal) -> int | None:
    """``value / unit`` when it is a whole number, else None."""
    q = value / unit
    return int(q) if q == q.to_integral_value() else None


def decimal_places(raw: str) -> int:
    """Decimals written in a numeric string (``"0.0100"`` -> 4)."""
    return len(raw.partition(".")[2])


def to_decimal(raw: Any) -> Decimal | None:
    """A finite decimal from a string / number parameter, or None."""
    if isinstance(raw, bool) or raw is None:
        return None
    try:
        d = Decimal(str(raw).strip())
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def check_filters(ins: Instrument, price: Decimal | None, qty: Decimal, max_qty: Decimal, max_price: Decimal,
                  ref: Decimal | None) -> tuple[str, int | None, int]:
    """The instrument's filters (the same figures the simulator publishes in its symbol lists): returns (problem,
    ticks, lots) with problem ``""`` or one of ``price_step``, ``price_range``, ``qty_step``, ``qty_min``,
    ``qty_max``, ``notional``. ``ref`` is the price a market order's notional is judged at (the mid)."""
    px = None
    if price is not None:
        if price <= 0 or price > max_price:
            return "price_range", None, 0
        px = units(price, Decimal(ins.tick_str))
        if px is None:
            return "price_step", None, 0
    if qty <= 0:
        return "qty_min", px, 0
    lots = units(qty, Decimal(ins.lot_str))
    if lots is None:
        return "qty_step", px, 0
    if qty > max_qty:
        return "qty_max", px, lots
    at = price if price is not None else ref
    if at is not None and at * qty < ins.min_notional:
        return "notional", px, lots
    return "", px, lots


# signatures and clocks ---------------------------------------------------------------------------------------------
def kucoin_sign(secret: str, payload: str) -> str:
    """base64(HMAC-SHA256(secret, payload)): KC-API-SIGN and the v2/v3 KC-API-PASSPHRASE."""
    return base64.b64encode(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()).decode()


def binance_sign(secret: str, payload: str) -> str:
    """Hex HMAC-SHA256(secret, payload): Binance REST and WS-API HMAC keys."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def ws_payload(params: dict[str, Any]) -> str:
    """Binance WS-API signature payload: every param but ``signature``, sorted by name, ``k=v`` joined by ``&``."""
    return "&".join(f"{k}={param_text(v)}" for k, v in sorted(params.items()) if k != "signature")


def param_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def timestamp_ok(ts: int, sim_now_ms: int, window_ms: int, ahead_ms: int, skew_ms: int = 0) -> bool:
    """True when ``ts`` is at most ``ahead_ms`` ahead of and ``window_ms`` behind the simulator's clock or the wall
    clock (clients may sync to either: ``/time`` gives the simulated one, which drifts with ``--speed``), both
    moved by the venue's ``clock_skew`` fault ``skew_ms``."""
    wall = int(time.time() * 1000)
    return any(now + skew_ms - window_ms <= ts < now + skew_ms + ahead_ms for now in (sim_now_ms, wall))


class Window:
    """A counter over fixed wall-clock windows of ``span_ms`` aligned to the epoch (as Binance's intervals)."""

    def __init__(self, limit: int, span_ms: int) -> None:
        self.limit, self.span_ms = limit, span_ms
        self.start, self.n = 0, 0

    def _roll(self, now_ms: int) -> None:
        start = now_ms - now_ms % self.span_ms
        if start != self.start:
            self.start, self.n = start, 0

    def count(self, now_ms: int) -> int:
        self._roll(now_ms)
        return self.n

    def full(self, now_ms: int, weight: int = 1) -> bool:
        """Would adding ``weight`` pass the limit?"""
        return self.count(now_ms) + weight > self.limit

    def add(self, now_ms: int, weight: int = 1) -> None:
        self._roll(now_ms)
        self.n += weight

    def reset_ms(self, now_ms: int) -> int:
        """Milliseconds until the current window ends."""
        return self.span_ms - now_ms % self.span_ms


def wall_ms() -> int:
    return int(time.time() * 1000)


# orders ------------------------------------------------------------------------------------------------------------
@dataclass
class OrderSpec:
    """A validated order: ``px`` in ticks (None: market), ``lots`` in lots; ``tif`` ``GTC`` / ``IOC`` / ``POST``."""

    inst: int
    side: int
    lots: int
    px: int | None
    tif: str
    client_id: str
    reduce_only: bool = False
    type_name: str = ""
    """The venue's own order type text (``LIMIT_MAKER``, ``limit``...), echoed back in responses."""


@dataclass(eq=False)
class Fill:
    """One execution of one of our orders."""

    trade_id: int
    order: Order
    px: int
    lots: int
    price: Decimal
    qty: Decimal
    quote: Decimal
    fee: Decimal
    fee_asset: str
    maker: bool
    t_ms: int
    realized: Decimal = ZERO
    counter_id: int = 0


@dataclass(eq=False)
class Order:
    """One accepted order and its state."""

    id: int
    spec: OrderSpec
    ins: Instrument
    t_ms: int
    status: str = "NEW"
    """Binance terms: NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED."""
    filled: int = 0
    quote: Decimal = ZERO
    fee: Decimal = ZERO
    fee_asset: str = ""
    locked: Decimal = ZERO
    updated_ms: int = 0
    resting: bool = False
    fills: list[Fill] = field(default_factory=list)
    cancel_id: str = ""
    """Binance spot: the client id of the cancel request (``c`` of the CANCELED report, ``C`` the original)."""

    @property
    def client_id(self) -> str:
        return self.spec.client_id

    @property
    def side(self) -> int:
        return self.spec.side

    @property
    def left(self) -> int:
        return self.spec.lots - self.filled

    @property
    def active(self) -> bool:
        return self.status not in TERMINAL


@dataclass(frozen=True, eq=False)
class Update:
    """A change of an order for the user streams, with the order's figures at that moment. ``kind``: ``new``,
    ``trade``, ``open`` (rests on the book), ``canceled``, ``expired``."""

    kind: str
    order: Order
    status: str
    filled: int
    quote: Decimal
    fee: Decimal
    t_ms: int
    fill: Fill | None = None


@dataclass
class Position:
    """USD-M one-way position: signed lots and the exact cost of the open lots."""

    lots: int = 0
    cost: Decimal = ZERO
    realized: Decimal = ZERO
    updated_ms: int = 0


class Account:
    """One venue's account (``kucoin``, ``binance`` spot or ``binance-usdm``)."""

    def __init__(self, venue: str, instruments: list[Instrument], books: list[Book], balances: dict[str, Decimal],
                 order_id_base: int, trade_id_base: int) -> None:
        self.venue = venue
        self.futures = venue == "binance-usdm"
        self.instruments, self.books = instruments, books
        self.taker_rate, self.maker_rate = FEES[venue]
        self.fee_dp = FEE_DP[venue]
        self.post_only_cancels = venue == "kucoin"
        self.free: dict[str, Decimal] = {}
        self.locked: dict[str, Decimal] = {}
        self.wallet = ZERO
        if self.futures:
            self.wallet = balances.get("USDT", ZERO)
        else:
            self.free = dict(balances)
            for ins in instruments:
                for asset in (ins.base, ins.quote):
                    self.free.setdefault(asset, ZERO)
            self.locked = dict.fromkeys(self.free, ZERO)
        self.positions = [Position() for _ in instruments]
        self.orders: dict[int, Order] = {}
        self.by_client: dict[str, Order] = {}
        self.client_ids: Counter[str] = Counter()
        """Every client id seen on a placement -> accepted placements with it."""
        self.resting: list[list[Order]] = [[] for _ in instruments]
        self.fills: list[Fill] = []
        self.fees: dict[str, Decimal] = {}
        self.taken: list[tuple[int, dict[tuple[int, int], int]]] = [(-1, {}) for _ in instruments]
        self.next_order = order_id_base
        self.next_trade = trade_id_base
        self.id_text: Any = str
        """How the venue writes an order id (KuCoin: 24 hex digits)."""
        self.listeners: list[Any] = []
        """Callables ``(updates) -> None`` that publish on the venue's user streams."""
        self.updated_ms = 0

    # queries -------------------------------------------------------------------------------------------------------
    def qty(self, ins: Instrument, lots: int) -> Decimal:
        return Decimal(ins.lot_str) * lots

    def price(self, ins: Instrument, ticks: int) -> Decimal:
        return Decimal(ins.tick_str) * ticks

    def mid(self, inst: int) -> Decimal | None:
        book = self.books[inst]
        b, a = book.best_bid(), book.best_ask()
        if b is None or a is None:
            return None
        return self.price(self.instruments[inst], b + a) / 2

    def order(self, client_id: str | None = None, order_id: int | None = None) -> Order | None:
        if client_id:
            return self.by_client.get(client_id)
        return self.orders.get(order_id) if order_id is not None else None

    def open_orders(self, inst: int | None = None) -> list[Order]:
        return [o for i, rest in enumerate(self.resting) if inst is None or i == inst for o in rest]

    def used_margin(self) -> Decimal:
        used = ZERO
        for pos in self.positions:
            used += pos.cost / LEVERAGE
        for o in self.open_orders():
            used += self.price(o.ins, o.spec.px or 0) * self.qty(o.ins, o.left) / LEVERAGE
        return used

    def available(self) -> Decimal:
        """USD-M: wallet minus the margin of positions and open orders."""
        return self.wallet - self.used_margin()

    def entry_price(self, inst: int) -> Decimal:
        pos = self.positions[inst]
        if not pos.lots:
            return ZERO
        return (pos.cost / self.qty(self.instruments[inst], abs(pos.lots))).quantize(Q8, ROUND_HALF_EVEN)

    def unrealized(self, inst: int) -> Decimal:
        pos, mid = self.positions[inst], self.mid(inst)
        if not pos.lots or mid is None:
            return ZERO
        value = mid * self.qty(self.instruments[inst], abs(pos.lots))
        return (value - pos.cost if pos.lots > 0 else pos.cost - value).quantize(Q8, ROUND_HALF_EVEN)

    def note(self, client_id: str) -> None:
        """Record a client id seen on a placement (accepted or not)."""
        self.client_ids[client_id] += 0

    # matching ------------------------------------------------------------------------------------------------------
    def _taken(self, inst: int) -> dict[tuple[int, int], int]:
        seq, taken = self.taken[inst]
        if seq != self.books[inst].seq:
            taken = {}
            self.taken[inst] = (self.books[inst].seq, taken)
        return taken

    def crosses(self, spec: OrderSpec) -> bool:
        book = self.books[spec.inst]
        if spec.side == BUY:
            a = book.best_ask()
            return a is not None and spec.px is not None and spec.px >= a
        b = book.best_bid()
        return b is not None and spec.px is not None and spec.px <= b

    def walk(self, spec: OrderSpec, cap: int) -> list[tuple[int, int]]:
        """(ticks, lots) the order would take now, best first, at most ``cap`` lots."""
        opp = ASK if spec.side == BUY else BID
        taken = self._taken(spec.inst)
        out: list[tuple[int, int]] = []
        left = cap
        for px, lots in self.books[spec.inst].levels(opp):
            if left <= 0 or (spec.px is not None and (px > spec.px if spec.side == BUY else px < spec.px)):
                break
            n = min(lots - taken.get((opp, px), 0), left)
            if n > 0:
                out.append((px, n))
                left -= n
        return out

    def _fee(self, amount: Decimal, maker: bool) -> Decimal:
        fee = amount * (self.maker_rate if maker else self.taker_rate)
        return fee if self.fee_dp is None else fee.quantize(Decimal(1).scaleb(-self.fee_dp), ROUND_UP)

    def _buy_lock(self, ins: Instrument, px: int, lots: int) -> Decimal:
        """Quote a spot buy of ``lots`` at ``px`` holds (KuCoin: with the taker fee)."""
        funds = self.price(ins, px) * self.qty(ins, lots)
        return funds + funds * self.taker_rate if self.venue == "kucoin" else funds

    def _increase(self, inst: int, side: int, lots: int) -> int:
        """Lots of an order that would open or grow the position (USD-M)."""
        pos = self.positions[inst].lots
        return lots if pos * side >= 0 else max(0, lots - abs(pos))

    def place(self, spec: OrderSpec, t_ms: int, partial: Fraction | None = None) -> tuple[Order, list[Update]]:
        """Accept and match an order, or raise Rejected. ``partial``: take at most that share of the quantity
        (``order_partial`` fault, IOC / market only). Returns the order and its updates (not yet published)."""
        self.note(spec.client_id)
        if spec.client_id in self.by_client:
            raise Rejected("duplicate")
        ins = self.instruments[spec.inst]
        post = spec.tif == "POST"
        if post and self.crosses(spec) and not self.post_only_cancels:
            raise Rejected("would_take")
        cap = spec.lots
        if partial is not None and spec.tif == "IOC":
            cap = int(spec.lots * partial)
        levels = [] if post else self.walk(spec, cap)
        self._check_funds(spec, ins, levels)
        o = Order(self.next_order, spec, ins, t_ms, updated_ms=t_ms)
        self.next_order += 1
        self.orders[o.id] = o
        self.by_client[spec.client_id] = o
        self.client_ids[spec.client_id] += 1
        self._lock(o, levels)
        ups = [self._update("new", o, t_ms)]
        if post and self.crosses(spec):  # KuCoin: accepted, then cancelled at once
            ups.append(self._finish(o, "CANCELED", t_ms))
            return o, ups
        taken = self._taken(spec.inst)
        opp = ASK if spec.side == BUY else BID
        for px, lots in levels:
            taken[(opp, px)] = taken.get((opp, px), 0) + lots
            ups.append(self._execute(o, px, lots, False, t_ms))
        if o.left and spec.tif in ("GTC", "POST"):
            o.resting = True
            self.resting[spec.inst].append(o)
            self._relock(o)
            ups.append(self._update("open", o, t_ms))
        elif o.left:
            ups.append(self._finish(o, "EXPIRED", t_ms))
        else:
            self._relock(o)
        self.updated_ms = t_ms
        return o, ups

    def _check_funds(self, spec: OrderSpec, ins: Instrument, levels: list[tuple[int, int]]) -> None:
        if self.futures:
            pos = self.positions[spec.inst].lots
            if spec.reduce_only and (pos * spec.side >= 0 or spec.lots > abs(pos)):
                raise Rejected("reduce_only")
            inc = self._increase(spec.inst, spec.side, spec.lots)
            if not inc:
                return
            if spec.px is not None:
                notional = self.price(ins, spec.px) * self.qty(ins, spec.lots)
            else:
                notional = sum((self.price(ins, p) * self.qty(ins, n) for p, n in levels), ZERO)
            need = notional * inc / spec.lots / LEVERAGE
            if need > self.available():
                raise Rejected("insufficient")
            return
        if spec.side == SELL:
            if self.qty(ins, spec.lots) > self.free.get(ins.base, ZERO):
                raise Rejected("insufficient")
        elif self._spot_buy_need(spec, ins, levels) > self.free.get(ins.quote, ZERO):
            raise Rejected("insufficient")

    def _spot_buy_need(self, spec: OrderSpec, ins: Instrument, levels: list[tuple[int, int]]) -> Decimal:
        if spec.px is not None:
            return self._buy_lock(ins, spec.px, spec.lots)
        return sum((self._buy_lock(ins, p, n) for p, n in levels), ZERO)

    def _lock(self, o: Order, levels: list[tuple[int, int]]) -> None:
        if self.futures:
            return
        ins = o.ins
        if o.side == SELL:
            asset, amount = ins.base, self.qty(ins, o.spec.lots)
        else:
            asset, amount = ins.quote, self._spot_buy_need(o.spec, ins, levels)
        self.free[asset] -= amount
        self.locked[asset] += amount
        o.locked = amount

    def _relock(self, o: Order) -> None:
        """Release what the order's remainder no longer needs (spot)."""
        if self.futures:
            return
        ins = o.ins
        if o.side == SELL:
            asset, need = ins.base, self.qty(ins, o.left) if o.resting else ZERO
        else:
            asset = ins.quote
            need = self._buy_lock(ins, o.spec.px, o.left) if o.spec.px is not None and o.resting else ZERO
        extra = o.locked - need
        self.locked[asset] -= extra
        self.free[asset] += extra
        o.locked = need

    def _execute(self, o: Order, px: int, lots: int, maker: bool, t_ms: int) -> Update:
        ins = o.ins
        price, qty = self.price(ins, px), self.qty(ins, lots)
        quote = price * qty
        realized = ZERO
        if self.futures:
            fee, fee_asset = self._fee(quote, maker), ins.quote
            realized = self._position(o.spec.inst, o.side, px, lots, t_ms)
            self.wallet += realized - fee
        elif self.venue == "kucoin":
            fee, fee_asset = self._fee(quote, maker), ins.quote
            if o.side == BUY:
                self._spend(o, ins.quote, quote + fee)
                self.free[ins.base] += qty
            else:
                self._spend(o, ins.base, qty)
                self.free[ins.quote] += quote - fee
        elif o.side == BUY:
            fee, fee_asset = self._fee(qty, maker), ins.base
            self._spend(o, ins.quote, quote)
            self.free[ins.base] += qty - fee
        else:
            fee, fee_asset = self._fee(quote, maker), ins.quote
            self._spend(o, ins.base, qty)
            self.free[ins.quote] += quote - fee
        f = Fill(self.next_trade, o, px, lots, price, qty, quote, fee, fee_asset, maker, t_ms, realized,
                 counter_id=self.next_trade * 2 + 1)
        self.next_trade += 1
        o.filled += lots
        o.quote += quote
        o.fee += fee
        o.fee_asset = fee_asset
        o.fills.append(f)
        o.status = "FILLED" if not o.left else "PARTIALLY_FILLED"
        o.updated_ms = t_ms
        self.fills.append(f)
        self.fees[fee_asset] = self.fees.get(fee_asset, ZERO) + fee
        return self._update("trade", o, t_ms, f)

    def _spend(self, o: Order, asset: str, amount: Decimal) -> None:
        o.locked -= amount
        self.locked[asset] -= amount

    def _position(self, inst: int, side: int, px: int, lots: int, t_ms: int) -> Decimal:
        """Apply a USD-M fill to the position; returns the realized PnL."""
        ins, pos = self.instruments[inst], self.positions[inst]
        price = self.price(ins, px)
        pos.updated_ms = t_ms
        if pos.lots * side >= 0:
            pos.lots += side * lots
            pos.cost += price * self.qty(ins, lots)
            return ZERO
        close = min(lots, abs(pos.lots))
        share = pos.cost if close == abs(pos.lots) else (pos.cost * close / abs(pos.lots)).quantize(Q8)
        value = price * self.qty(ins, close)
        realized = value - share if pos.lots > 0 else share - value
        pos.lots += side * close
        pos.cost -= share
        if lots > close:
            pos.lots += side * (lots - close)
            pos.cost = price * self.qty(ins, lots - close)
        pos.realized += realized
        return realized

    def _finish(self, o: Order, status: str, t_ms: int) -> Update:
        o.status = status
        o.updated_ms = t_ms
        if o.resting:
            o.resting = False
            self.resting[o.spec.inst].remove(o)
        self._relock(o)
        return self._update("canceled" if status == "CANCELED" else "expired", o, t_ms)

    def _update(self, kind: str, o: Order, t_ms: int, fill: Fill | None = None) -> Update:
        return Update(kind, o, o.status, o.filled, o.quote, o.fee, t_ms, fill)

    def cancel(self, o: Order | None, t_ms: int) -> tuple[Order, list[Update]]:
        """Cancel a resting order, or raise Rejected("not_found")."""
        if o is None or not o.resting:
            raise Rejected("not_found")
        ups = [self._finish(o, "CANCELED", t_ms)]
        self.updated_ms = t_ms
        return o, ups

    def on_event(self, ev: MarketEvent) -> list[Update]:
        """Fill the resting orders of the event's symbol that the opposite best price reached."""
        rest = self.resting[ev.inst]
        if not rest or not ev.top_changed:
            return []
        book = self.books[ev.inst]
        bid, ask = book.best_bid(), book.best_ask()
        t_ms = ev.t_us // 1000
        ups: list[Update] = []
        for o in list(rest):
            px = o.spec.px
            assert px is not None
            if (o.side == BUY and ask is not None and ask <= px) or (o.side == SELL and bid is not None and bid >= px):
                if self.futures and o.spec.reduce_only and self._increase(o.spec.inst, o.side, o.left):
                    ups.append(self._finish(o, "EXPIRED", t_ms))
                    continue
                rest.remove(o)
                o.resting = False
                ups.append(self._execute(o, px, o.left, True, t_ms))
                self._relock(o)
        if ups:
            self.updated_ms = t_ms
        return ups

    def publish(self, ups: list[Update]) -> set[Any]:
        """Hand updates to the venue's user-stream publishers; returns the connections they queued frames on."""
        conns: set[Any] = set()
        if ups:
            for fn in self.listeners:
                conns |= fn(ups)
        return conns

    # report --------------------------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """``GET /_sim/accounts`` entry: balances, positions, open orders, counts, fees, client ids, fills."""
        out: dict[str, Any] = {}
        if self.futures:
            out["balances"] = {"USDT": {"wallet": text(self.wallet), "available": text(self.available())}}
            out["positions"] = {
                ins.binance: {"amount": text(self.qty(ins, pos.lots)), "entry_price": text(self.entry_price(i)),
                              "cost": text(pos.cost), "realized_pnl": text(pos.realized)}
                for i, (ins, pos) in enumerate(zip(self.instruments, self.positions, strict=True))}
        else:
            out["balances"] = {a: {"free": text(self.free[a]), "locked": text(self.locked[a]),
                                   "total": text(self.free[a] + self.locked[a])} for a in sorted(self.free)}
        out["open_orders"] = [self.describe(o) for o in self.open_orders()]
        out["orders"] = len(self.orders)
        out["fills"] = len(self.fills)
        out["fees"] = {a: text(v) for a, v in sorted(self.fees.items())}
        out["client_ids"] = dict(self.client_ids)
        out["fill_log"] = [{
            "client_id": f.order.client_id, "order_id": self.id_text(f.order.id), "trade_id": f.trade_id,
            "symbol": f.order.ins.symbol, "side": "BUY" if f.order.side == BUY else "SELL", "price": text(f.price),
            "qty": text(f.qty), "quote": text(f.quote), "fee": text(f.fee), "fee_asset": f.fee_asset,
            "maker": f.maker, "realized_pnl": text(f.realized), "time": f.t_ms} for f in self.fills]
        return out

    def describe(self, o: Order) -> dict[str, Any]:
        ins = o.ins
        return {"client_id": o.client_id, "order_id": self.id_text(o.id), "symbol": ins.symbol,
                "side": "BUY" if o.side == BUY else "SELL", "tif": o.spec.tif,
                "price": text(self.price(ins, o.spec.px)) if o.spec.px is not None else None,
                "qty": text(self.qty(ins, o.spec.lots)), "filled": text(self.qty(ins, o.filled)),
                "status": o.status, "locked": text(o.locked)}


class Desk:
    """The three accounts; a market-event listener that fills resting orders."""

    def __init__(self, instruments: list[Instrument], books: list[Book], balances: dict[str, Decimal]) -> None:
        self.accounts = {
            "kucoin": Account("kucoin", instruments, books, balances, 0x66A1_7E2B_D51C_2900_0775_0000,
                              11_029_373_945_659_392),
            "binance": Account("binance", instruments, books, balances, 28_000_000_000, 3_900_000_000),
            "binance-usdm": Account("binance-usdm", instruments, books, balances, 8_389_765_000_000, 5_600_000_000),
        }

    def on_event(self, ev: MarketEvent) -> None:
        for acct in self.accounts.values():
            acct.publish(acct.on_event(ev))

    def snapshot(self) -> dict[str, Any]:
        return {venue: acct.snapshot() for venue, acct in self.accounts.items()}
