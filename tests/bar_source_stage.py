"""A finite deterministic source of BAR records for stats-stage tests, and the stream generator behind it.

``make_ticks`` draws a seeded tick stream of cointegrated instruments (a common random walk, an OU spread per
instrument with occasional jumps, optional silent minutes per instrument); ``make_warmup`` one-minute warm-up
candles before it; ``make_bars`` aggregates both into the BAR records the bars stage publishes (BAR_WARMUP in
minute order across instruments, then per tick a BAR_CLOSED when the minute rolls and a BAR_PARTIAL). The
``BarSource`` stage publishes that stream (``src_seq`` = index in it), paced, and resumes after the last record
published when restarted.
"""

from __future__ import annotations

import time

import msgspec
import numpy as np

from pipeline.dedup import LAST
from pipeline.records import BAR, BAR_CLOSED, BAR_PARTIAL, BAR_WARMUP
from pipeline.ring import push_batch
from pipeline.stage import DONE, Stage, StageContext

TICK = np.dtype([("ts", "<i8"), ("inst", "<i8"), ("bid", "<f8"), ("ask", "<f8")])
START_MS = 1_722_000_000_000  # 2024-07-26T13:20:00Z


def _paths(rng: np.random.Generator, n: int, n_inst: int, half_life: float, spread_sd: float,
           jump_p: float) -> np.ndarray:
    """ln prices (n, n_inst): common walk x, ln P_i = ln p0_i + beta_i x + s_i with OU spreads s_i."""
    x = np.cumsum(rng.normal(0.0, 1.5e-5, n))
    phi = 0.5 ** (1.0 / half_life)
    innov = rng.normal(0.0, spread_sd * np.sqrt(1 - phi * phi), (n, n_inst))
    jumps = (rng.random((n, n_inst)) < jump_p) * rng.choice([-1.0, 1.0], (n, n_inst)) * 6 * spread_sd
    s = np.zeros((n, n_inst))
    cur = np.zeros(n_inst)
    for k in range(n):
        cur = phi * cur + innov[k] + jumps[k]
        s[k] = cur
    p0 = np.log(np.array([60000.0, 3000.0, 150.0, 0.5])[:n_inst])
    beta = np.array([1.0, 0.8, 1.3, 0.9])[:n_inst]
    return p0 + beta * x[:, None] + s


def make_ticks(seed: int, n: int, n_inst: int = 2, gap_ms: float = 250.0, silent: tuple[float, ...] = (),
               start_ms: int = START_MS, half_life: float = 3000.0, spread_sd: float = 4e-4,
               jump_p: float = 2e-4) -> np.ndarray:
    """``n`` ticks (TICK dtype) over ``n_inst`` instruments; ``silent[i]``: probability that instrument i sends
    nothing during a given minute."""
    rng = np.random.default_rng(seed)
    ts = start_ms + np.floor(np.cumsum(rng.exponential(gap_ms, n))).astype(np.int64)
    inst = rng.integers(0, n_inst, n)
    lp = _paths(rng, n, n_inst, half_life, spread_sd, jump_p)
    mid = np.exp(lp[np.arange(n), inst])
    half = mid * rng.integers(1, 4, n) * 1e-5
    keep = np.ones(n, dtype=bool)
    minutes = ts // 60000
    for i, p in enumerate(silent):
        if p > 0:
            off = np.unique(minutes)[rng.random(len(np.unique(minutes))) < p]
            keep &= ~((inst == i) & np.isin(minutes, off))
    out = np.zeros(int(keep.sum()), dtype=TICK)
    out["ts"], out["inst"], out["bid"], out["ask"] = ts[keep], inst[keep], (mid - half)[keep], (mid + half)[keep]
    return out


