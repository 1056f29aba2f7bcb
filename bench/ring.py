"""``bench ring``: one-way latency and throughput of the shared-memory ring against the IPC a user would pick.

Method (that of ``shared/reference/IPC_BASELINE.md``, so figures are comparable). Every transport in every
placement gets a producer and a consumer process (``multiprocessing`` forkserver children), each pinned to one CPU
with ``os.sched_setaffinity`` before it creates anything, so helper threads (Queue's feeder, zmq's I/O thread)
share its CPU. Every pair is started and warmed up first (numba code compiled or loaded from numba's cache and
called once in each process); then the pairs run in ``rounds`` interleaved rounds (pair 1, pair 2, ..., pair 1,
...), so a burst of load from other tenants of a shared host lands on all transports alike rather than on whichever
ran at that moment. Samples and records are pooled over the rounds. Each round has two phases:

- latency: records paced at least ``INTERVAL_NS`` apart and never more than one in flight (the producer also
  waits for the consumer's acknowledgement of the previous record, through a shared counter), so it measures
  latency, not queueing. The producer stamps ``time.perf_counter_ns()`` (CLOCK_MONOTONIC, the same clock in every
  process) into the record just before sending, the consumer stamps right after receiving; the first 10% of each
  round are dropped as warm-up.
- throughput: records sent back to back; the consumer checks every sequence number (a gap or a duplicate aborts
  the run) and records/s = records / (first send .. last receive), summed over rounds.

Peers send a 64-byte ``bytes`` (struct-packed sequence number and timestamp); the ring sends 64-byte PING records,
one ``push_words`` / ``pop_words`` call per record. ``lowlat-ring-batch`` runs both loops inside numba with the
zero-copy ``claim``/``publish`` and ``peek``/``release`` calls, 64 records per publish, and reports throughput
only.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import multiprocessing as mp
import os
import queue
import shutil
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numba
import numpy as np

from bench.host import cpu_times, host_info, loadavg
from pipeline import ring as R
from pipeline.records import PING
from pipeline.ring import Ring

TRANSPORTS: tuple[str, ...] = ("lowlat-ring", "lowlat-ring-batch", "mp-queue", "mp-pipe", "faster-fifo", "zmq-ipc")
PEERS: tuple[str, ...] = ("mp-queue", "mp-pipe", "faster-fifo", "zmq-ipc")
PLACEMENTS: tuple[str, ...] = ("cross-cpu", "same-cpu")

DEFAULT_COUNT = 200_000
"""The ring's latency records with the defaults; every other count scales with it (see ``counts``)."""
DEFAULT_ROUNDS = 3

INTERVAL_NS = 20_000
"""Minimum gap between two latency records."""

WARMUP_FRACTION = 0.10
RING_CAPACITY = 1 << 13  # 8192 records (512 KiB) for the one-call-per-record path
BATCH_RING_CAPACITY = 1 << 16  # 4 MiB for the batch path: the producer rarely touches lines the consumer reads
BATCH = 64
SEGMENT_PREFIX = "lowlat-bench."

# Each peer's best receive mode per placement: (latency phase, throughput phase, producer's wait between latency
# records). Chosen by running the alternatives side by side (5 interleaved rounds, 50k latency records each) on
# the 2-vCPU guest this was written on; figures are cross-CPU p50 / p99:
#   mp-queue: blocking get() (25 / 66 us, 118k/s; a get_nowait() loop: 28 / 49 us but 64k/s). Its feeder thread
#     runs on the producer's CPU and needs the GIL, so the producer yields while pacing: busy-waiting holds the
#     GIL and every record waits for the 5 ms switch interval.
#   mp-pipe: blocking recv_bytes() (11 / 22 us). A busy poll() loop is worse (12 / 27 us, 83k/s): Connection.poll
#     builds a selector on every call.
#   faster-fifo: get(block=False) in a busy loop for latency (13 / 28 us; blocking get(): 16 / 28 us), get_many()
#     for throughput. Payloads travel as bytes (dumps=identity, loads=bytes): the default pickles every message
#     through ForkingPickler, which doubles put()'s cost.
#   zmq-ipc: blocking recv() (PUSH/PULL; 22-24 / 38 us; a recv(NOBLOCK) loop: 26 / 46 us). Its I/O threads share
#     the pinned CPUs, so the producer yields while pacing (busy pacing gave occasional ms-scale p99s).
# On one CPU every peer uses its blocking receive and every producer yields while pacing.
PEER_MODES: dict[tuple[str, str], tuple[str, str, str]] = {
    ("mp-queue", "cross-cpu"): ("block", "block", "yield"),
    ("mp-pipe", "cross-cpu"): ("block", "block", "spin"),
    ("faster-fifo", "cross-cpu"): ("spin", "get_many", "spin"),
    ("zmq-ipc", "cross-cpu"): ("block", "block", "yield"),
    ("mp-queue", "same-cpu"): ("block", "block", "yield"),
    ("mp-pipe", "same-cpu"): ("block", "block", "yield"),
    ("faster-fifo", "same-cpu"): ("block", "get_many", "yield"),
    ("zmq-ipc", "same-cpu"): ("block", "block", "yield"),
}

