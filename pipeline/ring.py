"""Lossless single-producer/single-consumer ring of fixed-size records in POSIX shared memory.

Layout (one segment, ``/dev/shm/<pipeline>.<ring>``, mode 0600)::

    bytes   0- 63  line 0: magic, layout version, dtype hash, capacity, record size, epoch (read-only after create)
    bytes  64-127  line 1: producer cursor, producer waits, doorbell rings, cached consumer cursor (producer only)
    bytes 128-191  line 2: consumer cursor, consumer waits, cached producer cursor               (consumer only)
    bytes 192-255  line 3: doorbell word (consumer asleep = 1)                    (set by consumer, cleared by either)
    bytes 256-     capacity slots of ``record size`` bytes, capacity a power of two

Cursors are monotonically increasing 64-bit counts: the producer cursor is the number of records published, the
consumer cursor the number released. Slot of sequence number s = s & (capacity - 1).

Ordering argument
-----------------
Producer, for record s: (1) wait until ``s - consumer < capacity`` (atomic load of the consumer cursor, then an
acquire fence, so the consumer's reads of that slot happened before we overwrite it); (2) write the slot's
words with plain stores; (3) release fence; (4) atomic store of producer cursor = s + 1.
Consumer, for record s: (1) atomic load of the producer cursor; if it is > s, (2) acquire fence; (3) read the
slot; (4) release fence; (5) atomic store of consumer cursor = s + 1.

Cursor caching: each side keeps the last value it loaded of the other side's cursor on its own cache line and
reloads it (steps 1 above, with their fences) only when the cached value says the ring is full (producer) or
empty (consumer). A cached value is never ahead of the real one, so it can only make a side wait, never read or
overwrite too early; and the records it covers were ordered by the acquire that loaded it. It saves a cross-core
cache miss per record when one side runs ahead of the other.

The release fence (3) followed by the atomic store (4) synchronizes-with the consumer's atomic load (1) followed
by its acquire fence (2) when the load reads the stored value (C++11 / LLVM fence-fence synchronization), so every
slot write (2) happens-before every slot read (3): the consumer never sees a torn or stale record. The same
pattern in the other direction (consumer 4-5, producer 1) guarantees a slot is not overwritten while it is read.
The cursors must be *atomic* loads and stores: LLVM orders fences only against atomics, and a plain load of the
cursor could be hoisted out of a spin loop. On x86-64 the fences compile to nothing (TSO) and the atomics to plain
movs, so the hot path costs no extra instructions; on AArch64 they become ``dmb`` barriers. The intrinsics are in
``pipeline.atomics``; ``tests/test_ring_stress.py`` runs producer and consumer as two processes on different CPUs
over 10 million records checking every sequence number and a per-record checksum.

Doorbell (``block`` wait): the consumer stores 1 in the doorbell word, issues a seq_cst fence, re-checks the
producer cursor, and only if still empty sleeps in ``futex(FUTEX_WAIT, expected=1)``. The producer, after each
publish, issues a seq_cst fence and loads the doorbell word; only when it is 1 does it clear it and call
``futex(FUTEX_WAKE)``. Both sides store-then-load across a seq_cst fence (Dekker), so at least one sees the
other's store: no lost wake-up, and a busy pipeline pays no syscall. A futex timeout bounds any residual risk.
All of it, the futex calls included, runs inside compiled code (``pipeline.syscalls``): a push or a waiting
pop is one call from Python.

History: slots behind the consumer cursor keep their records until the producer laps them; ``history(k)`` reads
the last k released records, validating after the copy that the producer has not overwritten them meanwhile.
"""

from __future__ import annotations

import mmap
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from pipeline.atomics import atomic_load, atomic_store, fence_acquire, fence_release, fence_seq_cst
from pipeline.records import dtype_hash
from pipeline.syscalls import FUTEX2_SIZE_U32, futex_wait, futex_waitv, futex_wake, monotonic_ns, sched_yield

if sys.byteorder != "little":  # the doorbell futex is the low half of a 64-bit header word
    raise ImportError("lowlat rings need a little-endian host")

