"""Fault injection for tests: ``POST /_sim/fault`` and the state the venue modules consult.

Body ``{"kind": K, "venue": "kucoin" | "binance" | "binance-usdm" | "all", ...}`` (venue defaults to ``all``):

* ``drop``: cut every open websocket of the venue (TCP abort, no close frame).
* ``stall`` ``seconds`` [``hold`` = true]: no market data for that long; sockets stay open and pings / pongs /
  acks still flow. Frames generated meanwhile go out in a burst afterwards (``hold``) or are lost (false).
* ``skip_seq`` ``symbol``: withhold the next diff of every depth stream of that symbol (KuCoin level2: a
  ``sequenceStart`` jump; Binance: a ``U`` jump / ``pu`` mismatch). The book itself is unaffected.
* ``malformed`` ``count`` [``variants``]: before each of the next ``count`` market-data frames the venue
  publishes, send a broken copy of it; the broken copies cycle through ``truncated`` (cut JSON),
  ``missing_field`` (sequence / update id removed), ``nan_price``, ``negative_price``, ``zero_price`` and
  ``crossed`` (BBO frames: bid and ask swapped; depth: a bid at the best ask; trades: a NaN price). The real
  frames still follow, so valid data stays gap-free.
* ``rest_error`` ``status`` (429 | 418 | 500 | 503) ``count`` [``retry_after`` s, default 1]: the next ``count``
  REST requests of the venue (market data and order entry alike) answer that status with the venue's error body
  (and ``Retry-After`` for 429/418); on the Binance WS-APIs the next ``count`` requests answer an error with that
  ``status`` and ``error.data = {serverTime, retryAfter}`` (ms) instead.
* ``clock_skew`` ``ms``: from now on the venue's clock runs ``ms`` ahead of (negative: behind) the simulator's:
  every time it sends moves by ``ms`` (event times of market data and user-stream events, order times, the time
  endpoints' ``serverTime``), and signed requests are checked against the moved clock (KuCoin 400002, Binance
  -1021 for a client that has not re-synced). ``ms = 0`` puts it back; a new request replaces the old skew.
  KuCoin, Binance spot and USD-M (``all``: those three).

Order entry (venues ``kucoin``, ``binance``, ``binance-usdm``; each applies to the next ``count`` order placements
that pass authentication and validation, REST or WS-API; a new request of a kind replaces the pending one):

* ``order_reject`` ``count`` [``code``]: refused with the venue's insufficient-balance error (KuCoin 200004,
  Binance -2010, USD-M -2019), or with ``code`` (Binance: its usual message when unambiguous; otherwise the
  message ``Order rejected (simulated fault).``); nothing executes.
* ``order_partial`` ``count`` ``ratio`` (0 < ratio <= 1): IOC / market orders take at most ``ratio`` x their
  quantity (floored to the lot), the rest expires (KuCoin: done with ``canceledSize``). Other orders pass by.
* ``order_timeout`` ``count``: executed, but no response is ever sent (REST: the connection is closed after
  30 s; WS-API: never answered); the user streams still report them.
* ``order_drop_ack`` ``count``: executed, then the connection carrying the request is aborted instead of the
  response (the user streams report them on their other connections).
* ``fill_before_ack`` ``count``: the user-stream events go out (and are flushed) before the response; by default
  the response goes first.

``faults_applied`` in ``/_sim/stats`` counts fault requests by kind, ``faults_hit`` the orders / requests each kind
has affected.
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any

from aiohttp import web

from .registry import VENUES, Registry

ORDER_KINDS = ("order_reject", "order_partial", "order_timeout", "order_drop_ack", "fill_before_ack")
KINDS = ("drop", "stall", "skip_seq", "malformed", "rest_error", "clock_skew", *ORDER_KINDS)
SKEW_VENUES = ("kucoin", "binance", "binance-usdm")
"""Venues whose clock ``clock_skew`` moves."""
MAX_SKEW_MS = 3_600_000
MALFORMED = ("truncated", "missing_field", "nan_price", "negative_price", "zero_price", "crossed")
REST_STATUSES = (429, 418, 500, 503)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(venue: str, status: int) -> dict[str, Any]:
    """The venue's error body for an HTTP status."""
    if venue == "kucoin":
        msg = {429: "Too Many Requests", 418: "IP banned", 500: "Internal Server Error",
               503: "Service Unavailable"}.get(status, "error")
        return {"code": f"{status}000", "msg": msg}
    if status == 429:
        return {"code": -1003, "msg": "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per "
                "minute. Please use WebSocket Streams for live updates to avoid polling the API."}
    if status == 418:
        until = int(time.time() * 1000) + 120_000
        return {"code": -1003, "msg": f"Way too many requests; IP(127.0.0.1) banned until {until}. Please use "
                "WebSocket Streams for live updates to avoid bans."}
    if status == 503:
        return {"code": -1008, "msg": "Server is currently overloaded with other requests. Please try again in "
                "a few minutes."}
    return {"code": -1000, "msg": "An unknown error occurred while processing the request."}


