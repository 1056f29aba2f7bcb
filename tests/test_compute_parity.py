"""Issue 4 parity: the bars and stats stages against the plain-Python port of the seed Go bot (tests/seed_port.py).

The port itself is first checked against cases worked out by hand from the Go code. Then the real pipeline
(`pipeline up --config tests/configs/compute_parity*.toml --replay FILES --speed max`) runs over two tick streams
(tests/compute_streams.py): the simulator's seeded BTC-USDT / ETH-USDT pair over five hours of event time, and the
real Binance USD-M BTC/ETH recordings of shared/data/recorded/binance_2024-08-08 after a synthetic two-hour
warm-up. Asserted: the same bars as the port (every partial and closed bar, exactly), the same events.jsonl rows
as the port without the seed's 120-bar cap (same count; strings, actions and timestamps exact, floats to 1e-9
relative), the same signals at the same ticks, with the stats throttle at 150 ms and at 0; the seed as written
(rings of 120) logs LOG_5M_SKIP while warm where ours logs LOG_5M; and SIGKILLs of the bars and stats stages
during a replay leave events.jsonl and the signals identical to the uninterrupted run's.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import compute_streams as cs
import numpy as np
import pytest
from conftest import ENV, SHARED, TESTS
from seed_port import (
    FIXED_CAP,
    Bar,
    Kline,
    MinuteAgg,
    PortResult,
    Ring,
    Stats,
    Tick,
    at_utc,
    buildAligned120,
    calcStatsFromPrices120,
    go_float,
    logRow,
    meanStd,
    olsBeta,
    run_port,
)

from pipeline.control import ControlError, request
from pipeline.records import BAR, BAR_CLOSED, BAR_PARTIAL, SIG_ENTER_LONG, SIG_ENTER_SHORT, SIG_EXIT, SIGNAL

CONFIGS = TESTS / "configs"
BINANCE = SHARED / "data" / "recorded" / "binance_2024-08-08"
BINANCE_FILES = [BINANCE / "usdm_btcusdt_20240808.gz", BINANCE / "usdm_ethusdt_20240808.gz"]
STAGES = importlib.util.find_spec("compute.bars") is not None and importlib.util.find_spec("compute.stats") is not None
needs_stages = pytest.mark.skipif(not STAGES, reason="compute/bars.py and compute/stats.py are not there yet")
needs_binance = pytest.mark.skipif(not BINANCE.is_dir(), reason="shared/data/recorded is not beside the project")
SYMS = ("BTC-USDT", "ETH-USDT")
REL, ABS = 1e-9, 1e-12
"""Float agreement: relative, with an absolute floor for values that are 0 up to rounding."""
SIG_ACTIONS = {"ENTER_LONG": SIG_ENTER_LONG, "ENTER_SHORT": SIG_ENTER_SHORT, "EXIT": SIG_EXIT}
SIGNAL_FIELDS = [f for f in SIGNAL.names if f not in ("t_origin_ns", "t_pub_ns")]
"""Signal record fields that must not depend on the run (the two monotonic timestamps do)."""


# -- the port against hand-worked cases from the Go code ------------------------------------------------------------


def test_port_minute_agg_and_ring_follow_the_go_code() -> None:
    agg = MinuteAgg("BTC-USDT")
    assert agg.Partial() == (Bar(), False)
    assert agg.Update(Tick("BTC-USDT", 60_000, 0.0, 11.0)) == (Bar(), False)  # mid 0: ignored, no bar started
    assert agg.curMin == 0
    for ts, bid, ask in ((60_100, 9.0, 11.0), (60_200, 11.0, 13.0), (119_999, 10.0, 12.0)):
        assert agg.Update(Tick("BTC-USDT", ts, bid, ask)) == (Bar(), False)
    assert agg.Partial() == (Bar(60_000, 12.0, 10.0, 11.0, 3), True)
    closed, ok = agg.Update(Tick("BTC-USDT", 180_500, 20.0, 22.0))  # a minute with no tick in between
    assert ok and closed == Bar(60_000, 12.0, 10.0, 11.0, 3)
    assert agg.Partial() == (Bar(180_000, 21.0, 21.0, 21.0, 1), True)

    r = Ring(3)
    for m in range(5):
        r.Push(Bar(MinuteMs=m))
        assert r.Len() == min(m + 1, 3)
    assert [b.MinuteMs for b in r.Snapshot()] == [2, 3, 4]


def test_port_stats_helpers_by_hand_and_against_numpy() -> None:
    # olsBeta(x, y): mx = 2, my = 25/6; cov = (-1)(-13/6) + 0 + (1)(14/6) = 4.5; vx = 2
    assert olsBeta([1.0, 2.0, 3.0], [2.0, 4.0, 6.5]) == pytest.approx(2.25, rel=1e-15)
    assert olsBeta([2.0, 2.0], [1.0, 3.0]) == 1.0  # no variance of x
    assert olsBeta([1.0], [1.0, 2.0]) == 1.0  # lengths differ
    assert meanStd([1.0, 2.0, 3.0, 4.0]) == (2.5, math.sqrt(5.0 / 3.0))
    assert meanStd([7.0]) == (7.0, 0.0) and meanStd([]) == (0.0, 0.0)
    rng = np.random.default_rng(5)
    eth = 3000 * np.exp(np.cumsum(rng.normal(0, 1e-3, 120)))
    btc = np.exp(3.0 + 1.1 * np.log(eth) + rng.normal(0, 5e-4, 120))
    beta, spread, mu, sigma, z, ok = calcStatsFromPrices120(btc.tolist(), eth.tolist())
    assert ok
    b_np = np.polyfit(np.log(eth), np.log(btc), 1)[0]
    s_np = np.log(btc) - beta * np.log(eth)
    assert beta == pytest.approx(b_np, rel=1e-9)
    assert (spread, mu, sigma) == pytest.approx((s_np[-1], s_np.mean(), s_np.std(ddof=1)), rel=1e-12)
    assert z == pytest.approx((s_np[-1] - s_np.mean()) / s_np.std(ddof=1), rel=1e-9)
    assert not calcStatsFromPrices120(btc.tolist()[:119], eth.tolist()[:119])[-1]
    assert not calcStatsFromPrices120([0.0, *btc.tolist()[1:]], eth.tolist())[-1]


def test_port_window_choice_is_the_seeds() -> None:
    ra, rb = Ring(FIXED_CAP), Ring(FIXED_CAP)
    for m in range(121):
        ra.Push(Bar(MinuteMs=m * 60_000, Mean=100.0 + m))
        if m != 7:  # leg B has no bar in minute 7: the intersection skips it
            rb.Push(Bar(MinuteMs=m * 60_000, Mean=50.0 + m % 3))
    aa, ab = MinuteAgg("A"), MinuteAgg("B")
    a, b, mode, min_ms, ok = buildAligned120(ra, rb, aa, ab)  # no partials: the last 120 common closed minutes
    assert ok and mode == "120closed_aligned" and min_ms == 120 * 60_000 and len(a) == 120
    assert a[0] == 100.0 and 107.0 not in a and a[-1] == 220.0
    aa.Update(Tick("A", 121 * 60_000 + 5, 300.0, 302.0))
    ab.Update(Tick("B", 121 * 60_000 + 9, 60.0, 62.0))
    a, b, mode, min_ms, ok = buildAligned120(ra, rb, aa, ab)  # both partials in minute 121
    assert ok and mode == "119+partial_aligned" and min_ms == 121 * 60_000
    assert (a[-1], b[-1], a[-2], a[0]) == (301.0, 61.0, 220.0, 101.0)
    ab.Update(Tick("B", 122 * 60_000 + 1, 60.0, 62.0))  # partials in different minutes: closed only again
    assert buildAligned120(ra, rb, aa, ab)[2] == "120closed_aligned"
    seed_a, seed_b = Ring(120), Ring(120)  # the seed's rings: leg B's gap costs the window a minute
    for bar in ra.Snapshot():
        seed_a.Push(bar)
    for bar in rb.Snapshot():
        seed_b.Push(bar)
    assert not buildAligned120(seed_a, seed_b, MinuteAgg("A"), MinuteAgg("B"))[-1]


def test_port_json_rows_are_go_encoding_json() -> None:
    cases = {0.1: "0.1", 1e-7: "1e-7", 1.5e-7: "1.5e-7", 123.0: "123", 1e21: "1e+21", 1e20: "100000000000000000000",
             0.000001: "0.000001", -0.00012: "-0.00012", 5e-324: "5e-324", 0.0: "0", -2.5e-10: "-2.5e-10",
             1.2345678901234568e-5: "0.000012345678901234568", 9.99999e-7: "9.99999e-7"}
    for x, want in cases.items():
        assert go_float(x) == want, x
    assert at_utc(1_723_161_256_311) == "2024-08-08T23:54:16.311Z" and at_utc(1_723_161_240_000).endswith(":00.000Z")
    assert logRow(1_723_161_240_000, "LOG_5M_SKIP", "FLAT", Stats(Mode="skip"), None) == (
        '{"at_utc":"2024-08-08T23:54:00.000Z","beta":0,"spread":0,"mu":0,"sigma":0,"z":0,"mode":"skip",'
        '"pos":"FLAT","action":"LOG_5M_SKIP"}')
    row = logRow(60_001, "EXIT", "LONG_SPREAD", Stats(1.5, -0.25, 1e-7, 2.0, -0.5, "119+partial_aligned"), 0.0125)
    assert json.loads(row) == {"at_utc": "1970-01-01T00:01:00.001Z", "beta": 1.5, "spread": -0.25, "mu": 1e-7,
                               "sigma": 2.0, "z": -0.5, "mode": "119+partial_aligned", "pos": "LONG_SPREAD",
                               "action": "EXIT", "pnl_pct": 0.0125}
    assert '"mu":1e-7,' in row and '"sigma":2,' in row and "pnl_pct" not in logRow(0, "EXIT", "FLAT", Stats(), 0.0)


def _hand_stream() -> tuple[tuple[list[Kline], list[Kline]], list[Tick]]:
    """120 warm-up minutes of a tight pair (spread noise +-1 bp, none in the last minute), then leg A jumps 10 bp for
    minute 120 (z >> 2.2), then back in 121.
    Ticks every 100 ms alternating A, B from 56 s into minute 120 on."""
    m0 = 1_723_000_000 // 60 * 60  # a minute, in seconds
    ka, kb = [], []
    for k in range(120):
        e = 50.0 * (1 + 0.001 * math.sin(k))
        a = 100.0 * (1 + 0.001 * math.sin(k)) * (1 + (1e-4 * (-1) ** k if k < 119 else 0.0))
        ka.append(Kline(m0 + 60 * k, a, a, a, a))
        kb.append(Kline(m0 + 60 * k, e, e, e, e))
    t0 = (m0 + 60 * 120) * 1000 + 56_000
    ticks = []
    for j in range(40):  # the last 4 s of minute 120: A at 100.1 (+10 bp), B at 50
        sym, mid = ("BTC-USDT", 100.1) if j % 2 == 0 else ("ETH-USDT", 50.0)
        ticks.append(Tick(sym, t0 + 100 * j, mid - 0.005, mid + 0.005))
    t1 = t0 + 4000
    for j in range(6):  # minute 121: back to normal; A ticks first
        sym, mid = ("BTC-USDT", 100.0) if j % 2 == 0 else ("ETH-USDT", 50.0)
        ticks.append(Tick(sym, t1 + 100 * j, mid - 0.005, mid + 0.005))
    return (ka, kb), ticks


def test_port_decisions_hold_throttle_and_the_intra_window_bug() -> None:
    warm, ticks = _hand_stream()

    def acts(r: PortResult) -> list[tuple[int, str]]:
        return [(a.tick, a.action) for a in r.actions]

    # throttle 150: computes at ticks 0 (not fresh: B never ticked), 2, 4, ... (100 ms apart: every other one);
    # z >= 2.2 from tick 2 (t0 + 200) starts the hold; entered once held 1000 ms: tick 12 (t0 + 1200)
    r = run_port(ticks, throttle_ms=150, warm=warm)
    assert sorted(r.stats)[:3] == [2, 4, 6] and r.stats[2].Mode == "119+partial_aligned" and r.stats[2].Z > 2.2
    # the first tick of minute 121 (A, tick 40) closes A's minute 120: partials in different minutes ->
    # "120closed_aligned" over minutes 0..119 (B has not closed 120), whose last spread is ordinary: EXIT at once;
    # then B's first tick of 121 completes minute 120 for both legs (flat by then: no PNL_1M)
    assert acts(r) == [(12, "ENTER_SHORT"), (40, "EXIT")]
    assert r.actions[0].pos == "SHORT_SPREAD" and r.actions[1].pos == "SHORT_SPREAD"
    assert r.actions[1].stats.Mode == "120closed_aligned" and abs(r.actions[1].stats.Z) <= 0.8
    assert r.actions[1].pnl_pct == pytest.approx(math.expm1(-(r.actions[1].stats.Spread - r.actions[0].stats.Spread)))
    assert len(r.closed["BTC-USDT"]) == len(r.closed["ETH-USDT"]) == 1
    # throttle 0: every tick computes; the hold starts at tick 1 (t0 + 100), entry at tick 11 (t0 + 1100)
    assert acts(run_port(ticks, throttle_ms=0, warm=warm)) == [(11, "ENTER_SHORT"), (40, "EXIT")]
    # hold 0: at once; a position entered at tick 1 is still short when minute 121 starts
    assert acts(run_port(ticks, throttle_ms=0, warm=warm, holdMs=0))[:1] == [(1, "ENTER_SHORT")]
    # the seed's 120-bar rings: at tick 40 A's ring has dropped minute 0 while B's lacks minute 120, so only 119
    # minutes are common: no stats, no exit; B's tick 41 closes 120 for both -> PNL_1M (closed-only stats), but
    # is throttled (tick 40 set the last computation); tick 42's 119 + partial window ends on the ordinary
    # partial: EXIT two ticks late
    seed = run_port(ticks, ring_cap=120, throttle_ms=150, warm=warm)
    assert 40 not in seed.stats and 40 in r.stats
    assert acts(seed) == [(12, "ENTER_SHORT"), (41, "PNL_1M"), (42, "EXIT")]


def test_port_five_minute_log_on_event_time() -> None:
    warm, ticks = _hand_stream()
    # ticks of the hand stream sit in one 5-minute bucket or two; place a tick in the next bucket
    nxt = (ticks[-1].TimeMs // 300_000 + 1) * 300_000 + 7
    late = [*ticks, Tick("ETH-USDT", nxt, 49.995, 50.005)]
    r = run_port(late, throttle_ms=150, warm=warm)
    logs = [(a.tick, a.action) for a in r.actions if a.action.startswith("LOG_5M")]
    buckets = {t.TimeMs // 300_000 for t in late}
    assert len(logs) == len(buckets) - 1 and logs[-1] == (len(late) - 1, "LOG_5M")  # the first tick sets the bucket
    assert json.loads(r.rows[-1])["at_utc"] == at_utc(nxt)
    cold = run_port(late, throttle_ms=150)  # no warm-up: not enough closed minutes
    assert [a.action for a in cold.actions] == ["LOG_5M_SKIP"] * (len(buckets) - 1)
    assert json.loads(cold.rows[-1])["mode"] == "skip"


# -- streams, port runs and pipeline runs, made once per session -------------------------------------------------


def run_replay(config: Path, run_dir: Path, files: list[Path], speed: str = "max", timeout: float = 600.0,
               max_restarts: int = 2, on_status: Callable[[dict], None] | None = None) -> tuple[str, dict]:
    """`pipeline up --config CONFIG --run-dir RUN_DIR --replay FILES --speed SPEED` until it ends by itself; returns
    its output and the last status seen. ``on_status(status)`` is called at every poll (kills). Fails at once, with
    the stage's last error and log, when a stage failed for good or restarted more than ``max_restarts`` times."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "up", "--config", str(config), "--run-dir",
                             str(run_dir), "--replay", ",".join(map(str, files)), "--speed", speed],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    last: dict = {}
    problem = ""
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and not problem:
            if time.monotonic() > deadline:
                problem = f"still running after {timeout:g} s"
                break
            time.sleep(0.3)
            try:
                status = request(run_dir, {"cmd": "status"}, 10.0)
            except (ControlError, OSError, ValueError):
                continue
            if not status.pop("ok", False):
                continue
            last = status
            for st in status["stages"]:
                if st["state"] == "failed" or st["restarts"] > max_restarts:
                    log = (run_dir / "logs" / f"{st['name']}.log")
                    tail = log.read_text(errors="replace").splitlines()[-12:] if log.exists() else []
                    problem = (f"stage {st['name']}: state {st['state']}, {st['restarts']} restarts, last error "
                               f"{st.get('last_error')!r}; log tail:\n" + "\n".join(tail))
            if on_status is not None and not problem:
                on_status(status)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        out = proc.communicate()[0]
    assert not problem, f"pipeline run in {run_dir}: {problem}\n{out[-2000:]}"
    assert proc.returncode == 0, out[-3000:]
    return out, last