SHM_DIR = Path("/dev/shm")
MAGIC = 0x4C4F574C41545247  # "LOWLATRG"
VERSION = 1
HEADER_BYTES = 256

# header word indices (uint64 words)
W_MAGIC, W_VERSION, W_HASH, W_CAPACITY, W_RECSIZE, W_EPOCH = 0, 1, 2, 3, 4, 5
W_PROD, W_PROD_WAITS, W_RINGS, W_CONS_SEEN = 8, 9, 10, 11
W_CONS, W_CONS_WAITS, W_PROD_SEEN = 16, 17, 18
W_DOORBELL = 24

WAIT_CODES = {"spin": 0, "yield": 1, "block": 2}
SPIN, YIELD, BLOCK = 0, 1, 2
SPINS = (4096, 64, 128)
"""Polls before the next deadline check (spin), sched_yield (yield) or doorbell sleep (block)."""
BLOCK_SLICE_NS = 50_000_000
"""Longest single doorbell sleep: compiled waits return to Python at least this often (signals, heartbeats)."""

PUSH_FULL, PUSH_OK = 0, 1


class RingError(RuntimeError):
    """A ring could not be created or attached (missing, wrong layout, wrong dtype)."""


# ----------------------------------------------------------------------------------------------------------------
# Hot path, compiled. ``hdr`` is the header as uint64 words, ``data`` the slots as a (capacity, words) uint64 view.
# Hand-written because no library offers a lossless cross-process SPSC ring callable from numba.
# ----------------------------------------------------------------------------------------------------------------

_JIT = dict(nogil=True, cache=True, inline="always")


@numba.njit(**_JIT)
def free_slots(hdr, cap, want=1):
    """Slots the producer may write now, at least ``want`` if there are: the cached consumer cursor is reloaded
    (atomic load, acquire) only when it shows fewer."""
    prod = hdr[W_PROD]
    free = np.int64(cap) - np.int64(prod - hdr[W_CONS_SEEN])
    if free >= want:
        return free
    cons = atomic_load(hdr, W_CONS)
    fence_acquire()
    hdr[W_CONS_SEEN] = cons
    return np.int64(cap) - np.int64(prod - cons)


@numba.njit(**_JIT)
def ready(hdr, want=1):
    """Records the consumer may read now, at least ``want`` if there are: the cached producer cursor is reloaded
    (atomic load, acquire) only when it shows fewer."""
    cons = hdr[W_CONS]
    avail = np.int64(hdr[W_PROD_SEEN] - cons)
    if avail >= want:
        return avail
    prod = atomic_load(hdr, W_PROD)
    fence_acquire()
    hdr[W_PROD_SEEN] = prod
    return np.int64(prod - cons)


@numba.njit(**_JIT)
def claim(hdr, cap):
    """Slot index for the next record, or -1 when the ring is full. Write it, then ``publish``."""
    if free_slots(hdr, cap) <= 0:
        return -1
    return np.int64(hdr[W_PROD] & np.uint64(cap - 1))


@numba.njit(**_JIT)
def publish(hdr, data, n):
    """Make the ``n`` claimed records visible: stamp their seq, release, advance the producer cursor, and wake
    the consumer if it sleeps on the doorbell. Returns PUSH_OK."""
    prod = hdr[W_PROD]
    mask = np.uint64(data.shape[0] - 1)
    for i in range(n):
        data[(prod + np.uint64(i)) & mask, 0] = prod + np.uint64(i)
    fence_release()
    atomic_store(hdr, W_PROD, prod + np.uint64(n))
    fence_seq_cst()
    if atomic_load(hdr, W_DOORBELL) != 0:
        atomic_store(hdr, W_DOORBELL, np.uint64(0))
        hdr[W_RINGS] += np.uint64(1)
        futex_wake(hdr.ctypes.data + W_DOORBELL * 8)
    return PUSH_OK


@numba.njit(**_JIT)
def peek(hdr, cap):
    """Slot index of the next unread record, or -1 when empty. Read it, then ``release``."""
    if ready(hdr) <= 0:
        return -1
    return np.int64(hdr[W_CONS] & np.uint64(cap - 1))


