"""Orders as the executor tracks them, and their state machine.

    pending_new -> new -> partially_filled -> filled | canceled | expired
    pending_new | new -> rejected

Acks, fills and terminal states may arrive in any order (a venue's user stream can overtake the order's own
response): a fill before the ack implies the ack, a terminal state is final, and a late fill after it is still
counted (fills are de-duplicated on their trade id). An event that would move a terminal order elsewhere is
ignored and counted by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from execution.venue import TERMINAL
from pipeline.records import (
    OS_CANCELED,
    OS_EXPIRED,
    OS_FILLED,
    OS_NEW,
    OS_PARTIALLY_FILLED,
    OS_PENDING_NEW,
    OS_REJECTED,
)

STATUS_CODES = {"pending_new": OS_PENDING_NEW, "new": OS_NEW, "partially_filled": OS_PARTIALLY_FILLED,
                "filled": OS_FILLED, "canceled": OS_CANCELED, "rejected": OS_REJECTED, "expired": OS_EXPIRED}
"""Status names -> ``ORDER.status`` codes."""
ZERO = Decimal(0)


@dataclass(slots=True)
class Order:
    """One order of the executor."""

    no: int
    """Order number, unique in the pipeline run."""
    client_id: str
    symbol: str
    """The venue's symbol."""
    venue: str
    instrument: int
    """Index in the config's instruments."""
    side: int
    """1 buy, -1 sell."""
    qty: Decimal
    price: Decimal | None
    kind: str
    """``ioc``, ``market`` or ``post_only``."""
    purpose: int
    """``PURPOSE_*`` of pipeline.records."""
    pair: int
    leg: int
    signal_seq: int
    t_origin_ns: int = 0
    """The market-data frame behind the decision (monotonic ns)."""
    t_decision_ns: int = 0
    mid: float = 0.0
    """The leg's mid at the decision."""
    status: str = "pending_new"
    venue_id: str = ""
    filled: Decimal = ZERO
    t_sent_ns: int = 0
    t_ack_ns: int = 0
    reject_code: str = ""
    reason: str = ""
    acked: bool = False
    """The venue's ack was seen."""
    venue_filled: Decimal | None = None
    """The filled quantity the venue reported with the terminal state (None: not reported yet)."""
    unknown: bool = False
    """Its outcome is unknown (timeout / lost response) until the venue is asked."""
    cancel_sent: bool = False
    """A cancel was requested (post-only orders past ``rest_ms``)."""
    unknown_since_ns: int = 0
    """Monotonic ns from which its request can no longer be in the client's hands (the Unknown event; after a
    restart, the decision)."""
    trade_ids: set[str] = field(default_factory=set)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def code(self) -> int:
        return STATUS_CODES[self.status]

    def on_ack(self, venue_id: str, t_ns: int) -> bool:
        """The venue accepted it (its fills may have come first); False for a repeated ack."""
        self.venue_id = self.venue_id or venue_id
        self.unknown = False
        if self.t_ack_ns == 0:
            self.t_ack_ns = t_ns
        if self.status == "pending_new":
            self.status = "new"
        first, self.acked = not self.acked, True
        return first

    def on_fill(self, trade_id: str, qty: Decimal, t_ns: int) -> bool:
        """An execution; False for a trade already counted."""
        if trade_id in self.trade_ids:
            return False
        self.trade_ids.add(trade_id)
        self.unknown = False
        if self.t_ack_ns == 0:
            self.t_ack_ns = t_ns
        self.filled += qty
        if not self.terminal:
            self.status = "filled" if self.filled >= self.qty else "partially_filled"
        return True

    def on_done(self, status: str, t_ns: int) -> bool:
        """Terminal at the venue; False if it already was."""
        self.unknown = False
        if self.terminal:
            return False
        if self.t_ack_ns == 0:
            self.t_ack_ns = t_ns
        self.status = status
        return True

    def on_reject(self, code: str, reason: str) -> bool:
        """Refused; False if the venue had already accepted it (the reject then belongs to a resend)."""
        self.unknown = False
        if self.status != "pending_new":
            return False
        self.status, self.reject_code, self.reason = "rejected", code, reason
        return True

    @property
    def remaining(self) -> Decimal:
        return max(ZERO, self.qty - self.filled)

    def journal(self) -> dict:
        """The journal line written (and fsync'ed) before the order is sent."""
        return {"t": "order", "no": self.no, "cid": self.client_id, "sym": self.symbol, "venue": self.venue,
                "ins": self.instrument, "side": self.side, "qty": str(self.qty),
                "price": None if self.price is None else str(self.price), "kind": self.kind,
                "purpose": self.purpose, "pair": self.pair, "leg": self.leg, "sig": self.signal_seq,
                "t_origin": self.t_origin_ns, "t_decision": self.t_decision_ns, "mid": self.mid}

    @classmethod
    def from_journal(cls, e: dict) -> Order:
        return cls(e["no"], e["cid"], e["sym"], e["venue"], e["ins"], e["side"], Decimal(e["qty"]),
                   None if e["price"] is None else Decimal(e["price"]), e["kind"], e["purpose"], e["pair"],
                   e["leg"], e["sig"], e["t_origin"], e["t_decision"], e["mid"])