NOTES: dict[str, str] = {
    "lowlat-ring": "pipeline.ring.Ring: one push_words() / pop_words(wait=...) call per record from Python",
    "lowlat-ring-batch": "claim+free_slots/publish and peek+ready/release, 64 records per publish, loops inside "
                         "@numba.njit (throughput only)",
    "mp-queue": "multiprocessing.Queue: put() / get()",
    "mp-pipe": "multiprocessing.Pipe(duplex=False): send_bytes() / recv_bytes()",
    "faster-fifo": "faster_fifo.Queue(dumps=identity, loads=bytes): put() / get() (spin: get(block=False) in a "
                   "loop)",
    "zmq-ipc": "pyzmq PUSH/PULL over ipc://: send() / recv()",
}

_PAYLOAD = struct.Struct("<Qq48x")  # sequence number, perf_counter_ns at send: 64 bytes
_W_SRC_SEQ, _W_T_PUB = 1, 3  # PING words: src_seq (the producer's own count), t_pub_ns
assert PING.itemsize == _PAYLOAD.size == 64


class BenchError(RuntimeError):
    """A benchmark process failed (sequence gap or duplicate, timeout, crash)."""


@dataclass(frozen=True)
class Case:
    """One producer/consumer pair: a transport in a placement with its receive modes."""

    transport: str
    placement: str
    wait: str  # ring: its wait strategy; peers: receive mode of the latency phase
    tput_wait: str  # receive mode of the throughput phase
    producer_cpu: int
    consumer_cpu: int
    latency_count: int  # records sent in the latency phase, over all rounds (0: no latency phase)
    throughput_count: int  # records sent in the throughput phase, over all rounds
    pace: str = "spin"  # how the producer waits between latency records: "spin" (busy) or "yield" (sched_yield)
    interval_ns: int = INTERVAL_NS
    channel: str = ""  # ring segment name or zmq endpoint

    @property
    def same_cpu(self) -> bool:
        """Producer and consumer share one CPU."""
        return self.producer_cpu == self.consumer_cpu


@dataclass(frozen=True)
class Round:
    """What a pair does in one round."""

    latency: int  # latency records
    throughput: int  # throughput records
    base: int  # records the ring carried in earlier throughput phases (the batch path checks global indices)
    deadline: float  # time.monotonic() after which a waiting worker gives up


def _identity(b: bytes) -> bytes:
    """faster-fifo ``dumps`` for payloads that are bytes already (the default pickles with ForkingPickler)."""
    return b


# ----------------------------------------------------------------------------------------------------------------
# numba loops for lowlat-ring-batch
# ----------------------------------------------------------------------------------------------------------------


@numba.njit(nogil=True, cache=True)
def batch_produce(hdr: np.ndarray, data: np.ndarray, start: int, end: int, batch: int, max_full: int) -> int:
    """Publish records ``start..end-1`` zero-copy, up to ``batch`` per ``publish``: ``claim`` gives the first free
    slot, ``free_slots`` how many follow; each record's src_seq word is its index (the ring stamps seq).

    Returns the next index to publish; after ``max_full`` consecutive full-ring polls it returns early (so the
    caller can yield). ``publish`` wakes a consumer sleeping on the doorbell."""
    cap = data.shape[0]
    mask = cap - 1
    i = start
    full = 0
    while i < end:
        slot = R.claim(hdr, cap)
        if slot < 0:
            full += 1
            if full >= max_full:
                return i
            continue
        full = 0
        m = min(np.int64(R.free_slots(hdr, cap, batch)), end - i, batch)
        for k in range(m):
            data[(slot + k) & mask, 1] = np.uint64(i + k)
        i += m
        R.publish(hdr, data, m)
    return i


@numba.njit(nogil=True, cache=True)
def batch_consume(hdr: np.ndarray, data: np.ndarray, start: int, end: int, batch: int, max_empty: int) -> int:
    """Read records ``start..end-1`` zero-copy, up to ``batch`` per ``release`` (``peek`` gives the first slot,
    ``ready`` how many follow), checking the ring's seq and the producer's src_seq word of every record.

    Returns the next expected index (early after ``max_empty`` consecutive empty polls), or ``-(i + 1)`` for the
    first record ``i`` whose sequence numbers are wrong (gap or duplicate)."""
    cap = data.shape[0]
    mask = cap - 1
    i = start
    empty = 0
    while i < end:
        slot = R.peek(hdr, cap)
        if slot < 0:
            empty += 1
            if empty >= max_empty:
                return i
            continue
        empty = 0
        n = min(np.int64(R.ready(hdr, batch)), end - i, batch)
        for k in range(n):
            j = (slot + k) & mask
            s = np.uint64(i + k)
            if data[j, 0] != s or data[j, 1] != s:
                return -(i + k) - 1
        R.release(hdr, n)
        i += n
    return i


