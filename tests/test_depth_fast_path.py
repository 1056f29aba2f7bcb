"""The compiled depth path (``feeds.depth_scan``) against the general Binance parser it sits in front of.

The general path (msgspec + ``BookSync`` + ``Emitter``) is the reference: with the fast path on, every recorded and
every mutated frame must leave byte-identical ring records (``t_pub_ns`` aside), identical counters and reports, and
identical books and sync states to the run with it off. All frames are real recorded traffic (with its REST
snapshots) or mutations of it; nothing is mocked.
"""

from __future__ import annotations

import copy
import gzip
import itertools
import json
import os
import random
import re
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from conftest import SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.binance_messages import BinanceParser
from feeds.book import ST_BIDS, ST_BIDS_CAP, ST_LAST, BinanceUsdmSync, Diff, Snapshot
from feeds.depth_scan import APPLIED, BLOCKED, NOT_HANDLED, R_RESYNC, FastDepth, binance_depth
from feeds.emit import ListEmitter, RingEmitter
from feeds.kucoin_messages import KucoinParser
from feeds.scan import fastcall, numba_call
from pipeline.records import BBO, BOOK, FLAG_RESYNC, TRADE
from pipeline.ring import Ring

REC = SHARED / "data" / "recorded"
GZ = REC / "binance_2024-08-08"
CHUNK = 2048
"""Events between comparisons (rings hold 4 x CHUNK records)."""

pytestmark = pytest.mark.skipif(not (REC / "BINANCE_FUTURES.ws.1.0").is_file(),
                                reason=f"recorded data not found in {REC}")

Event = tuple[str, int, bytes]
"""("ws", receive wall ns, frame) or (symbol, receive wall ns, REST snapshot body)."""


# -- recorded data -------------------------------------------------------------------------------------------------


def read_futures() -> list[Event]:
    """``BINANCE_FUTURES.ws.1.0`` with the REST snapshots of ``BINANCE_FUTURES.http.0.0``, in receive order (a
    snapshot before a frame received at the same time)."""
    events = []
    for line in (REC / "BINANCE_FUTURES.http.0.0").read_bytes().splitlines():
        url, sep, rest = line.partition(b" -> ")
        if sep:
            t, _, body = rest.partition(b": ")
            symbol = parse_qs(urlsplit(url.decode()).query)["symbol"][0]
            events.append((int(Decimal(t.decode()) * 1_000_000_000), 0, (symbol, body)))
    for line in (REC / "BINANCE_FUTURES.ws.1.0").read_bytes().splitlines():
        if line[:1].isdigit():
            t, _, frame = line.partition(b": ")
            events.append((int(Decimal(t.decode()) * 1_000_000_000), 1, ("ws", frame)))
    events.sort(key=lambda e: e[:2])
    return [(kind, t, body) for t, _, (kind, body) in events]


def read_2024(name: str) -> list[Event]:
    """A hftbacktest capture (``LOCAL_NS RAW_JSON`` lines); its REST snapshot is the line without a stream."""
    symbol = name.split("_")[1].upper()
    with gzip.open(GZ / f"{name}_20240808.gz", "rb") as f:
        lines = [line.rstrip(b"\n").partition(b" ") for line in f]
    return [("ws" if b'"stream"' in body[:12] else symbol, int(t), body) for t, _, body in lines]


def raw_event(frame: bytes) -> bytes:
    """A combined-stream frame's event as a raw single-stream frame: the very bytes of its ``data``."""
    head = b'"data":'
    if not frame.startswith(b'{"stream":') or head not in frame or not frame.endswith(b"}"):
        return frame
    return frame[frame.index(head) + len(head):-1]


def symbols_of(events: list[Event]) -> dict[str, int]:
    syms = sorted({s.decode() for _, _, body in events for s in re.findall(rb'"s":"([A-Z0-9]+)"', body[:400])})
    return {s: i for i, s in enumerate(syms)}


def depth_frames(events: list[Event], symbol: str) -> list[bytes]:
    return [body for kind, _, body in events if kind == "ws" and b"depthUpdate" in body
            and f'"s":"{symbol}"'.encode() in body]


@pytest.fixture(scope="module")
def futures() -> list[Event]:
    return read_futures()


# -- two parsers, depth fast path on and off, on their own real rings ----------------------------------------------


