"""Restart without loss: SIGKILL the stateful middle stage at 20 random moments while records flow; the sink's
stream must equal an uninterrupted run's, record for record."""

from __future__ import annotations

import os
import random
import signal
import time

import numpy as np
from conftest import BASE_CONFIG

from pipeline.records import COUNT

COUNT_N = 120_000
# the killed run flows at half speed (1250 ticks/s, 96 s): 20 kill/restart cycles take 30-55 s on a 2-core host
# (a restart is 1.3-2.5 s there); the stream depends only on the seed, so the speed changes nothing else
KILLED_SPEED = 0.5
# everything but the timestamps, which differ between any two runs
FIELDS = ["seq", "src_seq", "src_ring", "ts_event_ms", "instrument", "flags", "count", "mid"]


def _counter(status: dict) -> dict:
    return next(x for x in status["stages"] if x["name"] == "counter")


def _run(make_pipeline, sub: str, kills: int, seed: int, speed: float) -> tuple[np.ndarray, dict]:
    p = make_pipeline(BASE_CONFIG.format(name="{name}", speed=speed, count=COUNT_N, max_restarts=100), sub)
    p.up()
    rng = random.Random(seed)
    done = 0
    while done < kills:
        time.sleep(rng.uniform(0.02, 0.5))
        st = p.stage("counter")
        if st["state"] != "running" or st["pid"] is None:
            continue
        assert p.stage("sink")["records_in"] < COUNT_N, "the run ended before all kills were done"
        os.kill(st["pid"], signal.SIGKILL)
        done += 1
        p.wait_for(lambda s, old=st["pid"]: _counter(s)["pid"] not in (None, old) and _counter(s)["state"] == "running",
                   what="counter restarted")
    final = p.wait_for(lambda s: next(x for x in s["stages"] if x["name"] == "sink")["records_in"] >= COUNT_N,
                       timeout=120, what="sink to receive every record")
    p.down()
    return p.sink_records(COUNT), final


def test_sigkill_middle_stage_20_times_equals_uninterrupted_run(make_pipeline) -> None:
    # the stream depends on the seed, not on pacing: the uninterrupted run may go 20x faster
    clean, _ = _run(make_pipeline, "clean", kills=0, seed=0, speed=20)
    killed, status = _run(make_pipeline, "killed", kills=20, seed=1234, speed=KILLED_SPEED)
    counter = next(s for s in status["stages"] if s["name"] == "counter")
    sink = next(s for s in status["stages"] if s["name"] == "sink")
    assert counter["restarts"] == 20
    assert sink["errors"] == 0 and sink["counters"]["gaps"] == 0 and sink["counters"]["dups"] == 0
    assert len(clean) == len(killed) == COUNT_N
    for f in FIELDS:
        assert np.array_equal(clean[f], killed[f]), f"field {f} differs from the uninterrupted run"
    # the counts are right, not just equal: per instrument they run 1, 2, 3, ...
    for inst in (0, 1):
        c = clean["count"][clean["instrument"] == inst]
        assert np.array_equal(c, np.arange(1, len(c) + 1))
