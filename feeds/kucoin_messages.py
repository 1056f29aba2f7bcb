"""KuCoin spot websocket messages -> normalized records (EXCHANGES.md §1.2-1.4).

``KucoinParser.on_frame`` takes one received frame. The envelope (``type, topic, subject, id, data``) is decoded
by a typed msgspec Struct that keeps ``data`` as ``msgspec.Raw``, so the payload is decoded exactly once, by the
Struct of its topic, with numeric strings converted to float/int inside msgspec (lax mode). The topic selects the
instrument and the handler through one dict lookup precomputed per symbol:

* ``/market/ticker:SYM`` (``trade.ticker``): a BBO, ``venue_seq`` = ``sequence`` (refused when not above the last
  one of that symbol), event time ``time`` (ms).
* ``/market/match:SYM`` (``trade.l3match``): a trade; ``time`` is in ns, side is the taker's, ``trade_id`` is the
  ``tradeId`` (decimal, or a hex object id: its low 63 bits).
* ``/market/level2:SYM`` (``trade.l2update``, with ``books``): a diff for the symbol's ``KucoinSync``; each applied
  diff publishes the top ``depth`` levels; a gap puts the symbol in ``need_snapshot`` (the feed fetches the REST
  snapshot and calls ``on_snapshot``).

A ``RingEmitter`` with a bbo ring gets the tickers through ``feeds.scan`` first: one compiled call scans the frame
and publishes its BBO; whatever it does not take comes here. Control frames (welcome, pong, ack, error) come back
as a ``Control``. Bad input is counted through the emitter (``malformed_json`` / ``missing_field`` under
``parse_err``; refused values under ``bad_value``); unknown topics, subjects and symbols are ignored. ``on_frame``
never raises on any input.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import numpy as np

from feeds.book import KucoinSync, Snapshot, decode_kucoin_l2, decode_kucoin_snapshot
from feeds.emit import Emitter, RingEmitter
from feeds.scan import BLOCKED, FastTicker, kucoin_ticker
from pipeline.records import FLAG_RESYNC

U63 = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]
"""A non-negative integer that fits the records' int64/uint64 fields (JSON numbers or numeric strings)."""

_MASK63 = (1 << 63) - 1
_SNIP = 160


class Control(msgspec.Struct, frozen=True, gc=False):
    """A venue control frame: KuCoin welcome / pong / ack / error, Binance result / error / serverShutdown."""

    type: str
    """Frame type (``welcome``, ``pong``, ``ack``, ``error``; Binance: ``result``, ``error``, ``serverShutdown``)."""
    id: str = ""
    """The id the venue echoed (connect id, request id), as a string; '' when none."""
    text: str = ""
    """Error code and message, subscription result; '' when nothing more."""


def snip(data: bytes | bytearray | memoryview | str) -> str:
    """The start of a frame as one printable line (for reports)."""
    if isinstance(data, str):
        text = data[:_SNIP]
    else:
        text = bytes(data[:_SNIP]).decode("utf-8", "replace")
    return text.replace("\n", "\\n").replace("\r", "\\r")


def raw_text(raw: msgspec.Raw) -> str:
    """A Raw JSON value as text: a JSON string unquoted, anything else verbatim."""
    b = bytes(raw)
    if b[:1] == b'"':
        try:
            return msgspec.json.decode(b, type=str)
        except msgspec.DecodeError:
            pass
    return b.decode("utf-8", "replace")


class _Envelope(msgspec.Struct, gc=False):
    type: str = ""
    topic: str = ""
    subject: str = ""
    id: str | int | None = None
    code: str | int | None = None
    data: msgspec.Raw = msgspec.Raw()


class _Ticker(msgspec.Struct, gc=False):
    sequence: U63
    bestBid: float
    bestBidSize: float
    bestAsk: float
    bestAskSize: float
    time: U63 = 0  # ms; missing -> receive time (FLAG_LOCAL_TIME)


class _Match(msgspec.Struct, gc=False):
    price: float
    size: float
    side: str
    time: U63  # ns
    tradeId: str


_SIDES = {"buy": 1, "sell": -1}
_TICKER_PREFIX = "/market/ticker:"
_TICKER, _MATCH, _L2, _TICKER_ALL = 1, 2, 3, 4


