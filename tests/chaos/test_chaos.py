"""Crash equivalence of the whole pipeline (``bench chaos``, see bench/chaos.py): configs/sim.toml trading live
against the seeded simulator while 50 SIGKILLs hit random stages and the supervisor itself (a new supervisor
takes over the live stages); then bars, signals and events.jsonl must equal the uninterrupted computation over
what the feed published, no order may be doubled anywhere, the executor's positions must equal the simulator's
account, and nothing may be left after ``down``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ENV, sim_toml

from pipeline.config import to_toml

ROOT = Path(__file__).resolve().parents[2]
KILLS = 50
SEED = 6
"""A seed whose 50 targets include every stage and the supervisor (checked below, so a change shows)."""


@pytest.mark.timeout(1200)
def test_50_sigkills_of_stages_and_supervisor_change_nothing(tmp_path: Path) -> None:
    raw = sim_toml()
    # a second pair (the legs the other way round) with thresholds low enough that the pairs signal itself enters
    # in a run of minutes: events.jsonl and real positions are compared too, while the first pair's measurement
    # orders keep going
    pairs = raw["stages"]["stats"]["params"]["pairs"]
    pairs.append({**pairs[0], "a": pairs[0]["b"], "b": pairs[0]["a"], "entry_z": 0.5, "exit_z": 0.1})
    cfg = tmp_path / "sim.toml"
    cfg.write_text(to_toml(raw))
    out, run = tmp_path / "chaos.json", tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "bench.cli", "chaos", "--config", str(cfg), "--run-dir", str(run),
                        "--kills", str(KILLS), "--seed", str(SEED), "--orders-per-s", "2", "--json", str(out)],
                       capture_output=True, text=True, timeout=1100, env=ENV, cwd=ROOT)
    assert out.exists(), p.stdout[-3000:] + p.stderr[-3000:]
    doc = json.loads(out.read_text())
    print(p.stdout[-2500:])
    assert doc["mismatch_details"] == [] and doc["mismatches"] == 0
    assert doc["duplicate_orders"] == 0, doc["orders"]["duplicates"]
    assert doc["left_after_down"] == []
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert doc["kills_done"] == KILLS
    stages = list(raw["stages"])
    assert set(doc["kills_by_target"]) == {*stages, "supervisor"}
    assert all(n >= 1 for n in doc["kills_by_target"].values()), doc["kills_by_target"]
    # each new supervisor took over every live stage and the simulator
    for took in doc["supervisor_takeovers"]:
        assert {t.split(" (")[0] for t in took} >= {f"stage {s}" for s in stages} | {"service exchange"}, took
    # the comparison covered real trading, not an idle pipeline
    c = doc["compared"]
    assert c["bars"] - c["warmup_bars"] > 100 and c["signals"] >= 10 and c["event_lines"] >= 1, c
    assert doc["orders"]["orders"] >= 10 and doc["orders"]["unknown_placements"] == 0
    assert all(v["equal"] for v in doc["orders"]["positions"].values()), doc["orders"]["positions"]
