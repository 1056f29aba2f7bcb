"""``bench soak``: a short soak of the sim pipeline at 10x the recorded BTC/ETH message rate, checked for what the
long one reports: every stage's memory at start and end, no dropped frame, no restart, latency per interval, and
the rate it multiplied against an independent count of the recordings."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import ENV, SHARED, sim_toml

from pipeline.config import to_toml

ROOT = Path(__file__).resolve().parents[1]
FILES = [SHARED / "data" / "recorded" / "binance_2024-08-08" / f"spot_{s}usdt_20240808.gz" for s in ("btc", "eth")]


def recorded_hz(path: Path) -> float:
    """Messages per second of one recording: its lines over the span of their receive stamps (numpy)."""
    with gzip.open(path, "rb") as f:
        stamps = np.array([int(line[:line.index(b" ")]) for line in f], dtype=np.int64)
    return len(stamps) / ((stamps.max() - stamps.min()) / 1e9)


def test_bench_soak_reports_memory_drops_and_latency_per_interval(tmp_path: Path) -> None:
    raw = sim_toml()
    cfg = tmp_path / "sim.toml"
    cfg.write_text(to_toml(raw))
    out, run = tmp_path / "soak.json", tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "bench.cli", "soak", "--config", str(cfg), "--run-dir", str(run),
                        "--minutes", "0.5", "--sample-s", "10", "--rate-x", "10", "--orders-per-s", "4",
                        "--recorded", ",".join(map(str, FILES)), "--json", str(out)],
                       capture_output=True, text=True, timeout=400, env=ENV, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    doc = json.loads(out.read_text())
    # the rate: 10x the recordings' own, counted here independently, and passed to the simulator
    want = float(np.mean([recorded_hz(f) for f in FILES]))
    assert doc["recorded"]["per_instrument_hz"] == pytest.approx(want, rel=1e-9)
    assert doc["rate_hz_per_instrument"] == pytest.approx(10 * want, rel=1e-9)
    served = tomllib.loads((run / "config.toml").read_text())["services"]["exchange"]["args"]
    assert float(served[served.index("--rate-hz") + 1]) == pytest.approx(10 * want, rel=1e-3)
    # memory of every stage at the first and last sample, from the real processes
    assert set(doc["stages"]) == set(raw["stages"])
    for name, s in doc["stages"].items():
        assert s["rss_start_mb"] > 20 and s["rss_end_mb"] > 20, (name, s)
        assert s["rss_max_mb"] >= max(s["rss_start_mb"], s["rss_end_mb"]) and s["restarts"] == 0, (name, s)
        pids = {x["stages"][name]["pid"] for x in doc["samples"]}
        assert len(pids) == 1 and None not in pids, (name, pids)  # one process all along
    assert doc["max_rss_growth_pct"] == max(s["rss_growth_pct"] for s in doc["stages"].values())
    # nothing dropped: the simulator's queues, the feeds' sequences; the feed parsed every frame
    assert doc["dropped_frames"] == 0 and doc["dropped"] == {"simulator_frames_dropped": 0, "feed_gaps": 0}, doc
    kucoin = doc["feeds"]["kucoin"]
    assert kucoin["frames"] > 1000 and kucoin["parse_err"] == 0 and kucoin["reconnects"] == 0, kucoin
    assert doc["venues"]["kucoin"]["frames_sent"] >= kucoin["frames"]
    assert set(doc["rings"]) == set(raw["rings"]) and all(r["max_fill"] < r["capacity"] for r in doc["rings"].values())
    # latency per interval between samples, every order counted once
    assert len(doc["samples"]) >= 4 and len(doc["intervals"]) == len(doc["samples"]) - 1
    assert doc["orders"] > 0 and sum(i["orders"] for i in doc["intervals"]) <= doc["orders"]
    assert any(i["frame_to_sent_p99_us"] for i in doc["intervals"])
    assert "dropped frames: 0" in p.stdout and "RSS start MB" in p.stdout
    assert not list(Path("/dev/shm").glob(f"{raw['name']}-soak*")), "the soak's segments are gone"


def test_bench_soak_refuses_a_config_without_the_simulator(tmp_path: Path) -> None:
    cfg = tmp_path / "replay.toml"
    cfg.write_text((ROOT / "configs" / "replay.toml").read_text())
    p = subprocess.run([sys.executable, "-m", "bench.cli", "soak", "--config", str(cfg), "--run-dir",
                        str(tmp_path / "run"), "--minutes", "0.1", "--recorded", ",".join(map(str, FILES))],
                       capture_output=True, text=True, timeout=60, env=ENV, cwd=ROOT)
    assert p.returncode == 1
    failed = [ln for ln in p.stdout.splitlines() if "bench soak failed" in ln]
    assert len(failed) == 1 and "needs the simulator as a service" in failed[0], p.stdout
    assert not (tmp_path / "run").exists(), "nothing was started"
