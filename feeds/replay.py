"""Replay of recordings through the live parsers: the ``replay`` stage and ``pipeline replay``.

Recordings (the project's own, cryptofeed's text files, hftbacktest's gzip lines; ``feeds/recording.py``) are
merged by receive time and every frame goes through the same parser a live feed uses, into one emitter: a ring
(the ``replay`` stage that ``pipeline up --replay`` puts in place of the config's feeds) or JSON lines
(``pipeline replay --dump``). Event time falls back to the recorded receive time where the venue sends none, so a
replay gives the same records at any speed.

Symbols: a recording's symbols are read from its connect URLs, subscribe messages and first frames. In a pipeline
each is mapped to the config's instrument of the same venue and symbol, else of the same base and quote
(``BTCUSDT`` = ``BTC-USDT``); symbols with no instrument are skipped.
"""

from __future__ import annotations

import itertools
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import msgspec
import orjson

from feeds.binance_messages import BinanceParser
from feeds.emit import Emitter, ListEmitter, RingEmitter, publish_counters
from feeds.kucoin_messages import KucoinParser
from feeds.recording import Frame, detect_venue, merge, read_frames
from pipeline.config import Instrument, PipelineConfig, StageSpec
from pipeline.records import BOOK_LEVELS
from pipeline.stage import DONE, Stage, StageContext

VENUES = ("kucoin", "binance", "binance-usdm", "mexc")
"""Venues a recording can be replayed as."""
SCAN_FRAMES = 20000
"""Frames read at the start of a recording to find its symbols (besides connect URLs and subscriptions)."""
BATCH = 256
"""Frames per step of the replay stage."""

_KUCOIN_TOPIC = re.compile(rb"/market/[A-Za-z0-9]+:([A-Z0-9,_-]+)")
_BINANCE_STREAM = re.compile(rb"([a-z0-9]+)@(?:bookTicker|depth|aggTrade|trade|kline)")
_MEXC_CHANNEL = re.compile(rb"\.pb@(?:\d+ms@)?([A-Z0-9]+)")


class ReplayError(ValueError):
    """A recording cannot be replayed (unknown venue, unreadable file); one line."""


def key(symbol: str) -> str:
    """Base and quote without separators: ``BTC-USDT`` and ``BTCUSDT`` both give ``BTCUSDT``."""
    return symbol.replace("-", "").replace("_", "").replace("/", "").upper()


def venue_of(path: str, given: str = "") -> str:
    """The venue a recording is replayed as: ``given``, else detected from the file."""
    venue = given or (detect_venue(path) or "").replace("_", "-")
    if venue not in VENUES:
        raise ReplayError(f"{path}: cannot tell the venue of this recording; pass --venue ({', '.join(VENUES)})"
                          if not given else f"unknown venue {given!r} (known: {', '.join(VENUES)})")
    return venue


def symbols_in(path: str, venue: str) -> list[str]:
    """The venue symbols a recording carries (connect URLs, subscriptions and its first frames)."""
    found: dict[str, None] = {}
    for frame in itertools.islice(read_frames(path), SCAN_FRAMES):
        text = frame.url.encode() + b" " + bytes(frame.data)
        if venue == "kucoin":
            for m in _KUCOIN_TOPIC.finditer(text):
                for s in m.group(1).split(b","):
                    if s and s != b"all" and b"_" not in s:  # candle topics: SYMBOL_1min
                        found[s.decode()] = None
        elif venue == "mexc":  # channel names: in subscriptions and inside every protobuf push
            for m in _MEXC_CHANNEL.finditer(text):
                found[m.group(1).decode()] = None
        else:
            for m in _BINANCE_STREAM.finditer(text):
                found[m.group(1).decode().upper()] = None
    return list(found)


def make_parser(venue: str, symbols: dict[str, int], emit: Emitter, books: bool, depth: int):
    """The live parser of ``venue``."""
    if venue == "kucoin":
        return KucoinParser(symbols, emit, books=books, depth=depth)
    if venue == "mexc":
        from feeds.mexc_messages import MexcParser  # protobuf classes compile on first use

        return MexcParser(symbols, emit, books=books, depth=depth)
    return BinanceParser(symbols, emit, market="usdm" if venue == "binance-usdm" else "spot", books=books,
                         depth=depth)


