"""Order books and their sync rules (feeds/book.py) against the worked vectors, whole recorded sessions of real
traffic, a plain-Python reference book, generated id streams, and malformed input."""

from __future__ import annotations

import gzip
import json
import math
from collections import defaultdict
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import msgspec
import numpy as np
import pytest
from conftest import SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.book import (
    BinanceSpotSync,
    BinanceUsdmSync,
    Book,
    BookSync,
    Diff,
    KucoinSync,
    Snapshot,
    decode_binance_depth,
    decode_binance_snapshot,
    decode_kucoin_l2,
    decode_kucoin_snapshot,
)

VECTORS = json.loads((SHARED / "reference/test_vectors.json").read_text())["book_sync"]
RECORDED = SHARED / "data/recorded"
SYNCS = {"binance_spot": BinanceSpotSync, "binance_usdm": BinanceUsdmSync, "kucoin_spot": KucoinSync}


# ----------------------------------------------------------------------------------------------------------------
# helpers: the plain-Python reference book, recorded files, frames
# ----------------------------------------------------------------------------------------------------------------


class TwinBook:
    """The reference: a dict of price -> size per side."""

    def __init__(self) -> None:
        self.sides: tuple[dict[float, float], dict[float, float]] = ({}, {})

    def apply(self, side: int, levels) -> None:
        for p, q in np.asarray(levels, dtype=np.float64).reshape(-1, 2).tolist():
            if q == 0.0:
                self.sides[side].pop(p, None)
            else:
                self.sides[side][p] = q

    def load(self, bids, asks) -> None:
        self.clear()
        self.apply(0, bids)
        self.apply(1, asks)

    def clear(self) -> None:
        for s in self.sides:
            s.clear()

    def __len__(self) -> int:
        return len(self.sides[0]) + len(self.sides[1])

    def top(self, n: int) -> tuple[list[list[float]], list[list[float]]]:
        bids = sorted(self.sides[0].items(), reverse=True)[:n]
        asks = sorted(self.sides[1].items())[:n]
        return [list(x) for x in bids], [list(x) for x in asks]

    def best(self) -> tuple[float, float, float, float]:
        bids, asks = self.top(1)
        b = bids[0] if bids else [math.nan, math.nan]
        a = asks[0] if asks else [math.nan, math.nan]
        return b[0], b[1], a[0], a[1]


def same_book(book: Book, twin: TwinBook) -> None:
    bids, asks = book.top(10**9)
    tb, ta = twin.top(10**9)
    assert bids.tolist() == tb and asks.tolist() == ta
    assert len(book) == len(twin)
    assert book.depth == (len(tb), len(ta))
    np.testing.assert_equal(book.best(), twin.best())


def read_recording(path: Path) -> list[tuple[float, str, str]]:
    """(receive time, URL or "" for a websocket frame, body) of every received frame and REST response, in file
    order; connection opens and messages the client sent are skipped."""
    out = []
    for line in path.read_text().splitlines():
        if not line or " <-> " in line or " <- " in line:
            continue
        if " -> " in line:  # URL -> T: BODY
            url, rest = line.split(" -> ", 1)
            t, body = rest.split(": ", 1)
            out.append((float(t), url, body))
        else:  # T: FRAME
            t, frame = line.split(": ", 1)
            out.append((float(t), "", frame))
    return out


class Envelope(msgspec.Struct):
    """Outer frame: Binance combined stream {stream, data} or KuCoin {type, topic, subject, data}."""

    data: msgspec.Raw = msgspec.Raw(b"null")
    stream: str = ""
    topic: str = ""
    subject: str = ""


class BookTicker(msgspec.Struct):
    u: int
    b: str
    B: str
    a: str
    A: str


class KucoinTicker(msgspec.Struct):
    sequence: str
    bestBid: str
    bestBidSize: str
    bestAsk: str
    bestAskSize: str


ENVELOPE = msgspec.json.Decoder(Envelope)


def inner(frame: str | bytes) -> msgspec.Raw:
    return ENVELOPE.decode(frame).data


def floats(rows) -> np.ndarray:
    return np.array([[float(p), float(q)] for p, q in rows], dtype=np.float64).reshape(-1, 2)


def as_snapshot(sync: BookSync) -> Snapshot:
    """A snapshot of a synced book as it stands (the exchange's view at ``sync.last_id``)."""
    bids, asks = sync.book.top(10**9)
    return Snapshot(sync.last_id, bids.copy(), asks.copy(), 0)


# ----------------------------------------------------------------------------------------------------------------
# 1. the worked vectors
# ----------------------------------------------------------------------------------------------------------------


def vector_snapshot(vec: dict) -> Snapshot:
    s = vec["snapshot"]
    last_id = int(s["sequence"]) if "sequence" in s else s["lastUpdateId"]
    return Snapshot(last_id, floats(s["bids_top"]), floats(s["asks_top"]), s.get("E") or s.get("time") or 0)


def vector_diffs(vec: dict) -> list[Diff]:
    decode = decode_kucoin_l2 if vec["exchange"] == "kucoin_spot" else decode_binance_depth
    return [decode(inner(e["raw"])) for e in vec["events_in_arrival_order"]]


