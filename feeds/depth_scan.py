"""Fused fast path for Binance depth diffs: raw frame bytes -> local book updated -> top-of-book BOOK record in the
ring, in one compiled call.

Hand-written, like ``feeds.scan`` (whose scanning, decimal and calling machinery it reuses): no library parses JSON
straight into our book arrays and ring layout. The general path decodes the envelope and the event with msgspec,
builds level arrays, applies them through a numba call with eight array arguments, slices the top and publishes it
through another (about 15 µs a recorded USD-M frame in ``bench feeds``); this path does the same work in one call.

``binance_depth`` takes one whole frame: a combined-stream ``{"stream": "<symbol>@depth...", "data": {...}}``
(those two keys, in that order) or a raw ``depthUpdate`` event, spot (``U``, ``u``) or USD-M (adds ``pu``). It
scans the event (``E``, ``U``, ``u``, ``pu``, ``s`` and both level arrays, whitespace anywhere JSON allows it),
finds the symbol's state (stream name or ``s``: hash tables built once in Python), and, for a synced book, applies
the venue's rule as the sync's ``_check`` does: USD-M (``BinanceUsdmSync``) the first diff after a snapshot
``U <= last_id <= u`` (older: discard), then ``pu == last_id`` (``u <= last_id``: discard); spot (``BookSync``)
``u <= last_id``: discard, ``U <= last_id + 1``: apply. A discard only counts the frame. An apply puts the levels
into the book's arrays in place (``feeds.book._apply_both``, the general path's own compiled code, room check
first), sets ``last_id = u``, and publishes the top ``depth`` levels with ``feeds.emit.put_book``, header fields
as ``Emitter.book`` sets them (``src_seq``, receive time, ``ts_ms = E``, ``venue_seq = u``). Either way it keeps
the emitter's ``words`` (frame number, counters, receive times, latency) as ``Emitter.frame`` and ``Emitter.book``
would.

It returns a non-negative value when it took the frame: the record's event time ``E`` when it published one (0:
none, receive time and FLAG_LOCAL_TIME), 0 for a discarded diff. Or a negative status. ``NOT_HANDLED`` and
``BLOCKED``: nothing was changed, the general parser runs (and counts and reports as it always did): anything not
fully understood (levels that are not plain decimals, strings with escapes, ids of more than 18 digits, nested
values outside the level arrays, other keys in the envelope), a book not synced (the diff is buffered), a gap (the
book is dropped and the gap reported), a book without room for the diff (the general path grows it), a symbol whose
next book record owes FLAG_RESYNC (``BLOCKED``), frames a resumed replay skips. ``APPLIED``: the diff is applied
and ``last_id`` advanced exactly as the general path would, but the record is not published (crossed book, full
ring): the caller hands it to ``BookKeeping._emit_book``, which refuses it or waits for room as it always did.

KuCoin level 2 stays on the general path: its changes carry their own sequences and its frames another envelope.

State shared with Python, one int64 row per symbol (``FastDepth.rows``): the sync's own words (``ST_*`` of
``feeds.book``: ``last_id``, synced, first diff, where the book's arrays are; see ``BookSync.share``), then the
symbol's pending FLAG_RESYNC (``SymbolState.resync``), the emitter's pending book FLAG_RESYNC for its instrument,
and the instrument id. Python rewrites the row whenever a sync changes state, a book's arrays grow, or a sync is
replaced (``FastDepth.attach``), and ``FastDepth`` keeps every attached sync, and so every array the rows point
to, alive.

numba's cache checks only this file's timestamp: after changing the compiled code it calls in other modules
(``feeds.book._apply_both``, ``feeds.emit.put_book``, ``feeds.scan``'s helpers), touch this file too.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence

import numba
import numpy as np
from numba.extending import intrinsic

from feeds.book import (
    ST_ASKS,
    ST_ASKS_CAP,
    ST_BIDS,
    ST_BIDS_CAP,
    ST_BIG,
    ST_FIRST,
    ST_LAST,
    ST_META,
    ST_SYNCED,
    SYNC_STATE_WORDS,
    BookSync,
    _apply_both,
)
from feeds.emit import W_FRAMES, W_LAT_TS, W_LAT_WALL, W_RECORDS, W_SKEWED, W_SRC_SEQ, W_T_MONO, W_T_WALL, put_book
from feeds.scan import (
    _C_TWINS,
    _ENTRY,
    _J,
    _JI,
    BLOCKED,
    NOT_HANDLED,
    _decimal_value,
    _f64p,
    _i64p,
    _lookup,
    _pointer_to,
    _ptr,
    _same,
    _skip_value,
    _skip_ws,
    _string_end,
    _u64p,
    _uint,
    _word,
    fastcall,
    symbol_table,
)
from pipeline.records import BOOK, BOOK_LEVELS, FLAG_LOCAL_TIME
from pipeline.ring import HEADER_BYTES, PUSH_OK, Ring

__all__ = ["APPLIED", "BLOCKED", "NOT_HANDLED", "FastDepth", "binance_depth"]

APPLIED = -7
"""The diff is applied (book and ``last_id``), its record not published: hand it to ``BookKeeping._emit_book``."""

_bookp = intrinsic(_pointer_to(numba.from_dtype(BOOK)))

# row words after the sync's own (feeds.book ST_*)
R_RESYNC = SYNC_STATE_WORDS
"""``SymbolState.resync``: the symbol's next book record carries FLAG_RESYNC."""
R_HELD = SYNC_STATE_WORDS + 1
"""The emitter owes the instrument's next book record FLAG_RESYNC (``Emitter.mark_resync``)."""
R_INST = SYNC_STATE_WORDS + 2
ROW_WORDS = 16