@numba.njit(**_JIT)
def release(hdr, n):
    """Hand ``n`` read slots back to the producer."""
    fence_release()
    atomic_store(hdr, W_CONS, hdr[W_CONS] + np.uint64(n))


@numba.njit(nogil=True, cache=True)
def push(hdr, data, rec):
    """Copy one record (uint64 words) into the ring. PUSH_OK, or PUSH_FULL when there is no room."""
    i = claim(hdr, data.shape[0])
    if i < 0:
        return PUSH_FULL
    for w in range(1, data.shape[1]):
        data[i, w] = rec[w]
    return publish(hdr, data, 1)


@numba.njit(nogil=True, cache=True)
def pop(hdr, data, out):
    """Copy the next record into ``out`` and release it. 1 when a record was read, 0 when empty."""
    i = peek(hdr, data.shape[0])
    if i < 0:
        return 0
    for w in range(data.shape[1]):
        out[w] = data[i, w]
    release(hdr, 1)
    return 1


@numba.njit(**_JIT)
def _sleep(hdr, timeout_ns):
    """Doorbell sleep: mark the consumer asleep, re-check, futex-wait; skipped if a record arrived."""
    atomic_store(hdr, W_DOORBELL, np.uint64(1))
    fence_seq_cst()
    if atomic_load(hdr, W_PROD) == hdr[W_CONS]:
        futex_wait(hdr.ctypes.data + W_DOORBELL * 8, 1, timeout_ns)
    atomic_store(hdr, W_DOORBELL, np.uint64(0))


@numba.njit(nogil=True, cache=True)
def wait_ready(hdr, mode, spins, timeout_ns):
    """Wait until a record is ready by strategy ``mode`` (SPIN, YIELD, BLOCK), at most ``timeout_ns``.
    Returns the number ready (0 on timeout); counts a consumer wait if it had to wait at all."""
    n = ready(hdr)
    if n > 0:
        return n
    hdr[W_CONS_WAITS] += np.uint64(1)
    deadline = monotonic_ns() + timeout_ns
    while True:
        for _ in range(spins):
            n = ready(hdr)
            if n > 0:
                return n
        left = deadline - monotonic_ns()
        if left <= 0:
            return ready(hdr)
        if mode == YIELD:
            sched_yield()
        elif mode == BLOCK:
            _sleep(hdr, min(left, BLOCK_SLICE_NS))


@numba.njit(nogil=True, cache=True)
def pop_wait(hdr, data, out, mode, spins, timeout_ns):
    """``pop``, waiting by strategy ``mode`` up to ``timeout_ns``. 1 when a record was read, 0 on timeout."""
    if wait_ready(hdr, mode, spins, timeout_ns) > 0:
        return pop(hdr, data, out)
    return 0


@numba.njit(nogil=True, cache=True)
def push_batch(hdr, data, recs):
    """Copy as many of ``recs`` (n, words) as fit; publish them at once. Returns how many."""
    cap = data.shape[0]
    n = min(recs.shape[0], free_slots(hdr, cap, recs.shape[0]))
    if n <= 0:
        return 0
    mask = np.uint64(cap - 1)
    prod = hdr[W_PROD]
    for k in range(n):
        i = (prod + np.uint64(k)) & mask
        for w in range(1, data.shape[1]):
            data[i, w] = recs[k, w]
    publish(hdr, data, n)
    return n


@numba.njit(nogil=True, cache=True)
def peek_batch(hdr, data, out):
    """Copy up to ``out.shape[0]`` unread records into ``out`` without releasing them. Returns how many."""
    cap = data.shape[0]
    n = min(out.shape[0], ready(hdr, out.shape[0]))
    if n <= 0:
        return 0
    mask = np.uint64(cap - 1)
    cons = hdr[W_CONS]
    for k in range(n):
        i = (cons + np.uint64(k)) & mask
        for w in range(data.shape[1]):
            out[k, w] = data[i, w]
    return n


@numba.njit(nogil=True, cache=True)
def pop_batch(hdr, data, out):
    """Copy up to ``out.shape[0]`` records into ``out`` and release them. Returns how many."""
    n = peek_batch(hdr, data, out)
    if n > 0:
        release(hdr, n)
    return n