class FaultError(ValueError):
    """A fault request that cannot be applied (answered 400)."""


class Faults:
    """Pending faults per venue, applied by the registry and the venue modules."""

    def __init__(self, registry: Registry, find_symbol: Callable[[str], int | None]) -> None:
        self.registry = registry
        self.find_symbol = find_symbol
        self.applied: Counter[str] = Counter()
        self.hit: Counter[str] = Counter()
        self.orders: dict[tuple[str, str], dict[str, Any]] = {}
        """(kind, venue) -> {"count": remaining, ...parameters}."""
        self.rest: dict[str, list[int]] = {}
        """venue -> [status, remaining, retry_after]."""
        self.malformed: dict[str, list[str]] = {v: [] for v in VENUES}
        """venue -> variants still to send, in order."""
        self.skip_gen: Counter[tuple[str, int]] = Counter()
        self.skew_ms: Counter[str] = Counter()
        """venue -> ms its clock runs ahead of the simulator's (``clock_skew``)."""
        self._skip_seen: dict[tuple[str, int, str], int] = {}

    # queries from venue modules ------------------------------------------------------------------------------------
    def skip_due(self, venue: str, inst: int, stream: str) -> bool:
        """True once per depth stream after each ``skip_seq`` of (venue, instrument)."""
        gen = self.skip_gen[(venue, inst)]
        if gen and self._skip_seen.get((venue, inst, stream), 0) < gen:
            self._skip_seen[(venue, inst, stream)] = gen
            return True
        return False

    def next_malformed(self, venue: str) -> str | None:
        pending = self.malformed[venue]
        return pending.pop(0) if pending else None

    def rest_due(self, venue: str) -> tuple[int, int] | None:
        """Consume one pending ``rest_error`` of the venue: (status, retry_after s), or None."""
        pending = self.rest.get(venue)
        if not pending or pending[1] <= 0:
            return None
        pending[1] -= 1
        self.hit["rest_error"] += 1
        return pending[0], pending[2]

    def order_due(self, venue: str, kind: str) -> dict[str, Any] | None:
        """Consume one pending order fault of ``kind`` for the venue: its parameters, or None."""
        pending = self.orders.get((kind, venue))
        if not pending or pending["count"] <= 0:
            return None
        pending["count"] -= 1
        self.hit[kind] += 1
        return pending

    def rest_guard(self, venue: str, handler: Handler) -> Handler:
        """Wrap a REST handler: count requests, answer pending ``rest_error`` faults."""
        stats = self.registry.stats[venue]

        async def guarded(request: web.Request) -> web.StreamResponse:
            stats["rest_requests"] += 1
            due = self.rest_due(venue)
            if due is not None:
                status, retry_after = due
                headers = {"Retry-After": str(retry_after)} if status in (429, 418) else None
                return web.json_response(error_body(venue, status), status=status, headers=headers)
            return await handler(request)

        return guarded

    # applying ------------------------------------------------------------------------------------------------------
    def apply(self, spec: dict[str, Any]) -> dict[str, Any]:
        kind = spec.get("kind")
        if kind not in KINDS:
            raise FaultError(f"unknown fault kind {kind!r}; expected one of {', '.join(KINDS)}")
        venue = spec.get("venue", "all")
        if venue != "all" and venue not in VENUES:
            raise FaultError(f"unknown venue {venue!r}; expected one of {', '.join(VENUES)} or 'all'")
        venues = list(VENUES) if venue == "all" else [venue]
        out: dict[str, Any] = {"ok": True}
        if kind == "drop":
            out["dropped"] = sum(self.registry.drop(v) for v in venues)
        elif kind == "stall":
            seconds = _number(spec, "seconds", 1.0)
            for v in venues:
                self.registry.stall(v, seconds, bool(spec.get("hold", True)))
        elif kind == "skip_seq":
            inst = self.find_symbol(str(spec.get("symbol", "")))
            if inst is None:
                raise FaultError(f"skip_seq needs a known 'symbol', got {spec.get('symbol')!r}")
            for v in venues:
                self.skip_gen[(v, inst)] += 1
        elif kind == "malformed":
            count = int(_number(spec, "count", 1))
            variants = spec.get("variants") or list(MALFORMED)
            if not isinstance(variants, list) or not variants or any(x not in MALFORMED for x in variants):
                raise FaultError(f"'variants' must be a non-empty list drawn from {', '.join(MALFORMED)}")
            for v in venues:
                self.malformed[v].extend(variants[k % len(variants)] for k in range(count))
        elif kind == "clock_skew":
            ms = spec.get("ms", 0)
            if not isinstance(ms, int) or isinstance(ms, bool) or abs(ms) > MAX_SKEW_MS:
                raise FaultError(f"clock_skew 'ms' must be a whole number within +/-{MAX_SKEW_MS}, got {ms}")
            if venue == "mexc":
                raise FaultError("clock_skew is simulated on kucoin, binance and binance-usdm, not mexc")
            for v in venues:
                if v in SKEW_VENUES:
                    self.skew_ms[v] = int(ms)
        elif kind in ORDER_KINDS:
            params: dict[str, Any] = {"count": int(_number(spec, "count", 1))}
            if kind == "order_partial":
                ratio = _number(spec, "ratio", 0.5)
                if not 0 < ratio <= 1:
                    raise FaultError(f"order_partial 'ratio' must be in (0, 1], got {ratio}")
                params["ratio"] = Fraction(str(spec.get("ratio", 0.5)))
            if kind == "order_reject" and spec.get("code") is not None:
                if not isinstance(spec["code"], int | str) or isinstance(spec["code"], bool):
                    raise FaultError(f"order_reject 'code' must be a string or an integer, got {spec['code']!r}")
                params["code"] = spec["code"]
            for v in venues:
                self.orders[(kind, v)] = dict(params)
        else:
            status = int(_number(spec, "status", 429))
            if status not in REST_STATUSES:
                raise FaultError(f"rest_error 'status' must be one of {REST_STATUSES}, got {status}")
            count = int(_number(spec, "count", 1))
            for v in venues:
                self.rest[v] = [status, count, int(_number(spec, "retry_after", 1))]
        self.applied[kind] += 1
        return out

    async def handle(self, request: web.Request) -> web.Response:
        """``POST /_sim/fault``."""
        try:
            spec = await request.json()
            if not isinstance(spec, dict):
                raise FaultError("body must be a JSON object")
            return web.json_response(self.apply(spec))
        except (FaultError, json.JSONDecodeError) as e:
            return web.json_response({"ok": False, "error": str(e)}, status=400)