def expected_top(e: dict) -> tuple[tuple[float, float, float, float], int]:
    top = e["expected_top_after"]
    bbo = (float(top["bid"]), float(top["bid_size"]), float(top["ask"]), float(top["ask_size"]))
    return bbo, top.get("book_update_id", top.get("book_sequence"))


def cross_check(e: dict) -> tuple[float, float, float, float] | None:
    if "cross_check_bookTicker_same_u" in e:
        f = e["cross_check_bookTicker_same_u"]["raw_fields"]
        return float(f["b"]), float(f["B"]), float(f["a"]), float(f["A"])
    if "cross_check_ticker_same_sequence" in e:
        f = e["cross_check_ticker_same_sequence"]["fields"]
        return float(f["bestBid"]), float(f["bestBidSize"]), float(f["bestAsk"]), float(f["bestAskSize"])
    return None


@pytest.mark.parametrize("vec", VECTORS, ids=[v["exchange"] for v in VECTORS])
def test_vector_live(vec: dict) -> None:
    """Snapshot first, then every event live: each action, top and book id as the vector says."""
    sync = SYNCS[vec["exchange"]]()
    assert sync.needs_snapshot
    assert sync.on_snapshot(vector_snapshot(vec)) == []
    assert sync.synced and not sync.needs_snapshot
    checked = 0
    for e, d in zip(vec["events_in_arrival_order"], vector_diffs(vec), strict=True):
        assert d.symbol == vec["symbol"]
        assert sync.on_diff(d) == e["expected_action"].split()[0], e["source_line"]
        if "expected_top_after" in e:
            bbo, last_id = expected_top(e)
            assert sync.book.best() == bbo, e["source_line"]
            assert sync.last_id == last_id
            checked += 1
        if (x := cross_check(e)) is not None:
            assert sync.book.best() == x
    assert checked == sum(e["expected_action"].startswith("apply") for e in vec["events_in_arrival_order"])


@pytest.mark.parametrize("vec", VECTORS, ids=[v["exchange"] for v in VECTORS])
def test_vector_buffered(vec: dict) -> None:
    """Every event buffered before the snapshot arrives: on_snapshot reports the same actions, same final top."""
    sync = SYNCS[vec["exchange"]]()
    diffs = vector_diffs(vec)
    assert [sync.on_diff(d) for d in diffs] == ["buffered"] * len(diffs)
    assert sync.buffered == len(diffs) and not sync.synced
    result = sync.on_snapshot(vector_snapshot(vec))
    events = vec["events_in_arrival_order"]
    assert [d for d, _ in result] == diffs
    assert [a for _, a in result] == [e["expected_action"].split()[0] for e in events]
    assert (sync.book.best(), sync.last_id) == expected_top(events[-1])
    assert sync.synced and sync.buffered == 0


# ----------------------------------------------------------------------------------------------------------------
# 2. whole recorded sessions: book top == the exchange's own BBO stream at equal update id
# ----------------------------------------------------------------------------------------------------------------


def replay(http: Path, ws: Path, make_sync, snapshot_decoder, on_frame) -> tuple[dict, dict, dict]:
    """Run a recorded session in receive-time order, each REST snapshot applied when it was received.
    ``on_frame(envelope, syncs, bbos, actions)`` routes a frame: a diff to its symbol's sync (returns the symbol),
    a BBO frame into ``bbos[symbol][id]`` (returns None). Returns the book's best at every id it stood at, per
    symbol; the BBOs; and every action per symbol."""
    events = [(t, 0, url, body) for t, url, body in read_recording(http)]
    events += [(t, 1, url, body) for t, url, body in read_recording(ws)]
    events.sort(key=lambda e: e[0])  # stable: file order among equal times
    syncs: dict[str, BookSync] = defaultdict(make_sync)
    tops: dict[str, dict[int, tuple]] = defaultdict(dict)
    bbos: dict[str, dict[int, tuple]] = defaultdict(dict)
    actions: dict[str, list[str]] = defaultdict(list)
    for _, kind, url, body in events:
        if kind == 0:
            symbol = parse_qs(urlparse(url).query)["symbol"][0]
            actions[symbol] += [a for _, a in syncs[symbol].on_snapshot(snapshot_decoder(body.encode()))]
        else:
            symbol = on_frame(ENVELOPE.decode(body), syncs, bbos, actions)
            if symbol is None:
                continue
        sync = syncs[symbol]
        if sync.synced:
            tops[symbol][sync.last_id] = sync.book.best()
    return tops, bbos, actions


def usdm_frame(env: Envelope, syncs, bbos, actions) -> str | None:
    if "@depth" in env.stream:
        d = decode_binance_depth(env.data)
        actions[d.symbol].append(syncs[d.symbol].on_diff(d))
        return d.symbol
    if env.stream.endswith("@bookTicker"):
        t = msgspec.json.decode(env.data, type=BookTicker)
        bbos[env.stream.split("@")[0].upper()][t.u] = (float(t.b), float(t.B), float(t.a), float(t.A))
    return None


