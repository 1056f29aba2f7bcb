"""The compiled ticker fast path (``feeds.scan``) against the general parsers it sits in front of.

The general path (msgspec + ``Emitter``) is the reference: with the fast path on, every recorded and every mutated
frame must leave byte-identical ring records and identical counters to the run with it off. Decimals are checked
against Python's ``float(str)`` (and msgspec's lax conversion, which the general path uses). All frames are real
recorded traffic or mutations of it; nothing is mocked (the only instrumentation: a parser subclass that counts
the frames reaching the general parser).
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import msgspec
import numpy as np
import pytest
from conftest import SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.binance_messages import BinanceParser
from feeds.emit import RingEmitter
from feeds.kucoin_messages import KucoinParser
from feeds.scan import NOT_HANDLED, binance_book_ticker, fastcall, kucoin_ticker, numba_call, parse_decimal
from pipeline.records import BBO, BOOK, TRADE
from pipeline.ring import Ring

REC = SHARED / "data" / "recorded"
GZ = REC / "binance_2024-08-08"
GZ_FILES = ["spot_btcusdt_20240808.gz", "spot_ethusdt_20240808.gz", "usdm_btcusdt_20240808.gz",
            "usdm_ethusdt_20240808.gz"]
CHUNK = 4096
"""Frames between ring comparisons (rings hold 4 x CHUNK records)."""

pytestmark = pytest.mark.skipif(not (REC / "KUCOIN.ws.1.0").is_file(), reason=f"recorded data not found in {REC}")


# -- recorded data -------------------------------------------------------------------------------------------------


def read_ws(path: Path) -> list[tuple[int, bytes]]:
    """Received frames ``T: MESSAGE`` of a cryptofeed recording, as (receive wall ns, frame)."""
    out = []
    for line in path.read_bytes().splitlines():
        if line[:1].isdigit():
            t, _, msg = line.partition(b": ")
            out.append((int(Decimal(t.decode()) * 1_000_000_000), msg))
    return out


def read_gz(name: str) -> list[tuple[int, bytes]]:
    """``LOCAL_NS RAW_JSON`` lines of a hftbacktest capture."""
    with gzip.open(GZ / name, "rb") as f:
        return [(int(t), msg) for t, _, msg in (line.rstrip(b"\n").partition(b" ") for line in f)]


def raw_event(frame: bytes) -> bytes:
    """The event of a combined-stream frame as its raw single-stream frame: the very bytes of its ``data``; other
    frames (answers, REST bodies) as they are."""
    head = b'"data":'
    if not frame.startswith(b'{"stream":') or head not in frame or not frame.endswith(b"}"):
        return frame
    return frame[frame.index(head) + len(head):-1]


def kucoin_symbols(frames: list[tuple[int, bytes]]) -> dict[str, int]:
    syms = sorted({t.split(b":", 1)[1].decode() for t in re.findall(rb'"topic":"(/market/[a-z0-9]+:[A-Z0-9-]+)"',
                                                                           b"\n".join(f for _, f in frames))})
    return {s: i for i, s in enumerate(syms)}


def binance_symbols(frames: list[tuple[int, bytes]]) -> dict[str, int]:
    syms = sorted({s.decode() for s in re.findall(rb'"s":"([A-Z0-9]+)"', b"\n".join(f for _, f in frames))})
    return {s: i for i, s in enumerate(syms)}


@pytest.fixture(scope="module")
def kucoin() -> list[tuple[int, bytes]]:
    return read_ws(REC / "KUCOIN.ws.1.0")


@pytest.fixture(scope="module")
def futures() -> list[tuple[int, bytes]]:
    return read_ws(REC / "BINANCE_FUTURES.ws.1.0")


# -- two parsers, fast path on and off, on their own rings ---------------------------------------------------------


class Side:
    """One parser writing through a ``RingEmitter`` into its own real rings; counts the frames its general parser
    sees."""

    def __init__(self, rings: dict[str, Ring], make, fast: bool, resume=None, stop=None) -> None:
        self.rings = rings
        for ring in rings.values():
            if ring.fill:
                ring.skip(ring.fill)
        self.emit = RingEmitter(rings, stop=stop or (lambda: False), resume=resume)
        self.parser = make(self.emit, fast)
        self.slow = 0
        general = self.parser._parse_frame

        def counted(data, t_mono_ns, t_wall_ns):
            self.slow += 1
            return general(data, t_mono_ns, t_wall_ns)

        self.parser._parse_frame = counted

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
        e = self.emit
        return (e.counts, e.src_seq, e.t_mono_ns, e.t_wall_ns, e.t_wall_ms, e._lat, sorted(e.resync),
                {s: st.last_seq for s, st in self.parser.states.items()}, e.counter_values())


class Pair:
    """The same frames through a parser with the fast path and one without; records and counters compared."""

    def __init__(self, rings: tuple[dict[str, Ring], dict[str, Ring]], make, **kw) -> None:
        self.on = Side(rings[0], make, True, **kw)
        self.off = Side(rings[1], make, False, **kw)
        assert self.on.parser._fast is not None and self.off.parser._fast is None
        self.bbo = 0

    def feed(self, frames: list[tuple[int, bytes]], t0: int = 1_000_000) -> None:
        """Feed ``frames`` to both, comparing every CHUNK frames and at the end."""
        for k in range(0, len(frames), CHUNK):
            for j, (wall, raw) in enumerate(frames[k:k + CHUNK], k):
                a = self.on.parser.on_frame(raw, t0 + j, wall)
                b = self.off.parser.on_frame(raw, t0 + j, wall)
                assert a == b
            self.check()

    def check(self) -> None:
        got, want = self.on.take(), self.off.take()
        for kind in want:
            assert got[kind].tobytes() == want[kind].tobytes(), kind
        self.bbo += len(want["bbo"])
        assert self.on.state() == self.off.state()


def make_rings(tag: str, cap: int = 4 * CHUNK) -> tuple[dict[str, Ring], dict[str, Ring]]:
    out = []
    for side in ("on", "off"):
        out.append({kind: Ring.create(f"lowlat-test-fast.{os.getpid()}.{tag}.{side}.{kind}", dtype, cap, replace=True)
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


def kucoin_maker(symbols: dict[str, int]):
    return lambda emit, fast: KucoinParser(symbols, emit, fast=fast)


def binance_maker(symbols: dict[str, int], market: str):
    return lambda emit, fast: BinanceParser(symbols, emit, market=market, fast=fast)


# -- (a) decimals --------------------------------------------------------------------------------------------------

_LAX = msgspec.json.Decoder(float, strict=False)


def _same_float(text: bytes) -> float | None:
    """The fast path's reading of ``text``, checked bit for bit against float() and msgspec's conversions (what
    the general path uses, for a quoted or a bare number)."""
    got = parse_decimal(text)
    if got is not None:
        want = float(text)
        assert got.hex() == want.hex(), (text, got, want)
        assert _LAX.decode(b'"' + text + b'"').hex() == want.hex()  # a numeric string
        assert _LAX.decode(text).hex() == want.hex()  # a bare JSON number
    return got


_PLAIN = re.compile(rb"(0|[1-9][0-9]*)(\.[0-9]+)?")


def recorded_decimals() -> set[bytes]:
    """Every quoted decimal of every recorded frame (prices, sizes, levels of all streams)."""
    out: set[bytes] = set()
    blobs = [(REC / n).read_bytes() for n in ("KUCOIN.ws.1.0", "BINANCE_FUTURES.ws.1.0", "KUCOIN.http.0.0",
                                                "BINANCE_FUTURES.http.0.0")]
    for name in GZ_FILES:
        with gzip.open(GZ / name, "rb") as f:
            blobs.append(f.read())
    for blob in blobs:
        out.update(re.findall(rb'"(-?[0-9][0-9.eE+-]*)"', blob))
    return out


def test_decimals_of_every_recorded_frame() -> None:
    values = recorded_decimals()
    assert len(values) > 50_000
    taken = 0
    for text in values:
        got = _same_float(text)
        if got is not None:
            taken += 1
        else:  # left to the general parser: only what the scanner does not take by design
            digits = text.lstrip(b"0.").replace(b".", b"")
            assert not _PLAIN.fullmatch(text) or len(digits) > 15, text
    assert taken > 0.99 * len(values)


def test_decimal_edges() -> None:
    cases = {b"0": 0.0, b"0.0": 0.0, b"1": 1.0, b"0.1": 0.1, b"61837.63000000": 61837.63, b"1200": 1200.0,
             b"9007199254740992": 9007199254740992.0, b"0.000000000000000000001": 1e-21,
             b"100000000000000000000000": 1e23, b"0.10000000000000000000000000000": 0.1,
             b"12345678901234.5": 12345678901234.5}
    for text, want in cases.items():
        assert parse_decimal(text) == want, text
        _same_float(text)
    for text in (b"", b"-1", b"+1", b"NaN", b"nan", b"Infinity", b"inf", b"1e5", b"1E5", b"00.5", b"01", b".5", b"1.",
                 b"1..2", b"1.2.3", b" 1", b"1 ", b"0x10", b"1_000", b"9007199254740993", b"1" * 40,
                 b"0.00000000000000000000001", b"1" + b"0" * 40, b"123456789012345.678",
                 b"0.1000000000000000055511151231257827"):
        assert parse_decimal(text) is None, text  # not taken: the general parser decides


decimal_text = st.one_of(
    st.from_regex(rb"\A(0|[1-9][0-9]{0,25})(\.[0-9]{1,30})?\Z"),
    st.from_regex(rb"\A0\.0{0,25}[1-9][0-9]{0,20}\Z"),
    st.from_regex(rb"\A[1-9][0-9]{0,17}0{0,9}(\.0{1,10})?\Z"),
    st.from_regex(rb"\A[-+]?[0-9.]{0,6}([eE][-+]?[0-9]{0,3})?\Z"),
    st.builds(lambda f: repr(f).encode(), st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(lambda f: f"{f:.{20}f}".encode(), st.floats(min_value=0, max_value=1e9)),
    st.binary(max_size=12),
)


@settings(max_examples=3000, deadline=None)
@given(decimal_text)
def test_decimal_random(text: bytes) -> None:
    got = _same_float(text)
    m = _PLAIN.fullmatch(text)
    if m and len(text.lstrip(b"0.").replace(b".", b"")) <= 15 and len(m.group(2) or b"") <= 17:
        assert got is not None, text  # plain decimals of up to 15 significant digits are taken


# -- (b) every recorded ticker frame -------------------------------------------------------------------------------


def test_kucoin_recorded(rings, kucoin) -> None:
    pair = Pair(rings, kucoin_maker(kucoin_symbols(kucoin)))
    pair.feed(kucoin)
    tickers = sum(b'"subject":"trade.ticker"' in f for _, f in kucoin)
    assert pair.bbo == tickers == 830
    assert pair.on.slow == len(kucoin) - tickers  # every ticker went the fast way
    assert pair.off.slow == len(kucoin)


@pytest.mark.parametrize("raw", [False, True], ids=["combined", "raw"])
def test_binance_futures_recorded(rings, futures, raw) -> None:
    frames = [(t, raw_event(f)) for t, f in futures] if raw else futures
    pair = Pair(rings, binance_maker(binance_symbols(futures), "usdm"))
    pair.feed(frames)
    tickers = sum(b'"e":"bookTicker"' in f for _, f in futures)
    assert pair.bbo == tickers > 600
    assert pair.on.slow == len(frames) - tickers


@pytest.mark.parametrize("raw", [False, True], ids=["combined", "raw"])
@pytest.mark.parametrize("name", GZ_FILES)
def test_binance_2024_recorded(rings, name, raw) -> None:
    frames = read_gz(name)
    if raw:
        frames = [(t, raw_event(f)) for t, f in frames]
    pair = Pair(rings, binance_maker(binance_symbols(frames[:100]), name.split("_")[0]))
    pair.feed(frames)
    tickers = sum(b"@bookTicker" in f for _, f in read_gz(name))
    assert pair.bbo > 0.99 * tickers  # the rest: out-of-order repeats, refused by both
    assert pair.on.slow == len(frames) - pair.bbo


# -- (c) mutated frames --------------------------------------------------------------------------------------------


def _dump(obj, ws: list[str], dup: str | None) -> str:
    """JSON text of ``obj`` (dicts keep their order) with whitespace from ``ws`` around tokens; ``dup``: a key
    written twice (the second time with its value again)."""
    w = iter(ws * 64)
    if isinstance(obj, dict):
        items = list(obj.items())
        if dup is not None and dup in obj:
            items.append((dup, obj[dup]))
        body = ",".join(f"{next(w)}{json.dumps(k)}{next(w)}:{next(w)}{_dump(v, ws, dup)}{next(w)}" for k, v in items)
        return "{" + body + next(w) + "}"
    return json.dumps(obj)


VALUES = [
    "NaN", "-1", "0", "0.0", "-0.5", "1e5", "1E-3", "00.5", ".5", "5.", "Infinity", "", "abc", "1" * 30, "0." + "0" * 30
    + "1", "9007199254740993", "123.456", "0.00000001", "99999999999999999999", "1.5", "12", " 1.5", "1.5 ", "\u00e9",
    "\\u0031", 1.5, -2, 0, 12, 10**20, 1e400, 2.5e-3, True, None, [], {}, [1.5], {"a": 1}, -(10**19), 10**18, 10**19,
    "-0", "+5", "0x1F", "18446744073709551616",
]


INSERTS = [b" ", b"\n", b"\t", b",", b'"', b"{", b"}", b":", b"0", b".", b"-", b"e", b"\\", b"\x00", b"\x1f", b"\x7f",
           b"\xff", b"[]", "\u00e9".encode()]


@st.composite
def mutated(draw, base: list[bytes]) -> list[bytes]:
    """A valid frame (the layout template), then 1-4 mutations of recorded frames, then a valid frame again."""
    first, *rest = draw(st.lists(st.sampled_from(base), min_size=3, max_size=6))
    out = [first]
    for frame in rest[:-1]:
        kind = draw(st.sampled_from(["flip", "cut", "insert", "json", "json", "json"]))
        if kind == "flip":
            i = draw(st.integers(0, len(frame) - 1))
            frame = frame[:i] + bytes([draw(st.integers(0, 255))]) + frame[i + 1:]
        elif kind == "cut":
            frame = frame[:draw(st.integers(0, len(frame) - 1))]
        elif kind == "insert":
            i = draw(st.integers(0, len(frame)))
            frame = frame[:i] + draw(st.sampled_from(INSERTS)) + frame[i:]
        else:
            frame = mutate_json(draw, frame)
        out.append(frame)
    out.append(rest[-1])
    return out


def mutate_json(draw, frame: bytes) -> bytes:
    obj = json.loads(frame)
    targets = [obj] + [v for v in obj.values() if isinstance(v, dict)]
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(targets))
        if not target:
            continue
        keys = list(target)
        op = draw(st.sampled_from(["reorder", "delete", "value", "value", "cross", "seq", "rename"]))
        key = draw(st.sampled_from(keys))
        if op == "reorder":
            order = draw(st.permutations(keys))
            items = {k: target[k] for k in order}
            target.clear()
            target.update(items)
        elif op == "delete":
            del target[key]
        elif op == "value":
            target[key] = draw(st.sampled_from(VALUES))
        elif op == "cross":
            for bid, ask in (("bestBid", "bestAsk"), ("b", "a"), ("bestBidSize", "bestAskSize")):
                if bid in target and ask in target:
                    target[bid], target[ask] = target[ask], target[bid]
        elif op == "seq":
            for k in ("sequence", "u"):
                if k in target and isinstance(target[k], str | int) and str(target[k]).isdigit():
                    v = int(target[k]) + draw(st.integers(-3, 3))
                    target[k] = str(v) if isinstance(target[k], str) else v
        else:
            target[key + draw(st.sampled_from(["", "x", "_"]))] = target.pop(key)
    ws = draw(st.lists(st.sampled_from(["", "", "", " ", "\n", "\t", "\r\n "]), min_size=1, max_size=5))
    keys = sorted(set(obj) | {k for t in targets[1:] for k in t})
    dup = draw(st.one_of(st.none(), st.sampled_from(keys))) if keys else None
    return _dump(obj, ws, dup).encode()


@pytest.fixture(scope="module")
def kucoin_tickers(kucoin) -> list[bytes]:
    return [f for _, f in kucoin if b'"subject":"trade.ticker"' in f][:200]


@pytest.fixture(scope="module")
def futures_tickers(futures) -> list[bytes]:
    return [f for _, f in futures if b'"e":"bookTicker"' in f][:200]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.data_too_large])
@given(data=st.data())
def test_kucoin_mutated(rings, kucoin, kucoin_tickers, data) -> None:
    frames = data.draw(mutated(kucoin_tickers))
    pair = Pair(rings, kucoin_maker(kucoin_symbols(kucoin)))
    pair.feed([(1_700_000_000_000_000_000 + i, f) for i, f in enumerate(frames)])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.data_too_large])
@given(data=st.data(), market=st.sampled_from(["usdm", "spot"]), raw=st.booleans())
def test_binance_mutated(rings, futures, futures_tickers, data, market, raw) -> None:
    frames = data.draw(mutated(futures_tickers))
    if raw:
        frames = [raw_event(f) for f in frames]
    pair = Pair(rings, binance_maker(binance_symbols(futures), market))
    pair.feed([(1_626_992_741_000_000_000 + i, f) for i, f in enumerate(frames)])


# -- emitter states the fast path must respect ---------------------------------------------------------------------


def _ticker_stream(futures, n: int = 300) -> Iterator[tuple[int, bytes]]:
    return iter([(t, f) for t, f in futures if b"bookTicker" in f][:n])


def test_resync_flag(rings, futures) -> None:
    """A pending FLAG_RESYNC keeps its instrument on the general path until its next record carries the flag."""
    symbols = binance_symbols(futures)
    pair = Pair(rings, binance_maker(symbols, "usdm"))
    frames = list(_ticker_stream(futures))
    pair.feed(frames[:50])
    for side in (pair.on, pair.off):
        side.emit.mark_resync([symbols["SUSHIUSDT"], 99])
    pair.feed(frames[50:120])
    for side in (pair.on, pair.off):
        side.emit.mark_resync(symbols.values())
    pair.feed(frames[120:])
    assert pair.on.emit.resync == {99}
    assert pair.on.slow < len(frames) // 2


def test_resume_skips(futures) -> None:
    """A restarted replay's RingEmitter skips the records of frames it had published: so does the fast path."""
    rings = make_rings("resume", cap=1024)
    try:
        pair = Pair(rings, binance_maker(binance_symbols(futures), "usdm"), resume={"bbo": (40, 0)})
        frames = list(_ticker_stream(futures, 100))
        pair.feed(frames)
        assert pair.bbo == len(frames) - 39  # frames 1-39, and the first 0 records of frame 40
    finally:
        close_rings(rings)