class SymbolState:
    """Per-symbol state."""

    __slots__ = ("_k", "_resync", "_seqs", "inst", "symbol", "sync")

    def __init__(self, symbol: str, inst: int, sync) -> None:
        self.symbol = symbol
        self.inst = inst
        self._seqs = np.full(1, -1, dtype=np.int64)
        self._k = 0
        self._resync = np.ones(1, dtype=np.int64)
        self.sync = sync
        """The symbol's book sync (None without books)."""

    @property
    def resync(self) -> bool:
        """The next book record is the first after a (re)sync: it carries FLAG_RESYNC."""
        return bool(self._resync[0])

    @resync.setter
    def resync(self, value: bool) -> None:
        self._resync[0] = value

    def share_resync(self, word: np.ndarray) -> None:
        """Keep ``resync`` in ``word`` (a one-element int64 view a compiled depth path reads) from now on."""
        word[0] = self._resync[0]
        self._resync = word

    @property
    def last_seq(self) -> int:
        """Sequence of the last ticker seen (-1: none)."""
        return int(self._seqs[self._k])

    @last_seq.setter
    def last_seq(self, seq: int) -> None:
        self._seqs[self._k] = seq

    def share_seq(self, seqs: np.ndarray, k: int) -> None:
        """Keep ``last_seq`` in ``seqs[k]`` from now on (the array a compiled fast path reads and updates)."""
        seqs[k] = self.last_seq
        self._seqs, self._k = seqs, k


def _trade_id(tid: str) -> int:
    """KuCoin trade id as an integer: decimal ids as they are, hex object ids by their low 63 bits."""
    if tid.isdigit():
        return int(tid) & _MASK63
    return int(tid, 16) & _MASK63  # ValueError when neither