def kucoin_frame(env: Envelope, syncs, bbos, actions) -> str | None:
    if env.subject == "trade.l2update":
        d = decode_kucoin_l2(env.data)
        actions[d.symbol].append(syncs[d.symbol].on_diff(d))
        return d.symbol
    if env.subject == "trade.ticker":
        t = msgspec.json.decode(env.data, type=KucoinTicker)
        bbo = (float(t.bestBid), float(t.bestBidSize), float(t.bestAsk), float(t.bestAskSize))
        bbos[env.topic.rsplit(":", 1)[1]][int(t.sequence)] = bbo
    return None


def check_session(tops: dict, bbos: dict, actions: dict, snapshot_symbols: set[str]) -> dict[str, int]:
    compared: dict[str, int] = {}
    for symbol in snapshot_symbols:
        assert "gap" not in actions[symbol], symbol
        assert actions[symbol].count("apply") > 0, symbol
        common = sorted(set(tops[symbol]) & set(bbos[symbol]))
        mismatches = [(i, tops[symbol][i], bbos[symbol][i]) for i in common if tops[symbol][i] != bbos[symbol][i]]
        assert not mismatches, (symbol, mismatches[:3])
        compared[symbol] = len(common)
    return compared


def test_recorded_usdm_session() -> None:
    """BINANCE_FUTURES: REST snapshots + combined stream; book top == bookTicker at every equal u."""
    http, ws = RECORDED / "BINANCE_FUTURES.http.0.0", RECORDED / "BINANCE_FUTURES.ws.1.0"
    tops, bbos, actions = replay(http, ws, BinanceUsdmSync, decode_binance_snapshot, usdm_frame)
    symbols = {parse_qs(urlparse(url).query)["symbol"][0] for _, url, _ in read_recording(http)}
    assert symbols == {"SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"}
    compared = check_session(tops, bbos, actions, symbols)
    assert compared["SUSHIUSDT"] >= 12  # EXCHANGES.md §3.2: 12/12
    assert all(n > 0 for n in compared.values()), compared


def test_recorded_kucoin_session() -> None:
    """KUCOIN: REST snapshots + level2 stream; book top == trade.ticker BBO at every equal sequence."""
    http, ws = RECORDED / "KUCOIN.http.0.0", RECORDED / "KUCOIN.ws.1.0"
    tops, bbos, actions = replay(http, ws, KucoinSync, decode_kucoin_snapshot, kucoin_frame)
    symbols = {parse_qs(urlparse(url).query)["symbol"][0] for _, url, _ in read_recording(http)}
    assert len(symbols) == 9
    compared = check_session(tops, bbos, actions, symbols)
    assert sum(compared.values()) >= 100, compared
    assert all(n > 0 for n in compared.values()), compared


@pytest.mark.parametrize("name", ["usdm_btcusdt", "usdm_ethusdt", "spot_btcusdt", "spot_ethusdt"])
def test_recorded_binance_2024(name: str) -> None:
    """Real 2024 BTC/ETH sessions (spot depth@100ms, USD-M depth@0ms with books of thousands of levels): one
    snapshot, no gap, and the book's top equals bookTicker at every equal u."""
    sync = BinanceUsdmSync() if name.startswith("usdm") else BinanceSpotSync()
    tops, bbos, actions = {}, {}, []
    with gzip.open(RECORDED / f"binance_2024-08-08/{name}_20240808.gz", "rb") as f:
        for line in f:
            body = line.split(b" ", 1)[1]
            env = ENVELOPE.decode(body)
            if not env.stream:  # the REST snapshot, recorded in line
                actions += [a for _, a in sync.on_snapshot(decode_binance_snapshot(body))]
            elif "@depth" in env.stream:
                actions.append(sync.on_diff(decode_binance_depth(env.data)))
            elif env.stream.endswith("@bookTicker"):
                t = msgspec.json.decode(env.data, type=BookTicker)
                bbos[t.u] = (float(t.b), float(t.B), float(t.a), float(t.A))
                continue
            else:
                continue
            if sync.synced:
                tops[sync.last_id] = sync.book.best()
    assert "gap" not in actions and actions.count("apply") > 3000 and sync.synced
    common = set(tops) & set(bbos)
    assert len(common) > 500
    assert all(tops[u] == bbos[u] for u in common)


