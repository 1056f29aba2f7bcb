"""What the live venue clients share (``ClientCore``): the event queue with de-duplication, the rate-limit gate
in front of every order, and the venue's clock."""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from execution.ratelimit import Limiter
from execution.venue import Done, Event, Fill, OrderRequest, Reject, StreamState, Unknown, VenueError

ZERO = Decimal(0)
CLOCK_RESYNC_S = 600.0
"""How often the clients re-measure the venue's clock offset (and at once after a timestamp error)."""


def dec(value: Any) -> Decimal:
    """A venue's decimal field (string or number) as a Decimal; absent, empty or malformed -> 0."""
    if value is None or value == "":
        return ZERO
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return ZERO


def one_line(text: object) -> str:
    """A venue's message on one line, at most 300 characters (for rejects, errors and logs)."""
    return " ".join(str(text).split())[:300]


SEEN_MAX = 200_000
"""How many (client id, trade id) pairs and done client ids are remembered for de-duplication."""


class _Bounded:
    """A set that forgets its oldest members beyond ``cap``."""

    def __init__(self, cap: int = SEEN_MAX) -> None:
        self.cap = cap
        self.d: dict[object, None] = {}

    def add(self, key: object) -> bool:
        """Add ``key``; False when it was already there."""
        if key in self.d:
            return False
        self.d[key] = None
        if len(self.d) > self.cap:
            del self.d[next(iter(self.d))]
        return True

    def __contains__(self, key: object) -> bool:
        return key in self.d