# ----------------------------------------------------------------------------------------------------------------
# worker processes: each side is a generator that sets up, yields {} when ready, then is sent a Round and yields
# that round's result, until it is closed
# ----------------------------------------------------------------------------------------------------------------

Side = Generator[dict[str, Any], Round, None]


def _worker(role: str, case: Case, chan: Any, ack: Any, ctl: Connection) -> None:
    """Entry point of a producer or consumer process: pin, set up, then run the rounds the parent sends."""
    try:
        os.sched_setaffinity(0, {case.producer_cpu if role == "producer" else case.consumer_cpu})
        fn = {
            ("producer", "lowlat-ring"): _ring_producer,
            ("consumer", "lowlat-ring"): _ring_consumer,
            ("producer", "lowlat-ring-batch"): _batch_producer,
            ("consumer", "lowlat-ring-batch"): _batch_consumer,
        }.get((role, case.transport), _peer_producer if role == "producer" else _peer_consumer)
        side = fn(case, chan, ack)
        next(side)  # set up and warmed up
        gc.collect()
        gc.freeze()
        gc.disable()  # for every transport alike: no collector pauses inside a timed phase
        ctl.send({"ok": True})
        while (rnd := ctl.recv()) is not None:
            if role == "consumer":
                ctl.send({"ok": True, "started": True})
            ctl.send({"ok": True, **side.send(rnd)})
        side.close()
    except BaseException as e:
        try:
            ctl.send({"ok": False, "error": f"{role} of {case.transport}/{case.placement}: {e!r}",
                      "traceback": traceback.format_exc()})
        except OSError:
            pass
    finally:
        ctl.close()


def _wait_ack(ack: Any, n: int, rnd: Round, yield_: bool) -> None:
    while ack.value < n:
        if yield_:
            os.sched_yield()
        if time.monotonic() > rnd.deadline:
            raise BenchError(f"timed out waiting for the consumer to receive {n} records (has {ack.value})")


def _warm_ring(name: str, wait: str) -> None:
    """Compile (or load from numba's cache) and run once every ring function this process calls, on a scratch
    ring ``name``."""
    ring = Ring.create(name, PING, 64, replace=True)
    try:
        if batch_produce(ring.hdr, ring.data, 0, 10, BATCH, 2) != 10:
            raise BenchError("warm-up batch_produce failed")
        if batch_consume(ring.hdr, ring.data, 0, 10, BATCH, 2) != 10:
            raise BenchError("warm-up batch_consume failed")
        w = np.zeros(1, dtype=PING).view(np.uint64)
        o = np.zeros_like(w)
        for _ in range(3):
            ring.push_words(w, wait=wait)
            ring.pop_words(o, wait=wait, timeout_s=1.0)
        ring.pop_words(o, wait=wait, timeout_s=0.001)  # the empty path (spin loop / yield / doorbell)
        del w, o
        ring.close()
    finally:
        Ring.unlink(name)


def _pace(t_next: int, i: int, ack: Any, yield_: bool) -> int:
    """Wait (busy, or yielding) until ``t_next`` and until record ``i - 1`` was received, so one record at a time
    is in flight; returns the time. Runs before the send is stamped, so its own cost is not measured."""
    perf = time.perf_counter_ns
    while True:
        t = perf()
        if t >= t_next and ack.value >= i:
            return t
        if yield_:
            os.sched_yield()
        if t > t_next + 10_000_000_000:
            raise BenchError(f"latency record {i} not acknowledged within 10 s")


def _ring_producer(case: Case, chan: str, ack: Any) -> Side:
    wait = case.wait
    _warm_ring(f"{chan}.warm{os.getpid()}", wait)
    ring = Ring.attach(chan, PING)
    words = np.zeros(1, dtype=PING).view(np.uint64)
    pw = memoryview(words)  # item access gives/takes Python ints without numpy scalar overhead
    push_words, perf, src_seq, t_pub = ring.push_words, time.perf_counter_ns, _W_SRC_SEQ, _W_T_PUB
    yield_, interval = case.pace == "yield", case.interval_ns
    rnd = yield {}
    while True:
        t_next = perf()
        for i in range(rnd.latency):
            t = _pace(t_next, i, ack, yield_)
            pw[src_seq] = i
            pw[t_pub] = perf()
            push_words(words, wait)
            t_next = t + interval
        _wait_ack(ack, rnd.latency, rnd, yield_)
        t0 = perf()
        for i in range(rnd.throughput):
            pw[src_seq] = i
            push_words(words, wait)
        rnd = yield {"t_first_send_ns": t0, "producer_waits": ring.producer_waits}