class Side:
    """One Binance parser with books writing through a ``RingEmitter`` into its own real rings."""

    def __init__(self, rings: dict[str, Ring], symbols: dict[str, int], market: str, fast: bool, depth: int = 10,
                 resume=None, stop=None) -> None:
        self.rings = rings
        for ring in rings.values():
            if ring.fill:
                ring.skip(ring.fill)
        self.reports: list[tuple[str, str]] = []
        self.emit = RingEmitter(rings, stop=stop or (lambda: False), resume=resume,
                                report=lambda kind, text: self.reports.append((kind, text)))
        self.parser = BinanceParser(symbols, self.emit, market=market, books=True, depth=depth, fast=fast)

    def event(self, ev: Event, t_mono: int):
        kind, wall, body = ev
        if kind == "ws":
            return self.parser.on_frame(body, t_mono, wall)
        return self.parser.on_snapshot(kind, body, t_mono, wall)

    def take(self) -> dict[str, np.ndarray]:
        """The records published since the last call (t_pub_ns zeroed), released."""
        out = {}
        for kind, ring in self.rings.items():
            recs = ring.read(ring.consumer_pos, ring.fill).copy()
            ring.skip(ring.fill)
            recs["t_pub_ns"] = 0
            out[kind] = recs
        return out

    def state(self) -> tuple:
        e, p = self.emit, self.parser
        books = {}
        for sym, s in p.states.items():
            sync = s.sync
            books[sym] = (s.resync, s.last_seq, sync.synced, sync.last_id, sync._first, sync.buffered, sync.dropped,
                          sync.book.depth, [a.tolist() for a in sync.book.top(1 << 30)])
        return (e.counter_values(), e.counts.records, dict(e.counts.by_kind), e.src_seq, e.t_mono_ns, e.t_wall_ns,
                e.t_wall_ms, e._lat, sorted(e._resync_book), sorted(e.resync), sorted(p.need_snapshot), books,
                self.reports)


class Pair:
    """The same events through a parser with the depth fast path and one without; compared as they go."""

    def __init__(self, rings, symbols: dict[str, int], market: str, **kw) -> None:
        self.on = Side(rings[0], symbols, market, True, **kw)
        self.off = Side(rings[1], symbols, market, False, **kw)
        assert isinstance(self.on.parser._fast_book, FastDepth) and self.off.parser._fast_book is None
        self.books: list[np.ndarray] = []
        self.t = 1_000_000

    @property
    def taken(self) -> int:
        """Book records the fast path published."""
        return self.on.parser._fast_book.taken

    def feed(self, events: list[Event]) -> None:
        """Feed ``events`` to both, comparing every CHUNK events and at the end."""
        for k in range(0, len(events), CHUNK):
            for ev in events[k:k + CHUNK]:
                self.t += 1
                a = self.on.event(ev, self.t)
                b = self.off.event(ev, self.t)
                assert a == b
            self.check()

    def frames(self, frames: list[bytes], wall: int = 1_626_992_742_000_000_000) -> None:
        self.feed([("ws", wall + i, f) for i, f in enumerate(frames)])

    def check(self) -> None:
        got, want = self.on.take(), self.off.take()
        for kind in want:
            assert got[kind].tobytes() == want[kind].tobytes(), kind
        self.books.append(want["book"])
        assert self.on.state() == self.off.state()

    @property
    def book_records(self) -> np.ndarray:
        return np.concatenate(self.books) if self.books else np.zeros(0, BOOK)


def make_rings(tag: str, cap: int = 4 * CHUNK) -> tuple[dict[str, Ring], dict[str, Ring]]:
    out = []
    for side in ("on", "off"):
        out.append({kind: Ring.create(f"lowlat-test-depth.{os.getpid()}.{tag}.{side}.{kind}", dtype, cap,
                                      replace=True)
                    for kind, dtype in (("bbo", BBO), ("trade", TRADE), ("book", BOOK))})
    return out[0], out[1]


def close_rings(rings) -> None:
    for side in rings:
        for ring in side.values():
            ring.close()
            Ring.unlink(ring.name)


@pytest.fixture(scope="module")
def rings():
    r = make_rings("main")
    yield r
    close_rings(r)


# -- (1) every recorded depth frame --------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [False, True], ids=["combined", "raw"])
def test_futures_recorded(rings, futures, raw) -> None:
    """The whole 2021 USD-M session (all streams, snapshots when they were received), combined and raw frames."""
    events = [(k, t, raw_event(b) if k == "ws" else b) for k, t, b in futures] if raw else futures
    pair = Pair(rings, symbols_of(futures), "usdm")
    pair.feed(events)
    books = pair.book_records
    depth = sum(k == "ws" and b"depthUpdate" in b for k, t, b in futures)
    assert len(books) > 0.95 * depth > 700
    assert pair.taken > 0.95 * len(books)  # the rest: first diffs after a snapshot, and the snapshots' records
    assert not pair.on.emit.counts.by_kind and pair.on.emit.counts.gaps == 0


