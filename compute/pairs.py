"""The pairs statistics and the seed's decision machine, compiled: the hot path of the stats stage.

One compiled call per batch pops BAR records from the bar ring, updates every pair the record's instrument
belongs to, publishes SIGNAL records through the dedup marks and writes event rows (``ROW``) that Python formats
into events.jsonl afterwards. The algorithm is the seed's (shared/seeds/001_...statarb_signals.go.txt) on event
time; per BAR record of a pair's leg, in the seed's per-tick order:

0. live records (BAR_PARTIAL / BAR_CLOSED) crossing into a later 5-minute bucket of event time first write
   LOG_5M (closed-only stats) or LOG_5M_SKIP from the state before the record (the very first live record only
   sets the bucket; BAR_WARMUP records never log: the seed writes nothing while it warms up);
1. live records set the leg's last tick time (the freshness rule) and latest bid/ask;
2. BAR_CLOSED / BAR_WARMUP: the leg's closed minute; when the other leg has closed that minute too, it joins the
   pair's aligned window, and a live close completing a minute for both legs while in a position logs PNL_1M;
3. BAR_PARTIAL: the leg's open minute, then the seed's computeIntra: throttle (event time), freshness, window
   ("119+partial_aligned" when both legs' open minutes coincide, else "120closed_aligned"), stats, decision.

State lives in numpy arrays (checkpointed by the stage as they are):

- per instrument: ``ii`` (last tick ms, last closed minute, open minute, closed bars seen), ``fi`` (open minute's
  mean, latest bid, latest ask) and a ring of its last ``HIST`` closed minutes (``hmin``, ``hmean``, ``hkind``),
  shared by every pair on that instrument. A leg's closed minute finds the other leg's close of the same minute
  there as long as the other leg has closed fewer than ``HIST`` minutes since (the seed: 120, its bug).
- per pair: ``pi`` (position, hold timers, last compute ms, 5-minute bucket, window length), ``pf`` (entry
  spread and quantities) and the aligned window as append-only arrays of minute and ln means (``wmin``, ``wa``,
  ``wb``): a minute joins once, in increasing order; when the arrays fill, the last ``window`` entries are moved
  to the front (amortized O(1), no per-tick rebuild, map or sort).
- per pair, with ``hedge = "kalman"``: the filter of compute.kalman (``kst`` = [beta, alpha], ``kcov``), one
  ``kalman_step`` per minute joining the window; the window's spreads, mean, sd and z then use its beta.
- ``cnt``: status counters, and the position after the last record processed.

All of them, the per-pair configuration and the dedup marks are views into two buffers (``st_i`` int64, ``st_f``
float64); ``PairsEngine.step`` passes their addresses and its rings' as one int (``stats_run``): a compiled call
from Python would otherwise unbox 8 arrays (about 0.3 us each on a small host).

The statistics keep the seed's arithmetic order (sums accumulated oldest to newest; OLS in two passes; spreads
recomputed term by term), so they equal a plain-Python port bit for bit. ``PairsTwin`` is the plain-Python twin
of the per-record logic used by the tests as the reference for the compiled code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from compute.kalman import kalman_init, kalman_step
from pipeline.dedup import admit
from pipeline.records import (
    BAR,
    BAR_CLOSED,
    BAR_PARTIAL,
    BAR_WARMUP,
    SIG_ENTER_LONG,
    SIG_ENTER_SHORT,
    SIG_EXIT,
    SIG_FLAG_MEASURE,
    SIGNAL,
)
from pipeline.ring import Addresses, Ring, array_at, claim, entry_point, free_slots, peek, publish, release, seg_at
from pipeline.syscalls import monotonic_ns

HIST = 4096
"""Closed minutes kept per instrument for matching the other leg's closes (68 hours)."""
ROWS_CAP = 4096
"""Event rows one compiled call may write before returning them to Python."""

# event actions (ROW.action)
EV_LOG_5M, EV_LOG_5M_SKIP, EV_ENTER_LONG, EV_ENTER_SHORT, EV_EXIT, EV_PNL_1M = 1, 2, 3, 4, 5, 6
ACTIONS = {EV_LOG_5M: "LOG_5M", EV_LOG_5M_SKIP: "LOG_5M_SKIP", EV_ENTER_LONG: "ENTER_LONG",
           EV_ENTER_SHORT: "ENTER_SHORT", EV_EXIT: "EXIT", EV_PNL_1M: "PNL_1M"}
"""Action names by code, as events.jsonl writes them."""
# windows (ROW.mode, SIGNAL.mode)
MODE_CLOSED, MODE_PARTIAL, MODE_SKIP = 0, 1, 2
# positions (ROW.pos)
FLAT, LONG, SHORT = 0, 1, 2
POSITIONS = {FLAT: "FLAT", LONG: "LONG_SPREAD", SHORT: "SHORT_SPREAD"}
"""Position names by code."""

# per-instrument int state ii[inst, .]
I_LAST_MS, I_CLOSED_MIN, I_PART_MIN, I_HIST_N = 0, 1, 2, 3
NII = 4
# per-instrument float state fi[inst, .]
F_PART_MEAN, F_BID, F_ASK = 0, 1, 2
NFI = 3
# per-pair int state pi[pair, .]
P_POS, P_LONG_SINCE, P_SHORT_SINCE, P_LAST_CALC, P_BUCKET, P_WIN_N, P_MEAS_AT, P_MEAS_OPEN = 0, 1, 2, 3, 4, 5, 6, 7
NPI = 8
# per-pair float state pf[pair, .]
Q_ENTRY_SPREAD, Q_ENTRY_QA, Q_ENTRY_QB, Q_MEAS_QA, Q_MEAS_QB = 0, 1, 2, 3, 4
NPF = 5
# per-pair int config ci[pair, .]
C_LEG_A, C_LEG_B, C_HOLD, C_FRESH, C_THROTTLE, C_WINDOW, C_HEDGE, C_MEASURE_MS = 0, 1, 2, 3, 4, 5, 6, 7
NCI = 8
HEDGE_OLS, HEDGE_KALMAN = 0, 1
KAL = HEDGE_KALMAN
# per-pair float config cf[pair, .]
G_ENTRY_Z, G_EXIT_Z, G_NOTIONAL, G_KDELTA, G_KR, G_MEASURE_NOTIONAL = 0, 1, 2, 3, 4, 5
NCF = 6
# counters cnt[.] (N_CNT of them)
N_TICKS, N_STATS, N_SIGNALS, N_EVENTS, N_STALE, N_COLD, N_BAD, N_POS, N_PUB, N_DUP = range(10)
N_CNT = 10
COUNTER_NAMES = ("ticks", "stats", "signals", "events", "stale", "cold", "bad", "in_pos")
"""Status counter names: live ticks (BAR_PARTIAL) of paired instruments, stats computed, signals decided, event
rows, computes skipped for stale legs, for a window not yet warm, bad bar records, input position processed. Two
more counters follow in ``cnt``, not shown: signals published, signals dropped by the dedup marks."""

