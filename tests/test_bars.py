"""The bars stage: compiled kernel against its plain-Python twin and against a port of the seed's MinuteAgg, the
restart rule at every cut point, crash equivalence of a real pipeline under SIGKILL, and warm-up from the
simulator's candles (and running cold when the venue fails)."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest
from conftest import ENV, SHARED, cli
from simulator_client import Sim

from compute.bars import bars_py, bars_step, new_state, restart_state
from pipeline.config import ConfigError, parse
from pipeline.dedup import marks_from
from pipeline.records import BAR, BAR_CLOSED, BAR_PARTIAL, BAR_WARMUP, BBO
from pipeline.ring import Ring, push_batch

MIN = 60_000
T0 = 1_722_000_000_000 // MIN * MIN
COMPARE = [f for f in BAR.names if f not in ("t_pub_ns", "_pad")]
"""Every field but the publish time."""
RECORDED = SHARED / "data" / "recorded" / "binance_2024-08-08"


# ---------------------------------------------------------------------------------------------------------------
# tick streams
# ---------------------------------------------------------------------------------------------------------------


def _ticks(rows: list[tuple[int, int, float, float]]) -> np.ndarray:
    """BBO records (seq = position) from (instrument, ts_event_ms, bid, ask)."""
    t = np.zeros(len(rows), BBO)
    for k, (inst, ts, bid, ask) in enumerate(rows):
        t[k]["seq"] = k
        t[k]["src_seq"] = k
        t[k]["t_origin_ns"] = 1000 + 7 * k
        t[k]["instrument"], t[k]["ts_event_ms"], t[k]["bid_px"], t[k]["ask_px"] = inst, ts, bid, ask
    return t


def _random_stream(seed: int, n: int, n_inst: int) -> np.ndarray:
    """Several instruments, minute rolls, minutes without ticks, ticks exactly on minute boundaries, late ticks,
    NaN / inf / zero / negative / crossed / locked prices and unknown instrument indices."""
    rng = random.Random(seed)
    ts = T0 + 123
    mids = [100.0 * (i + 1) for i in range(n_inst)]
    rows = []
    for _ in range(n):
        u = rng.random()
        if u < 0.05:
            ts += MIN * rng.randint(2, 4)  # whole minutes without a tick
        elif u < 0.12:
            ts = (ts // MIN + 1) * MIN  # exactly on the next minute boundary
        elif u < 0.15:
            ts = ts // MIN * MIN + MIN - 1  # last ms of the minute
        else:
            ts += rng.randint(0, 4000)
        inst = rng.randrange(n_inst)
        mids[inst] *= math.exp(rng.gauss(0, 1e-3))
        half = mids[inst] * rng.uniform(1e-5, 1e-3)
        bid, ask, t = mids[inst] - half, mids[inst] + half, ts
        v = rng.random()
        if v < 0.02:
            bid = math.nan
        elif v < 0.03:
            ask = math.nan
        elif v < 0.04:
            bid = 0.0
        elif v < 0.05:
            bid, ask = -bid, -ask
        elif v < 0.06:
            bid, ask = ask, bid  # crossed
        elif v < 0.065:
            ask = bid  # locked: bid >= ask
        elif v < 0.07:
            ask = math.inf
        elif v < 0.075:
            inst = n_inst  # not in the instrument table
        elif v < 0.10:
            t = ts - rng.randint(1, 3) * MIN  # late
        rows.append((inst, t, bid, ask))
    return _ticks(rows)


EDGE = _ticks([
    (0, T0, 10.0, 10.2),  # first tick exactly on a boundary
    (1, T0 + 5, 20.0, 20.5),
    (0, T0 + MIN - 1, 10.1, 10.3),  # last ms of the minute
    (0, T0 + MIN, 10.2, 10.4),  # exactly the next boundary: closes minute T0
    (0, T0 + MIN - 1, 10.0, 10.1),  # late by one ms
    (0, T0 + 4 * MIN, 10.0, 10.1),  # minutes 2 and 3 without a tick
    (1, T0 + 4 * MIN + 1, math.nan, 20.0),
    (1, T0 + 4 * MIN + 2, 0.0, 20.0),
    (1, T0 + 4 * MIN + 3, -1.0, 20.0),
    (1, T0 + 4 * MIN + 4, 20.5, 20.0),  # crossed
    (1, T0 + 4 * MIN + 5, 20.0, 20.0),  # locked
    (1, T0 + 4 * MIN + 6, 20.0, math.inf),
    (1, T0 + 4 * MIN + 7, 20.0, 20.1),  # closes minute T0 of instrument 1
    (1, T0 + 3 * MIN, 20.0, 20.1),  # late by a minute
    (2, T0 + 5 * MIN, 1.0, 1.5),
    (2, T0 + 5 * MIN, 1.0, 1.1),
    (2, T0 + 5 * MIN + 59_999, 1.2, 1.3),
    (0, T0 + 6 * MIN, 10.0, 10.1),
])


class _Rings:
    """A real input (BBO) and output (BAR) ring pair in /dev/shm, removed on exit."""

    def __init__(self, cap_in: int, cap_out: int) -> None:
        self.name = f"tb{uuid.uuid4().hex[:10]}"
        self.inp = Ring.create(f"{self.name}.in", BBO, cap_in)
        self.out = Ring.create(f"{self.name}.out", BAR, cap_out)

    def __enter__(self) -> _Rings:
        return self

    def __exit__(self, *exc: object) -> None:
        Ring.unlink(f"{self.name}.in")
        Ring.unlink(f"{self.name}.out")


def _words(recs: np.ndarray) -> np.ndarray:
    return recs.view(np.uint64).reshape(len(recs), recs.dtype.itemsize // 8)


def _drive(ticks: np.ndarray, n_inst: int, seed: int, cap_in: int = 64, cap_out: int = 16,
           marks: np.ndarray | None = None, state: tuple | None = None):
    """Run ``bars_step`` over ``ticks`` through real rings in random batch sizes, draining the (small) output ring
    irregularly so it fills; returns (records, bad, late, deduped, fst, ist, output_full seen)."""
    rng = random.Random(seed)
    fst, ist = state if state is not None else new_state(n_inst)
    marks = marks if marks is not None else np.array([[-1, 0]], np.int64)
    got, bad, late, dd, fulls = [], 0, 0, 0, 0
    buf = np.zeros(cap_out, BAR)
    with _Rings(cap_in, cap_out) as r:
        pos = 0
        while True:
            if pos < len(ticks):
                pos += push_batch(r.inp.hdr, r.inp.data, _words(ticks[pos:pos + rng.randint(1, 40)]))
            _, _, full, b, lt, d = bars_step(r.inp.hdr, r.inp.slots, 0, r.out.hdr, r.out.data, r.out.slots,
                                              fst, ist, marks, rng.randint(1, 30))
            bad, late, dd, fulls = bad + b, late + lt, dd + d, fulls + full
            if rng.random() < 0.6 or full:
                k = r.out.peek_batch(buf[: rng.randint(1, cap_out)])
                got.append(buf[:k].copy())
                r.out.release(k)
            if pos == len(ticks) and r.inp.fill == 0:
                break
        while (k := r.out.peek_batch(buf)) > 0:
            got.append(buf[:k].copy())
            r.out.release(k)
    recs = np.concatenate(got) if got else np.zeros(0, BAR)
    return recs, bad, late, dd, fst, ist, fulls


def _same(got: np.ndarray, want: np.ndarray, fields=COMPARE) -> None:
    assert len(got) == len(want)
    for f in fields:
        if f == "seq":
            continue
        assert np.array_equal(got[f], want[f]), f"field {f} differs"


# ---------------------------------------------------------------------------------------------------------------
# 1. kernel vs twin
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kernel_equals_twin_on_random_streams(seed: int) -> None:
    ticks = _random_stream(seed, 3000, 3)
    got, bad, late, dd, fst, ist, fulls = _drive(ticks, 3, seed)
    f2, i2 = new_state(3)
    want, bad2, late2, dd2 = bars_py(ticks, 0, f2, i2, np.array([[-1, 0]], np.int64))
    assert fulls > 0, "the small output ring filled at least once"
    assert (bad, late, dd) == (bad2, late2, dd2)
    assert bad > 50 and late > 50
    _same(got, want)
    assert np.array_equal(got["seq"], np.arange(len(got)))
    assert np.array_equal(fst, f2) and np.array_equal(ist, i2)
    assert np.all(got["t_pub_ns"] > 0)
    kinds = got["kind"]
    assert (kinds == BAR_CLOSED).sum() > 100 and (kinds == BAR_PARTIAL).sum() == len(ticks) - bad - late


def test_edge_stream_kernel_twin_and_expected_bars() -> None:
    got, bad, late, dd, *_ = _drive(EDGE, 3, 0)
    f2, i2 = new_state(3)
    want, *counts = bars_py(EDGE, 0, f2, i2, np.array([[-1, 0]], np.int64))
    _same(got, want)
    assert (bad, late, dd) == tuple(counts) == (6, 2, 0)
    closed = got[got["kind"] == BAR_CLOSED]
    assert closed[["instrument", "minute_ms", "count"]].tolist() == [(0, T0, 2), (0, T0 + MIN, 1), (1, T0, 1),
                                                                     (0, T0 + 4 * MIN, 1)]
    c0 = closed[0]
    m0, m2, m3 = 0.5 * (10.0 + 10.2), 0.5 * (10.1 + 10.3), 0.5 * (10.2 + 10.4)
    assert (c0["open"], c0["close"], c0["high"], c0["low"]) == (m0, m2, max(m0, m2), min(m0, m2))
    assert c0["sum"] == m0 + m2 and c0["mean"] == (m0 + m2) / 2
    # the closing tick's header and prices ride on both records it produced
    assert c0["src_seq"] == 3 and c0["ts_event_ms"] == T0 + MIN and (c0["bid_px"], c0["ask_px"]) == (10.2, 10.4)
    nxt = got[(got["src_seq"] == 3) & (got["kind"] == BAR_PARTIAL)][0]
    assert nxt["minute_ms"] == T0 + MIN and nxt["count"] == 1 and nxt["open"] == nxt["mean"] == m3
    assert got["t_origin_ns"].tolist() == [EDGE["t_origin_ns"][s] for s in got["src_seq"]]
    p2 = got[got["instrument"] == 2]
    assert p2["count"].tolist() == [1, 2, 3] and p2["minute_ms"].tolist() == [T0 + 5 * MIN] * 3
    assert p2["high"][-1] == 0.5 * (1.2 + 1.3) and p2["low"][-1] == 0.5 * (1.0 + 1.1)


def test_several_input_rings_taken_in_turn_kernel_twin_and_restart_state() -> None:
    """Two input rings (instrument 1 on both) taken in turn: the kernel equals the twin fed the same batches in the
    same order (shared state, src_ring per ring); a kill in the middle of any tick restores the state before it."""
    a = _random_stream(11, 800, 2)
    b = _random_stream(12, 800, 3)
    b["instrument"] = np.where(b["instrument"] == 0, 1, b["instrument"])  # instruments 1 (shared) and 2
    rng = random.Random(3)
    name = f"tb{uuid.uuid4().hex[:10]}"
    rings = [Ring.create(f"{name}.a", BBO, 2048), Ring.create(f"{name}.b", BBO, 2048)]
    out = Ring.create(f"{name}.out", BAR, 8192)
    try:
        for ring, t in zip(rings, (a, b), strict=True):
            push_batch(ring.hdr, ring.data, _words(t))
        fst, ist = new_state(3)
        f2, i2 = new_state(3)
        marks, marks2 = np.array([[-1, 0], [-1, 0]], np.int64), np.array([[-1, 0], [-1, 0]], np.int64)
        want, pos, order = [], [0, 0], []
        while pos != [len(a), len(b)]:
            for r, t in enumerate((a, b)):
                n, _, full, *_ = bars_step(rings[r].hdr, rings[r].slots, r, out.hdr, out.data, out.slots, fst, ist,
                                           marks, rng.randint(0, 50))
                assert not full
                for k in range(pos[r], pos[r] + n):
                    before = (f2.copy(), i2.copy())
                    recs = bars_py(t[k:k + 1], r, f2, i2, marks2)[0]
                    order.append((r, k, len(recs), before))
                    want.append(recs)
                pos[r] += n
        got = out.last_published(out.capacity)
        want = np.concatenate(want)
        _same(got, want)
        assert set(got["src_ring"].tolist()) == {0, 1} and np.array_equal(fst, f2) and np.array_equal(ist, i2)
        # a kill with tick (r, k) in progress after `part` of its outputs: the state is the one before the tick
        published, released = 0, [0, 0]
        for r, k, n_out, before in order:
            for part in range(n_out + 1):
                f3, i3 = new_state(3)
                restart_state(want[:published + part], released, f3, i3)
                assert np.array_equal(f3, before[0]) and np.array_equal(i3, before[1]), (r, k, part)
            published += n_out
            released[r] += 1
    finally:
        for x in (f"{name}.a", f"{name}.b", f"{name}.out"):
            Ring.unlink(x)


def test_dedup_marks_drop_exactly_the_published_outputs() -> None:
    ticks = _random_stream(9, 400, 2)
    f, i = new_state(2)
    ref, *_ = bars_py(ticks, 0, f, i, np.array([[-1, 0]], np.int64))
    for last in sorted(set(ref["src_seq"].tolist()))[5::37]:
        skip = int((ref["src_seq"] == last).sum())
        for k in range(skip + 1):
            marks = np.array([[last, k]], np.int64)
            got, _, _, dd, *_ = _drive(ticks, 2, last + k, marks=marks.copy())
            f2, i2 = new_state(2)
            want, *_ = bars_py(ticks, 0, f2, i2, marks.copy())
            _same(got, want)
            keep = (ref["src_seq"] > last) | ((ref["src_seq"] == last) & (np.cumsum(ref["src_seq"] == last) > k))
            _same(got, ref[keep])
            assert dd == len(ref) - keep.sum()


def test_restart_rule_at_every_cut_gives_the_uninterrupted_stream() -> None:
    """A kill after ``o`` outputs were published and ``c`` ticks released (every consistent (o, c)): the state from
    the output history is the uninterrupted run's state before tick c, and with the dedup marks processing on from
    tick c continues the uninterrupted stream exactly."""
    ticks = _random_stream(5, 600, 3)
    f, i = new_state(3)
    ref, before = [], []
    for k in range(len(ticks)):
        before.append((f.copy(), i.copy()))
        ref.append(bars_py(ticks[k:k + 1], 0, f, i, np.array([[-1, 0]], np.int64))[0])
    before.append((f.copy(), i.copy()))
    ref = np.concatenate(ref)
    src = ref["src_seq"].astype(np.int64)
    rng = random.Random(5)
    cuts = 0
    with _Rings(2, 2048) as r:
        for o in range(len(ref) + 1):
            if o:
                push_batch(r.out.hdr, r.out.data, _words(ref[o - 1:o].copy()))
            marks0 = marks_from(r.out, 1)
            lo = int(src[o - 1]) if o else 0  # the last published output's tick may or may not be released
            hi = int(src[o]) if o < len(ref) else len(ticks)  # the next output's tick is not released
            if o and o < len(ref) and src[o - 1] == src[o]:
                hi = lo  # a tick half published: it is the one in progress
            for c in {lo, hi, rng.randint(lo, hi)}:
                fst, ist = new_state(3)
                restart_state(r.out.last_published(r.out.capacity), [c], fst, ist)
                assert np.array_equal(fst, before[c][0]) and np.array_equal(ist, before[c][1]), (o, c)
                full_tail = rng.random() < 0.05
                rest, *_ = bars_py(ticks[c:] if full_tail else ticks[c:c + 6], 0, fst, ist, marks0.copy())
                _same(rest, ref[o:] if full_tail else ref[o:o + len(rest)])
                cuts += 1
    assert cuts > len(ref)


# ---------------------------------------------------------------------------------------------------------------
# 2. against the seed's MinuteAgg
# ---------------------------------------------------------------------------------------------------------------


class SeedMinuteAgg:
    """Line-by-line port of the seed's ``MinuteAgg`` (statarb_signals.go: ``Update`` / ``Partial``)."""

    def __init__(self) -> None:
        self.cur_min = 0
        self.high = self.low = self.sum = 0.0
        self.cnt = 0

    def update(self, ts_ms: int, bid: float, ask: float) -> tuple | None:
        mid = 0.0 if bid <= 0 or ask <= 0 else 0.5 * (bid + ask)
        if mid <= 0:
            return None
        m = (ts_ms // 60000) * 60000
        if self.cur_min == 0:
            self.cur_min, self.high, self.low, self.sum, self.cnt = m, mid, mid, mid, 1
            return None
        if m == self.cur_min:
            if mid > self.high:
                self.high = mid
            if mid < self.low:
                self.low = mid
            self.sum += mid
            self.cnt += 1
            return None
        closed = (self.cur_min, self.high, self.low, self.sum / self.cnt, self.cnt)
        self.cur_min, self.high, self.low, self.sum, self.cnt = m, mid, mid, mid, 1
        return closed

    def partial(self) -> tuple | None:
        if self.cur_min == 0 or self.cnt == 0:
            return None
        return (self.cur_min, self.high, self.low, self.sum / self.cnt, self.cnt)


def test_closed_and_partial_bars_equal_the_seeds_minute_agg() -> None:
    # valid ticks in time order (the seed accepts NaN and crossed quotes and starts bars in the past: those are
    # the departures tested above)
    rng = random.Random(42)
    ts, mids, rows = T0 + 17, [60000.0, 3000.0], []
    for _ in range(20000):
        ts += rng.choice([0, 1, 50, 900, 3000, 20000, MIN, 3 * MIN])
        inst = rng.randrange(2)
        mids[inst] *= math.exp(rng.gauss(0, 2e-4))
        tick = 0.1 if inst == 0 else 0.01
        bid = math.floor(mids[inst] / tick) * tick
        rows.append((inst, ts, bid, bid + tick * rng.randint(1, 3)))
    ticks = _ticks(rows)
    got, bad, late, *_ = _drive(ticks, 2, 42, cap_in=4096, cap_out=4096)
    assert bad == late == 0
    aggs = [SeedMinuteAgg(), SeedMinuteAgg()]
    want_closed, want_partial = [], []
    for inst, t, bid, ask in rows:
        c = aggs[inst].update(t, bid, ask)
        if c is not None:
            want_closed.append((inst, *c))
        want_partial.append((inst, *aggs[inst].partial()))
    fields = ["instrument", "minute_ms", "high", "low", "mean", "count"]
    closed = got[got["kind"] == BAR_CLOSED][fields].tolist()
    partial = got[got["kind"] == BAR_PARTIAL][fields].tolist()
    assert len(want_closed) > 300
    assert closed == want_closed
    assert partial == want_partial


# ---------------------------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------------------------

CONFIG = """
name = "{name}"

[[instruments]]
symbol = "BTC-USDT"
venue = "kucoin"
tick = 0.1

[[instruments]]
symbol = "ETH-USDT"
venue = "kucoin"
tick = 0.01

[rings.ticks]
type = "bbo"
capacity = 65536

[rings.ticks_b]
type = "bbo"
capacity = 65536

[rings.bars]
type = "bar"
capacity = 65536

[stages.source]
kind = "synthetic"
outputs = ["ticks"]
[stages.source.params]
rate_hz = 200
speed = 20
seed = 5
count = {count}
start_ms = {start_ms}
legs = [0, 0]
b0 = 60000.0

[stages.source_b]
kind = "synthetic"
outputs = ["ticks_b"]
[stages.source_b.params]
rate_hz = 100
speed = 10
seed = 6
count = {count}
start_ms = {start_ms}
legs = [1, 1]
a0 = 3000.0
beta = 1.0

[stages.bars]
kind = "bars"
inputs = ["ticks", "ticks_b"]
outputs = ["bars"]
[stages.bars.params]
{bars_params}

[stages.sink]
kind = "check"
inputs = ["bars"]
[stages.sink.params]
contiguous_src = false

[supervisor]
backoff_initial_s = 0.02
backoff_max_s = 0.2
max_restarts = 100
"""


def _config(bars_params: str, count: int = 400, start_ms: int = T0, name: str = "cfgbars") -> str:
    return CONFIG.format(name=name, count=count, start_ms=start_ms, bars_params=bars_params)


@pytest.mark.parametrize("params,expect", [
    ('instruments = ["SOL-USDT"]', "stages.bars: params.instruments: no instrument 'SOL-USDT' in [[instruments]]"),
    ('instruments = ["binance:BTC-USDT"]', "stages.bars: params.instruments: no instrument 'binance:BTC-USDT'"),
    ('rest_urls = {mexc = "http://x"}', "stages.bars: params.rest_urls.mexc: no candle REST for this venue"),
    ('rest_urls = {kucoin = "127.0.0.1:80"}', "stages.bars: params.rest_urls.kucoin: expected an http(s) URL"),
    ("warmup_minutes = 0", "stages.bars: params.warmup_minutes: must be >= 1, got 0"),
    ("warmup_minutes = 40000", "stages.bars: params.warmup_minutes: 40000 minutes x 2 instruments"),
    ("warmup = 1", "stages.bars.params.warmup: expected `bool`, got `int`"),
    ("colour = 1", "stages.bars.params.colour: unknown key"),
])
def test_bad_bars_config_is_one_line_naming_the_key(params: str, expect: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(_config(params), "x.toml", {0, 1})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("x.toml: " + expect), msg


def test_config_venue_without_candles_and_input_type() -> None:
    text = _config("").replace('venue = "kucoin"', 'venue = "sim"')
    with pytest.raises(ConfigError, match=r"^x\.toml: stages\.bars: params\.warmup: instrument 'BTC-USDT' is on "
                       r"venue 'sim', which has no candle REST"):
        parse(text, "x.toml", {0, 1})
    parse(text.replace("[stages.bars.params]", "[stages.bars.params]\nwarmup = false"), "x.toml", {0, 1})
    cfg = parse(_config('instruments = ["kucoin:ETH-USDT"]'), "x.toml", {0, 1})
    assert cfg.stages["bars"].kind == "bars"
    text = _config("").replace('type = "bar"', 'type = "bar"\n[rings.t2]\ntype = "trade"').replace(
        'inputs = ["ticks", "ticks_b"]', 'inputs = ["ticks", "ticks_b", "t2"]')
    text += '[stages.tsrc]\nkind = "synthetic"\noutputs = ["t2"]\n'
    with pytest.raises(ConfigError, match=r"stages\.bars: inputs: ring 't2' carries 'trade' records, kind 'bars' "
                       r"needs 'bbo'"):
        parse(text, "x.toml", {0, 1})


# ---------------------------------------------------------------------------------------------------------------
# 3. crash equivalence of a real pipeline (replay of recorded Binance spot BTC/ETH)
# ---------------------------------------------------------------------------------------------------------------

REPLAY_CONFIG = """
name = "{name}"

[[instruments]]
symbol = "BTCUSDT"
venue = "binance"
tick = 0.01

[[instruments]]
symbol = "ETHUSDT"
venue = "binance"
tick = 0.01

[rings.ticks]
type = "bbo"
capacity = 65536

[rings.bars]
type = "bar"
capacity = 65536

[stages.binance]
kind = "binance"
outputs = ["ticks"]
[stages.binance.params]
rest_url = "http://127.0.0.1:9"

[stages.bars]
kind = "bars"
inputs = ["ticks"]
outputs = ["bars"]

[stages.sink]
kind = "check"
inputs = ["bars"]
[stages.sink.params]
contiguous_src = false

[supervisor]
backoff_initial_s = 0.02
backoff_max_s = 0.2
max_restarts = 100
"""
REPLAY_FILES = [RECORDED / "spot_btcusdt_20240808.gz", RECORDED / "spot_ethusdt_20240808.gz"]


def _replay_run(make_pipeline, sub: str, speed: str, kills: int, seed: int) -> tuple[np.ndarray, dict, int]:
    p = make_pipeline(REPLAY_CONFIG, sub)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "up", "--config", str(p.config), "--run-dir",
                             str(p.run_dir), "--replay", ",".join(map(str, REPLAY_FILES)), "--speed", speed],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    rng = random.Random(seed)
    done, last = 0, None
    try:
        while done < kills and proc.poll() is None:
            time.sleep(rng.uniform(0.5, 2.5))
            try:
                bars, replay = (p.stage(n) for n in ("bars", "replay"))
            except Exception:  # not up yet
                continue
            if replay["state"] == "done":
                break  # a slow host: fewer kills (at least 3 are required below)
            if bars["state"] != "running" or bars["pid"] is None or bars["records_in"] == 0:
                continue
            os.kill(bars["pid"], signal.SIGKILL)
            done += 1
            p.wait_for(lambda s, old=bars["pid"]: next(x for x in s["stages"] if x["name"] == "bars")["pid"]
                       not in (None, old), timeout=60, what="bars restarted")
            last = p.status()
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "every stage has drained" in out
    return p.sink_records(BAR), (last or {}), done


def _dump_ticks(tmp_path: Path) -> np.ndarray:
    """The replayed BBO stream, parsed independently of the pipeline (``pipeline replay --dump``)."""
    out = tmp_path / "dump.jsonl"
    cli("replay", ",".join(map(str, REPLAY_FILES)), "--dump", str(out))
    inst = {"BTCUSDT": 0, "ETHUSDT": 1}
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return _ticks([(inst[r["symbol"]], r["ts_event_ms"], r["bid"], r["ask"]) for r in rows if r["kind"] == "bbo"])


@pytest.mark.skipif(not RECORDED.is_dir(), reason="shared/data/recorded is not beside the project")
def test_bars_stage_sigkilled_repeatedly_publishes_the_uninterrupted_stream(make_pipeline, tmp_path) -> None:
    clean, _, _ = _replay_run(make_pipeline, "clean", "max", kills=0, seed=0)
    killed, status, kills = _replay_run(make_pipeline, "killed", "12", kills=6, seed=77)
    assert kills >= 3, f"the replay ended after only {kills} kills"
    # the stream is the twin's over the replayed ticks (t_origin_ns is the replay's own monotonic receive time)
    ticks = _dump_ticks(tmp_path)
    f, i = new_state(2)
    want, *_ = bars_py(ticks, 0, f, i, np.array([[-1, 0]], np.int64))
    fields = [x for x in COMPARE if x != "t_origin_ns"]
    assert len(want) > 50_000 and (want["kind"] == BAR_CLOSED).sum() >= 10
    _same(clean, want, fields)
    assert np.array_equal(clean["seq"], np.arange(len(clean)))
    # the killed run: record for record the same (seq included), nothing lost, nothing twice
    _same(killed, clean, fields)
    assert np.array_equal(killed["seq"], clean["seq"])
    # records of one tick carry its t_origin_ns, which grows with the tick (a re-processed tick kept it)
    for run in (clean, killed):
        same_tick = np.diff(run["src_seq"].astype(np.int64)) == 0
        assert np.array_equal(np.diff(run["t_origin_ns"])[same_tick], np.zeros(same_tick.sum(), np.int64))
        assert np.all(np.diff(run["t_origin_ns"]) >= 0)
    b = next(x for x in status["stages"] if x["name"] == "bars")
    assert b["restarts"] == kills


# ---------------------------------------------------------------------------------------------------------------
# 4. warm-up from the simulator's candles
# ---------------------------------------------------------------------------------------------------------------


def _sim_candles(sim: Sim, symbol: str, first_ms: int, last_ms: int) -> dict[int, tuple[float, ...]]:
    """The simulator's KuCoin one-minute candles, minute -> (open, high, low, close), parsed here."""
    qs = urllib.parse.urlencode({"symbol": symbol, "type": "1min", "startAt": first_ms // 1000,
                                 "endAt": last_ms // 1000 + 59})
    rows = sim.get(f"/api/v1/market/candles?{qs}")["data"]
    return {int(r[0]) * 1000: (float(r[1]), float(r[3]), float(r[4]), float(r[2])) for r in rows
            if first_ms <= int(r[0]) * 1000 <= last_ms}


def _wait_clear_of_minute_edge() -> None:
    """Start well inside a minute, so the test knows the minute the stage starts in within a bound."""
    s = time.time() % 60
    if s > 45:
        time.sleep(61 - s)


@pytest.fixture
def sim():
    s = Sim("--seed", "3").ready()
    yield s
    s.stop()


def test_warmup_publishes_the_venues_candles_once(make_pipeline, sim) -> None:
    _wait_clear_of_minute_edge()
    t_before = int(time.time() * 1000)
    live_start = (t_before // MIN + 90) * MIN + 250  # live ticks an hour and a half ahead: never late
    p = make_pipeline(_config(f'rest_urls = {{kucoin = "{sim.http}"}}\nwarmup_minutes = 150', count=400,
                              start_ms=live_start, name="{name}"))
    p.up()
    st = p.wait_for(lambda s: next(x for x in s["stages"] if x["name"] == "sink")["records_in"] >= 300 + 800,
                    timeout=120, what="warm-up and live bars at the sink")
    t_after = int(time.time() * 1000)
    bars = next(x for x in st["stages"] if x["name"] == "bars")
    assert bars["counters"]["warmup"] == 300 and bars["errors"] == 0, bars
    recs = p.sink_records(BAR)
    warm = recs[recs["kind"] == BAR_WARMUP]
    assert len(warm) == 300 and np.all(recs["kind"][:300] == BAR_WARMUP), "warm-up first, before any live bar"
    # minute-ordered across instruments; the 150 whole minutes before the start minute
    assert np.array_equal(warm["minute_ms"], np.repeat(warm["minute_ms"][::2], 2))
    assert warm["instrument"].tolist() == [0, 1] * 150
    minutes = warm["minute_ms"][::2]
    assert np.all(np.diff(minutes) == MIN)
    start_minute = int(minutes[-1]) + MIN
    assert t_before // MIN * MIN <= start_minute <= t_after // MIN * MIN
    assert np.all(warm["minute_ms"] < t_after // MIN * MIN)
    for inst, symbol in enumerate(("BTC-USDT", "ETH-USDT")):
        w = warm[warm["instrument"] == inst]
        candles = _sim_candles(sim, symbol, int(minutes[0]), int(minutes[-1]))
        assert sorted(candles) == minutes.tolist()
        assert [tuple(x) for x in w[["open", "high", "low", "close"]].tolist()] == [candles[m] for m in minutes]
        assert np.array_equal(w["mean"], 0.5 * (w["high"] + w["low"])) and np.array_equal(w["sum"], w["mean"])
    assert np.all(warm["count"] == 1) and np.all(warm["bid_px"] == 0) and np.all(warm["ask_px"] == 0)
    assert np.all(warm["src_ring"] == 0xFFFF) and np.all(warm["src_seq"] == 0)
    assert np.array_equal(warm["ts_event_ms"], warm["minute_ms"] + MIN - 1)
    # live bars from both input rings (one instrument each), every tick exactly once
    live = recs[300:]
    assert np.all(live["kind"] == BAR_PARTIAL) and np.all(live["minute_ms"] >= live_start // MIN * MIN)
    for ring in (0, 1):
        mine = live[live["src_ring"] == ring]
        assert np.all(mine["instrument"] == ring) and np.array_equal(mine["src_seq"], np.arange(400))
        assert np.array_equal(mine["count"], np.arange(1, 401))

    # a restart (SIGKILL) finds the ring not empty: no second warm-up
    os.kill(bars["pid"], signal.SIGKILL)
    p.wait_for(lambda s: next(x for x in s["stages"] if x["name"] == "bars")["pid"] not in (None, bars["pid"]) and
               next(x for x in s["stages"] if x["name"] == "bars")["state"] == "running", what="bars restarted")
    time.sleep(1.0)
    st = p.status()
    ring = next(r for r in st["rings"] if r["name"] == "bars")
    assert ring["producer_pos"] == len(recs), "nothing new published by the restart"
    again = p.sink_records(BAR)
    assert (again["kind"] == BAR_WARMUP).sum() == 300
    b2 = next(x for x in st["stages"] if x["name"] == "bars")
    assert b2["counters"]["warmup"] == 300 and b2["restarts"] == 1


def test_venue_error_runs_cold_and_says_why(make_pipeline, sim) -> None:
    sim.fault(kind="rest_error", venue="kucoin", status=500, count=1000)
    p = make_pipeline(_config(f'rest_urls = {{kucoin = "{sim.http}"}}', count=400,
                              start_ms=(int(time.time() * 1000) // MIN + 90) * MIN, name="{name}"))
    p.up()
    st = p.wait_for(lambda s: next(x for x in s["stages"] if x["name"] == "sink")["records_in"] >= 800,
                    timeout=120, what="live bars at the sink")
    bars = next(x for x in st["stages"] if x["name"] == "bars")
    assert bars["state"] == "running" and bars["restarts"] == 0
    assert bars["errors"] == 1 and "warm-up" in bars["last_error"] and "HTTP 500" in bars["last_error"]
    assert "running cold" in bars["last_error"], bars["last_error"]
    assert "warmup" not in bars["counters"] or bars["counters"]["warmup"] == 0
    recs = p.sink_records(BAR)
    assert len(recs) == 800 and not np.any(recs["kind"] == BAR_WARMUP)
    assert recs["kind"][0] == BAR_PARTIAL and recs["count"][0] == 1
    log = (p.run_dir / "logs" / "bars.log").read_text()
    assert sum("warm-up" in line and "HTTP 500" in line for line in log.splitlines()) == 1, log