# ctx words
(C_SEG, C_CAP, C_WORDS, C_AFTER, C_ROWS, C_STREAMS, C_STREAMS_N, C_SYMBOLS, C_SYMBOLS_N, C_USDM, C_DEPTH, C_LEVELS,
 C_LEVELS_MAX, C_STATE, C_TS, C_TAKEN, C_EMIT, C_DISCARDED) = range(18)
CTX_WORDS = 24

LEVELS_MAX = 4096
"""Levels per side a frame may carry here (more: the general path)."""

_QUOTE, _COMMA, _COLON, _LBRACE, _RBRACE, _LBR, _RBR = 34, 44, 58, 123, 125, 91, 93


def _key(name: bytes) -> int:
    """A key of at most 8 bytes packed as ``feeds.scan._word`` reads it."""
    return int.from_bytes(name, "little")


_K_EVENT, _K_TIME, _K_SYMBOL, _K_FIRST, _K_LAST, _K_PREV, _K_BIDS, _K_ASKS = (
    _key(k) for k in (b"e", b"E", b"s", b"U", b"u", b"pu", b"b", b"a"))
_ENVELOPE_KEYS = np.array([_key(k) for k in (b"stream", b"data", b"id", b"result", b"code", b"msg", b"error")],
                          dtype=np.int64)
"""Keys the general parser's envelope reads: a raw event holding one is left to it."""
_B_EVENT, _B_TIME, _B_SYMBOL, _B_FIRST, _B_LAST, _B_PREV, _B_BIDS, _B_ASKS = (1 << k for k in range(8))
_B_NEEDED = _B_SYMBOL | _B_FIRST | _B_LAST | _B_BIDS | _B_ASKS
"""What ``feeds.book.decode_binance_depth`` requires (``E`` and ``pu`` have defaults)."""
_DEPTH_UPDATE = np.frombuffer(b"depthUpdate", dtype=np.uint8)
_STREAM_KEY = np.frombuffer(b'"stream"', dtype=np.uint8)
_DATA_KEY = np.frombuffer(b'"data"', dtype=np.uint8)


