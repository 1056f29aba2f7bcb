"""Plain-Python, line-by-line port of the seed Go bot (shared/seeds/001_d676f6603a56f020.statarb_signals.go.txt):
the test reference for the bars and stats stages (issue 4).

Names follow the Go code (``MinuteAgg``, ``Ring``, ``buildAligned120``, ``calcStatsFromPrices120``, ...); each
function says which Go function it ports. Leg A plays the seed's BTC-USDT (``rBTC``, ``aggBTC``), leg B its ETH-USDT.
The data structures are the seed's own (a fixed-capacity ring of bars per leg, Go maps rebuilt and sorted on every
computation), so this is the "recompute everything" reference, not a fast implementation.

Translation from the seed's wall clock to EVENT time (docs: /tmp/compute_contract.md, "Stats stage"):

* ``nowMs`` = the tick's event time; the 150 ms compute throttle is measured on it (``throttle_ms``; 0 = compute
  on every tick: the check is skipped, so event times that go backwards across legs never throttle);
* the aligned 5-minute ticker becomes: before the first tick of a new 5-minute bucket of event time (the very
  first tick only sets the bucket), write LOG_5M / LOG_5M_SKIP from the state before that tick; ``at_utc`` = that
  tick's event time, RFC 3339 with milliseconds (every row's ``at_utc`` is the event time of its tick);
* warm-up bars (REST candles) are pushed into the rings before the first tick, as the seed's ``main`` does;
* ticks the bars stage rejects never reach the stats: NaN/inf/<= 0/crossed prices, and late ticks (a minute
  before the leg's current bar or not after its last warm-up minute). The seed's ``runWS`` drops only
  non-positive prices; a stream without such ticks (the parity streams) is unaffected by this filter.

``ring_cap``: the capacity of the per-leg rings. 120 is the seed as written, with its bug (a leg that closes a
minute before the other pushes the oldest common minute out of its ring, so the intersection falls to 119 and the
closed-only window is not available: LOG_5M_SKIP while warm); a large value (``FIXED_CAP``) is the fixed seed that
the compiled stages must equal.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

windowBars = 120  # const windowBars
FIXED_CAP = 10**6
"""A ring capacity that never drops a bar in a test stream: the seed without its skip bug."""


# ====================== Bars / Ring ======================


@dataclass(slots=True)
class Bar:
    """type Bar."""

    MinuteMs: int = 0
    High: float = 0.0
    Low: float = 0.0
    Mean: float = 0.0
    Count: int = 0


class Ring:
    """type Ring: NewRing, Push, Snapshot, Len (the mutex is not needed: one thread)."""

    def __init__(self, capacity: int) -> None:
        self.buf: list[Bar | None] = [None] * capacity
        self.cap = capacity
        self.head = 0
        self.size = 0

    def Push(self, b: Bar) -> None:
        self.buf[self.head] = b
        self.head = (self.head + 1) % self.cap
        if self.size < self.cap:
            self.size += 1

    def Snapshot(self) -> list[Bar]:
        start = (self.head - self.size + self.cap) % self.cap
        # out[i] = buf[(start + i) % cap] for i < size, as two slices
        if start + self.size <= self.cap:
            return self.buf[start:start + self.size]  # type: ignore[return-value]
        return self.buf[start:] + self.buf[:self.head]  # type: ignore[operator]

    def Len(self) -> int:
        return self.size


# ====================== Ticks / Minute Aggregation ======================


class Tick(NamedTuple):
    """type Tick."""

    Symbol: str
    TimeMs: int
    Bid: float
    Ask: float

    def Mid(self) -> float:
        if self.Bid <= 0 or self.Ask <= 0:
            return 0.0
        return 0.5 * (self.Bid + self.Ask)


def minuteStartMs(tsMs: int) -> int:
    return (tsMs // 60000) * 60000


class MinuteAgg:
    """type MinuteAgg: Update returns (closed bar, True) when the tick starts a new minute."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.curMin = 0
        self.high = 0.0
        self.low = 0.0
        self.sum = 0.0
        self.cnt = 0

    def Update(self, t: Tick) -> tuple[Bar, bool]:
        mid = t.Mid()
        if mid <= 0:
            return Bar(), False
        m = minuteStartMs(t.TimeMs)

        if self.curMin == 0:
            self.curMin = m
            self.high, self.low = mid, mid
            self.sum, self.cnt = mid, 1
            return Bar(), False

        if m == self.curMin:
            if mid > self.high:
                self.high = mid
            if mid < self.low:
                self.low = mid
            self.sum += mid
            self.cnt += 1
            return Bar(), False

        closed = Bar(MinuteMs=self.curMin, High=self.high, Low=self.low, Mean=self.sum / float(self.cnt),
                     Count=self.cnt)

        # start new minute
        self.curMin = m
        self.high, self.low = mid, mid
        self.sum, self.cnt = mid, 1
        return closed, True

    def Partial(self) -> tuple[Bar, bool]:
        if self.curMin == 0 or self.cnt == 0:
            return Bar(), False
        return Bar(MinuteMs=self.curMin, High=self.high, Low=self.low, Mean=self.sum / float(self.cnt),
                   Count=self.cnt), True


