"""The executor stage: signals in, orders out to the venue (or the paper venue), fills back, positions kept.

Inputs: the stats stage's ``signal`` ring first, then any number of ``book`` rings (the feeds' local books: the
stale-data guard, the paper venue's fills and repair prices read them). Output: one ``order`` ring, an ORDER record
per order event (sent, ack, fill, done, reject, unknown, reconciled) for ``bench latency`` and
monitoring. Side files in the run directory: ``<stage>.journal`` (``execution.journal``) and
``<stage>.status.json`` (the ``execution`` object of ``pipeline status --json``).

Per signal, both legs go out at once (the second is written before the first is acked): by default marketable
limit IOC orders priced at the decision mid +/- ``slippage_bps``, on the instrument's tick and step
(``execution.rules``), after the risk checks (``execution.risk``). Every order's journal line is fsync'ed before it
is sent. When all of a pair's orders are terminal and a leg is off its target by at least one step (a partial
fill, a reject), the executor re-sends the missing quantity up to ``repair_attempts`` times, then flattens the pair.

No new risk on data it cannot trust: an entry waits (exits and repairs still go) when a leg's book is older than
``risk.stale_ms`` on our clock (a stalled stream: ``stale_data``), when it reached us more than ``stale_ms`` later
than that venue's books usually do (a held-back burst, a venue clock that jumped back: ``late_data``,
``execution.risk.Lateness``), or while a leg's venue user stream is down (its fills cannot reach us:
``user_stream_down``). The books are venue-stamped (a BBO may carry our receive time instead), so they are what
lateness is judged on.

Restart: the journal is replayed (orders, fills, positions, the last signal handled); every order whose outcome the
journal does not hold is looked up at the venue by its client id and its fills taken from there; only then are
new signals traded. Client ids are ``L<run>-<signal seq>-<leg><n>``: derived from the signal, unique per run.
"""

from __future__ import annotations

import ipaddress
import math
import os
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
import numpy as np

from execution import venue as v
from execution.client_core import ClientCore
from execution.journal import Journal
from execution.orders import ZERO, Order
from execution.positions import Ledger
from execution.risk import Lateness, Risk, RiskParams
from execution.rules import LocalReject, Rules, quantize
from execution.signing import SIMULATOR, Credentials
from pipeline.config import PipelineConfig, StageSpec
from pipeline.records import (
    EV_ACK,
    EV_DONE,
    EV_FILL,
    EV_RECONCILED,
    EV_REJECT,
    EV_SENT,
    EV_UNKNOWN,
    FLAG_LOCAL_TIME,
    FLAG_RESYNC,
    ORDER,
    PURPOSE_ENTRY,
    PURPOSE_EXIT,
    PURPOSE_FLATTEN,
    PURPOSE_MEASURE,
    PURPOSE_REPAIR,
    SIG_ENTER_LONG,
    SIG_ENTER_SHORT,
    SIG_EXIT,
    SIG_FLAG_MEASURE,
)
from pipeline.stage import Stage, StageContext
from pipeline.status_file import StatusFile

VENUES = ("kucoin", "binance", "binance-usdm")
ENV_PREFIX = {"kucoin": "LOWLAT_KUCOIN", "binance": "LOWLAT_BINANCE", "binance-usdm": "LOWLAT_BINANCE_USDM"}
"""Credentials come from ``<prefix>_API_KEY``, ``<prefix>_API_SECRET`` (and ``<prefix>_API_PASSPHRASE`` for
KuCoin) in the environment, or under those names from an owner-only file the user names; never from the repo."""
BATCH = 64
SETTLED_GRACE_NS = 10_000_000_000
"""A settled order (terminal, every fill the venue reported is in) stays in memory this long, past the venue
clients' request timeout (5 s), so a late response or event still finds it; then only the journal holds it."""
SETTLED_KEPT = 4096
"""Orders that left memory whose client ids are remembered, so their late venue events are not counted as unknown."""
RATE_LIMITED = frozenset({"rate_limit", "429", "418"})
"""Reject codes of rate limits (ours or the venue's): the pair's repair waits ``RATE_HOLD_NS``."""
RETRY_LATER = RATE_LIMITED | ClientCore.CLOCK_CODES
"""Reject codes after which nothing executed and waiting mends it: rate limits, and a signed timestamp outside the
venue's window (the client re-syncs its clock at once). The pair's repair waits ``RATE_HOLD_NS`` and does not
count as an attempt."""
NOT_RISK_REJECTS = frozenset({"rate_limit"}) | ClientCore.CLOCK_CODES
"""Reject codes that do not count towards ``max_consecutive_rejects``: our own limiter's refusals never reached
the venue, and a clock refusal says our clock was off, not that the venue refused the order."""
RATE_HOLD_NS = 1_000_000_000
NOT_AT_VENUE_NS = 6_000_000_000
"""An order the venue does not know is taken as never arrived only this long after its request may last have
been sent (the venues refuse a request signed more than 5 s earlier: KuCoin's timestamp window, Binance's
recvWindow); until then it is looked up again, since a request still queued or in flight can yet execute."""
STATUS_PERIOD_S = 0.25
GIL_SWITCH_S = 5e-5
VENUE_POLL_S = 2.0


class VenueParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Where a venue's endpoints are (default: the real venue's)."""

    rest_url: str | None = None
    """REST base, e.g. ``http://127.0.0.1:18765`` for the simulator."""
    ws_api_url: str | None = None
    """Binance: the WebSocket API (``.../binance/ws-api/v3`` on the simulator)."""
    user_ws_url: str | None = None
    """Binance USD-M: the private user-data websocket base (``.../binance-usdm/private/ws``)."""


class PaperParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The in-process paper venue (``mode = "paper"``)."""

    latency_ms: float = 1.0
    """Time from place to execution against the decision-time book."""
    taker_fee: float = 0.001
    maker_fee: float = 0.0
    fill_ratio: float = 1.0
    """Fraction of each IOC / market order's quantity that can fill (partial fills below 1)."""


class ExecutorParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``[stages.NAME.params]`` of an executor."""

    mode: Literal["paper", "live"] = "paper"
    """``paper``: fills simulated in-process, no network; ``live``: the venue clients."""
    credentials: Literal["env", "file", "simulator"] = "env"
    """``env``: API keys from the environment (``LOWLAT_<VENUE>_API_KEY`` ...); ``file``: the same names as
    ``NAME=value`` lines in ``credentials_file``; ``simulator``: the local simulator's public test credentials,
    refused unless every venue URL is on loopback."""
    credentials_file: str = ""
    """``credentials = "file"``: the file's path (``~`` expanded); it must be yours and mode 0600, else refused."""
    venues: dict[str, VenueParams] = {}
    """Per venue name (``kucoin``, ``binance``, ``binance-usdm``): endpoints."""
    order_type: Literal["ioc", "market", "post_only"] = "ioc"
    slippage_bps: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    """IOC price cap: decision mid +/- this (buy above, sell below)."""
    repair_attempts: int = 2
    """Re-sends of a leg's missing quantity after partial fills or rejects before the pair is flattened."""
    rest_ms: int = 2000
    """``post_only``: how long an order may rest unfilled before it is canceled (the hedge repair then re-posts
    the missing quantity at the new best price, up to ``repair_attempts``, then flattens)."""
    order_timeout_ms: int = 3000
    """An order with neither ack nor reject after this long is looked up at the venue."""
    journal_sync: Literal["after_send", "before_send"] = "after_send"
    """When the order lines are fdatasync'ed: ``after_send`` (default) writes them to the journal (the page
    cache: a killed executor loses nothing) before the orders leave and syncs right after, off the frame -> sent
    path; ``before_send`` syncs first, so an OS crash or power loss cannot lose a sent order's line either, at
    the disk's sync latency per order (this host: fdatasync p50 ~80 µs, p99 0.3-1 ms)."""
    max_signal_age_ms: int = 2000
    """An entry signal older than this (decision to now) is not traded (``stale_signal``); exits always are."""
    paper: PaperParams = msgspec.field(default_factory=PaperParams)
    risk: RiskParams = msgspec.field(default_factory=RiskParams)


@dataclass
class PairState:
    """One pair's target and position per leg (base units), from its own orders' fills."""

    instruments: tuple[int, int] = (0, 0)
    target: list[Decimal] = field(default_factory=lambda: [ZERO, ZERO])
    position: list[Decimal] = field(default_factory=lambda: [ZERO, ZERO])
    signal_seq: int = 0
    t_origin_ns: int = 0
    t_decision_ns: int = 0
    mids: list[float] = field(default_factory=lambda: [0.0, 0.0])
    attempts: int = 0
    flattened: bool = False
    """A flatten was sent for the current signal: if the legs are still off after it and its repairs, halt."""
    live: set[str] = field(default_factory=set)
    """Client ids of its orders not yet terminal."""
    legs_sent: list[int] = field(default_factory=lambda: [0, 0])
    """Orders sent per leg for the current signal (client id suffix)."""
    rate_limited: bool = False
    """Its last orders were refused for rate limits (ours or the venue's)."""
    hold_until_ns: int = 0
    """No repair before this (monotonic ns): set when the venue or our limiter refused for rate limits."""
    pending: np.void | None = None
    """The latest signal that arrived while orders were working: traded once they are done."""
    pending_seq: int = -1
    """Its ``seq`` (after a restart, before it is read back from the signal ring)."""


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def credentials(venue: str, p: ExecutorParams) -> Credentials:
    """The venue's credentials as the params say (a one-line ValueError naming what is missing)."""
    if p.credentials == "simulator":
        vp = p.venues.get(venue, VenueParams())
        urls = [u for u in (vp.rest_url, vp.ws_api_url, vp.user_ws_url) if u]
        if not urls or not all(_loopback(u) for u in urls):
            raise ValueError(f"credentials = \"simulator\" needs every {venue} URL on loopback (the local simulator)")
        return SIMULATOR
    pre = ENV_PREFIX[venue]
    names = (f"{pre}_API_KEY", f"{pre}_API_SECRET", f"{pre}_API_PASSPHRASE" if venue == "kucoin" else None)
    if p.credentials == "file":
        if not p.credentials_file:
            raise ValueError('credentials = "file" needs credentials_file = PATH')
        return Credentials.from_file(os.path.expanduser(p.credentials_file), *names)
    return Credentials.from_env(*names)