def test_snapshots_first(rings, futures) -> None:
    """As ``bench feeds`` replays it: every snapshot, then every frame. The diffs older than a snapshot are discarded
    and the first one after it applied by the fast path too."""
    pair = Pair(rings, symbols_of(futures), "usdm")
    pair.feed([ev for ev in futures if ev[0] != "ws"])
    pair.feed([ev for ev in futures if ev[0] == "ws"])
    fast = pair.on.parser._fast_book
    depth = sum(k == "ws" and b"depthUpdate" in b for k, t, b in futures)
    assert fast.discarded > 5 and fast.taken + fast.discarded > 0.99 * depth
    assert len(pair.book_records) == 4 + fast.taken + 2  # the snapshots', and two diffs that grow a book


@pytest.mark.parametrize("name", ["usdm_btcusdt", "usdm_ethusdt", "spot_btcusdt", "spot_ethusdt"])
def test_2024_recorded(rings, name) -> None:
    """The 2024 BTC / ETH sessions: USD-M depth@0ms (~70 levels a frame, books of thousands of levels) and spot
    depth@100ms, every frame of every stream."""
    events = read_2024(name)
    pair = Pair(rings, symbols_of(events[:100]), name.split("_")[0])
    pair.feed(events)
    depth = sum(k == "ws" and b"depthUpdate" in b for k, t, b in events)
    assert pair.taken > 0.99 * depth > 3000
    assert not pair.on.emit.counts.by_kind


def test_2024_raw_frames(rings) -> None:
    events = [(k, t, raw_event(b) if k == "ws" else b) for k, t, b in read_2024("usdm_btcusdt")[:20_000]]
    pair = Pair(rings, {"BTCUSDT": 0}, "usdm")
    pair.feed(events)
    assert pair.taken > 0.99 * sum(k == "ws" and b"depthUpdate" in b for k, t, b in events)


# -- (2) mutated frames --------------------------------------------------------------------------------------------


def _dump(obj, ws: list[str], dup: str | None) -> str:
    """JSON text of ``obj`` (dicts keep their order) with whitespace from ``ws`` around tokens; ``dup``: a key
    written twice (the second time with its value again)."""
    w = itertools.cycle(ws)
    if isinstance(obj, dict):
        items = list(obj.items())
        if dup is not None and dup in obj:
            items.append((dup, obj[dup]))
        body = ",".join(f"{next(w)}{json.dumps(k)}{next(w)}:{next(w)}{_dump(v, ws, dup)}{next(w)}" for k, v in items)
        return "{" + body + next(w) + "}"
    if isinstance(obj, list):
        return "[" + ",".join(f"{next(w)}{_dump(v, ws, dup)}{next(w)}" for v in obj) + next(w) + "]"
    return json.dumps(obj)


LEVEL_VALUES = [
    "1e5", "1E-3", "-1", "-0", "+5", "NaN", "Infinity", "-Infinity", "", " 1.5", "1.5 ", "1" * 30,
    "0." + "0" * 30 + "1", "9007199254740993", "12345678901234567890", "0.10000000000000000000000000000", "00.5",
    ".5", "5.", "0", "0.000", "0x1F", "1_0", "\u00e9", "\\u0031", "7.6110", "99999", "0.0001", 1.5, 2, 0, -1.5,
    1e400, 10**20, True, None, [], ["1"], {"a": 1},
]
_SPELLINGS = [lambda v: v + "000", lambda v: v + "0" * 20, lambda v: float(v), lambda v: v.rstrip("0"),
              lambda v: "0" + v, lambda v: v.replace(".", "")]
"""Other ways to write a level's value (the same number, or another one, or not a JSON number)."""
ID_VALUES = [-1, 0, 10**18, 10**19, 2**63, 2**64, -(2**63) - 1, "600859600917", 1.0, None, True]


def _fresh(values: list) -> st.SearchStrategy:
    """One of ``values``, copied: later mutations must not change the strategy's own values."""
    return st.sampled_from(values).map(copy.deepcopy)


def _ids(frames: list[bytes]) -> list[int]:
    return [v for f in frames for k in (b'"u":', b'"pu":', b'"U":') for v in map(int, re.findall(k + rb"(\d+)", f))]


@st.composite
def mutated(draw, base: list[bytes]) -> list[bytes]:
    """The first frames of ``base`` (recorded depth frames of one symbol), reordered, repeated, dropped and mutated,
    then the next two frames of the stream."""
    n = draw(st.integers(2, 10))
    frames = list(base[:n])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["format", "format", "format", "json", "json", "json", "json", "swap", "repeat",
                                   "drop", "flip", "cut", "insert"]))
        k = draw(st.integers(0, len(frames) - 1))
        f = frames[k]
        if not f:  # cut to nothing before
            continue
        if op in ("format", "json"):  # format: the same event written another way
            frames[k] = mutate_json(draw, f, _ids(base[:n + 2]), semantic=op == "json")
        elif op == "swap":
            j = draw(st.integers(0, len(frames) - 1))
            frames[k], frames[j] = frames[j], frames[k]
        elif op == "repeat":
            frames.insert(draw(st.integers(k, len(frames))), f)
        elif op == "drop" and len(frames) > 1:
            del frames[k]
        elif op == "flip":
            i = draw(st.integers(0, len(f) - 1))
            frames[k] = f[:i] + bytes([draw(st.integers(0, 255))]) + f[i + 1:]
        elif op == "cut":
            frames[k] = f[:draw(st.integers(0, len(f) - 1))]
        elif op == "insert":
            i = draw(st.integers(0, len(f)))
            frames[k] = f[:i] + draw(st.sampled_from([b" ", b"\n", b",", b'"', b"{", b"]", b"0", b"-", b"e", b"\\",
                                                       b"\x00", b"\xff", "\u00e9".encode()])) + f[i:]
    return frames + list(base[n:n + 2])