DECIMAL = st.from_regex(r"(0|[1-9][0-9]{0,19})(\.[0-9]{1,24})?", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(price=DECIMAL, size=DECIMAL, seq=st.integers(0, 2**63 - 1))
def test_decimal_strings_exact(price: str, size: str, seq: int) -> None:
    """Any plain decimal string decodes to exactly float(text), whichever path parses it (a price-0 entry is
    a no-op row [0, 0])."""
    want = [[float(price), float(size) if float(price) else 0.0]]
    d = decode_binance_depth(f'{{"s":"X","U":1,"u":1,"b":[["{price}","{size}"]],"a":[]}}'.encode())
    assert d.bids.tolist() == want
    k = decode_kucoin_l2(f'{{"sequenceStart":1,"sequenceEnd":1,"symbol":"X","changes":{{"bids":[],'
                         f'"asks":[["{price}","{size}","{seq}"]]}}}}'.encode())
    assert k.asks.tolist() == want and k.ask_seq.tolist() == [seq]


def test_decoders_exact_on_recorded_data() -> None:
    """Every price and size of every recorded diff and snapshot decodes to exactly float(its string)."""
    n = 0
    for path in ("BINANCE_FUTURES.ws.1.0", "KUCOIN.ws.1.0"):
        for _, _, body in read_recording(RECORDED / path):
            env = ENVELOPE.decode(body)
            if "@depth" not in env.stream and env.subject != "trade.l2update":
                continue
            raw = json.loads(bytes(env.data))
            if env.subject:
                d = decode_kucoin_l2(env.data)
                ch = raw["changes"]
                want = [[float(p), float(q) if float(p) else 0.0] for p, q, _ in ch["bids"]], [
                    [float(p), float(q) if float(p) else 0.0] for p, q, _ in ch["asks"]]
                assert d.bid_seq.tolist() == [int(s) for _, _, s in ch["bids"]]
                assert d.ask_seq.tolist() == [int(s) for _, _, s in ch["asks"]]
                assert (d.first, d.last, d.prev, d.ts_ms) == (raw["sequenceStart"], raw["sequenceEnd"], -1, 0)
            else:
                d = decode_binance_depth(env.data)
                want = [[float(p), float(q)] for p, q in raw["b"]], [[float(p), float(q)] for p, q in raw["a"]]
                ids = (raw["U"], raw["u"], raw["pu"], raw["E"], raw["s"])
                assert (d.first, d.last, d.prev, d.ts_ms, d.symbol) == ids
                assert d.bid_seq is None and d.ask_seq is None
            assert (d.bids.tolist(), d.asks.tolist()) == want
            assert d.bids.dtype == np.float64 and d.bids.shape == (len(want[0]), 2)
            n += 1
    assert n == 764 + 3853
    for path, decode in (("BINANCE_FUTURES.http.0.0", decode_binance_snapshot),
                         ("KUCOIN.http.0.0", decode_kucoin_snapshot)):
        for _, _, body in read_recording(RECORDED / path):
            s = decode(body.encode())
            raw = json.loads(body)
            raw = raw.get("data", raw)
            assert s.bids.tolist() == [[float(p), float(q)] for p, q in raw["bids"]]
            assert s.asks.tolist() == [[float(p), float(q)] for p, q in raw["asks"]]
            assert s.last_id == int(raw.get("lastUpdateId", raw.get("sequence")))
            assert s.ts_ms == raw.get("E", raw.get("time"))


def test_decoders_general_path() -> None:
    """Number forms the fast scanner leaves to msgspec's lax decoding still come out as float(text)."""
    d = decode_binance_depth(b'{"e":"depthUpdate","E":5,"s":"X","U":1,"u":2,"b":[["1e-5","2.5E3"],'
                             b'["0.12345678901234567890","123456789012345678"]],"a":[ [ "7" , "0" ] ]}')
    assert d.bids.tolist() == [[1e-5, 2500.0], [0.12345678901234567890, 123456789012345678.0]]
    assert d.asks.tolist() == [[7.0, 0.0]]
    assert (d.first, d.last, d.prev, d.ts_ms, d.symbol) == (1, 2, -1, 5, "X")
    k = decode_kucoin_l2(b'{"sequenceStart":"3","sequenceEnd":4,"symbol":"A-B","time":9,'
                         b'"changes":{"asks":[["0","5","3"],["1.5","2","4"]],"bids":[]}}')
    assert k.asks.tolist() == [[0.0, 0.0], [1.5, 2.0]] and k.ask_seq.tolist() == [3, 4]
    assert k.bids.shape == (0, 2) and k.bid_seq.tolist() == [] and k.ts_ms == 9
    k2 = decode_kucoin_l2(b'{"sequenceStart":3,"sequenceEnd":4,"symbol":"A-B",'
                          b'"changes":{"asks":[["0","5","3"],["1.5e0","2","4"]],"bids":[]}}')
    assert k2.asks.tolist() == k.asks.tolist() and k2.ask_seq.tolist() == [3, 4]


# ----------------------------------------------------------------------------------------------------------------
# 3. the compiled book against the reference
# ----------------------------------------------------------------------------------------------------------------

PRICE = st.one_of(st.integers(1, 30).map(lambda k: k * 0.5),
                  st.floats(0.01, 1e6, allow_nan=False, allow_infinity=False))
SIZE = st.one_of(st.just(0.0), st.floats(1e-8, 1e6, allow_nan=False, allow_infinity=False))
LEVELS = st.lists(st.tuples(PRICE, SIZE), max_size=12).map(lambda x: np.array(x, dtype=np.float64).reshape(-1, 2))
OPS = st.lists(st.one_of(
    st.tuples(st.just("apply"), st.integers(0, 1), LEVELS),
    st.tuples(st.just("update"), LEVELS, LEVELS),
    st.tuples(st.just("load"), LEVELS, LEVELS),
    st.tuples(st.just("clear")),
), max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, capacity=st.integers(1, 8), n=st.integers(0, 5))
def test_book_matches_reference(ops: list, capacity: int, n: int) -> None:
    book, twin = Book(capacity), TwinBook()
    same_book(book, twin)
    for op in ops:
        if op[0] == "apply":
            book.apply(op[1], op[2])
            twin.apply(op[1], op[2])
        elif op[0] == "update":
            book.update(op[1], op[2])
            twin.apply(0, op[1])
            twin.apply(1, op[2])
        elif op[0] == "load":
            book.load(op[1], op[2])
            twin.load(op[1], op[2])
        else:
            book.clear()
            twin.clear()
        same_book(book, twin)
        bids, asks = book.top(n)
        assert (bids.tolist(), asks.tolist()) == twin.top(n)


def test_book_basics() -> None:
    book = Book(2)
    assert len(book) == 0 and all(math.isnan(x) for x in book.best())
    book.apply(0, np.array([[10.0, 1.0], [9.0, 2.0], [11.0, 3.0]]))
    book.apply(1, [[12.0, 1.0], [13.0, 0.0]])  # deleting an absent level is a no-op
    assert book.best() == (11.0, 3.0, 12.0, 1.0) and len(book) == 4
    bids, asks = book.top(2)
    assert bids.tolist() == [[11.0, 3.0], [10.0, 1.0]] and asks.tolist() == [[12.0, 1.0]]
    book.apply(1, np.array([[12.0, 0.0]]))
    assert math.isnan(book.best()[2]) and book.best()[:2] == (11.0, 3.0)
    with pytest.raises(ValueError):
        book.apply(2, [[1.0, 1.0]])
    with pytest.raises(ValueError):
        book.apply(0, [[1.0, 1.0, 1.0]])
    with pytest.raises(ValueError):
        book.apply(0, [[math.nan, 1.0]])


# ----------------------------------------------------------------------------------------------------------------
# 4. gaps, snapshots too old, buffer overflow
# ----------------------------------------------------------------------------------------------------------------


def first_apply(vec: dict) -> int:
    return next(i for i, e in enumerate(vec["events_in_arrival_order"]) if e["expected_action"].startswith("apply"))


def joined_first(vec: dict) -> str:
    """The action on a diff whose last id equals the snapshot's: USD-M applies it (drops only u < lastUpdateId),
    spot and KuCoin discard it."""
    return "apply" if vec["exchange"] == "binance_usdm" else "discard"


@pytest.mark.parametrize("vec", VECTORS, ids=[v["exchange"] for v in VECTORS])
def test_gap_and_resync(vec: dict) -> None:
    """A stream missing one diff: "gap" at the next one, book dropped, later diffs buffered; a fresh snapshot (the
    uninterrupted book at a later id, as the exchange would serve it) resyncs to exactly the uninterrupted book."""
    diffs = vector_diffs(vec)
    skip = first_apply(vec) + 2
    ref = SYNCS[vec["exchange"]]()
    ref.on_snapshot(vector_snapshot(vec))
    sync = SYNCS[vec["exchange"]]()
    sync.on_snapshot(vector_snapshot(vec))
    resync_at = skip + 3
    fresh = None
    for i, d in enumerate(diffs):
        ref.on_diff(d)
        if i == resync_at:
            fresh = as_snapshot(ref)
        if i == skip:
            continue
        action = sync.on_diff(d)
        if i < skip:
            assert action != "gap"
        elif i == skip + 1:
            assert action == "gap"
            assert not sync.synced and sync.needs_snapshot and len(sync.book) == 0 and sync.last_id == -1
            assert sync.buffered == 1
        else:
            assert action == "buffered"
    assert fresh is not None
    result = sync.on_snapshot(fresh)
    # USD-M keeps the diff whose u == lastUpdateId (drops only u < lastUpdateId); the others drop u <= it
    kept = 1 if vec["exchange"] == "binance_usdm" else 0
    assert [a for _, a in result] == ["discard"] * (resync_at - skip - kept) + ["apply"] * (
        len(diffs) - 1 - resync_at + kept)
    assert sync.synced and sync.last_id == ref.last_id == diffs[-1].last
    assert (sync.book.top(10**9)[0].tolist(), sync.book.top(10**9)[1].tolist()) == (
        ref.book.top(10**9)[0].tolist(), ref.book.top(10**9)[1].tolist())


@pytest.mark.parametrize("vec", VECTORS, ids=[v["exchange"] for v in VECTORS])
def test_snapshot_too_old(vec: dict) -> None:
    """Buffering started after the diff that the snapshot needs next: on_snapshot reports "gap", stays unsynced,
    keeps the buffer, and a newer snapshot then joins it."""
    diffs = vector_diffs(vec)
    start = first_apply(vec) + 1
    sync = SYNCS[vec["exchange"]]()
    for d in diffs[start:]:
        assert sync.on_diff(d) == "buffered"
    result = sync.on_snapshot(vector_snapshot(vec))
    assert [a for _, a in result] == ["gap"] + ["buffered"] * (len(diffs) - start - 1)
    assert not sync.synced and sync.needs_snapshot and len(sync.book) == 0
    assert sync.buffered == len(diffs) - start
    ref = SYNCS[vec["exchange"]]()
    ref.on_snapshot(vector_snapshot(vec))
    for d in diffs[: start + 1]:
        ref.on_diff(d)
    result = sync.on_snapshot(as_snapshot(ref))  # the book as of the first buffered diff's last id
    assert [a for _, a in result] == [joined_first(vec)] + ["apply"] * (len(diffs) - start - 1)
    for d in diffs[start + 1:]:
        ref.on_diff(d)
    assert sync.book.best() == ref.book.best() and sync.last_id == ref.last_id


@pytest.mark.parametrize("vec", VECTORS, ids=[v["exchange"] for v in VECTORS])
def test_buffer_overflow(vec: dict) -> None:
    """A full buffer drops its oldest diff: a snapshot that needed the dropped diff gives "gap" (refetch); one
    taken after it joins."""
    diffs = vector_diffs(vec)
    keep = len(diffs) - first_apply(vec) - 1  # the first applicable diff will be dropped
    sync = SYNCS[vec["exchange"]](max_buffer=keep)
    assert [sync.on_diff(d) for d in diffs] == ["buffered"] * len(diffs)
    assert sync.buffered == keep and sync.dropped == len(diffs) - keep
    assert sync.on_snapshot(vector_snapshot(vec))[0][1] == "gap"
    assert sync.needs_snapshot
    ref = SYNCS[vec["exchange"]]()
    ref.on_snapshot(vector_snapshot(vec))
    for d in diffs[: first_apply(vec) + 2]:
        ref.on_diff(d)
    assert [a for _, a in sync.on_snapshot(as_snapshot(ref))] == [joined_first(vec)] + ["apply"] * (keep - 1)
    for d in diffs[first_apply(vec) + 2:]:
        ref.on_diff(d)
    assert sync.book.best() == ref.book.best() and sync.last_id == ref.last_id


def test_usdm_rules_differ_from_spot() -> None:
    """USD-M chains by pu (U may jump) and keeps u == lastUpdateId; spot chains by U == u + 1."""
    empty = np.empty((0, 2))
    one = np.array([[1.0, 1.0]])
    snap = Snapshot(100, one, empty)
    usdm, spot = BinanceUsdmSync(), BinanceSpotSync()
    usdm.on_snapshot(snap)
    spot.on_snapshot(snap)
    assert usdm.on_diff(Diff(90, 100, 80, one, empty, None, None, 0)) == "apply"  # u == lastUpdateId: kept
    assert spot.on_diff(Diff(90, 100, 80, one, empty, None, None, 0)) == "discard"  # u <= lastUpdateId
    assert usdm.on_diff(Diff(105, 110, 100, one, empty, None, None, 0)) == "apply"  # U jumps, pu == prev u
    assert spot.on_diff(Diff(101, 110, -1, one, empty, None, None, 0)) == "apply"
    assert usdm.on_diff(Diff(105, 110, 100, one, empty, None, None, 0)) == "discard"  # stale duplicate
    assert usdm.on_diff(Diff(111, 120, 109, one, empty, None, None, 0)) == "gap"  # pu != prev u
    assert spot.on_diff(Diff(112, 120, -1, one, empty, None, None, 0)) == "gap"  # U != prev u + 1
    usdm2 = BinanceUsdmSync()
    usdm2.on_snapshot(snap)
    assert usdm2.on_diff(Diff(101, 110, 95, one, empty, None, None, 0)) == "gap"  # first: U > lastUpdateId


# generated id streams: each event changes one level; diffs carry the net change of consecutive events


@st.composite
def streams(draw, venue: str):
    n_events = draw(st.integers(1, 40))
    ids, i = [], draw(st.integers(1, 1000))
    for _ in range(n_events):
        i += draw(st.integers(1, 4)) if venue == "binance_usdm" else 1
        ids.append(i)
    events = [(ids[k], draw(st.integers(0, 1)), draw(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])),
               draw(st.sampled_from([0.0, 1.0, 2.0, 3.0]))) for k in range(n_events)]
    cuts = sorted(set(draw(st.lists(st.integers(1, n_events - 1), max_size=n_events))) if n_events > 1 else [])
    chunks = [events[a:b] for a, b in zip([0, *cuts], [*cuts, n_events], strict=True)]
    diffs, prev = [], draw(st.integers(0, ids[0] - 1))
    for chunk in chunks:
        sides: list = [[], []]
        seqs: list = [[], []]
        for eid, side, p, q in chunk:
            if venue == "kucoin_spot":  # every change with its own sequence; price 0 only advances
                sides[side].append([p, q if p else 0.0])
                seqs[side].append(eid)
            elif p:  # Binance: net absolute size per price
                sides[side] = [r for r in sides[side] if r[0] != p] + [[p, q]]
        arrays = [np.array(s, dtype=np.float64).reshape(-1, 2) for s in sides]
        seq_arrays = [np.array(s, dtype=np.int64) for s in seqs] if venue == "kucoin_spot" else [None, None]
        diffs.append(Diff(chunk[0][0], chunk[-1][0], prev if venue == "binance_usdm" else -1, *arrays, *seq_arrays,
                          0))
        prev = chunk[-1][0]
    snap_id = draw(st.sampled_from(ids))
    start = draw(st.integers(0, len(diffs) - 1))  # first diff seen after subscribing
    arrive = draw(st.integers(start, len(diffs)))  # snapshot arrives after diffs[start:arrive] were buffered
    return events, diffs, snap_id, start, arrive