def _ring_consumer(case: Case, chan: str, ack: Any) -> Side:
    wait = case.wait
    _warm_ring(f"{chan}.warm{os.getpid()}", wait)
    ring = Ring.attach(chan, PING)
    out = np.zeros(1, dtype=PING).view(np.uint64)
    mv = memoryview(out)
    pop_words, perf, src_seq, t_pub = ring.pop_words, time.perf_counter_ns, _W_SRC_SEQ, _W_T_PUB
    rnd = yield {}
    while True:
        lat = [0] * rnd.latency
        for i in range(rnd.latency):
            pop_words(out, wait)
            t = perf()
            lat[i] = t - mv[t_pub]
            if mv[src_seq] != i:
                raise BenchError(f"latency phase: expected record {i}, got {mv[src_seq]}")
            ack.value = i + 1
        for i in range(rnd.throughput):
            pop_words(out, wait)
            if mv[src_seq] != i:
                raise BenchError(f"throughput phase: expected record {i}, got {mv[src_seq]} (gap or duplicate)")
        t1 = perf()
        rnd = yield {"t_last_recv_ns": t1, "latency_ns": np.asarray(lat, dtype=np.int64),
                     "consumer_waits": ring.consumer_waits, "doorbell_rings": ring.doorbell_rings}


def _batch_producer(case: Case, chan: str, ack: Any) -> Side:
    _warm_ring(f"{chan}.warm{os.getpid()}", case.wait)
    ring = Ring.attach(chan, PING)
    hdr, data = ring.hdr, ring.data
    max_full = 64 if case.same_cpu else 1 << 20
    rnd = yield {}
    while True:
        i, end = rnd.base, rnd.base + rnd.throughput
        t0 = time.perf_counter_ns()
        while i < end:
            r = batch_produce(hdr, data, i, end, BATCH, max_full)
            if r < end:  # the ring stayed full for a while
                if case.same_cpu:
                    os.sched_yield()
                if time.monotonic() > rnd.deadline:
                    raise BenchError(f"batch producer stuck at {r - rnd.base}/{rnd.throughput}")
            i = r
        rnd = yield {"t_first_send_ns": t0, "producer_waits": ring.producer_waits}


def _batch_consumer(case: Case, chan: str, ack: Any) -> Side:
    _warm_ring(f"{chan}.warm{os.getpid()}", case.wait)
    ring = Ring.attach(chan, PING)
    hdr, data = ring.hdr, ring.data
    max_empty = 64 if case.same_cpu else 1 << 20
    rnd = yield {}
    while True:
        i, end = rnd.base, rnd.base + rnd.throughput
        while i < end:
            r = batch_consume(hdr, data, i, end, BATCH, max_empty)
            if r < 0:
                raise BenchError(f"batch: wrong sequence number at record {-r - 1} (gap or duplicate)")
            if r < end:  # empty for a while
                if case.same_cpu:
                    os.sched_yield()
                if time.monotonic() > rnd.deadline:
                    raise BenchError(f"batch consumer stuck at {r - rnd.base}/{rnd.throughput}")
            i = r
        t1 = time.perf_counter_ns()
        rnd = yield {"t_last_recv_ns": t1, "latency_ns": np.zeros(0, dtype=np.int64)}


def _peer_sender(case: Case, chan: Any) -> tuple[Callable[[bytes], Any], Callable[[], None]]:
    """(send, close) for the producer end of a peer transport."""
    if case.transport == "mp-queue":
        return chan.put, chan.close
    if case.transport == "mp-pipe":
        return chan.send_bytes, chan.close
    if case.transport == "faster-fifo":
        return partial(chan.put, timeout=60.0), lambda: None
    if case.transport == "zmq-ipc":
        import zmq

        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUSH)
        sock.connect(case.channel)

        def close() -> None:
            sock.close(linger=5000)
            ctx.term()

        return sock.send, close
    raise ValueError(case.transport)


def _peer_receiver(case: Case, chan: Any, mode: str) -> tuple[Callable[[], Any], bool, Callable[[], None]]:
    """(recv, returns_a_list, close) for the consumer end of a peer transport in receive mode ``mode``."""
    t = case.transport
    if t == "mp-queue":
        if mode == "spin":
            def recv_q(get: Callable[[], bytes] = chan.get_nowait) -> bytes:
                while True:
                    try:
                        return get()
                    except queue.Empty:
                        pass

            return recv_q, False, lambda: None
        return chan.get, False, lambda: None
    if t == "mp-pipe":
        if mode == "poll-spin":
            def recv_p(poll: Callable[[], bool] = chan.poll, recv_b: Callable[[], bytes] = chan.recv_bytes,
                       ) -> bytes:
                while not poll():
                    pass
                return recv_b()

            return recv_p, False, chan.close
        return chan.recv_bytes, False, chan.close
    if t == "faster-fifo":
        if mode == "get_many":
            return partial(chan.get_many, timeout=60.0), True, lambda: None
        if mode == "spin":
            def recv_f(get: Callable[..., bytes] = chan.get) -> bytes:
                while True:
                    try:
                        return get(False)
                    except queue.Empty:
                        pass

            return recv_f, False, lambda: None
        return partial(chan.get, timeout=60.0), False, lambda: None
    if t == "zmq-ipc":
        import zmq

        ctx = zmq.Context()
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVTIMEO, 60_000)
        sock.bind(case.channel)

        def close() -> None:
            sock.close(linger=0)
            ctx.term()

        if mode == "spin":
            def recv_z(recv: Callable[[int], bytes] = sock.recv, flag: int = zmq.NOBLOCK) -> bytes:
                while True:
                    try:
                        return recv(flag)
                    except zmq.Again:
                        pass

            return recv_z, False, close
        return sock.recv, False, close
    raise ValueError(t)


