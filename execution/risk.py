"""Pre-trade risk limits and the executor's risk state.

States: ``ok`` -> ``halted`` (too many consecutive rejects, or ``halt``: no new risk, exits and hedge repairs
still allowed) -> ``killed`` (the day's loss is over the limit, or ``kill``: the executor flattens every position
and halts; once it reports the flatten done with ``on_flattened``, reductions are blocked too). ``resume`` goes
back to ``ok`` (an operator command).

Entries go through ``check_entry``, exits and hedge repairs through ``check_reduce``; each returns None when the
order may go, else the reason, and counts it in ``blocked``. Times are monotonic ns except the PnL day, which
rolls on the UTC date of the events' exchange time (``utc_day``).
"""

from __future__ import annotations

import math
from collections import deque

import msgspec

REASONS = ("halted", "killed", "stale_data", "late_data", "max_notional_leg", "max_notional_pair", "max_open_positions",
           "max_orders_per_s")
"""Every reason a check may return."""
STATES = ("ok", "halted", "killed")

_DAY_MS = 86_400_000
_SECOND_NS = 1_000_000_000


def utc_day(ts_ms: int) -> int:
    """The UTC day number (days since 1970-01-01) of an epoch time in ms: the ``day`` of ``Risk.on_pnl``."""
    return ts_ms // _DAY_MS


class RiskParams(msgspec.Struct, forbid_unknown_fields=True):
    """Risk limits of the executor (notionals and losses in the quote currency)."""

    max_notional_leg: float = 5000.0
    """Largest notional (quote) of one leg of an entry."""
    max_notional_pair: float = 10000.0
    """Largest notional of an entry's legs together (sum of their absolute notionals)."""
    max_open_positions: int = 4
    """Most pairs with a non-zero position at once: an entry into a new pair is refused at this count."""
    max_daily_loss: float = 500.0
    """Largest loss of a UTC day (realized PnL minus fees); beyond it the executor is killed: it flattens every
    position and halts."""
    stale_ms: int = 2000
    """An entry is refused when a leg's last book update reached us longer ago than this (our monotonic clock:
    ``stale_data``), or reached us this much later than the venue's books usually do (``late_data``, see
    ``Lateness``)."""
    max_orders_per_s: int = 20
    """Most orders sent in any one-second sliding window (entries, exits and repairs alike)."""
    max_consecutive_rejects: int = 5
    """Consecutive venue rejects that halt the executor (any accepted order resets the count)."""

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be > 0, got {v!r}")


