"""What every websocket feed stage shares: one venue connection, reconnects, REST snapshots, recording, counters.

A feed stage is a source: it owns one websocket connection, hands each received frame to its venue's parser
(``feeds/kucoin_messages.py``, ``feeds/binance_messages.py``), which publishes normalized records through a
``RingEmitter`` into the stage's output rings (one ring per record type: ``bbo``, ``trade``, ``book``).

Around that hot path it keeps the connection healthy: exponential backoff with jitter between attempts, a
reconnect when the stream stalls or the connection reaches its maximum age (the venues cut at 24 h), and book
snapshots fetched on a worker thread so the other symbols keep flowing while one resyncs. Counters go to the
stage's status row; each kind of bad input is logged at most once a minute (``StageContext.error``).
"""

from __future__ import annotations

import concurrent.futures as cf
import random
import threading
import time
import urllib.error
import urllib.request
from typing import Annotated, ClassVar

import msgspec
import websocket

from feeds.emit import RingEmitter, publish_counters
from pipeline.config import PipelineConfig, StageSpec
from pipeline.records import BOOK_LEVELS
from pipeline.stage import Stage, StageContext

COUNTERS_EVERY_S = 0.1
"""How often the counters are copied into the status row."""


class FeedError(RuntimeError):
    """A venue refused or failed a request (one line: what, where, the venue's answer)."""


class FeedParams(msgspec.Struct, forbid_unknown_fields=True):
    """Parameters every feed has."""

    rest_url: str
    """REST base, e.g. ``https://api.kucoin.com`` (or the simulator's ``http://127.0.0.1:PORT``)."""
    tickers: bool = True
    """Subscribe to best bid/ask (KuCoin ticker, Binance bookTicker)."""
    books: bool = False
    """Keep a local order book per symbol (depth diffs + REST snapshot) and publish its top levels."""
    depth: Annotated[int, msgspec.Meta(ge=1, le=BOOK_LEVELS)] = BOOK_LEVELS
    """Levels per side in book records (1 to 10)."""
    trades: bool = False
    """Subscribe to public trades."""
    record: str = ""
    """Record raw frames to ``<record>.<YYYYMMDD>.<n>.rec.gz`` ('' = off; relative to the run directory); written
    by a background thread, rotated by size and by UTC day."""
    reconnect_initial_s: float = 0.25
    """First reconnect delay; doubles per failed attempt, with jitter."""
    reconnect_max_s: float = 30.0
    """Longest reconnect delay."""
    stall_s: float = 30.0
    """Reconnect when no frame arrived for this long."""
    max_age_s: float = 23 * 3600.0
    """Reconnect before the venue's 24 h cut."""
    timeout_s: float = 10.0
    """Timeout of REST requests and of the websocket handshake."""


def http(method: str, url: str, timeout: float, body: bytes | None = None) -> bytes:
    """One REST request; the body of a 2xx answer, else FeedError naming the status and the venue's message."""
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Content-Type": "application/json", "User-Agent": "lowlat"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        text = e.read()[:200].decode(errors="replace").replace("\n", " ")
        retry = e.headers.get("Retry-After") if e.headers else None
        raise FeedError(f"{method} {url}: HTTP {e.code} {text}" + (f" (Retry-After {retry} s)" if retry else "")) \
            from None
    except (urllib.error.URLError, OSError) as e:
        raise FeedError(f"{method} {url}: {getattr(e, 'reason', e)}") from None