def _number(spec: dict[str, Any], name: str, default: float) -> float:
    value = spec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FaultError(f"{name!r} must be a non-negative number, got {value!r}")
    return float(value)


def malformed_frame(kind: str, data: dict[str, Any], wrap: Callable[[dict[str, Any]], bytes],
                    bid: str | None = None, ask: str | None = None, price: str | None = None,
                    levels: tuple[str, str] | None = None, required: str = "", cross_px: str = "") -> bytes:
    """A broken copy of a data frame. ``data`` is the frame's payload and ``wrap`` turns a payload into the frame's
    bytes. Where prices are: ``bid``/``ask`` keys (BBO frames), ``price`` key (trades), or ``levels`` = paths of the
    bid and ask level lists (depth, e.g. ``("changes.bids", "changes.asks")``); ``required`` is the key that
    ``missing_field`` removes; ``cross_px`` the best ask, for a crossing bid level in depth frames."""
    d = copy.deepcopy(data)
    if kind == "truncated":
        full = wrap(d)
        return full[: max(1, len(full) // 2)]
    if kind == "missing_field":
        d.pop(required, None)
        return wrap(d)
    if kind == "crossed" and bid and ask:
        d[bid], d[ask] = d[ask], d[bid]
        return wrap(d)
    if kind == "crossed" and levels:
        bids = _path(d, levels[0])
        tail = list(bids[0][1:]) if bids else list((_path(d, levels[1]) or [["", "1"]])[0][1:])
        bids.insert(0, [cross_px, *tail])
        return wrap(d)

    def bad(value: str) -> str:
        return {"nan_price": "NaN", "negative_price": "-" + value.lstrip("-"), "zero_price": "0"}.get(kind, "NaN")

    if bid:
        d[bid] = bad(d[bid])
    elif price:
        d[price] = bad(d[price])
    elif levels:
        for path in levels:
            rows = _path(d, path)
            if rows:
                rows[0] = [bad(rows[0][0]), *rows[0][1:]]
                break
    return wrap(d)


def _path(d: dict[str, Any], path: str) -> list[list[str]]:
    for part in path.split("."):
        d = d[part]
    return d  # type: ignore[return-value]
