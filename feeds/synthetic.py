"""Synthetic source: a seeded cointegrated BTC/ETH-like pair of best bid/ask ticks at a configured rate.

Latent model per tick k (event time ``start_ms + k * 1000 / rate_hz``): ln B follows a random walk, the spread
S an Ornstein-Uhlenbeck process, and ln A = ln(a0 / b0**beta) + beta ln B + S; each tick quotes one leg, chosen
at random, with a spread of one to three ticks. Every random draw is a pure function of (seed, k), so tick k is
the same in every run of the seed, and a restarted source fast-forwards its state to where it stopped and
continues the same stream (crash equivalence for sources: ``src_seq`` = k).
"""

from __future__ import annotations

import math
import time
from typing import Annotated

import msgspec
import numba
import numpy as np

from pipeline.dedup import LAST
from pipeline.ring import claim, entry_point, publish
from pipeline.stage import Stage, StageContext
from pipeline.syscalls import monotonic_ns


class SyntheticParams(msgspec.Struct, forbid_unknown_fields=True):
    """Parameters of the synthetic source."""

    rate_hz: Annotated[float, msgspec.Meta(gt=0)] = 1000.0
    """Ticks per second of event time (both legs together)."""
    speed: float = 1.0
    """Wall-clock pacing as a multiple of event time (event times are the same at any speed)."""
    seed: int = 1
    """Seed of the random stream."""
    count: int = 0
    """Stop after this many ticks (0: never)."""
    legs: list[int] = msgspec.field(default_factory=lambda: [0, 1])
    """Instrument indices of leg A (BTC-like) and leg B (ETH-like)."""
    start_ms: int = 1_722_000_000_000
    """Event time of tick 0, ms since the epoch."""
    a0: float = 60000.0
    """Leg A's starting price."""
    b0: float = 3000.0
    """Leg B's starting price."""
    beta: float = 1.2
    """Cointegration coefficient of ln A on ln B."""
    vol_bps: float = 0.5
    """Standard deviation of ln B's per-tick change, bps."""
    spread_vol_bps: float = 0.3
    """Standard deviation of the spread's per-tick innovation, bps."""
    half_life_ticks: float = 20000.0
    """Half-life of the spread's mean reversion, ticks."""


@numba.njit(nogil=True, cache=True)
def _u01(seed, k, j):
    """Uniform in (0, 1) from (seed, k, j): splitmix64."""
    z = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(k) * np.uint64(0xD1B54A32D192ED03) \
        + np.uint64(j) * np.uint64(0x8CB92BA72F3D8DD7)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (np.float64(z >> np.uint64(11)) + 0.5) / 9007199254740992.0


@numba.njit(nogil=True, cache=True)
def _normal(seed, k, j):
    return math.sqrt(-2.0 * math.log(_u01(seed, k, j))) * math.cos(2.0 * math.pi * _u01(seed, k, j + 1))


@numba.njit(nogil=True, cache=True)
def advance(state, seed, k, phi, vol, svol):
    """Move the latent state (ln B, S) from tick k to k + 1."""
    state[0] += vol * _normal(seed, k, 0)
    state[1] = phi * state[1] + svol * _normal(seed, k, 2)


@numba.njit(nogil=True, cache=True)
def fast_forward(state, seed, k0, k1, phi, vol, svol):
    """Advance the state over ticks [k0, k1)."""
    for k in range(k0, k1):
        advance(state, seed, k, phi, vol, svol)


