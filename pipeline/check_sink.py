"""Checking sink: verifies every record's sequence and keeps the stream it received.

For each record: ``seq`` must follow the previous one (nothing lost or duplicated in its input ring) and, with
``contiguous_src``, ``src_seq`` must too (nothing lost or duplicated upstream, for one-in-one-out chains);
without it ``src_seq`` must not go backwards (feeds: several records or none per frame). Each
violation is counted and reported in the status row. With ``record`` the records are appended to
``<run_dir>/<stage>.bin`` before they are released, so the file is the exact stream received, also across
restarts of the sink itself (on start it drops a torn last record and resumes after the last one written).
``<stage>.epoch`` names the input ring's epoch the file belongs to; a file from an earlier pipeline run (another
epoch) is moved aside to ``<stage>.<epoch>.bin`` and a new one begun.
"""

from __future__ import annotations

import os

import msgspec
import numpy as np

from pipeline.stage import Stage, StageContext

BATCH = 4096


class CheckParams(msgspec.Struct, forbid_unknown_fields=True):
    """Parameters of the checking sink."""

    record: bool = True
    """Append received records to ``<run_dir>/<stage>.bin``."""
    contiguous_src: bool = True
    """Require consecutive ``src_seq`` (one output per input upstream); false: only non-decreasing."""


class CheckSink(Stage):
    """Sink stage that checks sequences and counts records per instrument."""

    Params = CheckParams
    input_types = (None,)
    output_types = ()

    def __init__(self, ctx: StageContext, params: CheckParams) -> None:
        super().__init__(ctx, params)
        self.inp = ctx.inputs[0]
        self.buf = np.zeros(BATCH, dtype=self.inp.dtype)
        self.per_instrument = np.zeros(len(ctx.config.instruments), dtype=np.uint64)
        self.next_seq = -1
        self.last_src = -1
        self.gaps = self.dups = 0
        self.fd = -1
        self.path = ctx.run_dir / f"{ctx.name}.bin"
        self.epoch_path = ctx.run_dir / f"{ctx.name}.epoch"

    def rebuild(self) -> list[int]:
        """Resume after the last record in the file (dropping a torn tail), or at the consumer cursor."""
        if not self.params.record:
            return [self.inp.consumer_pos]
        old = self.epoch_path.read_text().strip() if self.epoch_path.exists() else ""
        if old != str(self.inp.epoch):
            if self.path.exists():
                self.path.rename(self.path.with_name(f"{self.ctx.name}.{old or 'old'}.bin"))
            self.epoch_path.write_text(str(self.inp.epoch))
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        size = os.fstat(self.fd).st_size
        whole = size - size % self.inp.dtype.itemsize
        if whole != size:
            os.ftruncate(self.fd, whole)
        kept = np.fromfile(self.path, dtype=self.inp.dtype)
        if len(kept) == 0:
            return [self.inp.consumer_pos]
        self.per_instrument += np.bincount(kept["instrument"], minlength=len(self.per_instrument)).astype(np.uint64)
        self.next_seq = int(kept["seq"][-1]) + 1
        self.last_src = int(kept["src_seq"][-1])
        return [self.next_seq]

    def step(self) -> int:
        """Check and keep the records available now, then release them."""
        n = self.inp.peek_batch(self.buf)
        if n == 0:
            return 0
        recs = self.buf[:n]
        seqs = recs["seq"].astype(np.int64)
        expect_first = self.next_seq if self.next_seq >= 0 else int(seqs[0])
        breaks = np.flatnonzero(np.diff(seqs, prepend=expect_first - 1) != 1)
        for i in breaks:
            self._break("seq", int(seqs[i - 1]) if i else expect_first - 1, int(seqs[i]))
        src = recs["src_seq"].astype(np.int64)
        first = self.last_src if self.last_src >= 0 else int(src[0]) - 1
        step = np.diff(src, prepend=first)
        bad = step != 1 if self.params.contiguous_src else step < 0
        for i in np.flatnonzero(bad):
            self._break("src_seq", int(src[i - 1]) if i else first, int(src[i]))
        self.last_src = int(src[-1])
        if self.fd >= 0:
            os.write(self.fd, recs.tobytes())
        self.per_instrument += np.bincount(recs["instrument"], minlength=len(self.per_instrument)).astype(
            np.uint64)
        self.inp.release(n)
        self.next_seq = int(seqs[-1]) + 1
        row = self.ctx.row
        row["records_in"] += n
        self.ctx.set_counter(0, "gaps", self.gaps)
        self.ctx.set_counter(1, "dups", self.dups)
        for i, c in enumerate(self.per_instrument[:6]):
            self.ctx.set_counter(2 + i, f"n[{self.ctx.config.instruments[i].symbol}]", int(c))
        return n

    def _break(self, what: str, prev: int, got: int) -> None:
        if got > prev:
            self.gaps += 1
            self.ctx.error("gap", f"{what} jumped from {prev} to {got} ({got - prev - 1} missing)")
        else:
            self.dups += 1
            self.ctx.error("duplicate", f"{what} {got} after {prev}")

    def flush(self) -> None:
        """Close the record file."""
        if self.fd >= 0:
            os.close(self.fd)
