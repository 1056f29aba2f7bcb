"""The stats stage: the compiled kernel against its plain-Python twin, the seed's 120-bar window bug fixed, the
events.jsonl formatting (Go's encoding/json), and crash equivalence of a real pipeline under SIGKILL."""

from __future__ import annotations

import functools
import itertools
import os
import random
import signal
import time
import uuid
from pathlib import Path

import msgspec
import numpy as np
import pytest
from bar_source_stage import TICK, make_bars, make_ticks, make_warmup
from conftest import cli

from compute.pairs import (
    EV_ENTER_LONG,
    EV_ENTER_SHORT,
    EV_EXIT,
    EV_LOG_5M,
    EV_LOG_5M_SKIP,
    EV_PNL_1M,
    MODE_PARTIAL,
    N_COLD,
    N_PUB,
    ROW,
    PairCfg,
    PairsEngine,
    PairsTwin,
    stats_py,
)
from compute.stats import StatsParams, StatsStage, console_line, go_float, json_row, resolve_pairs, rfc3339_ms
from pipeline import status
from pipeline.config import ConfigError, parse
from pipeline.records import BAR, SIG_ENTER_LONG, SIG_EXIT, SIG_FLAG_MEASURE, SIGNAL
from pipeline.ring import Ring, push_batch
from pipeline.stage import StageContext, _resume

ROW_FIELDS = [f for f in ROW.names if f != "_pad"]


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def _rings(cap_in: int = 4096, cap_out: int = 1024) -> tuple[Ring, Ring, list[str]]:
    name = f"tst{uuid.uuid4().hex[:8]}"
    names = [f"{name}.bars", f"{name}.signals"]
    return Ring.create(names[0], BAR, cap_in), Ring.create(names[1], SIGNAL, cap_out), names


def run_kernel(bars: np.ndarray, n_inst: int, pairs: list[PairCfg], hist: int = 4096, replay_until: int = 0,
               batch: int = 1024) -> tuple[list[tuple], list[np.void], PairsEngine]:
    """Run the compiled engine over ``bars`` through real rings: the first ``replay_until`` records are published
    and released unprocessed, then re-read from ring history and fed to the replay kernel (as after a restart);
    the rest are popped from the ring by ``stats_step``. Returns (event rows as tuples, signal records, engine)."""
    inp, out, names = _rings(max(4096, 1 << max(0, replay_until - 1).bit_length()))
    try:
        eng = PairsEngine(n_inst, pairs, hist=hist)
        eng.bind(inp, out)
        rows: list[tuple] = []
        sigs: list[np.void] = []
        buf = np.zeros(out.capacity, dtype=SIGNAL)

        def collect(nrows: int) -> None:
            rows.extend(tuple(r[f].item() for f in ROW_FIELDS) for r in eng.rows[:nrows])
            k = out.peek_batch(buf)
            sigs.extend(buf[:k].copy())
            out.release(k)

        words = bars.view(np.uint64).reshape(len(bars), -1)
        assert push_batch(inp.hdr, inp.data, words[:replay_until]) == replay_until
        inp.skip(replay_until)
        head = inp.read(0, replay_until)
        assert len(head) == replay_until
        start = 0
        while start < len(head):
            n, nrows, *_ = eng.replay(head, start)
            start += n
            collect(nrows)
        i = replay_until
        while i < len(bars) or inp.fill:
            i += push_batch(inp.hdr, inp.data, words[i:i + inp.capacity])
            while inp.fill:
                _, nrows, *_ = eng.step(batch)
                collect(nrows)
        return rows, sigs, eng
    finally:
        for r, n in zip((inp, out), names, strict=True):
            r.close()
            Ring.unlink(n)


def run_twin(bars: np.ndarray, n_inst: int, pairs: list[PairCfg], seed_rings: int | None = None
             ) -> tuple[list[tuple], list[dict], PairsTwin]:
    tw = PairsTwin(n_inst, pairs, seed_rings=seed_rings)
    rows: list[tuple] = []
    sigs: list[dict] = []
    for r in bars:
        a, b = tw.process(r)
        rows += a
        sigs += b
    return rows, sigs, tw


