"""``bench latency``: the figures against independent computations, and a whole run on the real BTC/ETH replay.

The end-to-end test runs the command as a user does (a real pipeline, the simulator serving the recorded Binance
spot BTC/ETH traffic through KuCoin's protocol, measurement orders, the baseline bot), then checks the JSON
against the recording itself: the micro-volatility equals a computation straight from the recorded bookTicker
lines over the same span of event time.
"""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ENV, SHARED, sim_toml

from bench import exec_metrics as em
from pipeline.config import to_toml

ROOT = Path(__file__).resolve().parents[1]
REPLAY = SHARED / "data" / "recorded" / "binance_2024-08-08"
FILES = [REPLAY / "spot_btcusdt_20240808.gz", REPLAY / "spot_ethusdt_20240808.gz"]
LATENCY_KEYS = {"p50", "p90", "p99", "p999", "max", "count"}


# -- the figures, each against an independent computation ---------------------------------------------------------

def micro_vol_reference(ts_ms: list[int], mids: list[float], step: int = 100) -> tuple[float, int]:
    """Sample sd of log mid changes on a ``step`` ms grid, last value carried forward: a plain loop over the
    grid with a moving pointer, and the sd from its definition."""
    pts = sorted(zip(ts_ms, mids, strict=True), key=lambda x: x[0])
    t = pts[0][0] // step * step + step
    j, values = 0, []
    while t <= pts[-1][0]:
        while j + 1 < len(pts) and pts[j + 1][0] <= t:
            j += 1
        values.append(pts[j][1])
        t += step
    r = np.diff(np.log(np.array(values)))
    mean = r.sum() / len(r)
    return math.sqrt(((r - mean) ** 2).sum() / (len(r) - 1)) * 1e4, len(r)


def test_micro_volatility_equals_a_plain_computation() -> None:
    rng = np.random.default_rng(5)
    ts = np.cumsum(rng.integers(0, 90, 3000)) + 1_723_161_254_037  # irregular, with equal times
    mids = 60_000 * np.exp(np.cumsum(rng.normal(0, 2e-5, len(ts))))
    got, steps = em.micro_volatility(ts, mids)
    want, n = micro_vol_reference(list(ts), list(mids))
    assert steps == n > 1000
    assert got == pytest.approx(want, rel=1e-12)
    # within one ms the record that arrived last is the one carried forward
    got, steps = em.micro_volatility(np.array([0, 150, 150, 350]), np.array([1.0, 2.0, 4.0, 4.0]))
    assert steps == 2 and got == pytest.approx(np.std([math.log(4.0), 0.0], ddof=1) * 1e4)


def test_latency_summary_is_hdr_within_its_precision() -> None:
    v = np.random.default_rng(1).lognormal(11, 1.0, 20_000).astype(np.int64)  # ns, ~60 µs median
    s = em.summary_us(v)
    assert s["count"] == len(v) and set(s) == LATENCY_KEYS
    for k, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        assert s[k] == pytest.approx(np.percentile(v, q) / 1e3, rel=2e-3, abs=0.1)
    assert s["max"] == pytest.approx(v.max() / 1e3, rel=1e-3)
    assert em.summary_us(np.array([], dtype=np.int64))["count"] == 0


def _order(key: str, leg: int, side: int, qty: float, mid: float, target: float, t: int, fills=()) -> em.OrderTrace:
    o = em.OrderTrace(key, 0, leg, "AB"[leg], side, qty, mid, target, t - 300, t - 100, t, t + 2000)
    o.fills = list(fills)
    return o


def test_fill_ratio_capture_and_drift_by_hand() -> None:
    """A round trip: enter (leg A fills 1 of 1, leg B 0.5 of 1), exit the filled quantities; then an open entry."""
    s = 1_000_000_000  # 1 s in ns
    orders = [
        _order("1", 0, 1, 1.0, 100.0, 1.0, 1 * s, [(1 * s + 10, 1.0, 100.1, 0.1)]),
        _order("2", 1, -1, 1.0, 50.0, -1.0, 1 * s, [(1 * s + 20, 0.5, 49.9, 0.05)]),
        _order("3", 0, -1, 1.0, 101.0, 0.0, 3 * s, [(3 * s + 10, 1.0, 100.9, 0.1)]),
        _order("4", 1, 1, 0.5, 49.0, 0.0, 3 * s, [(3 * s + 20, 0.5, 49.1, 0.05)]),
        _order("5", 0, 1, 2.0, 100.0, 2.0, 5 * s),
    ]
    fr = em.fill_ratio(orders)
    assert fr == {"by_qty": pytest.approx(3.0 / 5.5), "by_orders": pytest.approx(3 / 5)}
    cr = em.capture_rate(orders)
    realized = (-100.1 - 0.1) + (0.5 * 49.9 - 0.05) + (100.9 - 0.1) + (-0.5 * 49.1 - 0.05)
    theoretical = -100.0 + 0.5 * 50.0 + 101.0 - 0.5 * 49.0
    assert cr["round_trips"] == 1
    assert cr["realized"] == pytest.approx(realized) and cr["theoretical"] == pytest.approx(theoretical)
    assert cr["value"] == pytest.approx(realized / theoretical)
    d = em.inventory_drift(orders, t_end=6 * s)
    # leg B: from 1 s + 20 ns to 3 s it holds -0.5 against a target of -1 (drift +0.5 x 50 = 25 quote)
    assert d["0.b"]["max"] == pytest.approx(50.0)  # target -1 before any fill
    assert d["0.b"]["mean"] == pytest.approx((25.0 * (2 * s - 20) + 50.0 * 20) / (5 * s), rel=1e-6)
    # leg A ends 2 short of its open target at mid 100
    assert d["0.a"]["final"] == pytest.approx(-200.0) and d["0"]["final"] == pytest.approx(-200.0)