class Executor(Stage):
    """Signals -> orders -> fills -> positions, with risk, rate limits, a journal and hedge repair."""

    Params = ExecutorParams
    input_types = None
    output_types = ("order",)

    @classmethod
    def check_spec(cls, cfg: PipelineConfig, spec: StageSpec) -> str | None:
        if not spec.inputs or cfg.rings[spec.inputs[0]].type != "signal":
            return "inputs: the first input must be a signal ring"
        for r in spec.inputs[1:]:
            if cfg.rings[r].type != "book":
                return f"inputs: {r} is a {cfg.rings[r].type} ring; after the signal ring only book rings"
        p = msgspec.convert(spec.params, ExecutorParams, strict=True)
        if p.mode == "live":
            for name in {cfg.instruments[i].venue for i in range(len(cfg.instruments))}:
                if name not in VENUES:
                    return f"instruments: venue {name!r} cannot be traded live (one of {', '.join(VENUES)})"
                try:
                    credentials(name, p)
                except ValueError as e:
                    return f"params.credentials: {e}"
        return None

    def __init__(self, ctx: StageContext, params: ExecutorParams) -> None:
        super().__init__(ctx, params)
        # the clients' reader threads and the venue poller share the GIL with the order path: a thread that wants
        # it gets it after at most this long (Python's default, 5 ms, would sit in the middle of frame -> sent)
        sys.setswitchinterval(GIL_SWITCH_S)
        self.p = params
        self.sig_ring = ctx.inputs[0]
        self.book_rings = ctx.inputs[1:]
        self.out = ctx.outputs[0]
        self.sig_buf = np.zeros(BATCH, dtype=self.sig_ring.dtype)
        self.book_buf = [np.zeros(BATCH, dtype=r.dtype) for r in self.book_rings]
        self.rec = np.zeros(1, dtype=ORDER)
        n = len(ctx.config.instruments)
        self.symbols = [ins.symbol for ins in ctx.config.instruments]
        self.venue_of = [ins.venue for ins in ctx.config.instruments]
        self.book_ns = np.zeros(n, dtype=np.int64)
        """Monotonic ns of each instrument's last book record (its t_origin_ns)."""
        self.lateness = Lateness(self.venue_of)
        self.wall_minus_mono_ns = time.time_ns() - time.perf_counter_ns()
        """Our wall clock minus the monotonic one: a record's ``t_origin_ns`` as wall time (refreshed by the
        timers, so a stepped host clock is followed)."""
        self.bid = np.zeros(n)
        self.ask = np.zeros(n)
        self.clients: dict[str, v.VenueClient] = {}
        self.papers: list = []
        """The paper venues among the clients (mode paper): fed the books and polled each step."""
        self.rules: dict[int, Rules] = {}
        self.orders: dict[str, Order] = {}
        """The orders not yet settled (and, after a restart, those of the journal)."""
        self.settling: deque[tuple[int, str]] = deque()
        """(settled at, client id) of the settled orders still in memory, oldest first."""
        self.settled: OrderedDict[str, None] = OrderedDict()
        """The client ids of the latest ``SETTLED_KEPT`` orders that left memory: their late events are expected."""
        self.pairs: dict[int, PairState] = {}
        self.ledger = Ledger()
        self.risk = Risk(params.risk)
        self.journal: Journal | None = None
        self.next_no = 1
        self.last_signal = -1
        self.tag = ""
        self.baseline: dict[str, dict[str, str]] = {}
        """Per venue: the balances (spot) at the executor's first start; spot positions are measured from it."""
        self.venue_view: dict[str, dict[str, Decimal]] = {}
        """Per venue: {symbol: position} as the venue last reported it."""
        self.counts = {"sent": 0, "acked": 0, "filled": 0, "rejected": 0, "canceled": 0, "expired": 0,
                       "local_rejected": 0, "unknown": 0, "repairs": 0, "flattens": 0, "stale_events": 0}
        self.by_reason: dict[str, int] = {}
        self.reasons: list[str] = [""]
        """Reject and block reasons in the order the journal first names them: ``ORDER.reason`` indexes this
        (0: none); rebuilt from the journal on restart, so an index means the same in the whole run; in the
        status JSON as ``reason_codes``."""
        self.streams: dict[str, str] = {}
        self.last_status = 0.0
        self.status_path = ctx.run_dir / f"{ctx.name}.status.json"
        self.status_file: StatusFile | None = None
        self._killing = False
        self._risk_seen = ("ok", "")
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()

    # -- start: journal, venues, reconciliation ----------------------------------------------------------------------

    def rebuild(self) -> list[int]:
        self.tag = np.base_repr(self.sig_ring.epoch % 36**5, 36).lower().rjust(5, "0")
        self.journal = Journal(self.ctx.run_dir / f"{self.ctx.name}.journal")
        if self.journal.torn:
            self.ctx.error("journal", f"dropped a torn last line ({self.journal.torn} bytes)")
        self._replay_journal()
        self._log({"t": "boot", "pid": os.getpid()}, sync=True)
        self._connect()
        self._reconcile()
        self._poller = threading.Thread(target=self._poll_venues, name="venue-poll", daemon=True)
        self._poller.start()
        self._write_status(force=True)
        return [max(self.sig_ring.consumer_pos, self.last_signal + 1)] + [r.consumer_pos for r in self.book_rings]

    def _replay_journal(self) -> None:
        assert self.journal is not None
        for e in self.journal:
            t = e["t"]
            self._tally(e)
            if t == "start":
                if e.get("tag") != self.tag:  # another pipeline run's journal: keep it, start over
                    self.journal.close()
                    path = self.journal.path
                    path.rename(path.with_name(f"{path.name}.{e.get('tag', 'old')}"))
                    self.journal = Journal(path)
                    self.orders.clear()
                    self.pairs.clear()
                    self.ledger = Ledger()
                    self.last_signal, self.next_no = -1, 1
                    self.counts = dict.fromkeys(self.counts, 0)
                    self.by_reason.clear()
                    del self.reasons[1:]
                    return
                self.baseline = e["baseline"]
            elif t == "intent":
                ps = self._pair(e["pair"], tuple(e["ins"]))
                ps.pending_seq = -1
                ps.target = [Decimal(x) for x in e["target"]]
                ps.signal_seq, ps.attempts, ps.legs_sent = e["sig"], 0, [0, 0]
                ps.t_origin_ns, ps.t_decision_ns, ps.mids = e["t_origin"], e["t_decision"], e["mids"]
                self.last_signal = max(self.last_signal, e["sig"])
            elif t == "attempt":
                self.pairs[e["pair"]].attempts = e["n"]
                if e.get("flatten"):
                    self.pairs[e["pair"]].target = [ZERO, ZERO]
            elif t == "order":
                o = Order.from_journal(e)
                self.orders[o.client_id] = o
                self.next_no = max(self.next_no, o.no + 1)
                ps = self.pairs.get(o.pair)
                if ps is not None:
                    ps.live.add(o.client_id)
                    if o.signal_seq == ps.signal_seq:
                        ps.legs_sent[o.leg] += 1
            elif t == "skip":
                self.last_signal = max(self.last_signal, e["sig"])
            elif t == "risk":
                self._risk_seen = (e["state"], e["reason"])
                if e["state"] == "killed":
                    self.risk.kill(e["reason"])
                elif e["state"] == "halted":
                    self.risk.halt(e["reason"])
            elif t == "defer":
                self.last_signal = max(self.last_signal, e["sig"])
                self.pairs[e["pair"]].pending_seq = e["sig"]
            else:
                o = self.orders.get(e.get("cid", ""))
                if o is None:
                    continue
                if t == "ack":
                    o.on_ack(e["vid"], 0)
                elif t == "fill":
                    self._apply_fill(o, v.Fill(o.client_id, o.venue_id, e["tid"], Decimal(e["px"]),
                                               Decimal(e["qty"]), Decimal(e["fee"]), e["fee_asset"], e["maker"],
                                               e["ts"], 0), publish=False)
                elif t == "done":
                    o.on_done(e["status"], 0)
                    o.venue_filled = Decimal(e["filled"])
                elif t == "reject":
                    o.on_reject(e["code"], e["reason"])
                if o.terminal and o.pair in self.pairs:
                    self.pairs[o.pair].live.discard(o.client_id)

    def _pair(self, pair: int, instruments: tuple[int, int]) -> PairState:
        ps = self.pairs.get(pair)
        if ps is None:
            ps = self.pairs[pair] = PairState(instruments=instruments)
        return ps

    def _connect(self) -> None:
        """Create and start one client per venue traded, retrying while the venue is unreachable."""
        used = sorted(set(self.venue_of))
        delay = 0.5
        while True:
            try:
                for name in used:
                    if name not in self.clients:
                        client = self._client(name)
                        client.start()
                        self.clients[name] = client
                        if self.p.mode == "paper":
                            self.papers.append(client)
                        idx = [i for i, vn in enumerate(self.venue_of) if vn == name]
                        got = client.rules([self.symbols[i] for i in idx])
                        for i in idx:
                            self.rules[i] = got[self.symbols[i]]  # type: ignore[assignment]
                return
            except (v.VenueError, OSError, KeyError) as e:
                self.ctx.error("venue", f"cannot start: {e}; retrying in {delay:.1f} s")
                end = time.monotonic() + delay
                while time.monotonic() < end and not self.ctx.stopping:
                    self.ctx.beat()
                    time.sleep(0.05)
                if self.ctx.stopping:
                    raise SystemExit(0) from None
                delay = min(delay * 2, 5.0)

    def _client(self, name: str) -> v.VenueClient:
        if self.p.mode == "paper":
            from execution.paper import PaperVenue
            from execution.rules import Rules as R

            rules = {}
            for ins in self.ctx.config.instruments:
                if ins.venue == name:
                    base, quote = _split(ins.symbol)
                    rules[ins.symbol] = R(ins.symbol, name, Decimal(repr(ins.tick)), Decimal(repr(ins.lot)),
                                          ZERO, ZERO, Decimal(repr(ins.lot)), ZERO, ZERO, base, quote)
            pp = self.p.paper
            return PaperVenue(rules, latency_ms=pp.latency_ms, taker_fee=pp.taker_fee, maker_fee=pp.maker_fee,
                              fill_ratio=pp.fill_ratio)
        vp = self.p.venues.get(name, VenueParams())
        creds = credentials(name, self.p)
        if name == "kucoin":
            from execution import kucoin_client as kc

            return kc.KucoinClient(vp.rest_url or kc.KUCOIN_REST, creds)
        from execution import binance_client as bc

        futures = name == "binance-usdm"
        return bc.BinanceClient(vp.rest_url or (bc.USDM_REST if futures else bc.BINANCE_REST),
                                vp.ws_api_url or (bc.USDM_WS_API if futures else bc.BINANCE_WS_API),
                                vp.user_ws_url or (bc.USDM_USER_WS if futures else ""), creds, futures=futures)

    def _reconcile(self) -> None:
        """Ask the venue for every order whose outcome the journal does not hold; record the venue's baseline
        on a first start; compare positions."""
        assert self.journal is not None
        if not self.baseline:
            self.baseline = {name: {a: str(b) for a, b in c.balances().items()} for name, c in self.clients.items()}
            self._log({"t": "start", "tag": self.tag, "baseline": self.baseline}, sync=True)
        for o in list(self.orders.values()):
            if o.terminal:
                continue
            state = self.clients[o.venue].order(o.symbol, o.client_id, with_fills=True)
            if state is None:  # not at the venue (yet): the timer decides once no request can arrive any more
                o.unknown, o.unknown_since_ns = True, o.t_decision_ns
                self._not_at_venue(o, EV_RECONCILED)
                continue
            if state.venue_order_id and o.on_ack(state.venue_order_id, time.perf_counter_ns()):
                self._log({"t": "ack", "cid": o.client_id, "vid": state.venue_order_id})
            for f in state.fills:
                self._on_fill(o, f)
            if state.status in ("filled", "canceled", "expired", "rejected"):
                if state.status == "rejected":
                    self._on_reject(o, v.Reject(o.client_id, "rejected", "rejected at the venue",
                                                time.perf_counter_ns()), EV_RECONCILED)
                else:
                    self._on_done(o, v.Done(o.client_id, state.status, state.filled_qty, time.perf_counter_ns()))
            else:
                self._publish(o, EV_RECONCILED, time.perf_counter_ns())
        self.journal.sync()
        self._refresh_venue_view()
        for pair, ps in list(self.pairs.items()):
            if ps.pending_seq >= 0:  # a deferred signal: read it back from the signal ring's history
                recs = self.sig_ring.read(ps.pending_seq, 1)
                ps.pending = recs[0].copy() if len(recs) else None
            self._maybe_repair(pair)
            self._after_orders(ps)

    # -- the loop ----------------------------------------------------------------------------------------------------

    def step(self) -> int:
        # paper: the books first (a signal's simulated fills are judged on the books before it); live: the
        # signal first, as the books serve only the stale-data guard, which drains them itself when in doubt
        n = self._drain_books() if self.papers else 0
        k = self.sig_ring.peek_batch(self.sig_buf)
        for rec in self.sig_buf[:k]:
            self._signal(rec)
        if k:
            self.sig_ring.release(k)
            self.ctx.row["records_in"] += k
            n += k
        if not self.papers:
            n += self._drain_books()
        for paper in self.papers:
            paper.poll(time.perf_counter_ns())
        for name, client in self.clients.items():
            q = client.events
            while not q.empty():
                self._event(q.get_nowait(), name)
                n += 1
        now = time.monotonic()
        if now - self.last_status >= STATUS_PERIOD_S:
            self._timers()
            self._write_status()
        return n

    def _drain_books(self) -> int:
        n = 0
        for ring, buf in zip(self.book_rings, self.book_buf, strict=True):
            k = ring.peek_batch(buf)
            if k:
                self._books(buf[:k])
                ring.release(k)
                n += k
        return n

    def waking_inputs(self) -> list[int]:
        """The signals; the books too in paper mode (each one moves the simulated fills). Live, only the latest
        book per instrument matters (the stale-data guard, repair prices): they are read when a signal or a venue
        event wakes the loop, so a book update never interrupts the chain that makes the next decision."""
        return [0, *range(1, 1 + len(self.book_rings))] if self.papers else [0]

    def _books(self, recs: np.ndarray) -> None:
        if not self.papers:  # the newest complete book per instrument, from the end
            seen: set[int] = set()
            for r in recs[::-1]:
                i = int(r["instrument"])
                if i in seen or r["n_bids"] == 0 or r["n_asks"] == 0:
                    continue
                seen.add(i)
                self.book_ns[i] = int(r["t_origin_ns"])
                self._late(i, r)
                self.bid[i], self.ask[i] = float(r["bid_px"][0]), float(r["ask_px"][0])
                if len(seen) == len(self.symbols):
                    break
            return
        for r in recs:
            i = int(r["instrument"])
            nb, na = int(r["n_bids"]), int(r["n_asks"])
            if nb == 0 or na == 0:
                continue
            self.book_ns[i] = int(r["t_origin_ns"])
            self._late(i, r)
            self.bid[i], self.ask[i] = float(r["bid_px"][0]), float(r["ask_px"][0])
            if self.papers:
                self.clients[self.venue_of[i]].on_book(  # type: ignore[attr-defined]
                    self.symbols[i], r["bid_px"], r["bid_qty"], r["ask_px"], r["ask_qty"], nb, na,
                    time.perf_counter_ns())

    def _late(self, i: int, r: np.void) -> None:
        """Lateness of instrument ``i``'s book record ``r``. Judged on the venue's streamed updates only: the
        first record after a (re)sync stands on a REST snapshot's time, a local-time one on ours."""
        if not int(r["flags"]) & (FLAG_RESYNC | FLAG_LOCAL_TIME):
            self.lateness.on_book(i, (int(r["t_origin_ns"]) + self.wall_minus_mono_ns) // 1_000_000,
                                  int(r["ts_event_ms"]))

    # -- signals -----------------------------------------------------------------------------------------------------

    def _signal(self, rec: np.void, deferred: bool = False) -> None:
        assert self.journal is not None
        seq, action, pair = int(rec["seq"]), int(rec["action"]), int(rec["pair"])
        if seq <= self.last_signal and not deferred:
            return
        self.last_signal = max(self.last_signal, seq)
        ia, ib = int(rec["instrument"]), int(rec["instrument_b"])
        ps = self._pair(pair, (ia, ib))
        ps.pending_seq = -1
        if ps.live:  # the pair's orders are still working: trade the latest signal once they are done
            ps.pending, ps.pending_seq = rec.copy(), seq
            self._log({"t": "defer", "sig": seq, "pair": pair})
            return
        now = time.perf_counter_ns()
        mids = [(float(rec["bid_a"]) + float(rec["ask_a"])) / 2, (float(rec["bid_b"]) + float(rec["ask_b"])) / 2]
        entry = action in (SIG_ENTER_LONG, SIG_ENTER_SHORT)
        reason = None
        if action not in (SIG_ENTER_LONG, SIG_ENTER_SHORT, SIG_EXIT):
            reason = "bad_signal"
        elif entry and (now - int(rec["t_pub_ns"])) / 1e6 > self.p.max_signal_age_ms:
            reason = "stale_signal"
        if reason is None and entry:
            if not self.papers and min(self.book_ns[ia], self.book_ns[ib]) < now - self.p.risk.stale_ms * 1_000_000:
                self._drain_books()  # books read lazily (see waking_inputs): newer ones may be waiting
            legs = [(self.symbols[i], mids[k] * float(rec["qty_a" if k == 0 else "qty_b"]), int(self.book_ns[i]),
                     self.lateness.late_ms[i]) for k, i in enumerate((ia, ib))]
            if any(self.streams.get(self.venue_of[i], "up") != "up" for i in (ia, ib)):
                reason = "user_stream_down"  # that venue's fills cannot reach us: our positions may be wrong
            open_pairs = sum(1 for k, q in self.pairs.items() if k != pair and any(x != 0 for x in q.position))
            reason = reason or self.risk.check_entry(pair, legs, open_pairs, now)
        elif reason is None:
            reason = self.risk.check_reduce(now)
        if reason is None:
            if entry:
                qa, qb = Decimal(repr(float(rec["qty_a"]))), Decimal(repr(float(rec["qty_b"])))
                targets = [ps.position[0] + int(rec["side_a"]) * qa, ps.position[1] + int(rec["side_b"]) * qb]
                try:  # the targets on each leg's step (a quantity the venue takes), refused whole or not at all
                    targets = [self._on_grid(i, t - pos, m) + pos
                               for i, t, pos, m in zip((ia, ib), targets, ps.position, mids, strict=True)]
                except LocalReject as e:
                    reason = e.reason
            else:
                targets = [ZERO, ZERO]
        if reason is not None:
            self._log({"t": "skip", "sig": seq, "reason": reason})
            self.ctx.error("blocked", f"signal {seq} ({'entry' if entry else 'exit'} pair {pair}) not traded: "
                           f"{reason}")
            return
        ps.target, ps.signal_seq, ps.attempts, ps.legs_sent, ps.flattened = targets, seq, 0, [0, 0], False
        ps.t_origin_ns, ps.t_decision_ns, ps.mids = int(rec["t_origin_ns"]), int(rec["t_pub_ns"]), mids
        measure = bool(int(rec["flags"]) & SIG_FLAG_MEASURE)
        intent = {"t": "intent", "sig": seq, "pair": pair, "ins": [ia, ib], "action": action,
                  "target": [str(x) for x in targets], "t_origin": ps.t_origin_ns, "t_decision": ps.t_decision_ns,
                  "mids": mids}
        if measure:
            intent["measure"] = True
        self._trade(pair, PURPOSE_MEASURE if measure else PURPOSE_ENTRY if entry else PURPOSE_EXIT, intent)

    def _on_grid(self, i: int, delta: Decimal, mid: float) -> Decimal:
        """``delta`` floored to the instrument's step (sign kept); LocalReject when it is no valid order at
        ``mid``."""
        q, _ = quantize(self.rules[i], 1 if delta > 0 else -1, abs(delta), None, ref_price=Decimal(repr(mid)))
        return Decimal(q) * (1 if delta > 0 else -1)

    def _trade(self, pair: int, purpose: int, intent: dict | None = None) -> None:
        """Send the orders that bring both legs of ``pair`` to their targets, both at once (``intent``: the
        signal's journal line, written with the orders' lines in one system call)."""
        assert self.journal is not None
        if not self.papers and (self.p.order_type == "post_only" or purpose in (PURPOSE_REPAIR, PURPOSE_FLATTEN)):
            self._drain_books()  # these price off the live book, read lazily (see waking_inputs)
        ps = self.pairs[pair]
        # a flatten must get out: a maker order that may never fill is no way to close risk
        kind = "ioc" if purpose == PURPOSE_FLATTEN and self.p.order_type == "post_only" else self.p.order_type
        orders: list[tuple[Order, v.OrderRequest]] = []
        lines = [intent] if intent is not None else []
        for leg, i in enumerate(ps.instruments):
            delta = ps.target[leg] - ps.position[leg]
            if delta == 0:
                continue
            side = 1 if delta > 0 else -1
            mid = self._mid(i, ps.mids[leg], purpose)
            try:
                qty, price = self._price(i, side, abs(delta), mid, kind)
            except LocalReject as e:
                self.journal.write_many(lines)  # the intent before what became of it
                lines = []
                if purpose in (PURPOSE_REPAIR, PURPOSE_FLATTEN):  # dust below the venue's minimum: drift stays
                    self._log({"t": "dust", "pair": pair, "leg": leg, "reason": e.reason})
                    continue
                self._log({"t": "local_reject", "pair": pair, "leg": leg, "reason": e.reason})
                self.ctx.error("rules", f"pair {pair} leg {leg}: {e}")
                continue
            ps.legs_sent[leg] += 1
            cid = f"L{self.tag}-{ps.signal_seq}-{'ab'[leg]}{ps.legs_sent[leg]}"
            o = Order(self.next_no, cid, self.symbols[i], self.venue_of[i], i, side, Decimal(qty),
                      None if price is None else Decimal(price), kind, purpose, pair, leg,
                      ps.signal_seq, ps.t_origin_ns, ps.t_decision_ns, mid)
            self.next_no += 1
            orders.append((o, v.OrderRequest(cid, o.symbol, side, qty, price, kind)))
        if not orders:
            self.journal.write_many(lines)
            return
        order_lines = [o.journal() for o, _ in orders]
        self.journal.write_many(lines + order_lines)
        for (o, _), line in zip(orders, order_lines, strict=True):
            self._tally(line)
            self.orders[o.client_id] = o
            ps.live.add(o.client_id)
        if self.p.journal_sync == "before_send":
            self.journal.sync()  # every order on disk before any leaves
        by_venue: dict[str, list[tuple[Order, v.OrderRequest]]] = {}
        for o, req in orders:
            by_venue.setdefault(o.venue, []).append((o, req))
        for venue, legs in by_venue.items():  # both legs written before either is acked, back to back
            for (o, _), t in zip(legs, self.clients[venue].place_many([req for _, req in legs]), strict=True):
                o.t_sent_ns = t
        for _ in orders:
            self.risk.on_order_sent(time.perf_counter_ns())
        self.journal.sync()  # after_send: in the page cache before they left (a killed process loses nothing)
        for o, _ in orders:
            if o.t_sent_ns:
                self._publish(o, EV_SENT, o.t_sent_ns)

    def _mid(self, i: int, decision_mid: float, purpose: int) -> float:
        if purpose in (PURPOSE_ENTRY, PURPOSE_EXIT, PURPOSE_MEASURE) or self.bid[i] <= 0:
            return decision_mid
        return float(self.bid[i] + self.ask[i]) / 2

    def _price(self, i: int, side: int, qty: Decimal, mid: float, kind: str) -> tuple[str, str | None]:
        r = self.rules[i]
        if not (mid > 0 and math.isfinite(mid)):
            raise LocalReject("bad_price", f"{self.symbols[i]}: no valid mid ({mid})")
        if kind == "market":
            q, _ = quantize(r, side, qty, None, ref_price=Decimal(repr(mid)))
            return q, None
        if kind == "post_only":
            px = self.bid[i] if side > 0 else self.ask[i]
            px = px if px > 0 else mid
        else:
            px = mid * (1 + side * self.p.slippage_bps / 1e4)
        q, p = quantize(r, side, qty, Decimal(repr(float(px))))
        return q, p

    # -- venue events ------------------------------------------------------------------------------------------------

    def _event(self, ev: v.Event, venue: str = "") -> None:
        if isinstance(ev, v.StreamState):
            self.streams[venue] = "up" if ev.up else f"down: {ev.reason}"
            if not ev.up:
                self.ctx.error("user_stream", f"{venue}: {ev.reason}")
            return
        o = self.orders.get(ev.client_id)
        if o is None:
            if ev.client_id not in self.settled:  # a venue's "done" after the last fill settled the order is not
                self.counts["stale_events"] += 1
            return
        if isinstance(ev, v.Ack):
            if o.on_ack(ev.venue_order_id, ev.t_ns):
                self.risk.on_accept()
                self._log({"t": "ack", "cid": o.client_id, "vid": ev.venue_order_id})
                self._publish(o, EV_ACK, ev.t_ns)
        elif isinstance(ev, v.Fill):
            self._on_fill(o, ev)
        elif isinstance(ev, v.Done):
            self._on_done(o, ev)
        elif isinstance(ev, v.Reject):
            if ev.duplicate:  # the venue holds an order with this id: find out what it did
                self._lookup(o)
            else:
                self._on_reject(o, ev, EV_REJECT)
        elif isinstance(ev, v.Unknown):
            o.unknown, o.unknown_since_ns = True, ev.t_ns
            self._log({"t": "unknown", "cid": o.client_id, "reason": ev.reason})
            self.ctx.error("unknown", f"{o.client_id}: {ev.reason}; asking the venue")
            self._publish(o, EV_UNKNOWN, ev.t_ns)
            self._lookup(o)

    def _apply_fill(self, o: Order, f: v.Fill, publish: bool = True) -> bool:
        if not o.on_fill(f.trade_id, f.qty, f.t_ns):
            return False
        base, quote = _split_rules(self.rules.get(o.instrument), o.symbol)
        futures = self.venue_of[o.instrument] == "binance-usdm"
        self.ledger.apply(f, o.side, base, quote, futures, symbol=o.symbol)
        net = o.side * f.qty - (f.fee if f.fee_asset.upper() == base.upper() and not futures else ZERO)
        ps = self.pairs.get(o.pair)
        if ps is not None:
            ps.position[o.leg] += net
        if publish:
            self._publish(o, EV_FILL, f.t_ns, f)
        return True

    def _on_fill(self, o: Order, f: v.Fill) -> bool:
        if not o.acked and f.trade_id not in o.trade_ids:  # a fill before the ack: the venue has accepted it
            self._event(v.Ack(o.client_id, f.venue_order_id, f.t_ns))
        if not self._apply_fill(o, f):
            return False
        self._log({"t": "fill", "cid": o.client_id, "tid": f.trade_id, "px": str(f.price), "qty": str(f.qty),
                   "fee": str(f.fee), "fee_asset": f.fee_asset, "maker": f.maker, "ts": f.ts_ms})
        self.risk.on_pnl(float(self.ledger.net_pnl), f.ts_ms // 86_400_000)
        self._risk_logged()
        if o.terminal:
            self._settle(o)
        if self.risk.state == "killed":
            self._kill()
        return True

    def _on_done(self, o: Order, ev: v.Done) -> None:
        o.venue_filled = ev.filled_qty
        if o.on_done(ev.status, ev.t_ns):
            self._publish(o, EV_DONE, ev.t_ns)
            if o.filled < ev.filled_qty:  # fills still on their way (or lost): take them from the venue
                self._lookup(o)
        self._settle(o)

    def _on_reject(self, o: Order, ev: v.Reject, event: int) -> None:
        if not o.on_reject(ev.code, ev.reason):
            return
        if ev.code not in NOT_RISK_REJECTS:
            self.risk.on_reject(ev.code)
        if ev.code in RETRY_LATER and o.pair in self.pairs:  # let the limit pass / the clock re-sync first
            ps = self.pairs[o.pair]
            ps.hold_until_ns, ps.rate_limited = time.perf_counter_ns() + RATE_HOLD_NS, True
        self._log({"t": "reject", "cid": o.client_id, "code": ev.code, "reason": ev.reason})
        self._risk_logged()
        self.ctx.error("reject", f"{o.client_id} {o.symbol}: {ev.code} {ev.reason}")
        self._publish(o, event, ev.t_ns)
        self._settle(o)

    def _lookup(self, o: Order) -> None:
        """Ask the venue what became of an order (after Unknown, a duplicate id or a missing fill)."""
        try:
            state = self.clients[o.venue].order(o.symbol, o.client_id, with_fills=True)
        except (v.VenueError, OSError) as e:
            self.ctx.error("lookup", f"{o.client_id}: {e}; the timer asks again")
            return
        if state is None:
            if o.status == "pending_new":
                self._not_at_venue(o, EV_REJECT)
            return
        if state.venue_order_id and o.status == "pending_new":
            self._event(v.Ack(o.client_id, state.venue_order_id, time.perf_counter_ns()))
        for f in state.fills:
            self._on_fill(o, f)
        if state.status in ("filled", "canceled", "expired"):
            self._on_done(o, v.Done(o.client_id, state.status, state.filled_qty, time.perf_counter_ns()))
        elif state.status == "rejected":
            self._on_reject(o, v.Reject(o.client_id, "rejected", "rejected at the venue", time.perf_counter_ns()),
                            EV_REJECT)
        else:
            o.unknown = False

    def _not_at_venue(self, o: Order, event: int) -> None:
        """The venue does not know ``o``: rejected once its request can no longer arrive, else asked again."""
        if not o.unknown:
            return  # the client still owns the request (queued or in flight): its response will come
        waited = time.perf_counter_ns() - o.unknown_since_ns
        if waited < 0 or waited > NOT_AT_VENUE_NS:
            self._on_reject(o, v.Reject(o.client_id, "not_at_venue", "the venue has no such order",
                                        time.perf_counter_ns()), event)

    def _settle(self, o: Order) -> None:
        """An order became terminal: count it; when its pair has nothing working, repair the hedge."""
        ps = self.pairs.get(o.pair)
        if not o.terminal or ps is None or o.client_id not in ps.live:
            return
        if o.venue_filled is not None and o.filled < o.venue_filled:
            return  # the venue reports more filled than we hold: wait for those fills (the timer asks for them)
        ps.live.discard(o.client_id)
        if o.status != "rejected":
            self._log({"t": "done", "cid": o.client_id, "status": o.status, "filled": str(o.filled)})
        o.venue_filled = o.filled
        self.settling.append((time.perf_counter_ns(), o.client_id))  # leaves memory after SETTLED_GRACE_NS
        if not ps.live:
            self._maybe_repair(o.pair)
            self._after_orders(ps)
        if self.risk.state == "killed" and not any(q.live or any(x != 0 for x in q.position)
                                                   for q in self.pairs.values()):
            self.risk.on_flattened()

    def _after_orders(self, ps: PairState) -> None:
        """Nothing working on the pair any more: trade the signal that waited for that."""
        if not ps.live and ps.pending is not None:
            rec, ps.pending = ps.pending, None
            self._signal(rec, deferred=True)

    def _maybe_repair(self, pair: int) -> None:
        """Both legs at target (within a step): done. Else re-send the missing quantity, then flatten."""
        assert self.journal is not None
        ps = self.pairs[pair]
        if ps.live or time.perf_counter_ns() < ps.hold_until_ns:
            return
        if self.risk.state == "killed" and any(x != 0 for x in ps.target):  # the kill switch: flatten
            ps.target, ps.attempts, ps.flattened = [ZERO, ZERO], 0, True
            self._log({"t": "attempt", "pair": pair, "n": 0, "flatten": True})
            self._trade(pair, PURPOSE_FLATTEN)
            return
        off = []
        for leg, i in enumerate(ps.instruments):
            r = self.rules.get(i)
            if r is not None and abs(ps.target[leg] - ps.position[leg]) >= r.step:
                off.append(leg)
        if not off:
            return
        if ps.rate_limited:  # refused for rate limits or the clock, nothing executed: retry, not an attempt
            ps.rate_limited = False
            if (time.perf_counter_ns() - ps.t_decision_ns) / 1e6 <= self.p.max_signal_age_ms:
                self._log({"t": "attempt", "pair": pair, "n": ps.attempts})
                self._trade(pair, PURPOSE_REPAIR)
                return
        if ps.attempts < self.p.repair_attempts:
            ps.attempts += 1
            self._log({"t": "attempt", "pair": pair, "n": ps.attempts})
            self._trade(pair, PURPOSE_REPAIR)
        elif any(x != 0 for x in ps.target) or not ps.flattened:  # (an exit's repairs failed: flatten too)
            ps.target, ps.attempts, ps.flattened = [ZERO, ZERO], 0, True
            self._log({"t": "attempt", "pair": pair, "n": 0, "flatten": True})
            self.ctx.error("hedge", f"pair {pair}: legs still off target after {self.p.repair_attempts} repairs; "
                           "flattening")
            self._trade(pair, PURPOSE_FLATTEN)
        else:
            self.ctx.error("hedge", f"pair {pair}: could not flatten ({[str(x) for x in ps.position]}); halted")
            self.risk.halt("unhedged")
            self._risk_logged()

    def _kill(self) -> None:
        """Kill switch: flatten every pair with nothing working now (the others when their orders are done);
        the risk state blocks new entries."""
        if not self._killing:
            self._killing = True
            self.ctx.error("risk", f"kill switch: {self.risk.reason}; flattening every pair")
            for pair in list(self.pairs):
                self._maybe_repair(pair)

    # -- timers, venue view, status ----------------------------------------------------------------------------------

    def _forget_settled(self, now: int) -> None:
        """Settled orders past their grace leave memory (and this scan): a pipeline that trades for days keeps
        only the orders of the last seconds. One that is working again (a late event made it look the venue up)
        waits for the next settlement."""
        while self.settling and now - self.settling[0][0] > SETTLED_GRACE_NS:
            _, cid = self.settling.popleft()
            o = self.orders.get(cid)
            if o is None or not o.terminal or o.unknown:  # (a settled id never returns to a pair's live set)
                continue
            if o.venue_filled is not None and o.filled < o.venue_filled:
                continue
            del self.orders[cid]
            self.settled[cid] = None
            if len(self.settled) > SETTLED_KEPT:
                self.settled.popitem(last=False)

    def _timers(self) -> None:
        now = time.perf_counter_ns()
        self.wall_minus_mono_ns = time.time_ns() - now
        self._forget_settled(now)
        limit = self.p.order_timeout_ms * 1_000_000
        rest = self.p.rest_ms * 1_000_000
        for o in list(self.orders.values()):
            if (o.kind == "post_only" and o.status in ("new", "partially_filled") and not o.cancel_sent
                    and now - o.t_ack_ns > rest):
                o.cancel_sent = True  # a resting maker order past its time: cancel, the repair re-prices it
                self.clients[o.venue].cancel(o.symbol, o.client_id)
            missing = o.terminal and o.venue_filled is not None and o.filled < o.venue_filled
            if missing or (not o.terminal and (o.unknown or (o.status == "pending_new" and o.t_sent_ns
                                                             and now - o.t_sent_ns > limit))):
                self._lookup(o)
        for pair, ps in self.pairs.items():
            if ps.hold_until_ns and now >= ps.hold_until_ns and not ps.live:
                ps.hold_until_ns = 0
                self._maybe_repair(pair)
                self._after_orders(ps)
        if self.journal is not None:
            self.journal.sync()

    def _refresh_venue_view(self) -> None:
        view: dict[str, dict[str, Decimal]] = {}
        for name, c in self.clients.items():
            if name == "binance-usdm":
                held = c.positions()
                view[name] = {sym: held.get(sym, ZERO) for i, sym in enumerate(self.symbols)
                              if self.venue_of[i] == name}
                continue
            bal = c.balances()
            base0 = self.baseline.get(name, {})
            pos = {}
            for i, sym in enumerate(self.symbols):
                if self.venue_of[i] == name:
                    b, _ = _split_rules(self.rules.get(i), sym)
                    pos[sym] = bal.get(b, ZERO) - Decimal(base0.get(b, "0"))
            view[name] = pos
        self.venue_view = view

    def _poll_venues(self) -> None:
        while not self._stop.wait(VENUE_POLL_S):
            try:
                self._refresh_venue_view()
            except (v.VenueError, OSError) as e:
                self.ctx.error("venue_poll", str(e))

    def _write_status(self, force: bool = False) -> None:
        self.last_status = time.monotonic()
        now = time.perf_counter_ns()
        snap = self.ledger.snapshot()
        positions = {}
        for i, sym in enumerate(self.symbols):
            mine = snap.get("positions", {}).get(sym, {})
            venue = self.venue_view.get(self.venue_of[i], {}).get(sym)
            positions[sym] = {"executor": mine.get("position", "0"), "venue": None if venue is None else str(venue),
                              "avg_price": mine.get("avg_price", "0")}
        ex = {"mode": self.p.mode,
              "orders": {"sent": self.counts["sent"], "acked": self.counts["acked"], "filled": self.counts["filled"],
                         "rejected": self.counts["rejected"], "canceled": self.counts["canceled"],
                         "expired": self.counts["expired"], "unknown": self.counts["unknown"],
                         "local_rejected": self.counts["local_rejected"], "repairs": self.counts["repairs"],
                         "flattens": self.counts["flattens"], "rejected_by_reason": dict(self.by_reason),
                         "events_for_unknown_orders": self.counts["stale_events"],
                         "in_memory": len(self.orders)},
              "reason_codes": list(self.reasons),
              "positions": positions, "realized_pnl": snap["realized_pnl"], "fees": snap["fees"],
              "risk_state": self.risk.snapshot(),
              "pairs": {str(k): {"target": [str(x) for x in ps.target], "position": [str(x) for x in ps.position],
                                 "working": len(ps.live),
                                 "waiting": bool(ps.hold_until_ns or ps.pending is not None)}
                        for k, ps in self.pairs.items()},
              "user_streams": dict(self.streams), "last_signal": self.last_signal,
              "books": {sym: {"age_ms": (now - int(self.book_ns[i])) // 1_000_000 if self.book_ns[i] else None,
                              "late_ms": self.lateness.late_ms[i]} for i, sym in enumerate(self.symbols)},
              "venue_clock_offset_ms": {name: c.offset_ms for name, c in self.clients.items()
                                        if hasattr(c, "offset_ms")}}
        if self.status_file is None:
            self.status_file = StatusFile(self.status_path)
        if force:
            self.status_file.close({"execution": ex})
            self.status_file = None
        else:
            self.status_file.publish({"execution": ex})
        c = self.ctx
        for k, name in enumerate(("sent", "acked", "filled", "rejected", "local_rejected", "unknown", "repairs")):
            c.set_counter(k, name, self.counts[name])
        c.set_counter(7, "halted", 0 if self.risk.state == "ok" else 1)

    def _risk_logged(self) -> None:
        """Journal a change of the risk state, so a restarted executor stays halted or killed."""
        now = (self.risk.state, self.risk.reason)
        if now != self._risk_seen:
            self._risk_seen = now
            self._log({"t": "risk", "state": now[0], "reason": now[1]}, sync=True)
            if now[0] != "ok":
                self.ctx.error("risk", f"{now[0]}: {now[1]}")

    def _log(self, entry: dict, sync: bool = False) -> None:
        """Journal one line and count it."""
        assert self.journal is not None
        self.journal.write(entry, sync)
        self._tally(entry)

    def _tally(self, e: dict) -> None:
        """The status counters are a function of the journal: the same after a restart."""
        t, c = e["t"], self.counts
        if t == "order":
            c["sent"] += 1
        elif t == "ack":
            c["acked"] += 1
        elif t == "done":
            c[e["status"]] += 1
        elif t == "unknown":
            c["unknown"] += 1
        elif t == "attempt":
            c["flattens" if e.get("flatten") else "repairs"] += 1
        elif t in ("reject", "skip", "local_reject", "dust"):
            reason = e["code"] if t == "reject" else e["reason"] if t != "dust" else f"dust_{e['reason']}"
            self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
            if reason not in self.reasons:
                self.reasons.append(reason)
            if t == "reject":
                c["rejected"] += 1
            elif t != "dust":
                c["local_rejected"] += 1

    def _publish(self, o: Order, event: int, t_ns: int, f: v.Fill | None = None) -> None:
        r = self.rec[0]
        r["src_seq"], r["t_origin_ns"], r["ts_event_ms"] = o.signal_seq, o.t_origin_ns, f.ts_ms if f else 0
        r["instrument"], r["src_ring"], r["flags"] = o.instrument, 0, 0
        r["order_no"], r["signal_seq"], r["t_decision_ns"] = o.no, o.signal_seq, o.t_decision_ns
        r["t_sent_ns"], r["t_ack_ns"], r["t_event_ns"] = o.t_sent_ns, o.t_ack_ns, t_ns
        r["price"], r["qty"] = float(o.price or 0), float(o.qty)
        r["last_px"], r["last_qty"] = (float(f.price), float(f.qty)) if f else (0.0, 0.0)
        r["fee"] = float(f.fee * (f.price if f.fee_asset != _split_rules(self.rules.get(o.instrument), o.symbol)[1]
                                  else 1)) if f else 0.0
        r["cum_qty"] = float(o.filled)
        ps = self.pairs.get(o.pair)
        r["position"] = float(ps.position[o.leg]) if ps else 0.0
        r["target"] = float(ps.target[o.leg]) if ps else 0.0
        r["mid"], r["pair"], r["event"], r["status"] = o.mid, o.pair, event, o.code
        r["reason"] = self.reasons.index(o.reject_code) if o.reject_code in self.reasons else 0
        r["side"], r["leg"], r["purpose"] = o.side, o.leg, o.purpose
        r["t_pub_ns"] = time.perf_counter_ns()
        self.out.push(self.rec, self.ctx.wait)
        self.ctx.row["records_out"] += 1

    def idle_wait_s(self) -> float:
        """Orders in flight (their acks and fills arrive on the clients' threads) or paper venues to poll: look
        every 200 µs; else sleep on the input rings."""
        busy = self.papers or any(ps.live for ps in self.pairs.values())
        return 0.0002 if busy else super().idle_wait_s()

    def flush(self) -> None:
        self._stop.set()
        if self.journal is not None:
            self._write_status(force=True)
            self.journal.close()
        for c in self.clients.values():
            c.close()


def _split(symbol: str) -> tuple[str, str]:
    """``BTC-USDT`` / ``BTCUSDT`` -> (base, quote) for the quote assets in use."""
    if "-" in symbol:
        b, _, q = symbol.partition("-")
        return b, q
    for q in ("USDT", "USDC", "FDUSD", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY"):
        if symbol.endswith(q) and len(symbol) > len(q):
            return symbol[: -len(q)], q
    return symbol, ""


def _split_rules(r: Rules | None, symbol: str) -> tuple[str, str]:
    return (r.base, r.quote) if r is not None and r.base else _split(symbol)