def mutate_json(draw, frame: bytes, ids: list[int], semantic: bool = True) -> bytes:
    try:
        obj = json.loads(frame.decode())
    except ValueError:  # a frame broken by an earlier mutation
        return frame
    data = obj.get("data", obj) if isinstance(obj, dict) else None
    if not isinstance(data, dict):
        return frame
    for _ in range(draw(st.integers(1, 3)) if semantic else 0):
        op = draw(st.sampled_from(["id", "id", "level", "level", "cross", "shape", "key", "key", "time", "envelope"]))
        if op == "id":
            key = draw(st.sampled_from(["U", "u", "pu"]))
            data[key] = draw(st.one_of(st.sampled_from(ids), st.sampled_from(ID_VALUES),
                                       st.builds(lambda v, d: v + d, st.sampled_from(ids), st.integers(-3, 3))))
        elif op == "level":
            side = data.get(draw(st.sampled_from(["b", "a"])))
            row = side[draw(st.integers(0, len(side) - 1))] if isinstance(side, list) and side else None
            if isinstance(row, list) and len(row) == 2:
                row[draw(st.integers(0, 1))] = draw(_fresh(LEVEL_VALUES))
        elif op == "cross":  # a bid at or above the asks, or an ask below the bids
            price = draw(st.sampled_from(["99999", "100000.5", "7.6150", "0.0001", "0.00000001", "1"]))
            side = data.setdefault(draw(st.sampled_from(["b", "a"])), [])
            if isinstance(side, list):
                side.append([price, draw(st.sampled_from(["1", "0"]))])
        elif op == "shape":
            key = draw(st.sampled_from(["b", "a"]))
            data[key] = draw(_fresh([[], [["1.5", "2", "3"]], [["1.5"]], [{"p": "1"}], [[["1", "2"]]], {}, None, "x",
                                     [["1.5", "2"], []], [["1.5", "2"], ["2.5", "3"]] * 40]))
        elif op == "key":
            keys = list(data)
            if not keys:
                continue
            key = draw(st.sampled_from(keys))
            kind = draw(st.sampled_from(["delete", "rename", "extra", "reorder"]))
            if kind == "delete":
                del data[key]
            elif kind == "rename":
                data[key + draw(st.sampled_from(["x", "_", " "]))] = data.pop(key)
            elif kind == "extra":
                data[draw(st.sampled_from(["x", "T", "id", "code", "stream", "result", "msg"]))] = draw(
                    _fresh(["y", 1, -2.5, None, True, [], {}, [1], {"a": [1]}]))
            else:
                items = {k: data[k] for k in draw(st.permutations(keys))}
                data.clear()
                data.update(items)
        elif op == "time":
            data["E"] = draw(st.sampled_from([0, 1, -1, "1626992741037", 10**19, 9_999_999_999_999, None]))
        elif op == "envelope" and "stream" in obj:
            kind = draw(st.sampled_from(["stream", "order", "extra", "raw"]))
            if kind == "stream":
                obj["stream"] = draw(st.sampled_from(["akrousdt@depth@100ms", "sushiusdt@depth", "x@depth",
                                                      "sushiusdt@depth@5ms", "sushiusdt@bookTicker", "", 5]))
            elif kind == "order":
                obj = {"data": obj["data"], "stream": obj["stream"]}
            elif kind == "extra":
                obj[draw(st.sampled_from(["id", "e", "s", "x"]))] = draw(st.sampled_from(["depthUpdate", 1, None]))
            else:
                obj = data
    if not semantic and draw(st.booleans()):  # the same values in another order, or written another way
        items = {k: data[k] for k in draw(st.permutations(list(data)))}
        data.clear()
        data.update(items)
    if not semantic and draw(st.booleans()):
        for side in (data.get("b"), data.get("a")):
            for row in side if isinstance(side, list) else []:
                j = draw(st.integers(0, 1))
                if isinstance(row, list) and len(row) == 2 and isinstance(row[j], str) and draw(st.booleans()):
                    row[j] = draw(st.sampled_from(_SPELLINGS))(row[j])
    ws = draw(st.lists(st.sampled_from(["", "", "", " ", "\n", "\t", "\r\n "]), min_size=1, max_size=5))
    keys = sorted(set(obj) | (set(data) if isinstance(data, dict) else set()))
    dup = draw(st.one_of(st.none(), st.sampled_from(keys))) if keys else None
    return _dump(obj, ws, dup).encode()