ROW = np.dtype([
    ("action", "<i1"),  # EV_*
    ("mode", "<i1"),  # MODE_*
    ("pos", "<i1"),  # FLAT / LONG / SHORT, as the seed writes it (after an entry, before an exit)
    ("_pad", "<i1"),
    ("pair", "<i4"),  # index of the pair
    ("ts_ms", "<i8"),  # event time of the record that caused the row
    ("minute_ms", "<i8"),  # the stats' minute (console lines): open or last closed minute; PNL_1M: the minute
    ("beta", "<f8"),
    ("spread", "<f8"),
    ("mu", "<f8"),
    ("sigma", "<f8"),
    ("z", "<f8"),
    ("pnl", "<f8"),  # pnl_pct: exp(pnl_log) - 1 for EXIT and PNL_1M, else 0
])
"""One events.jsonl row as the compiled code writes it."""

STATE_ARRAYS = ("ii", "fi", "hmin", "hmean", "hkind", "pi", "pf", "wmin", "wa", "wb", "kst", "kcov", "cnt")
"""Names of the state arrays, in kernel argument order (also the checkpoint's keys)."""


@dataclass(frozen=True)
class PairCfg:
    """One pair's resolved configuration."""

    a: int
    """Leg A's instrument index."""
    b: int
    """Leg B's instrument index."""
    name: str = ""
    """"A/B" as configured."""
    entry_z: float = 2.2
    exit_z: float = 0.8
    hold_ms: int = 1000
    fresh_ms: int = 300
    throttle_ms: int = 0
    window: int = 120
    notional: float = 1000.0
    hedge: str = "ols"
    """"ols" (the seed: rolling OLS over the window) or "kalman" (compute.kalman, one step per joined minute)."""
    kalman_delta: float = 1e-5
    kalman_r: float = 1e-3
    measure_ms: int = 0
    """Measurement signals (``bench latency --orders-per-s``): one every this many ms of event time while the
    pair is flat, alternately entering LONG_SPREAD and exiting, flagged ``SIG_FLAG_MEASURE``; 0: none."""
    measure_notional: float = 20.0
    """Each measurement leg's notional in quote currency (dollar-neutral, no hedge ratio)."""


# ----------------------------------------------------------------------------------------------------------------
# compiled
# ----------------------------------------------------------------------------------------------------------------

_JIT = dict(nogil=True, cache=True)


@numba.njit(**_JIT)
def _ols(la, lb, start, end, pa, pb, extra, fn):
    """The seed's olsBeta(ln B, ln A): two-pass slope, 1.0 when ln B has no variance."""
    sx = 0.0
    sy = 0.0
    for i in range(start, end):
        sx += lb[i]
        sy += la[i]
    if extra:
        sx += pb
        sy += pa
    mx = sx / fn
    my = sy / fn
    cov = 0.0
    vx = 0.0
    for i in range(start, end):
        dx = lb[i] - mx
        dy = la[i] - my
        cov += dx * dy
        vx += dx * dx
    if extra:
        dx = pb - mx
        dy = pa - my
        cov += dx * dy
        vx += dx * dx
    if vx == 0:
        return 1.0
    return cov / vx


@numba.njit(**_JIT)
def window_stats(la, lb, start, k, pa, pb, extra, kbeta, use_k):
    """The seed's calcStatsFromPrices120 over ln means la/lb[start:start+k] (+ one more pair pa/pb when
    ``extra``): OLS beta of ln A on ln B (``use_k``: ``kbeta`` instead, the Kalman hedge), spreads, their mean and
    sample sd, z of the last. Returns (beta, spread, mu, sigma, z)."""
    end = start + k
    n = k + (1 if extra else 0)
    fn = np.float64(n)
    beta = kbeta if use_k else _ols(la, lb, start, end, pa, pb, extra, fn)
    mu = 0.0
    for i in range(start, end):
        mu += la[i] - beta * lb[i]
    if extra:
        last = pa - beta * pb
        mu += last
    else:
        last = la[end - 1] - beta * lb[end - 1]
    mu /= fn
    sd = 0.0
    if n > 1:
        ss = 0.0
        for i in range(start, end):
            d = (la[i] - beta * lb[i]) - mu
            ss += d * d
        if extra:
            d = last - mu
            ss += d * d
        sd = math.sqrt(ss / np.float64(n - 1))
    z = 0.0
    if sd > 0:
        z = (last - mu) / sd
    return beta, last, mu, sd, z


@numba.njit(**_JIT)
def _row(rows, nrows, cnt, action, p, ts, minute, beta, spread, mu, sigma, z, mode, pos, pnl):
    r = rows[nrows]
    r.action = action
    r.mode = mode
    r.pos = pos
    r.pair = p
    r.ts_ms = ts
    r.minute_ms = minute
    r.beta = beta
    r.spread = spread
    r.mu = mu
    r.sigma = sigma
    r.z = z
    r.pnl = pnl
    cnt[N_EVENTS] += 1
    return nrows + 1


@numba.njit(**_JIT)
def _pnl_log(pos, entry_spread, spread):
    d = spread - entry_spread
    if pos == SHORT:
        d = -d
    return d


@numba.njit(**_JIT)
def _signal(out_hdr, out_data, out_slots, marks, cnt, seq, ts, t_origin, p, a, b, action, side_a, side_b, mode, beta,
            z, spread, mu, sigma, fi, qa, qb, pnl_log, flags=0):
    """Publish a SIGNAL record through the dedup marks (the caller made sure a slot is free)."""
    cnt[N_SIGNALS] += 1
    if not admit(marks, 0, seq):
        cnt[N_DUP] += 1
        return
    s = out_slots[claim(out_hdr, out_slots.shape[0])]
    s.src_seq = seq
    s.src_ring = 0
    s.t_origin_ns = t_origin
    s.ts_event_ms = ts
    s.instrument = a
    s.flags = flags
    s.pair = p
    s.instrument_b = b
    s.action = action
    s.side_a = side_a
    s.side_b = side_b
    s.mode = mode
    s.beta = beta
    s.z = z
    s.spread = spread
    s.mu = mu
    s.sigma = sigma
    s.bid_a = fi[a, F_BID]
    s.ask_a = fi[a, F_ASK]
    s.bid_b = fi[b, F_BID]
    s.ask_b = fi[b, F_ASK]
    s.qty_a = qa
    s.qty_b = qb
    s.pnl_log = pnl_log
    s.t_pub_ns = monotonic_ns()
    publish(out_hdr, out_data, 1)
    cnt[N_PUB] += 1


@numba.njit(**_JIT)
def _log5m(p, ts, pi, wa, wb, kst, ci, cnt, rows, nrows):
    """Step 0: the 5-minute log when ``ts`` enters a later bucket (closed-only stats of the state before)."""
    bucket = ts // 300000
    if pi[p, P_BUCKET] < 0:
        pi[p, P_BUCKET] = bucket
        return nrows
    if bucket <= pi[p, P_BUCKET]:
        return nrows
    pi[p, P_BUCKET] = bucket
    w = ci[p, C_WINDOW]
    wn = pi[p, P_WIN_N]
    pos = pi[p, P_POS]
    if wn < w:
        return _row(rows, nrows, cnt, EV_LOG_5M_SKIP, p, ts, 0, 0.0, 0.0, 0.0, 0.0, 0.0, MODE_SKIP, pos, 0.0)
    beta, spread, mu, sd, z = window_stats(wa[p], wb[p], wn - w, w, 0.0, 0.0, False, kst[p, 0], ci[p, C_HEDGE] == KAL)
    return _row(rows, nrows, cnt, EV_LOG_5M, p, ts, 0, beta, spread, mu, sd, z, MODE_CLOSED, pos, 0.0)


