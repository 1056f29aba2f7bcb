"""The configs in configs/ as users run them: every one passes the config check, `configs/sim.toml` (the README's
offline run) comes up whole against the simulator — feed, warm-up from the simulator's candles, bars, stats with a
full window from the start — and `configs/replay.toml` replays a real KuCoin recording to the end by itself."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, cli, free_port

from pipeline.config import load
from pipeline.records import ORDER

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_config_passes_the_check(path: Path) -> None:
    assert load(path).stages


def test_sim_config_runs_feed_bars_stats_and_the_executor(make_pipeline) -> None:
    port = free_port()
    text = (CONFIGS / "sim.toml").read_text().replace("18765", str(port))
    text = text.replace('name = "sim"', 'name = "{name}"', 1)
    p = make_pipeline(text)
    p.up()
    try:
        def warm(s: dict) -> bool:
            c = {x["name"]: x.get("counters", {}) for x in s["stages"]}
            return c["stats"].get("stats", 0) > 20 and c["bars"].get("warmup", -1) > 0

        s = p.wait_for(warm, 120, "stats computed on a full window")
        stages = {x["name"]: x for x in s["stages"]}
        assert all(x["state"] == "running" for x in stages.values()), stages
        assert stages["bars"]["counters"]["warmup"] == 2 * 150, stages["bars"]["counters"]
        assert stages["bars"]["counters"]["bad"] == 0 and stages["stats"]["errors"] == 0
        assert stages["bars"]["restarts"] == stages["stats"]["restarts"] == stages["executor"]["restarts"] == 0
        ex = s["execution"]  # the executor is connected to the simulator's private stream and reconciled
        assert ex["mode"] == "live" and ex["risk_state"]["state"] == "ok", ex
        assert set(ex["positions"]) == {"BTC-USDT", "ETH-USDT"} and ex["user_streams"] == {"kucoin": "up"}, ex
        assert ex["orders"]["rejected"] == 0, ex["orders"]
        # the order path's blocking loops run SCHED_FIFO, downstream above upstream, every thread of them
        depth = {"kucoin": 1, "bars": 2, "stats": 3, "executor": 4}
        for name, x in stages.items():
            want = depth.get(name, 0) if x["wait"] == "block" else 0
            assert x["priority"] == want, (name, x["priority"])
            for tid in os.listdir(f"/proc/{x['pid']}/task"):
                try:
                    policy, prio = os.sched_getscheduler(int(tid)), os.sched_getparam(int(tid)).sched_priority
                except ProcessLookupError:  # a thread that has just ended
                    continue
                assert (policy, prio) == ((os.SCHED_FIFO, want) if want else (os.SCHED_OTHER, 0)), (name, tid)
    finally:
        p.down()
    assert (p.run_dir / "events.jsonl").exists()
    orders = np.fromfile(p.run_dir / "order_sink.bin", dtype=ORDER)
    assert (orders["event"] >= 1).all() and (orders["qty"] > 0).all()
    assert not p.segments()


def test_replay_config_runs_a_recording_to_the_end(make_pipeline) -> None:
    """Six minutes of real Binance spot BTC and ETH (mapped to the config's KuCoin instruments by base and quote):
    the run ends by itself, every tick reaches the stats, and the window (warm-up off) never fills, so the one
    5-minute boundary inside the recording logs LOG_5M_SKIP."""
    rec = SHARED / "data" / "recorded" / "binance_2024-08-08"
    files = ",".join(str(rec / f"spot_{s}usdt_20240808.gz") for s in ("btc", "eth"))
    text = (CONFIGS / "replay.toml").read_text().replace('name = "replay"', 'name = "{name}"', 1)
    p = make_pipeline(text)
    out = cli("up", "--config", str(p.config), "--run-dir", str(p.run_dir), "--replay", files, "--speed", "max",
              timeout=600)
    counters = " ".join(out.stdout.split())
    final = counters[counters.rindex("counters:"):]  # the table printed once the run ended
    ticks = re.search(r"stats ticks=(\d+) stats=(\d+)", final)
    assert ticks and int(ticks.group(1)) > 40_000 and int(ticks.group(2)) == 0, final
    assert "bars bad=0 late=0 warmup=0" in final, final
    rows = [json.loads(line) for line in (p.run_dir / "events.jsonl").read_text().splitlines()]
    assert [r["action"] for r in rows] == ["LOG_5M_SKIP"] and rows[0]["at_utc"].startswith("2024-08-08T")
    assert not p.segments()
