"""compute.candles against the local simulator on loopback: values equal the simulator's own candle store (rebuilt
here from the same seed and start), paging across the per-call limits, clear one-line errors."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from simulator_client import Sim

from compute.candles import CANDLE, CandleError, fetch_candles
from feeds.simulator.market import Generator, Market, ModelParams, instrument_for

START_MS = 1_722_000_000_000  # a whole minute
SEED = 5
SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
HISTORY = ModelParams().history_minutes
MIN = 60_000


@pytest.fixture(scope="module")
def sim():
    s = Sim("--seed", str(SEED), "--start-ms", str(START_MS), "--symbols", ",".join(SYMBOLS),
            "--rate-hz", "2").ready()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def store() -> Market:
    """The simulator's market as it is built at start (history candles are a pure function of seed/start/symbols)."""
    market = Market([instrument_for(s) for s in SYMBOLS])
    Generator(market, SEED, START_MS * 1000, ModelParams(rate_hz=2))
    return market


def expected(store: Market, symbol: str, first_min: int, last_min: int) -> np.ndarray:
    """The store's candles of minutes [first_min, last_min] as a CANDLE array (prices as the venues print them)."""
    i = store.find(symbol)
    assert i is not None
    ins = store.instruments[i]
    bars = store.candles[i].bars(1, first_min, last_min)
    out = np.zeros(len(bars), CANDLE)
    for k, (m, b) in enumerate(bars):
        out[k] = (m * MIN, *(float(ins.price(t)) for t in b[:4]), float(ins.size(b[4])))
    return out


def rest_requests(sim: Sim, venue: str) -> int:
    return sim.stats()["venues"][venue]["rest_requests"]


VENUE_SYMBOL = [("kucoin", "BTC-USDT", 2), ("binance", "ETHUSDT", 3), ("binance-usdm", "SOLUSDT", 2)]


