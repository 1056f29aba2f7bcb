"""The simulated market: instruments, L2 books, one-minute candles and the seeded event generator.

Prices are integer ticks and sizes integer lots, so books are exact and every venue formats them its own way.
The generator's latent model per instrument: ln ETH-like a random walk ``x``, a spread ``s`` following an
Ornstein-Uhlenbeck process, ln BTC-like ``= c + beta x + s`` (as in ``feeds/synthetic.py``); other symbols walk
on their own. Book events arrive as a Poisson stream in simulated time; each one advances the latent state, moves
one symbol's book toward its latent mid (cancels levels the mid crossed, quotes new ones at a 1-3 tick spread),
changes a few sizes, keeps 50-95 levels a side and sometimes prints a trade that takes liquidity at the top.
Everything is drawn from ``random.Random(seed)`` (history: ``numpy`` seeded with ``(seed, 7)``) in a fixed order,
so the event stream is a pure function of the seed, the start time and the symbol list; wall-clock pacing is the
server's business.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

BID, ASK = 0, 1
US_PER_MIN = 60_000_000


def fixed(n: int, dp: int) -> str:
    """``n * 10**-dp`` as a plain decimal string with exactly ``dp`` decimals."""
    if dp <= 0:
        return str(n * 10 ** -dp)
    sign, n = ("-", -n) if n < 0 else ("", n)
    s = str(n).rjust(dp + 1, "0")
    return f"{sign}{s[:-dp]}.{s[-dp:]}"


def trimmed(n: int, dp: int) -> str:
    """Like ``fixed`` without trailing zeros (KuCoin style: ``"60000.1"``, ``"0"``)."""
    s = fixed(n, dp)
    return s.rstrip("0").rstrip(".") if "." in s else s


def parse_decimal(text: str) -> tuple[int, int]:
    """``"0.001"`` -> ``(1, 3)``: integer units and decimal places (trailing zeros dropped)."""
    whole, _, frac = text.strip().partition(".")
    frac = frac.rstrip("0")
    return int((whole or "0") + frac), len(frac)


def to_units(text: str, dp: int) -> int:
    """A decimal string as an integer count of ``10**-dp`` (rounded half away from zero)."""
    units, d = parse_decimal(text)
    if d <= dp:
        return units * 10 ** (dp - d)
    q, r = divmod(abs(units), 10 ** (d - dp))
    q += 2 * r >= 10 ** (d - dp)
    return q if units >= 0 else -q


@dataclass(frozen=True)
class Instrument:
    """A spot pair as every venue lists it. Price = ticks * tick_units * 10**-price_dp; size likewise in lots."""

    symbol: str
    """KuCoin form, ``BTC-USDT``."""
    base: str
    quote: str
    price_dp: int
    tick_units: int
    size_dp: int
    lot_units: int
    p0: float = 100.0
    """Reference price (latent model anchor; sizes scale with it)."""
    role: str = "solo"
    """``btc`` (cointegrated leg), ``eth`` (random-walk leg) or ``solo`` (own random walk)."""
    min_notional: int = 5
    """Minimum order value in quote units."""

    @property
    def binance(self) -> str:
        return self.base + self.quote

    @property
    def tick(self) -> float:
        return self.tick_units / 10**self.price_dp

    @property
    def tick_str(self) -> str:
        return trimmed(self.tick_units, self.price_dp)

    @property
    def lot_str(self) -> str:
        return trimmed(self.lot_units, self.size_dp)

    def price(self, ticks: int, dp: int | None = None) -> str:
        """Price of ``ticks`` with ``dp`` decimals (default the tick's)."""
        dp = self.price_dp if dp is None else dp
        return fixed(ticks * self.tick_units * 10 ** max(0, dp - self.price_dp), dp)

    def size(self, lots: int, dp: int | None = None) -> str:
        dp = self.size_dp if dp is None else dp
        return fixed(lots * self.lot_units * 10 ** max(0, dp - self.size_dp), dp)

    def kprice(self, ticks: int) -> str:
        """KuCoin style price (no trailing zeros)."""
        return trimmed(ticks * self.tick_units, self.price_dp)

    def ksize(self, lots: int) -> str:
        return trimmed(lots * self.lot_units, self.size_dp)

    def notional(self, units: int, dp: int | None = None) -> str:
        """A ``price units x size units`` product (turnover) as a decimal string."""
        full = self.price_dp + self.size_dp
        dp = full if dp is None else dp
        if dp >= full:
            return fixed(units * 10 ** (dp - full), dp)
        return fixed(units // 10 ** (full - dp), dp)


def make_instrument(symbol: str, tick: str = "0.01", lot: str = "0.001", p0: float = 100.0,
                    role: str = "solo") -> Instrument:
    """An instrument from ``BASE-QUOTE`` and decimal tick / lot strings."""
    base, _, quote = symbol.upper().partition("-")
    if not base or not quote:
        raise ValueError(f"symbol {symbol!r} is not BASE-QUOTE")
    tu, tdp = parse_decimal(tick)
    lu, ldp = parse_decimal(lot)
    return Instrument(f"{base}-{quote}", base, quote, tdp, tu, ldp, lu, p0, role)


CATALOGUE = {
    "BTC-USDT": make_instrument("BTC-USDT", "0.1", "0.00001", 60000.0, "btc"),
    "ETH-USDT": make_instrument("ETH-USDT", "0.01", "0.0001", 3000.0, "eth"),
}
"""Known instruments; any other ``BASE-QUOTE`` gets tick 0.01, lot 0.001 and a price near 100."""


def instrument_for(symbol: str) -> Instrument:
    return CATALOGUE.get(symbol.upper()) or make_instrument(symbol)


class Book:
    """An L2 book: price ticks -> size lots per side, and the sequence of the last change."""

    __slots__ = ("asks", "bids", "seq")

    def __init__(self) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.seq = 0

    def side(self, side: int) -> dict[int, int]:
        return self.bids if side == BID else self.asks

    def best_bid(self) -> int | None:
        return max(self.bids) if self.bids else None

    def best_ask(self) -> int | None:
        return min(self.asks) if self.asks else None

    def top(self) -> tuple[int, int, int, int] | None:
        """(bid ticks, bid lots, ask ticks, ask lots), or None while a side is empty."""
        if not self.bids or not self.asks:
            return None
        b, a = max(self.bids), min(self.asks)
        return b, self.bids[b], a, self.asks[a]

    def levels(self, side: int, limit: int | None = None) -> list[tuple[int, int]]:
        """Levels best first."""
        d = self.side(side)
        prices = sorted(d, reverse=side == BID)[:limit]
        return [(p, d[p]) for p in prices]


@dataclass(slots=True)
class Trade:
    """One print: ``buy`` is the taker's side (buy = took an ask)."""

    id: int
    px: int
    qty: int
    buy: bool
    seq: int
    t_us: int


@dataclass(slots=True)
class MarketEvent:
    """One book event of one instrument: changes ``(side, ticks, lots, seq)`` with seq in
    ``seq_start..seq_end`` (empty when ``seq_start > seq_end``), and maybe a trade."""

    t_us: int
    inst: int
    seq_start: int
    seq_end: int
    changes: list[tuple[int, int, int, int]]
    trade: Trade | None = None
    top_changed: bool = False


class Candles:
    """One-minute candles of one instrument: minute -> [open, high, low, close (ticks), volume (lots),
    turnover (price units x size units), trades, taker-buy volume, taker-buy turnover]."""

    def __init__(self) -> None:
        self.rows: dict[int, list[int]] = {}

    def mark(self, minute: int, px: int) -> None:
        r = self.rows.get(minute)
        if r is None:
            self.rows[minute] = [px, px, px, px, 0, 0, 0, 0, 0]
        else:
            r[1] = max(r[1], px)
            r[2] = min(r[2], px)
            r[3] = px

    def trade(self, minute: int, px: int, qty: int, notional: int, buy: bool) -> None:
        self.mark(minute, px)
        r = self.rows[minute]
        r[4] += qty
        r[5] += notional
        r[6] += 1
        if buy:
            r[7] += qty
            r[8] += notional

    def bars(self, minutes: int, first: int, last: int) -> list[tuple[int, list[int]]]:
        """Bars of ``minutes`` minutes (aligned to the epoch) whose start minute is in [first, last], oldest first."""
        out: list[tuple[int, list[int]]] = []
        span = self.span()
        if span is None:
            return out
        first, last = max(first, span[0] - span[0] % minutes), min(last, span[1])
        start = first - first % minutes
        if start < first:
            start += minutes
        for b in range(start, last + 1, minutes):
            rows = [self.rows[m] for m in range(b, b + minutes) if m in self.rows]
            if not rows:
                continue
            bar = [rows[0][0], max(r[1] for r in rows), min(r[2] for r in rows), rows[-1][3]]
            bar += [sum(r[k] for r in rows) for k in range(4, 9)]
            out.append((b, bar))
        return out

    def span(self) -> tuple[int, int] | None:
        """First and last minute held (rows are added in time order)."""
        if not self.rows:
            return None
        return next(iter(self.rows)), next(reversed(self.rows))


class EventBuilder:
    """Collects one event's level changes while applying them to the book (last size per level wins)."""

    __slots__ = ("book", "changes")

    def __init__(self, book: Book) -> None:
        self.book = book
        self.changes: dict[tuple[int, int], int] = {}

    def set(self, side: int, px: int, lots: int) -> None:
        d = self.book.side(side)
        if lots > 0:
            d[px] = lots
        else:
            d.pop(px, None)
        self.changes[(side, px)] = max(lots, 0)


class Market:
    """Instruments with their books, candles, last trades and trade-id counters."""

    def __init__(self, instruments: list[Instrument]) -> None:
        self.instruments = instruments
        self.books = [Book() for _ in instruments]
        self.candles = [Candles() for _ in instruments]
        self.last_trade: list[Trade | None] = [None] * len(instruments)
        self.trade_count = [0] * len(instruments)
        self._tops: list[tuple[int, int, int, int] | None] = [None] * len(instruments)
        self._index: dict[str, int] = {}
        for i, ins in enumerate(instruments):
            for name in (ins.symbol, ins.binance, ins.binance.lower(), ins.symbol.replace("-", "_")):
                self._index[name] = i

    def find(self, name: str) -> int | None:
        """Index of ``BTC-USDT`` / ``BTCUSDT`` / ``btcusdt``, or None."""
        i = self._index.get(name)
        return i if i is not None else self._index.get(name.upper())

    def finish(self, i: int, t_us: int, eb: EventBuilder, trade: tuple[int, int, bool] | None = None,
               mark_px: int | None = None) -> MarketEvent:
        """Number the builder's changes, record the trade ``(ticks, lots, taker buy)`` and the candle price."""
        book = self.books[i]
        ins = self.instruments[i]
        start = book.seq + 1
        changes: list[tuple[int, int, int, int]] = []
        tseq = book.seq
        for (side, px), lots in eb.changes.items():
            book.seq += 1
            changes.append((side, px, lots, book.seq))
            if trade is not None and px == trade[0] and side == (ASK if trade[2] else BID):
                tseq = book.seq
        ev = MarketEvent(t_us, i, start, book.seq, changes)
        minute = t_us // US_PER_MIN
        if mark_px is not None:
            self.candles[i].mark(minute, mark_px)
        if trade is not None:
            px, qty, buy = trade
            self.trade_count[i] += 1
            ev.trade = Trade(self.trade_count[i], px, qty, buy, tseq, t_us)
            self.last_trade[i] = ev.trade
            self.candles[i].trade(minute, px, qty, px * ins.tick_units * qty * ins.lot_units, buy)
        top = book.top()
        ev.top_changed = top != self._tops[i]
        self._tops[i] = top
        return ev


class EventSource(Protocol):
    """What the server paces: simulated time of the next event (None: no more) and the event itself."""

    market: Market

    def next_time(self) -> int | None: ...

    def step(self) -> MarketEvent: ...


@dataclass
class ModelParams:
    """Latent model and book dynamics."""

    rate_hz: float = 30.0
    """Book events per second of simulated time, per symbol."""
    beta: float = 1.2
    """Cointegration coefficient of ln BTC on ln ETH."""
    vol_bps: float = 1.0
    """Standard deviation of ln ETH's change over one second, bps."""
    solo_vol_bps: float = 1.5
    """The same for symbols outside the pair."""
    spread_sd_bps: float = 10.0
    """Stationary standard deviation of the spread s, bps."""
    spread_half_life_s: float = 1200.0
    """Half-life of the spread's mean reversion, seconds."""
    trade_prob: float = 0.15
    """Probability that an event prints a trade."""
    history_minutes: int = 3000
    """One-minute candles generated before the start."""
    min_levels: int = 50
    max_levels: int = 95
    eth0: float = 3000.0
    btc0: float = 60000.0


@dataclass
class _Latent:
    x: float
    s: float
    solo: list[float] = field(default_factory=list)


class Generator:
    """Seeded synthetic event source (see the module docstring)."""

    def __init__(self, market: Market, seed: int, start_us: int, params: ModelParams | None = None) -> None:
        self.market = market
        self.p = p = params or ModelParams()
        self.seed = seed
        self.start_us = start_us
        n = len(market.instruments)
        self.c = math.log(p.btc0) - p.beta * math.log(p.eth0)
        self.kappa = math.log(2.0) / p.spread_half_life_s
        self.solo_ix = [i for i, ins in enumerate(market.instruments) if ins.role == "solo"]
        self.mu_size = [math.log(3000.0 / ins.p0 * 10**ins.size_dp / ins.lot_units) for ins in market.instruments]
        self.state = self._history()
        self.rng = random.Random(seed)
        for i in range(n):
            self._initial_book(i)
            market.candles[i].mark(start_us // US_PER_MIN, round(self.mid_ticks(i)))
        self.t_last = start_us
        self.t_next = start_us + self._gap()

    # latent model -----------------------------------------------------------------------------------------------
    def _log_mid(self, i: int, x: float, s: float, solo: list[float]) -> float:
        role = self.market.instruments[i].role
        if role == "eth":
            return x
        if role == "btc":
            return self.c + self.p.beta * x + s
        return solo[self.solo_ix.index(i)]

    def _history(self) -> _Latent:
        """Run the latent model at one-second steps over ``history_minutes`` before the start; fill the candles
        (latent mid rounded to the tick, seeded volumes); return the state at the start."""
        p, mk = self.p, self.market
        m_start = self.start_us // US_PER_MIN
        t0_s = (m_start - p.history_minutes) * 60
        n_sec = max(1, math.ceil(self.start_us / 1e6) - t0_s)
        rng = np.random.default_rng([self.seed, 7])
        z = rng.standard_normal((n_sec, 2 + len(self.solo_ix)))
        x = math.log(p.eth0) + np.cumsum(z[:, 0]) * p.vol_bps * 1e-4
        phi = math.exp(-self.kappa)
        sd = p.spread_sd_bps * 1e-4 * math.sqrt(1.0 - phi * phi)
        s = np.empty(n_sec)
        acc = 0.0
        for k, e in enumerate((z[:, 1] * sd).tolist()):
            acc = phi * acc + e
            s[k] = acc
        solo = [math.log(mk.instruments[i].p0) + np.cumsum(z[:, 2 + j]) * p.solo_vol_bps * 1e-4
                for j, i in enumerate(self.solo_ix)]
        n_min = (n_sec + 59) // 60
        for i, ins in enumerate(mk.instruments):
            role = ins.role
            lm = x if role == "eth" else self.c + p.beta * x + s if role == "btc" else solo[self.solo_ix.index(i)]
            ticks = np.rint(np.exp(lm) / ins.tick).astype(np.int64)
            pad = np.concatenate([ticks, np.full(n_min * 60 - n_sec, ticks[-1])]).reshape(n_min, 60)
            trades = rng.poisson(p.rate_hz * p.trade_prob * 60, n_min)
            mean_lots = math.exp(self.mu_size[i]) * 0.3
            vol = np.maximum(1, (trades * mean_lots * rng.lognormal(0.0, 0.3, n_min))).astype(np.int64)
            buy = (vol * rng.uniform(0.3, 0.7, n_min)).astype(np.int64)
            unit = ins.tick_units * ins.lot_units
            rows = mk.candles[i].rows
            cols = zip(pad[:, 0].tolist(), pad.max(axis=1).tolist(), pad.min(axis=1).tolist(), pad[:, -1].tolist(),
                       vol.tolist(), trades.tolist(), buy.tolist(), strict=True)
            for k, (o, h, lo, c, v, n, bv) in enumerate(cols):
                rows[t0_s // 60 + k] = [o, h, lo, c, v, v * c * unit, n, bv, bv * c * unit]
        # the start minute continues live: keep only the seconds before the start in its candle
        return _Latent(float(x[-1]), float(s[-1]), [float(y[-1]) for y in solo])

    def _advance(self, dt: float) -> None:
        st, p, g = self.state, self.p, self.rng.gauss
        sq = math.sqrt(dt)
        st.x += p.vol_bps * 1e-4 * sq * g(0.0, 1.0)
        phi = math.exp(-self.kappa * dt)
        st.s = phi * st.s + p.spread_sd_bps * 1e-4 * math.sqrt(1.0 - phi * phi) * g(0.0, 1.0)
        for j in range(len(st.solo)):
            st.solo[j] += p.solo_vol_bps * 1e-4 * sq * g(0.0, 1.0)

    def mid_ticks(self, i: int) -> float:
        """Latent mid of instrument ``i`` in ticks."""
        st = self.state
        return math.exp(self._log_mid(i, st.x, st.s, st.solo)) / self.market.instruments[i].tick

    # book dynamics ----------------------------------------------------------------------------------------------
    def _lots(self, i: int) -> int:
        return max(1, int(self.rng.lognormvariate(self.mu_size[i], 1.0)))

    def _gap(self) -> int:
        rate = self.p.rate_hz * len(self.market.instruments)
        return max(1, int(self.rng.expovariate(rate) * 1e6))

    def _initial_book(self, i: int) -> None:
        book, rng = self.market.books[i], self.rng
        mt = self.mid_ticks(i)
        w = 1 + int(rng.random() * 3)
        b = math.floor(mt - w / 2)
        a = b + w
        n = (self.p.min_levels + self.p.max_levels) // 2
        for _ in range(n):
            book.bids[b] = self._lots(i)
            book.asks[a] = self._lots(i)
            b -= 1 + int(rng.expovariate(0.7))
            a += 1 + int(rng.expovariate(0.7))

    def step(self) -> MarketEvent:
        """Produce the next event (advances latent state, one book, maybe a trade)."""
        rng, mk = self.rng, self.market
        t = self.t_next
        self._advance((t - self.t_last) / 1e6)
        i = rng.randrange(len(mk.instruments))
        book = mk.books[i]
        eb = EventBuilder(book)
        mt = self.mid_ticks(i)
        bb, ba = book.best_bid(), book.best_ask()
        if bb is None or ba is None or not bb < mt < ba or ba - bb > 3:
            self._reprice(i, eb, mt, bb, ba)
        trade = self._trade(i, eb) if rng.random() < self.p.trade_prob else None
        self._churn(i, eb)
        self._keep_depth(i, eb)
        ev = mk.finish(i, t, eb, trade, round(mt))
        self.t_last = t
        self.t_next = t + self._gap()
        return ev

    def next_time(self) -> int:
        return self.t_next

    def _reprice(self, i: int, eb: EventBuilder, mt: float, bb: int | None, ba: int | None) -> None:
        """Cancel levels the mid crossed; quote the new top at a 1-3 tick spread, filling some ticks behind it."""
        rng, book = self.rng, eb.book
        u = rng.random()
        w = 1 if u < 0.6 else 2 if u < 0.9 else 3
        tb = math.floor(mt - w / 2)
        ta = tb + w
        for px in [px for px in book.asks if px < ta]:
            eb.set(ASK, px, 0)
        for px in [px for px in book.bids if px > tb]:
            eb.set(BID, px, 0)
        if tb not in book.bids:
            if bb is not None:
                for px in range(max(bb + 1, tb - 8), tb):
                    if rng.random() < 0.35:
                        eb.set(BID, px, self._lots(i))
            eb.set(BID, tb, self._lots(i))
        if ta not in book.asks:
            if ba is not None:
                for px in range(ta + 1, min(ba, ta + 9)):
                    if rng.random() < 0.35:
                        eb.set(ASK, px, self._lots(i))
            eb.set(ASK, ta, self._lots(i))

    def _trade(self, i: int, eb: EventBuilder) -> tuple[int, int, bool] | None:
        """A taker takes part or all of the top level on one side."""
        rng, book = self.rng, eb.book
        buy = rng.random() < 0.5
        px = book.best_ask() if buy else book.best_bid()
        if px is None:
            return None
        have = book.side(ASK if buy else BID)[px]
        qty = have if rng.random() < 0.3 else max(1, min(have, int(have * rng.random() ** 2)))
        eb.set(ASK if buy else BID, px, have - qty)
        return px, qty, buy

    def _churn(self, i: int, eb: EventBuilder) -> None:
        """Resize one or two levels near the top (sometimes cancel one), sometimes add a level."""
        rng, book = self.rng, eb.book
        for _ in range(1 + (rng.random() < 0.4)):
            side = BID if rng.random() < 0.5 else ASK
            prices = sorted(book.side(side), reverse=side == BID)
            if not prices:
                continue
            rank = min(len(prices) - 1, int(rng.expovariate(1 / 6)))
            px = prices[rank]
            if rank > 0 and rng.random() < 0.2:
                eb.set(side, px, 0)
            else:
                old = book.side(side)[px]
                new = max(1, int(old * rng.lognormvariate(0.0, 0.5)))
                eb.set(side, px, new if new != old else old + 1)
        if rng.random() < 0.3:
            side = BID if rng.random() < 0.5 else ASK
            d = book.side(side)
            if d:
                best = max(d) if side == BID else min(d)
                px = best - 1 - int(rng.random() * 30) if side == BID else best + 1 + int(rng.random() * 30)
                if px > 0 and px not in d:
                    eb.set(side, px, self._lots(i))

    def _keep_depth(self, i: int, eb: EventBuilder) -> None:
        """Keep min_levels..max_levels levels a side: add deep levels or drop the farthest."""
        rng, book, p = self.rng, eb.book, self.p
        for side in (BID, ASK):
            d = book.side(side)
            while len(d) > p.max_levels:
                eb.set(side, min(d) if side == BID else max(d), 0)
            while len(d) < p.min_levels:
                far = (min(d) if side == BID else max(d)) if d else round(self.mid_ticks(i))
                gap = 1 + int(rng.expovariate(0.5))
                px = far - gap if side == BID else far + gap
                if px <= 0:
                    break
                eb.set(side, px, self._lots(i))
