"""Rate limiter: fixed-window admission and waits, correction from the venues' headers and WS-API
``rateLimits``, 429 / 418 with and without ``Retry-After`` (also as the simulator answers them), KuCoin's
independent pools, and windows built from the simulator's real exchangeInfo."""

from __future__ import annotations

import email.utils
import math
import threading

import pytest
from simulator_client import Sim

from execution.ratelimit import (
    RETRY_AFTER_418_S,
    RETRY_AFTER_429_S,
    Limiter,
    Window,
    binance_spot_limiter,
    binance_usdm_limiter,
    kucoin_limiter,
)

T0 = 1_700_000_003.5
"""A wall time 3.5 s into a 10 s window (and 23.5 s into a minute)."""


def _limits(lim: Limiter) -> dict[str, tuple[str, int, float]]:
    return {n: (w.kind, w.limit, w.interval_s) for n, w in lim.windows.items()}


def test_admit_up_to_limit_then_wait_to_next_window() -> None:
    lim = Limiter("x", [Window("w", 3, 10)])
    assert [lim.acquire({"w": 1}, T0 + i * 0.1) for i in range(3)] == [0.0, 0.0, 0.0]
    assert lim.acquire({"w": 1}, T0 + 0.5) == pytest.approx(6.0)  # next window starts at ...010.0
    assert lim.acquire({"w": 1}, T0 + 6.4999) == pytest.approx(0.0001, abs=1e-6)
    assert lim.used("w", T0 + 6.4999) == 3  # a refused acquire takes nothing
    assert lim.acquire({"w": 3}, T0 + 6.5) == 0.0  # the new window is empty
    assert lim.acquire({"w": 1}, T0 + 6.5) == pytest.approx(10.0)
    assert lim.acquire({"w": 4}, T0 + 20) == math.inf  # larger than the whole window: never fits
    assert (lim.admitted, lim.delayed, lim.refused) == (4, 3, 1)


def test_weighted_costs_and_kinds() -> None:
    lim = binance_spot_limiter()
    assert _limits(lim) == {"REQUEST_WEIGHT_1M": ("REQUEST_WEIGHT", 6000, 60), "ORDERS_10S": ("ORDERS", 100, 10),
                            "ORDERS_1D": ("ORDERS", 200000, 86400), "RAW_REQUESTS_5M": ("RAW_REQUESTS", 61000, 300)}
    order = {"REQUEST_WEIGHT": 1, "ORDERS": 1, "RAW_REQUESTS": 1, "NO_SUCH_WINDOW": 5}
    for _ in range(100):
        assert lim.acquire(order, T0) == 0.0
    assert lim.acquire(order, T0) == pytest.approx(6.5)  # ORDERS_10S is full
    assert lim.acquire({"REQUEST_WEIGHT": 20}, T0) == 0.0  # a non-order request still fits
    assert [lim.used(n, T0) for n in lim.windows] == [120, 100, 100, 100]
    assert lim.acquire({"REQUEST_WEIGHT": 5881}, T0) == pytest.approx(36.5)  # to the next minute
    assert lim.acquire({"REQUEST_WEIGHT_1M": 5880}, T0) == 0.0  # a window by its own name
    assert lim.acquire({"REQUEST_WEIGHT": 6001}, T0) == math.inf


