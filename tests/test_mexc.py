"""MEXC spot v3 market data: the reference protobuf vectors and control frames, fuzzing, the fromVersion /
toVersion book rules, the simulator's MEXC protocol over loopback, and the feed stage in a real pipeline."""

from __future__ import annotations

import itertools
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import websocket
from conftest import SHARED, feed_sinks, free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simulator_client import Sim

from feeds.book import Diff, Snapshot
from feeds.emit import ListEmitter
from feeds.mexc import MAX_SUBSCRIPTIONS, channels
from feeds.mexc_messages import Control, MexcParser, MexcSync, decode_mexc_snapshot
from feeds.proto import ProtoError, compile_protos, load, sources
from pipeline.config import ConfigError, parse
from pipeline.records import BBO, BOOK, FLAG_LOCAL_TIME, FLAG_RESYNC, TRADE

ROOT = Path(__file__).resolve().parents[1]
VECTORS = json.loads(((SHARED / "reference" / "test_vectors.json")).read_text())["messages"] \
    if (SHARED / "reference" / "test_vectors.json").is_file() else None
T_WALL = 1_736_412_100_000 * 1_000_000
SYMS = {"BTCUSDT": 0, "ETHUSDT": 1}
PB = load()

needs_vectors = pytest.mark.skipif(VECTORS is None, reason="shared/reference/test_vectors.json not found")


def wrapper(symbol: str = "BTCUSDT", send_ms: int = 1_736_412_092_433, channel: str = "") -> Any:
    return PB.PushDataV3ApiWrapper(channel=channel or f"spot@public.aggre.x.v3.api.pb@100ms@{symbol}", symbol=symbol,
                                   sendTime=send_ms)


def ticker(bid: str, bq: str, ask: str, aq: str, version: str = "", symbol: str = "BTCUSDT") -> bytes:
    w = wrapper(symbol)
    b = w.publicAggreBookTicker
    b.bidPrice, b.bidQuantity, b.askPrice, b.askQuantity, b.version = bid, bq, ask, aq, version
    return w.SerializeToString()


def depth(first: int, last: int, bids=(), asks=(), symbol: str = "BTCUSDT", send_ms: int = 1_736_412_092_433) -> bytes:
    w = wrapper(symbol, send_ms)
    d = w.publicAggreDepths
    for p, q in bids:
        d.bids.add(price=p, quantity=q)
    for p, q in asks:
        d.asks.add(price=p, quantity=q)
    d.fromVersion, d.toVersion = str(first), str(last)
    return w.SerializeToString()


def snapshot(last_id: int, bids, asks) -> bytes:
    return json.dumps({"lastUpdateId": last_id, "bids": bids, "asks": asks, "timestamp": 1_736_412_092_000}).encode()


def check_records(records: list[tuple]) -> None:
    """Every stored record is valid: finite positive prices and sizes, bid < ask, levels in order."""
    for r in records:
        if r[0] == "bbo":
            bid, bq, ask, aq = r[7:11]
            assert all(math.isfinite(x) and x > 0 for x in (bid, bq, ask, aq)) and bid < ask, r
        elif r[0] == "trade":
            assert math.isfinite(r[7]) and r[7] > 0 and math.isfinite(r[8]) and r[8] > 0 and r[9] in (-1, 0, 1), r
        else:
            bids, asks = r[7], r[8]
            assert np.isfinite(bids).all() and np.isfinite(asks).all() and (bids > 0).all() and (asks > 0).all(), r
            assert (np.diff(bids[:, 0]) < 0).all() and (np.diff(asks[:, 0]) > 0).all(), r
            if len(bids) and len(asks):
                assert bids[0, 0] < asks[0, 0], r


# -- (1) reference vectors and control frames ---------------------------------------------------------------------


def test_proto_sources_compile_into_a_cache_keyed_by_their_text() -> None:
    d = compile_protos()
    assert {p.stem for p in sources()} >= {"PushDataV3ApiWrapper", "PublicAggreBookTickerV3Api",
                                           "PublicAggreDealsV3Api", "PublicAggreDepthsV3Api", "PublicLimitDepthsV3Api"}
    assert all((d / f"{p.stem}_pb2.py").is_file() for p in sources())
    assert not list((ROOT / "feeds" / "proto").glob("*_pb2.py")), "generated code stays out of the source tree"
    assert issubclass(ProtoError, RuntimeError)
    # the 2026-06 fields, by number
    fields = {f.name: f.number for f in PB.PublicAggreBookTickerV3Api.DESCRIPTOR.fields}
    assert fields == {"bidPrice": 1, "bidQuantity": 2, "askPrice": 3, "askQuantity": 4, "version": 5,
                      "lastOrderCreateTime": 6}
    assert {f.name: f.number for f in PB.PublicAggreDealsV3ApiItem.DESCRIPTOR.fields} == {
        "price": 1, "quantity": 2, "tradeType": 3, "time": 4, "tradeId": 5}
    assert {f.name: f.number for f in PB.PublicAggreDepthsV3Api.DESCRIPTOR.fields} == {
        "asks": 1, "bids": 2, "eventType": 3, "fromVersion": 4, "toVersion": 5, "lastOrderCreateTime": 6}
    body = {f.name: f.number for f in PB.PushDataV3ApiWrapper.DESCRIPTOR.oneofs_by_name["body"].fields}
    assert body == {"publicLimitDepths": 303, "publicBookTicker": 305, "publicBookTickerBatch": 311,
                    "publicAggreDepths": 313, "publicAggreDeals": 314, "publicAggreBookTicker": 315}


