"""The ring's contract: attach checks, lossless full ring, history, doorbell wake-up across processes, dedup."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

from pipeline.dedup import admit, admit_py
from pipeline.records import BBO, PING, record_dtype
from pipeline.ring import HEADER_BYTES, VERSION, W_VERSION, Ring, RingError, RingReader, segment_path


@pytest.fixture
def name():
    n = f"lowlat-test.{uuid.uuid4().hex[:12]}"
    yield n
    Ring.unlink(n)


def _rec(payload: int) -> np.void:
    r = np.zeros(1, PING)[0]
    r["payload"] = payload
    return r


def test_segment_is_owner_only_and_attach_checks_everything(name: str) -> None:
    ring = Ring.create(name, PING, 16)
    assert stat.S_IMODE(os.stat(segment_path(name)).st_mode) == 0o600
    with pytest.raises(RingError, match="already exists"):
        Ring.create(name, PING, 16)
    with pytest.raises(RingError, match="record type mismatch"):
        Ring.attach(name, BBO)
    same_size_other_fields = record_dtype(("a", "<u8"), ("b", "<f8"))
    assert same_size_other_fields.itemsize == PING.itemsize
    with pytest.raises(RingError, match="record type mismatch"):
        Ring.attach(name, same_size_other_fields)
    ring.hdr[W_VERSION] = 99
    with pytest.raises(RingError, match="layout version 99"):
        Ring.attach(name, PING)
    ring.hdr[W_VERSION] = VERSION
    ring.close()
    with pytest.raises(RingError, match="no segment"):
        Ring.attach(name + "x", PING)
    with open(segment_path(name), "r+b") as f:
        f.truncate(HEADER_BYTES + 100)
    with pytest.raises(RingError, match="corrupt header"):
        Ring.attach(name, PING)
    with open(segment_path(name), "wb") as f:
        f.write(os.urandom(4096))
    with pytest.raises(RingError, match="bad magic"):
        Ring.attach(name, PING)
    with open(segment_path(name), "wb") as f:
        f.write(b"x")
    with pytest.raises(RingError, match="shorter than a ring header"):
        Ring.attach(name, PING)


def test_capacity_must_be_power_of_two(name: str) -> None:
    with pytest.raises(RingError, match="power of two"):
        Ring.create(name, PING, 1000)


def test_full_ring_never_overwrites_and_history_reads_behind_the_consumer(name: str) -> None:
    prod = Ring.create(name, PING, 8)
    cons = Ring.attach(name, PING)
    for i in range(8):
        assert prod.try_push(_rec(i))
    assert not prod.try_push(_rec(99)), "a full ring must refuse, not overwrite"
    assert [int(cons.try_pop()["payload"]) for _ in range(3)] == [0, 1, 2]
    assert cons.fill == 5
    assert list(cons.history(10)["payload"]) == [0, 1, 2]
    assert list(prod.last_published(4)["seq"]) == [4, 5, 6, 7]
    for i in range(3):
        assert prod.try_push(_rec(100 + i))  # reuses the slots of 0, 1, 2
    assert len(cons.history(10)) == 0, "records the producer overwrote are not history any more"
    # seq 3 shares its slot with seq 11, which the producer may be writing right now: not returned
    assert list(cons.read(3, 8)["payload"]) == [4, 5, 6, 7, 100, 101, 102]


def test_reader_follows_a_ring_it_does_not_consume_and_counts_what_it_missed(name: str) -> None:
    prod = Ring.create(name, PING, 8)
    cons = Ring.attach(name, PING)
    reader = RingReader(Ring.attach(name, PING))
    assert len(reader.read()) == 0 and reader.missed == 0
    for i in range(5):
        assert prod.try_push(_rec(i))
    assert list(reader.read()["payload"]) == [0, 1, 2, 3, 4]
    assert cons.fill == 5, "reading never consumes"
    assert len(reader.read()) == 0
    for i in range(5, 20):  # the consumer keeps up; the reader falls behind by more than the ring holds
        assert prod.try_push(_rec(i))
        cons.try_pop()
    got = list(reader.read()["payload"])
    assert got == list(range(13, 20)), "at most capacity - 1: the next slot may be mid-overwrite"
    assert reader.missed == 8 and reader.pos == 20


CONSUMER = """
import sys, time
from pipeline.ring import Ring
from pipeline.records import PING
r = Ring.attach(sys.argv[1], PING)
r.warm()
print("ready", flush=True)
got = []
for _ in range(int(sys.argv[2])):
    rec = r.pop(wait="block", timeout_s=20)
    got.append(int(rec["payload"]) if rec is not None else -1)
    print(time.perf_counter_ns() - int(rec["t_pub_ns"]), flush=True)
print("got", got, flush=True)
"""


def test_blocked_consumer_is_woken_by_the_doorbell(name: str) -> None:
    prod = Ring.create(name, PING, 64)
    proc = subprocess.Popen([sys.executable, "-c", CONSUMER, name, "5"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    lat = []
    for i in range(5):
        time.sleep(0.3)  # long enough for the consumer to fall asleep on the futex
        r = _rec(i)
        r["t_pub_ns"] = time.perf_counter_ns()
        prod.push(r)
        lat.append(int(proc.stdout.readline()))
    assert proc.stdout.readline().strip() == "got [0, 1, 2, 3, 4]"
    assert proc.wait(10) == 0
    assert prod.doorbell_rings >= 4, "the producer must ring the doorbell for a sleeping consumer"
    # woken, not polled: a 50 ms futex timeout would show as tens of ms; allow a loaded host a lot
    assert sorted(lat)[2] < 20_000_000


@given(hs.lists(hs.tuples(hs.integers(0, 1), hs.integers(0, 40)), max_size=60),
       hs.integers(-1, 30), hs.integers(0, 3))
def test_admit_matches_its_python_twin(outputs, last, skip) -> None:
    a = np.array([[last, skip], [last, skip]], dtype=np.int64)
    b = a.copy()
    for ring, seq in outputs:
        assert admit(a, ring, seq) == admit_py(b, ring, seq)
    assert np.array_equal(a, b)