@numba.njit(**_JIT)
def _join(p, inst, minute, mean, kind, ts, ii, hmin, hmean, hkind, pi, pf, wmin, wa, wb, kst, kcov, ci, cf, cnt,
          rows, nrows):
    """Step 2: a closed minute of leg ``inst`` joins the pair's window if the other leg has closed it too."""
    a = ci[p, C_LEG_A]
    other = ci[p, C_LEG_B] if inst == a else a
    hist = hmin.shape[1]
    n_o = ii[other, I_HIST_N]
    found = -1
    j = n_o - 1
    while j >= 0 and j >= n_o - hist:
        h = j % hist
        m = hmin[other, h]
        if m == minute:
            found = h
            break
        if m < minute:
            break
        j -= 1
    if found < 0:
        return nrows
    wn = pi[p, P_WIN_N]
    if wn > 0 and wmin[p, wn - 1] >= minute:
        return nrows
    w = ci[p, C_WINDOW]
    if wn == wmin.shape[1]:  # compact: keep the last window entries
        for i in range(w):
            wmin[p, i] = wmin[p, wn - w + i]
            wa[p, i] = wa[p, wn - w + i]
            wb[p, i] = wb[p, wn - w + i]
        wn = w
    if inst == a:
        mean_a, mean_b = mean, hmean[other, found]
    else:
        mean_a, mean_b = hmean[other, found], mean
    wmin[p, wn] = minute
    wa[p, wn] = math.log(mean_a)
    wb[p, wn] = math.log(mean_b)
    if ci[p, C_HEDGE] == HEDGE_KALMAN:
        kalman_step(kst[p], kcov[p], wb[p, wn], wa[p, wn], cf[p, G_KDELTA], cf[p, G_KR])
    wn += 1
    pi[p, P_WIN_N] = wn
    pos = pi[p, P_POS]
    if kind == BAR_CLOSED and hkind[other, found] == BAR_CLOSED and pos != FLAT and wn >= w:
        beta, spread, mu, sd, z = window_stats(wa[p], wb[p], wn - w, w, 0.0, 0.0, False, kst[p, 0],
                                               ci[p, C_HEDGE] == KAL)
        pnl = math.exp(_pnl_log(pos, pf[p, Q_ENTRY_SPREAD], spread)) - 1.0
        nrows = _row(rows, nrows, cnt, EV_PNL_1M, p, ts, minute, beta, spread, mu, sd, z, MODE_CLOSED, pos, pnl)
    return nrows


@numba.njit(**_JIT)
def _intra(p, seq, ts, t_origin, ii, fi, pi, pf, wmin, wa, wb, kst, ci, cf, cnt, rows, nrows, out_hdr, out_data,
           out_slots, marks):
    """Step 3: the seed's computeIntra and decision switch on event time ``ts``."""
    thr = ci[p, C_THROTTLE]
    if thr > 0 and ts - pi[p, P_LAST_CALC] < thr:
        return nrows
    pi[p, P_LAST_CALC] = ts
    a = ci[p, C_LEG_A]
    b = ci[p, C_LEG_B]
    ta = ii[a, I_LAST_MS]
    tb = ii[b, I_LAST_MS]
    if ta == 0 or tb == 0 or abs(ta - tb) > ci[p, C_FRESH]:
        cnt[N_STALE] += 1
        return nrows
    w = ci[p, C_WINDOW]
    wn = pi[p, P_WIN_N]
    pma = ii[a, I_PART_MIN]
    use_p = pma >= 0 and pma == ii[b, I_PART_MIN] and fi[a, F_PART_MEAN] > 0 and fi[b, F_PART_MEAN] > 0
    if use_p:
        if wn < w - 1:
            cnt[N_COLD] += 1
            return nrows
        beta, spread, mu, sd, z = window_stats(wa[p], wb[p], wn - (w - 1), w - 1, math.log(fi[a, F_PART_MEAN]),
                                               math.log(fi[b, F_PART_MEAN]), True, kst[p, 0], ci[p, C_HEDGE] == KAL)
        mode = MODE_PARTIAL
        minute = pma
    else:
        if wn < w:
            cnt[N_COLD] += 1
            return nrows
        beta, spread, mu, sd, z = window_stats(wa[p], wb[p], wn - w, w, 0.0, 0.0, False, kst[p, 0],
                                               ci[p, C_HEDGE] == KAL)
        mode = MODE_CLOSED
        minute = wmin[p, wn - 1]
    cnt[N_STATS] += 1

    pos = pi[p, P_POS]
    hold = ci[p, C_HOLD]
    entry_z = cf[p, G_ENTRY_Z]
    if pos == FLAT:
        enter = FLAT
        if z >= entry_z:
            if pi[p, P_SHORT_SINCE] == 0:
                pi[p, P_SHORT_SINCE] = ts
            pi[p, P_LONG_SINCE] = 0
            if hold == 0 or ts - pi[p, P_SHORT_SINCE] >= hold:
                enter = SHORT
        elif z <= -entry_z:
            if pi[p, P_LONG_SINCE] == 0:
                pi[p, P_LONG_SINCE] = ts
            pi[p, P_SHORT_SINCE] = 0
            if hold == 0 or ts - pi[p, P_LONG_SINCE] >= hold:
                enter = LONG
        else:
            pi[p, P_SHORT_SINCE] = 0
            pi[p, P_LONG_SINCE] = 0
        if enter != FLAT:
            pi[p, P_POS] = enter
            pi[p, P_SHORT_SINCE] = 0
            pi[p, P_LONG_SINCE] = 0
            pf[p, Q_ENTRY_SPREAD] = spread
            notional = cf[p, G_NOTIONAL]
            mid_a = 0.5 * (fi[a, F_BID] + fi[a, F_ASK])
            mid_b = 0.5 * (fi[b, F_BID] + fi[b, F_ASK])
            qa = notional / mid_a if mid_a > 0 else 0.0
            qb = abs(beta) * notional / mid_b if mid_b > 0 else 0.0
            pf[p, Q_ENTRY_QA] = qa
            pf[p, Q_ENTRY_QB] = qb
            if enter == SHORT:
                nrows = _row(rows, nrows, cnt, EV_ENTER_SHORT, p, ts, minute, beta, spread, mu, sd, z, mode, enter,
                             0.0)
                _signal(out_hdr, out_data, out_slots, marks, cnt, seq, ts, t_origin, p, a, b, SIG_ENTER_SHORT, -1, 1,
                        mode, beta, z, spread, mu, sd, fi, qa, qb, 0.0)
            else:
                nrows = _row(rows, nrows, cnt, EV_ENTER_LONG, p, ts, minute, beta, spread, mu, sd, z, mode, enter,
                             0.0)
                _signal(out_hdr, out_data, out_slots, marks, cnt, seq, ts, t_origin, p, a, b, SIG_ENTER_LONG, 1, -1,
                        mode, beta, z, spread, mu, sd, fi, qa, qb, 0.0)
    elif abs(z) <= cf[p, G_EXIT_Z]:
        d = _pnl_log(pos, pf[p, Q_ENTRY_SPREAD], spread)
        pnl = math.exp(d) - 1.0
        nrows = _row(rows, nrows, cnt, EV_EXIT, p, ts, minute, beta, spread, mu, sd, z, mode, pos, pnl)
        side_a = -1 if pos == LONG else 1
        _signal(out_hdr, out_data, out_slots, marks, cnt, seq, ts, t_origin, p, a, b, SIG_EXIT, side_a, -side_a, mode,
                beta, z, spread, mu, sd, fi, pf[p, Q_ENTRY_QA], pf[p, Q_ENTRY_QB], d)
        pi[p, P_POS] = FLAT
        pf[p, Q_ENTRY_SPREAD] = 0.0
        pf[p, Q_ENTRY_QA] = 0.0
        pf[p, Q_ENTRY_QB] = 0.0
        pi[p, P_SHORT_SINCE] = 0
        pi[p, P_LONG_SINCE] = 0
    return nrows