def test_proto_compile_cache_and_one_line_errors(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for p in sources():
        (src / p.name).write_bytes(p.read_bytes())
    cache = tmp_path / "cache"
    d = compile_protos(src, cache)
    assert d.parent == cache and compile_protos(src, cache) == d, "compiled once, then found in the cache"
    assert [x.name for x in cache.iterdir()] == [d.name], "no temporary directories left"
    # a changed .proto text is a new cache entry; a broken one is one line naming the problem
    deals = src / "PublicAggreDealsV3Api.proto"
    deals.write_text(deals.read_text().replace("string tradeId = 5;", "string tradeId = 5;\n  bool isRpi = 5;"))
    with pytest.raises(ProtoError) as e:
        compile_protos(src, cache)
    msg = str(e.value)
    assert "\n" not in msg and "PublicAggreDealsV3Api.proto" in msg and "5" in msg, msg
    (src / "PushDataV3ApiWrapper.proto").unlink()
    with pytest.raises(ProtoError, match=r"PushDataV3ApiWrapper\.proto is missing"):
        compile_protos(src, cache)


@needs_vectors
@pytest.mark.parametrize("vec", VECTORS["mexc_protobuf_constructed"] if VECTORS else [], ids=lambda v: v["name"])
def test_vector_frames_decode_and_reserialize_byte_identical(vec) -> None:
    from google.protobuf.json_format import MessageToDict

    raw = bytes.fromhex(vec["hex"])
    w = PB.PushDataV3ApiWrapper.FromString(raw)
    assert w.WhichOneof("body") == vec["body_oneof"]
    assert MessageToDict(w) == vec["decoded"]
    assert w.SerializeToString() == raw


@needs_vectors
def test_vector_records() -> None:
    vecs = {v["name"]: v for v in VECTORS["mexc_protobuf_constructed"]}
    e = ListEmitter()
    p = MexcParser(SYMS, e, books=True, depth=10)
    for name in ("aggre_bookTicker", "aggre_deals", "limit_depth"):
        assert p.on_frame(bytes.fromhex(vecs[name]["hex"]), 1, T_WALL) is None
    assert e.counts.frames == 3 and e.counts.parse_err == 0 and e.counts.bad_value == 0
    (bbo, trade) = e.records
    x = vecs["aggre_bookTicker"]["expected"]
    assert bbo[0] == "bbo" and bbo[3] == SYMS[x["symbol"]] and bbo[4] == x["exchange_ts_ms"]
    assert bbo[6] == 0, "no version in the doc example: venue_seq 0"
    assert bbo[7:11] == tuple(float(x[k]) for k in ("bid", "bid_size", "ask", "ask_size"))
    assert bbo[5] == 0, "event time from sendTime, no resync pending"
    x = vecs["aggre_deals"]["expected"]
    assert trade[0] == "trade" and trade[3] == 0 and trade[4] == x["trade_ts_ms"]
    assert trade[6] == 0 and trade[7] == float(x["price"]) and trade[8] == float(x["qty"])
    assert trade[9] == -1, "tradeType 2: the taker sold"
    # the depth diff waits for a snapshot; one ending just before fromVersion joins it and the level goes
    x = vecs["aggre_depth"]["expected"]
    first, last = int(x["fromVersion"]), int(x["toVersion"])
    assert p.on_frame(bytes.fromhex(vecs["aggre_depth"]["hex"]), 1, T_WALL) is None
    assert "BTCUSDT" in p.need_snapshot and len(e.records) == 2
    bid0 = x["bids"][0][0]
    assert p.on_snapshot("BTCUSDT", snapshot(first - 1, [[bid0, "1.5"], ["92877.00", "2"]], [["92878.00", "3"]]),
                         1, T_WALL)
    book = e.records[-1]
    assert book[0] == "book" and book[6] == last and book[4] == x["exchange_ts_ms"] and book[5] & FLAG_RESYNC
    assert book[7].tolist() == [[92877.0, 2.0]] and book[8].tolist() == [[92878.0, 3.0]]
    check_records(e.records)


def test_2026_fields_version_and_trade_id() -> None:
    e = ListEmitter()
    p = MexcParser(SYMS, e)
    p.on_frame(ticker("10.5", "1", "10.6", "2", "36913565463"), 1, T_WALL)
    p.on_frame(ticker("10.5", "1", "10.7", "2", "36913565463"), 1, T_WALL)  # same version: refused
    p.on_frame(ticker("10.4", "1", "10.7", "2", "36913565464", symbol="ETHUSDT"), 1, T_WALL)
    assert [(r[3], r[6]) for r in e.records] == [(0, 36913565463), (1, 36913565464)]
    assert e.counts.by_kind == {"out_of_order": 1}
    w = wrapper("ETHUSDT")
    d = w.publicAggreDeals
    d.deals.add(price="3000.1", quantity="0.5", tradeType=1, time=1_736_412_092_400, tradeId="123456789")
    d.deals.add(price="3000.0", quantity="0.25", tradeType=2, time=0, tradeId="a1b2-c3")
    d.deals.add(price="3000.0", quantity="0.25", tradeType=7, time=5, tradeId="99999999999999999999999")
    p.on_frame(w.SerializeToString(), 1, T_WALL)
    trades = [r for r in e.records if r[0] == "trade"]
    assert [(t[3], t[4], t[6], t[7], t[8], t[9]) for t in trades] == [
        (1, 1_736_412_092_400, 123456789, 3000.1, 0.5, 1),
        (1, 1_736_412_092_433, 0, 3000.0, 0.25, -1),  # no deal time: the frame's sendTime
        (1, 5, 0, 3000.0, 0.25, 0)]
    # a frame with only the channel naming the symbol; unknown symbols and bodies are ignored
    w = PB.PushDataV3ApiWrapper(channel="spot@public.aggre.bookTicker.v3.api.pb@100ms@BTCUSDT")
    w.publicAggreBookTicker.bidPrice, w.publicAggreBookTicker.bidQuantity = "1", "1"
    w.publicAggreBookTicker.askPrice, w.publicAggreBookTicker.askQuantity = "2", "1"
    n = len(e.records)
    p.on_frame(w.SerializeToString(), 1, T_WALL)
    assert e.records[n][0] == "bbo" and e.records[n][5] & FLAG_LOCAL_TIME, "no sendTime: receive time"
    p.on_frame(ticker("1", "1", "2", "1", symbol="DOGEUSDT"), 1, T_WALL)
    p.on_frame(wrapper().SerializeToString(), 1, T_WALL)
    assert len(e.records) == n + 1 and e.counts.parse_err == 0


@needs_vectors
def test_control_frames() -> None:
    e = ListEmitter()
    p = MexcParser(SYMS, e)
    frames = {f["raw"]: f for f in VECTORS["mexc_json_control_frames"]}
    got = [p.on_frame(raw.encode(), 1, T_WALL) for raw in frames]
    assert got == [None, Control("ack", "0", "spot@public.aggre.deals.v3.api.pb@100ms@BTCUSDT"), None,
                   Control("pong", "0")]
    assert p.on_frame('{"id":0,"code":0,"msg":"PONG"}', 1, T_WALL) == Control("pong", "0"), "str frames too"
    two = "spot@public.aggre.depth.v3.api.pb@100ms@BTCUSDT,spot@public.aggre.bookTicker.v3.api.pb@100ms@BTCUSDT"
    assert p.on_frame(json.dumps({"id": 0, "code": 0, "msg": two}).encode(), 1, T_WALL) == Control("ack", "0", two)
    refused = p.on_frame(b'{"id":0,"code":0,"msg":"Not Subscribed successfully! [spot@x]. Reason: Blocked! "}', 1,
                         T_WALL)
    assert refused is not None and refused.type == "error" and "Blocked" in refused.text
    assert p.on_frame(b'{"id":3,"code":400,"msg":"bad"}', 1, T_WALL) == Control("error", "3", "code 400: bad")
    assert e.counts.parse_err == 0
    for bad in (b'{"id":0,"code":0,"msg":"spot@pub', b"[1,2]", b'{"msg":', "{nope"):
        assert p.on_frame(bad, 1, T_WALL) is None
    assert e.counts.parse_err == 4 and set(e.counts.by_kind) == {"malformed_json", "missing_field"}
    assert e.records == []


def test_malformed_binary_counted() -> None:
    e = ListEmitter()
    p = MexcParser(SYMS, e, books=True)
    good = ticker("10.5", "1", "10.6", "2", "7")
    p.on_frame(good[:-3], 1, T_WALL)  # the body's length overruns the frame
    p.on_frame(ticker("", "1", "10.6", "2", "8"), 1, T_WALL)  # a price missing
    p.on_frame(ticker("10.5", "1", "10.6", "2", "v9"), 1, T_WALL)
    p.on_frame(depth(5, 4), 1, T_WALL)  # fromVersion > toVersion
    p.on_frame(depth(5, 6, bids=[("0", "1")]), 1, T_WALL)  # price 0 is no MEXC no-op: a broken frame
    p.on_frame(depth(5, 6, bids=[("-1", "1")]), 1, T_WALL)
    assert e.counts.parse_err == 6 and e.counts.by_kind["malformed_protobuf"] == 1
    p.on_frame(ticker("NaN", "1", "10.6", "2", "9"), 1, T_WALL)
    p.on_frame(ticker("10.7", "1", "10.6", "2", "9"), 1, T_WALL)  # crossed
    p.on_frame(good, 1, T_WALL)
    p.on_frame(ticker("10.5", "1", "10.6", "2", "9"), 1, T_WALL)  # refused copies did not take version 9
    assert e.counts.bad_value == 2 and [r[6] for r in e.records] == [7, 9]


# -- (2) fuzzing: nothing raises, nothing invalid gets out --------------------------------------------------------

_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _samples() -> list[bytes]:
    out = [bytes.fromhex(v["hex"]) for v in VECTORS["mexc_protobuf_constructed"]] if VECTORS else []
    out += [ticker("93387.28", "3.7", "93387.29", "7.6", "10"), depth(11, 12, [("93387.27", "0")], [("93387.3", "1")])]
    out += [b'{"id":0,"code":0,"msg":"PONG"}']
    return out


SAMPLES = _samples()


def _synced_parser() -> tuple[MexcParser, ListEmitter]:
    e = ListEmitter()
    p = MexcParser(SYMS, e, books=True, depth=5)
    for sym in SYMS:
        p.on_snapshot(sym, snapshot(10, [["93387.27", "1"], ["93387.2", "1"]], [["93387.3", "2"], ["93388", "1"]]),
                      1, T_WALL)
    return p, e


def _feed(frame: bytes) -> None:
    p, e = _synced_parser()
    before = e.counts.frames
    p.on_frame(frame, 1, T_WALL)
    assert e.counts.frames == before + 1
    check_records(e.records)


@_FUZZ
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _feed(data)


@_FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_fuzz_mutated_frames(frame: bytes, data) -> None:
    b = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        k = data.draw(st.integers(0, max(0, len(b) - 1)))
        if op == "flip" and b:
            b[k] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del b[k:k + data.draw(st.integers(1, 8))]
        else:
            b[k:k] = data.draw(st.binary(min_size=1, max_size=6))
    _feed(bytes(b))


WEIRD = st.one_of(st.sampled_from(["", "0", "-1", "NaN", "nan", "inf", "-inf", "1e400", "1e-400", "abc", "1" * 40,
                                   "0.0000001", "93387.5", "93387.2", "1_000", " 7 ", "+3", "0x10"]),
                  st.text(max_size=12))


@_FUZZ
@given(st.data())
def test_fuzz_field_values(data) -> None:
    """Well-formed protobuf with arbitrary strings where prices, sizes and versions go, on a synced book."""
    p, e = _synced_parser()
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["ticker", "deals", "depth"]))
        w = wrapper(data.draw(st.sampled_from(list(SYMS))), data.draw(st.integers(0, 1 << 62)))
        if kind == "ticker":
            b = w.publicAggreBookTicker
            b.bidPrice, b.bidQuantity, b.askPrice, b.askQuantity, b.version = (data.draw(WEIRD) for _ in range(5))
        elif kind == "deals":
            for _ in range(data.draw(st.integers(0, 3))):
                w.publicAggreDeals.deals.add(price=data.draw(WEIRD), quantity=data.draw(WEIRD),
                                             tradeType=data.draw(st.integers(-3, 5)),
                                             time=data.draw(st.integers(-(1 << 63), (1 << 63) - 1)),
                                             tradeId=data.draw(WEIRD))
        else:
            d = w.publicAggreDepths
            for rows in (d.bids, d.asks):
                for _ in range(data.draw(st.integers(0, 3))):
                    rows.add(price=data.draw(WEIRD), quantity=data.draw(WEIRD))
            d.fromVersion = data.draw(st.one_of(st.just("11"), WEIRD))
            d.toVersion = data.draw(st.one_of(st.just("11"), st.just("12"), WEIRD))
        p.on_frame(w.SerializeToString(), 1, T_WALL)
    check_records(e.records)


