"""Per-stage status blocks in shared memory (``/dev/shm/<pipeline>.status``), one row per stage.

Each stage writes only its own row; the supervisor and ``pipeline status`` read them. Counters are plain
64-bit stores by a single writer, read without locks (a reader may see a value one update old).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from pipeline.ring import SHM_DIR

MAGIC = 0x4C4F574C41545354  # "LOWLATST"
VERSION = 1
HEADER_BYTES = 64
N_COUNTERS = 8
ERROR_BYTES = 240

STATES = ("idle", "starting", "rebuilding", "running", "stopping", "stopped", "done")
"""Stage states as written by the stage itself (``done``: a finite source has published everything); the
supervisor adds ``restarting`` and ``failed``."""
IDLE, STARTING, REBUILDING, RUNNING, STOPPING, STOPPED, DONE = range(len(STATES))

ROW = np.dtype([
    ("pid", "<i8"),  # process id of the stage's current process
    ("state", "<i8"),  # index into STATES
    ("heartbeat_ns", "<i8"),  # monotonic ns of the last beat
    ("started_ns", "<i8"),  # monotonic ns at which the current process started
    ("records_in", "<u8"),  # input records consumed (fully processed and released)
    ("records_out", "<u8"),  # records published
    ("waits", "<u8"),  # times the stage found its input empty (or output full) and waited
    ("errors", "<u8"),  # bad inputs and other errors counted (the stage kept running)
    ("deduped", "<u8"),  # outputs not republished after a restart because their src_seq was already out
    ("last_error_ns", "<i8"),  # monotonic ns of the last error
    ("last_error", f"S{ERROR_BYTES}"),  # text of the last error, one line
    ("counters", "<i8", (N_COUNTERS,)),  # stage-specific counters (signed: a latency can be negative)
    ("counter_names", "S16", (N_COUNTERS,)),  # their names ("" = unused)
])
"""One stage's status row."""


class StatusBlock:
    """The status segment of one pipeline."""

    def __init__(self, path: Path, mm: mmap.mmap) -> None:
        self.path = path
        self._mm = mm
        n = int(np.frombuffer(mm, np.uint64, 4)[2])
        self.rows = np.frombuffer(mm, ROW, n, HEADER_BYTES)

    @classmethod
    def create(cls, pipeline: str, n_stages: int) -> StatusBlock:
        """Create the segment (owner-only), replacing any stale one."""
        path = SHM_DIR / f"{pipeline}.status"
        path.unlink(missing_ok=True)
        size = HEADER_BYTES + n_stages * ROW.itemsize
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        hdr = np.frombuffer(mm, np.uint64, 4)
        hdr[1], hdr[2], hdr[3] = VERSION, n_stages, ROW.itemsize
        hdr[0] = MAGIC
        del hdr
        return cls(path, mm)

    @classmethod
    def attach(cls, pipeline: str) -> StatusBlock:
        """Attach to a pipeline's status segment."""
        path = SHM_DIR / f"{pipeline}.status"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise FileNotFoundError(f"no status segment {path} (is pipeline {pipeline!r} up?)") from None
        try:
            mm = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        magic, version, _, rowsize = (int(x) for x in np.frombuffer(mm, np.uint64, 4))
        if magic != MAGIC or version != VERSION or rowsize != ROW.itemsize:
            mm.close()
            raise ValueError(f"{path}: not a lowlat status block of version {VERSION}")
        return cls(path, mm)


def set_error(row: np.void, text: str, now_ns: int) -> None:
    """Count an error on a status row and keep its text (first line, truncated)."""
    row["errors"] += 1
    row["last_error_ns"] = now_ns
    row["last_error"] = text.splitlines()[0].encode("utf-8", "replace")[:ERROR_BYTES] if text else b""
