"""Persistent keep-alive HTTP for the venue clients, on urllib3's connection class, and the plumbing both live
clients share (``ClientCore``: event queue with de-duplication, rate-limit gate, venue clock).

``Connection`` is one keep-alive connection (TCP_NODELAY) with one owner at a time; its ``send`` and ``receive``
are separate so that an order can be written on the caller's thread and its response read on another, and the
moment of the write is known (``send`` returns it). ``HttpClient`` is a small thread-safe pool of them for
synchronous queries. Nothing here logs or formats request headers or bodies (they carry signatures); errors name
the method, the path without its query, and what went wrong.
"""

from __future__ import annotations

import http.client
import logging
import math
import queue
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError as Urllib3Error

from execution.ratelimit import Limiter
from execution.venue import Done, Event, Fill, Reject, StreamState, Unknown, VenueError

WS_SOCKOPT = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
"""``websocket.create_connection(..., sockopt=WS_SOCKOPT)``: no Nagle delay on websocket writes."""
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1), (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
"""Socket options of every connection: no Nagle delay on small writes; TCP keep-alive probes."""


@dataclass(frozen=True, slots=True)
class Response:
    """One HTTP response: status, headers with lower-case names, the whole body, and when it was read."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    t_ns: int
    """``time.perf_counter_ns()`` once the body was read."""


class HttpError(OSError):
    """A transport failure (no HTTP response). ``sent`` is False only when the request certainly did not reach the
    server (the connection could not be opened); True means the outcome is unknown."""

    def __init__(self, what: str, sent: bool) -> None:
        super().__init__(what)
        self.sent = sent


def _path_only(url: str) -> str:
    return url.split("?", 1)[0]


class _Timed(HTTPConnection):
    """Records ``perf_counter_ns()`` right before the request's bytes go to the socket (http.client writes the
    headers and a bytes body with one ``send``)."""

    t_write = 0

    def send(self, data) -> None:  # type: ignore[no-untyped-def]
        self.t_write = time.perf_counter_ns()
        super().send(data)


class _TimedTLS(HTTPSConnection):
    t_write = 0

    def send(self, data) -> None:  # type: ignore[no-untyped-def]
        self.t_write = time.perf_counter_ns()
        super().send(data)


class Connection:
    """One persistent HTTP/1.1 connection to ``base_url`` (``http://`` or ``https://``), not thread-safe: its
    users serialize ``send`` / ``receive`` / ``request`` (a ``send`` on one thread may be followed by the
    ``receive`` on another)."""

    def __init__(self, base_url: str, timeout_s: float = 5.0, user_agent: str = "lowlat") -> None:
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) base URL: {base_url!r}")
        self.prefix = u.path.rstrip("/")
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.https = u.scheme == "https"
        self.timeout_s = timeout_s
        self.user_agent = user_agent
        self.conn: HTTPConnection | None = None
        self.last_used = 0.0
        self._pending = ""

    def _new(self) -> HTTPConnection:
        cls = _TimedTLS if self.https else _Timed
        return cls(self.host, self.port, timeout=self.timeout_s, socket_options=NODELAY)

    def connect(self) -> None:
        """Open the connection now unless it is open and healthy (the server has not closed it)."""
        if self.conn is not None and self.conn.sock is not None and self.conn.is_connected and not self._pending:
            return
        self.close()
        conn = self._new()
        try:
            conn.connect()
        except (OSError, http.client.HTTPException, Urllib3Error) as e:
            conn.close()
            raise HttpError(f"connect to {self.host}:{self.port}: {type(e).__name__}: {e}", sent=False) from None
        self.conn = conn
        self.last_used = time.monotonic()

    @property
    def healthy(self) -> bool:
        """Open, idle, and not closed by the server."""
        c = self.conn
        return c is not None and c.sock is not None and not self._pending and c.is_connected

    def send(self, method: str, path: str, body: bytes | None = None,
             headers: Mapping[str, str] | None = None) -> int:
        """Write one request (``path`` includes the query); return ``perf_counter_ns()`` taken right before the
        bytes were handed to the socket (a write of a small request does not block).
        Reconnects first when the server closed the idle connection. HttpError(sent=False) when nothing left."""
        self.connect()
        assert self.conn is not None
        hdrs = {"User-Agent": self.user_agent, "Accept": "application/json", "Connection": "keep-alive"}
        if headers:
            hdrs.update(headers)
        if body is not None:
            hdrs["Content-Length"] = str(len(body))
        url = self.prefix + path
        self._pending = f"{method} {_path_only(url)}"  # before the write: another thread may read the answer
        try:
            self.conn.request(method, url, body=body, headers=hdrs, preload_content=True)
        except (OSError, http.client.HTTPException, Urllib3Error) as e:
            self.close()
            # a partial write may have reached the server: only a refused connect is "certainly not sent"
            raise HttpError(f"{method} {_path_only(url)}: write failed: {type(e).__name__}: {e}", sent=True) \
                from None
        self.last_used = time.monotonic()
        return getattr(self.conn, "t_write", 0) or time.perf_counter_ns()

    def receive(self, timeout_s: float | None = None) -> Response:
        """Read the response to the last ``send``; HttpError(sent=True) on timeout or a lost connection (the
        connection is then closed: a late response must not be taken for the next request's)."""
        what, self._pending = self._pending, ""
        if self.conn is None or not what:
            raise HttpError("receive without a request in flight", sent=False)
        self.conn.timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            r = self.conn.getresponse()
            body = r.data
            status = r.status
            headers = {k.lower(): v for k, v in r.headers.items()}
        except (OSError, http.client.HTTPException, Urllib3Error) as e:
            self.close()
            kind = "timeout" if isinstance(e, TimeoutError | socket.timeout) or "timed out" in str(e) else "lost"
            raise HttpError(f"{what}: no response ({kind}: {type(e).__name__})", sent=True) from None
        t = time.perf_counter_ns()
        self.last_used = time.monotonic()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, headers, body, t)

    def request(self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                timeout_s: float | None = None) -> Response:
        """``send`` then ``receive``."""
        self.send(method, path, body, headers)
        return self.receive(timeout_s)

    def close(self) -> None:
        """Close the socket (idempotent); the next ``send`` reconnects."""
        self._pending = ""
        c, self.conn = self.conn, None
        if c is not None:
            try:
                c.close()
            except OSError:
                pass


class HttpClient:
    """A thread-safe pool of keep-alive ``Connection``s for synchronous requests (queries)."""

    def __init__(self, base_url: str, timeout_s: float = 5.0, max_idle: int = 4) -> None:
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.max_idle = max_idle
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def warm(self, n: int = 1) -> None:
        """Open ``n`` idle connections now (raises HttpError when the server cannot be reached)."""
        conns = []
        for _ in range(n):
            c = Connection(self.base_url, self.timeout_s)
            c.connect()
            conns.append(c)
        for c in conns:
            self._release(c)

    def _take(self) -> Connection:
        with self._lock:
            while self._idle:
                c = self._idle.pop()
                if c.healthy:
                    return c
                c.close()
        return Connection(self.base_url, self.timeout_s)

    def _release(self, c: Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.max_idle and c.conn is not None:
                self._idle.append(c)
                return
        c.close()

    def request(self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                timeout_s: float | None = None) -> Response:
        """One request on an idle keep-alive connection (a new one when none is idle)."""
        c = self._take()
        try:
            r = c.request(method, path, body, headers, timeout_s)
        except HttpError:
            c.close()
            raise
        self._release(c)
        return r

    def close(self) -> None:
        """Close every idle connection (idempotent)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()


# ---------------------------------------------------------------------------------------------- client plumbing

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
