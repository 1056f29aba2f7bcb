"""One-minute candles from a venue's REST API: KuCoin ``/api/v1/market/candles``, Binance spot ``/api/v3/klines``
and Binance USD-M ``/fapi/v1/klines`` (EXCHANGES.md sections 1.5, 2.3, 3.3).

``fetch_candles`` pages by time windows of the venue's per-call maximum (KuCoin 1500, spot 1000, USD-M 1500
minutes), so a window never holds more rows than one call returns, whatever the venue's convention for
empty minutes. Rows are sorted ascending, deduplicated by minute and clipped to ``start_ms <= minute < end_ms``;
rows with a non-positive or non-finite price are skipped, as the seed's ``fetchKlines`` does. Any failure
(transport, timeout, HTTP status, venue error code, malformed body) raises ``CandleError`` with one line: venue,
symbol, HTTP status and the venue's own message.

Plain ``urllib`` (standard library): this runs once at a stage's start or in ``pipeline scan``, never on the
hot path, and adds no dependency.
"""

from __future__ import annotations

import http.client
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import numpy as np

CANDLE = np.dtype([("minute_ms", "<i8"), ("open", "<f8"), ("high", "<f8"), ("low", "<f8"), ("close", "<f8"),
                   ("volume", "<f8")])
"""One one-minute candle; ``minute_ms`` is the minute's start (epoch ms, a multiple of 60000)."""

MINUTE_MS = 60_000

DEFAULT_URLS = {
    "kucoin": "https://api.kucoin.com",
    "binance": "https://api.binance.com",
    "binance-usdm": "https://fapi.binance.com",
}
"""Real venues' REST base URLs."""

PAGE_MINUTES = {"kucoin": 1500, "binance": 1000, "binance-usdm": 1500}
"""Most rows one call returns (= minutes per page)."""

USER_AGENT = "lowlat-candles/1"


class CandleError(RuntimeError):
    """A candle request failed; the message is one line (venue, symbol, HTTP status, the venue's message)."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _venue_message(body: bytes) -> str:
    """The venue's error text from a response body: ``code msg`` of a JSON error, else the raw text."""
    try:
        obj = json.loads(body)
    except ValueError:
        return _one_line(body.decode("utf-8", "replace")) or "(empty body)"
    if isinstance(obj, dict) and ("msg" in obj or "code" in obj):
        return _one_line(f"code {obj.get('code')}: {obj.get('msg', '')}".rstrip(": "))
    return _one_line(json.dumps(obj))


