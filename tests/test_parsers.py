"""KuCoin and Binance websocket parsers against the reference vectors and recorded real traffic.

Every expectation comes from the reference vectors or from an independent straightforward parse of the same
recorded frames (``json.loads`` + ``float()``) written here; nothing is mocked and nothing leaves the machine.
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from conftest import SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.binance_messages import BinanceParser
from feeds.emit import ListEmitter
from feeds.kucoin_messages import Control, KucoinParser
from pipeline.records import FLAG_LOCAL_TIME, FLAG_RESYNC

REF = SHARED / "reference" / "test_vectors.json"
REC = SHARED / "data" / "recorded"
GZ = REC / "binance_2024-08-08"
GZ_FILES = ["spot_btcusdt_20240808.gz", "spot_ethusdt_20240808.gz", "usdm_btcusdt_20240808.gz",
            "usdm_ethusdt_20240808.gz"]
T_WALL = 1_700_000_000_123_456_789
MASK63 = (1 << 63) - 1


# -- recorded data readers (independent of the project's recording reader) ---------------------------------------


def _ns(t: str) -> int:
    return int(Decimal(t) * 1_000_000_000)


def read_ws(path: Path) -> list[tuple[int, bytes]]:
    """Received frames of a cryptofeed recording (``T: MESSAGE`` lines), as (receive wall ns, frame)."""
    out = []
    for line in path.read_bytes().splitlines():
        if not line[:1].isdigit():  # connection, sent-message and REST lines start with the URL
            continue
        t, _, msg = line.partition(b": ")
        out.append((_ns(t.decode()), msg))
    return out


def read_http(path: Path) -> list[tuple[str, int, bytes]]:
    """REST responses of a cryptofeed recording (``URL -> T: BODY``), as (url, receive wall ns, body)."""
    out = []
    for line in path.read_bytes().splitlines():
        head, sep, body = line.partition(b": ")
        url, arrow, t = head.decode().rpartition(" -> ")
        if sep and arrow:
            out.append((url, _ns(t), body))
    return out


def read_gz(name: str) -> list[tuple[int, bytes]]:
    """``LOCAL_NS RAW_JSON`` lines of a hftbacktest capture."""
    with gzip.open(GZ / name, "rb") as f:
        return [(int(t), msg) for t, _, msg in (line.rstrip(b"\n").partition(b" ") for line in f)]


@pytest.fixture(scope="module")
def vectors() -> dict:
    return json.loads(REF.read_text())["messages"]


@pytest.fixture(scope="module")
def kucoin_frames() -> list[tuple[int, bytes]]:
    return read_ws(REC / "KUCOIN.ws.1.0")


@pytest.fixture(scope="module")
def futures_frames() -> list[tuple[int, bytes]]:
    return read_ws(REC / "BINANCE_FUTURES.ws.1.0")


def kucoin_symbols(frames) -> dict[str, int]:
    syms = sorted({json.loads(m)["topic"].split(":")[1] for _, m in frames if b'"topic":"/market/ticker:' in m})
    return {s: i for i, s in enumerate(syms)}


def binance_symbols(frames) -> dict[str, int]:
    syms = sorted({json.loads(m)["data"]["s"] for _, m in frames if m.startswith(b'{"stream"')})
    return {s: i for i, s in enumerate(syms)}


def valid_quote(*xs: float) -> bool:
    return all(math.isfinite(x) and x > 0 for x in xs)


def check_records(records: list[tuple]) -> None:
    """Every record an emitter stored is valid: finite positive prices and sizes, bid < ask."""
    for r in records:
        if r[0] == "bbo":
            bid, bq, ask, aq = r[7:11]
            assert valid_quote(bid, bq, ask, aq) and bid < ask, r
        elif r[0] == "trade":
            assert valid_quote(r[7], r[8]) and r[9] in (-1, 0, 1), r
        else:
            bids, asks = r[7], r[8]
            assert np.isfinite(bids).all() and np.isfinite(asks).all() and (bids > 0).all() and (asks > 0).all(), r
            if len(bids) and len(asks):
                assert bids[0, 0] < asks[0, 0], r


# -- independent expectation ---------------------------------------------------------------------------------------


def expect_kucoin(frames, symbols: dict[str, int]) -> tuple[list[tuple], int, int]:
    """(records, out-of-order count, refused-value count) of a plain parse of KuCoin frames."""
    out, ooo, refused, last = [], 0, 0, {}
    for n, (t, raw) in enumerate(frames, 1):
        m = json.loads(raw)
        if m.get("type") != "message" or ":" not in m.get("topic", ""):
            continue
        sym = m["topic"].split(":", 1)[1]
        d = m["data"]
        if m["subject"] == "trade.ticker":
            seq = int(d["sequence"])
            if seq <= last.get(sym, -1):
                ooo += 1
                continue
            last[sym] = seq
            q = [float(d[k]) for k in ("bestBid", "bestBidSize", "bestAsk", "bestAskSize")]
            if not (valid_quote(*q) and q[0] < q[2]):
                refused += 1
                continue
            out.append(("bbo", n, t, symbols[sym], d["time"], 0, seq, *q))
        elif m["subject"] == "trade.l3match":
            tid = d["tradeId"]
            tid = int(tid) if tid.isdigit() else int(tid, 16) & MASK63
            out.append(("trade", n, t, symbols[sym], int(d["time"]) // 1_000_000, 0, tid, float(d["price"]),
                        float(d["size"]), {"buy": 1, "sell": -1}[d["side"]]))
    return out, ooo, refused


def expect_binance(frames, symbols: dict[str, int], market: str) -> tuple[list[tuple], int, int]:
    """(records, out-of-order count, refused-value count) of a plain parse of Binance combined-stream frames."""
    out, ooo, refused, last = [], 0, 0, {}
    for n, (t, raw) in enumerate(frames, 1):
        m = json.loads(raw)
        if "stream" not in m:
            continue
        kind = m["stream"].split("@")[1]
        d = m["data"]
        inst = symbols[d["s"]]
        if kind == "bookTicker":
            if d["u"] <= last.get(inst, -1):
                ooo += 1
                continue
            last[inst] = d["u"]
            q = [float(d[k]) for k in "bBaA"]
            if not (valid_quote(*q) and q[0] < q[2]):
                refused += 1
                continue
            if market == "usdm":
                out.append(("bbo", n, t, inst, d["E"], 0, d["u"], *q))
            else:
                out.append(("bbo", n, t, inst, t // 1_000_000, FLAG_LOCAL_TIME, d["u"], *q))
        elif kind in ("aggTrade", "trade"):
            out.append(("trade", n, t, inst, d["T"], 0, d["a" if kind == "aggTrade" else "t"], float(d["p"]),
                        float(d["q"]), -1 if d["m"] else 1))
    return out, ooo, refused


def reorder(frames, every: int = 7) -> list[tuple[int, bytes]]:
    """The frames with every ``every``-th pair of successive frames of the same stream swapped (real frames
    arriving out of order)."""
    out = list(frames)
    by_stream: dict[bytes, list[int]] = {}
    for i, (_, m) in enumerate(out):
        j = m.find(b'"topic":"') if m.find(b'"topic":"') >= 0 else m.find(b'"stream":"')
        if j >= 0:
            by_stream.setdefault(m[j: m.index(b'"', j + 10)], []).append(i)
    for idx in by_stream.values():
        for a, b in list(itertools.pairwise(idx))[::every]:
            out[a], out[b] = out[b], out[a]
    return out


# -- 1. reference vectors ----------------------------------------------------------------------------------------


def test_kucoin_ticker_vectors(vectors):
    vs = vectors["kucoin_ticker"]
    syms = {v["expected"]["symbol"]: i for i, v in enumerate(vs)}
    e = ListEmitter()
    p = KucoinParser(syms, e)
    for i, v in enumerate(vs):
        assert p.on_frame(v["raw"].encode(), 11, T_WALL) is None
        x = v["expected"]
        assert e.records[-1] == ("bbo", i + 1, T_WALL, syms[x["symbol"]], x["exchange_ts_ms"], 0, x["sequence"],
                                 float(x["bid"]), float(x["bid_size"]), float(x["ask"]), float(x["ask_size"]))
    assert len(e.records) == len(vs) and e.counts.parse_err == e.counts.bad_value == 0


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_binance_vectors(vectors, market):
    keys = [f"binance_{market}_bookTicker", f"binance_{market}_aggTrade"]
    syms: dict[str, int] = {}
    for k in keys:
        for v in vectors[k]:
            syms.setdefault(v["expected"]["symbol"], len(syms))
    e = ListEmitter()
    p = BinanceParser(syms, e, market=market)
    n = 0
    for v in vectors[keys[0]]:
        n += 1
        assert p.on_frame(v["raw"].encode(), 11, T_WALL) is None
        x = v["expected"]
        if market == "spot":
            assert x["exchange_ts_ms"] is None
            ts, flags = T_WALL // 1_000_000, FLAG_LOCAL_TIME
        else:
            ts, flags = x["exchange_ts_ms"], 0
        assert e.records[-1] == ("bbo", n, T_WALL, syms[x["symbol"]], ts, flags, x["sequence"], float(x["bid"]),
                                 float(x["bid_size"]), float(x["ask"]), float(x["ask_size"]))
    for v in vectors[keys[1]]:
        n += 1
        assert p.on_frame(v["raw"].encode(), 11, T_WALL) is None
        x = v["expected"]
        side = {"buy": 1, "sell": -1}[x["taker_side"]]
        assert side == (-1 if x["buyer_is_maker"] else 1)
        assert e.records[-1] == ("trade", n, T_WALL, syms[x["symbol"]], x["trade_ts_ms"], 0, x["agg_trade_id"],
                                 float(x["price"]), float(x["qty"]), side)
    assert len(e.records) == n and e.counts.parse_err == e.counts.bad_value == 0


def test_kucoin_control_vectors(vectors):
    vs = vectors["kucoin_control_and_edge"]
    e = ListEmitter()
    p = KucoinParser({"BCHSV-USDT": 0}, e)
    got = [p.on_frame(v["raw"].encode(), 1, T_WALL) for v in vs]
    assert got == [Control("welcome", "NSkIrWGB1s"), Control("ack", "1"), None]
    assert e.records == [] and e.counts.frames == 3 and e.counts.parse_err == e.counts.bad_value == 0
    assert p.on_frame(b'{"id":"p7","type":"pong"}', 1, T_WALL) == Control("pong", "p7")
    err = p.on_frame(b'{"id":"2","type":"error","code":404,"data":"topic /market/x:Y is not found"}', 1, T_WALL)
    assert err == Control("error", "2", "code 404: topic /market/x:Y is not found")
    assert p.on_frame(b'{"id":"3","type":"notice"}', 1, T_WALL) is None  # unknown types are ignored


def test_binance_control_frames():
    e = ListEmitter()
    p = BinanceParser({"BTCUSDT": 0}, e)
    assert p.on_frame(b'{"result":null,"id":1}', 1, T_WALL) == Control("result", "1", "")
    assert p.on_frame(b'{"result":["btcusdt@bookTicker"],"id":"x"}', 1, T_WALL) == \
        Control("result", "x", '["btcusdt@bookTicker"]')
    assert p.on_frame(b'{"code":2,"msg":"Invalid request: unknown variant","id":4}', 1, T_WALL) == \
        Control("error", "4", "code 2: Invalid request: unknown variant")
    assert p.on_frame(b'{"e":"serverShutdown","E":1700000000000}', 1, T_WALL) == Control("serverShutdown")
    assert e.records == [] and e.counts.parse_err == e.counts.bad_value == 0


# -- 2. recorded traffic against an independent parse ------------------------------------------------------------


@pytest.mark.parametrize("order", ["recorded", "reordered"])
def test_kucoin_recorded(kucoin_frames, order):
    frames = kucoin_frames if order == "recorded" else reorder(kucoin_frames)
    syms = kucoin_symbols(frames)
    want, ooo, refused = expect_kucoin(frames, syms)
    e = ListEmitter()
    p = KucoinParser(syms, e)
    controls = [p.on_frame(m, n, t) for n, (t, m) in enumerate(frames)]
    assert e.records == want
    assert sum(r[0] == "bbo" for r in want) + ooo + refused == sum(b'"trade.ticker"' in m for _, m in frames) == 830
    assert sum(r[0] == "trade" for r in want) == 18
    assert e.counts.by_kind.get("out_of_order", 0) == ooo and e.counts.bad_value == ooo + refused
    assert e.counts.parse_err == 0 and e.counts.frames == len(frames)
    assert [c.type for c in controls if c is not None] == ["welcome"] + ["ack"] * 13
    if order == "reordered":
        assert ooo > 0


@pytest.mark.parametrize("order", ["recorded", "reordered"])
def test_binance_futures_recorded(futures_frames, order):
    frames = futures_frames if order == "recorded" else reorder(futures_frames)
    syms = binance_symbols(frames)
    want, ooo, refused = expect_binance(frames, syms, "usdm")
    e = ListEmitter()
    p = BinanceParser(syms, e, market="usdm")
    for n, (t, m) in enumerate(frames):
        assert p.on_frame(m, n, t) is None
    assert e.records == want
    assert sum(r[0] == "bbo" for r in want) + ooo + refused == 613
    assert sum(r[0] == "trade" for r in want) == 91
    assert e.counts.by_kind.get("out_of_order", 0) == ooo and e.counts.bad_value == ooo + refused
    assert e.counts.parse_err == 0
    if order == "reordered":
        assert ooo > 0


@pytest.mark.parametrize("name", GZ_FILES)
def test_binance_2024_recorded(name):
    frames = read_gz(name)
    market = name.split("_")[0]
    syms = binance_symbols(frames)
    for order in ("recorded", "reordered"):
        fs = frames if order == "recorded" else reorder(frames)
        want, ooo, refused = expect_binance(fs, syms, market)
        e = ListEmitter()
        p = BinanceParser(syms, e, market=market)
        for n, (t, m) in enumerate(fs):
            assert p.on_frame(m, n, t) is None
        assert e.records == want, order
        assert e.counts.by_kind.get("out_of_order", 0) == ooo and e.counts.bad_value == ooo + refused
        assert e.counts.parse_err == 0
        n_bt = sum(b'@bookTicker"' in m for _, m in fs)
        assert sum(r[0] == "bbo" for r in want) + ooo + refused == n_bt > 20_000
        assert sum(r[0] == "trade" for r in want) == sum(b'@trade"' in m for _, m in fs) > 5000
        if order == "reordered":
            assert ooo > 0


# -- 3. bad input --------------------------------------------------------------------------------------------------

K_TICKER = {"type": "message", "topic": "/market/ticker:BTC-USDT", "subject": "trade.ticker",
            "data": {"sequence": "1612844051653", "bestAsk": "62000.2", "size": "0.01", "bestBidSize": "3.7",
                     "price": "62000.1", "time": 1619378326323, "bestAskSize": "14.04", "bestBid": "62000.1"}}
B_TICKER = {"stream": "btcusdt@bookTicker",
            "data": {"e": "bookTicker", "u": 600859600576, "s": "BTCUSDT", "b": "61800.20", "B": "2.5",
                     "a": "61800.30", "A": "2.51", "T": 1626992741012, "E": 1626992741017}}
B_AGG = {"stream": "btcusdt@aggTrade",
         "data": {"e": "aggTrade", "E": 1626992741575, "a": 16599292, "s": "BTCUSDT", "p": "61800.30", "q": "10",
                  "f": 23961322, "l": 23961322, "T": 1626992741421, "m": False}}


_DELETE = object()


def _with(frame: dict, **data) -> bytes:
    """``frame`` as JSON bytes with ``data`` fields replaced (or deleted: ``_DELETE``)."""
    f = json.loads(json.dumps(frame))
    for k, v in data.items():
        if v is _DELETE:
            del f["data"][k]
        else:
            f["data"][k] = v
    return json.dumps(f).encode()


def _kucoin() -> tuple[KucoinParser, ListEmitter]:
    e = ListEmitter()
    return KucoinParser({"BTC-USDT": 3}, e), e


def _binance(market: str = "usdm") -> tuple[BinanceParser, ListEmitter]:
    e = ListEmitter()
    return BinanceParser({"BTCUSDT": 3}, e, market=market), e


def _one_bad(parser, e: ListEmitter, frame: bytes, counter: str, kind: str) -> None:
    before = e.counts.by_kind.get(kind, 0), getattr(e.counts, counter), len(e.records)
    assert parser.on_frame(frame, 1, T_WALL) is None
    after = e.counts.by_kind.get(kind, 0), getattr(e.counts, counter), len(e.records)
    assert after == (before[0] + 1, before[1] + 1, before[2]), (frame, e.counts)


PARSE_ERRORS = [
    (b'{"type":"message","topic":"/market/ticker:BTC-USDT",', "malformed_json"),
    (b"", "malformed_json"),
    (b"\xff\xfe{}", "malformed_json"),
    (b'{"type":"message","topic":"/market/ticker:BTC-USDT","data":{"sequence":"1",}}', "malformed_json"),
    (b"[1,2,3]", "missing_field"),
    (b'{"type":"message","topic":"/market/ticker:BTC-USDT","subject":"trade.ticker"}', "missing_field"),
    (b'{"type":"message","topic":7}', "missing_field"),
    (_with(K_TICKER, bestBid=_DELETE), "missing_field"),
    (_with(K_TICKER, sequence=_DELETE), "missing_field"),
    (_with(K_TICKER, bestAsk=[1]), "missing_field"),
    (_with(K_TICKER, bestAskSize=None), "missing_field"),
    (_with(K_TICKER, bestBid="abc"), "missing_field"),
    (_with(K_TICKER, sequence="12x"), "missing_field"),
    (_with(K_TICKER, sequence="-5"), "missing_field"),
    (_with(K_TICKER, sequence=str(1 << 64)), "missing_field"),
    (_with(K_TICKER, time="soon"), "missing_field"),
]


@pytest.mark.parametrize(("frame", "kind"), PARSE_ERRORS)
def test_kucoin_parse_errors(frame, kind):
    p, e = _kucoin()
    _one_bad(p, e, frame, "parse_err", kind)
    _one_bad(p, e, json.dumps(K_TICKER).encode()[:-9], "parse_err", "malformed_json")  # truncated real frame
    assert p.on_frame(json.dumps(K_TICKER).encode(), 1, T_WALL) is None and len(e.records) == 1  # still parses


BAD_VALUES = [("0", "bad_price"), ("-1", "bad_price"), ("NaN", "bad_price"), ("nan", "bad_price"),
              ("inf", "bad_price"), ("-inf", "bad_price"), (0, "bad_price")]


@pytest.mark.parametrize(("value", "kind"), BAD_VALUES)
@pytest.mark.parametrize("field", ["bestBid", "bestBidSize", "bestAsk", "bestAskSize"])
def test_kucoin_bad_values(field, value, kind):
    p, e = _kucoin()
    _one_bad(p, e, _with(K_TICKER, **{field: value}), "bad_value", kind)
    assert e.counts.parse_err == 0


def test_kucoin_crossed_and_out_of_order():
    p, e = _kucoin()
    _one_bad(p, e, _with(K_TICKER, bestBid="62000.2"), "bad_value", "crossed")  # bid == ask
    _one_bad(p, e, _with(K_TICKER, sequence="1612844051654", bestBid="62000.3"), "bad_value", "crossed")
    assert p.on_frame(_with(K_TICKER, sequence="1612844051655"), 1, T_WALL) is None and len(e.records) == 1
    _one_bad(p, e, _with(K_TICKER, sequence="1612844051655"), "bad_value", "out_of_order")  # repeated
    _one_bad(p, e, _with(K_TICKER, sequence="1612844051600"), "bad_value", "out_of_order")  # older
    assert p.on_frame(_with(K_TICKER, sequence="1612844051656"), 1, T_WALL) is None and len(e.records) == 2
    # an unknown symbol is not an error, and another symbol has its own sequence
    f = json.loads(_with(K_TICKER, sequence="5"))
    f["topic"] = "/market/ticker:ETH-USDT"
    assert p.on_frame(json.dumps(f).encode(), 1, T_WALL) is None
    assert len(e.records) == 2 and e.counts.parse_err == 0 and e.counts.bad_value == 4


def test_kucoin_match_bad():
    p, e = _kucoin()
    match = {"type": "message", "topic": "/market/match:BTC-USDT", "subject": "trade.l3match",
             "data": {"symbol": "BTC-USDT", "sequence": "1612701563869", "side": "sell", "size": "0.5",
                      "price": "62000.1", "time": "1619378327739050725", "type": "match",
                      "tradeId": "11067996711960577"}}
    assert p.on_frame(json.dumps(match).encode(), 1, T_WALL) is None
    assert e.records == [("trade", 1, T_WALL, 3, 1619378327739, 0, 11067996711960577, 62000.1, 0.5, -1)]
    _one_bad(p, e, _with(match, price="0"), "bad_value", "bad_price")
    _one_bad(p, e, _with(match, size="NaN"), "bad_value", "bad_price")
    _one_bad(p, e, _with(match, tradeId="zz-top"), "parse_err", "missing_field")
    _one_bad(p, e, _with(match, time=_DELETE), "parse_err", "missing_field")
    _one_bad(p, e, _with(match, side=1), "parse_err", "missing_field")


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_binance_bad_input(market):
    p, e = _binance(market)
    ticker = B_TICKER if market == "usdm" else {"stream": B_TICKER["stream"],
                                                 "data": {k: B_TICKER["data"][k] for k in "usbBaA"}}
    good = json.dumps(ticker).encode()
    for frame in (good[:-1], good[: len(good) // 2], b"{", b"nul", b'{"stream":"btcusdt@bookTicker","data":{}'):
        _one_bad(p, e, frame, "parse_err", "malformed_json")
    for frame in (_with(ticker, b=_DELETE), _with(ticker, u="x"), _with(ticker, A=[]), _with(ticker, u=-1),
                  b'{"stream":"btcusdt@bookTicker"}', b'{"stream":5,"data":{}}', _with(B_AGG, m="maybe"),
                  _with(B_AGG, T=_DELETE), _with(B_AGG, a=None)):
        _one_bad(p, e, frame, "parse_err", "missing_field")
    if market == "usdm":
        _one_bad(p, e, _with(ticker, E=_DELETE), "parse_err", "missing_field")
    u = 600859600000  # each refused ticker still advances the symbol's last seen update id
    for field in "bBaA":
        for value, kind in BAD_VALUES:
            u += 1
            _one_bad(p, e, _with(ticker, u=u, **{field: value}), "bad_value", kind)
    for field in "pq":
        for value, kind in BAD_VALUES:
            _one_bad(p, e, _with(B_AGG, **{field: value}), "bad_value", kind)
    _one_bad(p, e, _with(ticker, b="61800.30"), "bad_value", "crossed")
    _one_bad(p, e, _with(ticker, b="61800.40", u=600859600577), "bad_value", "crossed")
    assert p.on_frame(_with(ticker, u=600859600578), 1, T_WALL) is None and len(e.records) == 1
    _one_bad(p, e, _with(ticker, u=600859600578), "bad_value", "out_of_order")
    _one_bad(p, e, _with(ticker, u=600859600500), "bad_value", "out_of_order")
    # raw single-stream frames take the same checks
    _one_bad(p, e, json.dumps(ticker["data"]).encode(), "bad_value", "out_of_order")
    assert p.on_frame(json.dumps(dict(ticker["data"], u=600859600579)).encode(), 1, T_WALL) is None
    assert p.on_frame(json.dumps(B_AGG["data"]).encode(), 1, T_WALL) is None
    assert [r[0] for r in e.records] == ["bbo", "bbo", "trade"]
    # unknown symbols and streams are not errors
    for frame in (b'{"stream":"ethusdt@bookTicker","data":{"u":1}}', b'{"stream":"btcusdt@kline_1m","data":{}}',
                  b'{"stream":"btcusdt@depth@100ms","data":{}}', b'{"e":"kline","s":"BTCUSDT","k":{}}'):
        assert p.on_frame(frame, 1, T_WALL) is None
    assert len(e.records) == 3
    check_records(e.records)


# -- hypothesis: nothing raises, nothing invalid gets out -----------------------------------------------------------

_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sample_frames() -> list[bytes]:
    k = [m for _, m in read_ws(REC / "KUCOIN.ws.1.0")]
    b = [m for _, m in read_ws(REC / "BINANCE_FUTURES.ws.1.0")]
    picks = [m for m in k if b"trade.ticker" in m][:40] + [m for m in k if b"l3match" in m][:5] + k[:3]
    picks += [m for m in b if b"bookTicker" in m][:40] + [m for m in b if b"aggTrade" in m][:10]
    picks += [m for m in b if b"depthUpdate" in m][:5] + [m for m in b if b"kline" in m][:2]
    return picks


SAMPLES = _sample_frames()
K_SYMS = {"SNX-BTC": 0, "BCHSV-USDT": 1, "ANKR-BTC": 2, "CAPP-BTC": 3, "FET-BTC": 4, "DAPPT-BTC": 5, "EQZ-BTC": 6,
          "NRG-BTC": 7, "COV-BTC": 8, "LTX-USDT": 9}
B_SYMS = {"SUSHIUSDT": 0, "AKROUSDT": 1, "KEEPUSDT": 2, "CTKUSDT": 3}
WEIRD = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.floats(allow_nan=True),
                  st.sampled_from(["0", "-1", "NaN", "inf", "1e400", "", "abc", "1" * 30, "0.0000001"]),
                  st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _parsers() -> list[tuple[object, ListEmitter]]:
    out = []
    for make in (lambda e: KucoinParser(K_SYMS, e), lambda e: BinanceParser(B_SYMS, e, market="usdm"),
                 lambda e: BinanceParser(B_SYMS, e, market="spot")):
        e = ListEmitter()
        out.append((make(e), e))
    return out


def _feed_all(frame: bytes) -> None:
    for p, e in _parsers():
        p.on_frame(frame, 1, T_WALL)
        assert e.counts.frames == 1
        check_records(e.records)


@_FUZZ
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes(data):
    _feed_all(data)


@_FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_fuzz_byte_flips(frame, data):
    b = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
    _feed_all(bytes(b))


@_FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_fuzz_truncation(frame, data):
    _feed_all(frame[: data.draw(st.integers(0, len(frame)))])


def _paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))


@_FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_fuzz_fields(frame, data):
    """Real frames with fields deleted or replaced by values of other types."""
    obj = json.loads(frame)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_paths(obj))
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = obj
        for k in path[:-1]:
            parent = parent[k]
        if data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(WEIRD)
    _feed_all(json.dumps(obj, allow_nan=True).encode())



# -- 4. depth: local books against the venue's own ticker ----------------------------------------------------------


def _url_symbol(url: str) -> str:
    return parse_qs(urlparse(url).query)["symbol"][0]


def cryptofeed_events(ws: str, http: str) -> list[tuple[int, str, bytes]]:
    """Websocket frames and REST snapshots of a cryptofeed recording in receive order: (wall ns, symbol of a
    snapshot or '' for a frame, bytes)."""
    ev = [(t, "", m) for t, m in read_ws(REC / ws)] + [(t, _url_symbol(u), b) for u, t, b in read_http(REC / http)]
    return sorted(ev, key=lambda x: x[0])


def gz_events(name: str) -> list[tuple[int, str, bytes]]:
    """Frames of a 2024 capture with its inline depth snapshot (the one line that is not a stream frame)."""
    frames = read_gz(name)
    (sym,) = binance_symbols(frames)
    return [(t, "" if m.startswith(b'{"stream"') else sym, m) for t, m in frames]


def frames_of(events) -> list[tuple[int, bytes]]:
    return [(t, m) for t, s, m in events if not s]


def replay(parser, events, skip: int = -1, at: int = -1, then=None) -> None:
    """Feed events (snapshots through ``on_snapshot``) leaving out event ``skip``; ``then()`` runs before event
    ``at``."""
    for n, (t, sym, m) in enumerate(events):
        if n == at:
            then()
        if n == skip:
            continue
        if sym:
            parser.on_snapshot(sym, m, n, t)
        else:
            parser.on_frame(m, n, t)


def top_vs_ticker(records) -> tuple[dict[int, int], list]:
    """Per instrument, how many book records have a ticker at the same venue_seq with the same best bid/ask; and
    the ones whose top differs from that ticker."""
    bbo = {(r[3], r[6]): r[7:11] for r in records if r[0] == "bbo"}
    same: dict[int, int] = {}
    differ = []
    for r in records:
        if r[0] == "book" and (r[3], r[6]) in bbo:
            top = (r[7][0, 0], r[7][0, 1], r[8][0, 0], r[8][0, 1])
            if top == bbo[r[3], r[6]]:
                same[r[3]] = same.get(r[3], 0) + 1
            else:
                differ.append((r[:7], top, bbo[r[3], r[6]]))
    return same, differ


def check_books(e: ListEmitter, insts, depth: int = 10) -> None:
    """Book records are valid, at most ``depth`` levels a side, and only each instrument's first one carries
    FLAG_RESYNC."""
    check_records(e.records)
    seen: set[int] = set()
    for r in e.records:
        if r[0] == "book":
            assert 0 < len(r[7]) <= depth and 0 < len(r[8]) <= depth
            assert bool(r[5] & FLAG_RESYNC) == (r[3] not in seen), r[:7]
            seen.add(r[3])
    assert seen == set(insts)


def make_parser(venue: str, symbols: dict[str, int], books: bool = True, depth: int = 10):
    e = ListEmitter()
    if venue == "kucoin":
        return KucoinParser(symbols, e, books=books, depth=depth), e
    return BinanceParser(symbols, e, market=venue, books=books, depth=depth), e


def without_books(records) -> list[tuple]:
    """Records without the book ones and without src_seq (snapshots are frames too, so they shift it)."""
    return [(r[0], *r[2:]) for r in records if r[0] != "book"]


DEPTH_CASES = {
    "binance-usdm-2021": ("usdm", lambda: cryptofeed_events("BINANCE_FUTURES.ws.1.0", "BINANCE_FUTURES.http.0.0")),
    "kucoin-2021": ("kucoin", lambda: cryptofeed_events("KUCOIN.ws.1.0", "KUCOIN.http.0.0")),
    **{name[:12]: (name.split("_")[0], lambda name=name: gz_events(name)) for name in GZ_FILES},
}


@pytest.mark.parametrize("case", list(DEPTH_CASES))
def test_depth_top_equals_ticker(case):
    """Books from depth diffs + recorded REST snapshots: wherever a book update ends at the update id of a ticker,
    the book's best bid/ask equals that ticker, for every symbol."""
    venue, load = DEPTH_CASES[case]
    events = load()
    frames = frames_of(events)
    syms = kucoin_symbols(frames) if venue == "kucoin" else binance_symbols(frames)
    synced = {s for _, s, _ in events if s in syms}
    p, e = make_parser(venue, syms, depth=5 if venue == "kucoin" else 10)
    assert p.need_snapshot == set(syms)
    replay(p, events)
    same, differ = top_vs_ticker(e.records)
    assert differ == []
    assert set(same) == {syms[s] for s in synced}, same
    assert p.need_snapshot == set(syms) - synced
    assert e.counts.gaps == e.counts.resyncs == e.counts.parse_err == e.counts.bad_value == 0, e.counts
    check_books(e, [syms[s] for s in synced], depth=5 if venue == "kucoin" else 10)
    # tickers and trades are exactly those of the plain parse
    plain = expect_kucoin(frames, syms)[0] if venue == "kucoin" else expect_binance(frames, syms, venue)[0]
    assert without_books(e.records) == without_books(plain)


