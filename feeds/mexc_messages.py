"""MEXC spot v3 websocket frames -> normalized records (EXCHANGES.md §4.1-4.3).

Data frames are binary protobuf ``PushDataV3ApiWrapper`` messages, decoded by the protobuf package (upb) with the
classes compiled from ``feeds/proto``; the ``body`` oneof selects the handler and ``symbol`` (else the channel's
last ``@`` part) the instrument:

* ``publicAggreBookTicker`` (315): a BBO, event time ``sendTime``, ``venue_seq`` = ``version`` (2026-06) when
  present, else 0; a version not above the symbol's last one is refused (``out_of_order``). The legacy
  ``publicBookTicker`` (305) and ``publicBookTickerBatch`` (311) are read the same way.
* ``publicAggreDeals`` (314): one trade per deal; ``tradeType`` 1 buy / 2 sell is the taker's side, ``time`` (ms)
  the event time, ``trade_id`` the ``tradeId`` (2026-06) when numeric, else 0.
* ``publicAggreDepths`` (313, with ``books``): a diff ``fromVersion..toVersion`` for the symbol's ``MexcSync``;
  each applied diff publishes the top ``depth`` levels; a gap puts the symbol in ``need_snapshot`` (the feed
  fetches ``GET /api/v3/depth`` and calls ``on_snapshot``).
* anything else (limit depth, klines, unknown bodies, other symbols): ignored.

Control frames are JSON text (``{"id":0,"code":0,"msg":...}``) and come back as a ``Control``: ``ack`` (``msg``
echoes the subscribed channels), ``pong`` (``msg`` ``PONG``), ``error`` (a non-zero code, or any other message,
e.g. "Not Subscribed successfully!"). A frame is JSON when it is a ``str`` or starts with ``{`` / ``[`` (a
protobuf wrapper cannot: those bytes are start-group tags), else protobuf. Bad input is counted through the
emitter (``malformed_protobuf`` / ``malformed_json`` / ``missing_field`` under ``parse_err``; refused values
under ``bad_value``). ``on_frame`` never raises on any input.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import numpy as np
from google.protobuf.message import DecodeError

from feeds.book import BookSync, Diff, Snapshot
from feeds.emit import Emitter
from feeds.kucoin_messages import BookKeeping, Control, SymbolState, raw_text, snip
from feeds.proto import load as load_proto

__all__ = ["Control", "MexcParser", "MexcSync", "decode_mexc_snapshot"]

_MAX63 = (1 << 63) - 1
_SIDES = (0, 1, -1)
"""Taker side by ``tradeType`` (1 buy, 2 sell; anything else unknown)."""
_EMPTY = np.zeros((0, 2))


class MexcSync(BookSync):
    """MEXC spot ``aggre.depth`` (§4.3): after a snapshot with ``lastUpdateId`` drop diffs with ``toVersion <=
    lastUpdateId``; the first kept diff needs ``fromVersion <= lastUpdateId + 1`` (else the snapshot is too old:
    resync); afterwards each diff needs ``fromVersion == previous toVersion + 1`` (else a gap: resync).
    Quantities are absolute, 0 deletes."""

    def _check(self, d: Diff) -> str:
        if d.last <= self.last_id:
            return "discard"
        if self._first:
            return "apply" if d.first <= self.last_id + 1 else "gap"
        return "apply" if d.first == self.last_id + 1 else "gap"


class _State(SymbolState):
    """Per-symbol state; ``last_seq`` (the last accepted bookTicker version, -1: none) is a plain attribute here
    (no compiled fast path shares it)."""

    __slots__ = ("last_seq",)

    def __init__(self, symbol: str, inst: int) -> None:
        super().__init__(symbol, inst, None)
        self.last_seq = -1


class _Reply(msgspec.Struct, gc=False):
    id: int | str | None = None
    code: int | str | None = None
    msg: msgspec.Raw = msgspec.Raw()


U63 = Annotated[int, msgspec.Meta(ge=0, le=_MAX63)]


class _Depth(msgspec.Struct, gc=False):
    lastUpdateId: U63
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    timestamp: U63 = 0


_reply = msgspec.json.Decoder(_Reply)
_depth = msgspec.json.Decoder(_Depth, strict=False)


def _levels(rows, what: str) -> np.ndarray:
    """(n, 2) float64 [price, qty] from (price, qty) pairs; ValueError unless prices are finite and > 0 and
    quantities finite and >= 0 (MEXC has no price-0 entries: one is a broken frame, not a no-op)."""
    if not rows:
        return _EMPTY
    arr = np.array(rows, dtype=np.float64).reshape(-1, 2)
    if not (np.isfinite(arr).all() and (arr[:, 0] > 0.0).all() and (arr[:, 1] >= 0.0).all()):
        raise ValueError(f"{what}: prices must be finite and > 0, quantities finite and >= 0")
    return arr


def _version(text: str, what: str) -> int:
    """A version string as an int; ValueError unless plain ASCII digits within 63 bits."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{what} {text[:40]!r} is not a number")
    v = int(text)
    if v > _MAX63:
        raise ValueError(f"{what} {text[:40]!r} out of range")
    return v