class Kline(NamedTuple):
    """type Kline (a REST candle)."""

    StartSec: int
    Open: float
    Close: float
    High: float
    Low: float


# ====================== Stats helpers ======================


@dataclass(slots=True)
class Stats:
    """type Stats."""

    Beta: float = 0.0
    Spread: float = 0.0
    Mu: float = 0.0
    Sigma: float = 0.0
    Z: float = 0.0
    Mode: str = ""
    MinMs: int = 0


def meanStd(a: list[float]) -> tuple[float, float]:
    """func meanStd: mean and sample standard deviation (n - 1), sums in order."""
    n = len(a)
    if n == 0:
        return 0.0, 0.0
    mu = 0.0
    for v in a:
        mu += v
    mu /= float(n)
    if n == 1:
        return mu, 0.0
    ss = 0.0
    for v in a:
        d = v - mu
        ss += d * d
    sd = math.sqrt(ss / float(n - 1))
    return mu, sd


def olsBeta(x: list[float], y: list[float]) -> float:
    """func olsBeta: two-pass OLS slope of y on x (1.0 when x has no variance)."""
    n = len(x)
    if n == 0 or n != len(y):
        return 1.0
    sx = sy = 0.0
    for i in range(n):
        sx += x[i]
        sy += y[i]
    mx = sx / float(n)
    my = sy / float(n)

    cov = vx = 0.0
    for i in range(n):
        dx = x[i] - mx
        dy = y[i] - my
        cov += dx * dy
        vx += dx * dx
    if vx == 0:
        return 1.0
    return cov / vx


def calcStatsFromPrices120(btc120: list[float], eth120: list[float]) -> tuple[float, float, float, float, float, bool]:
    """func calcStatsFromPrices120 -> (beta, spread, mu, sigma, z, ok)."""
    if len(btc120) != 120 or len(eth120) != 120:
        return 0.0, 0.0, 0.0, 0.0, 0.0, False
    for i in range(120):
        if btc120[i] <= 0 or eth120[i] <= 0:
            return 0.0, 0.0, 0.0, 0.0, 0.0, False
    log = math.log
    lbtc = [log(v) for v in btc120]
    leth = [log(v) for v in eth120]

    beta = olsBeta(leth, lbtc)

    spreads = [lb - beta * le for lb, le in zip(lbtc, leth, strict=True)]
    mu, sigma = meanStd(spreads)

    spread = spreads[119]
    z = 0.0
    if sigma > 0:
        z = (spread - mu) / sigma
    return beta, spread, mu, sigma, z, True


def _commonMinutes(rBTC: Ring, rETH: Ring) -> tuple[list[int], dict[int, float], dict[int, float]]:
    """The part buildAligned120 and buildAligned120Closed share: maps minute -> mean of each ring's snapshot (a later
    bar of the same minute overwrites), and the sorted minutes present in both."""
    sBTC = rBTC.Snapshot()
    sETH = rETH.Snapshot()

    mB = {b.MinuteMs: b.Mean for b in sBTC}  # a later bar of a minute overwrites, as mB[b.MinuteMs] = b.Mean
    mE = {b.MinuteMs: b.Mean for b in sETH}

    common = [ms for ms in mB if ms in mE]
    common.sort()
    return common, mB, mE