# -- (3) MexcSync: fromVersion / toVersion rules (§4.3) -----------------------------------------------------------


def _d(first: int, last: int, bids=(), asks=()) -> Diff:
    return Diff(first, last, -1, np.array(bids, dtype=float).reshape(-1, 2), np.array(asks, dtype=float).reshape(-1, 2),
                None, None, 0)


def _snap(last_id: int) -> Snapshot:
    return Snapshot(last_id, np.array([[100.0, 1.0], [99.0, 2.0]]), np.array([[101.0, 1.0], [102.0, 2.0]]))


def test_sync_drops_old_diffs_joins_and_requires_continuity() -> None:
    s = MexcSync()
    assert s.needs_snapshot and s.last_id == -1
    diffs = [_d(90, 95), _d(96, 100, bids=[(100.0, 0.0)]), _d(99, 103, bids=[(100.5, 3.0)]), _d(104, 104),
             _d(105, 110, asks=[(101.0, 0.0)])]
    assert [s.on_diff(d) for d in diffs] == ["buffered"] * 5
    out = s.on_snapshot(_snap(100))
    assert [a for _, a in out] == ["discard", "discard", "apply", "apply", "apply"]
    assert not s.needs_snapshot and s.last_id == 110
    assert s.book.best() == (100.5, 3.0, 102.0, 2.0)
    assert s.on_diff(_d(105, 110)) == "discard", "toVersion <= the book's version: an old duplicate"
    assert s.on_diff(_d(111, 112)) == "apply" and s.last_id == 112
    assert s.on_diff(_d(112, 114)) == "gap", "after the first diff fromVersion must be exactly prev toVersion + 1"
    assert s.needs_snapshot and s.last_id == -1 and s.buffered == 1
    out = s.on_snapshot(_snap(113))
    assert [a for _, a in out] == ["apply"] and s.last_id == 114, "the first kept diff may overlap the snapshot"