def state_at(events, last_id: int) -> TwinBook:
    twin = TwinBook()
    for eid, side, p, q in events:
        if eid <= last_id and p:
            twin.apply(side, [[p, q]])
    return twin


def joins(venue: str, d: Diff, snap_id: int) -> bool:
    """Whether diff ``d`` can follow a snapshot at ``snap_id`` by the venue's first-diff rule."""
    if venue == "binance_usdm":
        return d.first <= snap_id <= d.last
    return d.first <= snap_id + 1 <= d.last


@pytest.mark.parametrize("venue", sorted(SYNCS))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_streams(venue: str, data) -> None:
    """For any stream, subscription point and snapshot point: the sync either joins and then always equals the
    reference book, or reports "gap" exactly when the first diff after the snapshot cannot follow it."""
    events, diffs, snap_id, start, arrive = data.draw(streams(venue))
    twin = state_at(events, snap_id)
    bids, asks = twin.top(10**9)
    sync = SYNCS[venue]()
    for d in diffs[start:arrive]:
        assert sync.on_diff(d) == "buffered"
    actions = [a for _, a in sync.on_snapshot(Snapshot(snap_id, floats(bids), floats(asks)))]
    actions += [sync.on_diff(d) for d in diffs[arrive:]]
    seen = diffs[start:]
    is_old = (lambda d: d.last < snap_id) if venue == "binance_usdm" else (lambda d: d.last <= snap_id)
    first = next((k for k, d in enumerate(seen) if not is_old(d)), None)
    if first is None:  # every diff older than the snapshot
        assert actions == ["discard"] * len(seen) and sync.synced
        same_book(sync.book, twin)
    elif joins(venue, seen[first], snap_id):
        assert actions == ["discard"] * first + ["apply"] * (len(seen) - first)
        same_book(sync.book, state_at(events, diffs[-1].last))
        assert sync.synced and sync.last_id == diffs[-1].last
    else:
        assert actions[: first + 1] == ["discard"] * first + ["gap"]
        assert set(actions[first + 1:]) <= {"buffered"} and not sync.synced and len(sync.book) == 0