class Session:
    """Lazily made and cached: stream files and ticks, port results, pipeline run directories."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._files: dict[str, list[Path]] = {}
        self._ticks: dict[str, list[tuple[str, int, float, float]]] = {}
        self._ports: dict[tuple, PortResult] = {}
        self._runs: dict[tuple, Path | str] = {}

    def files(self, stream: str) -> list[Path]:
        if stream not in self._files:
            if stream == "sim":
                self._files[stream] = [cs.sim_recording(self.base / "sim", seed=7, hours=5.0)]
            else:
                warm = cs.binance_warmup_recording(self.base / "binance-warmup", BINANCE_FILES)
                self._files[stream] = [warm, *BINANCE_FILES]
        return self._files[stream]

    def ticks(self, stream: str) -> list[tuple[str, int, float, float]]:
        if stream not in self._ticks:
            self._ticks[stream] = cs.replay_ticks(self.files(stream))
        return self._ticks[stream]

    def port(self, stream: str, throttle: int, cap: int = FIXED_CAP) -> PortResult:
        k = (stream, throttle, cap)
        if k not in self._ports:
            self._ports[k] = run_port(self.ticks(stream), ring_cap=cap, throttle_ms=throttle)
        return self._ports[k]

    def config_text(self, config: str, throttle: int = 150) -> str:
        text = (CONFIGS / config).read_text()
        text = re.sub(r'^name = ".*"$', f'name = "t{uuid.uuid4().hex[:10]}"', text, count=1, flags=re.M)
        return text.replace("throttle_ms = 150", f"throttle_ms = {throttle}")

    def run(self, stream: str, config: str, throttle: int = 150) -> Path:
        """Run directory of `pipeline up --config CONFIG --replay FILES --speed max` (run to its end)."""
        k = (stream, config, throttle)
        if k not in self._runs:
            d = self.base / f"{stream}-{config.removesuffix('.toml')}-{throttle}"
            d.mkdir()
            cfg = d / "pipeline.toml"
            cfg.write_text(self.config_text(config, throttle))
            try:
                out, _ = run_replay(cfg, d / "run", self.files(stream))
            except AssertionError as e:  # the other tests that need this run fail at once with the same reason
                self._runs[k] = str(e)
                raise
            (d / "up.out").write_text(out)
            self._runs[k] = d / "run"
        run = self._runs[k]
        if isinstance(run, str):
            raise AssertionError(f"(this session's run of {k} failed) {run}")
        return run


@pytest.fixture(scope="session")
def ses(tmp_path_factory) -> Session:
    return Session(tmp_path_factory.mktemp("parity"))


STREAMS = ["sim", pytest.param("binance", marks=needs_binance)]


def test_simulated_stream_is_a_real_test(ses: Session) -> None:
    """Several hours of event time, both legs ticking about 1-2 times a second, z crossing +-2.2 several times."""
    ticks = ses.ticks("sim")
    span_h = (ticks[-1][1] - ticks[0][1]) / 3.6e6
    per_leg = Counter(t[0] for t in ticks)
    assert span_h > 4.9 and set(per_leg) == set(SYMS)
    assert all(1.0 < n / (span_h * 3600) < 3.0 for n in per_leg.values()), per_leg
    assert all(b < a for _, _, b, a in ticks)
    acts = Counter(a.action for a in ses.port("sim", 150).actions)
    assert acts["ENTER_LONG"] >= 2 and acts["ENTER_SHORT"] >= 2 and acts["EXIT"] >= 5 and acts["PNL_1M"] >= 20


# -- bars --------------------------------------------------------------------------------------------------------


@needs_stages
@pytest.mark.parametrize("stream", STREAMS)
def test_bars_equal_the_port(ses: Session, stream: str) -> None:
    ticks = ses.ticks(stream)
    port = ses.port(stream, 150)
    run = ses.run(stream, "compute_parity_bars.toml")
    recs = np.fromfile(run / "sink.bin", dtype=BAR)
    assert not port.rejected
    part = recs[recs["kind"] == BAR_PARTIAL]
    # one partial per tick, in tick order (src_seq = the tick's seq in the replay ring = its index here)
    assert len(part) == len(ticks) == len(port.partials)
    assert np.array_equal(part["src_seq"], np.arange(len(ticks)))
    assert part["ts_event_ms"].tolist() == [t[1] for t in ticks]
    assert part["bid_px"].tolist() == [t[2] for t in ticks] and part["ask_px"].tolist() == [t[3] for t in ticks]
    assert part["instrument"].tolist() == [SYMS.index(t[0]) for t in ticks]
    want = np.array([(b.MinuteMs, b.High, b.Low, b.Mean, b.Count) for _, b in port.partials])
    got = np.stack([part["minute_ms"], part["high"], part["low"], part["mean"], part["count"]], axis=1)
    bad = np.flatnonzero((got != want).any(axis=1))
    assert not len(bad), f"first partial bar that differs: tick {bad[0]}: ours {got[bad[0]]}, port {want[bad[0]]}"
    for inst, sym in enumerate(SYMS):
        closed = recs[(recs["kind"] == BAR_CLOSED) & (recs["instrument"] == inst)]
        want = [(b.MinuteMs, b.High, b.Low, b.Mean, b.Count) for b in port.closed[sym]]
        got = list(zip(closed["minute_ms"].tolist(), closed["high"].tolist(), closed["low"].tolist(),
                       closed["mean"].tolist(), closed["count"].tolist(), strict=True))
        assert len(got) == len(want) > 5
        assert got == want, next((i, g, w) for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w)
    assert len(recs) == len(ticks) + sum(len(v) for v in port.closed.values())


# -- stats, events.jsonl and signals -------------------------------------------------------------------------------


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=ABS)


def _compare_rows(ours: list[str], port: list[str]) -> list[str]:
    """Differences between events.jsonl rows (parsed): key order, strings exact, floats to REL."""
    problems = []
    for i, (o, p) in enumerate(zip(ours, port, strict=False)):
        jo, jp = json.loads(o), json.loads(p)
        if list(jo) != list(jp):
            problems.append(f"row {i}: keys {list(jo)} != port {list(jp)}\n  ours {o}\n  port {p}")
            continue
        for k, vp in jp.items():
            vo = jo[k]
            same = _close(float(vo), float(vp)) if isinstance(vp, (int, float)) and isinstance(vo, (int, float)) \
                else vo == vp
            if not same:
                problems.append(f"row {i} ({jp['at_utc']} {jp['action']}): {k} ours {vo!r} port {vp!r}")
    if len(ours) != len(port):
        problems.append(f"{len(ours)} rows, port {len(port)}; first extra: "
                        f"{(ours[len(port):] or port[len(ours):])[0]}")
    return problems


def _bar_src(ses: Session, stream: str) -> np.ndarray:
    """bar seq -> the tick (its index) behind it, from the bars-only run (the bar stream is deterministic)."""
    recs = np.fromfile(ses.run(stream, "compute_parity_bars.toml") / "sink.bin", dtype=BAR)
    assert np.array_equal(recs["seq"], np.arange(len(recs)))
    return recs["src_seq"].astype(np.int64)


@needs_stages
@pytest.mark.parametrize("throttle", [150, 0])
@pytest.mark.parametrize("stream", STREAMS)
def test_events_and_signals_equal_the_fixed_port(ses: Session, stream: str, throttle: int) -> None:
    ticks = ses.ticks(stream)
    port = ses.port(stream, throttle)
    run = ses.run(stream, "compute_parity.toml", throttle)
    ours = (run / "events.jsonl").read_text().splitlines()
    problems = _compare_rows(ours, port.rows)
    assert not problems, "\n".join(problems[:10])
    identical = sum(a == b for a, b in zip(ours, port.rows, strict=True))
    print(f"{stream} throttle {throttle}: {len(ours)} rows, {identical} byte-identical to the port's;",
          dict(Counter(json.loads(r)["action"] for r in ours)))

    # signals: one per ENTER/EXIT row, caused by the same tick, with the same numbers
    sigs = np.fromfile(run / "sink.bin", dtype=SIGNAL)
    want = [a for a in port.actions if a.action in SIG_ACTIONS]
    assert len(sigs) == len(want) >= 3
    src = _bar_src(ses, stream)
    entry = None
    for s, a in zip(sigs, want, strict=True):
        where = f"signal {int(s['seq'])} ({a.action} at tick {a.tick}, {at_utc(ticks[a.tick][1])})"
        assert int(src[int(s["src_seq"])]) == a.tick, f"{where}: from tick {int(src[int(s['src_seq'])])}"
        assert int(s["ts_event_ms"]) == ticks[a.tick][1], where
        assert int(s["action"]) == SIG_ACTIONS[a.action], where
        assert (int(s["pair"]), int(s["instrument"]), int(s["instrument_b"])) == (0, 0, 1), where
        st = a.stats
        assert int(s["mode"]) == {"120closed_aligned": 0, "119+partial_aligned": 1}[st.Mode], where
        for f, v in (("beta", st.Beta), ("z", st.Z), ("spread", st.Spread), ("mu", st.Mu), ("sigma", st.Sigma),
                     ("pnl_log", a.pnl_log)):
            assert _close(float(s[f]), v), f"{where}: {f} ours {float(s[f])!r} port {v!r}"
        quotes = (float(s["bid_a"]), float(s["ask_a"]), float(s["bid_b"]), float(s["ask_b"]))
        assert quotes == (a.bid_a, a.ask_a, a.bid_b, a.ask_b), where
        if a.action != "EXIT":
            side = 1 if a.action == "ENTER_LONG" else -1
            qa = 1000.0 / (0.5 * (a.bid_a + a.ask_a))
            qb = abs(st.Beta) * 1000.0 / (0.5 * (a.bid_b + a.ask_b))
            entry = (side, qa, qb)
        assert entry is not None
        side = entry[0] if a.action != "EXIT" else -entry[0]
        assert (int(s["side_a"]), int(s["side_b"])) == (side, -side), where
        assert _close(float(s["qty_a"]), entry[1]) and _close(float(s["qty_b"]), entry[2]), where


@needs_stages
def test_the_seeds_skip_bug_is_gone(ses: Session) -> None:
    """Once warm, the seed (rings of 120) logs LOG_5M_SKIP for two hours after ETH misses a minute; ours logs LOG_5M
    at every 5-minute boundary (and computes stats on ticks where the seed's intersection fell to 119)."""
    seed = ses.port("sim", 150, cap=120)
    fixed = ses.port("sim", 150)
    ours = [json.loads(r) for r in (ses.run("sim", "compute_parity.toml", 150) / "events.jsonl").read_text()
            .splitlines()]

    def five(rows: list[dict]) -> dict[str, str]:
        return {r["at_utc"]: r["action"] for r in rows if r["action"].startswith("LOG_5M")}

    seed5, ours5 = five([json.loads(r) for r in seed.rows]), five(ours)
    assert seed5.keys() == ours5.keys() == five([json.loads(r) for r in fixed.rows]).keys()
    warm_at = min(t for t, a in ours5.items() if a == "LOG_5M")
    assert all(a == "LOG_5M" for t, a in ours5.items() if t >= warm_at), "ours skips once warm"
    bug = sorted(t for t, a in seed5.items() if t >= warm_at and a == "LOG_5M_SKIP")
    assert len(bug) >= 20, "the seed as written skips while warm (ETH misses one minute: 120 minutes of skips)"
    assert all(seed5[t] == "LOG_5M_SKIP" and ours5[t] == "LOG_5M" for t in bug)
    warm_tick = min(i for i, a in ((a.tick, a.action) for a in fixed.actions) if a == "LOG_5M")
    lost = [i for i in fixed.stats if i >= warm_tick and i not in seed.stats]
    assert len(lost) > 10 and not [i for i in seed.stats if i not in fixed.stats]


# -- crash equivalence ---------------------------------------------------------------------------------------------

KILLS = {"bars": 3, "stats": 3}
CRASH_SPEED = 450.0
"""Five hours of recorded time at 450x: 40 s, long enough for six SIGKILL/restart cycles."""


@needs_stages
@pytest.mark.timeout(900)
def test_sigkill_bars_and_stats_mid_replay_changes_nothing(ses: Session, tmp_path: Path) -> None:
    files = ses.files("sim")
    n_ticks = len(ses.ticks("sim"))
    clean = ses.run("sim", "compute_parity.toml", 150)
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(ses.config_text("compute_parity.toml").replace("standby = false", "standby = true"))
    run_dir = tmp_path / "run"
    rng = random.Random(4)
    todo = [name for name, k in KILLS.items() for _ in range(k)]
    rng.shuffle(todo)
    done: list[tuple[str, int]] = []
    next_at = [time.monotonic() + rng.uniform(0.5, 2.0)]

    def kill(status: dict) -> None:
        """SIGKILL the next stage on the list at a random moment while the bars stage is 5-85 % through the ticks."""
        stages = {s["name"]: s for s in status["stages"]}
        # progress of the bars stage (the replay runs ahead into its 64k-slot ring while bars restarts)
        progress = next(r["consumer_pos"] for r in status["rings"] if r["name"] == "ticks") / n_ticks
        st = stages[todo[0]] if todo else None
        if st is None or time.monotonic() < next_at[0] or not 0.05 < progress < 0.85:
            return
        if st["state"] != "running" or not st["pid"] or any(s["state"] != "running" for s in status["stages"]
                                                            if s["name"] != "replay"):
            return
        os.kill(st["pid"], signal.SIGKILL)
        done.append((todo.pop(0), round(progress * 100)))
        next_at[0] = time.monotonic() + rng.uniform(0.5, 4.0)

    _, last = run_replay(cfg, run_dir, files, str(CRASH_SPEED), timeout=800, max_restarts=max(KILLS.values()) + 3,
                         on_status=kill)
    print("killed (stage, % of the replay):", done)
    restarts = {st["name"]: st["restarts"] for st in last["stages"]}
    assert restarts["bars"] >= KILLS["bars"] - 1 and restarts["stats"] >= KILLS["stats"] - 1, restarts
    assert len(done) == sum(KILLS.values()), f"only {done} killed before the replay ended: slow the replay down"
    assert (run_dir / "events.jsonl").read_bytes() == (clean / "events.jsonl").read_bytes(), \
        f"events.jsonl differs from the uninterrupted run's after kills {done}"
    a, b = np.fromfile(run_dir / "sink.bin", dtype=SIGNAL), np.fromfile(clean / "sink.bin", dtype=SIGNAL)
    assert len(a) == len(b) > 5, f"{len(a)} signals, uninterrupted {len(b)}"
    for f in SIGNAL_FIELDS:
        assert np.array_equal(a[f], b[f]), f"signal field {f} differs from the uninterrupted run's after kills {done}"