def base(events: list[Event], symbol: str) -> tuple[list[Event], list[bytes]]:
    """``symbol``'s depth frames received before its REST snapshot and the snapshot (they join it: the sync's
    buffer), and its depth frames after it."""
    at = next(i for i, (k, _, _) in enumerate(events) if k == symbol)
    before = [(k, t, b) for k, t, b in events[:at] if k == "ws" and b"depthUpdate" in b
              and f'"s":"{symbol}"'.encode() in b]
    return [*before, events[at]], depth_frames(events[at:], symbol)


@pytest.fixture(scope="module")
def usdm_base(futures) -> tuple[list[Event], list[bytes]]:
    return base(futures, "SUSHIUSDT")


@pytest.fixture(scope="module")
def spot_base() -> tuple[list[Event], list[bytes]]:
    prefix, frames = base(read_2024("spot_btcusdt"), "BTCUSDT")
    return prefix, frames[:400]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.data_too_large,
                                                                    HealthCheck.too_slow])
@given(data=st.data(), market=st.sampled_from(["usdm", "spot"]), raw=st.booleans())
def test_mutated(rings, futures, usdm_base, spot_base, data, market, raw) -> None:
    """Gaps, duplicates, out-of-order ids, exponents, signs, NaN, huge mantissas, crossed books, odd shapes, extra
    and duplicate keys, whitespace, broken bytes: the same records, counters, reports and books either way, and
    never an exception."""
    (prefix, frames), symbols = ((usdm_base, symbols_of(futures)) if market == "usdm"
                                 else (spot_base, {"BTCUSDT": 0, "ETHUSDT": 1}))
    pair = Pair(rings, symbols, market)
    pair.feed(prefix)
    start = data.draw(st.integers(4, len(frames) - 12))
    pair.frames(frames[:start])  # synced in steady state
    window = data.draw(mutated(frames[start:]))
    if raw:
        window = [raw_event(f) for f in window]
    pair.frames(window)


_SAME = [lambda v: v + "000" if "." in v else v, lambda v: v + "0" * 20 if "." in v else v,
         lambda v: v if "e" in repr(float(v)) else float(v), lambda v: v if "e" in repr(float(v)) else repr(float(v))]
"""The same number written another way: more trailing zeros (past 18 digits too), a bare JSON number, the
shortest repr (not in exponent form: the fast path leaves those to the general one)."""


def rewrite(frame: bytes, rng, raw: bool) -> bytes:
    """``frame``'s event written another way: whitespace anywhere, keys in another order, unknown scalar keys,
    decimals spelled otherwise (the same values)."""
    obj = json.loads(frame)
    data = obj["data"]
    if rng.random() < 0.3:
        data["x" + str(rng.randrange(9))] = rng.choice(["y", "", 1, -2.5, 0, None, True, False])
    if rng.random() < 0.5:
        keys = list(data)
        rng.shuffle(keys)
        obj["data"] = data = {k: data[k] for k in keys}
    for side in (data["b"], data["a"]):
        for row in side:
            for j in (0, 1):
                if rng.random() < 0.2:
                    row[j] = rng.choice(_SAME)(row[j])
    ws = [rng.choice(["", "", " ", "\n", "\t", "\r\n  "]) for _ in range(rng.randrange(1, 6))]
    return _dump(data if raw else obj, ws, None).encode()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), market=st.sampled_from(["usdm", "spot"]), raw=st.booleans())
def test_rewritten(rings, futures, usdm_base, spot_base, seed, market, raw) -> None:
    """The same events written other ways are still taken by the fast path, with the same results."""
    (prefix, frames), symbols = ((usdm_base, symbols_of(futures)) if market == "usdm"
                                 else (spot_base, {"BTCUSDT": 0, "ETHUSDT": 1}))
    pair = Pair(rings, symbols, market)
    pair.feed(prefix)
    rng = random.Random(seed)
    out = [rewrite(f, rng, raw) for f in frames[:80]]
    pair.frames(out)
    assert pair.taken > 0.85 * len(out)
    assert not pair.on.emit.counts.by_kind


# -- (3) resync ----------------------------------------------------------------------------------------------------