def _get(url: str, what: str, timeout_s: float) -> Any:
    """GET ``url`` and decode its JSON; CandleError (one line) on any failure."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        try:
            body = e.read()
        except OSError:
            body = b""
        raise CandleError(f"{what}: HTTP {e.code} {_venue_message(body)}") from None
    except TimeoutError:
        raise CandleError(f"{what}: no answer within {timeout_s:g} s ({url.split('?', 1)[0]})") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError):
            raise CandleError(f"{what}: no answer within {timeout_s:g} s ({url.split('?', 1)[0]})") from None
        raise CandleError(f"{what}: cannot reach {url.split('?', 1)[0]}: {_one_line(str(reason))}") from None
    except (OSError, ValueError, http.client.HTTPException) as e:  # reset or cut mid-body, bad URL, ...
        raise CandleError(f"{what}: {_one_line(f'{type(e).__name__}: {e}')}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise CandleError(f"{what}: HTTP {status} body is not JSON: {_venue_message(body)}") from None


def _symbol_for(venue: str, symbol: str) -> str:
    """Binance venues take ``BTCUSDT``; accept ``BTC-USDT`` / ``btc_usdt`` too. KuCoin symbols pass unchanged."""
    if venue == "kucoin":
        return symbol
    return symbol.replace("-", "").replace("_", "").replace("/", "").upper()


def _page_kucoin(base: str, symbol: str, first: int, last: int, what: str, timeout_s: float) -> list[Any]:
    # startAt / endAt in seconds; endAt one second before the minute after ``last``, so the window holds exactly
    # the minutes [first, last] whether the venue treats endAt as inclusive or exclusive
    qs = urllib.parse.urlencode({"symbol": symbol, "type": "1min", "startAt": first * 60,
                                 "endAt": (last + 1) * 60 - 1})
    obj = _get(f"{base}/api/v1/market/candles?{qs}", what, timeout_s)
    if not isinstance(obj, dict):
        raise CandleError(f"{what}: unexpected body: {_one_line(json.dumps(obj))}")
    if str(obj.get("code")) != "200000":
        raise CandleError(f"{what}: HTTP 200 code {obj.get('code')}: {_one_line(str(obj.get('msg', '')))}")
    data = obj.get("data")
    if data is None:
        return []
    if not isinstance(data, list):
        raise CandleError(f"{what}: unexpected data: {_one_line(json.dumps(data))}")
    # [time_s, open, close, high, low, volume, turnover] -> (minute, open, high, low, close, volume)
    out = []
    for row in data:
        if not isinstance(row, list) or len(row) < 6:
            raise CandleError(f"{what}: malformed row {_one_line(json.dumps(row))}")
        out.append((int(row[0]) * 1000, row[1], row[3], row[4], row[2], row[5]))
    return out


def _page_binance(base: str, path: str, symbol: str, first: int, last: int, limit: int, what: str,
                  timeout_s: float) -> list[Any]:
    qs = urllib.parse.urlencode({"symbol": symbol, "interval": "1m", "startTime": first * MINUTE_MS,
                                 "endTime": last * MINUTE_MS + MINUTE_MS - 1, "limit": limit})
    obj = _get(f"{base}{path}?{qs}", what, timeout_s)
    if isinstance(obj, dict):  # an error body answered with 200
        raise CandleError(f"{what}: HTTP 200 {_venue_message(json.dumps(obj).encode())}")
    if not isinstance(obj, list):
        raise CandleError(f"{what}: unexpected body: {_one_line(json.dumps(obj))}")
    out = []
    for row in obj:
        if not isinstance(row, list) or len(row) < 6:
            raise CandleError(f"{what}: malformed row {_one_line(json.dumps(row))}")
        out.append((int(row[0]), row[1], row[2], row[3], row[4], row[5]))
    return out


def fetch_candles(venue: str, symbol: str, start_ms: int, end_ms: int, rest_url: str | None = None,
                  timeout_s: float = 10.0) -> np.ndarray:
    """One-minute candles of ``symbol`` on ``venue`` ("kucoin", "binance", "binance-usdm") whose minute starts in
    ``[start_ms, end_ms)``: a CANDLE array, ascending, one row per minute (minutes without a candle are absent).

    ``rest_url`` is the REST base URL (default: the real venue); ``timeout_s`` applies to each HTTP call.
    Raises CandleError (one line: venue, symbol, HTTP status, the venue's message) on any failure.
    """
    if venue not in DEFAULT_URLS:
        raise CandleError(f"unknown venue {venue!r}; expected one of {', '.join(DEFAULT_URLS)}")
    base = (rest_url or DEFAULT_URLS[venue]).rstrip("/")
    sym = _symbol_for(venue, symbol)
    first = -(-int(start_ms) // MINUTE_MS)  # first minute starting at or after start_ms
    last = -(-int(end_ms) // MINUTE_MS) - 1  # last minute starting before end_ms
    if last < first:
        return np.zeros(0, CANDLE)
    page = PAGE_MINUTES[venue]
    rows: list[Any] = []
    for p in range(first, last + 1, page):
        q = min(p + page - 1, last)
        what = f"{venue} candles {sym}"
        if venue == "kucoin":
            rows += _page_kucoin(base, sym, p, q, what, timeout_s)
        else:
            path = "/api/v3/klines" if venue == "binance" else "/fapi/v1/klines"
            rows += _page_binance(base, path, sym, p, q, page, what, timeout_s)
    return _to_array(rows, first * MINUTE_MS, (last + 1) * MINUTE_MS, f"{venue} candles {sym}")


def _to_array(rows: list[Any], lo_ms: int, hi_ms: int, what: str) -> np.ndarray:
    """Rows (minute_ms, o, h, l, c, v) with string or number values -> CANDLE array: parsed, rows with a
    non-positive / non-finite price skipped, clipped to [lo_ms, hi_ms), sorted, unique by minute (last wins)."""
    by_minute: dict[int, tuple[float, ...]] = {}
    for m, *vals in rows:
        try:
            o, h, lo, c, v = (float(x) for x in vals)
        except (TypeError, ValueError):
            raise CandleError(f"{what}: unparsable row {_one_line(str([m, *vals]))}") from None
        if not (lo_ms <= m < hi_ms) or m % MINUTE_MS:
            continue
        if not all(math.isfinite(x) and x > 0 for x in (o, h, lo, c)):
            continue
        by_minute[m] = (o, h, lo, c, v)
    out = np.zeros(len(by_minute), CANDLE)
    for k, m in enumerate(sorted(by_minute)):
        out[k] = (m, *by_minute[m])
    return out
