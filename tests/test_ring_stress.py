"""The ring under stress: producer and consumer in two processes on different CPUs, every word checked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.records import PING
from pipeline.ring import Ring

WORKER = Path(__file__).with_name("ring_workers.py")


def _run_pair(name: str, count: int, mode: str, capacity: int) -> str:
    cpus = sorted(os.sched_getaffinity(0))
    prod_cpu, cons_cpu = cpus[0], cpus[-1]
    ring = Ring.create(name, PING, capacity, replace=True)
    try:
        args = [sys.executable, str(WORKER)]
        consumer = subprocess.Popen([*args, "consume", name, str(count), str(cons_cpu), mode],
                                    stdout=subprocess.PIPE, text=True)
        producer = subprocess.Popen([*args, "produce", name, str(count), str(prod_cpu), mode])
        assert producer.wait(timeout=240) == 0
        out, _ = consumer.communicate(timeout=240)
        assert consumer.returncode == 0, out
        assert ring.producer_pos == count and ring.consumer_pos == count
        return out
    finally:
        ring.close()
        Ring.unlink(name)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_ten_million_records_across_cpus_numba_loops() -> None:
    out = _run_pair("lowlat-test.stress", 10_000_000, "numba", 1024)
    assert out.strip() == "consumed 10000000 bad 0"


def test_python_calls_per_record_with_small_ring() -> None:
    # a tiny ring forces the producer to wait on full almost every record: the lossless path under contention
    out = _run_pair("lowlat-test.stress-py", 200_000, "python", 8)
    assert out.strip() == "consumed 200000 bad 0"