def snapshot_body(sync) -> bytes:
    """A Binance REST snapshot body holding ``sync``'s whole book at its update id."""
    bids, asks = sync.book.top(1 << 30)

    def levels(a):
        return [[np.format_float_positional(p, trim="-"), np.format_float_positional(q, trim="-")]
                for p, q in a.tolist()]

    return json.dumps({"lastUpdateId": sync.last_id, "bids": levels(bids), "asks": levels(asks)}).encode()


def _sushi(body: bytes) -> bool:
    return body.startswith(b'{"stream":"sushiusdt@depth')


def test_gap_resync_then_fast_again(rings, futures) -> None:
    """After a gap the symbol takes the general path (others stay fast); a new snapshot syncs it, its FLAG_RESYNC
    record comes from the general path, then the fast path takes its diffs again; its book ends as in an
    uninterrupted run."""
    symbols = symbols_of(futures)
    sushi = [i for i, (k, _, b) in enumerate(futures) if k == "ws" and _sushi(b)]
    synced = next(i for i, (k, _, _) in enumerate(futures) if k == "SUSHIUSDT")
    lost = next(i for i in sushi if i > synced + 200)
    at = sushi[sushi.index(lost) + 30]  # the snapshot is taken when this frame has been applied
    ref_rings = make_rings("ref", 1 << 14)
    try:
        ref = Side(ref_rings[0], symbols, "usdm", False)  # the uninterrupted run
        for k, ev in enumerate(futures[:at + 1]):
            ref.event(ev, k)
        body = snapshot_body(ref.parser.states["SUSHIUSDT"].sync)
        for k, ev in enumerate(futures[at + 1:]):
            ref.event(ev, k)
    finally:
        close_rings(ref_rings)
    pair = Pair(rings, symbols, "usdm")
    pair.feed(futures[:lost])
    fast = pair.on.parser._fast_book
    assert pair.taken > 20
    sushi_inst = symbols["SUSHIUSDT"]

    def taken_for_sushi(events) -> int:
        """Feed ``events``; how many SUSHIUSDT diffs the fast path took."""
        n = 0
        for ev in events:
            pair.t += 1
            k0 = pair.taken
            assert pair.on.event(ev, pair.t) == pair.off.event(ev, pair.t)
            n += pair.taken - k0 if _sushi(ev[2]) else 0
        pair.check()
        return n

    assert taken_for_sushi(futures[lost + 1:at + 5]) == 0  # the gap: SUSHIUSDT waits for a snapshot
    assert pair.taken > 0 and "SUSHIUSDT" in pair.on.parser.need_snapshot
    assert pair.on.emit.counts.gaps == 1 and pair.on.emit.counts.resyncs == 1
    pair.feed([("SUSHIUSDT", futures[at + 5][1], body)])
    assert "SUSHIUSDT" not in pair.on.parser.need_snapshot
    flagged = [r for r in pair.books[-1] if r["instrument"] == sushi_inst]
    assert len(flagged) == 1 and flagged[0]["flags"] & FLAG_RESYNC  # from the general path (on_snapshot)
    st_on = pair.on.parser.states["SUSHIUSDT"]
    assert fast.rows[fast.index[id(st_on)], ST_LAST] == st_on.sync.last_id and not st_on.resync
    assert taken_for_sushi(futures[at + 5:]) > 10  # fast again
    final = pair.on.parser.states["SUSHIUSDT"].sync.book.top(1 << 30)
    ref_final = ref.parser.states["SUSHIUSDT"].sync.book.top(1 << 30)
    assert [a.tolist() for a in final] == [a.tolist() for a in ref_final]


def test_emitter_resync_flag(rings, futures) -> None:
    """A FLAG_RESYNC the emitter owes an instrument's book (a reconnect) keeps it off the fast path until its next
    book record, from the general path, carries the flag."""
    symbols = symbols_of(futures)
    pair = Pair(rings, symbols, "usdm")
    half = len(futures) // 2
    pair.feed(futures[:half])
    for side in (pair.on, pair.off):
        side.emit.mark_resync([symbols["SUSHIUSDT"], symbols["CTKUSDT"], 99])
    before = pair.taken
    pair.feed(futures[half:half + 200])
    flagged = pair.books[-1][(pair.books[-1]["flags"] & FLAG_RESYNC) != 0]
    assert sorted(flagged["instrument"].tolist()) == sorted([symbols["SUSHIUSDT"], symbols["CTKUSDT"]])
    assert pair.on.emit._resync_book == {99}
    pair.feed(futures[half + 200:])
    assert pair.taken > before + 100


# -- (4) book growth, and the other ways the general path finishes a frame -----------------------------------------