def buildAligned120(rBTC: Ring, rETH: Ring, aggBTC: MinuteAgg,
                    aggETH: MinuteAgg) -> tuple[list[float], list[float], str, int, bool]:
    """func buildAligned120 -> (btc120, eth120, mode, minMs, ok): 119 common closed minutes + both partials when
    the partials are in the same minute, else the last 120 common closed minutes."""
    common, mB, mE = _commonMinutes(rBTC, rETH)

    pbB, okB = aggBTC.Partial()
    pbE, okE = aggETH.Partial()
    usePartial = okB and okE and pbB.MinuteMs == pbE.MinuteMs and pbB.Mean > 0 and pbE.Mean > 0

    if usePartial:
        if len(common) < 119:
            return [], [], "", 0, False
        common = common[len(common) - 119:]
        btc120 = [mB[ms] for ms in common]
        eth120 = [mE[ms] for ms in common]
        btc120.append(pbB.Mean)
        eth120.append(pbE.Mean)
        return btc120, eth120, "119+partial_aligned", pbB.MinuteMs, True

    if len(common) < 120:
        return [], [], "", 0, False
    common = common[len(common) - 120:]
    btc120 = [mB[ms] for ms in common]
    eth120 = [mE[ms] for ms in common]
    return btc120, eth120, "120closed_aligned", common[len(common) - 1], True


def buildAligned120Closed(rBTC: Ring, rETH: Ring) -> tuple[list[float], list[float], int, bool]:
    """func buildAligned120Closed -> (btc120, eth120, minMs, ok): the last 120 common closed minutes."""
    common, mB, mE = _commonMinutes(rBTC, rETH)
    if len(common) < 120:
        return [], [], 0, False
    common = common[len(common) - 120:]
    btc120 = [mB[ms] for ms in common]
    eth120 = [mE[ms] for ms in common]
    return btc120, eth120, common[len(common) - 1], True


# ====================== JSONL logger ======================


def go_float(x: float) -> str:
    """A float64 as Go's encoding/json writes it: shortest repr, plain decimal for 1e-6 <= |x| < 1e21, else 'e'
    notation with a negative exponent's leading zero dropped (1e-07 -> 1e-7; 1e+21 stays)."""
    if math.isnan(x) or math.isinf(x):
        raise ValueError(f"json: unsupported value: {x}")  # Go's encoder fails the whole row
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    r = repr(x)  # Python's repr is the shortest round-trip digits, as Go's 'g'/-1
    a = abs(x)
    if 1e-6 <= a < 1e21:
        s = format(Decimal(r), "f")
        return s.rstrip("0").rstrip(".") if "." in s else s
    mant, _, exp = format(Decimal(r), "e").partition("e")  # Decimal 'e': "1.5e-7"; digits already shortest
    e = int(exp)
    s = f"{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if len(s) >= 4 and s[-4] == "e" and s[-3] == "-" and s[-2] == "0":
        s = s[:-2] + s[-1]
    return s


def at_utc(ms: int) -> str:
    """RFC 3339 UTC with milliseconds: ``2024-08-08T12:00:00.123Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def logRow(atMs: int, action: str, pos: str, st: Stats, pnlPct: float | None, pair: str | None = None) -> str:
    """type LogRow + JSONLLogger.Write: one JSON line (without the newline), the seed's key order, pnl_pct omitted
    when 0 (``omitempty``); ``pair`` is our addition when more than one pair is configured."""
    parts = [f'"at_utc":"{at_utc(atMs)}"', f'"beta":{go_float(st.Beta)}', f'"spread":{go_float(st.Spread)}',
             f'"mu":{go_float(st.Mu)}', f'"sigma":{go_float(st.Sigma)}', f'"z":{go_float(st.Z)}',
             f'"mode":"{st.Mode}"', f'"pos":"{pos}"', f'"action":"{action}"']
    if pnlPct is not None and pnlPct != 0:
        parts.append(f'"pnl_pct":{go_float(pnlPct)}')
    if pair is not None:
        parts.append(f'"pair":"{pair}"')
    return "{" + ",".join(parts) + "}"


# ====================== Trading state + PnL ======================

Flat, LongSpread, ShortSpread = 0, 1, 2
POS_NAMES = {Flat: "FLAT", LongSpread: "LONG_SPREAD", ShortSpread: "SHORT_SPREAD"}


def pnlLogFromSpreads(pos: int, entrySpread: float, curSpread: float) -> float:
    """The log PnL inside func pnlPctFromSpreads."""
    d = curSpread - entrySpread
    if pos == ShortSpread:
        d = -d
    return d


def pnlPctFromSpreads(pos: int, entrySpread: float, curSpread: float) -> float:
    """func pnlPctFromSpreads."""
    return math.exp(pnlLogFromSpreads(pos, entrySpread, curSpread)) - 1.0


class Action(NamedTuple):
    """A row the port wrote, with the tick that caused it (index into the ticks passed to ``run``)."""

    tick: int
    action: str
    pos: str
    stats: Stats
    pnl_pct: float | None
    pnl_log: float
    """ENTER/EXIT: the log PnL of the position (0 on entries); others 0."""
    bid_a: float
    ask_a: float
    bid_b: float
    ask_b: float
    """Latest accepted bid/ask of each leg at that tick."""


@dataclass
class PortResult:
    """What a run of the port produced."""

    closed: dict[str, list[Bar]]
    """Closed live bars per leg symbol, in close order."""
    partial: dict[str, Bar | None]
    """Each leg's open bar at the end."""
    partials: list[tuple[int, Bar]]
    """(tick index, the leg's partial bar after it) for every accepted tick."""
    rows: list[str]
    """The JSONL lines (without newlines)."""
    actions: list[Action]
    """Every row with its tick (LOG_5M rows too)."""
    stats: dict[int, Stats]
    """Tick index -> the intra-minute stats computed at that tick (ticks that passed throttle, freshness, window)."""
    rejected: list[int] = field(default_factory=list)
    """Ticks the bars stage would reject (never reach the stats)."""