@numba.njit(**_JIT)
def _measure(p, seq, ts, t_origin, fi, pi, pf, ci, cf, cnt, out_hdr, out_data, out_slots, marks):
    """Measurement signals: every ``C_MEASURE_MS`` of event time while the pair holds no real position, enter
    LONG_SPREAD with ``G_MEASURE_NOTIONAL`` per leg, then exit (a real entry cancels the open measurement)."""
    period = ci[p, C_MEASURE_MS]
    if period <= 0:
        return
    if pi[p, P_POS] != FLAT:  # a real position: its exit would close the measurement, and ours would close it
        pi[p, P_MEAS_OPEN] = 0
        return
    a = ci[p, C_LEG_A]
    b = ci[p, C_LEG_B]
    if fi[a, F_BID] <= 0 or fi[b, F_BID] <= 0 or ts < pi[p, P_MEAS_AT]:
        return
    pi[p, P_MEAS_AT] = ts + period
    if pi[p, P_MEAS_OPEN] == 0:
        notional = cf[p, G_MEASURE_NOTIONAL]
        pf[p, Q_MEAS_QA] = notional / (0.5 * (fi[a, F_BID] + fi[a, F_ASK]))
        pf[p, Q_MEAS_QB] = notional / (0.5 * (fi[b, F_BID] + fi[b, F_ASK]))
        pi[p, P_MEAS_OPEN] = 1
        _signal(out_hdr, out_data, out_slots, marks, cnt, seq, ts, t_origin, p, a, b, SIG_ENTER_LONG, 1, -1,
                MODE_SKIP, 0.0, 0.0, 0.0, 0.0, 0.0, fi, pf[p, Q_MEAS_QA], pf[p, Q_MEAS_QB], 0.0, SIG_FLAG_MEASURE)
    else:
        pi[p, P_MEAS_OPEN] = 0
        _signal(out_hdr, out_data, out_slots, marks, cnt, seq, ts, t_origin, p, a, b, SIG_EXIT, -1, 1,
                MODE_SKIP, 0.0, 0.0, 0.0, 0.0, 0.0, fi, pf[p, Q_MEAS_QA], pf[p, Q_MEAS_QB], 0.0, SIG_FLAG_MEASURE)


@numba.njit(**_JIT)
def process(seq, ts, inst, kind, minute, mean, bid, ask, t_origin, ii, fi, hmin, hmean, hkind, pi, pf, wmin, wa, wb,
            kst, kcov, cnt, ci, cf, ip_ptr, ip_idx, rows, nrows, out_hdr, out_data, out_slots, marks):
    """One BAR record through every pair of its instrument; signals are published through the dedup marks.
    Returns the number of rows written in total."""
    cnt[N_POS] = seq + 1
    if inst < 0 or inst >= ii.shape[0] or ip_ptr[inst] == ip_ptr[inst + 1]:
        return nrows
    live = kind == BAR_PARTIAL or kind == BAR_CLOSED
    closing = kind == BAR_CLOSED or kind == BAR_WARMUP
    # bars that cannot arrive (the bars stage refuses them), guarded anyway: counted and skipped
    ok = (live or closing) and mean > 0 and mean < np.inf
    if live:
        ok = ok and bid > 0 and ask > 0 and bid < np.inf and ask < np.inf and ts > 0
    if closing:
        ok = ok and minute > ii[inst, I_CLOSED_MIN]
    else:
        ok = ok and minute > ii[inst, I_CLOSED_MIN] and minute >= ii[inst, I_PART_MIN]
    if not ok:
        cnt[N_BAD] += 1
        return nrows
    if live:
        ii[inst, I_LAST_MS] = ts
        fi[inst, F_BID] = bid
        fi[inst, F_ASK] = ask
    if closing:
        hist = hmin.shape[1]
        h = ii[inst, I_HIST_N] % hist
        hmin[inst, h] = minute
        hmean[inst, h] = mean
        hkind[inst, h] = kind
        ii[inst, I_HIST_N] += 1
        ii[inst, I_CLOSED_MIN] = minute
        if ii[inst, I_PART_MIN] <= minute:
            ii[inst, I_PART_MIN] = -1
    else:
        ii[inst, I_PART_MIN] = minute
        fi[inst, F_PART_MEAN] = mean
        cnt[N_TICKS] += 1
    for k in range(ip_ptr[inst], ip_ptr[inst + 1]):
        p = ip_idx[k]
        if live:
            nrows = _log5m(p, ts, pi, wa, wb, kst, ci, cnt, rows, nrows)
        if closing:
            nrows = _join(p, inst, minute, mean, kind, ts, ii, hmin, hmean, hkind, pi, pf, wmin, wa, wb, kst, kcov,
                          ci, cf, cnt, rows, nrows)
        else:
            nrows = _intra(p, seq, ts, t_origin, ii, fi, pi, pf, wmin, wa, wb, kst, ci, cf, cnt, rows, nrows, out_hdr,
                           out_data, out_slots, marks)
            _measure(p, seq, ts, t_origin, fi, pi, pf, ci, cf, cnt, out_hdr, out_data, out_slots, marks)
    return nrows


# State buffers: every state and config array is a view into one int64 buffer ``st_i`` or one float64 buffer
# ``st_f``, so a compiled call unboxes two arrays instead of twenty (about 0.3 us each from Python). st_i[0:H_LEN]
# holds the dimensions and each array's offset.
H_NINST, H_NPAIRS, H_HIST, H_CAP = 0, 1, 2, 3
H_II, H_HMIN, H_HKIND, H_PI, H_WMIN, H_CNT, H_CI, H_IPPTR, H_IPIDX, H_MARKS = 4, 5, 6, 7, 8, 9, 10, 11, 12, 13
H_FI, H_HMEAN, H_PF, H_WA, H_WB, H_KST, H_KCOV, H_CF = 14, 15, 16, 17, 18, 19, 20, 21
H_LEN = 24


