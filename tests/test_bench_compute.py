"""``bench compute`` end to end, small: the JSON's shape, and the three implementations deciding the same entries and
exits at the same ticks (never timings)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from bench.compute import IMPLS, SEGMENT_PREFIX


def test_bench_compute_json_and_same_decisions(tmp_path: Path) -> None:
    out = tmp_path / "compute.json"
    p = subprocess.run([sys.executable, "-m", "bench.cli", "compute", "--ticks", "11000", "--port-ticks", "11000",
                        "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(out.read_text())
    assert [r["impl"] for r in doc["results"]] == list(IMPLS)
    for r in doc["results"]:
        assert r["ticks"] == 11000
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("p50_us", "p99_us", "ticks_per_s"))
    assert doc["same_actions"] == {i: True for i in IMPLS}
    assert doc["actions_compared"] >= 2, "the stream must hold an entry and an exit inside the compared ticks"
    assert {"ratio_vs_numpy", "ratio_vs_seed_port", "host", "stream"} <= set(doc)
    assert "same entries and exits at the same ticks in all three: yes" in p.stdout
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(SEGMENT_PREFIX)], "rings removed"