def snapshot_body(venue: str, sync) -> bytes:
    """A REST snapshot body in the venue's format holding ``sync``'s whole book at its update id."""
    bids, asks = sync.book.top(1 << 30)

    def levels(a):
        return [[np.format_float_positional(p, trim="-"), np.format_float_positional(q, trim="-")]
                for p, q in a.tolist()]

    if venue == "kucoin":
        return json.dumps({"code": "200000", "data": {"time": 0, "sequence": str(sync.last_id),
                                                      "bids": levels(bids), "asks": levels(asks)}}).encode()
    return json.dumps({"lastUpdateId": sync.last_id, "bids": levels(bids), "asks": levels(asks)}).encode()


def _plain_books(records, inst: int) -> list[tuple]:
    return [(r[6], r[7].tolist(), r[8].tolist()) for r in records if r[0] == "book" and r[3] == inst]


@pytest.mark.parametrize("case", ["binance-usdm-2021", "kucoin-2021", "spot_btcusdt"])
def test_depth_gap_resyncs_one_symbol(case):
    """A lost depth frame is a gap for its symbol only: its books stop, it asks for a snapshot, and after one its
    books are again those of an uninterrupted run; other symbols never notice."""
    venue, load = DEPTH_CASES[case]
    events = load()
    frames = frames_of(events)
    syms = kucoin_symbols(frames) if venue == "kucoin" else binance_symbols(frames)
    depth_mark = b"trade.l2update" if venue == "kucoin" else b"depthUpdate"
    sym = max(syms, key=lambda s: sum(s.encode() in m and depth_mark in m for _, _, m in events))
    inst = syms[sym]
    full, e_full = make_parser(venue, syms)
    replay(full, events)
    applied = {r[6] for r in e_full.records if r[0] == "book" and r[3] == inst}  # update ids the book reached

    def last_id(m: bytes) -> int:
        d = json.loads(m)["data"]
        return d["sequenceEnd"] if venue == "kucoin" else d["u"]

    diffs = [n for n, (_, s, m) in enumerate(events)
             if not s and depth_mark in m and sym.encode() in m and last_id(m) in applied]
    lost, at = diffs[10], diffs[40]

    ref, e_ref = make_parser(venue, syms)
    replay(ref, events[:at])
    body = snapshot_body(venue, ref.states[sym].sync)  # the reference book where the snapshot arrives
    marks = {"ref": len(e_ref.records)}
    replay(ref, events[at:])
    p, e = make_parser(venue, syms)

    unsynced = set(syms) - {s for _, s, _ in events[:at]}  # their snapshots are still to come

    def resync() -> None:
        assert p.need_snapshot == unsynced | {sym}
        assert e.counts.gaps == e.counts.resyncs == 1 == e.counts.by_kind["gap"]
        marks["p"] = len(e.records)
        assert p.on_snapshot(sym, body, 0, events[at][0])
        assert p.need_snapshot == unsynced

    replay(p, events, skip=lost, at=at, then=resync)
    assert e_ref.counts.gaps == 0 and e.counts.gaps == 1 and e.counts.parse_err == 0

    before_ref = _plain_books(e_ref.records[: marks["ref"]], inst)
    before = _plain_books(e.records[: marks["p"]], inst)
    assert len(before) < len(before_ref) - 20 and before == before_ref[: len(before)]  # stopped at the gap
    after = [r for r in e.records[marks["p"]:] if r[0] == "book" and r[3] == inst]
    assert after[0][5] & FLAG_RESYNC and not any(r[5] & FLAG_RESYNC for r in after[1:])
    # after the snapshot: the book the reference had at that point, then the same updates
    assert _plain_books(after, inst) == before_ref[-1:] + _plain_books(e_ref.records[marks["ref"]:], inst)
    others = [r for r in e.records if r[3] != inst]
    others_ref = [r for r in e_ref.records if r[3] != inst]
    assert without_books(others) == without_books(others_ref)
    assert [x for r in others if r[0] == "book" for x in (r[6], r[7].tolist(), r[8].tolist())] == \
        [x for r in others_ref if r[0] == "book" for x in (r[6], r[7].tolist(), r[8].tolist())]


