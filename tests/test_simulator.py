"""The exchange simulator as a real process on a loopback port, driven with websocket-client and urllib."""

from __future__ import annotations

import itertools
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import websocket
from conftest import SHARED
from simulator_client import Sim

ROOT = Path(__file__).resolve().parents[1]
RECORDED = SHARED / "data" / "recorded"
START_MS = 1_722_000_000_000
CLOSED = (websocket.WebSocketConnectionClosedException, ConnectionError, OSError)


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    """One simulator for the protocol and REST tests (no faults)."""
    s = Sim("--seed", "7", "--speed", "4", "--start-ms", str(START_MS), "--kucoin-ticker-ms", "20").ready()
    yield s
    assert s.stop() == 0


@pytest.fixture
def make_sim() -> Iterator[Callable[..., list[Sim]]]:
    """make_sim(args, ...) -> started simulators (started together); each must exit 0 on SIGTERM at teardown."""
    made: list[Sim] = []

    def make(*arg_lists: list[str], on_ready: Callable[[Sim], None] | None = None) -> list[Sim]:
        sims = [Sim(*args) for args in arg_lists]
        made.extend(sims)
        for s in sims:
            s.ready()
            if on_ready is not None:
                on_ready(s)
        return sims

    yield make
    codes = [s.stop() for s in made]
    assert codes == [0] * len(made)


# helpers ----------------------------------------------------------------------------------------------------------
def connect(url: str, timeout: float = 10.0) -> websocket.WebSocket:
    return websocket.create_connection(url, timeout=timeout, enable_multithread=True)


def recv(ws: websocket.WebSocket) -> Any:
    return json.loads(ws.recv())


def kucoin_connect(sim: Sim, connect_id: str = "c1") -> tuple[websocket.WebSocket, dict[str, Any]]:
    body = sim.request("/api/v1/bullet-public", method="POST")[1]
    assert body["code"] == "200000"
    server = body["data"]["instanceServers"][0]
    ws = connect(f"{server['endpoint']}?token={body['data']['token']}&connectId={connect_id}")
    assert recv(ws) == {"id": connect_id, "type": "welcome"}
    return ws, server


def kucoin_subscribe(ws: websocket.WebSocket, topic: str, sub_id: int) -> None:
    ws.send(json.dumps({"id": sub_id, "type": "subscribe", "topic": topic, "privateChannel": False,
                        "response": True}))


def until(ws: websocket.WebSocket, pred: Callable[[Any], bool], limit: int = 5000) -> Any:
    """First frame satisfying pred (skipping others)."""
    for _ in range(limit):
        m = recv(ws)
        if pred(m):
            return m
    raise AssertionError("frame never came")


