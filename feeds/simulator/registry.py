"""Open websocket connections of every venue, their subscriptions, and the one way frames leave the server.

Each connection has a queue drained by its own writer task, so a slow client never holds up the pacing loop (one
whose queue passes ``max_queue`` frames is cut off, as venues do). Market data goes through ``send`` and obeys a
venue stall (held and released after it, or dropped); control frames (welcome, pong, acks) go through
``send_control`` and never stall. Keys are ``(scope, name)`` pairs chosen by the venue modules, e.g.
``("kucoin", "/market/ticker:BTC-USDT")`` or ``("binance-usdm/public", "btcusdt@bookTicker")``. Frames are text
websocket messages, except a ``Binary`` (MEXC's protobuf pushes), which goes out as a binary message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

VENUES = ("kucoin", "binance", "binance-usdm", "mexc")

Key = tuple[str, str]


class Binary(bytes):
    """A frame sent as a binary websocket message (plain ``bytes`` go out as text)."""


@dataclass(eq=False)
class Conn:
    """One client websocket."""

    venue: str
    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    id: int = 0
    combined: bool = False
    """Binance: frames wrapped as ``{"stream","data"}``."""
    scope: str = ""
    """Subscription scope of this connection (Binance USD-M: ``binance-usdm/public`` or ``.../market``)."""
    subs: set[Key] = field(default_factory=set)
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    held: list[bytes] = field(default_factory=list)
    last_seen: float = field(default_factory=time.monotonic)
    """Last keepalive from the client (KuCoin ping, Binance pong)."""
    writer: asyncio.Task[None] | None = None
    closed: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    """Free slot for venue modules (e.g. user-data streams later)."""


class Registry:
    """Connections by venue, subscribers by key, stalls, counters."""

    def __init__(self, max_queue: int = 50_000) -> None:
        self.max_queue = max_queue
        self.conns: dict[str, set[Conn]] = {v: set() for v in VENUES}
        self.subs: dict[Key, set[Conn]] = defaultdict(set)
        self.stats: dict[str, dict[str, int]] = {
            v: {"connections_open": 0, "connections_total": 0, "frames_sent": 0, "frames_dropped": 0,
                "rest_requests": 0}
            for v in VENUES}
        self.stall_until: dict[str, float] = dict.fromkeys(VENUES, 0.0)
        self.stall_hold: dict[str, bool] = dict.fromkeys(VENUES, True)
        self._ids = itertools.count(1)

    # lifecycle -----------------------------------------------------------------------------------------------------
    def open(self, venue: str, ws: web.WebSocketResponse, request: web.Request) -> Conn:
        conn = Conn(venue, ws, request.transport, next(self._ids))
        self.conns[venue].add(conn)
        st = self.stats[venue]
        st["connections_open"] += 1
        st["connections_total"] += 1
        conn.writer = asyncio.get_running_loop().create_task(self._write(conn))
        return conn

    def close(self, conn: Conn) -> None:
        """Forget the connection (idempotent); its writer ends."""
        if conn.closed:
            return
        conn.closed = True
        self.conns[conn.venue].discard(conn)
        self.stats[conn.venue]["connections_open"] -= 1
        for key in conn.subs:
            self.subs[key].discard(conn)
        conn.subs.clear()
        conn.held.clear()
        conn.queue.put_nowait(None)

    def kill(self, conn: Conn) -> None:
        """Cut the TCP connection without a close handshake (the frames still queued for it are dropped)."""
        if not conn.closed:
            self.stats[conn.venue]["frames_dropped"] += conn.queue.qsize() + len(conn.held)
        self.close(conn)
        if conn.transport is not None:
            conn.transport.abort()

    async def shut(self, conn: Conn, code: int = 1000, message: bytes = b"") -> None:
        """Close with a close frame (briefly waiting for the client), then cut."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.ws.close(code=code, message=message), 1.0)
        self.kill(conn)

    async def close_all(self) -> None:
        conns = [c for v in VENUES for c in self.conns[v]]
        await asyncio.gather(*(self.shut(c, 1001, b"server shutdown") for c in conns))

    # subscriptions -------------------------------------------------------------------------------------------------
    def subscribe(self, conn: Conn, key: Key) -> None:
        conn.subs.add(key)
        self.subs[key].add(conn)

    def unsubscribe(self, conn: Conn, key: Key) -> None:
        conn.subs.discard(key)
        self.subs[key].discard(conn)

    def subscribers(self, key: Key) -> set[Conn]:
        return self.subs.get(key) or set()

    # sending -------------------------------------------------------------------------------------------------------
    def stalled(self, venue: str) -> bool:
        return time.monotonic() < self.stall_until[venue]

    def send(self, conn: Conn, data: bytes) -> None:
        """Queue a market-data frame (subject to a stall of the venue)."""
        if conn.held or self.stalled(conn.venue):
            if conn.held or self.stall_hold[conn.venue]:
                conn.held.append(data)  # keeps order until the held frames are released
            else:
                self.stats[conn.venue]["frames_dropped"] += 1
            return
        self._put(conn, data)

    def send_control(self, conn: Conn, data: bytes) -> None:
        """Queue a control frame (never stalled)."""
        self._put(conn, data)

    def _put(self, conn: Conn, data: bytes) -> None:
        if conn.closed:
            return
        if conn.queue.qsize() >= self.max_queue:
            self.kill(conn)
            return
        conn.queue.put_nowait(data)

    async def _write(self, conn: Conn) -> None:
        st = self.stats[conn.venue]
        try:
            while (data := await conn.queue.get()) is not None:
                await conn.ws.send_frame(data, WSMsgType.BINARY if type(data) is Binary else WSMsgType.TEXT)
                st["frames_sent"] += 1
        except Exception:
            self.kill(conn)

    # faults --------------------------------------------------------------------------------------------------------
    def stall(self, venue: str, seconds: float, hold: bool = True) -> None:
        """No market data for ``seconds``; held frames go out when it ends (``hold``), else they are lost."""
        self.stall_until[venue] = time.monotonic() + seconds
        self.stall_hold[venue] = hold
        asyncio.get_running_loop().call_later(seconds, self._release, venue)

    def _release(self, venue: str) -> None:
        left = self.stall_until[venue] - time.monotonic()
        if left > 0:
            asyncio.get_running_loop().call_later(left + 0.001, self._release, venue)
            return
        for conn in list(self.conns[venue]):
            held, conn.held = conn.held, []
            for data in held:
                self._put(conn, data)

    def drop(self, venue: str) -> int:
        """Abruptly cut every connection of the venue; returns how many."""
        conns = list(self.conns[venue])
        for conn in conns:
            self.kill(conn)
        return len(conns)