def test_daily_window_waits_until_utc_midnight() -> None:
    lim = binance_spot_limiter()
    lim.on_headers({"X-MBX-ORDER-COUNT-1D": "200000"}, T0)
    midnight = (T0 // 86400 + 1) * 86400
    assert lim.acquire({"ORDERS": 1}, T0) == pytest.approx(midnight - T0)
    assert lim.acquire({"ORDERS": 1}, midnight) == 0.0


def test_binance_headers_correct_counts_up_and_down() -> None:
    lim = binance_spot_limiter()
    assert lim.acquire({"REQUEST_WEIGHT": 10}, T0) == 0.0
    lim.on_headers({"X-MBX-USED-WEIGHT-1M": "5995", "Content-Type": "application/json"}, T0 + 0.1)  # up
    assert lim.used("REQUEST_WEIGHT_1M", T0) == 5995
    assert lim.acquire({"REQUEST_WEIGHT": 20}, T0 + 0.5) == pytest.approx(36.0)
    lim.on_headers({"x-mbx-used-weight-1m": "40"}, T0 + 1)  # down (any case): the venue is the truth
    assert lim.acquire({"REQUEST_WEIGHT": 20}, T0 + 1) == 0.0
    assert lim.used("REQUEST_WEIGHT_1M", T0 + 1) == 60
    lim.on_headers({"X-MBX-ORDER-COUNT-10S": "100", "X-MBX-ORDER-COUNT-1D": "7"}, T0 + 2)
    assert (lim.used("ORDERS_10S", T0 + 2), lim.used("ORDERS_1D", T0 + 2)) == (100, 7)
    assert lim.acquire({"ORDERS": 1}, T0 + 2) == pytest.approx(4.5)
    lim.on_headers({"X-MBX-USED-WEIGHT-1M": "garbage", "X-MBX-USED-WEIGHT-1H": "9", "X-MBX-USED-WEIGHT": "1"}, T0 + 3)
    assert lim.used("REQUEST_WEIGHT_1M", T0 + 3) == 60  # malformed / unknown windows are ignored
    assert lim.used("REQUEST_WEIGHT_1M", T0 + 60) == 0  # the next minute starts empty


def test_usdm_headers() -> None:
    lim = binance_usdm_limiter()
    assert _limits(lim) == {"REQUEST_WEIGHT_1M": ("REQUEST_WEIGHT", 2400, 60), "ORDERS_1M": ("ORDERS", 1200, 60),
                            "ORDERS_10S": ("ORDERS", 300, 10)}
    lim.on_headers({"X-MBX-ORDER-COUNT-1M": "1200", "X-MBX-ORDER-COUNT-10S": "3"}, T0)
    assert lim.acquire({"ORDERS": 1}, T0) == pytest.approx(36.5)
    assert lim.acquire({"REQUEST_WEIGHT": 1}, T0) == 0.0


def test_status_429_and_418() -> None:
    lim = kucoin_limiter()
    lim.on_status(200, "30", T0)
    lim.on_status(500, None, T0)
    assert lim.banned_until(T0) == 0 and lim.throttled_by_venue == 0

    lim.on_status(429, "3", T0)
    assert lim.banned_until(T0 + 1) == T0 + 3
    assert lim.acquire({"spot": 1}, T0 + 1) == pytest.approx(2.0)
    assert lim.acquire({"spot": 1}, T0 + 3) == 0.0 and lim.banned_until(T0 + 3) == 0

    lim.on_status(429, None, T0 + 10)
    assert lim.banned_until(T0 + 10) == T0 + 10 + RETRY_AFTER_429_S

    lim.on_status(418, None, T0 + 20)
    assert lim.banned_until(T0 + 20) == T0 + 20 + RETRY_AFTER_418_S == T0 + 140
    lim.on_status(429, "1", T0 + 21)  # a shorter block never shortens a ban
    assert lim.banned_until(T0 + 21) == T0 + 140
    lim.on_status(418, "7200", T0 + 22)
    assert lim.acquire({"public": 1}, T0 + 22) == pytest.approx(7200.0)

    date = email.utils.formatdate(T0 + 10_000 + 30, usegmt=True)  # Retry-After as an HTTP date
    lim.on_status(429, date, T0 + 10_000)
    assert lim.banned_until(T0 + 10_000) == pytest.approx(T0 + 10_030)
    lim.on_status(429, "not a number", T0 + 20_000)
    assert lim.banned_until(T0 + 20_000) == T0 + 20_000 + RETRY_AFTER_429_S
    assert lim.throttled_by_venue == 7


def test_wsapi_rate_limits() -> None:
    """WS-API response ``rateLimits`` (web-socket-api.md shape) overwrite counts and limits, add new windows."""
    lim = binance_spot_limiter()
    lim.on_wsapi([
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000, "count": 70},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50, "count": 50},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 160000, "count": 1},
        {"rateLimitType": "CONNECTIONS", "interval": "MINUTE", "intervalNum": 5, "limit": 300, "count": 2},
        {"rateLimitType": "ORDERS", "interval": "FORTNIGHT", "intervalNum": 1, "limit": 1, "count": 1},  # ignored
    ], T0)
    assert lim.used("REQUEST_WEIGHT_1M", T0) == 70
    assert (lim.windows["ORDERS_10S"].limit, lim.windows["ORDERS_1D"].limit) == (50, 160000)
    assert lim.acquire({"ORDERS": 1}, T0) == pytest.approx(6.5)
    assert _limits(lim)["CONNECTIONS_5M"] == ("CONNECTIONS", 300, 300)
    assert lim.used("CONNECTIONS_5M", T0) == 2
    lim.on_wsapi([{"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50,
                   "count": 3}], T0 + 1)
    assert lim.acquire({"ORDERS": 1}, T0 + 1) == 0.0


