"""Stateful pass-through: for every BBO tick, a COUNT record with the running count of ticks per instrument.

It exists to prove the runtime's restart contract on a stage with state that a naive restart would corrupt: its
state is the per-instrument counts, checkpointed in its own output records. On restart it reads them back from
the output ring's history (the last record of each instrument carries its count), resumes right after the last
input it published for, and releases the inputs in between unprocessed. The output ring must hold at least one
record of every instrument (capacity >> number of instruments), else that instrument's count restarts at 0.
"""

from __future__ import annotations

import numba
import numpy as np

from pipeline.dedup import LAST, admit
from pipeline.ring import claim, entry_point, peek, publish, release
from pipeline.stage import Stage, StageContext
from pipeline.syscalls import monotonic_ns

BATCH = 1024


@numba.njit(nogil=True, cache=True)
def count_step(in_hdr, in_slots, out_hdr, out_data, out_slots, counts, marks, max_n):
    """Consume up to max_n ticks: pop, count, publish, release, all in one call.
    Returns (consumed, published, output_full)."""
    cap_in = in_slots.shape[0]
    cap_out = out_slots.shape[0]
    n = 0
    out = 0
    while n < max_n:
        i = peek(in_hdr, cap_in)
        if i < 0:
            break
        r = in_slots[i]
        if admit(marks, 0, r.seq):
            j = claim(out_hdr, cap_out)
            if j < 0:
                return n, out, 1
            counts[r.instrument] += 1
            o = out_slots[j]
            o.src_seq = r.seq
            o.src_ring = 0
            o.t_origin_ns = r.t_origin_ns
            o.ts_event_ms = r.ts_event_ms
            o.instrument = r.instrument
            o.flags = 0
            o.count = counts[r.instrument]
            o.mid = 0.5 * (r.bid_px + r.ask_px)
            o.t_pub_ns = monotonic_ns()
            publish(out_hdr, out_data, 1)
            out += 1
        release(in_hdr, 1)
        n += 1
    return n, out, 0


def count_step_py(inputs: np.ndarray, counts: np.ndarray) -> list[tuple[int, int, int]]:
    """Plain-Python twin of ``count_step``'s logic: (src_seq, instrument, count) for each input tick."""
    out = []
    for r in inputs:
        counts[r["instrument"]] += 1
        out.append((int(r["seq"]), int(r["instrument"]), int(counts[r["instrument"]])))
    return out


class RunningCount(Stage):
    """BBO in, running count per instrument out."""

    input_types = ("bbo",)
    output_types = ("count",)

    def __init__(self, ctx: StageContext, params: object) -> None:
        super().__init__(ctx, params)
        self.inp, self.out = ctx.inputs[0], ctx.outputs[0]
        self.counts = np.zeros(len(ctx.config.instruments), dtype=np.uint64)

    def warm(self) -> None:
        """Compile the step."""
        entry_point(count_step, self.inp.hdr, self.inp.slots, self.out.hdr, self.out.data, self.out.slots,
                    self.counts, self.marks, 0)

    def rebuild(self) -> list[int]:
        """Counts from the last output of each instrument; resume after the last input published for."""
        seen = set()
        for rec in self.out.last_published(self.out.capacity)[::-1]:
            if rec["instrument"] not in seen:
                seen.add(rec["instrument"])
                self.counts[rec["instrument"]] = rec["count"]
                if len(seen) == len(self.counts):
                    break
        last = int(self.marks[0, LAST])
        return [last + 1 if last >= 0 else self.inp.consumer_pos]

    def step(self) -> int:
        """Process what is in the input ring (one compiled call per batch)."""
        n, out, full = count_step(self.inp.hdr, self.inp.slots, self.out.hdr, self.out.data,
                                        self.out.slots, self.counts, self.marks, BATCH)
        row = self.ctx.row
        row["records_in"] += n
        row["records_out"] += out
        if full:
            row["waits"] += 1
            self.out.output_full(self.ctx.wait)
        return n