# ----------------------------------------------------------------------------------------------------------------
# 5. malformed input: ValueError with a one-line message, never anything else
# ----------------------------------------------------------------------------------------------------------------

GOOD_DEPTH = (b'{"e":"depthUpdate","E":1,"T":1,"s":"X","U":1,"u":2,"pu":0,"b":[["1.5","2"]],"a":[["1.6","3"]]}')
GOOD_L2 = b'{"sequenceStart":1,"sequenceEnd":2,"symbol":"A-B","changes":{"asks":[["1.5","2","1"]],"bids":[]}}'
GOOD_BSNAP = b'{"lastUpdateId":7,"E":1,"T":1,"bids":[["1.5","2"]],"asks":[["1.6","3"]]}'
GOOD_KSNAP = b'{"code":"200000","data":{"time":1,"sequence":"7","bids":[["1.5","2"]],"asks":[["1.6","3"]]}}'
COMMON_BAD = [b"", b"   ", b"not json", b"[]", b"{}", b"null", b"1", b'"x"', b"{", b'{"a":1}garbage', b"\xff\xfe"]
BAD = {
    decode_binance_depth: [
        *COMMON_BAD,
        GOOD_DEPTH[:-1],
        GOOD_DEPTH.replace(b'"U":1,', b""),
        GOOD_DEPTH.replace(b'"u":2', b'"u":"two"'),
        GOOD_DEPTH.replace(b'"s":"X"', b'"s":5'),
        GOOD_DEPTH.replace(b'[["1.5","2"]]', b'"1.5"'),
        GOOD_DEPTH.replace(b'[["1.5","2"]]', b'[["1.5"]]'),
        GOOD_DEPTH.replace(b'[["1.5","2"]]', b'[["1.5","2","3"]]'),
        GOOD_DEPTH.replace(b'[["1.5","2"]]', b'[["abc","2"]]'),
        GOOD_DEPTH.replace(b'[["1.5","2"]]', b'[["nan","2"]]'),
        GOOD_DEPTH.replace(b'[["1.5","2"]]', b'[["inf","2"]]'),
        GOOD_DEPTH.replace(b'[["1.5","2"]]', b'[["-1.5","2"]]'),
        GOOD_DEPTH.replace(b'[["1.5","2"]]', b'[["1.5","1e999"]]'),
        GOOD_DEPTH.replace(b'[["1.5","2"]]', b'[[null,"2"]]'),
        GOOD_DEPTH.replace(b'[["1.5","2"]]', b'[["1.5",{}]]'),
        GOOD_DEPTH.replace(b'[["1.5","2"]]', b'[["01.5","2"]]'),
        GOOD_DEPTH.replace(b'[["1.5","2"]]', b'[["1.","2"]]'),
        GOOD_DEPTH.replace(b'[["1.5","2"]]', b'[["","2"]]'),
        GOOD_DEPTH.replace(b'[["1.5","2"]]', b"[[]]"),
        GOOD_DEPTH.replace(b'[["1.5","2"]]', b"[1, 2]"),
    ],
    decode_kucoin_l2: [
        *COMMON_BAD,
        GOOD_L2.replace(b'"changes":{"asks":[["1.5","2","1"]],"bids":[]}', b'"changes":null'),
        GOOD_L2.replace(b',"bids":[]', b""),
        GOOD_L2.replace(b'"sequenceStart":1,', b""),
        GOOD_L2.replace(b'"sequenceEnd":2', b'"sequenceEnd":"x"'),
        GOOD_L2.replace(b'["1.5","2","1"]', b'["1.5","2"]'),
        GOOD_L2.replace(b'["1.5","2","1"]', b'["1.5","2","x"]'),
        GOOD_L2.replace(b'["1.5","2","1"]', b'["1.5","2","1.5"]'),
        GOOD_L2.replace(b'["1.5","2","1"]', b'["1.5","2","99999999999999999999999"]'),
        GOOD_L2.replace(b'["1.5","2","1"]', b'["x","2","1"]'),
        GOOD_L2.replace(b'["1.5","2","1"]', b'["1.5","-2","1"]'),
    ],
    decode_binance_snapshot: [
        *COMMON_BAD,
        GOOD_BSNAP.replace(b'"lastUpdateId":7,', b""),
        GOOD_BSNAP.replace(b'"lastUpdateId":7', b'"lastUpdateId":null'),
        GOOD_BSNAP.replace(b',"asks":[["1.6","3"]]', b""),
        GOOD_BSNAP.replace(b'[["1.6","3"]]', b'[["1.6","3"],]'),
        GOOD_BSNAP.replace(b'[["1.6","3"]]', b'[["1.6","x"]]'),
        b'{"code":-1121,"msg":"Invalid symbol."}',
    ],
    decode_kucoin_snapshot: [
        *COMMON_BAD,
        GOOD_KSNAP.replace(b'"200000"', b'"400100"'),
        b'{"code":"429000","msg":"Too Many Requests"}',
        b'{"code":"200000"}',
        b'{"code":"200000","data":null}',
        GOOD_KSNAP.replace(b'"sequence":"7"', b'"sequence":"x"'),
        GOOD_KSNAP.replace(b'"sequence":"7",', b""),
        GOOD_KSNAP.replace(b'[["1.6","3"]]', b'[["1.6"]]'),
        GOOD_KSNAP.replace(b'"data":{', b'"data":[').replace(b"]}}", b"]]}"),
    ],
}