class BookKeeping:
    """Local books of a parser's symbols (the part KuCoin and Binance share): diffs go to each symbol's sync
    object, applied ones publish the book's top ``depth`` levels, gaps and new connections put symbols in
    ``need_snapshot``, and ``on_snapshot`` joins a REST snapshot to the buffered diffs. Also binds the compiled
    ticker fast path (``feeds.scan``) when the emitter is a ``RingEmitter`` with a bbo ring."""

    venue = ""
    emit: Emitter
    books: bool
    depth: int
    need_snapshot: set[str]
    states: dict[str, SymbolState]
    """Per-symbol state by venue symbol (``states[sym].sync.book`` is the symbol's local book)."""
    _fast: FastTicker | None = None
    """The ticker fast path, tried first by ``on_frame``; None when the emitter does not take it."""

    def _bind_fast(self, fn, tables, usdm: bool = False) -> None:
        """Bind the fused scanner ``fn`` to this parser's symbols (``tables``: symbol bytes -> SymbolState, see
        ``FastTicker``) and to the emitter's bbo ring, sharing every symbol's ``last_seq``, and put the fast path in
        front of the general parser (``on_frame``). Only a plain ``RingEmitter``: other emitters store records
        their own way. The emitter (and a replay's resume point) is read now: a parser keeps its emitter."""
        emit = self.emit
        target = emit.fast_bbo() if type(emit) is RingEmitter else None
        if target is None:
            return
        ring, after = target
        states = list(self.states.values())
        index = {id(st): k for k, st in enumerate(states)}
        fast = FastTicker(fn, ring, [st.inst for st in states],
                          [{key: index[id(st)] for key, st in t.items()} for t in tables], emit.words, usdm, after)
        for k, st in enumerate(states):
            st.share_seq(fast.seqs, k)
        self._fast = fast
        call, addr = fast.fn, fast.addr

        def on_frame(data: bytes, t_mono_ns: int, t_wall_ns: int) -> Control | None:
            """Parse one received frame; returns the control frame, None for data frames. Never raises. A ticker
            goes through the compiled fast path, which publishes its record and keeps the emitter's frame number,
            counters and times (``emit.words``) as ``emit.frame()`` and ``emit.bbo()`` would; every other frame, and
            every ticker it does not publish, through the venue's general parser (``_parse_frame``)."""
            if emit.resync:
                fast.block(emit.resync)
            ts = call(data, addr, t_mono_ns, t_wall_ns)  # NOT_HANDLED for anything but bytes
            if ts >= 0:
                return None
            if ts == BLOCKED:  # the emitter's resync set may have emptied since block() last saw it
                fast.block(emit.resync)
            return self._parse_frame(data, t_mono_ns, t_wall_ns)

        self.on_frame = on_frame  # a closure: its variables cost less to reach than attributes (0.1 µs a frame)

    def on_frame(self, data: bytes, t_mono_ns: int, t_wall_ns: int) -> Control | None:
        """Parse one received frame; returns the control frame, None for data frames. Never raises. (With a fast
        path bound, ``_bind_fast`` puts its own ``on_frame`` in front of this one.)"""
        return self._parse_frame(data, t_mono_ns, t_wall_ns)

    def _parse_frame(self, data: bytes, t_mono_ns: int, t_wall_ns: int) -> Control | None:
        """The venue's general parser (``on_frame``)."""
        raise NotImplementedError

    def _new_sync(self):
        """A fresh sync object for one symbol."""
        raise NotImplementedError

    def _decode_snapshot(self, body: bytes):
        """The venue's REST snapshot body as a ``feeds.book.Snapshot``."""
        raise NotImplementedError

    def resync_all(self) -> None:
        """Start every book over (a new connection): all symbols wait for a snapshot."""
        for st in self.states.values():
            self.resync(st.symbol)

    def resync(self, symbol: str) -> None:
        """Start one symbol's book over: it waits for a snapshot; its next book record carries FLAG_RESYNC."""
        st = self.states.get(symbol)
        if not self.books or st is None:
            return
        st.sync = self._new_sync()
        st.resync = True
        fast_book = getattr(self, "_fast_book", None)  # Binance's compiled depth path (feeds.depth_scan)
        if fast_book is not None:  # reads the new sync's state from now on
            fast_book.attach(st)
        if st.sync.needs_snapshot:
            self.need_snapshot.add(symbol)

    def _on_diff(self, st: SymbolState, d) -> None:
        action = st.sync.on_diff(d)
        if action == "apply":
            self._emit_book(st, d.ts_ms)
        elif action == "gap":
            self._gap(st, f"{self.venue} {st.symbol}: gap, diff {d.first}..{d.last} (prev {d.prev}) does not follow "
                          "the book")

    def _gap(self, st: SymbolState, text: str) -> None:
        self.emit.bad("gap", text, counter="gaps")
        self.emit.counts.resyncs += 1
        st.resync = True
        self.need_snapshot.add(st.symbol)

    def _emit_book(self, st: SymbolState, ts_ms: int) -> None:
        """Publish the book's top levels; a crossed book is corrupt (a broken diff got applied, and its sequence
        is spent): start it over from a snapshot."""
        bids, asks = st.sync.book.top(self.depth)
        if len(bids) and len(asks) and bids[0, 0] >= asks[0, 0]:
            self.emit.bad("crossed_book", f"{self.venue} {st.symbol}: local book crossed at {st.sync.last_id}, bid "
                                          f"{bids[0, 0]} >= ask {asks[0, 0]}: resync")
            self.emit.counts.resyncs += 1
            self.resync(st.symbol)
            return
        if self.emit.book(st.inst, ts_ms, st.sync.last_id, bids, asks, FLAG_RESYNC if st.resync else 0):
            st.resync = False

    def on_snapshot(self, symbol: str, body: bytes, t_mono_ns: int, t_wall_ns: int) -> bool:
        """Apply a REST book snapshot of ``symbol`` (counted as a received frame) and run the buffered diffs
        behind it; publish the book (FLAG_RESYNC). True when the book is in sync afterwards; False when the body
        is bad (``bad_snapshot``) or does not join the diffs (a gap: the symbol stays in ``need_snapshot``).
        Never raises."""
        st = self.states.get(symbol)
        if st is None or st.sync is None:
            return False
        emit = self.emit
        emit.frame(t_mono_ns, t_wall_ns)
        try:
            snap = self._decode_snapshot(body)
            results = st.sync.on_snapshot(snap)
        except (ValueError, OverflowError, msgspec.DecodeError) as e:  # the decoders report problems as ValueError
            emit.bad("bad_snapshot", f"{self.venue} {symbol} snapshot: {e}: {snip(body)}", counter="parse_err")
            if not st.sync.needs_snapshot:  # a half-applied snapshot: start over
                self.resync(symbol)
            return False
        ts = snap.ts_ms
        for d, action in results:
            if action == "gap":
                self._gap(st, f"{self.venue} {symbol}: snapshot {snap.last_id} does not join diff "
                              f"{d.first}..{d.last} (prev {d.prev})")
                return False
            if action == "apply":
                ts = d.ts_ms
        if st.sync.needs_snapshot:
            self._gap(st, f"{self.venue} {symbol}: snapshot {snap.last_id} left the book out of sync")
            return False
        self.need_snapshot.discard(symbol)
        self._emit_book(st, ts)
        return True