class LocalBook:
    """A straightforward L2 book keyed by Decimal price."""

    def __init__(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self.bids = {Decimal(p): Decimal(q) for p, q, *_ in bids}
        self.asks = {Decimal(p): Decimal(q) for p, q, *_ in asks}

    def set(self, side: dict[Decimal, Decimal], price: str, size: str) -> None:
        if Decimal(size) == 0:
            side.pop(Decimal(price), None)
        else:
            side[Decimal(price)] = Decimal(size)

    def top(self) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        b, a = max(self.bids), min(self.asks)
        return b, self.bids[b], a, self.asks[a]


def dec(*values: str) -> tuple[Decimal, ...]:
    return tuple(Decimal(v) for v in values)


# KuCoin -------------------------------------------------------------------------------------------------------------
def test_kucoin_session_tickers(sim: Sim) -> None:
    ws, server = kucoin_connect(sim, "abc")
    assert server["endpoint"] == f"{sim.ws}/kucoin/ws" and server["pingInterval"] == 18000
    assert server["pingTimeout"] == 10000 and server["protocol"] == "websocket" and server["encrypt"] is False
    ws.send(json.dumps({"id": "p1", "type": "ping"}))
    assert recv(ws) == {"id": "p1", "type": "pong"}
    kucoin_subscribe(ws, "/market/ticker:BTC-USDT,ETH-USDT", 1)
    assert recv(ws) == {"id": "1", "type": "ack"}
    last: dict[str, int] = {}
    for _ in range(60):
        m = recv(ws)
        assert m["type"] == "message" and m["subject"] == "trade.ticker"
        sym = m["topic"].split(":")[1]
        d = m["data"]
        assert set(d) == {"sequence", "price", "size", "bestAsk", "bestAskSize", "bestBid", "bestBidSize", "time"}
        assert isinstance(d["time"], int) and all(isinstance(d[k], str) for k in d if k != "time")
        b, a = dec(d["bestBid"], d["bestAsk"])
        assert b < a
        assert int(d["sequence"]) > last.get(sym, 0)
        last[sym] = int(d["sequence"])
    assert set(last) == {"BTC-USDT", "ETH-USDT"}
    # errors: unknown topic, unknown symbol, unknown message type
    kucoin_subscribe(ws, "/market/nope:BTC-USDT", 2)
    err = until(ws, lambda m: m["type"] != "message")
    assert err["type"] == "error" and err["code"] == 404 and err["id"] == "2"
    kucoin_subscribe(ws, "/market/level2:DOGE-USDT", 3)
    err = until(ws, lambda m: m["type"] != "message")
    assert err["type"] == "error" and err["code"] == 404 and "DOGE-USDT" in err["data"]
    ws.send(json.dumps({"id": 4, "type": "unsubscribe", "topic": "/market/ticker:BTC-USDT,ETH-USDT",
                        "response": True}))
    assert until(ws, lambda m: m["type"] != "message") == {"id": "4", "type": "ack"}
    ws.close()


def test_kucoin_level2_and_snapshot_reproduce_ticker(sim: Sim) -> None:
    ws, _ = kucoin_connect(sim)
    kucoin_subscribe(ws, "/market/level2:BTC-USDT", 1)
    kucoin_subscribe(ws, "/market/ticker:BTC-USDT", 2)
    kucoin_subscribe(ws, "/market/match:BTC-USDT", 3)
    buffered = [recv(ws) for _ in range(40)]
    snap = sim.get("/api/v1/market/orderbook/level2_100?symbol=BTC-USDT")
    assert snap["code"] == "200000" and isinstance(snap["data"]["time"], int)
    book = LocalBook(snap["data"]["bids"], snap["data"]["asks"])
    seq = int(snap["data"]["sequence"])
    prev_end: int | None = None
    checked = matches = 0
    frames = iter(buffered)
    for _ in range(3000):
        m = next(frames, None) or recv(ws)
        if m["type"] == "ack":
            continue
        d = m["data"]
        if m["subject"] == "trade.l2update":
            assert d["symbol"] == "BTC-USDT" and isinstance(d["time"], int)
            if prev_end is not None:
                assert d["sequenceStart"] == prev_end + 1
            prev_end = d["sequenceEnd"]
            if d["sequenceEnd"] <= seq:
                continue
            assert d["sequenceStart"] <= seq + 1
            for side, rows in (("asks", d["changes"]["asks"]), ("bids", d["changes"]["bids"])):
                for price, size, s in rows:
                    if int(s) > seq:
                        book.set(book.asks if side == "asks" else book.bids, price, size)
            seq = d["sequenceEnd"]
        elif m["subject"] == "trade.ticker" and int(d["sequence"]) == seq:
            assert book.top() == dec(d["bestBid"], d["bestBidSize"], d["bestAsk"], d["bestAskSize"])
            checked += 1
        elif m["subject"] == "trade.l3match":
            assert set(d) == {"symbol", "sequence", "side", "size", "price", "takerOrderId", "time", "type",
                              "makerOrderId", "tradeId"}
            assert d["type"] == "match" and d["side"] in ("buy", "sell") and int(d["sequence"]) <= seq
            matches += 1
        if checked >= 25 and matches >= 3:
            break
    assert checked >= 25 and matches >= 3
    ws.close()


def test_kucoin_bad_token_refused(sim: Sim) -> None:
    ws = connect(f"{sim.ws}/kucoin/ws?token=nope&connectId=x")
    m = recv(ws)
    assert m["type"] == "error" and m["code"] == 401
    with pytest.raises(CLOSED):
        for _ in range(5):
            if not ws.recv():
                raise websocket.WebSocketConnectionClosedException("closed")


# Binance ------------------------------------------------------------------------------------------------------------
def _binance_sync(sim: Sim, url: str, snapshot: str, futures: bool) -> None:
    """Book from snapshot + diffs (venue rules), compared with bookTicker at equal update id."""
    ws = connect(url)
    buffered = [recv(ws) for _ in range(30)]
    snap = sim.get(snapshot)
    if futures:
        assert {"lastUpdateId", "E", "T", "bids", "asks"} == set(snap)
    else:
        assert {"lastUpdateId", "bids", "asks"} == set(snap)
    book = LocalBook(snap["bids"], snap["asks"])
    local = snap["lastUpdateId"]
    tickers: dict[int, tuple[Decimal, ...]] = {}
    last_ticker_u = 0
    prev_u: int | None = None
    synced = False
    checked = 0
    frames = iter(buffered)
    for _ in range(5000):
        m = next(frames, None) or recv(ws)
        d = m["data"]
        if m["stream"].endswith("@bookTicker"):
            keys = {"e", "u", "E", "T", "s", "b", "B", "a", "A"} if futures else {"u", "s", "b", "B", "a", "A"}
            assert set(d) == keys
            assert d["u"] > last_ticker_u
            last_ticker_u = d["u"]
            tickers[d["u"]] = dec(d["b"], d["B"], d["a"], d["A"])
            continue
        assert d["e"] == "depthUpdate"
        if prev_u is not None:
            if futures:
                assert d["pu"] == prev_u
            else:
                assert d["U"] == prev_u + 1
        prev_u = d["u"]
        if not synced:
            if (d["u"] < local) if futures else (d["u"] <= local):
                continue
            assert (d["U"] <= local <= d["u"]) if futures else (d["U"] <= local + 1 <= d["u"])
            synced = True
        for p, q in d["b"]:
            book.set(book.bids, p, q)
        for p, q in d["a"]:
            book.set(book.asks, p, q)
        local = d["u"]
        if local in tickers:
            assert book.top() == tickers[local]
            checked += 1
            if checked >= 20:
                break
    assert checked >= 20
    ws.close()


def test_binance_spot_depth_and_snapshot_reproduce_book_ticker(sim: Sim) -> None:
    _binance_sync(sim, f"{sim.ws}/binance/stream?streams=btcusdt@bookTicker/btcusdt@depth@100ms",
                  "/api/v3/depth?symbol=BTCUSDT&limit=1000", futures=False)


def test_binance_usdm_depth_and_snapshot_reproduce_book_ticker(sim: Sim) -> None:
    _binance_sync(sim, f"{sim.ws}/binance-usdm/public/stream?streams=ethusdt@bookTicker/ethusdt@depth@100ms",
                  "/fapi/v1/depth?symbol=ETHUSDT&limit=1000", futures=True)


def test_binance_usdm_streams_only_on_their_path(sim: Sim) -> None:
    market = connect(f"{sim.ws}/binance-usdm/market/stream?streams=btcusdt@bookTicker/btcusdt@depth@100ms")
    market.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "btcusdt@trade"], "id": 1}))
    assert recv(market) == {"result": None, "id": 1}
    streams = {recv(market)["stream"] for _ in range(20)}
    assert streams <= {"btcusdt@aggTrade", "btcusdt@trade"} and streams
    public = connect(f"{sim.ws}/binance-usdm/public/stream?streams=btcusdt@aggTrade/btcusdt@bookTicker")
    frames = [recv(public) for _ in range(20)]
    assert {f["stream"] for f in frames} == {"btcusdt@bookTicker"}
    agg = until(market, lambda m: m["stream"] == "btcusdt@aggTrade")["data"]
    assert set(agg) == {"e", "E", "a", "s", "p", "q", "nq", "f", "l", "T", "m"}
    trade = until(market, lambda m: m["stream"] == "btcusdt@trade")["data"]
    assert set(trade) == {"e", "E", "T", "s", "t", "p", "q", "X", "m"}
    market.close()
    public.close()
    with pytest.raises(websocket.WebSocketBadStatusException):
        connect(f"{sim.ws}/binance-usdm/stream?streams=btcusdt@bookTicker")