class Replayer:
    """Merges recordings by receive time and feeds each frame to its file's parser.

    ``instruments``: the config's table (symbols are mapped to it); None: every symbol found gets an id in order
    (``self.names`` holds them), as ``pipeline replay --dump`` needs."""

    def __init__(self, files: list[str], emit: Emitter, instruments: list[Instrument] | None = None,
                 venues: list[str] | None = None, speed: float = 0.0, books: bool = True,
                 depth: int = BOOK_LEVELS) -> None:
        self.files = [str(f) for f in files]
        for f in self.files:
            if not Path(f).is_file():
                raise ReplayError(f"{f}: no such recording")
        venues = list(venues or [])
        self.venues = [venue_of(f, venues[i] if i < len(venues) else "") for i, f in enumerate(self.files)]
        self.emit = emit
        self.speed = speed
        self.names: list[str] = []
        symbols: dict[str, dict[str, int]] = {}
        for f, venue in zip(self.files, self.venues, strict=True):
            symbols.setdefault(venue, {}).update(self._map(f, venue, instruments))
        # one parser per venue, so a REST snapshot recorded in one file syncs the book of diffs in another
        by_venue = {v: make_parser(v, syms, emit, books, depth) for v, syms in symbols.items()}
        self.parsers = [by_venue[v] for v in self.venues]
        self.frames: Iterator[tuple[int, Frame]] = merge(self.files)
        self.t0_rec = -1
        self.t0_wall = 0.0
        self.skip_pacing_until = 0
        """Frames up to this src_seq are not paced (a restarted replay catching up with what it published)."""
        self.done = False

    def _map(self, path: str, venue: str, instruments: list[Instrument] | None) -> dict[str, int]:
        out: dict[str, int] = {}
        for sym in symbols_in(path, venue):
            if instruments is None:
                name = f"{venue}:{sym}"
                if name not in self.names:
                    self.names.append(name)
                out[sym] = self.names.index(name)
                continue
            exact = [i for i, ins in enumerate(instruments) if ins.venue == venue and key(ins.symbol) == key(sym)]
            loose = [i for i, ins in enumerate(instruments) if key(ins.symbol) == key(sym)]
            if exact or loose:
                out[sym] = (exact or loose)[0]
        return out

    def run(self, max_frames: int, stop: Callable[[], bool] = lambda: False) -> int:
        """Replay up to ``max_frames`` frames that are due; returns how many (0: waiting for pacing), or DONE."""
        n = 0
        while n < max_frames and not stop():
            item = next(self.frames, None)
            if item is None:
                self.done = True
                return n or DONE
            idx, frame = item
            if self.speed > 0 and self.emit.src_seq >= self.skip_pacing_until:
                if self.t0_rec < 0:
                    self.t0_rec, self.t0_wall = frame.t_ns, time.monotonic()
                wait = self.t0_wall + (frame.t_ns - self.t0_rec) / 1e9 / self.speed - time.monotonic()
                if wait > 0:
                    time.sleep(min(wait, 0.05))
                    self.frames = itertools.chain([item], self.frames)
                    return n
            self._frame(idx, frame)
            n += 1
        return n

    def _frame(self, idx: int, frame: Frame) -> None:
        parser = self.parsers[idx]
        if frame.kind == "ws":
            parser.on_frame(bytes(frame.data), time.perf_counter_ns(), frame.t_ns)
        elif frame.kind == "rest":
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(frame.url).query)
            symbol = query.get("symbol", [""])[0]
            if symbol and getattr(parser, "books", False):
                parser.on_snapshot(symbol, bytes(frame.data), time.perf_counter_ns(), frame.t_ns)
        elif frame.kind == "connect" and getattr(parser, "books", False):
            parser.resync_all()  # a new connection in the recording: its books start over


# -- the replay stage ------------------------------------------------------------------------------------------------


