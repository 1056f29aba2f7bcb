"""Where parsers put normalized market data: validation and counting, then a ring (or a list, for dumps and tests).

Every parser (KuCoin, Binance, replay) calls one ``Emitter``: ``frame()`` once per received frame, then ``bbo()``,
``trade()`` or ``book()`` per normalized record. The base class validates values (finite, positive, not crossed)
and counts; a subclass stores the valid ones. ``RingEmitter`` writes them straight into a ring slot in one compiled
call per record (hand-written: no library publishes into our ring layout); ``ListEmitter`` keeps them as tuples.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable

import numba
import numpy as np

from pipeline.records import BBO, BOOK, BOOK_LEVELS, FLAG_LOCAL_TIME, FLAG_RESYNC, TRADE
from pipeline.ring import PUSH_OK, Ring, claim, entry_point, publish
from pipeline.syscalls import monotonic_ns

COUNTER_NAMES = ("frames", "parse_err", "bad_value", "gaps", "resyncs", "reconnects", "lat_us", "skewed")
"""Feed counters in the stage's status row, in slot order (``lat_us``: last feed latency, receive - exchange)."""


W_SRC_SEQ, W_FRAMES, W_RECORDS, W_SKEWED, W_T_MONO, W_T_WALL, W_LAT_WALL, W_LAT_TS = range(8)
"""Slots of ``Emitter.words``: the state a compiled fast path (``feeds.scan``) updates in place."""


def _word(slot: int, doc: str) -> property:
    """An int attribute kept in ``self.words[slot]``."""

    def get(self) -> int:
        return self.words[slot]

    def set(self, value: int) -> None:
        self.words[slot] = value

    return property(get, set, doc=doc)


class FeedCounts:
    """What a feed has seen since it started. ``frames``, ``records`` and ``skewed`` live in ``words`` (the
    emitter's, shared with compiled fast paths); the rest are plain attributes."""

    frames = _word(W_FRAMES, "Frames received (data and control).")
    records = _word(W_RECORDS, "Valid records emitted.")
    skewed = _word(W_SKEWED, "Records whose exchange time was later than our receive time (clock skew).")

    def __init__(self, words: array | None = None) -> None:
        self.words = words if words is not None else array("q", bytes(8 * 8))
        self.parse_err = 0
        """Frames that were not valid JSON or lacked required fields."""
        self.bad_value = 0
        """Records refused: zero, negative or NaN price or size, crossed book, out-of-order sequence."""
        self.gaps = 0
        """Sequence gaps seen (each triggers a book resync)."""
        self.resyncs = 0
        """Book resynchronisations started."""
        self.reconnects = 0
        """Websocket reconnects."""
        self.lat_us = 0
        """Latest feed latency, receive wall time - exchange event time, µs (negative: clock skew)."""
        self.by_kind: dict[str, int] = {}
        """Refusals by kind (e.g. ``nan_price``, ``crossed``)."""

    def values(self) -> tuple[int, ...]:
        """Counter values in ``COUNTER_NAMES`` order."""
        return tuple(getattr(self, n) for n in COUNTER_NAMES)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, FeedCounts) and self.values() == other.values() and self.records == other.records
                and self.by_kind == other.by_kind)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)}" for n in ("records", *COUNTER_NAMES))
        return f"FeedCounts({inner}, by_kind={self.by_kind})"


# -- compiled publishers (one call per record) -------------------------------------------------------------------


@numba.njit(nogil=True, cache=True, inline="always")
def _header(rec, src_seq, t_origin, ts_ms, inst, flags):
    """The common header fields of a market-data record (``seq`` and ``t_pub_ns`` are set at publish)."""
    rec.src_seq = src_seq
    rec.t_origin_ns = t_origin
    rec.ts_event_ms = ts_ms
    rec.src_ring = 0
    rec.instrument = inst
    rec.flags = flags


