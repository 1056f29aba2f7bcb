"""What every venue client (live or paper) and the executor agree on: the order request, the events a client
reports, the venue's view of an order, and the client interface.

A client never blocks the executor on the network: ``place`` and ``cancel`` write the request (or hand it to a
sender thread that owns a persistent connection) and return; acks, rejects, fills and terminal states arrive as
events on ``client.events`` (a thread-safe queue) from the response readers and the private user stream. Queries
used at start-up (rules, balances, open orders, one order, its fills) are synchronous.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol

OrderKind = Literal["ioc", "market", "post_only"]
"""``ioc``: limit IOC (marketable limit, the default); ``market``; ``post_only``: a maker-only limit (KuCoin
``postOnly``, Binance spot ``LIMIT_MAKER``, USD-M ``GTX``)."""

Status = Literal["new", "partially_filled", "filled", "canceled", "expired", "rejected"]
"""An order's state at the venue (the executor adds ``pending_new`` before the ack)."""
TERMINAL: frozenset[str] = frozenset({"filled", "canceled", "expired", "rejected"})
"""The states an order never leaves."""


class VenueError(RuntimeError):
    """A venue call failed: transport error, HTTP error or error envelope. ``code`` is the venue's error code
    (``"-2010"``, ``"400100"``, ``"429"`` for a bare HTTP status), ``status`` the HTTP status (0: none)."""

    def __init__(self, venue: str, code: str, msg: str, status: int = 0, retry_after_s: float | None = None) -> None:
        super().__init__(f"{venue}: {code} {msg}")
        self.venue, self.code, self.msg, self.status, self.retry_after_s = venue, code, msg, status, retry_after_s


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """One order as the executor wants it placed; price and quantity are already exact decimal strings on the
    instrument's tick and step (``execution.rules.quantize``)."""

    client_id: str
    """Client order id, derived from the signal's sequence and leg (``[A-Za-z0-9_-]``, at most 36 chars)."""
    symbol: str
    """The venue's symbol (``BTC-USDT`` on KuCoin, ``BTCUSDT`` on Binance)."""
    side: int
    """1 buy, -1 sell."""
    qty: str
    """Base quantity, a multiple of the step."""
    price: str | None
    """Limit price, a multiple of the tick (None for ``market``)."""
    kind: OrderKind = "ioc"
    reduce_only: bool = False
    """USD-M only: the order may only reduce the position."""


@dataclass(frozen=True, slots=True)
class Ack:
    """The venue accepted the order (it is live or already done)."""

    client_id: str
    venue_order_id: str
    t_ns: int
    """Monotonic ns at which the response was read."""


@dataclass(frozen=True, slots=True)
class Reject:
    """The venue refused the order (nothing executed)."""

    client_id: str
    code: str
    """The venue's error code, e.g. ``-2010``, ``200004``; ``"429"`` / ``"418"`` for rate limits."""
    reason: str
    """The venue's message, one line."""
    t_ns: int
    duplicate: bool = False
    """The venue already has an order with this client id (the original may have executed)."""


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of an order."""

    client_id: str
    venue_order_id: str
    trade_id: str
    """The venue's trade id: fills are de-duplicated on (client_id, trade_id)."""
    price: Decimal
    qty: Decimal
    """Base quantity executed."""
    fee: Decimal
    """Commission paid (positive) or rebate (negative), in ``fee_asset``."""
    fee_asset: str
    maker: bool
    ts_ms: int
    """The venue's execution time."""
    t_ns: int
    """Monotonic ns at which the fill was read."""


@dataclass(frozen=True, slots=True)
class Done:
    """The order reached a terminal state at the venue."""

    client_id: str
    status: Status
    """``filled``, ``canceled`` or ``expired`` (an IOC remainder; KuCoin reports it as canceled)."""
    filled_qty: Decimal
    t_ns: int


@dataclass(frozen=True, slots=True)
class Unknown:
    """The outcome of a place is unknown (timeout, 5xx, connection lost before the response): the executor asks
    the venue for the order by client id."""

    client_id: str
    reason: str
    t_ns: int


@dataclass(frozen=True, slots=True)
class StreamState:
    """The private user stream connected (``up``) or was lost (fills may be missed until it is back)."""

    up: bool
    reason: str
    t_ns: int


Event = Ack | Reject | Fill | Done | Unknown | StreamState


@dataclass(slots=True)
class OrderState:
    """The venue's view of one order (query / open orders)."""

    client_id: str
    venue_order_id: str
    symbol: str
    side: int
    qty: Decimal
    price: Decimal | None
    filled_qty: Decimal
    status: Status
    fills: list[Fill] = field(default_factory=list)
    """Filled by ``VenueClient.order(..., with_fills=True)``."""


class VenueClient(Protocol):
    """A venue as the executor sees it (``execution.kucoin_client``, ``execution.binance_client``,
    ``execution.paper``)."""

    venue: str
    """``kucoin``, ``binance``, ``binance-usdm`` or ``paper``."""
    events: queue.SimpleQueue[Event]

    def start(self) -> None:
        """Open the persistent connections and the user stream; return when orders can be sent (or raise
        VenueError)."""

    def close(self) -> None:
        """Close every connection (idempotent)."""

    def rules(self, symbols: list[str]) -> dict[str, object]:
        """Instrument rules (``execution.rules.Rules``) from the venue's symbol list / exchangeInfo."""

    def place(self, req: OrderRequest) -> int:
        """Send an order without waiting for its response; return the monotonic ns at which it was written to
        the socket (0 when refused locally by the rate limiter: a Reject event follows)."""

    def place_many(self, reqs: list[OrderRequest]) -> list[int]:
        """``place`` for the legs of one decision, in order, as close together as the venue's transport allows."""

    def cancel(self, symbol: str, client_id: str) -> None:
        """Ask the venue to cancel an order by client id (the outcome arrives as events)."""

    def order(self, symbol: str, client_id: str, with_fills: bool = True) -> OrderState | None:
        """The venue's view of one order, None when the venue does not know the client id."""

    def open_orders(self, symbols: list[str]) -> list[OrderState]:
        """Orders still working at the venue."""

    def balances(self) -> dict[str, Decimal]:
        """Spot: total balance per asset (free + locked). USD-M: the margin assets' wallet balances."""

    def positions(self) -> dict[str, Decimal]:
        """USD-M: signed position per symbol (one-way mode). Spot: empty."""