def test_depth_control_vector_and_bad_snapshots(vectors):
    """The price-"0" level2 change is buffered before a snapshot; bad snapshot bodies are counted, never raise."""
    p, e = make_parser("kucoin", {"BCHSV-USDT": 0})
    edge = vectors["kucoin_control_and_edge"][2]["raw"].encode()
    assert p.on_frame(edge, 1, T_WALL) is None and e.records == [] and e.counts.parse_err == 0
    for body in (b"", b"{", b'{"code":"400100","msg":"bad"}', b'{"code":"200000","data":{"sequence":"x"}}',
                 b'{"code":"200000","data":{"sequence":"5","bids":[["1","-2"]],"asks":[]}}'):
        assert p.on_snapshot("BCHSV-USDT", body, 1, T_WALL) is False
    assert e.counts.by_kind["bad_snapshot"] == 5 and p.need_snapshot == {"BCHSV-USDT"} and e.records == []
    assert p.on_snapshot("XYZ-USDT", b"{}", 1, T_WALL) is False  # not ours
    b, eb = make_parser("usdm", {"BTCUSDT": 0})
    for body in (b"[]", b'{"lastUpdateId":"a","bids":[],"asks":[]}', b'{"lastUpdateId":1,"bids":[["x","1"]]}'):
        assert b.on_snapshot("BTCUSDT", body, 1, T_WALL) is False
    assert eb.counts.by_kind["bad_snapshot"] == 3 and b.need_snapshot == {"BTCUSDT"}


