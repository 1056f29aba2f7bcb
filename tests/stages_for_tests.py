"""Stages used only by tests (importable by stage processes: the tests put this directory on PYTHONPATH)."""

from __future__ import annotations

import os

import numpy as np

from pipeline.dedup import admit_py
from pipeline.stage import Stage, StageContext

HISTORY = 50


class Twice(Stage):
    """BBO in, two BBO records out per input (flags 0 and 1), stateless; rebuilds by re-reading the last
    HISTORY inputs from ring history, so its restart goes through ``replay`` and dedup."""

    input_types = ("bbo",)
    output_types = ("bbo",)

    def __init__(self, ctx: StageContext, params: object) -> None:
        super().__init__(ctx, params)
        self.inp, self.out = ctx.inputs[0], ctx.outputs[0]
        self.buf = np.zeros(64, dtype=self.inp.dtype)

    def rebuild(self) -> list[int]:
        return [max(0, self.inp.consumer_pos - HISTORY)]

    def replay(self, src_ring: int, records: np.ndarray) -> None:
        for r in records:
            self._emit(r)

    def _emit(self, r: np.void) -> None:
        for flag in (0, 1):
            if admit_py(self.marks, 0, int(r["seq"])):
                o = r.copy()
                o["src_seq"], o["src_ring"], o["flags"] = r["seq"], 0, flag
                self.out.push(o, self.ctx.wait)
                self.ctx.row["records_out"] += 1
            else:
                self.ctx.row["deduped"] += 1

    def step(self) -> int:
        n = self.inp.peek_batch(self.buf)
        for r in self.buf[:n]:
            self._emit(r)
        self.inp.release(n)
        self.ctx.row["records_in"] += n
        return n


class Crash(Stage):
    """A source that dies a moment after reporting ready (for the supervisor's restart cap)."""

    output_types = ("bbo",)

    def step(self) -> int:
        os._exit(7)