class ClientCore:
    """What the live venue clients share: ``events`` with fills de-duplicated on (client id, trade id) and one
    ``Done`` per client id, the rate-limit gate in front of every order, and the venue's clock (an offset from
    the venue's time endpoint, so signed timestamps are inside the venue's window even when the host clock is
    off). Thread-safe: response readers and user-stream readers emit concurrently."""

    venue: str = ""

    def __init__(self, limiter: Limiter, max_wait_s: float) -> None:
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.limiter = limiter
        self.max_wait_s = max_wait_s
        self.offset_ms = 0
        """Venue clock minus host clock, ms."""
        self.resync_due = False
        self.log = logging.getLogger(f"execution.{self.venue or 'venue'}")
        self._emit_lock = threading.Lock()
        self._fills = _Bounded()
        self._done = _Bounded()
        self._filled: dict[str, Decimal] = {}
        """Quantity of the fills emitted per client id."""

    # ---- clock
    def now_ms(self) -> int:
        """The venue's wall clock in ms (host clock + offset)."""
        return time.time_ns() // 1_000_000 + self.offset_ms

    def wall(self) -> float:
        """The venue's wall clock in seconds (the rate limiter's time base)."""
        return time.time() + self.offset_ms / 1000.0

    CLOCK_CODES = frozenset({"400002", "-1021"})
    """Venue codes for "timestamp outside the window": the clock offset is re-measured at once."""

    def clock_suspect(self, code: str) -> None:
        """Note a venue error code; a timestamp error asks the maintenance thread for a clock re-sync."""
        if code in self.CLOCK_CODES:
            self.resync_due = True

    def sync_clock(self, server_ms: Callable[[], int]) -> int:
        """Set ``offset_ms`` from one call of the venue's time endpoint (mid-point of the round trip)."""
        t0 = time.time_ns()
        srv = server_ms()
        t1 = time.time_ns()
        self.offset_ms = int(srv - (t0 + t1) // 2 // 1_000_000)
        return self.offset_ms

    def place_many(self, reqs: list[OrderRequest]) -> list[int]:
        """``place`` each in turn (a venue client with a faster way overrides this)."""
        return [self.place(r) for r in reqs]  # type: ignore[attr-defined]

    # ---- rate limits
    def gate(self, client_id: str, costs: Mapping[str, int]) -> bool:
        """Ask the limiter for an order: True when it may go (after sleeping a wait up to ``max_wait_s``);
        otherwise a ``Reject(code="rate_limit")`` is emitted and False returned (nothing is sent into a ban)."""
        for _ in range(3):
            now = self.wall()
            banned = self.limiter.banned_until(now)
            if banned:
                self.put(Reject(client_id, "rate_limit", f"{self.venue} told us to pause for "
                                f"{banned - now:.3f} s more (429/418): order not sent", time.perf_counter_ns()))
                return False
            wait = self.limiter.acquire(costs, now)
            if wait == 0:
                return True
            if wait > self.max_wait_s or math.isinf(wait):
                self.put(Reject(client_id, "rate_limit", f"{self.venue} rate limit: the order would have to wait "
                                f"{wait:.3f} s (> {self.max_wait_s:g} s): order not sent", time.perf_counter_ns()))
                return False
            time.sleep(wait)
        self.put(Reject(client_id, "rate_limit", f"{self.venue} rate limit: still full after waiting: order not "
                        "sent", time.perf_counter_ns()))
        return False

    def query_gate(self, costs: Mapping[str, int], max_wait_s: float = 10.0) -> None:
        """Rate-limit a synchronous query: sleep up to ``max_wait_s``, else raise VenueError ``rate_limit``."""
        deadline = time.monotonic() + max_wait_s
        while True:
            now = self.wall()
            wait = self.limiter.acquire(costs, now)
            if wait == 0:
                return
            if math.isinf(wait) or time.monotonic() + wait > deadline:
                raise VenueError(self.venue, "rate_limit", f"rate limit: the query would have to wait {wait:.1f} s",
                                 retry_after_s=wait)
            time.sleep(wait)

    # ---- events
    def put(self, ev: Event) -> None:
        """Emit one event."""
        self.events.put(ev)

    def fill(self, f: Fill) -> bool:
        """Emit a fill unless (client id, trade id) was emitted before; True when emitted."""
        with self._emit_lock:
            if not self._fills.add((f.client_id, f.trade_id)):
                return False
            self._filled[f.client_id] = self._filled.get(f.client_id, Decimal(0)) + f.qty
            if len(self._filled) > SEEN_MAX:
                del self._filled[next(iter(self._filled))]
        self.events.put(f)
        return True

    def has_fill(self, client_id: str, trade_id: str) -> bool:
        with self._emit_lock:
            return (client_id, trade_id) in self._fills

    def filled(self, client_id: str) -> Decimal:
        """Quantity of the fills emitted so far for ``client_id``."""
        with self._emit_lock:
            return self._filled.get(client_id, Decimal(0))

    def done(self, d: Done) -> bool:
        """Emit the order's terminal state once; True when emitted."""
        with self._emit_lock:
            if not self._done.add(d.client_id):
                return False
        self.events.put(d)
        return True

    def is_done(self, client_id: str) -> bool:
        with self._emit_lock:
            return client_id in self._done

    def unknown(self, client_id: str, reason: str) -> None:
        self.events.put(Unknown(client_id, reason, time.perf_counter_ns()))

    def stream(self, up: bool, reason: str) -> None:
        self.events.put(StreamState(up, reason, time.perf_counter_ns()))

    # ---- the private user stream's life: connect, read until lost, report, reconnect with backoff
    _closed: threading.Event
    """Set by the subclass's ``close``."""
    _user_ws: Any = None

    def _connect_user(self) -> Any:
        """Open and subscribe the venue's user stream (a websocket); VenueError on failure."""
        raise NotImplementedError

    def _user_read(self, ws: Any) -> str:
        """Read user-stream events until the connection ends; return why."""
        raise NotImplementedError

    def _user_run(self, ws: Any) -> None:
        """Thread body: read the user stream (``_user_read(ws)`` returns why it ended), reconnect
        (``_connect_user()``) with jittered exponential backoff, and report each loss and return as StreamState."""
        attempts = 0
        while not self._closed.is_set():
            if ws is None:
                try:
                    ws = self._connect_user()
                except VenueError as e:
                    attempts += 1
                    delay = min(0.25 * 2 ** attempts, 30.0) * (0.5 + random.random() / 2)
                    self.log.warning("%s: user stream reconnect failed (%s); retry in %.2f s", self.venue, e, delay)
                    self._closed.wait(delay)
                    continue
                attempts = 0
                self.stream(True, "user stream reconnected")
            self._user_ws = ws
            if self._closed.is_set():
                ws.abort()
                return
            reason = self._user_read(ws)
            self._user_ws = None
            with contextlib.suppress(Exception):
                ws.abort()
            ws = None
            if self._closed.is_set():
                return
            self.log.warning("%s: user stream lost: %s", self.venue, reason)
            self.stream(False, reason)
            self._closed.wait(0.1 + random.random() * 0.2)
