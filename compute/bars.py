"""One-minute bars of mid prices: BBO ticks in (one or more rings), BAR records out (one ring).

Per valid tick (finite prices, 0 < bid < ask) of an instrument, mid = 0.5 * (bid + ask) and minute =
floor(ts_event_ms / 60000) * 60000 (event time, never the wall clock):

- no bar yet, or a later minute than the last closed / warm-up minute: start a bar -> BAR_PARTIAL;
- the open bar's minute: high = max, low = min, close = mid, sum += mid, count += 1 -> BAR_PARTIAL;
- a later minute than the open bar's: BAR_CLOSED of the old minute, then the new bar's BAR_PARTIAL (both carry
  this tick's header: src_seq, src_ring, t_origin_ns, ts_event_ms, instrument, and its bid/ask);
- an earlier minute than the open bar's, or a minute at or before the last closed / warm-up minute while no bar
  is open: a late tick, counted (``late``), no output. Invalid prices or an instrument index outside the table:
  counted (``bad``), no output.

Hot path: ``bars_step`` pops, aggregates, publishes (through dedup ``admit``) and releases, one compiled call per
batch and input ring; the stage calls it through ``bars_run``, which takes the address of its rings and state
(``bars_context``) instead of eight arrays to unbox. ``bars_py`` is its plain-Python twin (the reference in tests).

Warm-up (``warmup = true``, only when the output ring is empty at start, i.e. a fresh pipeline, and never in a
replay run, whose event times are not the wall clock's): one-minute candles of the ``warmup_minutes`` whole wall
minutes before the current one, from each instrument's venue REST (``compute.candles.fetch_candles``), published
as BAR_WARMUP records in minute order across instruments in one atomic ring publish (a kill leaves all or none).
A venue error is one line in the status row and the log; the stage then runs cold.

Restart (crash equivalence): the stage's state is, per instrument, its last output record that belongs to a fully
processed tick (a BAR_PARTIAL holds the open bar's whole state, sum included; BAR_CLOSED / BAR_WARMUP a closed
minute and no open bar). A tick is released only after all its outputs are published, so every record whose
``src_seq`` is below its input's consumer cursor is complete, and at most one tick (the one at the cursor) may
have published part of its outputs: its records are ignored for the state and the tick is processed again from
the cursor, dedup ``admit`` dropping the outputs already out. **The output ring must still hold the last record of
every instrument** (size it far above the number of instruments times the records one instrument's silence may
span), else that instrument restarts without a bar.
"""

from __future__ import annotations

import math
import sys
import time

import msgspec
import numba
import numpy as np

from pipeline.config import PipelineConfig, StageSpec
from pipeline.dedup import admit, admit_py
from pipeline.records import BAR, BAR_CLOSED, BAR_PARTIAL, BAR_WARMUP, BBO
from pipeline.ring import (
    Addresses,
    Ring,
    array_at,
    claim,
    entry_point,
    free_slots,
    peek,
    publish,
    push_batch,
    release,
    seg_at,
)
from pipeline.stage import Stage, StageContext
from pipeline.syscalls import monotonic_ns

BATCH = 1024
"""Ticks per compiled call."""
MINUTE_MS = 60_000
WARMUP_RING = 0xFFFF
"""``src_ring`` of warm-up records (no input ring)."""

# state layout: fst[i] (float64) and ist[i] (int64) per instrument
F_OPEN, F_HIGH, F_LOW, F_CLOSE, F_SUM = 0, 1, 2, 3, 4
N_F = 5
I_STATE, I_MINUTE, I_COUNT = 0, 1, 2
N_I = 3
S_NONE, S_OPEN, S_CLOSED = 0, 1, 2
"""Instrument state: no bar yet; a bar open at ``I_MINUTE``; ``I_MINUTE`` closed (warm-up) and no bar open."""

CANDLE_VENUES = ("kucoin", "binance", "binance-usdm")
"""Venues ``compute.candles`` can fetch one-minute candles from."""
C_BAD, C_LATE, C_WARMUP = 0, 1, 2
"""Status counter slots."""