@numba.njit(nogil=True, cache=True)
def release_n(hdr, n):
    """Release ``n`` records (at most as many as are ready); returns how many were released."""
    n = min(n, ready(hdr, n))
    if n > 0:
        release(hdr, n)
    return n


@numba.njit(nogil=True, cache=True)
def read_range(hdr, data, start, out):
    """Copy the records with seq in [start, start + len(out)) into ``out`` and return how many leading ones are
    valid: a record is kept only if the producer provably has not begun overwriting its slot by the end of the
    copy (seq > producer - capacity, checked after the copy, and its stamped seq matches)."""
    cap = data.shape[0]
    mask = np.uint64(cap - 1)
    n = out.shape[0]
    for k in range(n):
        i = (np.uint64(start) + np.uint64(k)) & mask
        for w in range(data.shape[1]):
            out[k, w] = data[i, w]
    fence_acquire()
    prod = atomic_load(hdr, W_PROD)
    fence_acquire()
    first_safe = 0
    if prod > np.uint64(cap):
        first_safe = np.int64(prod - np.uint64(cap)) + 1
    valid = 0
    for k in range(n):
        s = start + k
        if s < first_safe or out[k, 0] != np.uint64(s):
            valid = 0  # a gap invalidates everything before it: history must be contiguous
            continue
        valid += 1
    return valid


@numba.njit(nogil=True, cache=True, inline="always")
def _views(seg):
    """(hdr, data) views of a whole segment given as one uint64 array."""
    cap = np.int64(seg[W_CAPACITY])
    words = np.int64(seg[W_RECSIZE]) // 8
    return seg[: HEADER_BYTES // 8], seg[HEADER_BYTES // 8: HEADER_BYTES // 8 + cap * words].reshape((cap, words))


# The Python API calls these through their compiled entry points: one array fewer to unbox and no type dispatch
# saves about two thirds of the cost of a call from Python (measured: bench ring).


@numba.njit(nogil=True, cache=True)
def push_seg(seg, rec):
    """``push`` on a whole segment."""
    hdr, data = _views(seg)
    return push(hdr, data, rec)


@numba.njit(nogil=True, cache=True)
def pop_seg(seg, out):
    """``pop`` on a whole segment."""
    hdr, data = _views(seg)
    return pop(hdr, data, out)


@numba.njit(nogil=True, cache=True)
def pop_wait_seg(seg, out, mode, spins, timeout_ns):
    """``pop_wait`` on a whole segment."""
    hdr, data = _views(seg)
    return pop_wait(hdr, data, out, mode, spins, timeout_ns)


def entry_point(fn, *args):
    """The compiled entry point of numba function ``fn`` for the types of ``args`` (compiled, or loaded from the
    cache, without running anything): calling it skips numba's type dispatch. Also the way to warm a stage."""
    sig = tuple(numba.typeof(a) for a in args)
    if sig not in fn.overloads:
        fn.compile(sig)
    return fn.overloads[sig].entry_point


# Arrays by address. A compiled call from Python unboxes every array argument (about 0.3 us each on a small, loaded
# host): a kernel called once per record takes one int, the address of an ``Addresses``, and rebuilds its views
# from it with ``array_at`` / ``seg_at`` (views without an owner: the ``Addresses`` keeps the memory alive).


@intrinsic
def _voidptr(typingctx, addr):
    """An int64 address as a ``voidptr`` (for ``numba.carray``)."""
    sig = types.voidptr(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.voidptr))

    return sig, codegen


@numba.njit(nogil=True, cache=True, inline="always")
def array_at(addr, shape, dtype):
    """The C-contiguous array of ``shape`` and ``dtype`` at address ``addr``."""
    return numba.carray(_voidptr(addr), shape, dtype)