@numba.njit(nogil=True, cache=True)
def put_bbo(hdr, data, slots, src_seq, t_origin, ts_ms, inst, flags, bid, bid_qty, ask, ask_qty, venue_seq):
    """Publish one BBO record; returns PUSH_OK, or 0 when the ring is full."""
    j = claim(hdr, data.shape[0])
    if j < 0:
        return 0
    rec = slots[j]
    _header(rec, src_seq, t_origin, ts_ms, inst, flags)
    rec.bid_px = bid
    rec.bid_qty = bid_qty
    rec.ask_px = ask
    rec.ask_qty = ask_qty
    rec.venue_seq = venue_seq
    rec.t_pub_ns = monotonic_ns()
    publish(hdr, data, 1)
    return PUSH_OK


@numba.njit(nogil=True, cache=True)
def put_trade(hdr, data, slots, src_seq, t_origin, ts_ms, inst, flags, price, qty, trade_id, side):
    """Publish one TRADE record; returns PUSH_OK, or 0 when the ring is full."""
    j = claim(hdr, data.shape[0])
    if j < 0:
        return 0
    rec = slots[j]
    _header(rec, src_seq, t_origin, ts_ms, inst, flags)
    rec.price = price
    rec.qty = qty
    rec.trade_id = trade_id
    rec.side = side
    rec.t_pub_ns = monotonic_ns()
    publish(hdr, data, 1)
    return PUSH_OK


@numba.njit(nogil=True, cache=True)
def put_book(hdr, data, slots, src_seq, t_origin, ts_ms, inst, flags, venue_seq, bids, asks):
    """Publish one BOOK record from (n, 2) [price, qty] arrays, best first; returns PUSH_OK or 0 when full."""
    j = claim(hdr, data.shape[0])
    if j < 0:
        return 0
    rec = slots[j]
    _header(rec, src_seq, t_origin, ts_ms, inst, flags)
    rec.venue_seq = venue_seq
    nb = min(bids.shape[0], rec.bid_px.shape[0])
    na = min(asks.shape[0], rec.ask_px.shape[0])
    rec.n_bids = nb
    rec.n_asks = na
    for i in range(rec.bid_px.shape[0]):
        if i < nb:
            rec.bid_px[i] = bids[i, 0]
            rec.bid_qty[i] = bids[i, 1]
        else:
            rec.bid_px[i] = 0.0
            rec.bid_qty[i] = 0.0
        if i < na:
            rec.ask_px[i] = asks[i, 0]
            rec.ask_qty[i] = asks[i, 1]
        else:
            rec.ask_px[i] = 0.0
            rec.ask_qty[i] = 0.0
    rec.t_pub_ns = monotonic_ns()
    publish(hdr, data, 1)
    return PUSH_OK


# -- emitters ------------------------------------------------------------------------------------------------------


_INF = math.inf


def _bad_px(x: float) -> bool:
    return not (0.0 < x < _INF)  # catches NaN, zero, negative, inf