@numba.njit(**_JI)
def _levels(p, i, n, out, cap):
    """A JSON array of ``[price, size]`` decimals at ``p[i]`` into the (``cap``, 2) float64 rows at ``out``:
    (rows, index after the array, or -1 when it is not that form or has more rows). Decimals as ``feeds.scan``
    reads them (exactly ``float(text)``); a price-0 row becomes [0, 0], as the general decoder makes it."""
    if i >= n or p[i] != _LBR:
        return 0, -1
    i = _skip_ws(p, i + 1, n)
    if i < n and p[i] == _RBR:
        return 0, i + 1
    k = 0
    while True:
        if i >= n or p[i] != _LBR or k >= cap:
            return k, -1
        price, i = _decimal_value(p, _skip_ws(p, i + 1, n), n)
        if i < 0:
            return k, -1
        i = _skip_ws(p, i, n)
        if i >= n or p[i] != _COMMA:
            return k, -1
        size, i = _decimal_value(p, _skip_ws(p, i + 1, n), n)
        if i < 0:
            return k, -1
        i = _skip_ws(p, i, n)
        if i >= n or p[i] != _RBR:
            return k, -1
        out[2 * k] = price
        out[2 * k + 1] = size if price != 0.0 else 0.0
        k += 1
        i = _skip_ws(p, i + 1, n)
        if i < n and p[i] == _COMMA:
            i = _skip_ws(p, i + 1, n)
        elif i < n and p[i] == _RBR:
            return k, i + 1
        else:
            return k, -1


@numba.njit(**_J)
def _event(p, i, n, raw, bids, asks, cap):
    """The ``depthUpdate`` object at ``p[i]``, levels into ``bids`` / ``asks`` (``cap`` rows each). ``raw``: the
    event is the whole frame, so its ``e`` must be ``depthUpdate`` and it holds no envelope key. Returns (index
    after the object or -1, bits of the keys seen, U, u, pu, E, bid rows, ask rows, start and end of ``s``)."""
    seen = 0
    first = last = prev = ts = 0
    nb = na = 0
    s0 = s1 = 0
    if i >= n or p[i] != _LBRACE:
        return -1, seen, first, last, prev, ts, nb, na, s0, s1
    i = _skip_ws(p, i + 1, n)
    if i < n and p[i] == _RBRACE:
        return -1, seen, first, last, prev, ts, nb, na, s0, s1
    while True:
        ke = _string_end(p, i, n)
        if ke < 0:
            return -1, seen, first, last, prev, ts, nb, na, s0, s1
        key = _word(p, i + 1, ke, n) if ke - i - 1 <= 8 else np.int64(-1)
        i = _skip_ws(p, ke + 1, n)
        if i >= n or p[i] != _COLON:
            return -1, seen, first, last, prev, ts, nb, na, s0, s1
        i = _skip_ws(p, i + 1, n)
        bit = 0
        if key == _K_FIRST:
            bit = _B_FIRST
            first, j = _uint(p, i, n)
        elif key == _K_LAST:
            bit = _B_LAST
            last, j = _uint(p, i, n)
        elif key == _K_PREV:
            bit = _B_PREV
            prev, j = _uint(p, i, n)
        elif key == _K_TIME:
            bit = _B_TIME
            ts, j = _uint(p, i, n)
        elif key == _K_BIDS:
            bit = _B_BIDS
            nb, j = _levels(p, i, n, bids, cap)
        elif key == _K_ASKS:
            bit = _B_ASKS
            na, j = _levels(p, i, n, asks, cap)
        elif key == _K_SYMBOL:
            bit = _B_SYMBOL
            s0 = i + 1
            s1 = _string_end(p, i, n)
            j = s1 + 1 if s1 >= 0 else -1
        elif raw and key == _K_EVENT:  # the kind of a raw event; a combined stream's is its name's
            bit = _B_EVENT
            e = _string_end(p, i, n)
            if not _same(p, i + 1, e, _ptr(_DEPTH_UPDATE), _DEPTH_UPDATE.shape[0]):
                return -1, seen, first, last, prev, ts, nb, na, s0, s1
            j = e + 1
        else:
            if raw:
                for k in range(_ENVELOPE_KEYS.shape[0]):
                    if key == _ENVELOPE_KEYS[k]:
                        return -1, seen, first, last, prev, ts, nb, na, s0, s1
            j = _skip_value(p, i, n)
        if j < 0 or seen & bit:  # a bad value, or a duplicate key of interest
            return -1, seen, first, last, prev, ts, nb, na, s0, s1
        seen |= bit
        i = _skip_ws(p, j, n)
        if i < n and p[i] == _COMMA:
            i = _skip_ws(p, i + 1, n)
        elif i < n and p[i] == _RBRACE:
            return i + 1, seen, first, last, prev, ts, nb, na, s0, s1
        else:
            return -1, seen, first, last, prev, ts, nb, na, s0, s1