@numba.njit(nogil=True, cache=True)
def emit(hdr, data, slots, state, venue_seq, seed, k0, n, m):
    """Generate and publish ticks k0..k0+n-1. ``m`` holds the model's float parameters:
    phi, vol, svol, beta, ln(a0 / b0**beta), rate_hz, tick_a, tick_b, start_ms, leg_a, leg_b.
    Returns the number of ticks published (fewer than n when the ring is full)."""
    phi, vol, svol, beta, c = m[0], m[1], m[2], m[3], m[4]
    for i in range(n):
        j = claim(hdr, data.shape[0])
        if j < 0:
            return i
        k = k0 + i
        advance(state, seed, k, phi, vol, svol)
        a_leg = _u01(seed, k, 4) < 0.5
        if a_leg:
            mid, tick, inst = math.exp(c + beta * state[0] + state[1]), m[6], np.int64(m[9])
        else:
            mid, tick, inst = math.exp(state[0]), m[7], np.int64(m[10])
        width = 1.0 + math.floor(_u01(seed, k, 5) * 3.0)
        bid = math.floor(mid / tick - width / 2.0) * tick
        rec = slots[j]
        now = monotonic_ns()
        rec.src_seq = k
        rec.src_ring = 0
        rec.t_origin_ns = now
        rec.ts_event_ms = np.int64(m[8] + math.floor(k * 1000.0 / m[5]))
        rec.instrument = inst
        rec.flags = 0
        rec.bid_px = bid
        rec.ask_px = bid + width * tick
        rec.bid_qty = 0.001 * (1.0 + math.floor(_u01(seed, k, 6) * 500.0))
        rec.ask_qty = 0.001 * (1.0 + math.floor(_u01(seed, k, 7) * 500.0))
        venue_seq[inst] += 1
        rec.venue_seq = venue_seq[inst]
        rec.t_pub_ns = monotonic_ns()
        publish(hdr, data, 1)
    return n


class SyntheticSource(Stage):
    """Source stage: paced synthetic BBO ticks for a cointegrated pair."""

    Params = SyntheticParams
    input_types = ()
    output_types = ("bbo",)

    def __init__(self, ctx: StageContext, params: SyntheticParams) -> None:
        super().__init__(ctx, params)
        p = params
        ins = ctx.config.instruments
        phi = 0.5 ** (1.0 / p.half_life_ticks)
        self.m = np.array([phi, p.vol_bps * 1e-4, p.spread_vol_bps * 1e-4, p.beta,
                           math.log(p.a0) - p.beta * math.log(p.b0), p.rate_hz, ins[p.legs[0]].tick,
                           ins[p.legs[1]].tick, p.start_ms, p.legs[0], p.legs[1]], dtype=np.float64)
        self.state = np.array([math.log(p.b0), 0.0])
        self.venue_seq = np.zeros(len(ins), dtype=np.uint64)
        self.k = 0
        self.out = ctx.outputs[0]
        self.period_ns = 1e9 / (p.rate_hz * p.speed)

    def warm(self) -> None:
        """Compile the generator."""
        entry_point(fast_forward, self.state, self.params.seed, 0, 0, *self.m[:3])
        entry_point(emit, self.out.hdr, self.out.data, self.out.slots, self.state, self.venue_seq, self.params.seed,
                    0, 0, self.m)

    def rebuild(self) -> list[int]:
        """Resume after the last tick published: fast-forward the latent state, restore venue sequences."""
        self.k = int(self.marks[0, LAST]) + 1
        fast_forward(self.state, self.params.seed, 0, self.k, *self.m[:3])
        tail = self.out.last_published(self.out.capacity)
        np.maximum.at(self.venue_seq, tail["instrument"].astype(np.intp), tail["venue_seq"])
        self.t0 = time.perf_counter_ns()
        self.k0 = self.k
        return []

    def step(self) -> int:
        """Publish the ticks due by now (paced at ``rate_hz`` from the (re)start), or wait for the next one."""
        p = self.params
        due = self.k0 + int((time.perf_counter_ns() - self.t0) / self.period_ns) + 1
        if p.count:
            due = min(due, p.count)
        n = min(due - self.k, 4096)
        if n <= 0:
            self._idle(p.count and self.k >= p.count)
            return 0
        done = emit(self.out.hdr, self.out.data, self.out.slots, self.state, self.venue_seq, p.seed,
                          self.k, n, self.m)
        if done < n:
            self.ctx.row["waits"] += 1
            self.out.output_full(self.ctx.wait)
        self.k += done
        self.ctx.row["records_out"] += done
        return done

    def _idle(self, finished: bool) -> None:
        if finished:
            time.sleep(0.05)
            return
        wait_ns = self.t0 + (self.k - self.k0) * self.period_ns - time.perf_counter_ns()
        if self.ctx.wait == "spin" or wait_ns < 50_000:
            return
        time.sleep(wait_ns / 1e9 - 30e-6 if self.ctx.wait == "block" else 0)
