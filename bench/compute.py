"""``bench compute``: µs per tick through bars + stats + signal, lowlat's compiled stages against the seed's approach.

One seeded tick stream of a cointegrated pair (leg A ~ BTC-USDT, leg B ~ ETH-USDT; an OU spread around a random
walk; each leg ticks every ``TICK_MS`` ms on average, with jitter, bid/ask on the legs' tick sizes) runs through
three implementations of the same algorithm (the seed's, shared/seeds/001_...statarb_signals.go.txt, on event time):

- ``lowlat``: the stages' own compiled kernels over real shared-memory rings, in one process: a BBO ring ->
  ``compute.bars.bars_step`` -> a BAR ring -> ``compute.pairs.PairsEngine.step`` (stats, decisions, SIGNAL records)
  -> a SIGNAL ring. Latency per tick: one tick pushed (untimed), then both kernel calls timed, one tick at a time,
  as a stage meets a tick that arrives alone (Python -> numba crossings included). ``ticks_per_s``: the sustained
  rate when ticks queue up, as a stage takes them (batches of ``BATCH``): ticks / time of the kernel calls.
- ``seed-port``: ``tests/seed_port.py``, the plain-Python port of the seed (its 120-bar rings, maps rebuilt and
  sorted, the window recomputed on every tick), per tick.
- ``numpy-recompute``: the same port with the window built and its statistics computed by vectorized numpy on
  every tick (``np.intersect1d`` of the legs' closed minutes, ``np.log``, two-pass OLS and sample sd in array
  operations): what a user would write to speed the seed up in Python.

Every implementation first takes ``warm_minutes`` of the stream untimed (the window fills, so each timed tick
computes statistics), then times ``ticks`` ticks; the garbage collector is off in timed loops. The three give the
same actions at the same ticks (checked: a run whose implementations disagree is reported as failed).
"""

from __future__ import annotations

import gc
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.host import host_info, loadavg

IMPLS = ("lowlat", "seed-port", "numpy-recompute")
TICK_MS = 250
"""Mean interval between two ticks of one leg (event time)."""
DEFAULT_TICKS = 20_000
DEFAULT_WARM_MINUTES = 125
P99_BAR_US = 10.0
"""The project's bar: p99 under 10 µs per tick for one pair."""
RATIO_BAR = 50.0
"""The project's bar: lowlat ticks/s >= 50x numpy-recompute's."""
BATCH = 1024
SEGMENT_PREFIX = "lowlat-bench-compute."
START_MS = 1_723_075_200_000  # 2024-08-08T00:00:00Z


def _seed_port() -> Any:
    """The seed port lives with the tests (the reference); bench runs from a checkout."""
    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from tests import seed_port

    return seed_port


# ----------------------------------------------------------------------------------------------------------------
# the stream
# ----------------------------------------------------------------------------------------------------------------