@numba.njit(nogil=True, cache=True, inline="always")
def _unpack(st_i, st_f):
    """Views of the state arrays inside the two buffers (built from addresses: slicing and reshaping 18 views
    cost more than a kernel's work on one record)."""
    ai = st_i.ctypes.data
    af = st_f.ctypes.data
    ni = st_i[H_NINST]
    npairs = st_i[H_NPAIRS]
    hist = st_i[H_HIST]
    cap = st_i[H_CAP]
    ii = array_at(ai + 8 * st_i[H_II], (ni, NII), np.int64)
    hmin = array_at(ai + 8 * st_i[H_HMIN], (ni, hist), np.int64)
    hkind = array_at(ai + 8 * st_i[H_HKIND], (ni, hist), np.int64)
    pi = array_at(ai + 8 * st_i[H_PI], (npairs, NPI), np.int64)
    wmin = array_at(ai + 8 * st_i[H_WMIN], (npairs, cap), np.int64)
    cnt = array_at(ai + 8 * st_i[H_CNT], (N_CNT,), np.int64)
    ci = array_at(ai + 8 * st_i[H_CI], (npairs, NCI), np.int64)
    ip_ptr = array_at(ai + 8 * st_i[H_IPPTR], (ni + 1,), np.int64)
    ip_idx = array_at(ai + 8 * st_i[H_IPIDX], (2 * npairs,), np.int64)
    marks = array_at(ai + 8 * st_i[H_MARKS], (1, 2), np.int64)
    fi = array_at(af + 8 * st_i[H_FI], (ni, NFI), np.float64)
    hmean = array_at(af + 8 * st_i[H_HMEAN], (ni, hist), np.float64)
    pf = array_at(af + 8 * st_i[H_PF], (npairs, NPF), np.float64)
    wa = array_at(af + 8 * st_i[H_WA], (npairs, cap), np.float64)
    wb = array_at(af + 8 * st_i[H_WB], (npairs, cap), np.float64)
    kst = array_at(af + 8 * st_i[H_KST], (npairs, 2), np.float64)
    kcov = array_at(af + 8 * st_i[H_KCOV], (npairs, 2, 2), np.float64)
    cf = array_at(af + 8 * st_i[H_CF], (npairs, NCF), np.float64)
    return ii, hmin, hkind, pi, wmin, cnt, ci, ip_ptr, ip_idx, marks, fi, hmean, pf, wa, wb, kst, kcov, cf


@numba.njit(**_JIT)
def stats_step(in_hdr, in_slots, out_hdr, out_data, out_slots, st_i, st_f, rows, max_n):
    """Pop up to ``max_n`` BAR records, process, publish signals, release: one call per batch.
    Returns (consumed, rows written, closed bars seen, output_full)."""
    ii, hmin, hkind, pi, wmin, cnt, ci, ip_ptr, ip_idx, marks, fi, hmean, pf, wa, wb, kst, kcov, cf = \
        _unpack(st_i, st_f)
    cap_in = in_slots.shape[0]
    cap_out = out_slots.shape[0]
    per_record = 3 * ci.shape[0]
    n = 0
    nrows = 0
    closes = 0
    full = 0
    while n < max_n and nrows + per_record <= rows.shape[0]:
        i = peek(in_hdr, cap_in)
        if i < 0:
            break
        r = in_slots[i]
        inst = np.int64(r.instrument)
        need = 2 * (ip_ptr[inst + 1] - ip_ptr[inst]) if inst < ii.shape[0] else 0  # a signal and a measurement
        if need > 0 and free_slots(out_hdr, cap_out, need) < need:
            full = 1
            break
        kind = np.int64(r.kind)
        nrows = process(np.int64(r.seq), np.int64(r.ts_event_ms), inst, kind, np.int64(r.minute_ms), r.mean,
                        r.bid_px, r.ask_px, np.int64(r.t_origin_ns), ii, fi, hmin, hmean, hkind, pi, pf, wmin, wa, wb,
                        kst, kcov, cnt, ci, cf, ip_ptr, ip_idx, rows, nrows, out_hdr, out_data, out_slots, marks)
        if kind != BAR_PARTIAL:
            closes += 1
        release(in_hdr, 1)
        n += 1
    return n, nrows, closes, full


# stats_run's context (an ``Addresses``): the rings, the state buffers and the row buffer with their lengths
X_IN, X_OUT, X_ST_I, X_N_ST_I, X_ST_F, X_N_ST_F, X_ROWS, X_N_ROWS = range(8)
X_LEN = 8


@numba.njit(nogil=False, cache=True)
def stats_run(ctx, max_n):
    """``stats_step`` on the rings and buffers of context ``ctx`` (the ``addr`` of ``PairsEngine``'s): the call
    from Python unboxes no array, and keeps the GIL (as ``compute.bars.bars_run``)."""
    c = array_at(ctx, (X_LEN,), np.int64)
    in_hdr, _, in_slots = seg_at(c[X_IN], BAR)
    out_hdr, out_data, out_slots = seg_at(c[X_OUT], SIGNAL)
    st_i = array_at(c[X_ST_I], (c[X_N_ST_I],), np.int64)
    st_f = array_at(c[X_ST_F], (c[X_N_ST_F],), np.float64)
    rows = array_at(c[X_ROWS], (c[X_N_ROWS],), ROW)
    return stats_step(in_hdr, in_slots, out_hdr, out_data, out_slots, st_i, st_f, rows, max_n)


@numba.njit(**_JIT)
def stats_replay(recs, start, out_hdr, out_data, out_slots, st_i, st_f, rows):
    """``stats_step`` over records re-read from history (``recs[start:]``, already released).
    Returns (processed, rows written, closed bars seen, output_full)."""
    ii, hmin, hkind, pi, wmin, cnt, ci, ip_ptr, ip_idx, marks, fi, hmean, pf, wa, wb, kst, kcov, cf = \
        _unpack(st_i, st_f)
    cap_out = out_slots.shape[0]
    per_record = 3 * ci.shape[0]
    n = 0
    nrows = 0
    closes = 0
    full = 0
    k = start
    while k < recs.shape[0] and nrows + per_record <= rows.shape[0]:
        r = recs[k]
        inst = np.int64(r.instrument)
        need = 2 * (ip_ptr[inst + 1] - ip_ptr[inst]) if inst < ii.shape[0] else 0  # a signal and a measurement
        if need > 0 and free_slots(out_hdr, cap_out, need) < need:
            full = 1
            break
        kind = np.int64(r.kind)
        nrows = process(np.int64(r.seq), np.int64(r.ts_event_ms), inst, kind, np.int64(r.minute_ms), r.mean,
                        r.bid_px, r.ask_px, np.int64(r.t_origin_ns), ii, fi, hmin, hmean, hkind, pi, pf, wmin, wa, wb,
                        kst, kcov, cnt, ci, cf, ip_ptr, ip_idx, rows, nrows, out_hdr, out_data, out_slots, marks)
        if kind != BAR_PARTIAL:
            closes += 1
        k += 1
        n += 1
    return n, nrows, closes, full


# ----------------------------------------------------------------------------------------------------------------
# Python side
# ----------------------------------------------------------------------------------------------------------------


