"""Binance spot and USD-M websocket messages -> normalized records (EXCHANGES.md §2.1-2.2, §3.1-3.2).

``BinanceParser.on_frame`` takes combined-stream frames ``{"stream": "...", "data": {...}}`` (the envelope is a
typed msgspec Struct with ``data`` kept as ``msgspec.Raw``; the stream name selects instrument and handler through
one dict lookup) and raw single-stream frames (the event itself; dispatched on ``e`` and ``s``). The event is
decoded once by the Struct of its kind, numeric strings converted inside msgspec (lax mode):

* ``bookTicker``: a BBO, ``venue_seq`` = ``u`` (refused when not above the last one of that symbol). Spot frames
  carry no event time: the record gets the receive time and FLAG_LOCAL_TIME. USD-M: event time ``E``.
* ``aggTrade`` / ``trade``: a trade, time ``T``, id ``a`` / ``t``; ``m`` (buyer is maker) means the taker sold.
* ``depthUpdate`` (with ``books``): a diff for the symbol's ``BinanceSpotSync`` / ``BinanceUsdmSync``; each applied
  diff publishes the top ``depth`` levels; a gap puts only that symbol in ``need_snapshot``.
* kline and every other stream: ignored.

A ``RingEmitter`` with a bbo ring gets bookTicker frames through ``feeds.scan`` first: one compiled call scans the
frame and publishes its BBO; whatever it does not take comes here. With books and a book ring, every frame that
reaches the general parser first goes through ``feeds.depth_scan``: one compiled call takes a depthUpdate of a
synced book (the whole frame: no envelope decode), applies or discards it and publishes the book's top; everything
else (other frames, unsynced books, gaps, odd values, pending FLAG_RESYNC) is parsed here as before.

Subscription answers ``{"result": ..., "id": N}``, errors ``{"code": .., "msg": ..}`` and ``serverShutdown`` come
back as a ``Control``. Bad input is counted through the emitter, as in ``feeds.kucoin_messages``; ``on_frame``
never raises on any input.
"""

from __future__ import annotations

import msgspec

from feeds.book import BinanceSpotSync, BinanceUsdmSync, Snapshot, decode_binance_depth, decode_binance_snapshot
from feeds.depth_scan import APPLIED, BLOCKED, FastDepth
from feeds.emit import Emitter, RingEmitter
from feeds.kucoin_messages import U63, BookKeeping, Control, SymbolState, raw_text, snip
from feeds.scan import binance_book_ticker

__all__ = ["BinanceParser", "Control"]

_STREAM_CACHE_MAX = 4096


class _Envelope(msgspec.Struct, gc=False):
    stream: str = ""
    data: msgspec.Raw = msgspec.Raw()
    # raw single-stream events
    e: str = ""
    s: str = ""
    # control answers
    id: int | str | None = None
    result: msgspec.Raw = msgspec.Raw()
    code: int | str | None = None
    msg: str = ""
    error: msgspec.Raw = msgspec.Raw()


class _BookTickerSpot(msgspec.Struct, gc=False):
    u: U63
    b: float
    B: float
    a: float
    A: float


class _BookTickerUsdm(msgspec.Struct, gc=False):
    u: U63
    b: float
    B: float
    a: float
    A: float
    E: U63


class _AggTrade(msgspec.Struct, gc=False):
    a: U63
    p: float
    q: float
    T: U63
    m: bool


class _Trade(msgspec.Struct, gc=False):
    t: U63
    p: float
    q: float
    T: U63
    m: bool


_BOOK_TICKER, _AGG_TRADE, _TRADE, _DEPTH = 1, 2, 3, 4
_KINDS = {"bookTicker": _BOOK_TICKER, "aggTrade": _AGG_TRADE, "trade": _TRADE, "depth": _DEPTH,
          "depthUpdate": _DEPTH}
"""Stream name suffixes (``btcusdt@depth@100ms`` -> ``depth``) and raw event types ``e``."""