@pytest.mark.parametrize("decode", list(BAD), ids=lambda f: f.__name__)
def test_malformed_input_raises_value_error(decode) -> None:
    good = {decode_binance_depth: GOOD_DEPTH, decode_kucoin_l2: GOOD_L2, decode_binance_snapshot: GOOD_BSNAP,
            decode_kucoin_snapshot: GOOD_KSNAP}[decode]
    decode(good)
    for bad in BAD[decode]:
        with pytest.raises(ValueError) as info:
            decode(bad)
        assert str(info.value) and "\n" not in str(info.value), bad


def test_kucoin_error_names_code_and_msg() -> None:
    with pytest.raises(ValueError, match=r"429000.*Too Many Requests"):
        decode_kucoin_snapshot(b'{"code":"429000","msg":"Too Many Requests"}')


@pytest.mark.parametrize("decode", list(BAD), ids=lambda f: f.__name__)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_input_only_value_error(decode, data) -> None:
    """Random byte edits of a real message either decode or raise ValueError."""
    vec = {v["exchange"]: v["events_in_arrival_order"] for v in VECTORS}
    good = {decode_binance_depth: vec["binance_usdm"][5]["raw"],
            decode_kucoin_l2: vec["kucoin_spot"][5]["raw"]}.get(decode)
    if good is not None:
        base = bytes(inner(good))
    elif decode is decode_binance_snapshot:
        base = read_recording(RECORDED / "BINANCE_FUTURES.http.0.0")[0][2][:600].encode()
        base = base[: base.rindex(b"]") + 1] + b'],"asks":[["7.6120","297"]]}'
    else:
        base = GOOD_KSNAP
    decode(base)
    buf = bytearray(base)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["set", "del", "ins"]))
        at = data.draw(st.integers(0, len(buf) - 1)) if buf else 0
        ch = data.draw(st.sampled_from([*b'[]{}",:.0123456789-eE ax\x00', 200]))
        if op == "set" and buf:
            buf[at] = ch
        elif op == "del" and buf:
            del buf[at]
        else:
            buf.insert(at, ch)
    try:
        out = decode(bytes(buf))
    except ValueError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(out, Diff | Snapshot)
    for side in (out.bids, out.asks):
        assert side.dtype == np.float64 and side.ndim == 2 and side.shape[1] == 2
        assert np.isfinite(side).all() and (side >= 0).all()