def make_warmup(seed: int, minutes: int, n_inst: int = 2, start_ms: int = START_MS,
                missing: float = 0.0) -> list[tuple[int, int, float, float, float, float]]:
    """Warm-up candles (minute_ms, inst, open, high, low, close) for the ``minutes`` whole minutes before
    ``start_ms``, in minute order across instruments; ``missing``: probability a candle is absent."""
    rng = np.random.default_rng(seed + 1_000_003)
    lp = _paths(rng, minutes * 20, n_inst, 600.0, 4e-4, 0.0)[::20]
    first = (start_ms // 60000 - minutes) * 60000
    out = []
    for k in range(minutes):
        for i in range(n_inst):
            if rng.random() < missing:
                continue
            mid = float(np.exp(lp[k, i]))
            out.append((first + k * 60000, i, mid, mid * 1.0002, mid * 0.9997, mid * 1.0001))
    return out


def make_bars(ticks: np.ndarray, warmup: list | None = None) -> np.ndarray:
    """The BAR records the bars stage would publish for ``warmup`` candles then ``ticks``."""
    cols: dict[str, list] = {k: [] for k in ("src_seq", "ts_event_ms", "src_ring", "instrument", "minute_ms", "open",
                                              "high", "low", "close", "sum", "mean", "bid_px", "ask_px", "count",
                                              "kind")}

    def add(src, ts, ring, inst, minute, o, h, lo, c, s, mean, bid, ask, count, kind) -> None:
        for k, v in zip(cols, (src, ts, ring, inst, minute, o, h, lo, c, s, mean, bid, ask, count, kind),
                        strict=True):
            cols[k].append(v)

    for minute, inst, o, h, lo, c in warmup or []:
        mean = 0.5 * (h + lo)
        add(0, minute + 59999, 0xFFFF, inst, minute, o, h, lo, c, mean, mean, 0.0, 0.0, 1, BAR_WARMUP)
    cur: dict[int, list] = {}  # inst -> [minute, open, high, low, close, sum, count]
    for k, t in enumerate(ticks):
        ts, inst, bid, ask = int(t["ts"]), int(t["inst"]), float(t["bid"]), float(t["ask"])
        mid = 0.5 * (bid + ask)
        m = ts // 60000 * 60000
        b = cur.get(inst)
        if b is not None and m < b[0]:
            continue  # late tick: the bars stage drops it
        if b is not None and m > b[0]:
            add(k, ts, 0, inst, b[0], b[1], b[2], b[3], b[4], b[5], b[5] / b[6], bid, ask, b[6], BAR_CLOSED)
            b = None
        if b is None:
            b = cur[inst] = [m, mid, mid, mid, mid, mid, 1]
        else:
            b[2], b[3], b[4] = max(b[2], mid), min(b[3], mid), mid
            b[5] += mid
            b[6] += 1
        add(k, ts, 0, inst, b[0], b[1], b[2], b[3], b[4], b[5], b[5] / b[6], bid, ask, b[6], BAR_PARTIAL)
    out = np.zeros(len(cols["kind"]), dtype=BAR)
    for k, v in cols.items():
        out[k] = v
    out["seq"] = np.arange(len(out))
    return out


class BarSourceParams(msgspec.Struct, forbid_unknown_fields=True):
    """Parameters of the test BAR source."""

    seed: int = 1
    ticks: int = 20000
    """Ticks in the stream (BAR_PARTIAL records; closed bars come on top)."""
    instruments: int = 2
    gap_ms: float = 250.0
    """Mean event-time gap between ticks."""
    warmup_minutes: int = 0
    silent: list[float] = []
    """Per instrument: probability of a minute without ticks."""
    rate_hz: float = 0.0
    """Records per second of wall time; 0: as fast as the ring takes them."""


class BarSource(Stage):
    """Publishes the deterministic BAR stream of its parameters, then reports done."""

    Params = BarSourceParams
    input_types = ()
    output_types = ("bar",)

    def __init__(self, ctx: StageContext, params: BarSourceParams) -> None:
        super().__init__(ctx, params)
        p = params
        ticks = make_ticks(p.seed, p.ticks, p.instruments, p.gap_ms, tuple(p.silent))
        warm = make_warmup(p.seed, p.warmup_minutes, p.instruments) if p.warmup_minutes else None
        self.bars = make_bars(ticks, warm)
        self.bars["src_seq"] = np.arange(len(self.bars))
        self.bars["src_ring"] = 0
        self.words = self.bars.view(np.uint64).reshape(len(self.bars), -1)
        self.out = ctx.outputs[0]
        self.k = 0

    def rebuild(self) -> list[int]:
        """Resume after the last record published."""
        self.k = int(self.marks[0, LAST]) + 1
        self.t0 = time.monotonic()
        self.k0 = self.k
        return []

    def step(self) -> int:
        """Publish the records due by now."""
        if self.k >= len(self.bars):
            return DONE
        due = len(self.bars)
        if self.params.rate_hz > 0:
            due = min(due, self.k0 + int((time.monotonic() - self.t0) * self.params.rate_hz) + 1)
        n = min(due - self.k, 512)
        if n <= 0:
            time.sleep(0.001)
            return 0
        chunk = self.words[self.k:self.k + n]
        now = time.perf_counter_ns()
        self.bars["t_origin_ns"][self.k:self.k + n] = now
        self.bars["t_pub_ns"][self.k:self.k + n] = now
        done = push_batch(self.out.hdr, self.out.data, chunk)
        if done < n:
            self.out.output_full(self.ctx.wait)
        self.k += done
        self.ctx.row["records_out"] += done
        return done
