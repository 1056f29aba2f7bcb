"""Producer and consumer processes for the ring stress test: ``python tests/ring_workers.py ROLE NAME COUNT CPU MODE``.

Every word of every record is a function of its sequence number, so the consumer detects a torn, stale,
duplicated or missing record. MODE ``numba`` runs the loops inside numba (claim/publish, peek/release);
MODE ``python`` makes one Python call per record (push_words / pop_words)."""

from __future__ import annotations

import os
import sys

import numba
import numpy as np

from pipeline.records import PING
from pipeline.ring import Ring, claim, peek, publish, release

WORDS = PING.itemsize // 8
BAD_EXIT = 3


@numba.njit(cache=True)
def word(s, w):
    """Expected content of word ``w`` (>= 1) of record ``s`` (splitmix64 of both)."""
    z = np.uint64(s) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(w) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True)
def produce(hdr, data, start, n):
    """Publish records start..start+n-1 (zero-copy claim/publish). Returns how many were published."""
    s = start
    cap = data.shape[0]
    while s < start + n:
        i = claim(hdr, cap)
        if i < 0:
            return s - start
        for w in range(1, data.shape[1]):
            data[i, w] = word(s, w)
        publish(hdr, data, 1)
        s += 1
    return n


@numba.njit(cache=True)
def consume(hdr, data, expect, n):
    """Read up to n records, checking each; returns (read, bad) where bad counts mismatching records."""
    cap = data.shape[0]
    got = 0
    bad = 0
    while got < n:
        i = peek(hdr, cap)
        if i < 0:
            break
        s = expect + got
        ok = data[i, 0] == np.uint64(s)
        for w in range(1, data.shape[1]):
            ok = ok and data[i, w] == word(s, w)
        if not ok:
            bad += 1
        release(hdr, 1)
        got += 1
    return got, bad


def main() -> int:
    role, name, count, cpu, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    os.sched_setaffinity(0, {cpu})
    ring = Ring.attach(name, PING)
    rec = np.zeros(WORDS, dtype=np.uint64)
    if role == "produce":
        done = 0
        while done < count:
            if mode == "numba":
                k = produce(ring.hdr, ring.data, done, min(4096, count - done))
                done += k
            else:
                for w in range(1, WORDS):
                    rec[w] = word(done, w)
                ring.push_words(rec, wait="yield")
                done += 1
        return 0
    got = bad = 0
    while got < count:
        if mode == "numba":
            k, b = consume(ring.hdr, ring.data, got, count - got)
            got += k
            bad += b
        else:
            ring.pop_words(rec, wait="spin", timeout_s=30)
            if rec[0] != got or any(rec[w] != word(got, w) for w in range(1, WORDS)):
                bad += 1
            got += 1
    print(f"consumed {got} bad {bad}", flush=True)
    return BAD_EXIT if bad else 0


if __name__ == "__main__":
    sys.exit(main())
