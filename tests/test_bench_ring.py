"""``bench ring`` end to end over a small count: schema and sanity of the JSON, never timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.ring import BATCH, PEERS, SEGMENT_PREFIX, batch_consume, batch_produce, plan
from pipeline.records import PING
from pipeline.ring import Ring

ROW_KEYS = {"transport", "placement", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "throughput_per_s",
            "count"}
HOST_KEYS = {"hostname", "cpu_model", "cpu_count", "python", "numpy", "numba", "kernel"}


def _run_bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "ring.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "ring", "--json", str(out), *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )
    return proc, out


@pytest.mark.timeout(150)
def test_bench_ring_small_run_writes_every_row(tmp_path: Path) -> None:
    before = {p.name for p in Path("/dev/shm").glob(f"{SEGMENT_PREFIX}*")}
    transports = ["lowlat-ring", "lowlat-ring-batch", *PEERS]
    proc, out = _run_bench(tmp_path, "--count", "1000", "--transports", ",".join(transports))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lowlat-ring" in proc.stdout and "zmq-ipc" in proc.stdout  # the table was printed

    report = json.loads(out.read_text())
    assert set(report) >= {"host", "results"}
    assert HOST_KEYS <= set(report["host"])
    rows = report["results"]
    placements = ["cross-cpu", "same-cpu"] if len(os.sched_getaffinity(0)) > 1 else ["same-cpu"]
    seen = {(r["transport"], r["placement"]) for r in rows}
    assert seen == {(t, p) for t in transports for p in placements}
    ring_waits = {(r["placement"], r["wait"]) for r in rows if r["transport"] == "lowlat-ring"}
    assert ring_waits >= {("same-cpu", "yield"), ("same-cpu", "block")}

    for r in rows:
        assert ROW_KEYS <= set(r), r
        assert r["count"] > 0 and r["throughput_per_s"] > 0, r
        if r["transport"] == "lowlat-ring-batch":
            assert r["count"] >= 20 * 1000  # the batch path moves many more records than the latency phase
            continue
        lat = [r[k] for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us")]
        assert all(isinstance(v, float) and v > 0 for v in lat), r
        assert r["p50_us"] <= r["p90_us"] <= r["p99_us"] <= r["p999_us"] <= r["max_us"], r

    after = {p.name for p in Path("/dev/shm").glob(f"{SEGMENT_PREFIX}*")}
    assert after <= before  # every segment the bench created is gone


def test_bench_ring_rejects_unknown_transport(tmp_path: Path) -> None:
    proc, out = _run_bench(tmp_path, "--count", "100", "--transports", "carrier-pigeon")
    assert proc.returncode != 0
    assert "carrier-pigeon" in proc.stdout + proc.stderr
    assert not out.exists()


def test_bench_is_a_command_group() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    assert "ring" in proc.stdout


def test_batch_consumer_detects_a_wrong_sequence_number() -> None:
    name = f"{SEGMENT_PREFIX}test.{os.getpid()}"
    ring = Ring.create(name, PING, 64, replace=True)
    try:
        assert batch_produce(ring.hdr, ring.data, 0, 40, BATCH, 4) == 40
        assert batch_consume(ring.hdr, ring.data, 0, 20, BATCH, 4) == 20
        ring.data[25, 1] = 999  # record 25 now claims to be another record: a duplicate or a gap
        assert batch_consume(ring.hdr, ring.data, 20, 40, BATCH, 4) == -(25 + 1)
    finally:
        ring.close()
        Ring.unlink(name)


def test_plan_skips_cross_cpu_on_one_cpu_and_pins_pairs() -> None:
    cases, notes = plan(1000, ["lowlat-ring", "mp-pipe"], ["cross-cpu", "same-cpu"], cpus=[3])
    assert notes and "cross-cpu" in notes[0]
    assert {c.placement for c in cases} == {"same-cpu"}
    assert all(c.producer_cpu == c.consumer_cpu == 3 for c in cases)
    cases, _ = plan(1000, ["lowlat-ring"], ["cross-cpu"], cpus=[0, 1])
    assert [(c.producer_cpu, c.consumer_cpu, c.wait) for c in cases] == [(0, 1, "spin")]