class Emitter:
    """Validates and counts normalized market data; subclasses store what passes (``_bbo``/``_trade``/``_book``).

    ``report(kind, text)`` receives each refusal and parse problem (the stage rate-limits the log per kind)."""

    src_seq = _word(W_SRC_SEQ, "Number of the current frame (1-based); records carry it as ``src_seq``.")
    t_mono_ns = _word(W_T_MONO, "Monotonic receive time of the current frame (``t_origin_ns`` of its records).")
    t_wall_ns = _word(W_T_WALL, "Wall-clock receive time of the current frame (recorded receive time in replay).")

    def __init__(self, report: Callable[[str, str], None] | None = None) -> None:
        self.words = array("q", bytes(8 * 8))
        """The per-frame state and hot counters (``W_*`` slots), in one buffer a compiled fast path updates too
        (``feeds.scan``): whichever path takes a frame, the emitter's view stays whole."""
        self.counts = FeedCounts(self.words)
        self.report = report or (lambda kind, text: None)
        self.resync: set[int] = set()
        """Instruments whose next bbo record carries FLAG_RESYNC (after a reconnect: records may be missing)."""
        self._resync_trade: set[int] = set()
        self._resync_book: set[int] = set()

    @property
    def t_wall_ms(self) -> int:
        """``t_wall_ns`` in ms."""
        return self.words[W_T_WALL] // 1_000_000

    @property
    def _lat(self) -> tuple[int, int]:
        """(receive ns, exchange ms) of the latest record with an exchange time."""
        return self.words[W_LAT_WALL], self.words[W_LAT_TS]

    @_lat.setter
    def _lat(self, value: tuple[int, int]) -> None:
        self.words[W_LAT_WALL], self.words[W_LAT_TS] = value

    def mark_resync(self, instruments) -> None:
        """Flag the next record of each kind (bbo, trade, book) of each of ``instruments`` with FLAG_RESYNC, so the
        consumer of every ring learns of the break."""
        instruments = set(instruments)
        self.resync |= instruments
        self._resync_trade |= instruments
        self._resync_book |= instruments

    def frame(self, t_mono_ns: int, t_wall_ns: int) -> None:
        """Start a new received frame."""
        w = self.words
        w[W_SRC_SEQ] += 1
        w[W_FRAMES] += 1
        w[W_T_MONO] = t_mono_ns
        w[W_T_WALL] = t_wall_ns

    def counter_values(self) -> tuple[int, ...]:
        """The counters in ``COUNTER_NAMES`` order, feed latency brought up to date."""
        wall, ts = self._lat
        if ts:
            self.counts.lat_us = (wall - ts * 1_000_000) // 1000
        return self.counts.values()

    def bad(self, kind: str, text: str, counter: str = "bad_value") -> None:
        """Count a refused frame or record under ``counter`` and ``kind``, and report it."""
        setattr(self.counts, counter, getattr(self.counts, counter) + 1)
        self.counts.by_kind[kind] = self.counts.by_kind.get(kind, 0) + 1
        self.report(kind, text)

    def _stamp(self, inst: int, ts_ms: int, flags: int, pending: set[int]) -> tuple[int, int]:
        """Event time and flags of a record: receive time where the venue sent none; resync flag (``pending``: the
        kind's instruments still owed one); skew count."""
        if pending and inst in pending:
            pending.discard(inst)
            flags |= FLAG_RESYNC
        w = self.words
        if ts_ms <= 0:
            return w[W_T_WALL] // 1_000_000, flags | FLAG_LOCAL_TIME
        w[W_LAT_WALL] = w[W_T_WALL]
        w[W_LAT_TS] = ts_ms
        if ts_ms > w[W_T_WALL] // 1_000_000:
            w[W_SKEWED] += 1  # the exchange's clock is ahead of ours
        return ts_ms, flags

    def bbo(self, inst: int, ts_ms: int, venue_seq: int, bid: float, bid_qty: float, ask: float, ask_qty: float,
            flags: int = 0) -> bool:
        """Emit a best bid/ask (``ts_ms`` 0: the venue sent no event time, use the receive time)."""
        if not (0.0 < bid < ask < _INF and 0.0 < bid_qty < _INF and 0.0 < ask_qty < _INF):  # NaN fails too
            if _bad_px(bid) or _bad_px(ask) or _bad_px(bid_qty) or _bad_px(ask_qty):
                self.bad("bad_price", f"instrument {inst}: bid {bid} x {bid_qty}, ask {ask} x {ask_qty}")
            else:
                self.bad("crossed", f"instrument {inst}: crossed book, bid {bid} >= ask {ask}")
            return False
        ts_ms, flags = self._stamp(inst, ts_ms, flags, self.resync)
        self._bbo(inst, ts_ms, venue_seq, bid, bid_qty, ask, ask_qty, flags)
        self.counts.records += 1
        return True

    def trade(self, inst: int, ts_ms: int, trade_id: int, price: float, qty: float, side: int, flags: int = 0) -> bool:
        """Emit a public trade; ``side`` is the taker's: 1 buy, -1 sell, 0 unknown."""
        if not (0.0 < price < _INF and 0.0 < qty < _INF):
            self.bad("bad_price", f"instrument {inst}: trade {price} x {qty}")
            return False
        ts_ms, flags = self._stamp(inst, ts_ms, flags, self._resync_trade)
        self._trade(inst, ts_ms, trade_id, price, qty, side, flags)
        self.counts.records += 1
        return True

    def book(self, inst: int, ts_ms: int, venue_seq: int, bids: np.ndarray, asks: np.ndarray, flags: int = 0) -> bool:
        """Emit the top levels of a synchronized book: (n, 2) [price, qty] arrays, best first."""
        if bids.shape[0] and asks.shape[0] and bids[0, 0] >= asks[0, 0]:
            self.bad("crossed", f"instrument {inst}: local book crossed, bid {bids[0, 0]} >= ask {asks[0, 0]}")
            return False
        ts_ms, flags = self._stamp(inst, ts_ms, flags, self._resync_book)
        self._book(inst, ts_ms, venue_seq, bids[:BOOK_LEVELS], asks[:BOOK_LEVELS], flags)
        self.counts.records += 1
        return True

    def _bbo(self, inst, ts_ms, venue_seq, bid, bid_qty, ask, ask_qty, flags) -> None:
        raise NotImplementedError

    def _trade(self, inst, ts_ms, trade_id, price, qty, side, flags) -> None:
        raise NotImplementedError

    def _book(self, inst, ts_ms, venue_seq, bids, asks, flags) -> None:
        raise NotImplementedError