# ====================== Main (the event loop of func main, on event time) ======================


class SeedPort:
    """func main's state and per-tick body for one pair, driven by ticks on event time."""

    def __init__(self, sym_a: str = "BTC-USDT", sym_b: str = "ETH-USDT", ring_cap: int = windowBars,
                 entryZ: float = 2.2, exitZ: float = 0.8, freshMs: int = 300, holdMs: int = 1000,
                 calcThrottleMs: int = 150, pair: str | None = None) -> None:
        self.symA, self.symB = sym_a, sym_b
        self.entryZ, self.exitZ = entryZ, exitZ
        self.freshMs, self.holdMs, self.calcThrottleMs = freshMs, holdMs, calcThrottleMs
        self.pair = pair
        # rings
        self.rBTC = Ring(ring_cap)
        self.rETH = Ring(ring_cap)
        self.aggBTC = MinuteAgg(sym_a)
        self.aggETH = MinuteAgg(sym_b)
        # last tick times for freshness
        self.lastBTCms = 0
        self.lastETHms = 0
        # state
        self.holdLongSince = 0
        self.holdShortSince = 0
        self.tradePos = Flat
        self.tradeEntrySpread = 0.0
        self.tradeEntryAtMs = 0
        self.lastCalcAtMs = 0
        # pending closed bars (to detect same-minute close)
        self.pendingBTC: dict[int, Bar] = {}
        self.pendingETH: dict[int, Bar] = {}
        # event-time translation of the aligned 5-minute ticker
        self.bucket5m: int | None = None
        # the bars stage's view: latest bid/ask, last warm-up minute per leg
        self.lastQuote = {sym_a: (0.0, 0.0), sym_b: (0.0, 0.0)}
        self.warmMin = {sym_a: -1, sym_b: -1}
        self.entry: tuple[float, float] = (0.0, 0.0)
        self.res = PortResult({sym_a: [], sym_b: []}, {sym_a: None, sym_b: None}, [], [], [], {})

    # -- warm-up: the REST history part of func main ----------------------------------------------------------------
    def warmup(self, btcK: list[Kline], ethK: list[Kline]) -> None:
        """Align the warm-up candles by start second, keep the last windowBars common ones, push them."""
        mBTC = {k.StartSec: k for k in btcK}
        mETH = {k.StartSec: k for k in ethK}
        secs = sorted(s for s in mBTC if s in mETH)
        if len(secs) > windowBars:
            secs = secs[len(secs) - windowBars:]
        for s in secs:
            kb = mBTC[s]
            ke = mETH[s]
            self.rBTC.Push(Bar(MinuteMs=s * 1000, High=kb.High, Low=kb.Low, Mean=0.5 * (kb.High + kb.Low), Count=1))
            self.rETH.Push(Bar(MinuteMs=s * 1000, High=ke.High, Low=ke.Low, Mean=0.5 * (ke.High + ke.Low), Count=1))
            self.warmMin[self.symA] = self.warmMin[self.symB] = s * 1000

    # -- closures of func main ----------------------------------------------------------------------------------------
    def computeIntra(self, nowMs: int) -> tuple[Stats, bool]:
        """computeIntra: throttle (on event time; 0 disables it) + freshness + buildAligned120 + stats."""
        if self.calcThrottleMs > 0 and nowMs - self.lastCalcAtMs < self.calcThrottleMs:
            return Stats(), False
        self.lastCalcAtMs = nowMs

        if self.lastBTCms == 0 or self.lastETHms == 0:
            return Stats(), False
        d = self.lastBTCms - self.lastETHms
        if d < 0:
            d = -d
        if d > self.freshMs:
            return Stats(), False

        btc120, eth120, mode, minMs, ok = buildAligned120(self.rBTC, self.rETH, self.aggBTC, self.aggETH)
        if not ok:
            return Stats(), False
        beta, spread, mu, sigma, z, ok = calcStatsFromPrices120(btc120, eth120)
        if not ok:
            return Stats(), False
        return Stats(Beta=beta, Spread=spread, Mu=mu, Sigma=sigma, Z=z, Mode=mode, MinMs=minMs), True

    def computeClosed(self) -> tuple[Stats, bool]:
        """computeClosed: stats strictly on closed minutes (for 1m PnL + 5m logs)."""
        btc120, eth120, minMs, ok = buildAligned120Closed(self.rBTC, self.rETH)
        if not ok:
            return Stats(), False
        beta, spread, mu, sigma, z, ok = calcStatsFromPrices120(btc120, eth120)
        if not ok:
            return Stats(), False
        return Stats(Beta=beta, Spread=spread, Mu=mu, Sigma=sigma, Z=z, Mode="120closed_aligned", MinMs=minMs), True

    def writeLog(self, i: int, nowMs: int, action: str, pos: str, st: Stats, pnlPct: float | None,
                 pnlLog: float = 0.0) -> None:
        """func writeLog (at_utc = the tick's event time), remembering the row's tick."""
        self.res.rows.append(logRow(nowMs, action, pos, st, pnlPct, self.pair))
        qa, qb = self.lastQuote[self.symA], self.lastQuote[self.symB]
        self.res.actions.append(Action(i, action, pos, st, pnlPct, pnlLog, qa[0], qa[1], qb[0], qb[1]))

    def printPnLClosed(self, i: int, nowMs: int, closedMinuteMs: int) -> None:
        """printPnLClosed: PNL_1M with closed-only stats while in a position."""
        if self.tradePos == Flat:
            return
        st, ok = self.computeClosed()
        if not ok:
            return
        p = pnlPctFromSpreads(self.tradePos, self.tradeEntrySpread, st.Spread)
        self.writeLog(i, nowMs, "PNL_1M", POS_NAMES[self.tradePos], st, p)

    def log5m(self, i: int, nowMs: int) -> None:
        """case <-log5mCh: ALWAYS write something."""
        st, ok = self.computeClosed()
        if not ok:
            self.writeLog(i, nowMs, "LOG_5M_SKIP", POS_NAMES[self.tradePos], Stats(Mode="skip"), None)
            return
        self.writeLog(i, nowMs, "LOG_5M", POS_NAMES[self.tradePos], st, None)

    # -- the bars stage's filter (see the module docstring) ------------------------------------------------------------
    def accepts(self, t: Tick) -> bool:
        if not (math.isfinite(t.Bid) and math.isfinite(t.Ask)) or t.Bid <= 0 or t.Ask <= 0 or t.Bid >= t.Ask:
            return False
        agg = self.aggBTC if t.Symbol == self.symA else self.aggETH
        m = minuteStartMs(t.TimeMs)
        return not ((agg.curMin != 0 and m < agg.curMin) or m <= self.warmMin[t.Symbol])

    # -- case t := <-ticks -----------------------------------------------------------------------------------------
    def onTick(self, i: int, t: Tick) -> None:
        """One tick of the seed's select loop (plus the 5-minute log it would have written before it)."""
        if t.Symbol not in (self.symA, self.symB):
            return
        if not self.accepts(t):
            self.res.rejected.append(i)
            return
        bucket = t.TimeMs // 300000
        if self.bucket5m is None:
            self.bucket5m = bucket
        elif bucket > self.bucket5m:
            self.bucket5m = bucket
            self.log5m(i, t.TimeMs)
        self.lastQuote[t.Symbol] = (t.Bid, t.Ask)

        # update freshness timestamps
        if t.Symbol == self.symA:
            self.lastBTCms = t.TimeMs
        elif t.Symbol == self.symB:
            self.lastETHms = t.TimeMs

        # update aggregators and push closed bars, detect same-minute close for 1m PnL
        if t.Symbol == self.symA:
            bar, ok = self.aggBTC.Update(t)
            if ok:
                self.rBTC.Push(bar)
                self.res.closed[self.symA].append(bar)
                self.pendingBTC[bar.MinuteMs] = bar
                if bar.MinuteMs in self.pendingETH:
                    del self.pendingBTC[bar.MinuteMs]
                    del self.pendingETH[bar.MinuteMs]
                    self.printPnLClosed(i, t.TimeMs, bar.MinuteMs)
            self.res.partials.append((i, self.aggBTC.Partial()[0]))
        elif t.Symbol == self.symB:
            bar, ok = self.aggETH.Update(t)
            if ok:
                self.rETH.Push(bar)
                self.res.closed[self.symB].append(bar)
                self.pendingETH[bar.MinuteMs] = bar
                if bar.MinuteMs in self.pendingBTC:
                    del self.pendingBTC[bar.MinuteMs]
                    del self.pendingETH[bar.MinuteMs]
                    self.printPnLClosed(i, t.TimeMs, bar.MinuteMs)
            self.res.partials.append((i, self.aggETH.Partial()[0]))

        # compute stats and fire signals ASAP (intra-minute)
        nowMs = t.TimeMs
        st, ok = self.computeIntra(nowMs)
        if not ok:
            return
        self.res.stats[i] = st

        absZ = st.Z
        if absZ < 0:
            absZ = -absZ

        if self.tradePos == Flat:
            if st.Z >= self.entryZ:
                if self.holdShortSince == 0:
                    self.holdShortSince = nowMs
                self.holdLongSince = 0
                if self.holdMs == 0 or nowMs - self.holdShortSince >= self.holdMs:
                    self.tradePos = ShortSpread
                    self.tradeEntrySpread = st.Spread
                    self.tradeEntryAtMs = nowMs
                    self.holdShortSince, self.holdLongSince = 0, 0
                    self.writeLog(i, nowMs, "ENTER_SHORT", POS_NAMES[self.tradePos], st, None)
            elif st.Z <= -self.entryZ:
                if self.holdLongSince == 0:
                    self.holdLongSince = nowMs
                self.holdShortSince = 0
                if self.holdMs == 0 or nowMs - self.holdLongSince >= self.holdMs:
                    self.tradePos = LongSpread
                    self.tradeEntrySpread = st.Spread
                    self.tradeEntryAtMs = nowMs
                    self.holdShortSince, self.holdLongSince = 0, 0
                    self.writeLog(i, nowMs, "ENTER_LONG", POS_NAMES[self.tradePos], st, None)
            else:
                self.holdShortSince, self.holdLongSince = 0, 0
        else:  # case LongSpread, ShortSpread
            if absZ <= self.exitZ:
                p = pnlPctFromSpreads(self.tradePos, self.tradeEntrySpread, st.Spread)
                d = pnlLogFromSpreads(self.tradePos, self.tradeEntrySpread, st.Spread)
                self.writeLog(i, nowMs, "EXIT", POS_NAMES[self.tradePos], st, p, d)

                self.tradePos = Flat
                self.tradeEntrySpread = 0.0
                self.tradeEntryAtMs = 0
                self.holdShortSince, self.holdLongSince = 0, 0

    def run(self, ticks: list[Tick] | list[tuple[str, int, float, float]]) -> PortResult:
        """Feed every tick in order; returns the result (call once)."""
        for i, t in enumerate(ticks):
            self.onTick(i, t if isinstance(t, Tick) else Tick(*t))
        self.res.partial = {self.symA: self.aggBTC.Partial()[0] if self.aggBTC.cnt else None,
                            self.symB: self.aggETH.Partial()[0] if self.aggETH.cnt else None}
        return self.res


def run_port(ticks: list[Tick] | list[tuple[str, int, float, float]], ring_cap: int = FIXED_CAP,
             throttle_ms: int = 150, warm: tuple[list[Kline], list[Kline]] | None = None,
             **params: object) -> PortResult:
    """Run the seed port over ``ticks`` (symbol, ts_ms, bid, ask) after optional warm-up candles per leg."""
    port = SeedPort(ring_cap=ring_cap, calcThrottleMs=throttle_ms, **params)  # type: ignore[arg-type]
    if warm is not None:
        port.warmup(*warm)
    return port.run(ticks)