@pytest.mark.parametrize(("venue", "symbol", "pages"), VENUE_SYMBOL)
def test_full_history_equals_store_and_pages(sim: Sim, store: Market, venue: str, symbol: str, pages: int) -> None:
    start, end = START_MS - HISTORY * MIN, START_MS
    before = rest_requests(sim, venue)
    got = fetch_candles(venue, symbol, start, end, rest_url=sim.http)
    assert rest_requests(sim, venue) - before == pages  # 3000 minutes: 1500 / 1000 / 1500 per call
    assert got.dtype == CANDLE
    assert len(got) == HISTORY
    assert np.all(np.diff(got["minute_ms"]) == MIN)  # ascending, unique, no gaps in the simulator's history
    ref = expected(store, symbol, start // MIN, end // MIN - 1)
    assert len(ref) == HISTORY
    for f in CANDLE.names:
        np.testing.assert_array_equal(got[f], ref[f], err_msg=f)
    assert np.all(got["low"] <= got["open"]) and np.all(got["open"] <= got["high"])


@pytest.mark.parametrize(("venue", "symbol"), [("kucoin", "ETH-USDT"), ("binance", "BTC-USDT"),
                                               ("binance-usdm", "BTCUSDT")])
def test_unaligned_bounds_and_empty(sim: Sim, store: Market, venue: str, symbol: str) -> None:
    # start inside a minute -> the next whole minute; end exclusive
    start, end = START_MS - 100 * MIN + 1, START_MS - 10 * MIN + 5
    got = fetch_candles(venue, symbol, start, end, rest_url=sim.http)
    assert got["minute_ms"][0] == START_MS - 99 * MIN and got["minute_ms"][-1] == START_MS - 10 * MIN
    assert len(got) == 90
    ref = expected(store, symbol, START_MS // MIN - 99, START_MS // MIN - 10)
    np.testing.assert_array_equal(got, ref)
    # a window exactly one minute long, and an empty one
    one = fetch_candles(venue, symbol, START_MS - 5 * MIN, START_MS - 4 * MIN, rest_url=sim.http)
    assert one["minute_ms"].tolist() == [START_MS - 5 * MIN]
    assert len(fetch_candles(venue, symbol, START_MS - MIN + 1, START_MS - 1, rest_url=sim.http)) == 0
    # before the simulator's history: nothing, no error
    old = fetch_candles(venue, symbol, START_MS - 10 * HISTORY * MIN, START_MS - 9 * HISTORY * MIN,
                        rest_url=sim.http)
    assert old.dtype == CANDLE and len(old) == 0


def test_live_minutes_are_partial_but_never_past_end(sim: Sim) -> None:
    now = sim.stats()["sim_time_ms"]
    cur = now // MIN * MIN
    got = fetch_candles("kucoin", "BTC-USDT", cur - 30 * MIN, cur, rest_url=sim.http)
    assert len(got) == 30 and got["minute_ms"][-1] == cur - MIN
    ahead = fetch_candles("binance", "BTCUSDT", cur - 2 * MIN, cur + 3 * 24 * 60 * MIN, rest_url=sim.http)
    assert ahead["minute_ms"][0] == cur - 2 * MIN and ahead["minute_ms"][-1] <= now


@pytest.mark.parametrize(("venue", "symbol", "text"), [
    ("kucoin", "NOPE-USDT", "HTTP 400 code 400100: symbol not exists"),
    ("binance", "NOPEUSDT", "HTTP 400 code -1121: Invalid symbol."),
    ("binance-usdm", "NOPEUSDT", "HTTP 400 code -1121: Invalid symbol."),
])
def test_unknown_symbol(sim: Sim, venue: str, symbol: str, text: str) -> None:
    with pytest.raises(CandleError) as ei:
        fetch_candles(venue, symbol, START_MS - 60 * MIN, START_MS, rest_url=sim.http)
    msg = str(ei.value)
    assert msg == f"{venue} candles {symbol}: {text}"


@pytest.mark.parametrize(("venue", "status", "text"), [
    ("kucoin", 500, "HTTP 500 code 500000: Internal Server Error"),
    ("binance", 503, "HTTP 503 code -1008: Server is currently overloaded"),
    ("binance-usdm", 500, "HTTP 500 code -1000: An unknown error occurred"),
])
def test_rest_5xx(sim: Sim, venue: str, status: int, text: str) -> None:
    symbol = "ETH-USDT" if venue == "kucoin" else "ETHUSDT"
    sim.fault(kind="rest_error", venue=venue, status=status, count=1)
    with pytest.raises(CandleError) as ei:
        fetch_candles(venue, symbol, START_MS - 60 * MIN, START_MS, rest_url=sim.http)
    msg = str(ei.value)
    assert msg.startswith(f"{venue} candles {symbol}: {text}") and "\n" not in msg
    # the fault is used up: the next call works
    assert len(fetch_candles(venue, symbol, START_MS - 60 * MIN, START_MS, rest_url=sim.http)) == 60


def test_unreachable_and_timeout() -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CandleError, match=r"^kucoin candles BTC-USDT: cannot reach http://127\.0\.0\.1:\d+/api/v1/"):
        fetch_candles("kucoin", "BTC-USDT", START_MS - MIN, START_MS, rest_url=f"http://127.0.0.1:{port}")
    with socket.socket() as srv:  # accepts (backlog) and never answers
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        url = f"http://127.0.0.1:{srv.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(CandleError, match=r"^binance candles BTCUSDT: no answer within 0.3 s"):
            fetch_candles("binance", "BTCUSDT", START_MS - MIN, START_MS, rest_url=url, timeout_s=0.3)
        assert time.monotonic() - t0 < 5


def test_unknown_venue() -> None:
    with pytest.raises(CandleError, match="unknown venue 'mexc'"):
        fetch_candles("mexc", "BTCUSDT", 0, MIN)