def _peer_producer(case: Case, chan: Any, ack: Any) -> Side:
    send, close = _peer_sender(case, chan)
    pack, perf = _PAYLOAD.pack, time.perf_counter_ns
    yield_, interval = case.pace == "yield", case.interval_ns
    try:
        rnd = yield {}
        while True:
            t_next = perf()
            for i in range(rnd.latency):
                t = _pace(t_next, i, ack, yield_)
                send(pack(i, perf()))
                t_next = t + interval
            _wait_ack(ack, rnd.latency, rnd, yield_)
            t0 = perf()
            for i in range(rnd.throughput):
                send(pack(i, 0))
            rnd = yield {"t_first_send_ns": t0}
    finally:
        close()


def _peer_consumer(case: Case, chan: Any, ack: Any) -> Side:
    recv, _, close = _peer_receiver(case, chan, case.wait)
    recv_t, many = recv, False
    if case.tput_wait != case.wait:
        recv_t, many, _ = _peer_receiver(case, chan, case.tput_wait)
    unpack, perf = _PAYLOAD.unpack, time.perf_counter_ns
    try:
        rnd = yield {}
        while True:
            lat = [0] * rnd.latency
            for i in range(rnd.latency):
                b = recv()
                t = perf()
                seq, t_pub = unpack(b)
                lat[i] = t - t_pub
                if seq != i:
                    raise BenchError(f"latency phase: expected record {i}, got {seq}")
                ack.value = i + 1
            n = rnd.throughput
            if many:
                i = 0
                while i < n:
                    for b in recv_t():
                        seq, _ = unpack(b)
                        if seq != i:
                            raise BenchError(f"throughput phase: expected record {i}, got {seq} (gap/duplicate)")
                        i += 1
            else:
                for i in range(n):
                    seq, _ = unpack(recv_t())
                    if seq != i:
                        raise BenchError(f"throughput phase: expected record {i}, got {seq} (gap or duplicate)")
            t1 = perf()
            rnd = yield {"t_last_recv_ns": t1, "latency_ns": np.asarray(lat, dtype=np.int64)}
    finally:
        close()


# ----------------------------------------------------------------------------------------------------------------
# orchestration
# ----------------------------------------------------------------------------------------------------------------