def test_sync_first_diff_joins_exactly_or_the_snapshot_is_too_old() -> None:
    s = MexcSync()
    s.on_diff(_d(101, 105))
    assert [a for _, a in s.on_snapshot(_snap(100))] == ["apply"], "fromVersion == lastUpdateId + 1 joins"
    s = MexcSync()
    s.on_diff(_d(60, 70))
    s.on_diff(_d(71, 75))
    out = s.on_snapshot(_snap(50))  # older than the first buffered diff needs
    assert [a for _, a in out] == ["gap", "buffered"] and s.needs_snapshot and s.buffered == 2
    assert [a for _, a in s.on_snapshot(_snap(65))] == ["apply", "apply"] and s.last_id == 75
    s = MexcSync()
    assert s.on_snapshot(_snap(40)) == [] and not s.needs_snapshot
    assert s.on_diff(_d(42, 43)) == "gap", "a later diff that skips a version"


def test_parser_gap_resyncs_only_that_symbol() -> None:
    e = ListEmitter()
    p = MexcParser(SYMS, e, books=True, depth=2)
    assert p.need_snapshot == set(SYMS)
    p.on_frame(depth(101, 102, bids=[("100.5", "1")]), 1, T_WALL)
    too_old = snapshot(90, [["100", "1"]], [["101", "1"]])
    assert not p.on_snapshot("BTCUSDT", too_old, 1, T_WALL)
    assert e.counts.gaps == 1 and e.counts.resyncs == 1 and "BTCUSDT" in p.need_snapshot
    assert p.on_snapshot("BTCUSDT", snapshot(100, [["100", "1"]], [["101", "1"]]), 1, T_WALL)
    assert p.on_snapshot("ETHUSDT", snapshot(5, [["10", "1"]], [["11", "1"]]), 1, T_WALL)
    assert p.need_snapshot == set()
    p.on_frame(depth(103, 103, asks=[("101", "0"), ("101.5", "2")]), 1, T_WALL)
    p.on_frame(depth(105, 106), 1, T_WALL)  # 104 is missing
    assert e.counts.gaps == 2 and p.need_snapshot == {"BTCUSDT"}
    p.on_frame(depth(6, 6, symbol="ETHUSDT", asks=[("10.5", "1")]), 1, T_WALL)
    books = [r for r in e.records if r[0] == "book"]
    assert [(r[3], r[6]) for r in books] == [(0, 102), (1, 5), (0, 103), (1, 6)]
    assert books[2][7].tolist() == [[100.5, 1.0], [100.0, 1.0]] and books[2][8].tolist() == [[101.5, 2.0]]
    assert books[0][5] & FLAG_RESYNC and not books[2][5] & FLAG_RESYNC
    # a crossed local book means a broken diff got in: the symbol starts over
    p.on_snapshot("BTCUSDT", snapshot(106, [["100", "1"]], [["101", "1"]]), 1, T_WALL)
    p.on_frame(depth(107, 107, bids=[("101", "1")]), 1, T_WALL)
    assert e.counts.by_kind["crossed_book"] == 1 and p.need_snapshot == {"BTCUSDT"}
    check_records(e.records)
    with pytest.raises((ValueError, msgspec.DecodeError)):
        decode_mexc_snapshot(b'{"code":-1121,"msg":"Invalid symbol."}')
    assert not p.on_snapshot("BTCUSDT", b'{"lastUpdateId": 5, "bids": [["NaN", "1"]], "asks": []}', 1, T_WALL)
    assert e.counts.by_kind["bad_snapshot"] == 1