def test_kucoin_pools_independent_and_headers() -> None:
    lim = kucoin_limiter()
    assert _limits(lim) == {"spot": ("spot", 4000, 30), "public": ("public", 2000, 30)}
    assert lim.acquire({"public": 2000}, T0) == 0.0
    assert lim.acquire({"public": 1}, T0) > 0
    assert lim.acquire({"spot": 4000}, T0) == 0.0  # the spot pool is untouched by public requests
    # the venue says: 3990 of 4000 left, reset in 12 s -> 10 used, the pool's window ends at T0 + 12
    lim.on_headers({"gw-ratelimit-limit": "4000", "gw-ratelimit-remaining": "3990", "gw-ratelimit-reset": "12000"},
                   T0)
    assert lim.used("spot", T0) == 10
    assert lim.acquire({"spot": 3991}, T0) == pytest.approx(12.0)
    assert lim.acquire({"spot": 3990}, T0 + 11.9) == 0.0
    assert lim.acquire({"spot": 1}, T0 + 11.95) == pytest.approx(0.05, abs=1e-6)
    assert lim.acquire({"spot": 4000}, T0 + 12) == 0.0  # a new 30 s window, in the venue's phase
    assert lim.acquire({"spot": 1}, T0 + 12) == pytest.approx(30.0)
    # a header of the public pool, with a VIP-level limit
    lim.on_headers({"GW-RateLimit-Limit": "3000", "GW-RateLimit-Remaining": "2999", "GW-RateLimit-Reset": "5000"},
                   T0 + 13, pool="public")
    assert (lim.windows["public"].limit, lim.used("public", T0 + 13)) == (3000, 1)
    assert lim.acquire({"public": 2999}, T0 + 13) == 0.0
    assert lim.acquire({"public": 1}, T0 + 13) == pytest.approx(5.0)


def test_concurrent_acquire_admits_exactly_the_limit() -> None:
    lim = Limiter("x", [Window("w", 5000, 60)])
    admitted = []

    def worker() -> None:
        admitted.append(sum(lim.acquire({"w": 1}, T0) == 0.0 for _ in range(2000)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 5000 == lim.admitted and lim.delayed == 3000


def test_simulator_exchange_info_and_rate_limit_faults() -> None:
    """Windows from the simulator's real exchangeInfo ``rateLimits`` (spot and USD-M) equal the documented
    defaults; the simulator's injected 429 / 418 (with ``Retry-After``) block the limiter."""
    sim = Sim("--seed", "7").ready()
    try:
        spot = sim.get("/binance/api/v3/exchangeInfo")["rateLimits"]
        usdm = sim.get("/binance-usdm/fapi/v1/exchangeInfo")["rateLimits"]
        sim.fault(kind="rest_error", venue="binance", status=429, count=1, retry_after=3)
        status429, body429, headers429 = sim.request("/binance/api/v3/exchangeInfo")
        sim.fault(kind="rest_error", venue="binance", status=418, count=1, retry_after=60)
        status418, _, headers418 = sim.request("/binance/api/v3/exchangeInfo")
    finally:
        sim.stop()
    assert _limits(Limiter.from_exchange_info(spot)) == _limits(binance_spot_limiter())
    lim = Limiter.from_exchange_info(usdm, "binance-usdm")
    assert lim.venue == "binance-usdm" and _limits(lim) == _limits(binance_usdm_limiter())

    assert (status429, body429["code"], status418) == (429, -1003, 418)
    lim.on_status(status429, headers429.get("Retry-After"), T0)
    assert lim.banned_until(T0) == T0 + 3
    lim.on_status(status418, headers418.get("Retry-After"), T0 + 1)
    assert lim.acquire({"REQUEST_WEIGHT": 1}, T0 + 1) == pytest.approx(60.0)
    assert lim.throttled_by_venue == 2