def counts(count: int) -> dict[str, int]:
    """Record counts (over all rounds) derived from ``--count``, the ring's latency records (default 200k)."""
    return {
        "ring_latency": count,
        "ring_throughput": 10 * count,
        "batch_throughput": 250 * count,
        "peer_latency": max(count // 2, 1),
        "peer_throughput": count,
    }


def plan(count: int, transports: Sequence[str], placements: Sequence[str],
         cpus: Sequence[int] | None = None) -> tuple[list[Case], list[str]]:
    """The cases to run and notes on what was skipped. Cross-CPU uses the first two allowed CPUs (producer,
    consumer); same-CPU puts both on the second."""
    cpus = sorted(os.sched_getaffinity(0)) if cpus is None else list(cpus)
    c = counts(count)
    notes: list[str] = []
    cases: list[Case] = []
    for placement in placements:
        if placement == "cross-cpu":
            if len(cpus) < 2:
                notes.append("cross-cpu skipped: only one CPU available")
                continue
            pc, cc = cpus[0], cpus[1]
        else:
            pc = cc = cpus[1] if len(cpus) > 1 else cpus[0]
        for t in transports:
            pace = "spin" if placement == "cross-cpu" else "yield"
            if t == "lowlat-ring":
                waits = ["spin"] if placement == "cross-cpu" else ["yield", "block"]
                cases += [Case(t, placement, w, w, pc, cc, c["ring_latency"], c["ring_throughput"], pace)
                          for w in waits]
            elif t == "lowlat-ring-batch":
                w = "spin" if placement == "cross-cpu" else "yield"
                cases.append(Case(t, placement, w, w, pc, cc, 0, c["batch_throughput"], pace))
            else:
                lw, tw, pace = PEER_MODES[(t, placement)]
                cases.append(Case(t, placement, lw, tw, pc, cc, c["peer_latency"], c["peer_throughput"], pace))
    return cases, notes


def _split(n: int, rounds: int) -> list[int]:
    return [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]


def _stats(samples_ns: np.ndarray) -> dict[str, float | None]:
    """Percentiles and max in microseconds of latency samples in ns."""
    if samples_ns.size == 0:
        return dict.fromkeys(("p50_us", "p90_us", "p99_us", "p999_us", "max_us"))
    p50, p90, p99, p999 = np.percentile(samples_ns, [50, 90, 99, 99.9]) / 1000.0
    return {"p50_us": float(p50), "p90_us": float(p90), "p99_us": float(p99), "p999_us": float(p999),
            "max_us": float(samples_ns.max()) / 1000.0}


class _Pair:
    """A running producer/consumer pair and what its rounds produced."""

    def __init__(self, ctx: Any, case: Case, run_prefix: str, tmpdir: str, idx: int) -> None:
        self.segments: list[str] = []
        self.ends: list[Any] = []  # pipe ends to close at the end
        self.keep: list[Any] = []  # transport objects the parent must hold until the children have unpickled them
        self.case, prod_end, cons_end = self._channel(ctx, case, run_prefix, tmpdir, idx)
        self.ack = ctx.RawValue("q", 0)
        self.ctl: dict[str, Connection] = {}
        self.procs: list[Any] = []
        for role, chan in (("consumer", cons_end), ("producer", prod_end)):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(role, self.case, chan, self.ack, theirs), daemon=True,
                            name=f"bench-{role}-{idx}")
            p.start()
            theirs.close()
            self.ctl[role] = mine
            self.procs.append(p)
        self.latency: list[np.ndarray] = []
        self.elapsed_ns = 0
        self.records = 0
        self.rounds: list[dict[str, Any]] = []
        self.counters: dict[str, int] = {}

    def _channel(self, ctx: Any, case: Case, run_prefix: str, tmpdir: str, idx: int) -> tuple[Case, Any, Any]:
        t = case.transport
        if t in ("lowlat-ring", "lowlat-ring-batch"):
            name = f"{run_prefix}{idx}"
            self.segments.append(name)
            Ring.create(name, PING, BATCH_RING_CAPACITY if t == "lowlat-ring-batch" else RING_CAPACITY,
                        replace=True).close()
            return replace(case, channel=name), name, name
        if t == "mp-queue":
            q = ctx.Queue()
            self.keep.append(q)
            return case, q, q
        if t == "mp-pipe":
            r, w = ctx.Pipe(duplex=False)
            self.ends += [r, w]
            return case, w, r
        if t == "faster-fifo":
            import faster_fifo

            q = faster_fifo.Queue(max_size_bytes=4 << 20, loads=bytes, dumps=_identity)
            self.keep.append(q)
            return case, q, q
        if t == "zmq-ipc":
            return replace(case, channel=f"ipc://{tmpdir}/{idx}.sock"), None, None
        raise ValueError(f"unknown transport {t!r}")

    def _recv(self, role: str, timeout: float) -> dict[str, Any]:
        """The next message from ``role``; raises if it reports an error, dies, or either process dies first."""
        conn = self.ctl[role]
        what = f"{self.case.transport}/{self.case.placement} {role}"
        other = self.procs[1] if role == "consumer" else self.procs[0]
        ready = wait([conn, other.sentinel], max(0.0, timeout))
        if not ready:
            raise BenchError(f"{what}: no answer within {timeout:.0f} s")
        if conn not in ready:  # the other side exited: its error, if it sent one, is on its own pipe
            peer = "producer" if role == "consumer" else "consumer"
            if self.ctl[peer].poll(1):
                self._recv(peer, 0)
            raise BenchError(f"{self.case.transport}/{self.case.placement} {peer}: process exited")
        try:
            msg = conn.recv()
        except EOFError:
            raise BenchError(f"{what}: process died") from None
        if not msg["ok"]:
            raise BenchError(f"{msg['error']}\n{msg['traceback']}")
        return msg

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for role in ("consumer", "producer"):
            self._recv(role, deadline - time.monotonic())

    def run_round(self, rnd: Round) -> None:
        self.ack.value = 0
        timeout = rnd.deadline - time.monotonic() + 5
        self.ctl["consumer"].send(rnd)
        self._recv("consumer", timeout)  # it is about to receive
        self.ctl["producer"].send(rnd)
        # the consumer's answer first: reading the producer's as soon as it has sent everything would wake this
        # process while the consumer may still be receiving
        cons = self._recv("consumer", rnd.deadline - time.monotonic() + 5)
        prod = self._recv("producer", rnd.deadline - time.monotonic() + 5)
        lat = cons["latency_ns"][int(len(cons["latency_ns"]) * WARMUP_FRACTION):]
        self.latency.append(lat)
        elapsed = cons["t_last_recv_ns"] - prod["t_first_send_ns"]
        self.elapsed_ns += elapsed
        self.records += rnd.throughput
        st = _stats(lat)
        self.rounds.append({"p50_us": _round3(st["p50_us"]), "p99_us": _round3(st["p99_us"]),
                            "throughput_per_s": round(rnd.throughput / elapsed * 1e9, 1) if elapsed > 0 else None})
        for k in ("producer_waits", "consumer_waits", "doorbell_rings"):
            if k in prod or k in cons:
                self.counters[k] = {**prod, **cons}[k]

    def close(self) -> None:
        for conn in self.ctl.values():
            try:
                conn.send(None)
            except OSError:
                pass
        for p in self.procs:
            p.join(5)
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
        for conn in self.ctl.values():
            conn.close()
        for end in self.ends:
            end.close()
        for name in self.segments:
            Ring.unlink(name)

    def row(self) -> dict[str, Any]:
        c = self.case
        lat = np.concatenate(self.latency) if self.latency else np.zeros(0, dtype=np.int64)
        st = {k: _round3(v) for k, v in _stats(lat).items()}
        return {
            "transport": c.transport, "placement": c.placement, "wait": c.wait, "throughput_wait": c.tput_wait,
            "pace": c.pace if c.latency_count else None, **st,
            "throughput_per_s": round(self.records / self.elapsed_ns * 1e9, 1) if self.elapsed_ns > 0 else None,
            "count": self.records, "latency_count": int(lat.size), "producer_cpu": c.producer_cpu,
            "consumer_cpu": c.consumer_cpu, "notes": NOTES[c.transport], "rounds": self.rounds, **self.counters,
        }