def test_book_growth(rings, usdm_base, futures) -> None:
    """A diff with more new levels than the book's arrays have room for: the general path grows them (the row
    learns the new arrays), then the fast path goes on in the grown book."""
    prefix, frames = usdm_base
    pair = Pair(rings, symbols_of(futures), "usdm")
    pair.feed(prefix)
    pair.frames(frames[:10])
    st_on = pair.on.parser.states["SUSHIUSDT"]
    cap = st_on.sync.book._lv[0].shape[0]
    obj = json.loads(frames[10])
    many = [[f"{0.0001 * (k + 1):.4f}", "5"] for k in range(cap)]  # far below the bids
    obj["data"]["b"] = obj["data"]["b"] + many
    grown = json.dumps(obj, separators=(",", ":")).encode()
    before = pair.taken
    pair.frames([grown], wall=1_626_992_743_000_000_000)
    assert pair.taken == before  # no room: the general path
    assert st_on.sync.book._lv[0].shape[0] > cap
    row = pair.on.parser._fast_book.rows[pair.on.parser._fast_book.index[id(st_on)]]
    assert row[ST_BIDS] == st_on.sync.book._lv[0].ctypes.data and row[ST_BIDS_CAP] == st_on.sync.book._lv[0].shape[0]
    pair.frames(frames[11:], wall=1_626_992_744_000_000_000)
    assert pair.taken > before + len(frames) // 2
    # and the levels go away again, in one fast frame
    obj = json.loads(frames[-1])
    obj["data"].update(U=obj["data"]["u"] + 1, u=obj["data"]["u"] + 2, pu=obj["data"]["u"])
    obj["data"]["b"] = [[p, "0"] for p, _ in many[:200]]
    pair.frames([json.dumps(obj).encode()], wall=1_626_992_745_000_000_000)
    assert pair.on.parser.states["SUSHIUSDT"].sync.book.depth == pair.off.parser.states["SUSHIUSDT"].sync.book.depth


def test_crossed_book(rings, usdm_base, futures) -> None:
    """A diff that crosses the book: applied (both ways), then the book is known corrupt (the diff's sequence is
    spent, so no later diff can mend it): reported once, nothing published, the symbol waits for a snapshot."""
    prefix, frames = usdm_base
    pair = Pair(rings, symbols_of(futures), "usdm")
    pair.feed(prefix)
    pair.frames(frames[:10])
    obj = json.loads(frames[10])
    obj["data"]["b"].append(["100000", "1"])
    before, published = pair.taken, len(pair.book_records)
    resyncs = pair.on.emit.counts.resyncs
    assert "SUSHIUSDT" not in pair.on.parser.need_snapshot
    pair.frames([json.dumps(obj).encode(), *frames[11:20]], wall=1_626_992_743_000_000_000)
    for side in (pair.on, pair.off):
        assert side.emit.counts.by_kind["crossed_book"] == 1 and "crossed" not in side.emit.counts.by_kind
        assert side.emit.counts.resyncs == resyncs + 1 and "SUSHIUSDT" in side.parser.need_snapshot
    assert pair.taken == before and len(pair.book_records) == published


def test_full_ring_when_stopping(usdm_base, futures) -> None:
    """A full ring: the fast path applies the diff and leaves the record to the general emitter, which waits or
    (stopping) drops it."""
    prefix, frames = usdm_base
    rings = make_rings("full", cap=4)
    try:
        pair = Pair(rings, symbols_of(futures), "usdm", stop=lambda: True)
        for k, f in enumerate(frames[:40]):
            for side in (pair.on, pair.off):
                if k == 0:
                    for ev in prefix:
                        side.event(ev, 1)
                side.parser.on_frame(f, 5 + k, 1_626_992_743_000_000_000 + k)
        assert pair.on.state() == pair.off.state()
        assert pair.on.rings["book"].fill == pair.off.rings["book"].fill == 4
        got, want = pair.on.take(), pair.off.take()
        assert got["book"].tobytes() == want["book"].tobytes()
        assert pair.on.emit.counts.records > 30 and 0 < pair.taken < 4  # the rest: APPLIED, dropped by the emitter
    finally:
        close_rings(rings)


def test_resume_skips(futures) -> None:
    """A restarted replay's RingEmitter skips the book records of frames it had published: so does the fast
    path."""
    rings = make_rings("resume", cap=1 << 12)
    try:
        pair = Pair(rings, symbols_of(futures), "usdm", resume={"book": (700, 0)})
        pair.feed(futures)
        books = pair.book_records
        assert len(books) > 300 and books["src_seq"].min() >= 700  # from frame 700 on (its first 0 skipped)
        assert pair.taken > 0.9 * len(books)
    finally:
        close_rings(rings)


def test_depth_levels(rings, futures) -> None:
    """``depth`` below and above the record's 10 levels, and 0."""
    for depth in (0, 3, 25):
        pair = Pair(rings, symbols_of(futures), "usdm", depth=depth)
        pair.feed(futures)
        assert pair.taken > 500
        assert int(pair.book_records["n_bids"].max()) == min(depth, 10)