class Risk:
    """The executor's risk checks and state (single-threaded: the executor's loop)."""

    def __init__(self, params: RiskParams | None = None) -> None:
        self.params = params or RiskParams()
        self.state: str = "ok"
        """``ok``, ``halted`` or ``killed``."""
        self.reason: str = ""
        """Why the state is not ``ok`` (one line), empty when it is."""
        self.flattened = False
        """Killed and the executor reported every position closed: reductions are blocked too."""
        self.blocked: dict[str, int] = dict.fromkeys(REASONS, 0)
        """Orders refused, per reason."""
        self.consecutive_rejects = 0
        self.last_reject = ""
        self.day: int | None = None
        """UTC day of the latest PnL update."""
        self.day_start_pnl = 0.0
        """Cumulative PnL at the start of ``day`` (or at the latest ``resume``)."""
        self.pnl = 0.0
        """Latest cumulative realized-plus-fees PnL reported."""
        self._sent: deque[int] = deque()

    # --- checks -------------------------------------------------------------------------------------------

    def check_entry(self, pair: int, legs: list[tuple[str, float, int, int]], open_pairs: int,
                    now_ns: int) -> str | None:
        """May this entry (new risk) go? ``legs``: ``(symbol, notional, last_update_ns, late_ms)`` per order it
        will send (``late_ms``: how much later than usual that book update arrived, ``Lateness.late_ms``);
        ``open_pairs``: pairs other than ``pair`` with a non-zero position. None when allowed, else the reason
        (counted in ``blocked``)."""
        reason = self._entry_reason(legs, open_pairs, now_ns)
        if reason is not None:
            self.blocked[reason] += 1
        return reason

    def _entry_reason(self, legs: list[tuple[str, float, int, int]], open_pairs: int, now_ns: int) -> str | None:
        p = self.params
        if self.state == "killed":
            return "killed"
        if self.state == "halted":
            return "halted"
        stale_ns = p.stale_ms * 1_000_000
        for _sym, _notional, last_ns, _late in legs:
            if last_ns <= 0 or now_ns - last_ns > stale_ns:
                return "stale_data"
        if any(late > p.stale_ms for *_, late in legs):
            return "late_data"
        total = 0.0
        for _sym, notional, _last, _late in legs:
            if not math.isfinite(notional) or abs(notional) > p.max_notional_leg:
                return "max_notional_leg"
            total += abs(notional)
        if total > p.max_notional_pair:
            return "max_notional_pair"
        if open_pairs >= p.max_open_positions:
            return "max_open_positions"
        if self.orders_last_s(now_ns) + len(legs) > p.max_orders_per_s:
            return "max_orders_per_s"
        return None

    def check_reduce(self, now_ns: int, n_orders: int = 1) -> str | None:
        """May an exit or hedge repair of ``n_orders`` orders go? Blocked only when killed and already flattened,
        or by the order rate (reducing risk is allowed when halted, and while a kill's flatten runs)."""
        reason = None
        if self.state == "killed" and self.flattened:
            reason = "killed"
        elif self.orders_last_s(now_ns) + n_orders > self.params.max_orders_per_s:
            reason = "max_orders_per_s"
        if reason is not None:
            self.blocked[reason] += 1
        return reason

    def orders_last_s(self, now_ns: int) -> int:
        """Orders sent in the sliding second ending at ``now_ns``."""
        sent, horizon = self._sent, now_ns - _SECOND_NS
        while sent and sent[0] <= horizon:
            sent.popleft()
        return len(sent)

    # --- events -------------------------------------------------------------------------------------------

    def on_order_sent(self, now_ns: int) -> None:
        """An order left (monotonic ns)."""
        self._sent.append(now_ns)

    def on_reject(self, reason: str) -> None:
        """The venue (or the local rules) refused an order: ``max_consecutive_rejects`` in a row halt."""
        self.consecutive_rejects += 1
        self.last_reject = reason
        if self.consecutive_rejects >= self.params.max_consecutive_rejects and self.state == "ok":
            self._set("halted", f"max_consecutive_rejects: {self.consecutive_rejects} in a row, last: {reason}")

    def on_accept(self) -> None:
        """The venue accepted an order: the consecutive-reject count restarts."""
        self.consecutive_rejects = 0

    def on_pnl(self, realized_plus_fees: float, day: int) -> None:
        """The cumulative realized PnL net of fees (``Ledger.net_pnl``; a loss is negative) after an event of UTC
        day ``day`` (``utc_day(ts_ms)``). The day's loss counts from the last value of an earlier day (0 at
        start); beyond ``max_daily_loss`` the state becomes ``killed``. Events of an earlier day count in the
        current one."""
        if self.day is None:
            self.day = day
        elif day > self.day:
            self.day, self.day_start_pnl = day, self.pnl
        self.pnl = realized_plus_fees
        loss = self.day_start_pnl - realized_plus_fees
        if loss > self.params.max_daily_loss and self.state != "killed":
            self._set("killed", f"max_daily_loss: lost {loss:.2f} today (limit {self.params.max_daily_loss:g})")

    def on_flattened(self) -> None:
        """The executor closed every position after a kill: from now on reductions are blocked too."""
        if self.state == "killed":
            self.flattened = True

    def halt(self, reason: str) -> None:
        """Stop new risk (exits and repairs still go), e.g. on an operator command or a lost user stream."""
        if self.state == "ok":
            self._set("halted", reason)

    def kill(self, reason: str) -> None:
        """Flatten everything and halt (the executor closes the positions, then calls ``on_flattened``)."""
        if self.state != "killed":
            self._set("killed", reason)

    def resume(self) -> None:
        """Back to ``ok`` (operator command): clears the reject count, and the day's loss counts afresh from the
        current PnL."""
        self.state, self.reason, self.flattened = "ok", "", False
        self.consecutive_rejects = 0
        self.day_start_pnl = self.pnl

    def _set(self, state: str, reason: str) -> None:
        self.state, self.reason = state, reason

    def snapshot(self, now_ns: int | None = None) -> dict:
        """JSON-ready state for the status file (``orders_last_s`` only when ``now_ns`` is given)."""
        snap = {"state": self.state, "reason": self.reason, "flattened": self.flattened,
                "consecutive_rejects": self.consecutive_rejects, "last_reject": self.last_reject,
                "day": self.day, "daily_pnl": self.pnl - self.day_start_pnl, "blocked": dict(self.blocked),
                "params": msgspec.structs.asdict(self.params)}
        if now_ns is not None:
            snap["orders_last_s"] = self.orders_last_s(now_ns)
        return snap


class Lateness:
    """How much later than usual market data reaches us, judged per venue.

    ``delay`` = our wall-clock receive time - the venue's event time. It holds the transport time and the offset
    between the venue's clock and ours, which no host can tell apart; its minimum over the last ``WINDOW_MS`` of
    a venue's book updates is that venue's usual delay (the offset plus the fastest transport), and lateness =
    delay - usual. Frames the venue held back and then sent in a burst arrive late by the hold; a venue clock that
    jumps back makes everything late until the window has passed (entries wait: the safe side); one that jumps
    ahead lowers the minimum at once. A stalled stream is the other half, judged on our monotonic clock
    (``stale_data``)."""

    BUCKET_MS = 5_000
    WINDOW_MS = 30_000

    def __init__(self, venue_of: list[str]) -> None:
        self.venue_of = venue_of
        """Per instrument: its venue."""
        self._mins: dict[str, deque[list[int]]] = {v: deque() for v in venue_of}
        """Per venue: ``[bucket, minimum delay in it]`` over the window."""
        self.late_ms: list[int] = [0] * len(venue_of)
        """Per instrument: how late its latest book update was, ms (0: usual)."""

    def on_book(self, i: int, recv_wall_ms: int, event_ms: int) -> int:
        """A book update of instrument ``i`` received at ``recv_wall_ms`` (our wall clock), stamped ``event_ms`` by
        its venue: its lateness in ms."""
        delay, bucket = recv_wall_ms - event_ms, recv_wall_ms // self.BUCKET_MS
        q = self._mins[self.venue_of[i]]
        if q and q[-1][0] == bucket:
            q[-1][1] = min(q[-1][1], delay)
        else:
            q.append([bucket, delay])
        while q[0][0] <= bucket - self.WINDOW_MS // self.BUCKET_MS:
            q.popleft()
        self.late_ms[i] = delay - min(m for _, m in q)
        return self.late_ms[i]