class ListEmitter(Emitter):
    """Keeps records as tuples ``(kind, src_seq, t_wall_ns, inst, ts_ms, flags, ...)`` (dumps, tests, benches)."""

    def __init__(self, report: Callable[[str, str], None] | None = None) -> None:
        super().__init__(report)
        self.records: list[tuple] = []

    def _bbo(self, inst, ts_ms, venue_seq, bid, bid_qty, ask, ask_qty, flags) -> None:
        self.records.append(("bbo", self.src_seq, self.t_wall_ns, inst, ts_ms, flags,
                             venue_seq, bid, bid_qty, ask, ask_qty))

    def _trade(self, inst, ts_ms, trade_id, price, qty, side, flags) -> None:
        self.records.append(("trade", self.src_seq, self.t_wall_ns, inst, ts_ms, flags, trade_id, price, qty, side))

    def _book(self, inst, ts_ms, venue_seq, bids, asks, flags) -> None:
        self.records.append(("book", self.src_seq, self.t_wall_ns, inst, ts_ms, flags, venue_seq,
                             bids.copy(), asks.copy()))


class RingEmitter(Emitter):
    """Publishes each record into its type's ring as it comes (one compiled call per record). A full ring makes it
    wait (lossless) until ``stop()`` is true.

    ``rings`` maps a record kind (``bbo``, ``trade``, ``book``) to its output ring; kinds without a ring are
    validated and counted but not stored. ``resume[kind]`` = (src_seq, n) skips that kind's records of earlier
    frames and its first n of frame src_seq: what a restarted replay had already published."""

    def __init__(self, rings: dict[str, Ring], wait: str = "yield", stop: Callable[[], bool] = lambda: False,
                 report: Callable[[str, str], None] | None = None,
                 resume: dict[str, tuple[int, int]] | None = None) -> None:
        super().__init__(report)
        self.rings = rings
        self.wait = wait
        self.stop = stop
        self.resume = resume or {}
        self._frame_out: dict[str, int] = {}
        empty = np.zeros((0, 2))
        self._rings: dict[str, tuple] = {}
        for kind, dtype, fn, args in (
            ("bbo", BBO, put_bbo, (0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0)),
            ("trade", TRADE, put_trade, (0, 0, 0, 0, 0, 0.0, 0.0, 0, 0)),
            ("book", BOOK, put_book, (0, 0, 0, 0, 0, 0, empty, empty)),
        ):
            ring = rings.get(kind)
            if ring is not None:
                if ring.dtype != dtype:
                    raise ValueError(f"ring {ring.name} holds {ring.dtype} records, not {kind}")
                # the compiled entry point, bound once: no type dispatch per record
                self._rings[kind] = (ring, entry_point(fn, ring.hdr, ring.data, ring.slots, *args),
                                     ring.hdr, ring.data, ring.slots)

    def fast_bbo(self) -> tuple[Ring, int] | None:
        """For a parser's compiled fast path (``feeds.scan``): the bbo ring, and the last frame number whose bbo
        records a resumed replay skips (0: none); None when bbo records are not stored."""
        target = self._rings.get("bbo")
        if target is None:
            return None
        return target[0], self.resume.get("bbo", (0, 0))[0]

    def fast_book(self) -> tuple[Ring, int] | None:
        """For a parser's compiled depth path (``feeds.depth_scan``): the book ring, and the last frame number
        whose book records a resumed replay skips (0: none); None when book records are not stored."""
        target = self._rings.get("book")
        if target is None:
            return None
        return target[0], self.resume.get("book", (0, 0))[0]

    def frame(self, t_mono_ns: int, t_wall_ns: int) -> None:
        super().frame(t_mono_ns, t_wall_ns)
        if self.resume:
            self._frame_out.clear()

    def _skip(self, kind: str) -> bool:
        """True if this record was already published before a restart."""
        seq, n = self.resume.get(kind, (0, 0))
        if self.src_seq > seq:
            return False
        out = self._frame_out[kind] = self._frame_out.get(kind, 0) + 1
        return self.src_seq < seq or out <= n

    def _full(self, ring: Ring) -> bool:
        """The ring is full: wait by strategy; False when stopping."""
        if self.stop():
            return False
        ring.output_full(self.wait)
        return True

    def _bbo(self, inst, ts_ms, venue_seq, bid, bid_qty, ask, ask_qty, flags) -> None:
        target = self._rings.get("bbo")
        if target is None or (self.resume and self._skip("bbo")):
            return
        ring, fn, hdr, data, slots = target
        while fn(hdr, data, slots, self.src_seq, self.t_mono_ns, ts_ms, inst, flags, bid, bid_qty, ask, ask_qty,
                 venue_seq) != PUSH_OK and self._full(ring):
            pass

    def _trade(self, inst, ts_ms, trade_id, price, qty, side, flags) -> None:
        target = self._rings.get("trade")
        if target is None or (self.resume and self._skip("trade")):
            return
        ring, fn, hdr, data, slots = target
        while fn(hdr, data, slots, self.src_seq, self.t_mono_ns, ts_ms, inst, flags, price, qty, trade_id,
                 side) != PUSH_OK and self._full(ring):
            pass

    def _book(self, inst, ts_ms, venue_seq, bids, asks, flags) -> None:
        target = self._rings.get("book")
        if target is None or (self.resume and self._skip("book")):
            return
        ring, fn, hdr, data, slots = target
        bids, asks = np.ascontiguousarray(bids), np.ascontiguousarray(asks)
        while fn(hdr, data, slots, self.src_seq, self.t_mono_ns, ts_ms, inst, flags, venue_seq, bids,
                 asks) != PUSH_OK and self._full(ring):
            pass


def publish_counters(ctx, emit: Emitter) -> None:
    """Copy a feed's counters into its stage's status row (``ctx``: the stage's ``StageContext``)."""
    for i, (name, value) in enumerate(zip(COUNTER_NAMES, emit.counter_values(), strict=True)):
        ctx.set_counter(i, name, value)
    ctx.row["records_out"] = emit.counts.records
