"""The paper venue: an in-process ``VenueClient`` that fills orders against the order books the executor feeds it,
with a fixed latency and no network.

- ``on_book`` keeps each symbol's latest top-of-book levels (the executor feeds its BOOK records);
- ``place`` captures the symbol's book as it is at the decision and schedules the order's arrival at
  ``now + latency``; ``cancel`` schedules a cancel the same way;
- ``poll(now_ns)`` (called on every executor loop) processes what is due: at arrival the order is checked
  (duplicate client id, rules, book, balances) and answered with a ``Reject``, or an ``Ack`` followed, for IOC and
  market orders, by one ``Fill`` per level of the captured book walked within the limit price (at the level's
  price, taker fee) and a ``Done`` (``filled``, or ``expired`` for the unfilled remainder). ``fill_ratio < 1`` caps
  the filled total of an IOC / market order at ``qty x fill_ratio`` floored to the step.
- A post-only order that would cross the captured book is rejected (code ``post_only_would_cross``); otherwise it
  rests, and every later ``on_book`` whose opposite side is at or through its price fills it as maker (at its own
  price, maker fee) up to the size shown at or through that price, until it is filled or canceled.

Events carry the time they became due (``t_ns``): nothing is reported before ``place time + latency``. Prices and
sizes of the fed books are snapped to the instrument's tick and step as exact ``Decimal``. Fees are charged in the
quote asset. Balances follow spot semantics: with ``balances`` given, a buy needs the quote (limit price x qty plus
the fee; market: the walk's cost) and a sell needs the base quantity (no short selling beyond the balance), and a
resting order locks them; ``balances=None`` is unlimited and ``balances()`` reports the net change per asset.
``positions()`` reports the net filled quantity per symbol. ``reduce_only`` is ignored.

Reject codes: ``duplicate`` (with ``duplicate=True``), ``unknown_symbol``, ``symbol_halted``, ``bad_side``,
``bad_kind``, ``bad_qty``, ``qty_below_min``, ``qty_above_max``, ``bad_price``, ``price_out_of_range``,
``notional_below_min``, ``no_book``, ``post_only_would_cross``, ``insufficient_balance``.
"""

from __future__ import annotations

import heapq
import math
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Context, Decimal, InvalidOperation, localcontext

import numpy as np

from execution.rules import Rules
from execution.venue import Ack, Done, Event, Fill, OrderRequest, OrderState, Reject, Status, VenueError

ZERO = Decimal(0)
_CTX = Context(prec=80)
"""Enough digits that no product or sum of venue-sized numbers is rounded."""
_LIVE: frozenset[str] = frozenset({"new", "partially_filled"})


def _dec_cfg(x: float, what: str) -> Decimal:
    """A configuration number as written (its shortest repr)."""
    if not math.isfinite(x):
        raise ValueError(f"{what} must be finite, got {x!r}")
    return Decimal(repr(float(x)))


class _Refused(Exception):
    """An arriving order the venue refuses."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code, self.msg = code, msg


def _parse(s: str | None, code: str, what: str) -> Decimal:
    """A positive finite decimal from the request, or ``_Refused(code)``."""
    try:
        d = Decimal(s)  # type: ignore[arg-type]
    except (InvalidOperation, TypeError, ValueError):
        raise _Refused(code, f"{what} {s!r} is not a number") from None
    if not d.is_finite() or d <= 0:
        raise _Refused(code, f"{what} {s} is not positive")
    return d


@dataclass(frozen=True, slots=True)
class _Book:
    """One symbol's book as fed: float levels, best first (converted to Decimal only when used)."""

    bid_px: np.ndarray
    bid_qty: np.ndarray
    ask_px: np.ndarray
    ask_qty: np.ndarray
    t_ns: int


