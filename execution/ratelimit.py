"""Client-side rate limiting per venue: weighted fixed windows that the venue's own figures correct.

Every window counts a cost per request in fixed intervals (Binance: aligned on wall-clock multiples of the
interval, UTC midnight for days; KuCoin: 30 s pools whose phase is taken from ``gw-ratelimit-reset``).
``acquire`` admits a request only if it fits in every window it costs in; otherwise nothing is taken and the
caller learns how long to wait. The venue is the truth: its response headers (``X-MBX-USED-WEIGHT-1M``,
``X-MBX-ORDER-COUNT-10S``, ``gw-ratelimit-*``) and WebSocket-API ``rateLimits`` overwrite our counts, and a
429 / 418 blocks every request until its ``Retry-After`` has passed (EXCHANGES.md 1.9, 2.6, 3.4).

Time is wall-clock seconds (``time.time()``), passed in by the caller, so the windows line up with the venue's.
Thread-safe: the sender may call ``acquire`` while response readers call ``on_headers`` / ``on_wsapi``.
"""

from __future__ import annotations

import email.utils
import math
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

UNIT_S = {"S": 1, "M": 60, "H": 3600, "D": 86400}
"""Header interval letters (``X-MBX-USED-WEIGHT-<n><S|M|H|D>``) in seconds."""
INTERVAL_S = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}
"""exchangeInfo / WS-API ``interval`` names in seconds."""
_LETTER = {"SECOND": "S", "MINUTE": "M", "HOUR": "H", "DAY": "D"}

RETRY_AFTER_429_S = 1.0
"""Block after a 429 that carries no ``Retry-After`` (Binance always sends one; KuCoin's pools also report
``gw-ratelimit-reset``, which ``on_headers`` applies)."""
RETRY_AFTER_418_S = 120.0
"""Ban after a 418 without ``Retry-After``: Binance's shortest IP ban (2 min, escalating to 3 days)."""

_USED_WEIGHT = re.compile(r"x-mbx-used-weight-(\d+)([smhd])")
_ORDER_COUNT = re.compile(r"x-mbx-order-count-(\d+)([smhd])")


@dataclass(slots=True)
class Window:
    """One fixed-window counter: at most ``limit`` cost units per ``interval_s`` seconds. ``kind`` groups the
    windows a cost key charges together (``ORDERS`` charges the 10 s and the daily order windows); it defaults
    to ``name``. Windows are ``[offset + k*interval_s, offset + (k+1)*interval_s)``."""

    name: str
    limit: int
    interval_s: float
    kind: str = ""
    offset: float = 0.0
    used: int = 0
    index: float = -math.inf
    """Which interval ``used`` counts in."""

    def __post_init__(self) -> None:
        if not self.kind:
            self.kind = self.name
        if self.interval_s <= 0 or self.limit < 0:
            raise ValueError(f"window {self.name}: bad limit {self.limit} / interval {self.interval_s}")

    def roll(self, now: float) -> None:
        """Move to the interval containing ``now`` (a new interval starts from 0; a clock stepping back keeps
        the count, the conservative choice)."""
        idx = math.floor((now - self.offset) / self.interval_s)
        if idx > self.index:
            self.used = 0
        self.index = idx

    def end(self) -> float:
        """When the current interval ends (the next one starts)."""
        return self.offset + (self.index + 1) * self.interval_s


def _name(kind: str, interval_s: float) -> str:
    for letter, unit in (("D", 86400), ("H", 3600), ("M", 60), ("S", 1)):
        if interval_s % unit == 0:
            return f"{kind}_{int(interval_s // unit)}{letter}"
    return f"{kind}_{interval_s}S"