def assert_same(kernel: tuple, twin: tuple) -> None:
    krows, ksigs, eng = kernel
    trows, tsigs, tw = twin
    assert len(krows) == len(trows)
    for i, (a, b) in enumerate(zip(krows, trows, strict=True)):
        assert a == b, f"event row {i} differs:\n kernel {a}\n twin   {b}"
    assert len(ksigs) == len(tsigs)
    for i, (s, t) in enumerate(zip(ksigs, tsigs, strict=True)):
        got = {k: s[k].item() for k in t}
        assert got == t, f"signal {i} differs:\n kernel {got}\n twin   {t}"
    assert {k: int(v) for k, v in zip(tw.counts, eng.cnt[:len(tw.counts)], strict=True)} == tw.counts


# ----------------------------------------------------------------------------------------------------------------
# 1. kernel == twin
# ----------------------------------------------------------------------------------------------------------------


CASES = {
    # one pair, event-time throttle, hold, a leg with silent minutes, window compaction (400+ minutes > 256)
    "one-pair-hold-throttle": dict(seed=3, ticks=60000, n_inst=2, gap=400.0, silent=(0.03, 0.01), warm=40,
                                   pairs=[PairCfg(0, 1, "A/B", entry_z=1.8, exit_z=0.4, hold_ms=1000, fresh_ms=1000,
                                                  throttle_ms=150, window=30, measure_ms=1500)]),
    # the seed's window and parameters, hold 0, no throttle, warm-up with missing candles, short history ring
    "one-pair-seed-window": dict(seed=5, ticks=40000, n_inst=2, gap=200.0, silent=(0.0, 0.02), warm=150,
                                 missing=0.02, hist=64,
                                 pairs=[PairCfg(0, 1, "A/B", entry_z=2.2, exit_z=0.8, hold_ms=0, fresh_ms=300,
                                                throttle_ms=0, window=120)]),
    # two pairs sharing leg 1, different holds and throttles, a third instrument silent at times; the first
    # third of the stream goes through the replay kernel
    "two-pairs-shared-leg": dict(seed=8, ticks=60000, n_inst=3, gap=150.0, silent=(0.0, 0.02, 0.05), warm=25,
                                 replay=0.33,
                                 pairs=[PairCfg(0, 1, "A/B", entry_z=1.6, exit_z=0.3, hold_ms=1000, fresh_ms=500,
                                                throttle_ms=0, window=20, notional=500.0, measure_ms=4000,
                                                measure_notional=25.0),
                                        PairCfg(2, 1, "C/B", entry_z=1.7, exit_z=0.5, hold_ms=0, fresh_ms=500,
                                                throttle_ms=150, window=25)]),
    # the Kalman hedge (compute.kalman, one step per joined minute) on one pair, OLS on the other
    "kalman-hedge": dict(seed=11, ticks=40000, n_inst=3, gap=150.0, silent=(0.01, 0.0, 0.02), warm=30,
                         pairs=[PairCfg(0, 1, "A/B", entry_z=1.6, exit_z=0.3, hold_ms=500, fresh_ms=500, window=30,
                                        hedge="kalman", kalman_delta=1e-4, kalman_r=1e-6),
                                PairCfg(2, 1, "C/B", entry_z=1.6, exit_z=0.3, hold_ms=500, fresh_ms=500, window=30)]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_equals_python_twin(case: str) -> None:
    c = CASES[case]
    ticks = make_ticks(c["seed"], c["ticks"], c["n_inst"], c["gap"], c["silent"])
    warm = make_warmup(c["seed"], c["warm"], c["n_inst"], missing=c.get("missing", 0.0))
    bars = make_bars(ticks, warm)
    bars["t_origin_ns"] = np.arange(len(bars)) * 7 + 11
    kernel = run_kernel(bars, c["n_inst"], c["pairs"], hist=c.get("hist", 4096),
                        replay_until=int(len(bars) * c.get("replay", 0.0)))
    twin = run_twin(bars, c["n_inst"], c["pairs"])
    assert_same(kernel, twin)
    rows, sigs, eng = kernel
    actions = {r[0] for r in rows}
    # the stream exercises what it should: entries both ways, exits, PnL, 5-minute logs, both windows
    assert {EV_ENTER_LONG, EV_ENTER_SHORT, EV_EXIT, EV_PNL_1M, EV_LOG_5M} <= actions, actions
    assert any(r[1] == MODE_PARTIAL for r in rows if r[0] in (EV_ENTER_LONG, EV_ENTER_SHORT, EV_EXIT))
    assert len(sigs) >= 6
    assert eng.cnt[N_COLD] >= 0
    if len(c["pairs"]) > 1:
        assert {s["pair"] for s in sigs} == {0, 1}
    if any(pc.hedge == "kalman" for pc in c["pairs"]):  # the filter's beta, not the window's OLS slope
        k = [s for s in sigs if c["pairs"][s["pair"]].hedge == "kalman"]
        assert k and all(abs(s["beta"] - _ols_beta(bars, c["pairs"][s["pair"]], s)) > 1e-6 for s in k)
    for p, pc in enumerate(c["pairs"]):  # measurement signals: flagged, alternating, paced, never inside a trade
        mine = [s for s in sigs if s["pair"] == p]
        meas = [s for s in mine if s["flags"] & SIG_FLAG_MEASURE]
        assert bool(meas) == (pc.measure_ms > 0)
        assert all(b["ts_event_ms"] - a["ts_event_ms"] >= pc.measure_ms for a, b in itertools.pairwise(meas))
        for s in meas:
            mid = (s["bid_a"] + s["ask_a"]) / 2 if s["action"] == SIG_ENTER_LONG else None
            assert mid is None or s["qty_a"] == pytest.approx(pc.measure_notional / mid)
        in_trade, expect = False, SIG_ENTER_LONG
        for s in mine:  # enter, exit, enter, ...; a real entry cancels an open measurement
            if not s["flags"] & SIG_FLAG_MEASURE:
                in_trade = s["action"] != SIG_EXIT
                expect = SIG_ENTER_LONG if in_trade else expect
            else:
                assert not in_trade and s["action"] == expect, s
                expect = SIG_EXIT if expect == SIG_ENTER_LONG else SIG_ENTER_LONG


def _ols_beta(bars: np.ndarray, pc: PairCfg, sig: np.void) -> float:
    """OLS beta over the window a signal used, recomputed with the twin (to show the Kalman beta differs)."""
    tw = PairsTwin(3, [PairCfg(pc.a, pc.b, window=pc.window, fresh_ms=10**9, entry_z=1e9, exit_z=0.0)])
    for r in bars[bars["seq"] <= sig["src_seq"]]:
        tw.process(r)
    got = tw._intra_window(0)
    assert got is not None
    return stats_py(got[0], got[1])[0]


def test_kernel_survives_bad_records() -> None:
    """NaN, zero, negative and late bars (the bars stage refuses them) are counted and skipped by both."""
    ticks = make_ticks(4, 8000, 2, 300.0)
    bars = make_bars(ticks, make_warmup(4, 30, 2))
    rng = np.random.default_rng(0)
    idx = rng.choice(np.arange(100, len(bars)), 60, replace=False)
    bad = bars[idx].copy()
    bad["mean"][:20] = np.nan
    bad["mean"][20:30] = 0.0
    bad["bid_px"][30:40] = -1.0
    bad["minute_ms"][40:] -= 120000  # late
    bars = np.insert(bars, np.sort(idx), bad)
    bars["seq"] = np.arange(len(bars))
    pairs = [PairCfg(0, 1, "A/B", entry_z=1.5, exit_z=0.3, window=20, fresh_ms=1000)]
    kernel = run_kernel(bars, 2, pairs)
    twin = run_twin(bars, 2, pairs)
    assert_same(kernel, twin)
    assert twin[2].counts["bad"] >= 50


# ----------------------------------------------------------------------------------------------------------------
# 2. the seed's 120-bar ring bug, fixed
# ----------------------------------------------------------------------------------------------------------------


def _a_before_b(minutes: int) -> np.ndarray:
    """Leg A ticks every 10 s at :x0.100, leg B 100 ms later, so A closes each minute before B; B is silent in the
    last minute of every 5-minute bucket (so the intersection has holes)."""
    rows = []
    t0 = 1_723_118_400_000  # 2024-08-08T12:00:00Z, a 5-minute boundary
    for m in range(minutes):
        for s in range(6):
            ts = t0 + m * 60000 + s * 10000 + 100
            w = 1.0 + 0.002 * np.sin(m / 7.0 + s / 3.0) + 0.0005 * ((m * 7 + s * 3) % 11)
            rows.append((ts, 0, 60000.0 * w, 60000.0 * w + 0.1))
            if m % 5 != 4:
                wb = 1.0 + 0.0015 * np.sin(m / 7.0 + s / 3.0)
                rows.append((ts + 100, 1, 3000.0 * wb, 3000.0 * wb + 0.01))
    return np.array(rows, dtype=TICK)


def test_window_keeps_120_aligned_minutes_when_one_leg_closes_first() -> None:
    bars = make_bars(_a_before_b(260))
    pairs = [PairCfg(0, 1, "BTC/ETH", fresh_ms=300, hold_ms=1000, throttle_ms=0, window=120)]
    kernel = run_kernel(bars, 2, pairs)
    ours = run_twin(bars, 2, pairs)
    assert_same(kernel, ours)
    seed = run_twin(bars, 2, pairs, seed_rings=120)
    logs = [r for r in kernel[0] if r[0] in (EV_LOG_5M, EV_LOG_5M_SKIP)]
    first_warm = next(i for i, r in enumerate(logs) if r[0] == EV_LOG_5M)
    assert all(r[0] == EV_LOG_5M for r in logs[first_warm:]), "a LOG_5M_SKIP once warm"
    assert len(logs) - first_warm >= 15
    # the seed's rings of 120 bars lose aligned minutes: skips while warm, computes refused as not warm
    seed_logs = [r for r in seed[0] if r[0] in (EV_LOG_5M, EV_LOG_5M_SKIP)]
    assert len(seed_logs) == len(logs)
    assert sum(r[0] == EV_LOG_5M_SKIP for r in seed_logs[first_warm:]) >= 15
    assert seed[2].counts["cold"] > ours[2].counts["cold"] + 100


def test_uncapped_seed_intersection_equals_incremental_window() -> None:
    """The incremental append-only window gives exactly the seed's map/intersect/sort selection over uncapped
    per-leg histories."""
    ticks = make_ticks(9, 20000, 2, 300.0, (0.05, 0.05))
    bars = make_bars(ticks, make_warmup(9, 30, 2, missing=0.05))
    pairs = [PairCfg(0, 1, "A/B", entry_z=1.5, exit_z=0.3, window=25, fresh_ms=1000)]
    ours = run_twin(bars, 2, pairs)
    seed = run_twin(bars, 2, pairs, seed_rings=10**9)
    assert ours[0] == seed[0] and ours[1] == seed[1] and len(ours[0]) > 20


# ----------------------------------------------------------------------------------------------------------------
# 3. formatting
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x,want", [
    (1e-07, "1e-7"), (1.5e-7, "1.5e-7"), (-1.2345e-8, "-1.2345e-8"), (1.234e-10, "1.234e-10"),
    (1e-6, "0.000001"), (1e21, "1e+21"), (1e20, "100000000000000000000"), (0.1, "0.1"),
    (123456789.0, "123456789"), (-2.5, "-2.5"), (0.0, "0"), (-0.0, "-0"), (100.0, "100"),
    (0.30000000000000004, "0.30000000000000004"), (12345678901234567890.0, "12345678901234567000"),
    (8.542199, "8.542199"), (-0.35060000000000002, "-0.3506"), (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
])
def test_go_float(x: float, want: str) -> None:
    assert go_float(x) == want


def test_go_float_refuses_nan() -> None:
    with pytest.raises(ValueError):
        go_float(float("nan"))


def test_rfc3339_ms() -> None:
    assert rfc3339_ms(1723118400123) == "2024-08-08T12:00:00.123Z"
    assert rfc3339_ms(1723118400000) == "2024-08-08T12:00:00.000Z"
    assert rfc3339_ms(1722000000999) == "2024-07-26T13:20:00.999Z"


def test_json_rows() -> None:
    assert json_row(1723118400123, 0.3506, 8.542199, 8.5, 0.01, 1.085, "120closed_aligned", "FLAT", "LOG_5M",
                    0.0) == ('{"at_utc":"2024-08-08T12:00:00.123Z","beta":0.3506,"spread":8.542199,"mu":8.5,'
                             '"sigma":0.01,"z":1.085,"mode":"120closed_aligned","pos":"FLAT","action":"LOG_5M"}\n')
    assert json_row(1723118400123, 0, 0, 0, 0, 0, "skip", "SHORT_SPREAD", "LOG_5M_SKIP", 0.0) == (
        '{"at_utc":"2024-08-08T12:00:00.123Z","beta":0,"spread":0,"mu":0,"sigma":0,"z":0,"mode":"skip",'
        '"pos":"SHORT_SPREAD","action":"LOG_5M_SKIP"}\n')
    assert json_row(1723118401000, 1.2, -0.5, -0.25, 1e-7, -2.25, "119+partial_aligned", "LONG_SPREAD", "EXIT",
                    -0.0012, "BTC-USDT/ETH-USDT") == (
        '{"at_utc":"2024-08-08T12:00:01.000Z","beta":1.2,"spread":-0.5,"mu":-0.25,"sigma":1e-7,"z":-2.25,'
        '"mode":"119+partial_aligned","pos":"LONG_SPREAD","action":"EXIT","pnl_pct":-0.0012,'
        '"pair":"BTC-USDT/ETH-USDT"}\n')
    assert '"pnl_pct"' not in json_row(1723118400000, 1, 1, 1, 1, 1, "m", "FLAT", "EXIT", -0.0)
    with pytest.raises(ValueError):
        json_row(1723118400000, float("inf"), 1, 1, 1, 1, "m", "FLAT", "LOG_5M", 0.0)


def test_console_lines() -> None:
    r = np.zeros(1, dtype=ROW)[0]
    r["action"], r["mode"], r["pos"], r["ts_ms"], r["minute_ms"] = EV_ENTER_SHORT, MODE_PARTIAL, 2, 1723118405250, \
        1723118400000
    r["z"], r["beta"], r["spread"] = 2.31234, 0.35061, 8.5421994
    assert console_line(r, 120, "BTC", "ETH") == (
        "[2024-08-08 12:00:05] ENTER SHORT_SPREAD (sell BTC, buy ETH) | minute=2024-08-08 12:00 | z=+2.312 "
        "beta=0.3506 spread=8.542199 mode=119+partial_aligned pos=SHORT_SPREAD")
    r["action"], r["pnl"], r["mode"] = EV_PNL_1M, -0.000123, 0
    assert console_line(r, 120, "BTC", "ETH") == (
        "[1m LOSS] -0.0123% | minute=2024-08-08 12:00 | pos=SHORT_SPREAD | z=+2.312 mode=120closed_aligned")
    r["action"] = EV_LOG_5M_SKIP
    assert console_line(r, 120, "BTC", "ETH") == "[5m log] SKIP: not enough closed aligned bars yet"


# ----------------------------------------------------------------------------------------------------------------
# config errors
# ----------------------------------------------------------------------------------------------------------------


CFG = """
name = "x"
[[instruments]]
symbol = "BTC-USDT"
venue = "kucoin"
[[instruments]]
symbol = "ETH-USDT"
venue = "kucoin"
[[instruments]]
symbol = "ETH-USDT"
venue = "binance"
[rings.ticks]
type = "bbo"
[rings.bars]
type = "bar"
[rings.signals]
type = "signal"
[stages.feed]
kind = "kucoin"
outputs = ["ticks"]
[stages.bars]
kind = "bars"
inputs = ["ticks"]
outputs = ["bars"]
[stages.bars.params]
warmup = false
[stages.stats]
kind = "stats"
inputs = ["bars"]
outputs = ["signals"]
[stages.stats.params]
{params}
[stages.sink]
kind = "check"
inputs = ["signals"]
"""


@pytest.mark.parametrize("params,error", [
    ('pairs = [{a = "XBT-USDT", b = "kucoin:ETH-USDT"}]', "params.pairs[0].a: unknown instrument 'XBT-USDT'"),
    ('pairs = [{a = "BTC-USDT", b = "ETH-USDT"}]', "params.pairs[0].b: 'ETH-USDT' is on several venues"),
    ('pairs = [{a = "BTC-USDT", b = "BTC-USDT"}]', "params.pairs[0]: legs a and b are the same instrument"),
    ('entry_z = 0.5\npairs = [{a = "BTC-USDT", b = "kucoin:ETH-USDT"}]', "params.entry_z: must be greater than exit_z"),
    ('pairs = [{a = "BTC-USDT", b = "kucoin:ETH-USDT", exit_z = 3.0}]',
     "params.entry_z: must be greater than exit_z (params.pairs[0].exit_z = 3.0)"),
    ('pairs = [{a = "BTC-USDT", b = "kucoin:ETH-USDT", window = 2}]', "params.pairs[0].window: the window needs"),
    ('hold_ms = -1\npairs = [{a = "BTC-USDT", b = "kucoin:ETH-USDT"}]', "params.hold_ms: must be >= 0"),
    ('pairs = [{a = "BTC-USDT", b = "kucoin:ETH-USDT", notional = 0.0}]', "params.pairs[0].notional: must be"),
    ('pairs = []', "params.pairs: at least one pair is needed"),
    ('pairs = [{a = "BTC-USDT", b = "binance:ETH-USDT"}]', "params.pairs[0].b: 'ETH-USDT' is on venue 'binance', "
                                                          "which no feed behind stage 'bars' reads"),
    ('hedge = "kalman"\nkalman_delta = 1.5\npairs = [{a = "BTC-USDT", b = "kucoin:ETH-USDT"}]',
     "params.kalman_delta: must be between 0 and 1"),
    ('pairs = [{a = "BTC-USDT", b = "kucoin:ETH-USDT", hedge = "kalman", kalman_r = 0.0}]',
     "params.pairs[0].kalman_r: must be a finite number > 0"),
])
def test_config_errors(params: str, error: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(CFG.replace("{params}", params), "c.toml", host_cpus={0, 1})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("c.toml: stages.stats: ") and error in msg, msg


def test_config_ok_and_defaults() -> None:
    cfg = parse(CFG.replace("{params}", 'pairs = [{a = "BTC-USDT", b = "kucoin:ETH-USDT", hold_ms = 0}]'),
                "c.toml", host_cpus={0, 1})
    p = msgspec.convert(cfg.stages["stats"].params, StatsParams, strict=True)
    (pc,) = resolve_pairs(cfg, p)
    assert (pc.a, pc.b, pc.entry_z, pc.exit_z, pc.hold_ms, pc.fresh_ms, pc.throttle_ms, pc.window) == \
        (0, 1, 2.2, 0.8, 0, 300, 0, 120)


# ----------------------------------------------------------------------------------------------------------------
# 4. crash equivalence
# ----------------------------------------------------------------------------------------------------------------

PIPE = """
name = "{name}"

[[instruments]]
symbol = "BTC-USDT"

[[instruments]]
symbol = "ETH-USDT"

[rings.bars]
type = "bar"
capacity = 16384

[rings.signals]
type = "signal"
capacity = 4096

[stages.source]
kind = "bar_source_stage:BarSource"
outputs = ["bars"]
[stages.source.params]
seed = 21
ticks = 36000
gap_ms = 350.0
warmup_minutes = 70
silent = [0.02, 0.02]
rate_hz = RATE

[stages.stats]
kind = "stats"
inputs = ["bars"]
outputs = ["signals"]
[stages.stats.params]
pairs = [{a = "BTC-USDT", b = "ETH-USDT"}]
entry_z = 1.8
exit_z = 0.4
fresh_ms = 1000
throttle_ms = 150
window = 60

[stages.sink]
kind = "check"
inputs = ["signals"]
[stages.sink.params]
contiguous_src = false

[supervisor]
heartbeat_timeout_s = 5.0
start_timeout_s = 240.0   # stages compile one at a time host-wide: slow when other pipelines start too
backoff_initial_s = 0.02
backoff_max_s = 0.2
max_restarts = 100
restart_window_s = 60
"""
SIG_FIELDS = [f for f in SIGNAL.names if f not in ("t_pub_ns", "t_origin_ns")]


def _stage(status: dict, name: str) -> dict:
    return next(x for x in status["stages"] if x["name"] == name)


def _pipeline_run(make_pipeline, rate: float, kills: int, seed: int) -> tuple[np.ndarray, bytes, dict, int]:
    """A pipeline BarSource -> stats -> check sink; up to ``kills`` SIGKILLs of the stats stage while the first 85%
    of the stream flows, alternately at random moments and right after the sink received a new signal (likely
    before the stage's next checkpoint: its restart then replays and dedups it). (signals, events, status, kills)"""
    p = make_pipeline(PIPE.replace("RATE", str(rate)), "run")
    # generous start: stages compile one at a time host-wide, slow when other pipelines start meanwhile
    cli("up", "--config", str(p.config), "--run-dir", str(p.run_dir), "--detach", "--ready-timeout", "280",
        timeout=300)
    total = len(_inproc_bars())
    rng = random.Random(seed)
    done = 0
    while done < kills:
        if done % 2:
            seen = _stage(p.status(), "sink")["records_in"]
            deadline = time.monotonic() + 5
            while _stage(st := p.status(), "sink")["records_in"] == seen and time.monotonic() < deadline:
                time.sleep(0.002)
        else:
            time.sleep(rng.uniform(0.3, 1.2))
            st = p.status()
        if _stage(st, "source")["records_out"] > 0.85 * total:
            break
        stats = _stage(st, "stats")
        if stats["state"] != "running" or stats["pid"] is None:
            continue
        os.kill(stats["pid"], signal.SIGKILL)
        done += 1
        p.wait_for(lambda s, old=stats["pid"]: _stage(s, "stats")["pid"] not in (None, old)
                   and _stage(s, "stats")["state"] == "running", what="stats restarted")
    p.wait_for(lambda s: _stage(s, "source")["state"] == "done", timeout=180, what="source done")
    st = p.wait_for(lambda s: _stage(s, "stats")["counters"].get("in_pos", 0) >= total
                    and _stage(s, "sink")["records_in"] >= _stage(s, "stats")["counters"]["signals"],
                    timeout=120, what="stats and sink to finish")
    p.down()
    events = (p.run_dir / "events.jsonl").read_bytes()
    return p.sink_records(SIGNAL), events, st, done


class _Harness:
    """The stats stage in this process on real rings, driven like the stage runtime; ``kill()`` abandons the
    instance without flush (as SIGKILL would) and starts a new one, which rebuilds from its checkpoint."""

    def __init__(self, tmp: Path, bars: np.ndarray) -> None:
        self.cfg = parse(PIPE.replace("{name}", "inproc").replace("RATE", "0"), host_cpus={0, 1})
        self.inp, self.out, self.names = _rings(16384, 1024)
        self.run_dir = tmp
        self.row = np.zeros(1, dtype=status.ROW)[0]
        self.words = bars.view(np.uint64).reshape(len(bars), -1)
        self.pushed = 0
        self.deduped = 0
        self.start()

    def start(self) -> None:
        ctx = StageContext("stats", self.cfg, self.cfg.stages["stats"], [self.inp], [self.out], self.row, "block",
                           self.run_dir)
        params = msgspec.convert(self.cfg.stages["stats"].params, StatsParams, strict=True)
        StatsStage(ctx, params).warm()  # as a standby process: warm a throwaway instance, then make the real one
        self.stage = StatsStage(ctx, params)
        _resume(ctx, self.stage, self.stage.rebuild())

    def kill(self) -> None:
        os.close(self.stage.fd)
        self.deduped += int(self.row["deduped"])
        self.row["deduped"] = 0
        self.start()

    def feed(self) -> bool:
        """Push what fits; False when everything was pushed and consumed."""
        self.pushed += push_batch(self.inp.hdr, self.inp.data, self.words[self.pushed:self.pushed + 2000])
        return self.pushed < len(self.words) or self.inp.fill > 0

    def close(self) -> tuple[np.ndarray, bytes]:
        self.stage.flush()
        self.deduped += int(self.row["deduped"])
        recs = self.out.read(0, self.out.producer_pos)
        for r, n in zip((self.inp, self.out), self.names, strict=True):
            r.close()
            Ring.unlink(n)
        return recs, (self.run_dir / "events.jsonl").read_bytes()


@functools.cache
def _inproc_bars() -> np.ndarray:
    """The stream of PIPE's BarSource (its parameters), made once."""
    return make_bars(make_ticks(21, 36000, 2, 350.0, (0.02, 0.02)), make_warmup(21, 70, 2))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[np.ndarray, bytes]:
    """The stats stage of PIPE run in this process over the BarSource stream, never killed: (signals, events)."""
    h = _Harness(tmp_path_factory.mktemp("uninterrupted"), _inproc_bars())
    while h.feed():
        while h.stage.step():
            pass
    return h.close()


def test_restart_from_checkpoint_in_process_equals_uninterrupted(tmp_path: Path, uninterrupted) -> None:
    """Deterministic kills at the worst moments: right after a compiled call published signals (their input
    records released, rows not yet written, no checkpoint since), and after rows were written but before the
    checkpoint; the restarted stage replays ring history from its checkpoint, truncates events.jsonl and the dedup
    marks drop the signals already published."""
    ref, ref_events = uninterrupted
    h = _Harness(tmp_path, _inproc_bars())
    kills = 0
    steps = 0
    while h.feed():
        while True:
            st = h.stage
            pub0 = int(st.engine.cnt[N_PUB])
            n, nrows, closes, _full = st.engine.step(st.batch)
            steps += 1
            if st.engine.cnt[N_PUB] > pub0 and kills < 12:  # signals out, rows and checkpoint not written
                kills += 1
                h.kill()
                continue
            st._after(n, nrows)
            if nrows and kills < 12 and steps % 3 == 0:  # rows written, no checkpoint yet
                kills += 1
                h.kill()
                continue
            if n:
                st.since_ckpt += n
                if closes or st.since_ckpt >= st.ckpt_every:
                    st._checkpoint()
            if n == 0:
                break
    got, events = h.close()
    assert kills >= 10 and h.deduped >= 5 and h.row["errors"] == 0
    assert len(got) == len(ref) >= 6
    for f in SIG_FIELDS:
        assert np.array_equal(got[f], ref[f]), f"signal field {f} differs"
    assert events == ref_events and events.count(b"\n") > 50


def test_sigkill_stats_stage_equals_uninterrupted_run(make_pipeline, uninterrupted) -> None:
    """The stats stage of a real pipeline, SIGKILLed and restarted by the supervisor while bars flow, publishes the
    same signals and writes the same events.jsonl, byte for byte, as the stage never killed."""
    clean, clean_events = uninterrupted
    killed, killed_events, st, kills = _pipeline_run(make_pipeline, 1200, 6, 77)
    stats, sink = _stage(st, "stats"), _stage(st, "sink")
    assert kills >= 3 and stats["restarts"] == kills
    assert sink["errors"] == 0 and sink["counters"]["gaps"] == 0 and sink["counters"]["dups"] == 0
    assert len(clean) >= 6 and len(clean) == len(killed) == stats["counters"]["signals"]
    for f in SIG_FIELDS:
        assert np.array_equal(clean[f], killed[f]), f"signal field {f} differs from the uninterrupted run"
    assert clean_events == killed_events
    text = clean_events.decode()
    for action in ("LOG_5M", "ENTER_", "EXIT", "PNL_1M"):
        assert f'"action":"{action}' in text
