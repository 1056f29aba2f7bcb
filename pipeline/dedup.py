"""Publish dedup by ``src_seq``: after a restart, outputs already published are not published again.

A stage publishes the outputs derived from an input record before it releases that record, so a stage killed
at any instant has published, for its last input records, all, some or none of their outputs. On restart the
marks say, per input ring, the last ``src_seq`` already published and how many outputs carried it; the stage
re-processes its inputs and ``admit`` drops exactly those outputs. Outputs derived from one input ring appear in
``src_seq`` order, which is what makes the marks sufficient.
"""

from __future__ import annotations

import numba
import numpy as np

from pipeline.ring import Ring

LAST, SKIP = 0, 1


def marks_from(out: Ring, n_inputs: int) -> np.ndarray:
    """Dedup marks from the tail of an output ring: int64 (max(n_inputs, 1), 2) of (last src_seq, outputs
    already published with it); (-1, 0) where nothing was published for that input."""
    marks = np.zeros((max(n_inputs, 1), 2), dtype=np.int64)
    marks[:, LAST] = -1
    seen = np.zeros(len(marks), dtype=bool)
    done = np.zeros(len(marks), dtype=bool)
    for rec in out.last_published(out.capacity)[::-1]:
        r, s = int(rec["src_ring"]), int(rec["src_seq"])
        if r >= len(marks) or done[r]:
            continue
        if not seen[r]:
            seen[r] = True
            marks[r, LAST] = s
        if s == marks[r, LAST]:
            marks[r, SKIP] += 1
        else:
            done[r] = True
            if done.all():
                break
    return marks


@numba.njit(nogil=True, cache=True)
def admit(marks, src_ring, src_seq):
    """True if an output derived from input (src_ring, src_seq) is new and must be published."""
    last = marks[src_ring, 0]
    if src_seq != last:
        return src_seq > last
    if marks[src_ring, 1] > 0:
        marks[src_ring, 1] -= 1
        return False
    return True


def admit_py(marks: np.ndarray, src_ring: int, src_seq: int) -> bool:
    """Plain-Python twin of ``admit`` (the reference in tests, and for Python stages)."""
    last = marks[src_ring, LAST]
    if src_seq != last:
        return src_seq > last
    if marks[src_ring, SKIP] > 0:
        marks[src_ring, SKIP] -= 1
        return False
    return True