def _round3(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def warm_numba() -> None:
    """Compile the benchmark's numba functions once (the workers then load them from numba's cache)."""
    _warm_ring(f"{SEGMENT_PREFIX}{os.getpid()}.warm", "spin")


def run(count: int = DEFAULT_COUNT, transports: Iterable[str] = TRANSPORTS, placements: Iterable[str] = PLACEMENTS,
        rounds: int = DEFAULT_ROUNDS, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every selected transport in every selected placement; returns ``{"host", "params", "results"}``."""
    transports, placements = list(dict.fromkeys(transports)), list(dict.fromkeys(placements))
    for t in transports:
        if t not in TRANSPORTS:
            raise ValueError(f"unknown transport {t!r}; choose from {', '.join(TRANSPORTS)}")
    for p in placements:
        if p not in PLACEMENTS:
            raise ValueError(f"unknown placement {p!r}; choose from {', '.join(PLACEMENTS)}")
    if rounds < 1:
        raise ValueError("--rounds must be at least 1")
    if count < 10 * rounds:
        raise ValueError("--count must be at least 10 per round")
    say = progress or (lambda s: None)
    missing: list[str] = []
    for t, module in (("faster-fifo", "faster_fifo"), ("zmq-ipc", "zmq")):
        if t in transports and importlib.util.find_spec(module) is None:
            transports.remove(t)
            missing.append(f"{t} skipped: {module} is not installed (pip install -e .[dev])")
    cases, notes = plan(count, transports, placements)
    notes = missing + notes
    run_prefix = f"{SEGMENT_PREFIX}{os.getpid()}."
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    tmpdir = tempfile.mkdtemp(prefix="lowlat-bench-")
    t_start = time.monotonic()
    load0, cpu0 = loadavg(), cpu_times()
    pairs: list[_Pair] = []
    try:
        if any(t.startswith("lowlat-ring") for t in transports):
            warm_numba()
        say(f"starting {2 * len(cases)} processes")
        for idx, case in enumerate(cases):
            pairs.append(_Pair(ctx, case, run_prefix, tmpdir, idx))
        for pair in pairs:
            pair.wait_ready(120)
        base: dict[int, int] = {}
        for r in range(rounds):
            for idx, pair in enumerate(pairs):
                c = pair.case
                say(f"round {r + 1}/{rounds}: {c.transport} {c.placement} ({c.wait})")
                n_lat, n_tput = _split(c.latency_count, rounds)[r], _split(c.throughput_count, rounds)[r]
                budget = 30 + n_lat * (c.interval_ns * 1e-9 + 200e-6) + n_tput * 100e-6
                pair.run_round(Round(n_lat, n_tput, base.get(idx, 0), time.monotonic() + budget))
                base[idx] = base.get(idx, 0) + n_tput
        results = [pair.row() for pair in pairs]
    finally:
        for pair in pairs:
            pair.close()
        for p in Path(R.SHM_DIR).glob(f"{run_prefix}*"):
            p.unlink(missing_ok=True)
        shutil.rmtree(tmpdir, ignore_errors=True)
    cpu1 = cpu_times()
    total = cpu1[0] - cpu0[0]
    host = host_info(("pyzmq", "faster-fifo"))
    host["load"] = {"loadavg_start": load0, "loadavg_end": loadavg(),
                    "steal_pct": round(100 * (cpu1[1] - cpu0[1]) / total, 1) if total > 0 else None}
    return {
        "host": host,
        "params": {"count": count, "rounds": rounds, "counts": counts(count), "interval_us": INTERVAL_NS / 1000,
                   "warmup_fraction": WARMUP_FRACTION, "ring_capacity": RING_CAPACITY,
                   "batch_ring_capacity": BATCH_RING_CAPACITY, "batch": BATCH,
                   "elapsed_s": round(time.monotonic() - t_start, 1), "notes": notes},
        "results": results,
    }


# ----------------------------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------------------------


def compare(report: dict[str, Any]) -> list[str]:
    """The issue's bars computed from a report, for a human to read (nothing is asserted)."""
    rows = report["results"]
    lines: list[str] = []

    def best_peer(placement: str, key: str, low: bool) -> dict[str, Any] | None:
        peers = [r for r in rows if r["placement"] == placement and r["transport"] in PEERS and r[key] is not None]
        return (min if low else max)(peers, key=lambda r: r[key]) if peers else None

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    for placement in PLACEMENTS:
        peer_lat = best_peer(placement, "p99_us", True)
        peer_tput = best_peer(placement, "throughput_per_s", False)
        for ring in (r for r in rows if r["placement"] == placement and r["transport"] == "lowlat-ring"):
            tag = f"{placement}, ring wait={ring['wait']}"
            if peer_lat:
                ratio = ring["p99_us"] / peer_lat["p99_us"]
                need = 1 / 3 if placement == "cross-cpu" else 1 / 2
                lines.append(f"{tag}: p99 {ring['p99_us']:.2f} µs vs best peer {peer_lat['transport']} "
                             f"{peer_lat['p99_us']:.2f} µs = {ratio:.2f}x (bar <= {need:.2f}x: "
                             f"{verdict(ratio <= need)})")
            if placement == "cross-cpu":
                lines.append(f"{tag}: p50 {ring['p50_us']:.2f} µs (bar < 1.5 µs: {verdict(ring['p50_us'] < 1.5)})")
            if peer_tput:
                ratio = ring["throughput_per_s"] / peer_tput["throughput_per_s"]
                lines.append(f"{tag}: {ring['throughput_per_s'] / 1e6:.2f} M records/s vs best peer "
                             f"{peer_tput['transport']} {peer_tput['throughput_per_s'] / 1e6:.2f} M = "
                             f"{ratio:.2f}x (bar >= 3x: {verdict(ratio >= 3)})")
        for b in (r for r in rows if r["placement"] == placement and r["transport"] == "lowlat-ring-batch"):
            tp = b["throughput_per_s"]
            vs = f", {tp / peer_tput['throughput_per_s']:.0f}x best peer" if peer_tput else ""
            lines.append(f"{placement}, batch inside numba: {tp / 1e6:.1f} M records/s{vs} "
                         f"(bar >= 20 M: {verdict(tp >= 20e6)})")
    return lines


def _fmt(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 1000 else f"{v:.{digits}f}"


def render(report: dict[str, Any], console: Any = None) -> None:
    """Print the report as a rich table, followed by what each transport did and the issue's bars."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 200)
    h, p = report["host"], report["params"]
    table = Table(title=f"bench ring: 64-byte records between two processes ({h['cpu_model']}, {h['cpu_count']} "
                        f"CPUs, kernel {h['kernel']}, Python {h['python']})")
    for col in ("transport", "placement", "receive", "pace"):
        table.add_column(col)
    for col in ("p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "records/s", "count"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        recv = r["wait"] if r["wait"] == r["throughput_wait"] else f"{r['wait']}/{r['throughput_wait']}"
        table.add_row(r["transport"], r["placement"], recv, r["pace"] or "-", _fmt(r["p50_us"]), _fmt(r["p90_us"]),
                      _fmt(r["p99_us"]), _fmt(r["p999_us"]), _fmt(r["max_us"], 1),
                      _fmt(r["throughput_per_s"]), f"{r['count']:,}")
    console.print(table)
    seen: dict[str, str] = {}
    for r in report["results"]:
        seen.setdefault(r["transport"], r["notes"])
    for t, note in seen.items():
        console.print(f"  {t}: {note}")
    where = {r["placement"]: f"{r['placement']} = producer on CPU {r['producer_cpu']}, consumer on CPU "
                             f"{r['consumer_cpu']}" for r in report["results"]}
    console.print(f"  Latency: paced >= {p['interval_us']:g} µs apart, one record in flight, first "
                  f"{p['warmup_fraction']:.0%} of each round dropped. receive = the consumer's wait (ring) or receive "
                  f"mode (peers), latency/throughput phase when they differ; pace = how the producer waits between "
                  f"latency records (spin: busy, yield: sched_yield). {'; '.join(where.values())}. count = records "
                  f"sequence-checked in the throughput phase. {p['rounds']} interleaved rounds, pooled.")
    load = h.get("load") or {}
    console.print(f"  Host load: loadavg {load.get('loadavg_start')} at start, {load.get('loadavg_end')} at end, "
                  f"steal {load.get('steal_pct')}% of CPU time; the run took {p['elapsed_s']} s.")
    for note in p["notes"]:
        console.print(f"  Note: {note}")
    for line in compare(report):
        console.print(f"  {line}")


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write the report as JSON."""
    path.write_text(json.dumps(report, indent=2) + "\n")