@numba.njit(**_J)
def _depth(p, n, ctx_addr, t_mono, t_wall_ns):
    """A Binance depth frame (``n`` bytes at ``p``) -> its book updated and its BOOK record published (see the
    module docstring). ``ctx_addr``: ``FastDepth.addr``; ``t_mono``: the frame's monotonic receive time (ns);
    ``t_wall_ns``: its wall-clock receive time (ns)."""
    ctx = _i64p(ctx_addr)
    w = _i64p(ctx[C_EMIT])  # the emitter's words
    src_seq = w[W_SRC_SEQ] + 1
    if src_seq <= ctx[C_AFTER]:
        return NOT_HANDLED
    cap = ctx[C_LEVELS_MAX]
    bids = _f64p(ctx[C_LEVELS])
    asks = _f64p(ctx[C_LEVELS] + 16 * cap)
    start = _skip_ws(p, 0, n)
    i = _skip_ws(p, start + 1, n)
    if start < n and p[start] == _LBRACE and _same(p, i, min(i + 8, n), _ptr(_STREAM_KEY), 8):
        # combined stream: the state by the stream name, before anything else (most frames are not depth)
        i = _skip_ws(p, i + 8, n)
        if i >= n or p[i] != _COLON:
            return NOT_HANDLED
        i = _skip_ws(p, i + 1, n)
        e = _string_end(p, i, n)
        if e < 0:
            return NOT_HANDLED
        st = _lookup(p, i + 1, e, n, _i64p(ctx[C_STREAMS]), ctx[C_STREAMS_N])
        if st < 0:
            return NOT_HANDLED
        i = _skip_ws(p, e + 1, n)
        if i >= n or p[i] != _COMMA:
            return NOT_HANDLED
        i = _skip_ws(p, i + 1, n)
        if not _same(p, i, min(i + 6, n), _ptr(_DATA_KEY), 6):
            return NOT_HANDLED
        i = _skip_ws(p, i + 6, n)
        if i >= n or p[i] != _COLON:
            return NOT_HANDLED
        end, seen, first, last, prev, ts, nb, na, _, _ = _event(p, _skip_ws(p, i + 1, n), n, False, bids, asks,
                                                                cap)
        if end < 0:
            return NOT_HANDLED
        end = _skip_ws(p, end, n)
        if end >= n or p[end] != _RBRACE:
            return NOT_HANDLED
        end += 1
    else:  # a raw event: the state by its symbol
        end, seen, first, last, prev, ts, nb, na, s0, s1 = _event(p, start, n, True, bids, asks, cap)
        if end < 0 or not seen & _B_EVENT or not seen & _B_SYMBOL:
            return NOT_HANDLED
        st = _lookup(p, s0, s1, n, _i64p(ctx[C_SYMBOLS]), ctx[C_SYMBOLS_N])
        if st < 0:
            return NOT_HANDLED
    usdm = ctx[C_USDM] != 0
    if _skip_ws(p, end, n) != n or seen & _B_NEEDED != _B_NEEDED or (usdm and not seen & _B_PREV):
        return NOT_HANDLED

    row = _i64p(ctx[C_ROWS] + 8 * ROW_WORDS * st)
    if row[ST_SYNCED] != 1 or row[ST_BIG] != 0:
        return NOT_HANDLED  # no book: the general path buffers the diff
    last_id = row[ST_LAST]
    if usdm and row[ST_FIRST] != 0:  # BinanceUsdmSync._check, the first diff after a snapshot
        discard = last < last_id
        gap = not discard and first > last_id
    elif usdm:
        discard = prev != last_id and last <= last_id
        gap = prev != last_id and last > last_id
    else:  # BookSync._check
        discard = last <= last_id
        gap = not discard and first > last_id + 1
    if gap:
        return NOT_HANDLED  # the general path drops the book and reports the gap
    if discard:  # what Emitter.frame() keeps, inlined: nothing else changes
        w[W_SRC_SEQ] = src_seq
        w[W_FRAMES] += 1
        w[W_T_MONO] = t_mono
        w[W_T_WALL] = t_wall_ns
        ctx[C_DISCARDED] += 1
        return 0
    if row[R_RESYNC] != 0 or row[R_HELD] != 0:
        return BLOCKED

    bid_lv = numba.carray(_f64p(row[ST_BIDS]), (row[ST_BIDS_CAP], 2))
    ask_lv = numba.carray(_f64p(row[ST_ASKS]), (row[ST_ASKS_CAP], 2))
    meta = numba.carray(_i64p(row[ST_META]), (2, 2))
    no_seq = numba.carray(_i64p(ctx_addr), (0,))
    if not _apply_both(bid_lv, ask_lv, meta, numba.carray(bids, (nb, 2)), numba.carray(asks, (na, 2)), no_seq,
                       no_seq, last_id):
        return NOT_HANDLED  # no room: the general path grows the book
    row[ST_LAST] = last
    row[ST_FIRST] = 0
    ctx[C_STATE] = st
    ctx[C_TS] = ts if seen & _B_TIME else 0

    sb, nb_book, sa, na_book = meta[0, 0], meta[0, 1], meta[1, 0], meta[1, 1]
    top_b = min(nb_book, ctx[C_DEPTH])
    top_a = min(na_book, ctx[C_DEPTH])
    if top_b > 0 and top_a > 0 and bid_lv[sb, 0] >= ask_lv[sa, 0]:
        return APPLIED  # crossed: Emitter.book refuses and reports it
    flags = 0
    ts_ms = ts = ctx[C_TS]
    t_wall_ms = t_wall_ns // 1_000_000
    if ts_ms <= 0:
        ts_ms = t_wall_ms
        flags = FLAG_LOCAL_TIME
    seg = ctx[C_SEG]
    hdr = numba.carray(_u64p(seg), (HEADER_BYTES // 8,))
    data = numba.carray(_u64p(seg + HEADER_BYTES), (ctx[C_CAP], ctx[C_WORDS]))
    slots = numba.carray(_bookp(seg + HEADER_BYTES), (ctx[C_CAP],))
    if put_book(hdr, data, slots, src_seq, t_mono, ts_ms, row[R_INST], flags, last,
                numba.carray(_f64p(row[ST_BIDS] + 16 * sb), (top_b, 2)),
                numba.carray(_f64p(row[ST_ASKS] + 16 * sa), (top_a, 2))) != PUSH_OK:
        return APPLIED  # full ring: the general emitter waits
    ctx[C_TAKEN] += 1
    w[W_SRC_SEQ] = src_seq  # what Emitter.frame() and Emitter.book() keep, inlined
    w[W_FRAMES] += 1
    w[W_RECORDS] += 1
    w[W_T_MONO] = t_mono
    w[W_T_WALL] = t_wall_ns
    if ts > 0:
        w[W_LAT_WALL] = t_wall_ns
        w[W_LAT_TS] = ts
        if ts > t_wall_ms:
            w[W_SKEWED] += 1
    return ts


@numba.njit(**_ENTRY)
def binance_depth(buf, ctx_addr, t_mono, t_wall_ns):
    """``_depth`` of a bytes object: numba's entry point (the fallback of ``fastcall``)."""
    return _depth(_ptr(buf), len(buf), ctx_addr, t_mono, t_wall_ns)


def _binance_depth_c(p, n, ctx_addr, t_mono, t_wall_ns):
    return _depth(p, n, ctx_addr, t_mono, t_wall_ns)


_C_TWINS[binance_depth] = _binance_depth_c  # what feeds.scan.fastcall compiles its FASTCALL wrapper around


class FastDepth:
    """``binance_depth`` bound to one parser's books and one book ring; keeps alive everything ``ctx`` points to.

    ``states``: the parser's per-symbol states (``SymbolState``: ``inst``, ``sync``, ``resync``), state k in row
    k; ``streams`` / ``symbols``: combined-stream names / raw-event symbols (bytes) -> state index; ``depth``:
    levels per side published; ``words``: the emitter's ``words`` (``feeds.emit.W_*``), updated in place on every
    frame published; ``after``: frames up to this number are not taken (a resumed replay skips their records)."""

    def __init__(self, ring: Ring, states: Sequence, streams: Mapping[bytes, int], symbols: Mapping[bytes, int],
                 usdm: bool, depth: int, words: array, after: int = 0) -> None:
        self.ring = ring
        self.words = words  # held, as everything ctx points to
        self.seg = ring.seg  # held: the mapping stays while we point into it
        self.states = list(states)
        self.rows = np.zeros((max(1, len(self.states)), ROW_WORDS), dtype=np.int64)
        self.syncs: list[BookSync | None] = [None] * len(self.states)
        self.index = {id(st): k for k, st in enumerate(self.states)}
        self.streams = symbol_table(streams)
        self.symbols = symbol_table(symbols)
        self.levels = np.zeros((2, LEVELS_MAX, 2), dtype=np.float64)
        self.ctx = c = np.zeros(CTX_WORDS, dtype=np.int64)
        c[C_SEG], c[C_CAP], c[C_WORDS] = self.seg.ctypes.data, ring.capacity, ring.data.shape[1]
        c[C_AFTER], c[C_ROWS] = after, self.rows.ctypes.data
        c[C_STREAMS], c[C_STREAMS_N] = self.streams.ctypes.data, self.streams.shape[0]
        c[C_SYMBOLS], c[C_SYMBOLS_N] = self.symbols.ctypes.data, self.symbols.shape[0]
        c[C_USDM], c[C_DEPTH] = int(usdm), min(max(int(depth), 0), BOOK_LEVELS)
        c[C_LEVELS], c[C_LEVELS_MAX] = self.levels.ctypes.data, LEVELS_MAX
        c[C_EMIT] = words.buffer_info()[0]
        self.addr = int(c.ctypes.data)
        """What the fused function takes as ``ctx_addr``."""
        self.fn = fastcall(binance_depth)
        """``fn(frame bytes, addr, t_mono_ns, t_wall_ns)`` -> E (published) or a status."""
        self.held: frozenset[int] = frozenset()
        """The emitter's pending book FLAG_RESYNC instruments as of the last ``hold``."""
        for k, st in enumerate(self.states):
            self.rows[k, R_INST] = st.inst
            st.share_resync(self.rows[k, R_RESYNC:R_RESYNC + 1])
            self.attach(st)

    def attach(self, st) -> None:
        """Share the state of ``st.sync`` (a new one after a resync) through its row; the sync it replaces gets a
        private copy of its state back."""
        k = self.index[id(st)]
        old, new = self.syncs[k], st.sync
        if old is new:
            return
        if old is not None:
            old.share(None)
        self.syncs[k] = new  # held: the row points into its book
        if new is None:
            self.rows[k, :SYNC_STATE_WORDS] = 0
        else:
            new.share(self.rows[k, :SYNC_STATE_WORDS])

    def hold(self, pending: set[int]) -> None:
        """Keep the instruments in ``pending`` (the emitter's pending book FLAG_RESYNC) off the fast path."""
        if pending == self.held:
            return
        self.held = frozenset(pending)
        for k, st in enumerate(self.states):
            self.rows[k, R_HELD] = st.inst in self.held

    @property
    def state(self) -> int:
        """The state index of the last frame that returned ``APPLIED``."""
        return int(self.ctx[C_STATE])

    @property
    def ts(self) -> int:
        """The event time (``E``, 0 when absent) of the last frame that returned ``APPLIED``."""
        return int(self.ctx[C_TS])

    @property
    def taken(self) -> int:
        """Records the fast path published."""
        return int(self.ctx[C_TAKEN])

    @property
    def discarded(self) -> int:
        """Diffs the fast path discarded (older than the book)."""
        return int(self.ctx[C_DISCARDED])