def test_full_ring_when_stopping(kucoin) -> None:
    """A full ring: the fast path leaves the frame to the general path, which waits or (stopping) drops it."""
    rings = make_rings("full", cap=4)
    try:
        pair = Pair(rings, kucoin_maker(kucoin_symbols(kucoin)), stop=lambda: True)
        for wall, raw in [(t, f) for t, f in kucoin if b"trade.ticker" in f][:40]:
            for side in (pair.on, pair.off):
                side.parser.on_frame(raw, 5, wall)
        assert pair.on.emit.counts.records == 40
        assert pair.on.state() == pair.off.state()
        got, want = pair.on.take(), pair.off.take()
        assert got["bbo"].tobytes() == want["bbo"].tobytes() and len(want["bbo"]) == 4
    finally:
        close_rings(rings)


def test_call_wrappers(rings, kucoin, futures) -> None:
    """The FASTCALL wrapper and numba's entry point give the same status for every recorded frame, and the wrapper
    turns anything but (bytes, 3 ints) into NOT_HANDLED, never an exception."""
    for fn, frames, make in ((kucoin_ticker, kucoin, kucoin_maker(kucoin_symbols(kucoin))),
                             (binance_book_ticker, futures, binance_maker(binance_symbols(futures), "usdm"))):
        side = Side(rings[0], make, True)
        fast = side.parser._fast
        assert fast.fn is fastcall(fn) and type(fast.fn).__name__ == "builtin_function_or_method"
        other = numba_call(fn)
        for wall, raw in frames[:3000]:
            fast.seqs[:] = -1  # publishes each time: both calls see the same state
            a = fast.fn(raw, fast.addr, 7, wall)
            fast.seqs[:] = -1
            b = other(raw, fast.addr, 7, wall)
            assert a == b
            side.take()
        good = frames[0][1]
        for args in [("x", fast.addr, 2, 3), (bytearray(good), fast.addr, 2, 3), (memoryview(good), fast.addr, 2, 3),
                     (None, fast.addr, 2, 3), (good, fast.addr, 1.5, 3), (good, fast.addr, 2**70, 3),
                     (good, fast.addr, "2", 3), (good,), (), (good, fast.addr, 2, 3, 4)]:
            assert fast.fn(*args) == NOT_HANDLED, args
            if len(args) == 4 and not isinstance(args[0], bytes):
                assert other(*args) == NOT_HANDLED, args
        side.take()


def test_other_emitters_and_inputs(kucoin) -> None:
    """No fast path without a bbo ring; non-bytes frames go to the general parser."""
    from feeds.emit import ListEmitter

    symbols = kucoin_symbols(kucoin)
    assert KucoinParser(symbols, ListEmitter())._fast is None
    assert KucoinParser(symbols, RingEmitter({}))._fast is None
    rings = make_rings("inputs", cap=64)
    try:
        pair = Pair(rings, kucoin_maker(symbols))
        frames = [(t, f) for t, f in kucoin if b"trade.ticker" in f][:20]
        pair.feed([(t, bytearray(f)) for t, f in frames[:10]] + [(t, memoryview(f)) for t, f in frames[10:]])
        assert pair.on.slow == 20 and pair.bbo == 20
    finally:
        close_rings(rings)