class BinanceParser(BookKeeping):
    """Parses Binance spot (``market="spot"``) or USD-M (``"usdm"``) market-stream frames into ``emit``.

    ``symbols`` maps the venue symbol (``BTCUSDT``) to the instrument id. With ``books`` every symbol keeps a
    ``BinanceSpotSync`` / ``BinanceUsdmSync``; ``need_snapshot`` holds the symbols waiting for a REST snapshot.
    With ``fast`` and a ``RingEmitter`` that stores bbo records, bookTicker frames take the compiled fast path
    first (``feeds.scan.binance_book_ticker``); with ``fast``, ``books`` and one that stores book records, so do
    depth diffs of synced books (``feeds.depth_scan``): the same records and counters in a fraction of the time."""

    _fast_book: FastDepth | None = None
    """The compiled depth path, tried first by ``_parse_frame``; None when the emitter does not take it."""

    def __init__(self, symbols: dict[str, int], emit: Emitter, market: str = "spot", books: bool = False,
                 depth: int = 10, fast: bool = True) -> None:
        if market not in ("spot", "usdm"):
            raise ValueError(f"market must be 'spot' or 'usdm', not {market!r}")
        self.emit = emit
        self.market = market
        self.books = books
        self.depth = depth
        self.need_snapshot: set[str] = set()
        self.states: dict[str, SymbolState] = {sym: SymbolState(sym, inst, None) for sym, inst in symbols.items()}
        self._lower = {sym.lower(): st for sym, st in self.states.items()}
        self._streams: dict[str, tuple[int, SymbolState] | None] = {}
        for low in self._lower:
            for suffix in ("bookTicker", "aggTrade", "trade", "depth", "depth@100ms", "depth@0ms", "depth@250ms",
                           "depth@500ms", "depth@1000ms"):
                self._stream(f"{low}@{suffix}")
        self._env = msgspec.json.Decoder(_Envelope)
        self._book_ticker = msgspec.json.Decoder(_BookTickerUsdm if market == "usdm" else _BookTickerSpot,
                                                 strict=False)
        self._agg_trade = msgspec.json.Decoder(_AggTrade, strict=False)
        self._trade = msgspec.json.Decoder(_Trade, strict=False)
        self._usdm = market == "usdm"
        self.venue = "binance-usdm" if self._usdm else "binance"
        self.resync_all()
        if fast:
            self._bind_fast(binance_book_ticker, [{sym.encode(): st for sym, st in self.states.items()},
                                                  {low.encode(): st for low, st in self._lower.items()}], self._usdm)
        if fast and books:
            self._bind_depth()

    def _bind_depth(self) -> None:
        """Put the compiled depth path (``feeds.depth_scan``) in front of the general parser, sharing every
        symbol's book state. Only a plain ``RingEmitter`` with a book ring (see ``_bind_fast``)."""
        target = self.emit.fast_book() if type(self.emit) is RingEmitter else None
        if target is None:
            return
        ring, after = target
        states = list(self.states.values())
        index = {id(st): k for k, st in enumerate(states)}
        streams = {name.encode(): index[id(entry[1])] for name, entry in self._streams.items()
                   if entry is not None and entry[0] == _DEPTH}
        self._fast_book = FastDepth(ring, states, streams, {sym.encode(): k for k, sym in enumerate(self.states)},
                                    self._usdm, self.depth, self.emit.words, after)

    def _new_sync(self) -> BinanceSpotSync | BinanceUsdmSync:
        return BinanceUsdmSync() if self._usdm else BinanceSpotSync()

    def _decode_snapshot(self, body: bytes) -> Snapshot:
        return decode_binance_snapshot(body)

    def _stream(self, name: str) -> tuple[int, SymbolState] | None:
        """Handler kind and symbol of a stream name (cached); None when not ours or not parsed."""
        low, _, rest = name.partition("@")
        st = self._lower.get(low)
        kind = _KINDS.get(rest.partition("@")[0]) if st is not None else None
        entry = (kind, st) if kind is not None and (kind != _DEPTH or self.books) else None
        if st is not None and len(self._streams) < _STREAM_CACHE_MAX:
            self._streams[name] = entry
        return entry

    # -- frames --------------------------------------------------------------------------------------------------

    def _parse_frame(self, data: bytes, t_mono_ns: int, t_wall_ns: int) -> Control | None:
        """Parse one received frame; returns the control frame, None for data frames. Never raises."""
        emit = self.emit
        depth = self._fast_book
        if depth is not None:  # a depth diff of a synced book: one compiled call (feeds.depth_scan)
            if emit._resync_book:
                depth.hold(emit._resync_book)
            ts = depth.fn(data, depth.addr, t_mono_ns, t_wall_ns)  # NOT_HANDLED for anything but bytes
            if ts >= 0:  # published or discarded, emit.words kept as emit.frame() and emit.book() keep them
                return None
            if ts == APPLIED:  # applied, not published (crossed, ring full): the general emitter's call
                emit.frame(t_mono_ns, t_wall_ns)
                self._emit_book(depth.states[depth.state], depth.ts)
                return None
            if ts == BLOCKED:  # the emitter's pending set may have emptied since hold() last saw it
                depth.hold(emit._resync_book)
        emit.frame(t_mono_ns, t_wall_ns)
        try:
            env = self._env.decode(data)
            if env.stream:
                entry = self._streams.get(env.stream, False)
                if entry is False:
                    entry = self._stream(env.stream)
                if entry is None:
                    return None
                raw = env.data
                if not raw:
                    emit.bad("missing_field", f"binance: no data: {snip(data)}", counter="parse_err")
                    return None
                kind, st = entry
            elif env.s:  # raw single-stream event; spot bookTicker has no "e"
                st = self.states.get(env.s)
                kind = _KINDS.get(env.e) if env.e else _BOOK_TICKER
                if st is None or kind is None or (kind == _DEPTH and not self.books):
                    return None
                raw = data
            else:
                return self._control(env)
            if kind == _BOOK_TICKER:  # the hot path, inlined
                t = self._book_ticker.decode(raw)
                if t.u > st.last_seq:
                    st.last_seq = t.u
                    emit.bbo(st.inst, t.E if self._usdm else 0, t.u, t.b, t.B, t.a, t.A)
                else:
                    emit.bad("out_of_order", f"binance {st.symbol}: bookTicker u {t.u} not after {st.last_seq}")
            elif kind == _DEPTH:
                self._on_diff(st, decode_binance_depth(raw))
            elif kind == _AGG_TRADE:
                t = self._agg_trade.decode(raw)
                emit.trade(st.inst, t.T, t.a, t.p, t.q, -1 if t.m else 1)
            else:
                t = self._trade.decode(raw)
                emit.trade(st.inst, t.T, t.t, t.p, t.q, -1 if t.m else 1)
        except msgspec.ValidationError as e:
            emit.bad("missing_field", f"binance: {e}: {snip(data)}", counter="parse_err")
        except msgspec.DecodeError as e:
            emit.bad("malformed_json", f"binance: {e}: {snip(data)}", counter="parse_err")
        except (ValueError, OverflowError) as e:
            emit.bad("missing_field", f"binance: {e}: {snip(data)}", counter="parse_err")
        return None

    def _control(self, env: _Envelope) -> Control | None:
        ident = "" if env.id is None else str(env.id)
        if env.error:
            return Control("error", ident, raw_text(env.error))
        if env.code is not None:
            return Control("error", ident, f"code {env.code}: {env.msg}")
        if env.e == "serverShutdown":
            return Control("serverShutdown", ident)
        if env.id is not None:
            result = bytes(env.result)
            return Control("result", ident, "" if result in (b"", b"null") else raw_text(env.result))
        return None

