"""The stage runtime in real processes against real rings: resume after a crash between publish and release,
replay from history with dedup, SIGTERM exits cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import ENV

from pipeline import status as st
from pipeline.records import BBO, COUNT
from pipeline.ring import Ring

CONFIG = """
name = "{name}"
[[instruments]]
symbol = "A"
[[instruments]]
symbol = "B"
[rings.ticks]
type = "bbo"
capacity = 1024
[rings.out]
type = "{out_type}"
capacity = 1024
[stages.source]
kind = "synthetic"
outputs = ["ticks"]
[stages.middle]
kind = "{kind}"
inputs = ["ticks"]
outputs = ["out"]
[stages.sink]
kind = "check"
inputs = ["out"]
"""


class Harness:
    """Rings and a status block as the supervisor would make them; the test plays every other stage."""

    def __init__(self, tmp: Path, kind: str, out_type: str) -> None:
        self.name = f"t{uuid.uuid4().hex[:10]}"
        self.run_dir = tmp
        (tmp / "config.toml").write_text(CONFIG.format(name=self.name, kind=kind, out_type=out_type))
        self.block = st.StatusBlock.create(self.name, 3)
        self.ticks = Ring.create(f"{self.name}.ticks", BBO, 1024)
        self.out = Ring.create(f"{self.name}.out", BBO if out_type == "bbo" else COUNT, 1024)
        self.proc: subprocess.Popen | None = None

    def feed(self, n: int) -> None:
        rec = np.zeros(1, BBO)[0]
        for i in range(self.ticks.producer_pos, self.ticks.producer_pos + n):
            rec["src_seq"], rec["instrument"] = i, i % 2
            rec["bid_px"], rec["ask_px"] = 100.0 + i, 101.0 + i
            self.ticks.push(rec)

    def start_stage(self, name: str = "middle") -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.stage", str(self.run_dir), name, "block"],
                                     env=ENV)

    def wait_out(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.out.producer_pos < n:
            assert self.proc is not None and self.proc.poll() is None, "stage process died"
            assert time.monotonic() < deadline, f"only {self.out.producer_pos} of {n} outputs"
            time.sleep(0.01)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for r in (self.ticks, self.out):
            r.close()
            Ring.unlink(r.name)
        self.block.path.unlink(missing_ok=True)


@pytest.fixture
def harness(tmp_path: Path):
    made: list[Harness] = []

    def make(kind: str, out_type: str) -> Harness:
        h = Harness(tmp_path, kind, out_type)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def test_counter_resumes_after_crash_between_publish_and_release(harness) -> None:
    h = harness("count", "count")
    h.feed(100)
    # play the counter that died: inputs 0..59 done and released, 60..69 published but never released
    inp = np.zeros(70, BBO)
    assert h.ticks.peek_batch(inp) == 70
    counts = [0, 0]
    for r in inp:
        counts[r["instrument"]] += 1
        o = np.zeros(1, COUNT)[0]
        o["src_seq"], o["instrument"], o["count"] = r["seq"], r["instrument"], counts[r["instrument"]]
        h.out.push(o)
    h.ticks.release(60)
    h.start_stage()
    h.wait_out(100)
    assert h.stop() == 0, "SIGTERM must end the stage with exit code 0"
    out = h.out.last_published(1000)
    assert list(out["src_seq"]) == list(range(100)), "each input exactly once"
    for inst in (0, 1):
        assert list(out["count"][out["instrument"] == inst]) == list(range(1, 51))
    row = h.block.rows[1]
    assert st.STATES[row["state"]] == "stopped" and row["records_in"] == 30 and row["records_out"] == 30


def test_replay_from_history_publishes_only_what_is_missing(harness) -> None:
    h = harness("stages_for_tests:Twice", "bbo")
    h.feed(80)
    # play the stage that died: inputs 0..39 released with both outputs; 40 published only its first output
    for i in range(40):
        for flag in (0, 1):
            o = np.zeros(1, BBO)[0]
            o["src_seq"], o["flags"] = i, flag
            h.out.push(o)
    o["src_seq"], o["flags"] = 40, 0
    h.out.push(o)
    h.ticks.skip(40)
    h.start_stage()  # rebuild re-reads inputs 0..39 from history (all deduped), then 40.. live
    h.wait_out(160)
    time.sleep(0.2)
    assert h.stop() == 0
    out = h.out.last_published(1000)
    assert len(out) == 160
    assert list(out["src_seq"]) == [i // 2 for i in range(160)]
    assert list(out["flags"]) == [i % 2 for i in range(160)]
    assert h.block.rows[1]["deduped"] == 81  # 40 inputs x 2 outputs replayed from history + 1 of input 40


def test_sink_counts_gaps_and_duplicates_and_keeps_every_record(harness) -> None:
    h = harness("count", "count")
    src = [0, 1, 2, 3, 5, 6, 6, 7]  # 4 lost upstream, 6 duplicated
    for i in src:
        o = np.zeros(1, COUNT)[0]
        o["src_seq"], o["instrument"] = i, i % 2
        h.out.push(o)
    h.start_stage("sink")
    deadline = time.monotonic() + 60
    while h.out.consumer_pos < len(src):
        assert h.proc.poll() is None and time.monotonic() < deadline, "sink died or stalled"
        time.sleep(0.01)
    time.sleep(0.1)
    row = h.block.rows[2]
    names = [n.decode() for n in row["counter_names"]]
    counters = dict(zip(names, row["counters"], strict=True))
    assert counters["gaps"] == 1 and counters["dups"] == 1 and row["errors"] == 2
    assert h.proc.poll() is None, "bad input must not stop the sink"
    assert row["last_error"].decode() == "duplicate: src_seq 6 after 6"
    assert h.stop() == 0
    kept = np.fromfile(h.run_dir / "sink.bin", dtype=COUNT)
    assert list(kept["src_seq"]) == src, "the sink keeps what it received, bad records included"


def test_count_step_matches_its_python_twin(tmp_path: Path) -> None:
    from compute.running_count import count_step, count_step_py

    name = f"t{uuid.uuid4().hex[:10]}"
    inp, out = Ring.create(f"{name}.in", BBO, 256), Ring.create(f"{name}.out", COUNT, 256)
    try:
        rng = np.random.default_rng(5)
        ticks = np.zeros(200, BBO)
        ticks["instrument"] = rng.integers(0, 3, 200)
        ticks["bid_px"] = rng.uniform(10, 20, 200)
        ticks["ask_px"] = ticks["bid_px"] + 0.5
        for t in ticks:
            inp.push(t)
        counts = np.zeros(3, np.uint64)
        marks = np.array([[-1, 0]], np.int64)
        assert count_step(inp.hdr, inp.slots, out.hdr, out.data, out.slots, counts, marks, 1000) == (200, 200, 0)
        got = out.last_published(256)
        want = count_step_py(inp.history(256), np.zeros(3, np.uint64))
        assert [(int(r["src_seq"]), int(r["instrument"]), int(r["count"])) for r in got] == want
        assert np.allclose(got["mid"], ticks["bid_px"] + 0.25)
    finally:
        for r in (inp, out):
            r.close()
            Ring.unlink(r.name)