# -- (4) the simulator's MEXC over loopback -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    s = Sim("--seed", "9", "--speed", "4").ready()
    yield s
    assert s.stop() == 0


BT, DL, DP = ("spot@public.aggre.bookTicker.v3.api.pb", "spot@public.aggre.deals.v3.api.pb",
              "spot@public.aggre.depth.v3.api.pb")


class Client:
    """A raw MEXC websocket client: JSON control frames as dicts, binary frames as decoded wrappers."""

    def __init__(self, sim: Sim) -> None:
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{sim.port}/mexc/ws", timeout=10)

    def send(self, obj: dict) -> None:
        self.ws.send(json.dumps(obj))

    def recv(self) -> tuple[str, Any]:
        op, data = self.ws.recv_data()
        if op == websocket.ABNF.OPCODE_TEXT:
            return "text", json.loads(data)
        assert op == websocket.ABNF.OPCODE_BINARY, op
        return "pb", PB.PushDataV3ApiWrapper.FromString(data)

    def control(self, limit: int = 2000) -> dict:
        for _ in range(limit):
            kind, m = self.recv()
            if kind == "text":
                return m
        raise AssertionError("no control frame")

    def close(self) -> None:
        self.ws.close()


class LocalBook:
    def __init__(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self.sides = {name: {Decimal(p): Decimal(q) for p, q in rows} for name, rows in (("bids", bids),
                                                                                         ("asks", asks))}

    def apply(self, side: str, rows) -> None:
        d = self.sides[side]
        for r in rows:
            if Decimal(r.quantity) == 0:
                d.pop(Decimal(r.price), None)
            else:
                d[Decimal(r.price)] = Decimal(r.quantity)

    def top(self) -> tuple[Decimal, ...]:
        b, a = max(self.sides["bids"]), min(self.sides["asks"])
        return b, self.sides["bids"][b], a, self.sides["asks"][a]


def test_sim_depth_diffs_on_the_snapshot_reproduce_book_ticker(sim: Sim) -> None:
    c = Client(sim)
    subs = [f"{ch}@100ms@BTCUSDT" for ch in (BT, DL, DP)]
    c.send({"method": "SUBSCRIPTION", "params": subs})
    assert c.control() == {"id": 0, "code": 0, "msg": ",".join(subs)}
    buffered = [c.recv() for _ in range(30)]
    snap = sim.get("/mexc/api/v3/depth?symbol=BTCUSDT&limit=1000")
    assert set(snap) == {"lastUpdateId", "bids", "asks", "timestamp"} and len(snap["bids"]) >= 50
    book, local = LocalBook(snap["bids"], snap["asks"]), snap["lastUpdateId"]
    tickers: dict[int, tuple[Decimal, ...]] = {}
    prev_to: int | None = None
    synced = False
    checked = deals = 0
    frames = iter(buffered)
    for _ in range(5000):
        kind, w = next(frames, None) or c.recv()
        assert kind == "pb" and w.symbol == "BTCUSDT" and w.sendTime >= w.createTime > 1_000_000_000_000
        body = w.WhichOneof("body")
        if body == "publicAggreBookTicker":
            assert w.channel == subs[0]
            t = w.publicAggreBookTicker
            tickers[int(t.version)] = tuple(Decimal(x) for x in (t.bidPrice, t.bidQuantity, t.askPrice,
                                                                  t.askQuantity))
        elif body == "publicAggreDeals":
            assert w.channel == subs[1] and w.publicAggreDeals.eventType == f"{DL}@100ms"
            for d in w.publicAggreDeals.deals:
                assert d.tradeType in (1, 2) and d.tradeId.isdigit() and Decimal(d.price) > 0 < Decimal(d.quantity)
                deals += 1
        else:
            assert body == "publicAggreDepths" and w.channel == subs[2]
            d = w.publicAggreDepths
            first, last = int(d.fromVersion), int(d.toVersion)
            if prev_to is not None:
                assert first == prev_to + 1
            prev_to = last
            if last <= local:
                continue
            if not synced:
                assert first <= local + 1
                synced = True
            book.apply("bids", d.bids)
            book.apply("asks", d.asks)
            local = last
        if local in tickers:
            assert book.top() == tickers.pop(local)
            checked += 1
            if checked >= 20 and deals >= 3:
                break
    assert checked >= 20 and deals >= 3
    c.close()


def test_sim_control_frames_and_limits(sim: Sim) -> None:
    c = Client(sim)
    c.send({"method": "PING"})
    assert c.control() == {"id": 0, "code": 0, "msg": "PONG"}
    c.send({"method": "SUBSCRIPTION", "params": [f"{BT}@100ms@DOGEUSDT"]})
    m = c.control()
    assert m["code"] == 0 and m["msg"].startswith("Not Subscribed successfully!") and "DOGEUSDT" in m["msg"]
    every = [f"{ch}@{iv}@{s}" for ch in (BT, DL, DP) for iv in ("100ms", "10ms") for s in ("BTCUSDT", "ETHUSDT")]
    every += [f"spot@public.limit.depth.v3.api.pb@{s}@{n}" for s in ("BTCUSDT", "ETHUSDT") for n in (5, 10, 20)]
    assert len(every) == 18  # every channel of the two symbols
    c.send({"method": "SUBSCRIPTION", "params": every})
    assert c.control()["msg"] == ",".join(every)
    c.send({"method": "SUBSCRIPTION", "params": [f"{BT}@100ms@BTCUSDT"] * 2 + every[:3]})  # no new ones
    assert c.control()["msg"].startswith("spot@")
    kinds = set()
    for _ in range(200):
        kind, w = c.recv()
        if kind == "pb":
            kinds.add(w.WhichOneof("body"))
    assert kinds >= {"publicAggreBookTicker", "publicAggreDepths", "publicLimitDepths", "publicAggreDeals"}
    c.send({"method": "UNSUBSCRIPTION", "params": every})
    assert c.control()["msg"] == ",".join(every)
    c.send({"method": "SUBSCRIPTION", "params": [f"{BT}@10ms@ETHUSDT"]})
    assert c.control()["msg"] == f"{BT}@10ms@ETHUSDT"
    c.send({"method": "NOPE"})
    assert c.control()["code"] != 0
    c.close()


def test_sim_rest_shapes(sim: Sim) -> None:
    info = sim.get("/mexc/api/v3/exchangeInfo")
    syms = {s["symbol"]: s for s in info["symbols"]}
    assert set(syms) == {"BTCUSDT", "ETHUSDT"} and info["timezone"] and isinstance(info["serverTime"], int)
    btc = syms["BTCUSDT"]
    assert btc["status"] == "1" and btc["baseSizePrecision"] == "0.00001" and btc["quoteAmountPrecision"] == "5"
    assert btc["quotePrecision"] == 1 and btc["baseAssetPrecision"] == 5 and btc["filters"] == []
    assert [s["symbol"] for s in sim.get("/mexc/api/v3/exchangeInfo?symbols=ETHUSDT")["symbols"]] == ["ETHUSDT"]
    assert sim.request("/mexc/api/v3/exchangeInfo?symbol=BTC-USDT")[1]["code"] == -1121
    rows = sim.get("/mexc/api/v3/klines?symbol=ETHUSDT&interval=1m&limit=1000")
    assert len(rows) == 1000
    for r in rows:
        assert len(r) == 8 and r[6] == r[0] + 60_000 and all(isinstance(r[k], str) for k in (1, 2, 3, 4, 5, 7))
        o, h, lo, cl = (Decimal(x) for x in r[1:5])
        assert lo <= min(o, cl) <= max(o, cl) <= h
    assert len(sim.get("/mexc/api/v3/klines?symbol=ETHUSDT&interval=60m&limit=5")) == 5
    status, body, _ = sim.request("/mexc/api/v3/klines?symbol=ETHUSDT&interval=7m")
    assert status == 400 and body["code"] and body["msg"]
    snap = sim.get("/mexc/api/v3/depth?symbol=ETHUSDT&limit=5")
    assert len(snap["bids"]) == len(snap["asks"]) == 5 and isinstance(snap["lastUpdateId"], int)
    assert Decimal(snap["bids"][0][0]) < Decimal(snap["asks"][0][0])
    assert sim.request("/mexc/api/v3/depth?symbol=NOPE")[0] == 400
    assert sim.get("/mexc/api/v3/ping") == {} and isinstance(sim.get("/mexc/api/v3/time")["serverTime"], int)
    # Binance spot keeps /api/v3 at the root
    assert "rateLimits" in sim.get("/api/v3/exchangeInfo")
    assert "timestamp" not in sim.get("/api/v3/depth?symbol=BTCUSDT")


def test_sim_faults_apply_to_mexc() -> None:
    s = Sim("--seed", "3", "--speed", "4", "--symbols", "BTC-USDT,ETH-USDT,SOL-USDT,XRP-USDT").ready()
    try:
        # at most 30 subscriptions per connection
        c = Client(s)
        syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
        every = channels(syms, True, True, True) + channels(syms, True, True, True, "10ms")
        every += [f"spot@public.limit.depth.v3.api.pb@{x}@{n}" for x in syms for n in (5, 10, 20)]
        assert len(every) == 36 > MAX_SUBSCRIPTIONS
        c.send({"method": "SUBSCRIPTION", "params": every})
        assert f"more than {MAX_SUBSCRIPTIONS}" in c.control()["msg"]
        c.send({"method": "SUBSCRIPTION", "params": every[:MAX_SUBSCRIPTIONS]})
        assert c.control()["msg"] == ",".join(every[:MAX_SUBSCRIPTIONS])
        c.send({"method": "SUBSCRIPTION", "params": every[MAX_SUBSCRIPTIONS:][:1]})
        assert c.control()["msg"].startswith("Not Subscribed successfully!")
        c.close()
        c = Client(s)
        c.send({"method": "SUBSCRIPTION", "params": [f"{DP}@100ms@ETHUSDT", f"{BT}@100ms@ETHUSDT"]})
        assert c.control()["code"] == 0
        # skip_seq: exactly one break in the fromVersion chain
        versions: list[tuple[int, int]] = []

        def depth_frames(n: int) -> None:
            while len(versions) < n:
                kind, w = c.recv()
                if kind == "pb" and w.WhichOneof("body") == "publicAggreDepths":
                    versions.append((int(w.publicAggreDepths.fromVersion), int(w.publicAggreDepths.toVersion)))

        depth_frames(2)
        s.fault(kind="skip_seq", venue="mexc", symbol="ETHUSDT")
        depth_frames(20)
        assert sum(b[0] != a[1] + 1 for a, b in itertools.pairwise(versions)) == 1
        # malformed: broken protobuf or JSON garbage frames arrive before the real ones, and are counted
        e = ListEmitter()
        p = MexcParser({"ETHUSDT": 0}, e, books=True)  # no snapshot: diffs are checked, then buffered
        s.fault(kind="malformed", venue="mexc", count=12)
        texts = 0
        for _ in range(80):
            op, data = c.ws.recv_data()
            texts += op == websocket.ABNF.OPCODE_TEXT
            p.on_frame(data, 1, time.time_ns())
        assert texts >= 1 and e.counts.parse_err + e.counts.bad_value >= 10  # a crossed diff is only buffered
        assert e.counts.by_kind.get("malformed_protobuf") and e.counts.by_kind.get("malformed_json")
        check_records(e.records)
        # rest_error, then drop
        s.fault(kind="rest_error", venue="mexc", status=429, count=1)
        status, body, headers = s.request("/mexc/api/v3/depth?symbol=ETHUSDT")
        assert status == 429 and body["code"] and "Retry-After" in headers
        assert s.request("/mexc/api/v3/depth?symbol=ETHUSDT")[0] == 200
        s.fault(kind="drop", venue="mexc")
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
            for _ in range(100_000):
                c.ws.recv_data()
        assert s.get("/_sim/stats")["venues"]["mexc"]["connections_open"] == 0
    finally:
        assert s.stop() == 0


# -- (5) the feed stage in a pipeline -----------------------------------------------------------------------------

MEXC_CONFIG = """
name = "{name}"

[[instruments]]
symbol = "BTCUSDT"
venue = "mexc"
tick = 0.1

[[instruments]]
symbol = "ETHUSDT"
venue = "mexc"
tick = 0.01

[services.exchange]
module = "feeds.simulator"
args = ["--port", "{port}", "--seed", "5", "--speed", "4"]
port = {port}

[rings.mx_ticks]
type = "bbo"
[rings.mx_trades]
type = "trade"
[rings.mx_books]
type = "book"
capacity = 16384

[stages.mexc]
kind = "mexc"
outputs = ["mx_ticks", "mx_trades", "mx_books"]
[stages.mexc.params]
rest_url = "http://127.0.0.1:{port}/mexc"
ws_url = "ws://127.0.0.1:{port}/mexc/ws"
trades = true
books = true
stall_s = 2.0
record = "rec/mexc"
ping_interval_s = 0.3
pong_timeout_s = 1.0
reconnect_initial_s = 0.05
reconnect_max_s = 0.5

{sinks}

[supervisor]
heartbeat_timeout_s = 3.0
backoff_initial_s = 0.02
backoff_max_s = 0.2
max_restarts = 20
"""

SINKS = {"mx_ticks": BBO, "mx_trades": TRADE, "mx_books": BOOK}


def _config(port: int) -> str:
    sinks = feed_sinks(SINKS)
    return MEXC_CONFIG.replace("{port}", str(port)).replace("{sinks}", sinks)


def test_check_spec_refuses_more_than_30_channels() -> None:
    text = _config(1).replace("tick = 0.01\n", "tick = 0.01\n" + "".join(
        f'\n[[instruments]]\nsymbol = "C{k}USDT"\nvenue = "mexc"\ntick = 0.01\n' for k in range(9)), 1)
    with pytest.raises(ConfigError, match="33 MEXC channels"):
        parse(text.replace("{name}", "mx"), "x.toml", {0, 1})
    assert parse(text.replace("{name}", "mx").replace("trades = true", "trades = false"), "x.toml", {0, 1})


def test_feed_survives_faults_and_keeps_rings_clean(make_pipeline) -> None:
    port = free_port()
    p = make_pipeline(_config(port))
    p.up()

    def stage(s: dict) -> dict:
        return next(x for x in s["stages"] if x["name"] == "mexc")

    def fault(**body: Any) -> None:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/_sim/fault", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.loads(r.read())["ok"]

    def after(counter: str, before: int, what: str) -> None:
        p.wait_for(lambda s: stage(s)["counters"][counter] > before, 30, what)
        out = stage(p.status())["records_out"]
        p.wait_for(lambda s: stage(s)["records_out"] > out + 5, 30, f"records again after {what}")

    p.wait_for(lambda s: stage(s)["records_out"] > 50, 60, "records from the MEXC feed")
    c = p.stage("mexc")["counters"]
    assert c["frames"] > 0 and c["parse_err"] == 0 and c["bad_value"] == 0 and c["gaps"] == 0, c
    # PINGs go every 0.3 s and each PONG is due within 1 s: were PONGs not seen, the feed would reconnect every
    # ~1.3 s while these frames arrive (~5 s at full rate); one reconnect is tolerated (a starved host can stall)
    p.wait_for(lambda s: stage(s)["counters"]["frames"] > c["frames"] + 1000, 90, "1000 more frames")
    c = p.stage("mexc")["counters"]
    assert c["reconnects"] <= 1, c
    # a dropped connection: reconnect, resubscribe, resync every book
    fault(kind="drop", venue="mexc")
    after("reconnects", c["reconnects"], "reconnect after drop")
    assert p.stage("mexc")["counters"]["resyncs"] > c["resyncs"]
    # a depth gap: that book is resynced from a new snapshot
    c = p.stage("mexc")["counters"]
    fault(kind="skip_seq", venue="mexc", symbol="BTCUSDT")
    after("gaps", c["gaps"], "gap seen")
    assert p.stage("mexc")["counters"]["resyncs"] > c["resyncs"]
    # malformed frames (broken protobuf, JSON garbage, bad values): counted, never in a ring
    c = p.stage("mexc")["counters"]
    fault(kind="malformed", venue="mexc", count=6)
    p.wait_for(lambda s: (lambda k: k["parse_err"] + k["bad_value"] >= c["parse_err"] + c["bad_value"] + 5)(
        stage(s)["counters"]), 30, "malformed frames counted")  # 5: a crossed diff can fall before a snapshot
    # snapshots answered 503 twice: retried
    c = p.stage("mexc")["counters"]
    fault(kind="rest_error", venue="mexc", status=503, count=2)
    fault(kind="skip_seq", venue="mexc", symbol="ETHUSDT")
    after("gaps", c["gaps"], "resync through 503s")
    st = p.stage("mexc")
    assert st["state"] == "running" and st["restarts"] == 0 and st["errors"] > 0 and st["last_error"], st
    sinks = {s["name"]: s["counters"] for s in p.status()["stages"] if s["name"].startswith("s_")}
    p.down()
    for name, counters in sinks.items():
        assert counters["gaps"] == 0 and counters["dups"] == 0, (name, counters)
    for ring, dtype in SINKS.items():
        recs = p.sink_records(dtype, f"s_{ring}")
        assert len(recs) > 0, ring
        assert (np.diff(recs["seq"].astype(np.int64)) == 1).all(), ring
        assert (np.diff(recs["src_seq"].astype(np.int64)) >= 0).all(), ring
        assert (recs["ts_event_ms"] > 1_000_000_000_000).all(), ring
        if dtype is BBO:
            for f in ("bid_px", "ask_px", "bid_qty", "ask_qty"):
                assert np.isfinite(recs[f]).all() and (recs[f] > 0).all(), (ring, f)
            assert (recs["bid_px"] < recs["ask_px"]).all(), ring
            for inst in np.unique(recs["instrument"]):
                vseq = recs["venue_seq"][recs["instrument"] == inst].astype(np.int64)
                assert (vseq > 0).all() and (np.diff(vseq) > 0).all(), f"{ring}: versions of {inst} not increasing"
        elif dtype is TRADE:
            assert (recs["price"] > 0).all() and (recs["qty"] > 0).all() and np.isin(recs["side"], (1, -1)).all()
            assert (recs["trade_id"] > 0).all()
        else:
            assert min(recs["n_bids"].min(), recs["n_asks"].min()) >= 1, ring
            assert (recs["bid_px"][:, 0] < recs["ask_px"][:, 0]).all(), ring
            for i in range(len(recs)):
                b = recs["bid_px"][i, : recs["n_bids"][i]]
                a = recs["ask_px"][i, : recs["n_asks"][i]]
                assert (np.diff(b) < 0).all() and (np.diff(a) > 0).all(), f"{ring}: levels out of order"
            assert (recs["flags"] & FLAG_RESYNC).astype(bool).sum() >= 4, "each resync flags its first book"
    # the feed's recording (protobuf frames, snapshots, both connections) replays to what it published
    from conftest import cli

    files = sorted((p.run_dir / "rec").glob("mexc.*.rec.gz"))
    out = p.run_dir / "dump.jsonl"
    cli("replay", ",".join(map(str, files)), "--dump", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    live = p.sink_records(BBO, "s_mx_ticks")
    replayed = [r for r in rows if r["kind"] == "bbo"]
    assert len(replayed) >= len(live) > 0
    assert [(r["exch_seq"], r["bid"], r["ask_qty"]) for r in replayed[: len(live)]] == list(zip(
        live["venue_seq"].tolist(), live["bid_px"].tolist(), live["ask_qty"].tolist(), strict=True))