class PairsEngine:
    """The compiled pairs logic: its state and configuration in two buffers (``st_i`` int64, ``st_f`` float64),
    exposed as named numpy views (``ii``, ``fi``, ..., ``cnt``, ``marks``), and a preallocated row buffer."""

    _I_PARTS = (("ii", H_II), ("hmin", H_HMIN), ("hkind", H_HKIND), ("pi", H_PI), ("wmin", H_WMIN), ("cnt", H_CNT),
                ("ci", H_CI), ("ip_ptr", H_IPPTR), ("ip_idx", H_IPIDX), ("marks", H_MARKS))
    _F_PARTS = (("fi", H_FI), ("hmean", H_HMEAN), ("pf", H_PF), ("wa", H_WA), ("wb", H_WB), ("kst", H_KST),
                ("kcov", H_KCOV), ("cf", H_CF))

    def __init__(self, n_instruments: int, pairs: list[PairCfg], hist: int = HIST) -> None:
        n, ni = len(pairs), n_instruments
        self.pairs = list(pairs)
        cap = max(256, 4 * max((c.window for c in pairs), default=1))
        shapes = {"ii": (ni, NII), "hmin": (ni, hist), "hkind": (ni, hist), "pi": (n, NPI), "wmin": (n, cap),
                  "cnt": (N_CNT,), "ci": (n, NCI), "ip_ptr": (ni + 1,), "ip_idx": (2 * n,), "marks": (1, 2),
                  "fi": (ni, NFI), "hmean": (ni, hist), "pf": (n, NPF), "wa": (n, cap), "wb": (n, cap),
                  "kst": (n, 2), "kcov": (n, 2, 2), "cf": (n, NCF)}
        size_i = H_LEN + sum(int(np.prod(shapes[k])) for k, _ in self._I_PARTS)
        size_f = sum(int(np.prod(shapes[k])) for k, _ in self._F_PARTS)
        self.st_i = np.zeros(size_i, dtype=np.int64)
        self.st_f = np.zeros(size_f, dtype=np.float64)
        self.st_i[[H_NINST, H_NPAIRS, H_HIST, H_CAP]] = (ni, n, hist, cap)
        for buf, parts, o in ((self.st_i, self._I_PARTS, H_LEN), (self.st_f, self._F_PARTS, 0)):
            for name, h in parts:
                k = int(np.prod(shapes[name]))
                self.st_i[h] = o
                setattr(self, name, buf[o:o + k].reshape(shapes[name]))
                o += k
        for p, c in enumerate(pairs):
            self.ci[p] = (c.a, c.b, c.hold_ms, c.fresh_ms, c.throttle_ms, c.window,
                          HEDGE_KALMAN if c.hedge == "kalman" else HEDGE_OLS, c.measure_ms)
            self.cf[p] = (c.entry_z, c.exit_z, c.notional, c.kalman_delta, c.kalman_r, c.measure_notional)
        members: list[list[int]] = [[] for _ in range(ni)]
        for p, c in enumerate(pairs):
            members[c.a].append(p)
            members[c.b].append(p)
        self.ip_ptr[1:] = np.cumsum([len(m) for m in members])
        self.ip_idx[:] = [p for m in members for p in m]
        self.ii[:, I_CLOSED_MIN] = -1
        self.ii[:, I_PART_MIN] = -1
        self.hmin[:] = -1
        self.pi[:, P_BUCKET] = -1
        for p in range(n):
            self.kst[p], self.kcov[p] = kalman_init()
        self.marks[0] = (-1, 0)
        self.rows = np.zeros(max(ROWS_CAP, 3 * n), dtype=ROW)
        self._step = self._replay = None
        self._bound: Addresses | None = None
        self._ctx = 0
        self._replay_args: tuple = ()

    def state(self) -> dict[str, np.ndarray]:
        """The state arrays by name (views: assigning into them restores a state)."""
        return {k: getattr(self, k) for k in STATE_ARRAYS}

    def config_arrays(self) -> dict[str, np.ndarray]:
        """The configuration arrays (a checkpoint is valid only for the same ones)."""
        return {"ci": self.ci, "cf": self.cf, "ip_ptr": self.ip_ptr, "ip_idx": self.ip_idx}

    def bind(self, inp: Ring | None, out: Ring, recs_dtype: np.dtype | None = None) -> None:
        """Compile (or load from numba's cache) the kernels for these rings, running nothing. ``inp`` None: the
        replay kernel only, for records of ``recs_dtype``."""
        if inp is not None:
            if inp.dtype != BAR or out.dtype != SIGNAL:
                raise ValueError("PairsEngine.bind: the input ring carries BAR records, the output ring SIGNAL records")
            self._bound = Addresses(inp.seg, out.seg, self.st_i, len(self.st_i), self.st_f, len(self.st_f), self.rows,
                                    len(self.rows))
            self._ctx = self._bound.addr
            self._step = entry_point(stats_run, self._ctx, 0)
        self._replay_args = (out.hdr, out.data, out.slots, self.st_i, self.st_f, self.rows)
        empty = np.zeros(0, dtype=recs_dtype if recs_dtype is not None else inp.dtype)
        self._replay = entry_point(stats_replay, empty, 0, *self._replay_args)

    @property
    def bound(self) -> bool:
        """Whether ``bind`` ran (the kernels are ready to call)."""
        return self._step is not None

    def step(self, max_n: int) -> tuple[int, int, int, int]:
        """Process up to ``max_n`` records of the bound input ring: (consumed, rows, closed bars, output_full);
        the rows are in ``self.rows``."""
        return self._step(self._ctx, max_n)

    def replay(self, recs: np.ndarray, start: int) -> tuple[int, int, int, int]:
        """Process ``recs[start:]`` (records re-read from history): as ``step``."""
        return self._replay(recs, start, *self._replay_args)


# ----------------------------------------------------------------------------------------------------------------
# plain-Python twin (the reference for the compiled code in tests)
# ----------------------------------------------------------------------------------------------------------------


def stats_py(la: list[float], lb: list[float], beta: float | None = None) -> tuple[float, float, float, float, float]:
    """The seed's calcStatsFromPrices120 (olsBeta, meanStd) on ln means, as plain loops; ``beta`` given: that hedge
    ratio instead of OLS (the Kalman hedge)."""
    n = len(la)
    if beta is None:
        sx = sy = 0.0
        for i in range(n):
            sx += lb[i]
            sy += la[i]
        mx, my = sx / n, sy / n
        cov = vx = 0.0
        for i in range(n):
            dx, dy = lb[i] - mx, la[i] - my
            cov += dx * dy
            vx += dx * dx
        beta = 1.0 if vx == 0 else cov / vx
    spreads = [la[i] - beta * lb[i] for i in range(n)]
    mu = 0.0
    for v in spreads:
        mu += v
    mu /= n
    sd = 0.0
    if n > 1:
        ss = 0.0
        for v in spreads:
            d = v - mu
            ss += d * d
        sd = math.sqrt(ss / (n - 1))
    z = (spreads[-1] - mu) / sd if sd > 0 else 0.0
    return beta, spreads[-1], mu, sd, z