def make_stream(seed: int, minutes: float) -> list[tuple[str, int, float, float]]:
    """Ticks (symbol, ts_ms, bid, ask) of a cointegrated pair over ``minutes`` of event time, both legs merged in
    time order. ln A = beta ln B + c + s, s an OU process (half-life ~ 20 minutes, so z crosses ±2.2 now and then)."""
    rng = np.random.default_rng(seed)
    n = int(minutes * 60_000 / TICK_MS)
    out: list[tuple[str, int, float, float]] = []
    for sym, offset in (("BTC-USDT", 0), ("ETH-USDT", TICK_MS // 2)):
        ts = START_MS + offset + np.cumsum(rng.integers(TICK_MS // 2, 3 * TICK_MS // 2, n))
        out.extend((sym, int(t), 0.0, 0.0) for t in ts)
    out.sort(key=lambda r: (r[1], r[0]))
    dt = TICK_MS / 60_000  # minutes per step
    lb, s, theta, beta = math.log(2600.0), 0.0, math.log(2) / 20.0, 0.8
    c = math.log(60000.0) - beta * lb
    ticks = []
    for sym, ts, _, _ in out:
        lb += 0.0004 * math.sqrt(dt) * rng.standard_normal()
        s += -theta * s * dt + 0.0006 * math.sqrt(dt) * rng.standard_normal()
        if sym == "BTC-USDT":
            mid, tick = math.exp(beta * lb + c + s), 0.1
        else:
            mid, tick = math.exp(lb), 0.01
        bid = round(math.floor(mid / tick) * tick, 2)
        ticks.append((sym, ts, bid, round(bid + tick * (1 + int(rng.integers(0, 3))), 2)))
    return ticks


# ----------------------------------------------------------------------------------------------------------------
# implementations
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One implementation's figures."""

    impl: str
    lat_ns: list[int] = field(default_factory=list)
    """ns per timed tick."""
    ticks_per_s: float = 0.0
    actions: list[tuple[int, str]] = field(default_factory=list)
    """(tick index, action) of every entry / exit."""
    extra: dict[str, Any] = field(default_factory=dict)


class Lowlat:
    """The stages' kernels over real rings in one process."""

    def __init__(self, n_inst: int, throttle_ms: int) -> None:
        import os

        from compute.bars import bars_context, bars_run, new_state
        from compute.pairs import PairCfg, PairsEngine
        from pipeline.records import BAR, BBO, SIGNAL
        from pipeline.ring import Ring, entry_point

        pid = os.getpid()
        self.names = [f"{SEGMENT_PREFIX}{pid}.{k}" for k in ("ticks", "bars", "signals")]
        self.ticks = Ring.create(self.names[0], BBO, 1 << 16, replace=True)
        self.bars = Ring.create(self.names[1], BAR, 1 << 17, replace=True)
        self.sigs = Ring.create(self.names[2], SIGNAL, 1 << 12, replace=True)
        self.fst, self.ist = new_state(n_inst)
        self.bmarks = np.array([[-1, 0]], dtype=np.int64)
        self.engine = PairsEngine(n_inst, [PairCfg(0, 1, "BTC-USDT/ETH-USDT", throttle_ms=throttle_ms)])
        self._bars_ctx = bars_context([self.ticks], self.bars, self.fst, self.ist, self.bmarks)
        self._bctx = self._bars_ctx.addr
        self._bars = entry_point(bars_run, self._bctx, 0, 0)
        self.engine.bind(self.bars, self.sigs)
        self.rec = np.zeros(1, dtype=BBO)
        self.seq = 0
        self.actions: list[tuple[int, str]] = []
        self.tick_index: list[int] = []

    def push(self, i: int, sym: int, ts: int, bid: float, ask: float) -> None:
        r = self.rec[0]
        self.seq += 1
        r["src_seq"], r["ts_event_ms"], r["instrument"] = self.seq, ts, sym
        r["bid_px"], r["ask_px"], r["bid_qty"], r["ask_qty"] = bid, ask, 1.0, 1.0
        self.ticks.push(self.rec[0])
        self.tick_index.append(i)

    def run(self, max_n: int) -> int:
        """Both kernels over what is queued, as the stages call them; returns ticks consumed."""
        n = self._bars(self._bctx, 0, max_n)[0]
        self.engine.step(2 * max_n)
        return n

    def collect(self) -> None:
        """Drain the signal ring into ``actions`` (tick index of each signal's tick)."""
        from pipeline.records import SIG_ENTER_LONG, SIG_ENTER_SHORT

        names = {SIG_ENTER_LONG: "ENTER_LONG", SIG_ENTER_SHORT: "ENTER_SHORT"}
        fill = self.sigs.fill
        if fill:
            for r in self.sigs.read(self.sigs.consumer_pos, fill):
                bar = self.bars.read(int(r["src_seq"]), 1)[0]
                self.actions.append((self.tick_index[int(bar["src_seq"])], names.get(int(r["action"]), "EXIT")))
            self.sigs.skip(fill)
        for ring in (self.bars,):
            if ring.fill:
                ring.skip(ring.fill)

    def close(self) -> None:
        from pipeline.ring import Ring

        for ring in (self.ticks, self.bars, self.sigs):
            ring.close()
        for name in self.names:
            Ring.unlink(name)


def run_lowlat(stream: list, warm: int, n: int, throttle_ms: int) -> Result:
    """Per-tick latency over the timed ticks, then the same stream again in batches for the sustained rate."""
    syms = {"BTC-USDT": 0, "ETH-USDT": 1}
    res = Result("lowlat")
    pc = time.perf_counter_ns
    for mode in ("per_tick", "batch"):
        ll = Lowlat(2, throttle_ms)
        try:
            for i, (sym, ts, bid, ask) in enumerate(stream[:warm]):  # untimed: the window fills
                ll.push(i, syms[sym], ts, bid, ask)
                if ll.ticks.fill >= BATCH:
                    ll.run(BATCH)
                    ll.collect()
            while ll.ticks.fill:
                ll.run(BATCH)
            ll.collect()
            timed = stream[warm:warm + n]
            gc.collect()
            gc.disable()
            try:
                if mode == "per_tick":
                    lat = res.lat_ns
                    for i, (sym, ts, bid, ask) in enumerate(timed, warm):
                        ll.push(i, syms[sym], ts, bid, ask)
                        t0 = pc()
                        ll.run(1)
                        lat.append(pc() - t0)
                        if ll.sigs.fill or ll.bars.fill > 1 << 15:
                            ll.collect()
                    res.extra["per_tick_ticks_per_s"] = len(lat) / (sum(lat) / 1e9)
                else:
                    spent = 0
                    for k in range(0, len(timed), BATCH):
                        for i, (sym, ts, bid, ask) in enumerate(timed[k:k + BATCH], warm + k):
                            ll.push(i, syms[sym], ts, bid, ask)
                        t0 = pc()
                        while ll.ticks.fill:
                            ll.run(BATCH)
                        spent += pc() - t0
                        ll.collect()
                    res.ticks_per_s = len(timed) / (spent / 1e9)
            finally:
                gc.enable()
            ll.collect()
            if mode == "per_tick":
                res.actions = ll.actions
        finally:
            ll.close()
    return res


def _numpy_port(seed_port: Any) -> type:
    """The seed port with computeIntra / computeClosed recomputed by vectorized numpy."""

    def aligned(self: Any, partial: bool) -> tuple[np.ndarray, np.ndarray, str, int] | None:
        sa, sb = self.rBTC.Snapshot(), self.rETH.Snapshot()
        ma = np.fromiter((b.MinuteMs for b in sa), np.int64, len(sa))
        mb = np.fromiter((b.MinuteMs for b in sb), np.int64, len(sb))
        va = np.fromiter((b.Mean for b in sa), np.float64, len(sa))
        vb = np.fromiter((b.Mean for b in sb), np.float64, len(sb))
        # a later bar of a minute wins, as the seed's map: keep each minute's last occurrence
        ua = len(ma) - 1 - np.unique(ma[::-1], return_index=True)[1]
        ub = len(mb) - 1 - np.unique(mb[::-1], return_index=True)[1]
        common, ia, ib = np.intersect1d(ma[ua], mb[ub], assume_unique=True, return_indices=True)
        xa, xb = va[ua][ia], vb[ub][ib]
        if partial:
            pa, oka = self.aggBTC.Partial()
            pb, okb = self.aggETH.Partial()
            if oka and okb and pa.MinuteMs == pb.MinuteMs and pa.Mean > 0 and pb.Mean > 0:
                if len(common) < 119:
                    return None
                return (np.append(xa[-119:], pa.Mean), np.append(xb[-119:], pb.Mean), "119+partial_aligned",
                        pa.MinuteMs)
        if len(common) < 120:
            return None
        return xa[-120:], xb[-120:], "120closed_aligned", int(common[-1])

    def stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float, float] | None:
        if (a <= 0).any() or (b <= 0).any():
            return None
        la, lb = np.log(a), np.log(b)
        dx = lb - lb.mean()
        vx = float(dx @ dx)
        beta = float(dx @ (la - la.mean())) / vx if vx != 0 else 1.0
        sp = la - beta * lb
        mu = float(sp.mean())
        sd = float(sp.std(ddof=1))
        return beta, float(sp[-1]), mu, sd, (float(sp[-1]) - mu) / sd if sd > 0 else 0.0

    class NumpyPort(seed_port.SeedPort):
        def computeIntra(self, nowMs: int) -> tuple[Any, bool]:
            if self.calcThrottleMs > 0 and nowMs - self.lastCalcAtMs < self.calcThrottleMs:
                return seed_port.Stats(), False
            self.lastCalcAtMs = nowMs
            if self.lastBTCms == 0 or self.lastETHms == 0 or abs(self.lastBTCms - self.lastETHms) > self.freshMs:
                return seed_port.Stats(), False
            w = aligned(self, True)
            s = stats(w[0], w[1]) if w is not None else None
            if s is None:
                return seed_port.Stats(), False
            return seed_port.Stats(Beta=s[0], Spread=s[1], Mu=s[2], Sigma=s[3], Z=s[4], Mode=w[2], MinMs=w[3]), True

        def computeClosed(self) -> tuple[Any, bool]:
            w = aligned(self, False)
            s = stats(w[0], w[1]) if w is not None else None
            if s is None:
                return seed_port.Stats(), False
            return seed_port.Stats(Beta=s[0], Spread=s[1], Mu=s[2], Sigma=s[3], Z=s[4], Mode=w[2], MinMs=w[3]), True

    return NumpyPort


def run_port(impl: str, stream: list, warm: int, n: int, throttle_ms: int) -> Result:
    """The seed port (or its numpy variant): warm untimed, then one ``onTick`` per timed tick."""
    sp = _seed_port()
    cls = sp.SeedPort if impl == "seed-port" else _numpy_port(sp)
    port = cls(ring_cap=sp.windowBars, calcThrottleMs=throttle_ms)
    res = Result(impl)
    ticks = [sp.Tick(*t) for t in stream[:warm + n]]
    for i, t in enumerate(ticks[:warm]):
        port.onTick(i, t)
    pc = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        lat = res.lat_ns
        for i in range(warm, warm + n):
            t0 = pc()
            port.onTick(i, ticks[i])
            lat.append(pc() - t0)
    finally:
        gc.enable()
    res.ticks_per_s = len(lat) / (sum(lat) / 1e9)
    res.actions = [(a.tick, a.action) for a in port.res.actions if a.action.startswith(("ENTER", "EXIT"))]
    return res


# ----------------------------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------------------------


def _pct(lat: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(lat), q)) / 1e3 if lat else math.nan


def run(ticks: int = DEFAULT_TICKS, warm_minutes: int = DEFAULT_WARM_MINUTES, port_ticks: int = 4000,
        seed: int = 11, throttle_ms: int = 0) -> dict[str, Any]:
    """Run all three; returns the JSON document."""
    total_minutes = warm_minutes + ticks * TICK_MS / 2 / 60_000 + 1
    stream = make_stream(seed, total_minutes)
    warm = sum(1 for t in stream if t[1] < START_MS + warm_minutes * 60_000)
    t_start, load0 = time.monotonic(), loadavg()
    results = [run_lowlat(stream, warm, ticks, throttle_ms)]
    for impl in ("seed-port", "numpy-recompute"):
        results.append(run_port(impl, stream, warm, min(port_ticks, ticks), throttle_ms))
    # the same decisions: every implementation's entries / exits within the ticks all of them ran
    upto = warm + min(port_ticks, ticks)
    ref = [a for a in results[1].actions if a[0] < upto]
    agree = {r.impl: [a for a in r.actions if a[0] < upto] == ref for r in results}
    rows = [{"impl": r.impl, "ticks": len(r.lat_ns), "p50_us": _pct(r.lat_ns, 50), "p99_us": _pct(r.lat_ns, 99),
             "ticks_per_s": r.ticks_per_s, **r.extra} for r in results]
    by = {r["impl"]: r for r in rows}
    return {
        "bench": "compute",
        "host": host_info(),
        "stream": {"seed": seed, "legs": ["BTC-USDT", "ETH-USDT"], "tick_ms_per_leg": TICK_MS,
                   "warm_minutes": warm_minutes, "warm_ticks": warm, "throttle_ms": throttle_ms},
        "results": rows,
        "same_actions": agree,
        "actions_compared": len(ref),
        "ratio_vs_numpy": by["lowlat"]["ticks_per_s"] / by["numpy-recompute"]["ticks_per_s"],
        "ratio_vs_seed_port": by["lowlat"]["ticks_per_s"] / by["seed-port"]["ticks_per_s"],
        "bars": {"p99_us": P99_BAR_US, "ratio_vs_numpy": RATIO_BAR},
        "loadavg": [load0, loadavg()],
        "seconds": time.monotonic() - t_start,
    }


def render(doc: dict[str, Any], console: Any) -> None:
    """Print the results table and the bars."""
    from rich.table import Table

    t = Table(title=f"bench compute: one pair, {doc['stream']['tick_ms_per_leg']} ms between a leg's ticks")
    for col in ("impl", "ticks timed", "p50 µs", "p99 µs", "ticks/s", "ticks/s one at a time"):
        t.add_column(col, justify="left" if col == "impl" else "right")
    for r in doc["results"]:
        one = r.get("per_tick_ticks_per_s", r["ticks_per_s"])
        t.add_row(r["impl"], f"{r['ticks']:,}", f"{r['p50_us']:.2f}", f"{r['p99_us']:.2f}", f"{r['ticks_per_s']:,.0f}",
                  f"{one:,.0f}")
    console.print(t)
    lo = next(r for r in doc["results"] if r["impl"] == "lowlat")
    same = all(doc["same_actions"].values())
    console.print(f"  same entries and exits at the same ticks in all three: {'yes' if same else 'NO'} "
                  f"({doc['actions_compared']} compared)", highlight=False)
    console.print(f"  lowlat / numpy-recompute ticks/s = {doc['ratio_vs_numpy']:.1f}x (bar >= {RATIO_BAR:g}x: "
                  f"{'met' if doc['ratio_vs_numpy'] >= RATIO_BAR else 'NOT met'}); lowlat / seed-port = "
                  f"{doc['ratio_vs_seed_port']:.1f}x", highlight=False)
    console.print(f"  lowlat p99 {lo['p99_us']:.2f} µs per tick (bar < {P99_BAR_US:g} µs: "
                  f"{'met' if lo['p99_us'] < P99_BAR_US else 'NOT met'})", highlight=False)
    console.print(f"  lowlat ticks/s: batches of {BATCH} (the sustained rate); p50/p99 and 'one at a time': one tick "
                  f"per kernel call. Host load {doc['loadavg'][0]:.2f} at start, {doc['loadavg'][1]:.2f} at end; "
                  f"{doc['seconds']:.1f} s.", highlight=False)


def write_json(doc: dict[str, Any], path: Path) -> None:
    """Write the JSON document."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