# -- a whole run --------------------------------------------------------------------------------------------------

def recorded_mids(path: Path, first_ms: int, last_ms: int) -> tuple[list[int], list[float]]:
    """(receive ms, mid) of every bookTicker line of an hftbacktest recording within [first_ms, last_ms]."""
    ts, mids = [], []
    with gzip.open(path, "rt") as f:
        for line in f:
            local, _, raw = line.partition(" ")
            msg = json.loads(raw)
            if not str(msg.get("stream", "")).endswith("@bookTicker"):
                continue
            t = int(local) // 1_000_000
            if first_ms <= t <= last_ms:
                d = msg["data"]
                ts.append(t)
                mids.append((float(d["b"]) + float(d["a"])) / 2)
    return ts, mids


@pytest.mark.skipif(not all(f.exists() for f in FILES), reason="the recorded BTC/ETH files are not here")
def test_bench_latency_on_the_real_replay_with_the_baseline(tmp_path: Path) -> None:
    raw = sim_toml("--kucoin-ticker-ms", "0")
    cfg = tmp_path / "sim.toml"
    cfg.write_text(to_toml(raw))
    out, png = tmp_path / "latency.json", tmp_path / "latency.png"
    p = subprocess.run([sys.executable, "-m", "bench.cli", "latency", "--config", str(cfg), "--run-dir",
                        str(tmp_path / "run"), "--replay", ",".join(map(str, FILES)), "--duration", "12",
                        "--orders-per-s", "4", "--venue-latency-ms", "0", "--baseline", "--json", str(out), "--plot",
                        str(png)],
                       capture_output=True, text=True, timeout=400, env=ENV, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert {"config", "host", "duration_s", "simulated_venue_latency_ms", "orders", "execution_latency_us",
            "hops_us", "micro_volatility_bps", "fill_ratio", "capture_rate", "inventory_drift", "baseline"} <= set(doc)
    assert doc["simulated_venue_latency_ms"] == 0
    for who in (doc, doc["baseline"]):
        lat = who["execution_latency_us"]
        assert set(lat) == set(em.LATENCY_PARTS) and all(set(v) == LATENCY_KEYS for v in lat.values())
        assert who["orders"]["sent"] >= 8 and lat["frame_to_sent"]["count"] == who["orders"]["sent"]
        assert 0 < lat["frame_to_decision"]["p50"] <= lat["frame_to_sent"]["p50"] <= lat["total"]["p50"]
        assert 0 < who["fill_ratio"]["by_qty"] <= 1 and 0 < who["fill_ratio"]["by_orders"] <= 1
        assert who["capture_rate"]["round_trips"] >= 2 or who is doc["baseline"]
    assert doc["orders"]["measurement"] == doc["orders"]["sent"]  # only measurement orders in 12 s
    assert {"kucoin: frame->ticks", "bars: ticks->bars", "stats: bars->signals", "executor: signals->orders"} <= set(
        doc["hops_us"])
    assert doc["records_lost_to_tap"] == {} or not any(doc["records_lost_to_tap"].values())
    # micro-volatility on event time: the recording's own bookTicker mids over the span the pipeline saw
    for sym, path in zip(("BTC-USDT", "ETH-USDT"), FILES, strict=True):
        mv = doc["micro_volatility_bps"][sym]
        want, steps = micro_vol_reference(*recorded_mids(path, mv["first_ms"], mv["last_ms"]))
        assert mv["steps"] == steps >= 50
        assert mv["value"] == pytest.approx(want, rel=1e-4), (sym, mv, want)
    assert "frame -> sent p99" in p.stdout and "baseline" in p.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # --plot: the CDFs of this run (matplotlib)


@pytest.mark.parametrize("args, says", [
    (["--replay", "/nonexistent/rec.gz"], "--replay: no such file: /nonexistent/rec.gz"),
    (["--attach", "--baseline"], "--attach measures a running pipeline as it is"),
    (["--config", "/nonexistent.toml"], "cannot read config"),
])
def test_bad_options_fail_with_one_line_before_anything_starts(tmp_path: Path, args: list[str], says: str) -> None:
    p = subprocess.run([sys.executable, "-m", "bench.cli", "latency", "--config", str(ROOT / "configs" / "sim.toml"),
                        "--run-dir", str(tmp_path / "run"), *args], capture_output=True, text=True, timeout=60,
                       env=ENV, cwd=ROOT)
    assert p.returncode == 1, p.stdout + p.stderr
    failed = [ln for ln in p.stdout.splitlines() if "bench latency failed" in ln]
    assert len(failed) == 1 and says in failed[0], p.stdout
    assert not (tmp_path / "run").exists(), "nothing was started"