def kalman_py(st: list[float], cov: list[list[float]], x: float, y: float, delta: float, r: float) -> None:
    """compute.kalman.kalman_update in plain Python (the same operations in the same order), in place."""
    w = delta / (1.0 - delta)
    p00, p01, p10, p11 = cov[0][0] + w, cov[0][1], cov[1][0], cov[1][1] + w
    e = y - (x * st[0] + st[1])
    fp0 = x * p00 + p10
    fp1 = x * p01 + p11
    q = fp0 * x + fp1 + r
    k0 = (p00 * x + p01) / q
    k1 = (p10 * x + p11) / q
    st[0] += k0 * e
    st[1] += k1 * e
    cov[0][0], cov[0][1] = p00 - k0 * fp0, p01 - k0 * fp1
    cov[1][0], cov[1][1] = p10 - k1 * fp0, p11 - k1 * fp1


class PairsTwin:
    """Plain-Python twin of ``process``: same inputs, same event rows and signals, written independently with
    lists and dicts (the seed's pending maps for PNL_1M, a list scan for the window).

    ``seed_rings``: emulate the seed's per-leg rings of that many closed bars and its window selection (maps,
    intersection, sort, last ``window``) instead of the uncapped aligned window: the seed's bug, for tests."""

    def __init__(self, n_instruments: int, pairs: list[PairCfg], seed_rings: int | None = None) -> None:
        self.pairs = list(pairs)
        self.seed_rings = seed_rings
        self.last_ms = [0] * n_instruments
        self.closed: list[list[tuple[int, float]]] = [[] for _ in range(n_instruments)]  # (minute, mean)
        self.partial: list[tuple[int, float] | None] = [None] * n_instruments
        self.quote = [(0.0, 0.0)] * n_instruments
        n = len(pairs)
        self.window: list[list[tuple[int, float, float]]] = [[] for _ in range(n)]  # (minute, ln a, ln b)
        self.pending: list[dict[int, dict[int, float]]] = [{c.a: {}, c.b: {}} for c in pairs]
        self.pos = [FLAT] * n
        self.entry = [(0.0, 0.0, 0.0)] * n  # spread, qty a, qty b
        self.long_since = [0] * n
        self.short_since = [0] * n
        self.last_calc = [0] * n
        self.bucket = [-1] * n
        self.kalman = [([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]]) for _ in range(n)]  # kalman_init()
        self.meas_at = [0] * n
        self.meas_open: list[tuple[float, float] | None] = [None] * n  # an open measurement's quantities
        self.counts = dict.fromkeys(COUNTER_NAMES, 0)

    def _beta(self, p: int) -> float | None:
        return self.kalman[p][0][0] if self.pairs[p].hedge == "kalman" else None

    # -- window selection --------------------------------------------------------------------------------------

    def _closed_window(self, p: int) -> tuple[list[float], list[float], int] | None:
        w = self.pairs[p].window
        if self.seed_rings is None:
            win = self.window[p]
            if len(win) < w:
                return None
            tail = win[-w:]
            return [t[1] for t in tail], [t[2] for t in tail], tail[-1][0]
        common = self._seed_common(p)
        if len(common) < w:
            return None
        common = common[-w:]
        return [math.log(c[1]) for c in common], [math.log(c[2]) for c in common], common[-1][0]

    def _seed_common(self, p: int) -> list[tuple[int, float, float]]:
        """The seed's buildAligned: maps of the last ``seed_rings`` closes per leg, intersection, sort."""
        c = self.pairs[p]
        ma = dict(self.closed[c.a][-self.seed_rings:])
        mb = dict(self.closed[c.b][-self.seed_rings:])
        return sorted((m, ma[m], mb[m]) for m in ma if m in mb)

    def _intra_window(self, p: int) -> tuple[list[float], list[float], int, int] | None:
        c = self.pairs[p]
        pa, pb = self.partial[c.a], self.partial[c.b]
        if pa is not None and pb is not None and pa[0] == pb[0] and pa[1] > 0 and pb[1] > 0:
            w = c.window - 1
            if self.seed_rings is None:
                if len(self.window[p]) < w:
                    return None
                tail = self.window[p][len(self.window[p]) - w:]
                la, lb = [t[1] for t in tail], [t[2] for t in tail]
            else:
                common = self._seed_common(p)
                if len(common) < w:
                    return None
                common = common[len(common) - w:]
                la, lb = [math.log(t[1]) for t in common], [math.log(t[2]) for t in common]
            return [*la, math.log(pa[1])], [*lb, math.log(pb[1])], MODE_PARTIAL, pa[0]
        got = self._closed_window(p)
        if got is None:
            return None
        return got[0], got[1], MODE_CLOSED, got[2]

    # -- per record ----------------------------------------------------------------------------------------------

    def process(self, r: np.void) -> tuple[list[tuple], list[dict]]:
        """One BAR record: (event rows as tuples of ROW's fields but _pad, signals as dicts of SIGNAL fields but
        seq and t_pub_ns)."""
        rows: list[tuple] = []
        sigs: list[dict] = []
        seq, ts, inst, kind = int(r["seq"]), int(r["ts_event_ms"]), int(r["instrument"]), int(r["kind"])
        minute, mean, bid, ask = int(r["minute_ms"]), float(r["mean"]), float(r["bid_px"]), float(r["ask_px"])
        self.counts["in_pos"] = seq + 1
        mine = [p for p, c in enumerate(self.pairs) if inst in (c.a, c.b)]
        if inst >= len(self.last_ms) or not mine:
            return rows, sigs
        live = kind in (BAR_PARTIAL, BAR_CLOSED)
        closing = kind in (BAR_CLOSED, BAR_WARMUP)
        last_closed = self.closed[inst][-1][0] if self.closed[inst] else -1
        part_min = self.partial[inst][0] if self.partial[inst] is not None else -1
        ok = (live or closing) and 0 < mean < math.inf
        if live:
            ok = ok and 0 < bid < math.inf and 0 < ask < math.inf and ts > 0
        ok = ok and minute > last_closed and (closing or minute >= part_min)
        if not ok:
            self.counts["bad"] += 1
            return rows, sigs
        # step 0 from the state before the record (the seed-ring window depends on the legs' closes)
        logs = {p: self._log5m(p, ts) for p in mine} if live else {}
        if live:
            self.last_ms[inst] = ts
            self.quote[inst] = (bid, ask)
        if closing:
            self.closed[inst].append((minute, mean))
            if self.seed_rings is not None:
                del self.closed[inst][:-self.seed_rings]
            if self.partial[inst] is not None and self.partial[inst][0] <= minute:
                self.partial[inst] = None
        else:
            self.partial[inst] = (minute, mean)
            self.counts["ticks"] += 1
        for p in mine:
            if logs.get(p) is not None:
                rows.append(logs[p])
            if closing:
                self._join(p, inst, minute, mean, kind, ts, rows)
            else:
                self._intra(p, seq, ts, int(r["t_origin_ns"]), rows, sigs)
                self._measure(p, seq, ts, int(r["t_origin_ns"]), sigs)
        self.counts["events"] += len(rows)
        return rows, sigs

    def _log5m(self, p: int, ts: int) -> tuple | None:
        b = ts // 300000
        if self.bucket[p] < 0:
            self.bucket[p] = b
            return None
        if b <= self.bucket[p]:
            return None
        self.bucket[p] = b
        got = self._closed_window(p)
        if got is None:
            return (EV_LOG_5M_SKIP, MODE_SKIP, self.pos[p], p, ts, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        beta, spread, mu, sd, z = stats_py(got[0], got[1], self._beta(p))
        return (EV_LOG_5M, MODE_CLOSED, self.pos[p], p, ts, 0, beta, spread, mu, sd, z, 0.0)

    def _join(self, p: int, inst: int, minute: int, mean: float, kind: int, ts: int, rows: list) -> None:
        c = self.pairs[p]
        other = c.b if inst == c.a else c.a
        other_mean = None
        for m, v in reversed(self.closed[other]):
            if m == minute:
                other_mean = v
                break
            if m < minute:
                break
        if other_mean is not None and (not self.window[p] or self.window[p][-1][0] < minute):
            ma, mb = (mean, other_mean) if inst == c.a else (other_mean, mean)
            self.window[p].append((minute, math.log(ma), math.log(mb)))
            if c.hedge == "kalman":
                kalman_py(*self.kalman[p], math.log(mb), math.log(ma), c.kalman_delta, c.kalman_r)
        # the seed's pending maps of live closes
        if kind != BAR_CLOSED:
            return
        pend = self.pending[p]
        pend[inst][minute] = mean
        if minute not in pend[other]:
            return
        del pend[inst][minute], pend[other][minute]
        if self.pos[p] == FLAT:
            return
        got = self._closed_window(p)
        if got is None:
            return
        beta, spread, mu, sd, z = stats_py(got[0], got[1], self._beta(p))
        d = spread - self.entry[p][0]
        if self.pos[p] == SHORT:
            d = -d
        rows.append((EV_PNL_1M, MODE_CLOSED, self.pos[p], p, ts, minute, beta, spread, mu, sd, z, math.exp(d) - 1.0))

    def _intra(self, p: int, seq: int, ts: int, t_origin: int, rows: list, sigs: list) -> None:
        c = self.pairs[p]
        if c.throttle_ms > 0 and ts - self.last_calc[p] < c.throttle_ms:
            return
        self.last_calc[p] = ts
        ta, tb = self.last_ms[c.a], self.last_ms[c.b]
        if ta == 0 or tb == 0 or abs(ta - tb) > c.fresh_ms:
            self.counts["stale"] += 1
            return
        got = self._intra_window(p)
        if got is None:
            self.counts["cold"] += 1
            return
        la, lb, mode, minute = got
        beta, spread, mu, sd, z = stats_py(la, lb, self._beta(p))
        self.counts["stats"] += 1
        st = (beta, spread, mu, sd, z)
        if self.pos[p] == FLAT:
            enter = FLAT
            if z >= c.entry_z:
                if self.short_since[p] == 0:
                    self.short_since[p] = ts
                self.long_since[p] = 0
                if c.hold_ms == 0 or ts - self.short_since[p] >= c.hold_ms:
                    enter = SHORT
            elif z <= -c.entry_z:
                if self.long_since[p] == 0:
                    self.long_since[p] = ts
                self.short_since[p] = 0
                if c.hold_ms == 0 or ts - self.long_since[p] >= c.hold_ms:
                    enter = LONG
            else:
                self.short_since[p] = self.long_since[p] = 0
            if enter != FLAT:
                self.pos[p] = enter
                self.short_since[p] = self.long_since[p] = 0
                (ba, aa), (bb, ab) = self.quote[c.a], self.quote[c.b]
                mid_a, mid_b = 0.5 * (ba + aa), 0.5 * (bb + ab)
                qa = c.notional / mid_a if mid_a > 0 else 0.0
                qb = abs(beta) * c.notional / mid_b if mid_b > 0 else 0.0
                self.entry[p] = (spread, qa, qb)
                ev, act, sa = (EV_ENTER_SHORT, SIG_ENTER_SHORT, -1) if enter == SHORT else \
                    (EV_ENTER_LONG, SIG_ENTER_LONG, 1)
                rows.append((ev, mode, enter, p, ts, minute, *st, 0.0))
                sigs.append(self._sig(p, seq, ts, t_origin, act, sa, mode, st, qa, qb, 0.0))
                self.counts["signals"] += 1
        elif abs(z) <= c.exit_z:
            d = spread - self.entry[p][0]
            if self.pos[p] == SHORT:
                d = -d
            rows.append((EV_EXIT, mode, self.pos[p], p, ts, minute, *st, math.exp(d) - 1.0))
            sa = -1 if self.pos[p] == LONG else 1
            sigs.append(self._sig(p, seq, ts, t_origin, SIG_EXIT, sa, mode, st, self.entry[p][1], self.entry[p][2],
                                  d))
            self.counts["signals"] += 1
            self.pos[p] = FLAT
            self.entry[p] = (0.0, 0.0, 0.0)
            self.short_since[p] = self.long_since[p] = 0

    def _measure(self, p: int, seq: int, ts: int, t_origin: int, sigs: list) -> None:
        c = self.pairs[p]
        if c.measure_ms <= 0:
            return
        if self.pos[p] != FLAT:
            self.meas_open[p] = None
            return
        (ba, aa), (bb, ab) = self.quote[c.a], self.quote[c.b]
        if ba <= 0 or bb <= 0 or ts < self.meas_at[p]:
            return
        self.meas_at[p] = ts + c.measure_ms
        self.counts["signals"] += 1
        q = self.meas_open[p]
        if q is None:
            q = self.meas_open[p] = (c.measure_notional / ((ba + aa) / 2), c.measure_notional / ((bb + ab) / 2))
            sigs.append(self._sig(p, seq, ts, t_origin, SIG_ENTER_LONG, 1, MODE_SKIP, (0.0,) * 5, *q, 0.0,
                                  SIG_FLAG_MEASURE))
        else:
            self.meas_open[p] = None
            sigs.append(self._sig(p, seq, ts, t_origin, SIG_EXIT, -1, MODE_SKIP, (0.0,) * 5, *q, 0.0,
                                  SIG_FLAG_MEASURE))

    def _sig(self, p: int, seq: int, ts: int, t_origin: int, action: int, side_a: int, mode: int,
             st: tuple, qa: float, qb: float, pnl_log: float, flags: int = 0) -> dict:
        c = self.pairs[p]
        (ba, aa), (bb, ab) = self.quote[c.a], self.quote[c.b]
        beta, spread, mu, sd, z = st
        return {"src_seq": seq, "t_origin_ns": t_origin, "ts_event_ms": ts, "src_ring": 0, "instrument": c.a,
                "flags": flags, "pair": p, "instrument_b": c.b, "action": action, "side_a": side_a, "side_b": -side_a,
                "mode": mode, "beta": beta, "z": z, "spread": spread, "mu": mu, "sigma": sd, "bid_a": ba,
                "ask_a": aa, "bid_b": bb, "ask_b": ab, "qty_a": qa, "qty_b": qb, "pnl_log": pnl_log}