@pytest.fixture(scope="module")
def depth_fuzz_setup():
    """Per venue: the recorded snapshots and the first real depth frames after them."""
    out = {}
    for venue, case in (("usdm", "binance-usdm-2021"), ("kucoin", "kucoin-2021")):
        events = DEPTH_CASES[case][1]()
        mark = b"trade.l2update" if venue == "kucoin" else b"depthUpdate"
        last_snap = max(n for n, (_, s, _) in enumerate(events) if s)
        snaps = [(s, m) for _, s, m in events if s]
        diffs = [m for _, s, m in events[last_snap:] if not s and mark in m][:60]
        frames = frames_of(events)
        syms = kucoin_symbols(frames) if venue == "kucoin" else binance_symbols(frames)
        out[venue] = (syms, snaps, diffs)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["usdm", "kucoin"]), st.data())
def test_fuzz_depth_frames(depth_fuzz_setup, venue, data):
    """Synced books fed mutated real depth frames, then the real ones that follow: nothing raises, no invalid
    record gets out."""
    syms, snaps, diffs = depth_fuzz_setup[venue]
    p, e = make_parser(venue, syms)
    for sym, body in snaps:
        p.on_snapshot(sym, body, 1, T_WALL)
    i = data.draw(st.integers(0, len(diffs) - 21))
    b = bytearray(diffs[i])
    how = data.draw(st.sampled_from(["flip", "truncate", "field"]))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
        frame = bytes(b)
    elif how == "truncate":
        frame = bytes(b[: data.draw(st.integers(0, len(b)))])
    else:
        obj = json.loads(b)
        paths = list(_paths(obj))
        path = data.draw(st.sampled_from(paths))
        parent = obj
        for k in path[:-1]:
            parent = parent[k]
        parent[path[-1]] = data.draw(st.one_of(WEIRD, st.lists(st.lists(WEIRD, max_size=3), max_size=3)))
        frame = json.dumps(obj, allow_nan=True).encode()
    p.on_frame(frame, 1, T_WALL)
    for m in diffs[i + 1: i + 21]:
        p.on_frame(m, 1, T_WALL)
    check_records(e.records)


