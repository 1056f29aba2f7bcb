"""How an order request's answer and its user-stream events leave the simulator, and the faults that disturb that.

By default the response goes out first (REST: written and finished before the events are queued; WS-API: queued
first on the same connection), then the user-stream events, as the venues usually behave. ``fill_before_ack``
queues the events first and waits until they have been written before answering; ``order_timeout`` never answers
(REST: the connection is closed after ``TIMEOUT_S``); ``order_drop_ack`` aborts the connection instead of answering.
The order has executed in every case, and the events are always published.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .accounts import Account, Update
from .faults import Faults
from .registry import Conn, Registry

TIMEOUT_S = 30.0


@dataclass
class Outcome:
    """A handler's answer: HTTP / WS-API status and body, the account updates to publish, and how to deliver."""

    status: int
    body: Any
    account: Account | None = None
    updates: list[Update] = field(default_factory=list)
    mode: str = "normal"
    """``normal``, ``events_first``, ``timeout`` or ``drop``."""
    order_count: bool = False
    """An order placement (Binance: order-count headers / rate limits)."""
    retry_after: int | None = None

    def publish(self) -> set[Conn]:
        return self.account.publish(self.updates) if self.account is not None else set()


def delivery_mode(faults: Faults, venue: str) -> str:
    """Consume the first pending delivery fault of the venue for an accepted order."""
    for kind, mode in (("order_timeout", "timeout"), ("order_drop_ack", "drop"), ("fill_before_ack", "events_first")):
        if faults.order_due(venue, kind) is not None:
            return mode
    return "normal"


async def drained(conns: set[Conn], limit_s: float = 1.0) -> None:
    """Wait until the connections' queued frames have been written (and a little more, so that a client reading
    several sockets sees them first)."""
    end = time.monotonic() + limit_s
    while any(not c.closed and c.queue.qsize() for c in conns) and time.monotonic() < end:
        await asyncio.sleep(0.001)
    if conns:
        await asyncio.sleep(0.02)


async def send_rest(request: web.Request, resp: web.Response, out: Outcome) -> web.StreamResponse:
    """Answer a REST order request according to ``out.mode``."""
    if out.mode == "events_first":
        await drained(out.publish())
        return resp
    if out.mode in ("timeout", "drop"):
        out.publish()
        if out.mode == "timeout":
            await asyncio.sleep(TIMEOUT_S)
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError
    await resp.prepare(request)
    await resp.write_eof()
    out.publish()
    return resp


async def send_ws(registry: Registry, conn: Conn, frame: bytes, out: Outcome) -> None:
    """Answer a WS-API request according to ``out.mode``."""
    if out.mode == "events_first":
        conns = out.publish()
        await drained(conns - {conn})
        registry.send_control(conn, frame)
    elif out.mode == "timeout":
        out.publish()
    elif out.mode == "drop":
        out.publish()
        registry.kill(conn)
    else:
        registry.send_control(conn, frame)
        out.publish()