def _trade_id(text: str) -> int:
    """``tradeId`` as an int when it is a plain number within 63 bits, else 0."""
    if text.isascii() and text.isdigit() and len(text) < 20:
        v = int(text)
        return v if v <= _MAX63 else 0
    return 0


def decode_mexc_snapshot(body: bytes) -> Snapshot:
    """A ``GET /api/v3/depth`` body ``{lastUpdateId, bids, asks, timestamp}`` as a `Snapshot`; ValueError (or
    msgspec.DecodeError) when malformed."""
    m = _depth.decode(body)
    return Snapshot(m.lastUpdateId, _levels(m.bids, "mexc snapshot bids"), _levels(m.asks, "mexc snapshot asks"),
                    m.timestamp)


class MexcParser(BookKeeping):
    """Parses MEXC spot v3 websocket frames into ``emit`` (one parser per feed).

    ``symbols`` maps the venue symbol (``BTCUSDT``) to the instrument id. With ``books`` every symbol keeps a
    ``MexcSync``; ``need_snapshot`` holds the symbols waiting for a REST snapshot (all of them at the start).
    Raises ``feeds.proto.ProtoError`` when the ``.proto`` files cannot be compiled."""

    venue = "mexc"

    def __init__(self, symbols: dict[str, int], emit: Emitter, books: bool = False, depth: int = 10) -> None:
        self.emit = emit
        self.books = books
        self.depth = depth
        self.need_snapshot: set[str] = set()
        self.states: dict[str, SymbolState] = {sym: _State(sym, inst) for sym, inst in symbols.items()}
        pb = load_proto()
        self.messages = pb
        self._wrapper = pb.PushDataV3ApiWrapper.FromString
        self.resync_all()

    def _new_sync(self) -> MexcSync:
        return MexcSync()

    def _decode_snapshot(self, body: bytes) -> Snapshot:
        return decode_mexc_snapshot(body)

    def _on_diff(self, st: SymbolState, d: Diff) -> None:
        sync = st.sync
        assert sync is not None
        before = sync.last_id
        action = sync.on_diff(d)
        if action == "apply":
            self._emit_book(st, d.ts_ms)
        elif action == "gap":
            self._gap(st, f"mexc {st.symbol}: gap, diff fromVersion {d.first}..toVersion {d.last} does not follow "
                          f"the book at version {before}")

    # -- frames --------------------------------------------------------------------------------------------------

    def on_frame(self, data: bytes | str, t_mono_ns: int, t_wall_ns: int) -> Control | None:
        """Parse one received frame (binary protobuf or JSON text); returns the control frame, None for data
        frames. Never raises."""
        emit = self.emit
        emit.frame(t_mono_ns, t_wall_ns)
        try:
            if type(data) is not bytes:
                data = data.encode() if isinstance(data, str) else bytes(data)
            head = data[:1]
            if head == b"{" or head == b"[":
                return self._control(data)
            w = self._wrapper(data)
            kind = w.WhichOneof("body")
            if kind is None:
                return None
            st = self.states.get(w.symbol)
            if st is None:
                st = self.states.get(w.channel.rpartition("@")[2])
                if st is None:
                    return None
            if kind == "publicAggreBookTicker":  # the hot path, inlined
                b = w.publicAggreBookTicker
                bid, bid_qty, ask, ask_qty = float(b.bidPrice), float(b.bidQuantity), float(b.askPrice), \
                    float(b.askQuantity)
                version = b.version
                if not version:
                    emit.bbo(st.inst, w.sendTime, 0, bid, bid_qty, ask, ask_qty)
                    return None
                seq = int(version) if len(version) < 19 and version.isdigit() and version.isascii() else \
                    _version(version, "version")
                if seq <= st.last_seq:
                    emit.bad("out_of_order", f"mexc {st.symbol}: bookTicker version {seq} not after {st.last_seq}")
                elif emit.bbo(st.inst, w.sendTime, seq, bid, bid_qty, ask, ask_qty):
                    st.last_seq = seq  # a refused copy does not shadow the good one with the same version
            elif kind == "publicAggreDeals":
                ts = w.sendTime
                for d in w.publicAggreDeals.deals:
                    tt = d.tradeType
                    emit.trade(st.inst, d.time or ts, _trade_id(d.tradeId), float(d.price), float(d.quantity),
                               _SIDES[tt] if 0 <= tt <= 2 else 0)
            elif kind == "publicAggreDepths":
                if self.books:
                    self._on_diff(st, self._diff(w, st.symbol))
            elif kind == "publicBookTicker":
                b = w.publicBookTicker
                emit.bbo(st.inst, w.sendTime, 0, float(b.bidPrice), float(b.bidQuantity), float(b.askPrice),
                         float(b.askQuantity))
            elif kind == "publicBookTickerBatch":
                self._batch(st, w)
        except DecodeError as e:
            emit.bad("malformed_protobuf", f"mexc: {e}: {bytes(data[:48]).hex()}", counter="parse_err")
        except msgspec.ValidationError as e:
            emit.bad("missing_field", f"mexc: {e}: {snip(data)}", counter="parse_err")
        except msgspec.DecodeError as e:
            emit.bad("malformed_json", f"mexc: {e}: {snip(data)}", counter="parse_err")
        except (ValueError, OverflowError, TypeError) as e:
            emit.bad("missing_field", f"mexc: {e}", counter="parse_err")
        return None

    def _diff(self, w, symbol: str) -> Diff:
        """The wrapper's ``publicAggreDepths`` as a `Diff` (``prev`` -1); ValueError when malformed."""
        m = w.publicAggreDepths
        first = _version(m.fromVersion, "fromVersion")
        last = _version(m.toVersion, "toVersion")
        if first > last:
            raise ValueError(f"fromVersion {first} > toVersion {last}")
        bids = _levels([(float(x.price), float(x.quantity)) for x in m.bids], "mexc depth bids")
        asks = _levels([(float(x.price), float(x.quantity)) for x in m.asks], "mexc depth asks")
        return Diff(first, last, -1, bids, asks, None, None, w.sendTime, symbol)

    def _batch(self, st: SymbolState, w) -> None:
        m = w.publicBookTickerBatch
        seq = _version(m.version, "version") if m.version else 0
        if seq and seq <= st.last_seq:
            self.emit.bad("out_of_order", f"mexc {st.symbol}: bookTicker batch version {seq} not after {st.last_seq}")
            return
        ok = False
        for b in m.items:
            ok |= self.emit.bbo(st.inst, w.sendTime, seq, float(b.bidPrice), float(b.bidQuantity),
                                float(b.askPrice), float(b.askQuantity))
        if seq and ok:
            st.last_seq = seq

    def _control(self, data: bytes) -> Control | None:
        r = _reply.decode(data)
        ident = "" if r.id is None else str(r.id)
        msg = raw_text(r.msg) if r.msg else ""
        if r.code is None and not msg:
            return None
        if r.code not in (0, "0", None):
            return Control("error", ident, f"code {r.code}: {msg}")
        if msg == "PONG":
            return Control("pong", ident)
        if msg and all(part.startswith("spot@") for part in msg.split(",")):
            return Control("ack", ident, msg)
        return Control("error", ident, msg)