@dataclass(slots=True)
class _Order:
    req: OrderRequest
    venue_id: str
    qty: Decimal
    price: Decimal | None
    rules: Rules
    filled: Decimal = ZERO
    status: Status = "new"
    fills: list[Fill] = field(default_factory=list)
    lock_asset: str = ""
    lock: Decimal = ZERO
    """Balance still locked by the resting order."""
    lock_per_unit: Decimal = ZERO
    price_f: float = 0.0


class PaperVenue:
    """An in-process venue with no network (see the module docstring). ``clock`` gives monotonic ns (the
    executor's clock; a test may pass its own)."""

    venue = "paper"

    def __init__(self, rules: dict[str, Rules], *, latency_ms: float = 1.0, taker_fee: float = 0.001,
                 maker_fee: float = 0.0, fill_ratio: float = 1.0, balances: dict[str, Decimal] | None = None,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        if not (math.isfinite(latency_ms) and latency_ms >= 0):
            raise ValueError(f"latency_ms must be >= 0, got {latency_ms!r}")
        if not (math.isfinite(fill_ratio) and 0 < fill_ratio <= 1):
            raise ValueError(f"fill_ratio must be in (0, 1], got {fill_ratio!r}")
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._rules = dict(rules)
        self.latency_ns = round(latency_ms * 1_000_000)
        self.taker_fee = _dec_cfg(taker_fee, "taker_fee")
        self.maker_fee = _dec_cfg(maker_fee, "maker_fee")
        self.fill_ratio = _dec_cfg(fill_ratio, "fill_ratio")
        self.limited = balances is not None
        """Balances are checked (else unlimited)."""
        self._bal: dict[str, Decimal] = {a.upper(): Decimal(v) for a, v in (balances or {}).items()}
        self._locked: dict[str, Decimal] = {}
        self._pos: dict[str, Decimal] = {}
        self._clock = clock
        self._wall_offset_ns = time.time_ns() - time.monotonic_ns()
        self._books: dict[str, _Book] = {}
        self._due: list[tuple[int, int, str, tuple]] = []
        self._seq = 0
        self._orders: dict[str, _Order] = {}
        self._resting: dict[str, list[_Order]] = {}
        self._next_order = 0
        self._next_trade = 0
        self.closed = False

    # --- VenueClient ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Nothing to connect."""
        self.closed = False

    def close(self) -> None:
        """Idempotent; resting orders stay as they are."""
        self.closed = True

    def rules(self, symbols: list[str]) -> dict[str, object]:
        """The rules the venue was built with; VenueError for a symbol it does not have."""
        missing = [s for s in symbols if s not in self._rules]
        if missing:
            raise VenueError(self.venue, "unknown_symbol", f"no rules for {', '.join(missing)}")
        return {s: self._rules[s] for s in symbols}

    def place(self, req: OrderRequest) -> int:
        """Capture the symbol's current book and schedule the order's arrival at now + latency; return now."""
        now = self._clock()
        self._schedule(now + self.latency_ns, "place", (req, self._books.get(req.symbol)))
        return now

    def place_many(self, reqs: list[OrderRequest]) -> list[int]:
        """``place`` each in turn."""
        return [self.place(r) for r in reqs]

    def cancel(self, symbol: str, client_id: str) -> None:
        """Schedule a cancel at now + latency: a resting order is then canceled (``Done canceled``); an order
        unknown or already done is left alone (no event)."""
        self._schedule(self._clock() + self.latency_ns, "cancel", (symbol, client_id))

    def order(self, symbol: str, client_id: str, with_fills: bool = True) -> OrderState | None:
        """The venue's view of an order that has arrived (None before its arrival or for an unknown id)."""
        o = self._orders.get(client_id)
        if o is None or o.req.symbol != symbol:
            return None
        return self._state(o, with_fills)

    def open_orders(self, symbols: list[str]) -> list[OrderState]:
        """Resting orders on ``symbols`` (every symbol when empty)."""
        return [self._state(o, False) for s, lst in self._resting.items() if not symbols or s in symbols
                for o in lst]

    def balances(self) -> dict[str, Decimal]:
        """Total per asset (free + locked); with unlimited balances, the net change since start."""
        return dict(self._bal)

    def positions(self) -> dict[str, Decimal]:
        """Net filled base quantity per symbol (buys - sells), non-zero only."""
        return {s: q for s, q in self._pos.items() if q}

    # --- paper-only -------------------------------------------------------------------------------------------

    def on_book(self, symbol: str, bid_px: np.ndarray, bid_qty: np.ndarray, ask_px: np.ndarray,
                ask_qty: np.ndarray, n_bids: int, n_asks: int, now_ns: int) -> None:
        """The symbol's book at ``now_ns`` (levels best first; the first ``n_bids`` / ``n_asks`` are used).
        Processes what is due first, then fills resting post-only orders this book reaches."""
        self.poll(now_ns)
        if symbol not in self._rules:
            return
        book = _Book(np.array(bid_px[:n_bids], dtype=np.float64), np.array(bid_qty[:n_bids], dtype=np.float64),
                     np.array(ask_px[:n_asks], dtype=np.float64), np.array(ask_qty[:n_asks], dtype=np.float64),
                     now_ns)
        self._books[symbol] = book
        resting = self._resting.get(symbol)
        if resting:
            for o in list(resting):
                self._match_resting(o, book, now_ns)

    def poll(self, now_ns: int) -> int:
        """Process every arrival and cancel due at or before ``now_ns``; return the events released."""
        n = 0
        while self._due and self._due[0][0] <= now_ns:
            t, _, kind, args = heapq.heappop(self._due)
            n += self._arrive(t, *args) if kind == "place" else self._cancel(t, *args)
        return n

    # --- internals --------------------------------------------------------------------------------------------

    def _schedule(self, t: int, kind: str, args: tuple) -> None:
        self._seq += 1
        heapq.heappush(self._due, (t, self._seq, kind, args))

    def _emit(self, ev: Event) -> int:
        self.events.put(ev)
        return 1

    def _reject(self, req: OrderRequest, code: str, reason: str, t: int, duplicate: bool = False) -> int:
        return self._emit(Reject(req.client_id, code, reason, t, duplicate))

    def _levels(self, px: np.ndarray, qty: np.ndarray, rules: Rules) -> list[tuple[Decimal, Decimal]]:
        """Float levels snapped onto the tick / step grid, zero sizes dropped."""
        out = []
        for p, q in zip(px.tolist(), qty.tolist(), strict=True):
            if not (math.isfinite(p) and math.isfinite(q) and p > 0 and q > 0):
                continue
            dp = Decimal(round(p / float(rules.tick))) * rules.tick if rules.tick else Decimal(repr(p))
            dq = Decimal(round(q / float(rules.step))) * rules.step if rules.step else Decimal(repr(q))
            if dp > 0 and dq > 0:
                out.append((dp, dq))
        return out

    def _check(self, req: OrderRequest, rules: Rules, book: _Book | None) -> tuple[
            Decimal, Decimal | None, list[tuple[Decimal, Decimal]]]:
        """Validate an arriving order: ``(qty, price, opposite levels)``, or raise ``_Refused``."""
        if not rules.trading:
            raise _Refused("symbol_halted", f"{req.symbol} is not trading")
        if req.side not in (1, -1):
            raise _Refused("bad_side", f"side must be 1 or -1, not {req.side!r}")
        if req.kind not in ("ioc", "market", "post_only"):
            raise _Refused("bad_kind", f"unknown order kind {req.kind!r}")
        qty = _parse(req.qty, "bad_qty", "quantity")
        if not rules.on_qty_grid(qty):
            raise _Refused("bad_qty", f"quantity {req.qty} is not a multiple of the step {rules.step}")
        if rules.min_qty and qty < rules.min_qty:
            raise _Refused("qty_below_min", f"quantity {req.qty} is below the minimum {rules.min_qty}")
        if rules.max_qty and qty > rules.max_qty:
            raise _Refused("qty_above_max", f"quantity {req.qty} is above the maximum {rules.max_qty}")
        price: Decimal | None = None
        if req.kind != "market":
            price = _parse(req.price, "bad_price", "price")
            if not rules.on_price_grid(price):
                raise _Refused("bad_price", f"price {req.price} is not a multiple of the tick {rules.tick}")
            if (rules.min_price and price < rules.min_price) or (rules.max_price and price > rules.max_price):
                raise _Refused("price_out_of_range",
                               f"price {req.price} is outside [{rules.min_price}, {rules.max_price or 'inf'}]")
        levels: list[tuple[Decimal, Decimal]] = []
        if book is not None:
            levels = self._levels(*((book.ask_px, book.ask_qty) if req.side == 1 else (book.bid_px, book.bid_qty)),
                                  rules)
        elif req.kind != "post_only":
            raise _Refused("no_book", f"no book for {req.symbol} at the decision")
        ref = price if price is not None else (levels[0][0] if levels else None)
        if ref is not None and rules.min_notional:
            with localcontext(_CTX):
                if qty * ref < rules.min_notional:
                    raise _Refused("notional_below_min",
                                   f"notional {qty} x {ref} is below the minimum {rules.min_notional}")
        if req.kind == "post_only" and price is not None and levels:
            best = levels[0][0]
            if (best <= price) if req.side == 1 else (best >= price):
                raise _Refused("post_only_would_cross",
                               f"post-only {'buy' if req.side == 1 else 'sell'} at {req.price} would cross the "
                               f"best {'ask' if req.side == 1 else 'bid'} {best}")
        return qty, price, levels

    def _walk(self, side: int, qty: Decimal, price: Decimal | None, levels: list[tuple[Decimal, Decimal]],
              rules: Rules) -> list[tuple[Decimal, Decimal]]:
        """Taker fills ``(price, qty)`` walking ``levels`` within the limit, the total capped by ``fill_ratio``."""
        with localcontext(_CTX):
            cap = qty
            if self.fill_ratio < 1:
                cap = qty * self.fill_ratio
                if rules.step:
                    cap = (cap / rules.step).to_integral_value(rounding=ROUND_FLOOR) * rules.step
            out = []
            left = cap
            for px, size in levels:
                if left <= 0 or (price is not None and (px > price if side == 1 else px < price)):
                    break
                q = min(size, left)
                out.append((px, q))
                left -= q
            return out

    def _free(self, asset: str) -> Decimal:
        return self._bal.get(asset, ZERO) - self._locked.get(asset, ZERO)

    def _add(self, d: dict[str, Decimal], asset: str, amount: Decimal) -> None:
        with localcontext(_CTX):
            d[asset] = d.get(asset, ZERO) + amount

    def _arrive(self, t: int, req: OrderRequest, book: _Book | None) -> int:
        if req.client_id in self._orders:
            return self._reject(req, "duplicate", f"client order id {req.client_id} already used", t, True)
        rules = self._rules.get(req.symbol)
        if rules is None:
            return self._reject(req, "unknown_symbol", f"unknown symbol {req.symbol}", t)
        try:
            qty, price, levels = self._check(req, rules, book)
        except _Refused as e:
            return self._reject(req, e.code, e.msg, t)
        base, quote = rules.base.upper(), rules.quote.upper()
        taker = req.kind != "post_only"
        fills = self._walk(req.side, qty, price, levels, rules) if taker else []
        with localcontext(_CTX):
            rate = self.taker_fee if taker else self.maker_fee
            if req.side == 1:
                lock_asset, per_unit = quote, (price or ZERO) * (1 + rate)
                need = (qty * per_unit if price is not None
                        else sum((p * q * (1 + rate) for p, q in fills), ZERO))
            else:
                lock_asset, per_unit, need = base, Decimal(1), qty
        if self.limited and need > self._free(lock_asset):
            return self._reject(req, "insufficient_balance", f"{lock_asset}: need {need.normalize():f}, free "
                                f"{self._free(lock_asset).normalize():f}", t)
        self._next_order += 1
        o = _Order(req, f"paper-{self._next_order}", qty, price, rules)
        self._orders[req.client_id] = o
        n = self._emit(Ack(req.client_id, o.venue_id, t))
        if taker:
            for px, q in fills:
                n += self._fill(o, px, q, self.taker_fee, False, t)
            o.status = "filled" if o.filled == o.qty else "expired"
            return n + self._emit(Done(req.client_id, o.status, o.filled, t))
        # post-only: rests, its balance locked
        o.lock_asset, o.lock_per_unit, o.price_f = lock_asset, per_unit, float(price)  # type: ignore[arg-type]
        with localcontext(_CTX):
            o.lock = qty * per_unit
        self._add(self._locked, lock_asset, o.lock)
        self._resting.setdefault(req.symbol, []).append(o)
        return n

    def _fill(self, o: _Order, px: Decimal, q: Decimal, rate: Decimal, maker: bool, t: int) -> int:
        """One trade of ``o``: balances, position, the Fill event."""
        base, quote = o.rules.base.upper(), o.rules.quote.upper()
        with localcontext(_CTX):
            fee = px * q * rate
            side = o.req.side
            self._add(self._bal, base, side * q)
            self._add(self._bal, quote, -side * px * q - fee)
            self._add(self._pos, o.req.symbol, side * q)
            o.filled += q
        self._next_trade += 1
        f = Fill(o.req.client_id, o.venue_id, str(self._next_trade), px, q, fee, quote, maker,
                 (t + self._wall_offset_ns) // 1_000_000, t)
        o.fills.append(f)
        return self._emit(f)

    def _match_resting(self, o: _Order, book: _Book, t: int) -> int:
        """Fill a resting post-only order as maker up to the size the book shows at or through its price."""
        side, rules = o.req.side, o.rules
        if side == 1:
            if not len(book.ask_px) or book.ask_px[0] > o.price_f * (1 + 1e-9):
                return 0
            levels = self._levels(book.ask_px, book.ask_qty, rules)
            avail = sum((q for p, q in levels if p <= o.price), ZERO)  # type: ignore[operator]
        else:
            if not len(book.bid_px) or book.bid_px[0] < o.price_f * (1 - 1e-9):
                return 0
            levels = self._levels(book.bid_px, book.bid_qty, rules)
            avail = sum((q for p, q in levels if p >= o.price), ZERO)  # type: ignore[operator]
        with localcontext(_CTX):
            q = min(avail, o.qty - o.filled)
            if q <= 0:
                return 0
            release = q * o.lock_per_unit
            o.lock -= release
            self._add(self._locked, o.lock_asset, -release)
        n = self._fill(o, o.price, q, self.maker_fee, True, t)  # type: ignore[arg-type]
        if o.filled == o.qty:
            o.status = "filled"
            self._unrest(o)
            n += self._emit(Done(o.req.client_id, "filled", o.filled, t))
        else:
            o.status = "partially_filled"
        return n

    def _unrest(self, o: _Order) -> None:
        """Take ``o`` off the book and release what it still locks."""
        lst = self._resting.get(o.req.symbol, [])
        if o in lst:
            lst.remove(o)
        if o.lock:
            self._add(self._locked, o.lock_asset, -o.lock)
            o.lock = ZERO

    def _cancel(self, t: int, symbol: str, client_id: str) -> int:
        o = self._orders.get(client_id)
        if o is None or o.req.symbol != symbol or o.status not in _LIVE:
            return 0
        o.status = "canceled"
        self._unrest(o)
        return self._emit(Done(client_id, "canceled", o.filled, t))

    def _state(self, o: _Order, with_fills: bool) -> OrderState:
        return OrderState(o.req.client_id, o.venue_id, o.req.symbol, o.req.side, o.qty, o.price, o.filled,
                          o.status, list(o.fills) if with_fills else [])