class WsFeed(Stage):
    """Base of websocket feed stages. Subclasses set ``venue`` and implement ``connect_url`` (may call REST),
    ``subscribe``, ``snapshot_url``, ``make_parser`` and, for venues with client pings, ``ping``."""

    replayable: ClassVar[bool] = True
    input_types: ClassVar[tuple[str | None, ...] | None] = ()
    output_types: ClassVar[tuple[str | None, ...] | None] = None
    venue: ClassVar[str] = ""
    """Venue name as the config's instrument table spells it."""

    @classmethod
    def check_spec(cls, cfg: PipelineConfig, spec: StageSpec) -> str | None:
        types = [cfg.rings[r].type for r in spec.outputs]
        if not types:
            return "a feed needs at least one output ring (bbo, trade or book)"
        for t in types:
            if t not in ("bbo", "trade", "book") or types.count(t) > 1:
                return f"feed outputs take one ring per record type bbo, trade, book; got {', '.join(types)}"
        if not any(i.venue == cls.venue for i in cfg.instruments):
            return f"no instrument with venue = {cls.venue!r} in [[instruments]]"
        return None

    def __init__(self, ctx: StageContext, params: FeedParams) -> None:
        super().__init__(ctx, params)
        self.p = params
        self.symbols = {ins.symbol: i for i, ins in enumerate(ctx.config.instruments) if ins.venue == self.venue}
        rings = {ctx.config.rings[name].type: ring for name, ring in zip(ctx.spec.outputs, ctx.outputs, strict=True)}
        self.emit = RingEmitter(rings, ctx.wait, lambda: ctx.stopping, ctx.error)
        self.parser = self.make_parser()
        self.ws: websocket.WebSocket | None = None
        self.attempts = 0
        self.next_attempt = 0.0
        self.connected_at = 0.0
        self.last_frame = 0.0
        self.url = ""
        self.recorder = None
        self.pool: cf.ThreadPoolExecutor | None = None
        self.pending: dict[str, cf.Future] = {}
        self.retry_at: dict[str, float] = {}
        self._counters_at = 0.0

    # -- venue specifics -------------------------------------------------------------------------------------------

    def make_parser(self):
        """The venue's parser, publishing through ``self.emit``."""
        raise NotImplementedError

    def connect_url(self) -> str:
        """The websocket URL of a new connection (KuCoin asks REST for a token first)."""
        raise NotImplementedError

    def subscribe(self, ws: websocket.WebSocket) -> None:
        """Subscribe after connecting (and wait for whatever the venue says first)."""

    def snapshot_url(self, symbol: str) -> str:
        """REST URL of the order-book snapshot of ``symbol``."""
        raise NotImplementedError

    def ping(self, ws: websocket.WebSocket, now: float) -> None:
        """Send application-level pings when due (KuCoin); check their answers."""

    def on_control(self, control) -> None:
        """A control frame the parser returned (welcome, pong, ack, error)."""
        if getattr(control, "type", "") == "error":
            self.ctx.error("venue_error", f"{self.venue}: {control.text}")

    # -- life cycle ------------------------------------------------------------------------------------------------

    def rebuild(self) -> list[int]:
        """Continue the ring's src_seq numbering after a restart (the frames in between are gone)."""
        last = 0
        for ring in self.ctx.outputs:
            rec = ring.last_published(1)
            if len(rec):
                last = max(last, int(rec["src_seq"][-1]))
        self.emit.src_seq = last
        if self.p.record:
            from feeds.recording import Recorder

            prefix = self.ctx.run_dir / self.p.record  # relative to the run directory; absolute stays
            prefix.parent.mkdir(parents=True, exist_ok=True)
            self.recorder = Recorder(prefix, self.venue, report=self.ctx.error)
        if self.p.books:
            self.pool = cf.ThreadPoolExecutor(2, thread_name_prefix="snapshot")
        return []

    def step(self) -> int:
        now = time.monotonic()
        if self.ws is None:
            if now < self.next_attempt:
                time.sleep(min(0.05, self.next_attempt - now))
                return 0
            self._connect(now)
            return 0
        if self.pending or (self.p.books and self.parser.need_snapshot):
            self._snapshots()
        if now - self._counters_at >= COUNTERS_EVERY_S:
            self._publish_counters(now)
        try:
            self.ping(self.ws, now)
            opcode, data = self.ws.recv_data()
        except websocket.WebSocketTimeoutException:
            if now - self.last_frame > self.p.stall_s:
                self._drop(f"no frame for {now - self.last_frame:.1f} s (stalled stream)")
            return 0
        except (websocket.WebSocketException, OSError, FeedError) as e:
            self._drop(f"connection lost: {type(e).__name__}: {e}")
            return 0
        t_mono, t_wall = time.perf_counter_ns(), time.time_ns()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self._drop("closed by the venue")
            return 0
        self.last_frame = time.monotonic()
        if self.recorder is not None:
            self.recorder.ws(t_wall, data)
        before = self.emit.counts.records
        control = self.parser.on_frame(data, t_mono, t_wall)
        if control is not None:
            self.on_control(control)
        if self.connected_at and self.last_frame - self.connected_at > self.p.max_age_s:
            self._drop(f"connection is {self.p.max_age_s / 3600:g} h old: renewing before the venue's 24 h cut")
        return self.emit.counts.records - before or 1

    def flush(self) -> None:
        self._publish_counters(time.monotonic())
        if self.ws is not None:
            self.ws.close(timeout=0.2)
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        if self.recorder is not None:
            self.recorder.close()

    # -- connection ------------------------------------------------------------------------------------------------

    def _connect(self, now: float) -> None:
        beating = threading.Event()  # the handshake can take longer than the heartbeat timeout: beat meanwhile
        beater = threading.Thread(target=self._beat_until, args=(beating,), daemon=True)
        beater.start()
        try:
            self._open()
        finally:
            beating.set()
            beater.join()

    def _beat_until(self, done: threading.Event) -> None:
        while not done.wait(0.2):
            self.ctx.beat()

    def _open(self) -> None:
        try:
            self.url = self.connect_url()
            ws = websocket.create_connection(self.url, timeout=self.p.timeout_s, skip_utf8_validation=True,
                                             enable_multithread=False, sockopt=((6, 1, 1),))  # TCP_NODELAY
            if self.recorder is not None:
                self.recorder.connect(time.time_ns(), self.url)
            self.subscribe(ws)
            ws.settimeout(0.05)
        except (FeedError, websocket.WebSocketException, OSError) as e:
            self._backoff(f"connect to {self.venue} failed: {e}")
            return
        self.ws = ws
        self.connected_at = self.last_frame = time.monotonic()
        self.emit.mark_resync(self.symbols.values())
        if self.p.books:
            if self.emit.counts.reconnects:
                self.emit.counts.resyncs += len(self.symbols)  # a new connection: every book starts over
            self.parser.resync_all()
        self.attempts = 0

    def _drop(self, why: str) -> None:
        """Close the connection and schedule a reconnect."""
        if self.ws is not None:
            try:
                self.ws.close(timeout=0.2)
            except (websocket.WebSocketException, OSError):
                pass
        self.ws = None
        self.emit.counts.reconnects += 1
        self._backoff(why)

    def _backoff(self, why: str) -> None:
        delay = min(self.p.reconnect_initial_s * 2 ** self.attempts, self.p.reconnect_max_s)
        delay *= 0.5 + random.random() * 0.5  # jitter: a fleet of feeds does not reconnect in lockstep
        self.attempts += 1
        self.next_attempt = time.monotonic() + delay
        self.ctx.error("reconnect", f"{why}; reconnecting in {delay:.2f} s (attempt {self.attempts})")

    # -- snapshots -------------------------------------------------------------------------------------------------

    def _snapshots(self) -> None:
        """Start snapshot fetches for symbols that need one; hand finished ones to the parser."""
        assert self.pool is not None
        now = time.monotonic()
        for sym in list(self.parser.need_snapshot):
            if sym not in self.pending and now >= self.retry_at.get(sym, 0.0):
                self.pending[sym] = self.pool.submit(http, "GET", self.snapshot_url(sym), self.p.timeout_s)
        for sym, fut in list(self.pending.items()):
            if not fut.done():
                continue
            del self.pending[sym]
            try:
                body = fut.result()
            except FeedError as e:
                self.ctx.error("snapshot", str(e))
                self.retry_at[sym] = now + min(self.p.reconnect_max_s, 1.0 + 4 * random.random())
                continue
            t_mono, t_wall = time.perf_counter_ns(), time.time_ns()
            if self.recorder is not None:
                self.recorder.rest(t_wall, self.snapshot_url(sym), body)
            self.parser.on_snapshot(sym, body, t_mono, t_wall)

    def _publish_counters(self, now: float) -> None:
        self._counters_at = now
        publish_counters(self.ctx, self.emit)