class ReplayParams(msgspec.Struct, forbid_unknown_fields=True):
    """Parameters of the replay stage (``pipeline up --replay`` fills them in)."""

    files: list[str]
    """Recordings, merged by receive time."""
    speed: float = 0.0
    """Pacing as a multiple of recorded time; 0: as fast as the pipeline takes it."""
    venues: list[str] = []
    """Venue per file ('' or missing: detected from the recording)."""
    depth: int = BOOK_LEVELS
    """Levels per side in book records."""


class ReplayFeed(Stage):
    """Source stage: recordings through the live parsers into the rings the config's feeds wrote. Finishes (DONE)
    at the end of the recordings; a restart re-parses from the start without republishing (src_seq = frame number
    in the merged stream)."""

    Params = ReplayParams
    input_types: ClassVar[tuple[str | None, ...] | None] = ()
    output_types: ClassVar[tuple[str | None, ...] | None] = None

    @classmethod
    def check_spec(cls, cfg: PipelineConfig, spec: StageSpec) -> str | None:
        types = [cfg.rings[r].type for r in spec.outputs]
        if not types or any(t not in ("bbo", "trade", "book") or types.count(t) > 1 for t in types):
            return f"replay outputs take one ring per record type bbo, trade, book; got {', '.join(types) or 'none'}"
        return None

    def __init__(self, ctx: StageContext, params: ReplayParams) -> None:
        super().__init__(ctx, params)
        self.rings = {ctx.config.rings[name].type: ring
                      for name, ring in zip(ctx.spec.outputs, ctx.outputs, strict=True)}
        self.replayer: Replayer | None = None
        self._counters_at = 0.0

    def warm(self) -> None:
        RingEmitter(self.rings)  # compiles the publishers

    def rebuild(self) -> list[int]:
        resume = {}
        for kind, ring in self.rings.items():
            recs = ring.last_published(64)
            if len(recs):
                last = int(recs["src_seq"][-1])
                resume[kind] = (last, int((recs["src_seq"] == last).sum()))
        emit = RingEmitter(self.rings, self.ctx.wait, lambda: self.ctx.stopping, self.ctx.error, resume)
        p = self.params
        self.replayer = Replayer(p.files, emit, self.ctx.config.instruments, p.venues, p.speed,
                                 books="book" in self.rings, depth=p.depth)
        self.replayer.skip_pacing_until = max((s for s, _ in resume.values()), default=0)
        return []

    def step(self) -> int:
        assert self.replayer is not None
        n = self.replayer.run(BATCH, lambda: self.ctx.stopping)
        now = time.monotonic()
        if n == DONE or now - self._counters_at > 0.1:
            self._counters_at = now
            publish_counters(self.ctx, self.replayer.emit)
        return n


# -- pipeline replay --dump -----------------------------------------------------------------------------------------


def dump_rows(emit: ListEmitter, names: list[str]) -> Iterator[bytes]:
    """The emitter's records as JSON lines (``pipeline replay --dump``)."""
    for r in emit.records:
        kind, _src, t_recv, inst, ts, _flags = r[:6]
        sym = names[inst].split(":", 1)[1]
        if kind == "bbo":
            vseq, bid, bq, ask, aq = r[6:]
            row = {"kind": "bbo", "symbol": sym, "bid": bid, "ask": ask, "bid_qty": bq, "ask_qty": aq,
                   "ts_event_ms": ts, "exch_seq": vseq, "t_recv_ns": t_recv}
        elif kind == "trade":
            tid, price, qty, side = r[6:]
            row = {"kind": "trade", "symbol": sym, "price": price, "qty": qty,
                   "side": {1: "buy", -1: "sell"}.get(side, "unknown"), "ts_event_ms": ts, "exch_seq": tid,
                   "t_recv_ns": t_recv}
        else:
            vseq, bids, asks = r[6:]
            row = {"kind": "book", "symbol": sym, "bids": bids.tolist(), "asks": asks.tolist(), "ts_event_ms": ts,
                   "exch_seq": vseq, "t_recv_ns": t_recv}
        yield orjson.dumps(row) + b"\n"
    emit.records.clear()