@numba.njit(nogil=True, cache=True, inline="always")
def seg_at(addr, dtype):
    """(hdr, data, slots) views of the ring segment at address ``addr`` (a ``Ring.seg``) holding records of
    ``dtype``: what ``Ring`` exposes as ``hdr``, ``data`` and ``slots``."""
    hdr = array_at(addr, (HEADER_BYTES // 8,), np.uint64)
    cap = np.int64(hdr[W_CAPACITY])
    body = addr + HEADER_BYTES
    data = array_at(body, (cap, np.int64(hdr[W_RECSIZE]) // 8), np.uint64)
    return hdr, data, array_at(body, (cap,), dtype)


@numba.njit(nogil=True, cache=True)
def wait_any(addrs, waiters, timeout_ns):
    """Doorbell sleep on several rings at once (a consumer of several inputs): mark the consumer asleep on each,
    re-check them all, and only if every one is empty sleep in ``futex_waitv`` on all the doorbell words, so a
    publish on any of them wakes it at once. ``addrs``: the rings' header addresses; ``waiters``: 3 words per
    ring of scratch. Returns the number of rings found non-empty before sleeping."""
    n = addrs.shape[0]
    for k in range(n):
        atomic_store(array_at(addrs[k], (HEADER_BYTES // 8,), np.uint64), W_DOORBELL, np.uint64(1))
    fence_seq_cst()  # Dekker with the producer's publish-then-load, as in _sleep
    ready = 0
    for k in range(n):
        hdr = array_at(addrs[k], (HEADER_BYTES // 8,), np.uint64)
        if atomic_load(hdr, W_PROD) != hdr[W_CONS]:
            ready += 1
    if ready == 0:
        for k in range(n):
            waiters[3 * k] = 1
            waiters[3 * k + 1] = addrs[k] + W_DOORBELL * 8
            waiters[3 * k + 2] = FUTEX2_SIZE_U32
        futex_waitv(waiters.ctypes.data, n, monotonic_ns() + timeout_ns)
    for k in range(n):
        atomic_store(array_at(addrs[k], (HEADER_BYTES // 8,), np.uint64), W_DOORBELL, np.uint64(0))
    return ready


class RingSet:
    """Several input rings waited on together (``block``: one ``futex_waitv`` over their doorbells)."""

    def __init__(self, rings: list[Ring]) -> None:
        self.rings = rings
        self.addrs = np.array([r.hdr.ctypes.data for r in rings], dtype=np.int64)
        self.waiters = np.zeros(3 * len(rings), dtype=np.int64)
        self._wait = entry_point(wait_any, self.addrs, self.waiters, 0) if len(rings) > 1 else None

    def wait(self, wait: str, timeout_s: float) -> None:
        """Wait by strategy ``wait`` until one of the rings has a record (or ``timeout_s``); no rings: return."""
        if len(self.rings) <= 1:
            if self.rings:
                self.rings[0].wait_ready(wait, timeout_s)
            return
        if any(r.fill for r in self.rings):
            return
        if wait == "block":
            assert self._wait is not None
            for r in self.rings:
                r.hdr[W_CONS_WAITS] += 1
            self._wait(self.addrs, self.waiters, int(timeout_s * 1e9))
        elif wait == "yield":
            os.sched_yield()


class Addresses:
    """Integers and C-contiguous arrays as one int64 array ``words`` (an array as the address of its data), itself
    at address ``addr``: the argument of a kernel that rebuilds its views (``array_at``, ``seg_at``). Holds the
    arrays, so every address stays valid while it lives (a ring's too: a segment is not unmapped while a view of
    it is alive, see ``Ring.close``)."""

    def __init__(self, *items: int | np.ndarray) -> None:
        for x in items:
            if isinstance(x, np.ndarray) and not x.flags.c_contiguous:
                raise ValueError("Addresses: arrays must be C-contiguous")
        self._arrays = tuple(x for x in items if isinstance(x, np.ndarray))
        self.words = np.array([x.ctypes.data if isinstance(x, np.ndarray) else int(x) for x in items], np.int64)
        self.addr = int(self.words.ctypes.data)


# ----------------------------------------------------------------------------------------------------------------
# Python API
# ----------------------------------------------------------------------------------------------------------------


def segment_path(name: str) -> Path:
    """Where the segment named ``name`` lives."""
    return SHM_DIR / name


def _check_capacity(capacity: int) -> None:
    if capacity < 2 or capacity & (capacity - 1):
        raise RingError(f"ring capacity must be a power of two >= 2, got {capacity}")


class Ring:
    """One end of a ring (either end: the role is how you use it). Create with ``Ring.create`` or attach."""

    def __init__(self, name: str, dtype: np.dtype, mm: mmap.mmap) -> None:
        self.name = name
        self.dtype = np.dtype(dtype)
        self._mm = mm
        self.seg = np.frombuffer(mm, dtype=np.uint64)
        self.hdr = self.seg[: HEADER_BYTES // 8]
        self.capacity = int(self.hdr[W_CAPACITY])
        words = self.dtype.itemsize // 8
        self.data = self.seg[HEADER_BYTES // 8: HEADER_BYTES // 8 + self.capacity * words].reshape(self.capacity, words)
        self.slots = self.data.view(self.dtype).reshape(self.capacity)
        self._one = np.zeros(1, dtype=self.dtype)
        self._one_words = self._one.view(np.uint64)
        self._push = entry_point(push_seg, self.seg, self._one_words)
        self._pop = entry_point(pop_seg, self.seg, self._one_words)
        self._pop_wait = entry_point(pop_wait_seg, self.seg, self._one_words, 0, 0, 0)
        self._wait_ready = entry_point(wait_ready, self.hdr, 0, 0, 0)

    # -- life cycle ----------------------------------------------------------------------------------------------

    @classmethod
    def create(cls, name: str, dtype: np.dtype, capacity: int, *, replace: bool = False) -> Ring:
        """Create the segment (owner-only) and initialize its header. ``replace`` removes a stale one first."""
        dtype = np.dtype(dtype)
        _check_capacity(capacity)
        if dtype.itemsize % 8:
            raise RingError(f"record size {dtype.itemsize} of {name} is not a multiple of 8 bytes")
        path = segment_path(name)
        if replace:
            path.unlink(missing_ok=True)
        size = HEADER_BYTES + capacity * dtype.itemsize
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise RingError(f"ring segment {path} already exists (another pipeline, or a stale one)") from None
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED | mmap.MAP_POPULATE)
        finally:
            os.close(fd)
        hdr = np.frombuffer(mm, dtype=np.uint64, count=HEADER_BYTES // 8)
        hdr[W_HASH] = dtype_hash(dtype)
        hdr[W_CAPACITY] = capacity
        hdr[W_RECSIZE] = dtype.itemsize
        hdr[W_EPOCH] = int.from_bytes(os.urandom(8), "little") >> 1
        hdr[W_VERSION] = VERSION
        hdr[W_MAGIC] = MAGIC  # last: a concurrent attach sees a complete header or a bad magic
        del hdr
        return cls(name, dtype, mm)

    @classmethod
    def attach(cls, name: str, dtype: np.dtype) -> Ring:
        """Attach to an existing segment, checking magic, version, dtype hash and size."""
        dtype = np.dtype(dtype)
        path = segment_path(name)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise RingError(f"ring {name!r}: no segment {path} (is the pipeline up?)") from None
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_BYTES:
                raise RingError(f"ring {name!r}: segment {path} is {size} bytes, shorter than a ring header")
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED | mmap.MAP_POPULATE)
        finally:
            os.close(fd)
        hdr = np.frombuffer(mm, dtype=np.uint64, count=HEADER_BYTES // 8)
        magic, version, h, cap, recsize = (int(hdr[i]) for i in (W_MAGIC, W_VERSION, W_HASH, W_CAPACITY, W_RECSIZE))
        del hdr
        problem = None
        if magic != MAGIC:
            problem = f"bad magic {magic:#x} (not a lowlat ring)"
        elif version != VERSION:
            problem = f"layout version {version}, this build reads version {VERSION}"
        elif h != dtype_hash(dtype) or recsize != dtype.itemsize:
            problem = f"record type mismatch (segment: {recsize}-byte records, hash {h:#x}; " \
                      f"expected {dtype.itemsize}-byte records, hash {dtype_hash(dtype):#x})"
        elif cap < 2 or cap & (cap - 1) or size != HEADER_BYTES + cap * recsize:
            problem = f"corrupt header: capacity {cap}, record size {recsize}, segment {size} bytes"
        if problem:
            mm.close()
            raise RingError(f"ring {name!r}: {problem}")
        return cls(name, dtype, mm)

    def close(self) -> None:
        """Drop this process's mapping (the segment stays)."""
        for attr in ("seg", "hdr", "data", "slots", "_one", "_one_words"):
            self.__dict__.pop(attr, None)
        try:
            self._mm.close()
        except BufferError:  # a caller still holds a view; the mapping goes when it does
            pass

    @staticmethod
    def unlink(name: str) -> None:
        """Remove the segment (mappings stay valid until closed)."""
        segment_path(name).unlink(missing_ok=True)

    def warm(self) -> None:
        """Compile (or load from numba's cache) the ring functions a Python stage calls. Compiles only: nothing
        runs, so it is safe on either end of a live ring."""
        empty = np.zeros((0, self.data.shape[1]), dtype=np.uint64)
        entry_point(peek_batch, self.hdr, self.data, empty)
        entry_point(release_n, self.hdr, 0)
        entry_point(read_range, self.hdr, self.data, 0, empty)

    # -- positions and counters ----------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """Random id of this ring's creation: positions are comparable only within one epoch."""
        return int(self.hdr[W_EPOCH])

    @property
    def producer_pos(self) -> int:
        """Records published so far."""
        return int(self.hdr[W_PROD])

    @property
    def consumer_pos(self) -> int:
        """Records released by the consumer so far."""
        return int(self.hdr[W_CONS])

    @property
    def fill(self) -> int:
        """Records published and not yet released."""
        return self.producer_pos - self.consumer_pos

    @property
    def producer_waits(self) -> int:
        """Times the producer found the ring full and had to wait."""
        return int(self.hdr[W_PROD_WAITS])

    @property
    def consumer_waits(self) -> int:
        """Polling rounds (or stage idle waits) in which the consumer found the ring empty."""
        return int(self.hdr[W_CONS_WAITS])

    @property
    def doorbell_rings(self) -> int:
        """Times the producer woke a sleeping consumer."""
        return int(self.hdr[W_RINGS])

    # -- producer ------------------------------------------------------------------------------------------------

    def try_push(self, rec: np.ndarray) -> bool:
        """Publish one record (a 1-element array or a record of this ring's dtype) if there is room."""
        self._one[0] = rec
        return self._push(self.seg, self._one_words) == PUSH_OK

    def push_words(self, words: np.ndarray, wait: str = "yield", stop=None) -> bool:
        """Publish one record given as uint64 words, waiting while the ring is full (lossless).

        Returns False only if ``stop()`` became true while waiting."""
        if self._push(self.seg, words) == PUSH_OK:
            return True
        self.hdr[W_PROD_WAITS] += 1
        backoff = _Backoff(wait)
        while self._push(self.seg, words) != PUSH_OK:
            if stop is not None and stop():
                return False
            backoff.pause()
        return True

    def push(self, rec: np.ndarray, wait: str = "yield", stop=None) -> bool:
        """Publish one record of this ring's dtype, waiting while the ring is full."""
        self._one[0] = rec
        return self.push_words(self._one_words, wait, stop)

    def output_full(self, wait: str) -> None:
        """For numba producer loops that found the ring full: count the wait and back off by strategy."""
        self.hdr[W_PROD_WAITS] += 1
        if wait == "yield":
            os.sched_yield()
        elif wait == "block":
            time.sleep(0.0001)

    # -- consumer ------------------------------------------------------------------------------------------------

    def try_pop(self) -> np.void | None:
        """The next record (a copy), or None when empty."""
        if self._pop(self.seg, self._one_words):
            return self._one[0].copy()
        return None

    def pop_words(self, out: np.ndarray, wait: str = "yield", timeout_s: float | None = None) -> bool:
        """Wait for the next record by strategy ``wait`` and copy its words into ``out``; False on timeout.
        The waiting happens inside one compiled call, which returns to Python at least every 50 ms."""
        if self._pop(self.seg, out):  # records waiting: the cheapest call (two arguments)
            return True
        mode = WAIT_CODES[wait]
        spins = SPINS[mode]
        if self._pop_wait(self.seg, out, mode, spins, BLOCK_SLICE_NS):
            return True
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while deadline is None or time.monotonic() < deadline:
            if self._pop_wait(self.seg, out, mode, spins, BLOCK_SLICE_NS):
                return True
        return False

    def pop(self, wait: str = "yield", timeout_s: float | None = None) -> np.void | None:
        """Wait for the next record and return a copy; None on timeout."""
        if self.pop_words(self._one_words, wait, timeout_s):
            return self._one[0].copy()
        return None

    def wait_ready(self, wait: str, timeout_s: float) -> int:
        """Wait by strategy ``wait`` until a record is ready (for consumers running their own numba loops);
        returns how many are ready, 0 on timeout."""
        mode = WAIT_CODES[wait]
        return self._wait_ready(self.hdr, mode, SPINS[mode], int(timeout_s * 1e9))

    def peek_batch(self, out: np.ndarray) -> int:
        """Copy up to ``len(out)`` unread records into ``out`` (this ring's dtype) without releasing them."""
        return peek_batch(self.hdr, self.data, out.view(np.uint64).reshape(len(out), -1))

    def release(self, n: int) -> None:
        """Release ``n`` records read with ``peek_batch``."""
        release_n(self.hdr, n)

    def skip(self, n: int) -> None:
        """Release the next ``n`` records unread (they must be published already)."""
        if n > self.fill:
            raise RingError(f"ring {self.name!r}: cannot skip {n} records, only {self.fill} are published")
        release_n(self.hdr, n)

    # -- history -------------------------------------------------------------------------------------------------

    def read(self, start: int, count: int) -> np.ndarray:
        """Records with seq in [start, start + count) still intact in the ring (a contiguous tail of that range:
        older ones the producer has overwritten are dropped)."""
        start = max(0, start)
        count = max(0, min(count, self.producer_pos - start, self.capacity))
        out = np.empty(count, dtype=self.dtype)
        if count == 0:
            return out
        valid = read_range(self.hdr, self.data, start, out.view(np.uint64).reshape(count, -1))
        return out[count - valid:]

    def history(self, k: int) -> np.ndarray:
        """The last (up to) ``k`` records behind the consumer cursor, oldest first, for state rebuild. At most
        capacity - 1: the slot the producer writes next may be in the middle of being overwritten."""
        cons = self.consumer_pos
        return self.read(cons - k, min(k, cons))

    def last_published(self, k: int) -> np.ndarray:
        """The last (up to) ``k`` published records, oldest first (a producer reading its own output back)."""
        prod = self.producer_pos
        return self.read(prod - k, min(k, prod))


class RingReader:
    """Reads, without consuming, the records published into ``ring`` since the last ``read`` (a monitor's or a
    benchmark's view of a ring it does not consume; the first call starts at ``start``). A call returns at most
    capacity - 1 records: the slot the producer writes next may be mid-overwrite. ``missed`` counts the records
    the producer overwrote before they could be read."""

    def __init__(self, ring: Ring, start: int = 0) -> None:
        self.ring = ring
        self.pos = start
        self.missed = 0

    def read(self) -> np.ndarray:
        """The records published since the last call, oldest first."""
        prod = self.ring.producer_pos
        start = max(self.pos, prod - self.ring.capacity + 1)
        recs = self.ring.read(start, prod - start)
        self.missed += max(0, prod - self.pos) - len(recs)
        self.pos = max(self.pos, prod)
        return recs


class _Backoff:
    """Producer-side wait on a full ring: spin, then yield, then (block) short sleeps."""

    def __init__(self, wait: str) -> None:
        self.wait = wait
        self.n = 0

    def pause(self) -> None:
        self.n += 1
        if self.wait == "spin" or self.n < 16:
            return
        if self.wait == "yield" or self.n < 64:
            os.sched_yield()
        else:
            time.sleep(0.0002)