def test_kucoin_all_tickers_topic_and_text_frames():
    """``/market/ticker:all`` names the symbol in the subject; text (str) frames parse like bytes."""
    p, e = _kucoin()
    f = json.loads(json.dumps(K_TICKER))
    f["topic"], f["subject"] = "/market/ticker:all", "BTC-USDT"
    assert p.on_frame(json.dumps(f).encode(), 1, T_WALL) is None
    f["subject"] = "ETH-USDT"  # not configured: ignored
    assert p.on_frame(json.dumps(f).encode(), 1, T_WALL) is None
    assert p.on_frame(_with(K_TICKER, sequence="1612844051654").decode(), 1, T_WALL) is None  # str frame
    assert [r[6] for r in e.records] == [1612844051653, 1612844051654] and e.counts.parse_err == 0


def test_binance_raw_depth_frames_sync():
    """Raw single-stream depthUpdate frames (no combined envelope) keep a book like combined ones."""
    events = DEPTH_CASES["binance-usdm-2021"][1]()
    syms = {"SUSHIUSDT": 0}
    p, e = make_parser("usdm", syms)
    q, eq = make_parser("usdm", syms)
    for n, (t, s, m) in enumerate(events):
        if s == "SUSHIUSDT":
            p.on_snapshot(s, m, n, t)
            q.on_snapshot(s, m, n, t)
        elif not s and b'"SUSHIUSDT"' in m:
            p.on_frame(m, n, t)
            q.on_frame(json.dumps(json.loads(m)["data"]).encode(), n, t)
    assert sum(r[0] == "book" for r in e.records) > 100
    assert [(r[0], *r[2:7]) for r in e.records] == [(r[0], *r[2:7]) for r in eq.records]
    assert all(np.array_equal(a[7], b[7]) for a, b in zip(e.records, eq.records, strict=True) if a[0] == "book")
