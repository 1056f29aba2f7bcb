"""A signal source for executor tests: consumes a feed's BBO ring and, every ``every`` ticks once both legs have
a quote, publishes the next SIGNAL of ``pattern`` (enter long, exit, enter short, exit, ... by default) with the
legs' live bid/ask, until ``count`` signals are out. A restarted source resumes after its last signal (the dedup
marks: ``src_seq`` is the tick's ``seq``)."""

from __future__ import annotations

import time

import msgspec
import numpy as np

from pipeline.records import SIG_ENTER_LONG, SIG_ENTER_SHORT, SIG_EXIT, SIGNAL
from pipeline.stage import Stage, StageContext


class SignalSourceParams(msgspec.Struct, forbid_unknown_fields=True):
    every: int = 40
    """Ticks between two signals."""
    count: int = 8
    """Signals to publish in all."""
    qty_a: float = 0.002
    qty_b: float = 0.04
    a: int = 0
    b: int = 1
    pattern: list[int] = msgspec.field(default_factory=lambda: [SIG_ENTER_LONG, SIG_EXIT, SIG_ENTER_SHORT, SIG_EXIT])


class SignalSource(Stage):
    Params = SignalSourceParams
    input_types = ("bbo",)
    output_types = ("signal",)

    def __init__(self, ctx: StageContext, params: SignalSourceParams) -> None:
        super().__init__(ctx, params)
        self.inp, self.out = ctx.inputs[0], ctx.outputs[0]
        self.buf = np.zeros(64, dtype=self.inp.dtype)
        self.rec = np.zeros(1, dtype=SIGNAL)
        self.bid = np.zeros(len(ctx.config.instruments))
        self.ask = np.zeros(len(ctx.config.instruments))
        self.ticks = 0
        self.sent = 0

    def rebuild(self) -> list[int]:
        last = self.out.last_published(1)
        self.sent = int(self.out.producer_pos)
        if len(last):
            return [int(last["src_seq"][0]) + 1]
        return [self.inp.consumer_pos]

    def step(self) -> int:
        n = self.inp.peek_batch(self.buf)
        p = self.params
        for t in self.buf[:n]:
            i = int(t["instrument"])
            self.bid[i], self.ask[i] = t["bid_px"], t["ask_px"]
            self.ticks += 1
            if (self.sent < p.count and self.ticks >= p.every and self.bid[p.a] > 0 and self.bid[p.b] > 0):
                self.ticks = 0
                action = p.pattern[self.sent % len(p.pattern)]
                r = self.rec[0]
                r["src_seq"], r["t_origin_ns"], r["ts_event_ms"] = t["seq"], t["t_origin_ns"], t["ts_event_ms"]
                r["instrument"], r["instrument_b"], r["action"] = p.a, p.b, action
                long = action == SIG_ENTER_LONG
                r["side_a"], r["side_b"] = (1, -1) if long else (-1, 1)
                r["bid_a"], r["ask_a"], r["bid_b"], r["ask_b"] = self.bid[p.a], self.ask[p.a], self.bid[p.b], \
                    self.ask[p.b]
                r["qty_a"], r["qty_b"] = (p.qty_a, p.qty_b) if action != SIG_EXIT else (0.0, 0.0)
                r["t_pub_ns"] = time.perf_counter_ns()
                self.out.push(self.rec, self.ctx.wait)
                self.sent += 1
                self.ctx.row["records_out"] += 1
        if n:
            self.inp.release(n)
            self.ctx.row["records_in"] += n
        return n