# -- (5) calls, bindings, shared state -----------------------------------------------------------------------------


def test_call_wrappers(rings, usdm_base, futures) -> None:
    """The FASTCALL wrapper and numba's entry point (its fallback) give the same results, and the wrapper turns
    anything but (bytes, 3 ints) into NOT_HANDLED, never an exception."""
    prefix, frames = usdm_base
    symbols = symbols_of(futures)
    a, b = Side(rings[0], symbols, "usdm", True), Side(rings[1], symbols, "usdm", True)
    fast = a.parser._fast_book
    assert fast.fn is fastcall(binance_depth) and type(fast.fn).__name__ == "builtin_function_or_method"
    b.parser._fast_book.fn = numba_call(binance_depth)
    for side in (a, b):
        for ev in prefix:
            side.event(ev, 1)
        for k, f in enumerate(frames):
            side.parser.on_frame(f, 2 + k, 1_626_992_743_000_000_000 + k)
    assert a.take()["book"].tobytes() == b.take()["book"].tobytes()
    assert a.state() == b.state() and fast.taken == b.parser._fast_book.taken > 0.9 * len(frames)
    good = frames[60]
    for args in [("x", fast.addr, 1, 2), (bytearray(good), fast.addr, 1, 2), (memoryview(good), fast.addr, 1, 2),
                 (None, fast.addr, 1, 2), (good, fast.addr, 1.5, 2), (good, fast.addr, 2**70, 2), (good,), (),
                 (good, fast.addr, 1, 2, 3)]:
        assert fast.fn(*args) == NOT_HANDLED, args
        if len(args) == 4 and not isinstance(args[0], bytes):
            assert b.parser._fast_book.fn(*args) == NOT_HANDLED, args


def test_non_bytes_frames(rings, usdm_base, futures) -> None:
    prefix, frames = usdm_base
    pair = Pair(rings, symbols_of(futures), "usdm")
    pair.feed(prefix)
    pair.frames([bytearray(f) for f in frames[:10]] + [memoryview(f) for f in frames[10:20]])
    assert pair.taken == 0 and len(pair.book_records) >= 15


def test_bindings(futures) -> None:
    """The depth path only with ``fast``, books and a RingEmitter storing books; never for KuCoin."""
    symbols = symbols_of(futures)
    rings = make_rings("bind", cap=64)
    try:
        r = rings[0]
        assert BinanceParser(symbols, RingEmitter(r), market="usdm", books=True)._fast_book is not None
        assert BinanceParser(symbols, RingEmitter(r), market="spot", books=True)._fast_book is not None
        assert BinanceParser(symbols, RingEmitter(r), market="usdm", books=True, fast=False)._fast_book is None
        assert BinanceParser(symbols, RingEmitter(r), market="usdm")._fast_book is None
        assert BinanceParser(symbols, RingEmitter({"bbo": r["bbo"]}), books=True)._fast_book is None
        assert BinanceParser(symbols, ListEmitter(), books=True)._fast_book is None
        assert getattr(KucoinParser({"BTC-USDT": 0}, RingEmitter(r), books=True), "_fast_book", None) is None
    finally:
        close_rings(rings)


def test_shared_state(futures) -> None:
    """A resync replaces the sync: the row follows the new one, the old one keeps a private copy; ids past int64
    stay exact on the general path."""
    rings = make_rings("state", cap=64)
    try:
        p = BinanceParser(symbols_of(futures), RingEmitter(rings[0]), market="usdm", books=True)
        fast = p._fast_book
        st_ = p.states["SUSHIUSDT"]
        old = st_.sync
        old.last_id = 77
        k = fast.index[id(st_)]
        assert fast.rows[k, ST_LAST] == 77
        p.resync("SUSHIUSDT")
        assert st_.sync is not old and fast.syncs[k] is st_.sync and fast.rows[k, ST_LAST] == -1
        old.last_id = 5
        assert fast.rows[k, ST_LAST] == -1 and old.last_id == 5
        st_.resync = False
        assert fast.rows[k, R_RESYNC] == 0
    finally:
        close_rings(rings)
    sync = BinanceUsdmSync()
    empty = np.zeros((0, 2))
    sync.on_snapshot(Snapshot(2**64, empty, empty))
    assert sync.last_id == 2**64 and sync.synced
    assert sync.on_diff(Diff(2**64, 2**64 + 5, 2**64 - 1, empty, empty, None, None, 0)) == "apply"
    assert sync.last_id == 2**64 + 5
    assert sync.on_diff(Diff(1, 2, 2**64 + 5, empty, empty, None, None, 0)) == "apply" and sync.last_id == 2


def test_statuses_are_distinct() -> None:
    assert len({APPLIED, BLOCKED, NOT_HANDLED}) == 3 and max(APPLIED, BLOCKED, NOT_HANDLED) < 0