def _retry_after_s(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date; None when absent/unparsable."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    try:
        secs = float(text)
    except ValueError:
        try:
            secs = email.utils.parsedate_to_datetime(text).timestamp() - now
        except (TypeError, ValueError, IndexError):
            return None
    return max(0.0, secs) if math.isfinite(secs) else None


class Limiter:
    """A venue's rate limits: ``acquire`` before sending, feed back headers / ``rateLimits`` / HTTP status.

    Counters: ``admitted`` (acquire returned 0), ``delayed`` (returned a finite wait), ``refused`` (returned
    ``inf``: a cost larger than a whole window), ``throttled_by_venue`` (429 / 418 responses seen)."""

    def __init__(self, venue: str, windows: Iterable[Window], *, default_pool: str | None = None) -> None:
        self.venue = venue
        self.windows: dict[str, Window] = {}
        for w in windows:
            self._add(w)
        self.default_pool = default_pool
        """The window KuCoin ``gw-ratelimit-*`` headers describe when ``on_headers`` is not told."""
        self.admitted = self.delayed = self.refused = self.throttled_by_venue = 0
        self._blocked_until = 0.0
        self._lock = threading.Lock()

    def _add(self, w: Window) -> None:
        if w.name in self.windows:
            raise ValueError(f"duplicate window {w.name}")
        self.windows[w.name] = w

    def _targets(self, key: str) -> list[Window]:
        w = self.windows.get(key)
        return [w] if w is not None else [v for v in self.windows.values() if v.kind == key]

    def _find(self, kind: str, interval_s: float) -> Window | None:
        return next((w for w in self.windows.values() if w.kind == kind and w.interval_s == interval_s), None)

    @classmethod
    def from_exchange_info(cls, rate_limits: list[dict], venue: str = "binance") -> Limiter:
        """Windows from Binance exchangeInfo ``rateLimits`` (``rateLimitType``, ``interval``, ``intervalNum``,
        ``limit``), named ``<TYPE>_<n><S|M|H|D>`` (``REQUEST_WEIGHT_1M``, ``ORDERS_10S``) with kind ``<TYPE>``."""
        windows = []
        for rl in rate_limits:
            kind, interval_s = rl["rateLimitType"], INTERVAL_S[rl["interval"]] * int(rl["intervalNum"])
            windows.append(Window(_name(kind, interval_s), int(rl["limit"]), interval_s, kind))
        return cls(venue, windows)

    # ------------------------------------------------------------------------------------------------ admission

    def acquire(self, costs: Mapping[str, int], now: float) -> float:
        """Admit one request costing ``costs`` (key: a window name, or a kind charging all its windows; keys
        with no window are ignored). 0.0: admitted and counted. >0: seconds until it would fit (nothing taken;
        includes a venue block). ``math.inf``: a cost exceeds a window's whole limit (it never fits)."""
        with self._lock:
            need: dict[str, int] = {}
            for key, cost in costs.items():
                if cost > 0:
                    for w in self._targets(key):
                        need[w.name] = need.get(w.name, 0) + cost
            wait = max(0.0, self._blocked_until - now)
            for name, cost in need.items():
                w = self.windows[name]
                if cost > w.limit:
                    self.refused += 1
                    return math.inf
                w.roll(now)
                if w.used + cost > w.limit:
                    wait = max(wait, w.end() - now)
            if wait > 0:
                self.delayed += 1
                return wait
            for name, cost in need.items():
                self.windows[name].used += cost
            self.admitted += 1
            return 0.0

    def banned_until(self, now: float) -> float:
        """Wall time until which the venue told us to send nothing (429 / 418), 0 when free."""
        with self._lock:
            return self._blocked_until if self._blocked_until > now else 0.0

    def used(self, name: str, now: float) -> int:
        """The count of window ``name`` in the interval containing ``now``."""
        with self._lock:
            w = self.windows[name]
            w.roll(now)
            return w.used

    # ------------------------------------------------------------------------------------------------ feedback

    def _set(self, w: Window, used: int, now: float, limit: int | None = None) -> None:
        w.roll(now)
        w.used = max(0, used)
        if limit is not None and limit > 0:
            w.limit = limit

    def on_headers(self, headers: Mapping[str, str], now: float, pool: str | None = None) -> None:
        """Take the venue's counts from a REST response's headers (any case): Binance
        ``X-MBX-USED-WEIGHT-<n><u>`` (REQUEST_WEIGHT) and ``X-MBX-ORDER-COUNT-<n><u>`` (ORDERS) set the used
        count of the window with that kind and interval; KuCoin ``gw-ratelimit-limit/-remaining/-reset`` (reset
        in ms) set the limit, count and phase of ``pool`` (default ``default_pool``)."""
        kc: dict[str, str] = {}
        with self._lock:
            for key, value in headers.items():
                k = key.lower()
                m = _USED_WEIGHT.fullmatch(k) or _ORDER_COUNT.fullmatch(k)
                if m is not None:
                    kind = "REQUEST_WEIGHT" if k.startswith("x-mbx-used-weight") else "ORDERS"
                    w = self._find(kind, int(m.group(1)) * UNIT_S[m.group(2).upper()])
                    if w is not None:
                        try:
                            self._set(w, int(value), now)
                        except ValueError:
                            pass
                elif k.startswith("gw-ratelimit-"):
                    kc[k[len("gw-ratelimit-"):]] = value
            name = pool or self.default_pool
            if "remaining" in kc and name in self.windows:
                try:
                    remaining = int(kc["remaining"])
                    limit = int(kc["limit"]) if "limit" in kc else None
                    reset_s = int(kc["reset"]) / 1000.0 if "reset" in kc else None
                except ValueError:
                    return
                w = self.windows[name]
                if reset_s is not None and reset_s > 0:
                    w.offset = (now + reset_s) % w.interval_s
                    w.index = -math.inf
                self._set(w, (limit or w.limit) - remaining, now, limit)

    def on_wsapi(self, rate_limits: list[dict], now: float) -> None:
        """Take the counts of a WebSocket-API response's ``rateLimits`` (``rateLimitType`` REQUEST_WEIGHT /
        ORDERS / ..., ``interval`` SECOND/MINUTE/HOUR/DAY, ``intervalNum``, ``limit``, ``count``); a window not
        yet known is added."""
        with self._lock:
            for rl in rate_limits:
                try:
                    kind, interval_s = rl["rateLimitType"], INTERVAL_S[rl["interval"]] * int(rl["intervalNum"])
                    limit, count = int(rl["limit"]), int(rl["count"])
                except (KeyError, TypeError, ValueError):
                    continue
                w = self._find(kind, interval_s)
                if w is None:
                    w = Window(_name(kind, interval_s), limit, interval_s, kind)
                    self._add(w)
                self._set(w, count, now, limit)

    def on_status(self, status: int, retry_after: str | None, now: float) -> None:
        """React to an HTTP (or WS-API) status: 429 blocks every request until ``now + Retry-After`` (default
        ``RETRY_AFTER_429_S``), 418 (IP ban) likewise (default ``RETRY_AFTER_418_S``); others are ignored."""
        if status not in (429, 418):
            return
        secs = _retry_after_s(retry_after, now)
        if secs is None:
            secs = RETRY_AFTER_429_S if status == 429 else RETRY_AFTER_418_S
        with self._lock:
            self.throttled_by_venue += 1
            self._blocked_until = max(self._blocked_until, now + secs)


# ---------------------------------------------------------------------------------------------------- defaults


def _binance(venue: str, spec: list[tuple[str, int, str, int]]) -> Limiter:
    return Limiter.from_exchange_info(
        [{"rateLimitType": t, "interval": i, "intervalNum": n, "limit": lim} for t, n, i, lim in spec], venue)


def binance_spot_limiter() -> Limiter:
    """Binance spot's documented defaults (replace with ``Limiter.from_exchange_info`` once exchangeInfo is
    read): REQUEST_WEIGHT 6000/min, ORDERS 100/10 s and 200000/day, RAW_REQUESTS 61000/5 min."""
    return _binance("binance", [("REQUEST_WEIGHT", 1, "MINUTE", 6000), ("ORDERS", 10, "SECOND", 100),
                                ("ORDERS", 1, "DAY", 200000), ("RAW_REQUESTS", 5, "MINUTE", 61000)])


def binance_usdm_limiter() -> Limiter:
    """Binance USD-M's documented defaults: REQUEST_WEIGHT 2400/min, ORDERS 1200/min and 300/10 s."""
    return _binance("binance-usdm", [("REQUEST_WEIGHT", 1, "MINUTE", 2400), ("ORDERS", 1, "MINUTE", 1200),
                                     ("ORDERS", 10, "SECOND", 300)])


def kucoin_limiter() -> Limiter:
    """KuCoin's VIP0 resource pools per 30 s: ``spot`` 4000 (private spot endpoints) and ``public`` 2000
    (per IP); a request costs only in its own pool (``{"spot": 1}``). ``gw-ratelimit-*`` headers apply to
    ``spot`` unless ``on_headers(..., pool="public")``."""
    return Limiter("kucoin", [Window("spot", 4000, 30), Window("public", 2000, 30)], default_pool="spot")