def test_binance_spot_raw_stream_and_live_subscribe(sim: Sim) -> None:
    ws = connect(f"{sim.ws}/binance/ws")
    ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade", "ethusdt@aggTrade"], "id": 7}))
    assert recv(ws) == {"result": None, "id": 7}
    ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
    listed = until(ws, lambda m: m.get("id") == 8)
    assert listed["result"] == ["ethusdt@aggTrade", "ethusdt@trade"]
    trade = until(ws, lambda m: m.get("e") == "trade")
    assert set(trade) == {"e", "E", "s", "t", "p", "q", "T", "m", "M"} and trade["s"] == "ETHUSDT"
    agg = until(ws, lambda m: m.get("e") == "aggTrade")
    assert set(agg) == {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"}
    ws.send(json.dumps({"method": "BOGUS", "id": 9}))
    assert until(ws, lambda m: m.get("id") == 9)["error"]["code"] == 2
    ws.close()
    raw = connect(f"{sim.ws}/binance/ws/btcusdt@bookTicker")
    m = recv(raw)
    assert set(m) == {"u", "s", "b", "B", "a", "A"} and m["s"] == "BTCUSDT"
    raw.close()


# REST shapes --------------------------------------------------------------------------------------------------------
def test_kucoin_rest_shapes(sim: Sim) -> None:
    symbols = {s["symbol"]: s for s in sim.get("/api/v2/symbols")["data"]}
    assert set(symbols) == {"BTC-USDT", "ETH-USDT"}
    btc = symbols["BTC-USDT"]
    for key in ("name", "baseMinSize", "baseMaxSize", "quoteMinSize", "quoteMaxSize", "baseIncrement",
                "quoteIncrement", "priceIncrement", "priceLimitRate", "minFunds", "enableTrading", "feeCategory",
                "makerFeeCoefficient", "takerFeeCoefficient", "st", "callauctionIsEnabled", "tradingStartTime"):
        assert key in btc
    assert (btc["priceIncrement"], btc["baseIncrement"], btc["minFunds"]) == ("0.1", "0.00001", "5")
    assert symbols["ETH-USDT"]["priceIncrement"] == "0.01" and symbols["ETH-USDT"]["baseIncrement"] == "0.0001"
    start_s = START_MS // 1000
    rows = sim.get(f"/api/v1/market/candles?symbol=ETH-USDT&type=1min&startAt={start_s - 1500 * 60}"
                   f"&endAt={start_s - 60}")["data"]
    times = [int(r[0]) for r in rows]
    assert times == [start_s - 60 * k for k in range(1, 1501)]  # the 1500 minutes before the start, newest first
    for r in rows:
        assert len(r) == 7 and all(isinstance(x, str) for x in r)
        o, c, h, lo = dec(*r[1:5])
        assert lo <= min(o, c) <= max(o, c) <= h and 2000 < c < 4000
    assert len(sim.get("/api/v1/market/candles?symbol=BTC-USDT&type=1min")["data"]) == 1500
    latest = sim.get("/api/v1/market/candles?symbol=BTC-USDT&type=5min")["data"]
    assert len(latest) >= 600 and int(latest[0][0]) - int(latest[1][0]) == 300
    snap = sim.get("/api/v1/market/orderbook/level2_20?symbol=BTC-USDT")["data"]
    assert len(snap["bids"]) == len(snap["asks"]) == 20 and isinstance(snap["sequence"], str)
    bids, asks = [Decimal(p) for p, _ in snap["bids"]], [Decimal(p) for p, _ in snap["asks"]]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    last_close = Decimal(latest[0][2])
    assert abs(last_close / ((bids[0] + asks[0]) / 2) - 1) < Decimal("0.01")
    full = sim.get("/api/v3/market/orderbook/level2?symbol=BTC-USDT")["data"]
    assert len(full["bids"]) >= 50 and len(full["asks"]) >= 50
    status, body, _ = sim.request("/api/v1/market/orderbook/level2_20?symbol=NOPE-USDT")
    assert status == 400 and body["code"] == "400100" and body["msg"]
    status, body, _ = sim.request("/api/v1/market/candles?symbol=BTC-USDT&type=7min")
    assert status == 400 and body["code"] == "400100"
    assert isinstance(sim.get("/api/v1/timestamp")["data"], int)


def test_binance_rest_shapes(sim: Sim) -> None:
    info = sim.get("/api/v3/exchangeInfo")
    assert {"timezone", "serverTime", "rateLimits", "exchangeFilters", "symbols"} <= set(info)
    spot = {s["symbol"]: {f["filterType"]: f for f in s["filters"]} for s in info["symbols"]}
    assert set(spot) == {"BTCUSDT", "ETHUSDT"}
    assert spot["BTCUSDT"]["PRICE_FILTER"]["tickSize"] == "0.10000000"
    assert spot["BTCUSDT"]["LOT_SIZE"]["stepSize"] == "0.00001000"
    assert spot["ETHUSDT"]["NOTIONAL"]["minNotional"] == "5.00000000"
    one = sim.get("/api/v3/exchangeInfo?symbol=ETHUSDT")["symbols"]
    assert [s["symbol"] for s in one] == ["ETHUSDT"] and one[0]["baseAsset"] == "ETH"
    finfo = sim.get("/fapi/v1/exchangeInfo")
    fut = {s["symbol"]: {f["filterType"]: f for f in s["filters"]} for s in finfo["symbols"]}
    assert fut["BTCUSDT"]["MIN_NOTIONAL"] == {"filterType": "MIN_NOTIONAL", "notional": "5"}
    assert fut["BTCUSDT"]["PRICE_FILTER"]["tickSize"] == "0.1" and fut["ETHUSDT"]["LOT_SIZE"]["stepSize"] == "0.0001"
    rows = sim.get("/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1000")
    assert len(rows) == 1000
    opens = [r[0] for r in rows]
    assert opens == sorted(opens) and opens[-1] - opens[0] == 999 * 60_000
    for r in rows:
        assert len(r) == 12 and r[6] == r[0] + 59_999 and isinstance(r[8], int)
        assert all(isinstance(r[k], str) for k in (1, 2, 3, 4, 5, 7, 9, 10, 11))
        o, h, lo, c = dec(*r[1:5])
        assert lo <= min(o, c) <= max(o, c) <= h
    status, body, _ = sim.request("/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1001")
    assert status == 400 and body["code"] == -1130
    frows = sim.get("/fapi/v1/klines?symbol=ETHUSDT&interval=1m&limit=1500")
    assert len(frows) == 1500
    ranged = sim.get(f"/fapi/v1/klines?symbol=ETHUSDT&interval=1m&startTime={START_MS - 1500 * 60_000}"
                     f"&endTime={START_MS - 1}&limit=1500")
    assert [r[0] for r in ranged] == [START_MS - 1500 * 60_000 + k * 60_000 for k in range(1500)]
    hours = sim.get(f"/api/v3/klines?symbol=ETHUSDT&interval=1h&endTime={START_MS}&limit=5")
    assert [r[0] % 3_600_000 for r in hours] == [0] * 5 and hours[-1][0] <= START_MS < hours[-1][6]
    status, body, _ = sim.request("/api/v3/depth?symbol=FOOBAR")
    assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
    status, body, _ = sim.request("/fapi/v1/klines?symbol=BTCUSDT&interval=7m")
    assert status == 400 and body["code"] == -1120
    assert sim.get("/api/v3/time")["serverTime"] >= START_MS and sim.get("/fapi/v1/time")["serverTime"] >= START_MS
    assert sim.get("/binance/api/v3/depth?symbol=ETHUSDT&limit=5")["lastUpdateId"] > 0
    assert len(sim.get("/binance-usdm/fapi/v1/depth?symbol=ETHUSDT&limit=5")["bids"]) == 5


# determinism --------------------------------------------------------------------------------------------------------
def _subscribe_for_determinism(s: Sim, conns: list[tuple[websocket.WebSocket, websocket.WebSocket]]) -> None:
    """Subscribe as soon as the simulator is up, so both runs are read from (nearly) their start."""
    bws = connect(f"{s.ws}/binance/stream?streams=btcusdt@bookTicker/ethusdt@depth@100ms/ethusdt@trade")
    kws, _ = kucoin_connect(s)
    kucoin_subscribe(kws, "/market/level2:BTC-USDT,ETH-USDT", 1)
    assert recv(kws)["type"] == "ack"
    conns.append((bws, kws))


def _collect(conns: list[tuple[websocket.WebSocket, websocket.WebSocket]], want: int) -> list[dict[Any, str]]:
    """Frames of a spot combined stream and of KuCoin level2 per simulator, keyed by stream and sequence, read
    side by side until the runs share ``want`` keys (their subscriptions began at slightly different times)."""
    out: list[dict[Any, str]] = [{} for _ in conns]
    deadline = time.monotonic() + 30
    while len(set(out[0]).intersection(*out[1:])) < want:
        assert time.monotonic() < deadline, [len(x) for x in out]
        for _ in range(50):
            for (bws, kws), frames in zip(conns, out, strict=True):
                text = bws.recv()
                m = json.loads(text)
                frames[(m["stream"], m["data"].get("u") or m["data"].get("t"))] = text
                text = kws.recv()
                d = json.loads(text)["data"]
                frames[(d["symbol"], d["sequenceStart"])] = text
    for bws, kws in conns:
        bws.close()
        kws.close()
    return out


def test_same_seed_same_frames(make_sim, sim: Sim) -> None:
    args = ["--seed", "11", "--speed", "8", "--start-ms", str(START_MS)]
    conns: list[tuple[websocket.WebSocket, websocket.WebSocket]] = []
    a, b = make_sim(args, args, on_ready=lambda s: _subscribe_for_determinism(s, conns))
    fa, fb = _collect(conns, 300)
    common = set(fa) & set(fb)
    assert all(fa[k] == fb[k] for k in common)
    history = "/api/v3/klines?symbol=ETHUSDT&interval=1m&limit=500&endTime=" + str(START_MS - 1)
    assert a.get(history) == b.get(history)
    assert a.get(history) != sim.get(history)  # seed 7


# faults -------------------------------------------------------------------------------------------------------------
FAULT_SIM = ["--seed", "3", "--speed", "4", "--kucoin-ticker-ms", "20"]


def test_fault_drop_closes_sockets(make_sim) -> None:
    (s,) = make_sim(FAULT_SIM)
    kws, _ = kucoin_connect(s)
    kucoin_subscribe(kws, "/market/ticker:BTC-USDT", 1)
    bws = connect(f"{s.ws}/binance/stream?streams=btcusdt@bookTicker")
    fws = connect(f"{s.ws}/binance-usdm/public/stream?streams=btcusdt@bookTicker")
    for ws in (kws, bws, fws):
        recv(ws)
    assert s.stats()["venues"]["binance"]["connections_open"] == 1
    assert s.fault(kind="drop", venue="all")["dropped"] == 3
    for ws in (kws, bws, fws):
        with pytest.raises(CLOSED):
            for _ in range(100_000):
                if not ws.recv():
                    raise websocket.WebSocketConnectionClosedException("closed")
    stats = s.stats()
    assert all(stats["venues"][v]["connections_open"] == 0 for v in ("kucoin", "binance", "binance-usdm"))
    assert stats["faults_applied"] == {"drop": 1}
    # clients reconnect fine afterwards
    bws = connect(f"{s.ws}/binance/stream?streams=btcusdt@bookTicker")
    assert recv(bws)["stream"] == "btcusdt@bookTicker"


def test_fault_stall_stops_data_but_not_pings(make_sim) -> None:
    (s,) = make_sim(FAULT_SIM)
    kws, _ = kucoin_connect(s)
    kucoin_subscribe(kws, "/market/level2:BTC-USDT", 1)
    assert recv(kws)["type"] == "ack"
    bws = connect(f"{s.ws}/binance/stream?streams=btcusdt@bookTicker")
    recv(bws)
    last_end = recv(kws)["data"]["sequenceEnd"]
    s.fault(kind="stall", venue="all", seconds=3.5)
    kws.send(json.dumps({"id": "during-stall", "type": "ping"}))
    while (m := recv(kws))["type"] == "message":
        last_end = m["data"]["sequenceEnd"]
    assert m == {"id": "during-stall", "type": "pong"}
    kws.settimeout(0.7)
    with pytest.raises(websocket.WebSocketTimeoutException):
        kws.recv()
    bws.ping(b"hello")
    while (frame := bws.recv_data_frame(control_frame=True))[0] != websocket.ABNF.OPCODE_PONG:
        pass
    assert frame[1].data == b"hello"
    bws.settimeout(0.7)
    with pytest.raises(websocket.WebSocketTimeoutException):
        bws.recv()
    kws.settimeout(10.0)
    m = recv(kws)  # data resumes after the stall, held frames first: no gap
    assert m["subject"] == "trade.l2update" and m["data"]["sequenceStart"] == last_end + 1


def test_fault_skip_seq_makes_exactly_one_gap(make_sim) -> None:
    (s,) = make_sim(FAULT_SIM)
    kws, _ = kucoin_connect(s)
    kucoin_subscribe(kws, "/market/level2:BTC-USDT", 1)
    assert recv(kws)["type"] == "ack"
    bws = connect(f"{s.ws}/binance/stream?streams=btcusdt@depth@100ms")
    fws = connect(f"{s.ws}/binance-usdm/public/stream?streams=btcusdt@depth@100ms")
    got: dict[str, list[Any]] = {"k": [recv(kws)["data"]], "b": [recv(bws)["data"]], "f": [recv(fws)["data"]]}
    s.fault(kind="skip_seq", venue="all", symbol="BTC-USDT")
    for _ in range(25):
        got["k"].append(recv(kws)["data"])
        got["b"].append(recv(bws)["data"])
        got["f"].append(recv(fws)["data"])
    k, b, f = got["k"], got["b"], got["f"]
    assert sum(y["sequenceStart"] != x["sequenceEnd"] + 1 for x, y in itertools.pairwise(k)) == 1
    assert sum(y["U"] != x["u"] + 1 for x, y in itertools.pairwise(b)) == 1
    assert sum(y["pu"] != x["u"] for x, y in itertools.pairwise(f)) == 1


def _classify(text: str, bid: str, ask: str, seq: str) -> str:
    try:
        m = json.loads(text)
    except ValueError:
        return "truncated"
    d = m["data"]
    if seq not in d:
        return "missing_field"
    if d[bid] == "NaN":
        return "nan_price"
    if d[bid].startswith("-"):
        return "negative_price"
    if Decimal(d[bid]) == 0:
        return "zero_price"
    if Decimal(d[bid]) >= Decimal(d[ask]):
        return "crossed"
    return "ok"


def test_fault_malformed_frames_arrive(make_sim) -> None:
    (s,) = make_sim(FAULT_SIM)
    bws = connect(f"{s.ws}/binance/stream?streams=ethusdt@bookTicker")
    kws, _ = kucoin_connect(s)
    kucoin_subscribe(kws, "/market/ticker:ETH-USDT", 1)
    assert recv(kws)["type"] == "ack"
    s.fault(kind="malformed", venue="binance", count=6)
    s.fault(kind="malformed", venue="kucoin", count=6)
    for ws, keys in ((bws, ("b", "a", "u")), (kws, ("bestBid", "bestAsk", "sequence"))):
        kinds = [_classify(ws.recv(), *keys) for _ in range(40)]
        bad = [k for k in kinds if k != "ok"]
        assert sorted(bad) == sorted(["truncated", "missing_field", "nan_price", "negative_price", "zero_price",
                                      "crossed"])
    assert s.stats()["faults_applied"] == {"malformed": 2}


def test_fault_rest_error_then_recovery(make_sim) -> None:
    (s,) = make_sim(FAULT_SIM)
    s.fault(kind="rest_error", venue="binance", status=429, count=2, retry_after=3)
    for _ in range(2):
        status, body, headers = s.request("/api/v3/depth?symbol=BTCUSDT")
        assert status == 429 and body["code"] == -1003 and headers["Retry-After"] == "3"
    status, body, _ = s.request("/api/v3/depth?symbol=BTCUSDT")
    assert status == 200 and "lastUpdateId" in body
    s.fault(kind="rest_error", venue="binance-usdm", status=418, count=1)
    status, body, headers = s.request("/fapi/v1/depth?symbol=BTCUSDT")
    assert status == 418 and body["code"] == -1003 and "Retry-After" in headers
    assert s.request("/fapi/v1/depth?symbol=BTCUSDT")[0] == 200
    s.fault(kind="rest_error", venue="kucoin", status=503, count=1)
    status, body, headers = s.request("/api/v1/bullet-public", method="POST")
    assert status == 503 and body["code"] == "503000" and "Retry-After" not in headers
    assert s.request("/api/v1/bullet-public", method="POST")[0] == 200
    s.fault(kind="rest_error", venue="all", status=500, count=1)
    assert s.request("/api/v3/time")[0] == 500 and s.request("/api/v3/time")[0] == 200
    status, body, _ = s.request("/_sim/fault", {"kind": "explode", "venue": "all"})
    assert status == 400 and body["ok"] is False and "explode" in body["error"] and "drop" in body["error"]
    status, body, _ = s.request("/_sim/fault", {"kind": "drop", "venue": "nasdaq"})
    assert status == 400 and "nasdaq" in body["error"]
    status, body, _ = s.request("/_sim/fault", {"kind": "skip_seq", "symbol": "DOGE-USDT"})
    assert status == 400
    stats = s.stats()
    assert stats["faults_applied"] == {"rest_error": 4}
    assert stats["venues"]["binance"]["rest_requests"] == 5


# keepalive ----------------------------------------------------------------------------------------------------------
def _wait_closed(ws: websocket.WebSocket) -> None:
    with pytest.raises(CLOSED):
        for _ in range(1000):
            if not ws.recv():
                raise websocket.WebSocketConnectionClosedException("closed")


def test_keepalive_drops_silent_clients(make_sim) -> None:
    (s,) = make_sim(["--ping-interval-ms", "500", "--ping-timeout-ms", "500", "--binance-ping-ms", "200",
                     "--binance-pong-timeout-ms", "600"])
    silent, server = kucoin_connect(s, "silent")
    assert server["pingInterval"] == 500 and server["pingTimeout"] == 500
    pinging, _ = kucoin_connect(s, "pinging")
    quiet = connect(f"{s.ws}/binance/ws")  # never reads, so never answers the server's pings
    lively = connect(f"{s.ws}/binance/ws")
    assert lively.recv_data_frame(control_frame=True)[0] == websocket.ABNF.OPCODE_PING  # server pings
    deadline = time.monotonic() + 20
    while s.stats()["venues"]["kucoin"]["connections_open"] > 1 or \
            s.stats()["venues"]["binance"]["connections_open"] > 1:
        assert time.monotonic() < deadline, s.stats()
        pinging.send(json.dumps({"id": "k", "type": "ping"}))
        assert recv(pinging) == {"id": "k", "type": "pong"}
        op, _ = lively.recv_data_frame(control_frame=True)  # websocket-client answers the ping
        assert op == websocket.ABNF.OPCODE_PING
    _wait_closed(silent)
    _wait_closed(quiet)
    pinging.send(json.dumps({"id": "still", "type": "ping"}))
    assert recv(pinging) == {"id": "still", "type": "pong"}


# process ------------------------------------------------------------------------------------------------------------
def test_port_in_use_exits_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "feeds.simulator", "--port", str(port)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and str(port) in p.stderr


def test_sigint_exits_0() -> None:
    s = Sim().ready()
    ws = connect(f"{s.ws}/binance/stream?streams=btcusdt@bookTicker")
    recv(ws)
    assert s.stop(signal.SIGINT) == 0


# replay -------------------------------------------------------------------------------------------------------------
def _recorded_bbo(path: Path, symbol: str) -> set[tuple[Decimal, ...]]:
    out = set()
    for line in path.read_text().splitlines():
        if "<-" in line:
            continue
        if f'"{symbol.lower()}@bookTicker"' in line:
            d = json.loads(line.split(": ", 1)[1])["data"]
            out.add(dec(d["b"], d["B"], d["a"], d["A"]))
        elif f"/market/ticker:{symbol}" in line:
            d = json.loads(line.split(": ", 1)[1])["data"]
            out.add(dec(d["bestBid"], d["bestBidSize"], d["bestAsk"], d["bestAskSize"]))
    return out


needs_recordings = pytest.mark.skipif(not RECORDED.is_dir(), reason="shared/data/recorded is not beside the project")


@needs_recordings
def test_replay_serves_recorded_bbo_then_idles(make_sim) -> None:
    kucoin_file, futures_file = RECORDED / "KUCOIN.ws.1.0", RECORDED / "BINANCE_FUTURES.ws.1.0"
    (s,) = make_sim(["--replay", f"{kucoin_file},{futures_file}", "--speed", "15", "--kucoin-ticker-ms", "0"])
    symbols = {x["symbol"] for x in s.get("/api/v2/symbols")["data"]}
    assert {"BCHSV-USDT", "SUSHI-USDT", "SNX-BTC"} <= symbols
    spot = connect(f"{s.ws}/binance/stream?streams=sushiusdt@bookTicker")
    fut = connect(f"{s.ws}/binance-usdm/public/stream?streams=sushiusdt@bookTicker")
    kws, _ = kucoin_connect(s)
    kucoin_subscribe(kws, "/market/ticker:BCHSV-USDT", 1)
    assert recv(kws)["type"] == "ack"
    sushi = _recorded_bbo(futures_file, "SUSHIUSDT")
    bchsv = _recorded_bbo(kucoin_file, "BCHSV-USDT")
    for _ in range(5):
        d = recv(spot)["data"]
        assert dec(d["b"], d["B"], d["a"], d["A"]) in sushi
        d = recv(fut)["data"]
        assert dec(d["b"], d["B"], d["a"], d["A"]) in sushi
    d = recv(kws)["data"]
    assert dec(d["bestBid"], d["bestBidSize"], d["bestAsk"], d["bestAskSize"]) in bchsv
    deadline = time.monotonic() + 30
    while not (stats := s.stats())["replay_done"]:
        assert time.monotonic() < deadline, stats
        time.sleep(0.2)
    assert stats["venues"]["kucoin"]["connections_open"] == 1 and stats["venues"]["binance"]["connections_open"] == 1
    kws.send(json.dumps({"id": "after", "type": "ping"}))
    assert until(kws, lambda m: m["type"] == "pong") == {"id": "after", "type": "pong"}


@needs_recordings
def test_replay_hftbacktest_gzip(make_sim) -> None:
    path = RECORDED / "binance_2024-08-08" / "spot_ethusdt_20240808.gz"
    (s,) = make_sim(["--replay", str(path), "--speed", "2"])
    ws = connect(f"{s.ws}/binance/stream?streams=ethusdt@bookTicker/ethusdt@depth@100ms")
    for _ in range(5):
        d = recv(ws)["data"]
        if "u" in d and "e" not in d:
            assert Decimal("2600") < Decimal(d["b"]) < Decimal(d["a"]) < Decimal("2800")
    snap = s.get("/api/v3/depth?symbol=ETHUSDT&limit=100")
    assert len(snap["bids"]) >= 20 and Decimal(snap["bids"][0][0]) < Decimal(snap["asks"][0][0])
    info = s.get("/api/v3/exchangeInfo")["symbols"][0]
    assert info["symbol"] == "ETHUSDT" and s.stats()["replay_done"] is False