def new_state(n_instruments: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty aggregation state (fst, ist) for ``n_instruments``."""
    return np.zeros((n_instruments, N_F), np.float64), np.zeros((n_instruments, N_I), np.int64)


# ----------------------------------------------------------------------------------------------------------------
# compiled kernel
# ----------------------------------------------------------------------------------------------------------------


@numba.njit(nogil=True, cache=True, inline="always")
def _emit(out_hdr, out_data, out_slots, marks, src_ring, r, inst, kind, fst, ist):
    """Publish instrument ``inst``'s bar as a record of ``kind`` carrying tick ``r``'s header, unless dedup drops
    it (1 published, 0 dropped). The caller made sure a slot is free."""
    if not admit(marks, src_ring, np.int64(r.seq)):
        return 0
    o = out_slots[claim(out_hdr, out_slots.shape[0])]
    o.src_seq = r.seq
    o.src_ring = src_ring
    o.t_origin_ns = r.t_origin_ns
    o.ts_event_ms = r.ts_event_ms
    o.instrument = inst
    o.flags = 0
    o.minute_ms = ist[inst, I_MINUTE]
    o.open = fst[inst, F_OPEN]
    o.high = fst[inst, F_HIGH]
    o.low = fst[inst, F_LOW]
    o.close = fst[inst, F_CLOSE]
    o.sum = fst[inst, F_SUM]
    o.mean = fst[inst, F_SUM] / ist[inst, I_COUNT]
    o.bid_px = r.bid_px
    o.ask_px = r.ask_px
    o.count = ist[inst, I_COUNT]
    o.kind = kind
    o.t_pub_ns = monotonic_ns()
    publish(out_hdr, out_data, 1)
    return 1


@numba.njit(nogil=True, cache=True)
def bars_step(in_hdr, in_slots, src_ring, out_hdr, out_data, out_slots, fst, ist, marks, max_n):
    """Consume up to ``max_n`` ticks of input ring ``src_ring``: pop, validate, aggregate, publish, release, in one
    call. Returns (consumed, published, output_full, bad, late, deduped); ``output_full``: stopped because the
    output ring had no room for a tick's (up to two) records — the tick stays unread and the state untouched."""
    cap_in = in_slots.shape[0]
    cap_out = out_slots.shape[0]
    n_inst = ist.shape[0]
    n = 0
    out = 0
    bad = 0
    late = 0
    dd = 0
    while n < max_n:
        i = peek(in_hdr, cap_in)
        if i < 0:
            break
        if free_slots(out_hdr, cap_out, 2) < 2:
            return n, out, 1, bad, late, dd
        r = in_slots[i]
        inst = np.int64(r.instrument)
        bid = r.bid_px
        ask = r.ask_px
        mid = 0.5 * (bid + ask)
        if inst >= n_inst or not (bid > 0.0 and bid < ask and mid < math.inf):
            bad += 1
        else:
            m = (r.ts_event_ms // MINUTE_MS) * MINUTE_MS
            state = ist[inst, I_STATE]
            cur = ist[inst, I_MINUTE]
            if (state == S_OPEN and m < cur) or (state == S_CLOSED and m <= cur):
                late += 1
            elif state == S_OPEN and m == cur:
                if mid > fst[inst, F_HIGH]:
                    fst[inst, F_HIGH] = mid
                if mid < fst[inst, F_LOW]:
                    fst[inst, F_LOW] = mid
                fst[inst, F_CLOSE] = mid
                fst[inst, F_SUM] += mid
                ist[inst, I_COUNT] += 1
                k = _emit(out_hdr, out_data, out_slots, marks, src_ring, r, inst, BAR_PARTIAL, fst, ist)
                out += k
                dd += 1 - k
            else:
                if state == S_OPEN:  # a later minute: close the open bar first
                    k = _emit(out_hdr, out_data, out_slots, marks, src_ring, r, inst, BAR_CLOSED, fst, ist)
                    out += k
                    dd += 1 - k
                fst[inst, F_OPEN] = mid
                fst[inst, F_HIGH] = mid
                fst[inst, F_LOW] = mid
                fst[inst, F_CLOSE] = mid
                fst[inst, F_SUM] = mid
                ist[inst, I_STATE] = S_OPEN
                ist[inst, I_MINUTE] = m
                ist[inst, I_COUNT] = 1
                k = _emit(out_hdr, out_data, out_slots, marks, src_ring, r, inst, BAR_PARTIAL, fst, ist)
                out += k
                dd += 1 - k
        release(in_hdr, 1)
        n += 1
    return n, out, 0, bad, late, dd


# bars_run's context (an ``Addresses``): output ring, state, then the input rings by ``src_ring``
X_OUT, X_FST, X_IST, X_MARKS, X_N_INST, X_N_MARKS, X_IN = range(7)


def bars_context(inputs: list[Ring], out: Ring, fst: np.ndarray, ist: np.ndarray, marks: np.ndarray) -> Addresses:
    """``bars_run``'s context: BBO rings ``inputs`` (``src_ring`` = index), BAR ring ``out``, the state."""
    if any(r.dtype != BBO for r in inputs) or out.dtype != BAR:
        raise ValueError("bars_context: input rings carry BBO records, the output ring BAR records")
    if (fst.dtype, ist.dtype, marks.dtype) != (np.float64, np.int64, np.int64) or fst.shape != (len(ist), N_F) \
            or ist.shape != (len(ist), N_I) or marks.shape != (len(marks), 2) or len(marks) < len(inputs):
        raise ValueError("bars_context: state arrays of the wrong type or shape")
    return Addresses(out.seg, fst, ist, marks, len(ist), len(marks), *(r.seg for r in inputs))


@numba.njit(nogil=False, cache=True)
def bars_run(ctx, src_ring, max_n):
    """``bars_step`` on input ring ``src_ring`` of context ``ctx`` (the ``addr`` of a ``bars_context``): the call
    from Python unboxes no array. It keeps the GIL (a stage process runs no other thread meanwhile; releasing and
    taking it back would cost about 70 ns a call, measured)."""
    c = array_at(ctx, (X_IN + src_ring + 1,), np.int64)
    n_inst = c[X_N_INST]
    in_hdr, _, in_slots = seg_at(c[X_IN + src_ring], BBO)
    out_hdr, out_data, out_slots = seg_at(c[X_OUT], BAR)
    fst = array_at(c[X_FST], (n_inst, N_F), np.float64)
    ist = array_at(c[X_IST], (n_inst, N_I), np.int64)
    marks = array_at(c[X_MARKS], (c[X_N_MARKS], 2), np.int64)
    return bars_step(in_hdr, in_slots, src_ring, out_hdr, out_data, out_slots, fst, ist, marks, max_n)


# ----------------------------------------------------------------------------------------------------------------
# plain-Python twin
# ----------------------------------------------------------------------------------------------------------------


def bars_py(ticks: np.ndarray, src_ring: int, fst: np.ndarray, ist: np.ndarray,
            marks: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """Plain-Python twin of ``bars_step`` over BBO records ``ticks`` (updates ``fst``, ``ist``, ``marks`` the same
    way). Returns (BAR records with ``seq`` and ``t_pub_ns`` 0, bad, late, deduped)."""
    out: list[tuple] = []
    bad = late = dd = 0

    def emit(r: np.void, inst: int, kind: int) -> None:
        nonlocal dd
        if not admit_py(marks, src_ring, int(r["seq"])):
            dd += 1
            return
        f, c = fst[inst], int(ist[inst, I_COUNT])
        rec = np.zeros(1, BAR)[0]
        rec["src_seq"], rec["src_ring"], rec["t_origin_ns"] = r["seq"], src_ring, r["t_origin_ns"]
        rec["ts_event_ms"], rec["instrument"] = r["ts_event_ms"], inst
        rec["minute_ms"] = ist[inst, I_MINUTE]
        rec["open"], rec["high"], rec["low"], rec["close"] = f[F_OPEN], f[F_HIGH], f[F_LOW], f[F_CLOSE]
        rec["sum"], rec["mean"], rec["count"] = f[F_SUM], float(f[F_SUM]) / c, c
        rec["bid_px"], rec["ask_px"], rec["kind"] = r["bid_px"], r["ask_px"], kind
        out.append(rec)

    for r in ticks:
        inst = int(r["instrument"])
        bid, ask = float(r["bid_px"]), float(r["ask_px"])
        mid = 0.5 * (bid + ask)
        if inst >= len(ist) or not (bid > 0.0 and bid < ask and mid < math.inf):
            bad += 1
            continue
        m = (int(r["ts_event_ms"]) // MINUTE_MS) * MINUTE_MS
        state, cur = int(ist[inst, I_STATE]), int(ist[inst, I_MINUTE])
        if (state == S_OPEN and m < cur) or (state == S_CLOSED and m <= cur):
            late += 1
        elif state == S_OPEN and m == cur:
            f = fst[inst]
            f[F_HIGH] = max(f[F_HIGH], mid)
            f[F_LOW] = min(f[F_LOW], mid)
            f[F_CLOSE] = mid
            f[F_SUM] += mid
            ist[inst, I_COUNT] += 1
            emit(r, inst, BAR_PARTIAL)
        else:
            if state == S_OPEN:
                emit(r, inst, BAR_CLOSED)
            fst[inst] = (mid, mid, mid, mid, mid)
            ist[inst] = (S_OPEN, m, 1)
            emit(r, inst, BAR_PARTIAL)
    recs = np.array(out, dtype=BAR) if out else np.zeros(0, BAR)
    return recs, bad, late, dd


def state_from_records(recs: np.ndarray, fst: np.ndarray, ist: np.ndarray) -> None:
    """Set each instrument's state from its last record in ``recs`` (BAR records, oldest first): a BAR_PARTIAL
    is the open bar, a BAR_CLOSED / BAR_WARMUP a closed minute with no bar open."""
    if len(recs) == 0:
        return
    insts = recs["instrument"].astype(np.int64)
    ok = np.flatnonzero(insts < len(ist))[::-1]
    _, first = np.unique(insts[ok], return_index=True)
    for k in ok[first]:
        rec = recs[k]
        i = int(rec["instrument"])
        if rec["kind"] == BAR_PARTIAL:
            fst[i] = (rec["open"], rec["high"], rec["low"], rec["close"], rec["sum"])
            ist[i] = (S_OPEN, rec["minute_ms"], rec["count"])
        else:
            fst[i] = 0.0
            ist[i] = (S_CLOSED, rec["minute_ms"], 0)


def restart_state(hist: np.ndarray, consumer_pos: list[int], fst: np.ndarray, ist: np.ndarray) -> None:
    """The state to resume from after a restart: ``state_from_records`` over the output history ``hist`` without
    the records of ticks not yet released (``src_seq >= consumer_pos[src_ring]``: the tick in progress at the
    kill, which is processed again)."""
    cons = np.asarray(consumer_pos, dtype=np.int64)
    sr = hist["src_ring"].astype(np.int64)
    own = sr < len(cons)
    done = ~own
    done[own] = hist["src_seq"][own].astype(np.int64) < cons[sr[own]]
    state_from_records(hist[done], fst, ist)


# ----------------------------------------------------------------------------------------------------------------
# the stage
# ----------------------------------------------------------------------------------------------------------------


class BarsParams(msgspec.Struct, forbid_unknown_fields=True):
    """Parameters of the bars stage."""

    warmup: bool = True
    """Publish the venues' one-minute candles of the last ``warmup_minutes`` minutes as BAR_WARMUP records on a
    fresh start (output ring empty; never in a replay run)."""
    warmup_minutes: int = 150
    """Whole minutes before the current wall-clock minute to warm up with."""
    rest_urls: dict[str, str] = {}
    """REST base URL per venue, e.g. {kucoin = "http://127.0.0.1:18765"}; default: the real venues."""
    instruments: list[str] = []
    """Instruments to warm up ("SYMBOL", or "venue:SYMBOL" when a symbol is on several venues); default: all
    of the config's instrument table. Bars are built for every instrument either way."""


def warmup_instruments(cfg: PipelineConfig, params: BarsParams) -> list[int] | str:
    """Indices of the instruments to warm up, or a one-line problem."""
    if not params.instruments:
        return list(range(len(cfg.instruments)))
    out: list[int] = []
    for name in params.instruments:
        venue, _, symbol = name.rpartition(":")
        hits = [i for i, ins in enumerate(cfg.instruments) if ins.symbol == symbol and venue in ("", ins.venue)]
        if not hits:
            return f"params.instruments: no instrument {name!r} in [[instruments]]"
        if len(hits) > 1:
            venues = ", ".join(f"{cfg.instruments[i].venue}:{symbol}" for i in hits)
            return f"params.instruments: {name!r} is on several venues; name one of {venues}"
        if hits[0] not in out:
            out.append(hits[0])
    return out


class BarsStage(Stage):
    """BBO ticks in (one or more rings, taken in turn), one-minute bars of mids out."""

    Params = BarsParams
    input_types = None  # any number of rings, all "bbo" (checked in check_spec)
    output_types = ("bar",)

    @classmethod
    def check_spec(cls, cfg: PipelineConfig, spec: StageSpec) -> str | None:
        """Inputs are bbo rings; warm-up instruments exist and have a candle REST; the warm-up fits the ring."""
        if not spec.inputs:
            return "inputs: the bars stage needs at least one bbo ring"
        for r in spec.inputs:
            if cfg.rings[r].type != "bbo":
                return f"inputs: ring {r!r} carries {cfg.rings[r].type!r} records, kind 'bars' needs 'bbo'"
        p = msgspec.convert(spec.params, BarsParams, strict=True)
        if p.warmup_minutes < 1:
            return f"params.warmup_minutes: must be >= 1, got {p.warmup_minutes}"
        for venue, url in p.rest_urls.items():
            if venue not in CANDLE_VENUES:
                return f"params.rest_urls.{venue}: no candle REST for this venue (known: {', '.join(CANDLE_VENUES)})"
            if not url.startswith(("http://", "https://")):
                return f"params.rest_urls.{venue}: expected an http(s) URL, got {url!r}"
        which = warmup_instruments(cfg, p)
        if isinstance(which, str):
            return which
        if not p.warmup or cfg.replay is not None:
            return None
        for i in which:
            ins = cfg.instruments[i]
            if ins.venue not in CANDLE_VENUES:
                return (f"params.warmup: instrument {ins.symbol!r} is on venue {ins.venue!r}, which has no candle "
                        f"REST (known: {', '.join(CANDLE_VENUES)}); set warmup = false or list the instruments "
                        f"to warm up in params.instruments")
        cap = cfg.rings[spec.outputs[0]].capacity if spec.outputs else 0
        if cap and p.warmup_minutes * len(which) > cap // 2:
            return (f"params.warmup_minutes: {p.warmup_minutes} minutes x {len(which)} instruments = "
                    f"{p.warmup_minutes * len(which)} warm-up bars, more than half the output ring "
                    f"({cap} slots); enlarge the ring")
        return None

    def __init__(self, ctx: StageContext, params: BarsParams) -> None:
        super().__init__(ctx, params)
        self.out = ctx.outputs[0]
        self.fst, self.ist = new_state(len(ctx.config.instruments))
        self._bound = bars_context(ctx.inputs, self.out, self.fst, self.ist, self.marks)
        self._kernel = bars_run  # the compiled entry point once rebuild ran
        names = [bytes(x).decode() for x in ctx.row["counter_names"][:3]]
        # counters live in the status row, which outlives a restarted process: continue from its values
        self.counts = [int(ctx.row["counters"][k]) if names[k] == n else 0
                       for k, n in enumerate(("bad", "late", "warmup"))]

    def warm(self) -> None:
        """Compile the kernel (runs nothing)."""
        entry_point(bars_run, self._bound.addr, 0, 0)

    def rebuild(self) -> list[int]:
        """Warm-up on a fresh start, then the state from the output ring's history; every input resumes at its
        consumer cursor (the tick there is processed again, its outputs already out dropped by dedup)."""
        self._kernel = entry_point(bars_run, self._bound.addr, 0, 0)
        for k, n in enumerate(("bad", "late", "warmup")):
            self.ctx.set_counter(k, n, self.counts[k])
        if self.params.warmup and self.out.producer_pos == 0:
            if self.ctx.config.replay is not None:
                print(f"[{self.ctx.name}] warm-up skipped: a replay runs on recorded event time", file=sys.stderr,
                      flush=True)
            else:
                self._warmup()
        cons = [r.consumer_pos for r in self.ctx.inputs]
        restart_state(self.out.last_published(self.out.capacity), cons, self.fst, self.ist)
        return cons

    def _warmup(self) -> None:
        """Fetch the candles and publish them as BAR_WARMUP records in one ring publish; on a venue error, say so
        in status and the log and run cold."""
        from compute.candles import DEFAULT_URLS, CandleError, fetch_candles

        cfg, p = self.ctx.config, self.params
        which = warmup_instruments(cfg, p)
        assert not isinstance(which, str)
        now_minute = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
        start = now_minute - p.warmup_minutes * MINUTE_MS
        parts = []
        for i in which:
            ins = cfg.instruments[i]
            url = p.rest_urls.get(ins.venue) or DEFAULT_URLS.get(ins.venue)
            self.ctx.beat()
            try:
                c = fetch_candles(ins.venue, ins.symbol, start, now_minute, url)
            except CandleError as e:
                self.ctx.error("warm-up", f"{e}; running cold (no warm-up bars)")
                return
            c = c[(c["minute_ms"] >= start) & (c["minute_ms"] < now_minute)]
            rec = np.zeros(len(c), BAR)
            rec["instrument"] = i
            rec["minute_ms"] = c["minute_ms"]
            rec["open"], rec["high"], rec["low"], rec["close"] = c["open"], c["high"], c["low"], c["close"]
            rec["mean"] = rec["sum"] = 0.5 * (c["high"] + c["low"])
            rec["count"] = 1
            parts.append(rec)
        self.ctx.beat()
        recs = np.concatenate(parts) if parts else np.zeros(0, BAR)
        recs = recs[np.lexsort((recs["instrument"], recs["minute_ms"]))]
        if len(recs) == 0:
            return
        now = time.perf_counter_ns()
        recs["src_ring"], recs["src_seq"], recs["kind"] = WARMUP_RING, 0, BAR_WARMUP
        recs["ts_event_ms"] = recs["minute_ms"] + MINUTE_MS - 1
        recs["t_origin_ns"] = recs["t_pub_ns"] = now
        n = push_batch(self.out.hdr, self.out.data, recs.view(np.uint64).reshape(len(recs), -1))
        if n != len(recs):  # cannot happen on an empty ring of the size check_spec asks for
            raise RuntimeError(f"warm-up: only {n} of {len(recs)} bars fit the output ring")
        self.ctx.row["records_out"] += n
        self.counts[C_WARMUP] += n
        self.ctx.set_counter(C_WARMUP, "warmup", self.counts[C_WARMUP])
        print(f"[{self.ctx.name}] warm-up: {n} bars of {len(which)} instruments, minutes "
              f"{time.strftime('%H:%M', time.gmtime(start / 1000))}-"
              f"{time.strftime('%H:%M', time.gmtime(now_minute / 1000 - 60))} UTC", file=sys.stderr, flush=True)

    def step(self) -> int:
        """Take each input ring in turn (one compiled call each); publish counters."""
        total = 0
        row = self.ctx.row
        kernel, bound = self._kernel, self._bound.addr
        for r in range(len(self.ctx.inputs)):
            n, out, full, bad, late, dd = kernel(bound, r, BATCH)
            if n:  # an idle poll touches no counter
                total += n
                row["records_in"] += n
                row["records_out"] += out
                row["deduped"] += dd
            if bad:
                self.counts[C_BAD] += bad
                self.ctx.set_counter(C_BAD, "bad", self.counts[C_BAD])
                row["errors"] += bad - 1
                self.ctx.error("bad tick", f"{bad} ticks with a NaN, infinite, non-positive or crossed price "
                               f"(or an unknown instrument) dropped; {self.counts[C_BAD]} so far")
            if late:
                self.counts[C_LATE] += late
                self.ctx.set_counter(C_LATE, "late", self.counts[C_LATE])
                row["errors"] += late - 1
                self.ctx.error("late tick", f"{late} ticks older than their instrument's bar dropped; "
                               f"{self.counts[C_LATE]} so far")
            if full:
                row["waits"] += 1
                self.out.output_full(self.ctx.wait)
        return total