class KucoinParser(BookKeeping):
    """Parses KuCoin spot websocket frames into ``emit`` (one parser per connection).

    ``symbols`` maps the venue symbol (``BTC-USDT``) to the instrument id. With ``books`` every symbol keeps a
    ``KucoinSync``; ``need_snapshot`` holds the symbols waiting for a REST snapshot (all of them at the start).
    With ``fast`` and a ``RingEmitter`` that stores bbo records, tickers take the compiled fast path first
    (``feeds.scan.kucoin_ticker``): the same records and counters in a fraction of the time."""

    def __init__(self, symbols: dict[str, int], emit: Emitter, books: bool = False, depth: int = 10,
                 fast: bool = True) -> None:
        self.emit = emit
        self.books = books
        self.depth = depth
        self.need_snapshot: set[str] = set()
        self.states: dict[str, SymbolState] = {}
        self._topics: dict[str, tuple[int, SymbolState | None]] = {"/market/ticker:all": (_TICKER_ALL, None)}
        for sym, inst in symbols.items():
            st = SymbolState(sym, inst, None)
            self.states[sym] = st
            self._topics[_TICKER_PREFIX + sym] = (_TICKER, st)
            self._topics["/market/match:" + sym] = (_MATCH, st)
            if books:
                self._topics["/market/level2:" + sym] = (_L2, st)
        self._env = msgspec.json.Decoder(_Envelope)
        self._ticker = msgspec.json.Decoder(_Ticker, strict=False)
        self._match = msgspec.json.Decoder(_Match, strict=False)
        self.resync_all()
        if fast:
            self._bind_fast(kucoin_ticker, [{topic[len(_TICKER_PREFIX):].encode(): st
                                             for topic, (kind, st) in self._topics.items() if kind == _TICKER}])

    venue = "kucoin"

    def _new_sync(self) -> KucoinSync:
        return KucoinSync()

    def _decode_snapshot(self, body: bytes) -> Snapshot:
        return decode_kucoin_snapshot(body)

    # -- frames --------------------------------------------------------------------------------------------------

    def _parse_frame(self, data: bytes, t_mono_ns: int, t_wall_ns: int) -> Control | None:
        """Parse one received frame; returns the control frame, None for data frames. Never raises."""
        emit = self.emit
        emit.frame(t_mono_ns, t_wall_ns)
        try:
            env = self._env.decode(data)
            if env.type != "message":
                return self._control(env)
            entry = self._topics.get(env.topic)
            if entry is None:
                return None
            kind, st = entry
            raw = env.data
            if not raw:
                emit.bad("missing_field", f"kucoin: no data: {snip(data)}", counter="parse_err")
                return None
            if kind == _TICKER:  # the hot path, inlined
                t = self._ticker.decode(raw)
                if t.sequence > st.last_seq:
                    st.last_seq = t.sequence
                    emit.bbo(st.inst, t.time, t.sequence, t.bestBid, t.bestBidSize, t.bestAsk, t.bestAskSize)
                else:
                    self._out_of_order(st, t.sequence)
            elif kind == _L2:
                self._on_l2(st, raw)
            elif kind == _MATCH:
                self._on_match(st, raw)
            else:  # /market/ticker:all: the symbol is the subject
                st = self.states.get(env.subject)
                if st is not None:
                    self._on_ticker(st, raw)
        except msgspec.ValidationError as e:
            emit.bad("missing_field", f"kucoin: {e}: {snip(data)}", counter="parse_err")
        except msgspec.DecodeError as e:
            emit.bad("malformed_json", f"kucoin: {e}: {snip(data)}", counter="parse_err")
        except (ValueError, OverflowError) as e:
            emit.bad("missing_field", f"kucoin: {e}: {snip(data)}", counter="parse_err")
        return None

    def _on_ticker(self, st: SymbolState, raw: msgspec.Raw) -> None:
        t = self._ticker.decode(raw)
        if t.sequence > st.last_seq:
            st.last_seq = t.sequence
            self.emit.bbo(st.inst, t.time, t.sequence, t.bestBid, t.bestBidSize, t.bestAsk, t.bestAskSize)
        else:
            self._out_of_order(st, t.sequence)

    def _out_of_order(self, st: SymbolState, seq: int) -> None:
        self.emit.bad("out_of_order", f"kucoin {st.symbol}: ticker sequence {seq} not after {st.last_seq}")

    def _on_match(self, st: SymbolState, raw: msgspec.Raw) -> None:
        m = self._match.decode(raw)
        ts = m.time
        if ts > 100_000_000_000_000:  # ns (every real match); tolerate ms
            ts //= 1_000_000
        self.emit.trade(st.inst, ts, _trade_id(m.tradeId), m.price, m.size, _SIDES.get(m.side, 0))

    def _control(self, env: _Envelope) -> Control | None:
        typ = env.type
        if typ not in ("welcome", "pong", "ack", "error"):
            return None
        ident = "" if env.id is None else str(env.id)
        if typ == "error":
            text = f"code {env.code}: {raw_text(env.data)}" if env.data else f"code {env.code}"
            return Control(typ, ident, text)
        return Control(typ, ident)

    def _on_l2(self, st: SymbolState, raw: msgspec.Raw) -> None:
        self._on_diff(st, decode_kucoin_l2(raw))
