"""KuCoin spot live client (EXCHANGES.md 1.1-1.2, 1.6-1.9).

Orders go over keep-alive REST to the HF endpoints through a few *lanes*: a lane is one persistent connection
plus one thread that reads its responses. ``place`` signs and writes the request on an idle lane from the
caller's thread (one ``send`` of a few hundred bytes, so the returned write time is exact) and returns without
waking anyone: the lane's thread sleeps in ``select`` on the lane's socket and wakes when the response arrives,
then turns it into ``Ack`` / ``Reject`` / ``Unknown``. Two legs placed back to back take two lanes and are both on
the wire before either response. When no lane is idle the request is queued to the least busy lane, whose
thread writes it next. Idle lanes reopen a connection the server closed and send a cheap keep-alive request now
and then, so no order pays for a connection set-up.

Fills and terminal states come from the private stream (``bullet-private``, ``/spotMarket/tradeOrdersV2``),
which carries no fees: a match or a ``done`` message sends the order to the fills thread, which queries
``/api/v1/hf/fills?orderId=`` and emits one ``Fill`` per trade not yet emitted, then the ``Done``.

Threads: ``kucoin-lane<N>`` (one per lane), ``kucoin-user`` (private stream: pings, reconnects with
``StreamState`` events), ``kucoin-fills`` (fee look-ups, clock re-sync).
"""

from __future__ import annotations

import collections
import queue
import select
import socket
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import websocket

from execution.client_core import CLOCK_RESYNC_S, ZERO, ClientCore, dec, one_line
from execution.http import WS_SOCKOPT, Connection, HttpClient, HttpError, Response
from execution.ratelimit import Limiter, kucoin_limiter
from execution.rules import rules_from_kucoin
from execution.signing import Credentials, kucoin_headers
from execution.venue import Ack, Done, Fill, OrderRequest, OrderState, Reject, Status, VenueError

KUCOIN_REST = "https://api.kucoin.com"
"""The real REST base."""
ORDER_TOPIC = "/spotMarket/tradeOrdersV2"
OK = "200000"
LANES = 3
"""Order lanes (connections + reader threads) by default: two legs and a cancel at once."""
KEEPALIVE_S = 20.0
"""An idle lane sends ``GET /api/v1/timestamp`` after this long so the server keeps the connection."""
FILL_DELAYS_S = (0.0, 0.05, 0.2, 0.5, 1.0)
"""Waits between fills queries when a done order's fills are not all listed yet."""
DUPLICATE_WORDS = ("duplicat", "already exist")
NOT_FOUND_WORDS = ("not exist", "not found")
def _qs(query: dict[str, Any] | None) -> str:
    """The query string exactly as signed and sent (KuCoin signs it un-encoded; our values are URL-safe)."""
    if not query:
        return ""
    return "&".join(f"{k}={v}" for k, v in query.items() if v is not None)


def _envelope(r: Response) -> tuple[str, str, Any]:
    """(code, msg, data) of a KuCoin answer; a non-JSON body gives the HTTP status as the code."""
    try:
        obj = orjson.loads(r.body)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and "code" in obj:
        return str(obj.get("code")), one_line(obj.get("msg", "")), obj.get("data")
    return str(r.status), one_line(r.body[:200].decode(errors="replace")), None


def _retry_after(r: Response) -> float | None:
    ra = r.headers.get("retry-after")
    try:
        if ra is not None:
            return float(ra)
        if r.status == 429 and "gw-ratelimit-reset" in r.headers:
            return int(r.headers["gw-ratelimit-reset"]) / 1000.0
    except ValueError:
        pass
    return None


@dataclass(slots=True)
class _Job:
    kind: str
    """``place`` or ``cancel``."""
    client_id: str
    method: str
    path: str
    query: dict[str, Any] | None
    body: str | None
    sent: bool = False
    t_sent: int = 0
    deadline: float = 0.0
    """``time.monotonic()`` after which the response is given up (Unknown)."""


class _Lane:
    """One keep-alive order connection and the thread that reads its responses. ``job`` is the request in flight
    (at most one: HTTP/1.1 without pipelining), ``backlog`` the requests queued behind it; ``busy`` means someone
    (a caller writing, or the lane's own thread) owns the connection."""

    def __init__(self, idx: int, rest_url: str, timeout_s: float) -> None:
        self.name = f"kucoin-lane{idx}"
        self.conn = Connection(rest_url, timeout_s)
        self.lock = threading.Lock()
        self.busy = False
        self.job: _Job | None = None
        self.backlog: collections.deque[_Job] = collections.deque()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.thread: threading.Thread | None = None

    def claim(self, job: _Job | None = None) -> bool:
        """Take the idle connection, for ``job`` when given (False when it is in use or has queued work)."""
        with self.lock:
            if self.busy or self.backlog:
                return False
            self.busy = True
            self.job = job
            return True

    def release(self) -> None:
        with self.lock:
            self.job = None
            self.busy = False

    def wake(self) -> None:
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass

    def drain(self) -> None:
        try:
            while self.wake_r.recv(64):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.conn.close()
        self.wake_r.close()
        self.wake_w.close()


class KucoinClient(ClientCore):
    """KuCoin spot ``VenueClient`` (``execution.venue``)."""

    venue = "kucoin"

    def __init__(self, rest_url: str, creds: Credentials, *, timeout_s: float = 5.0, max_wait_s: float = 0.05,
                 lanes: int = LANES, limiter: Limiter | None = None) -> None:
        super().__init__(limiter or kucoin_limiter(), max_wait_s)
        self.rest_url = rest_url.rstrip("/")
        self.creds = creds
        self.timeout_s = timeout_s
        self.http = HttpClient(self.rest_url, timeout_s)
        self.lanes = [_Lane(i, self.rest_url, timeout_s) for i in range(max(1, lanes))]
        self._kinds: dict[str, str] = {}
        """client id -> order kind of the orders placed by this client (IOC remainders are ``expired``)."""
        self._fills_q: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._started = False
        self._threads: list[threading.Thread] = []
        self._user_ws: websocket.WebSocket | None = None
        self.ping_interval_s = 18.0
        self.ping_timeout_s = 10.0
        self._last_sync = 0.0

    def __repr__(self) -> str:
        return f"KucoinClient({self.rest_url!r}, {self.creds!r})"

    # ================================================================================================ life cycle

    def start(self) -> None:
        """Sync the clock, open the order lanes and the query connection, subscribe the private order stream;
        raises VenueError (e.g. ``400005`` bad signature, ``400003`` unknown key) when that fails."""
        if self._started:
            return
        try:
            self.sync_clock(self._server_ms)
            self._last_sync = time.monotonic()
            self.http.warm(1)
            for lane in self.lanes:
                lane.conn.connect()
            ws = self._connect_user()
        except HttpError as e:
            self.close()
            raise VenueError(self.venue, "transport", str(e)) from None
        except VenueError:
            self.close()
            raise
        self._started = True
        for lane in self.lanes:
            lane.thread = threading.Thread(target=self._lane_run, args=(lane,), name=lane.name, daemon=True)
        self._threads = [lane.thread for lane in self.lanes if lane.thread is not None]
        self._threads.append(threading.Thread(target=self._user_run, args=(ws,), name="kucoin-user", daemon=True))
        self._threads.append(threading.Thread(target=self._fills_run, name="kucoin-fills", daemon=True))
        for t in self._threads:
            t.start()
        self.stream(True, "private order stream subscribed")

    def close(self) -> None:
        """Stop the threads and close every connection (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        for lane in self.lanes:
            lane.wake()
        self._fills_q.put(None)
        ws = self._user_ws
        if ws is not None:
            try:
                ws.abort()
            except Exception:
                pass
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=2.0)
        for lane in self.lanes:
            lane.close()
        self.http.close()

    # ================================================================================================ REST

    def _server_ms(self) -> int:
        return int(self._call("GET", "/api/v1/timestamp", signed=False, cost=3, pool="public"))

    def _feedback(self, r: Response, pool: str) -> None:
        now = self.wall()
        self.limiter.on_headers(r.headers, now, pool=pool)
        self.limiter.on_status(r.status, r.headers.get("retry-after"), now)

    def _prepare(self, method: str, path: str, query: dict[str, Any] | None, body: str | None,
                 signed: bool = True) -> tuple[str, bytes | None, dict[str, str]]:
        qs = _qs(query)
        endpoint = path + (f"?{qs}" if qs else "")
        text = body if body is not None else ""
        if signed:
            headers = kucoin_headers(self.creds, self.now_ms(), method, endpoint, text)
        else:
            headers = {"Content-Type": "application/json"}
        data = text.encode() if (body is not None or method in ("POST", "PUT")) else None
        return endpoint, data, headers

    def _call(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None, *,
              signed: bool = True, cost: int = 2, pool: str = "spot") -> Any:
        """One synchronous REST call; the envelope's ``data``, else VenueError with the venue's code."""
        self.query_gate({pool: cost})
        text = None if body is None else orjson.dumps(body).decode()
        endpoint, data, headers = self._prepare(method, path, query, text, signed)
        try:
            r = self.http.request(method, endpoint, data, headers)
        except HttpError as e:
            raise VenueError(self.venue, "transport", str(e)) from None
        self._feedback(r, pool)
        code, msg, out = _envelope(r)
        if code == OK and r.status < 300:
            return out
        self.clock_suspect(code)
        raise VenueError(self.venue, code, msg, r.status, _retry_after(r))

    # ================================================================================================ orders

    def place(self, req: OrderRequest) -> int:
        """Sign and write ``POST /api/v1/hf/orders`` on an idle lane; the lane's thread reports the response."""
        return self.place_many([req])[0]

    def place_many(self, reqs: list[OrderRequest]) -> list[int]:
        """``place`` for several orders: all signed first, then written back to back on their lanes, so no
        response (and no reader thread taking the GIL to parse it) lands between two legs of one decision."""
        out = [0] * len(reqs)
        staged: list[tuple[int, _Lane, _Job, bytes]] = []
        for k, req in enumerate(reqs):
            job = self._place_job(req)
            if job is None:
                continue
            lane = self._claim(job)
            if lane is None:  # closed, or every lane busy: the backlog
                out[k] = self._submit(job)
                continue
            try:
                staged.append((k, lane, job, self._build(lane, job)))
            except HttpError as e:
                out[k] = self._failed(lane, job, e)
        for k, lane, job, raw in staged:
            try:
                out[k] = self._send(lane, job, raw)
            except HttpError as e:
                out[k] = self._failed(lane, job, e)
        return out

    def _place_job(self, req: OrderRequest) -> _Job | None:
        """The request for one order, None when refused here (a Reject event follows)."""
        if not self.gate(req.client_id, {"spot": 1}):
            return None
        body: dict[str, Any] = {"clientOid": req.client_id, "side": "buy" if req.side > 0 else "sell",
                                "symbol": req.symbol}
        if req.kind == "market":
            body.update(type="market", size=req.qty)
        else:
            if req.price is None:
                self.put(Reject(req.client_id, "bad_request", f"a {req.kind} order needs a price",
                                time.perf_counter_ns()))
                return None
            body.update(type="limit", price=req.price, size=req.qty)
            if req.kind == "post_only":
                body.update(timeInForce="GTC", postOnly=True)
            else:
                body.update(timeInForce="IOC")
        self._kinds[req.client_id] = req.kind
        if len(self._kinds) > 100_000:
            del self._kinds[next(iter(self._kinds))]
        return _Job("place", req.client_id, "POST", "/api/v1/hf/orders", None, orjson.dumps(body).decode())

    def cancel(self, symbol: str, client_id: str) -> None:
        """``DELETE /api/v1/hf/orders/client-order/{clientOid}``; the outcome arrives on the private stream."""
        if self.limiter.banned_until(self.wall()):
            self.log.warning("kucoin: cancel of %s not sent: rate-limit pause in force", client_id)
            return
        self.limiter.acquire({"spot": 1}, self.wall())
        self._submit(_Job("cancel", client_id, "DELETE", f"/api/v1/hf/orders/client-order/{client_id}",
                          {"symbol": symbol}, None))

    def _claim(self, job: _Job) -> _Lane | None:
        """An idle healthy lane claimed for ``job``; None when closed (nothing claimed) or all are busy."""
        if self._closed.is_set() or not self._started:
            return None
        for lane in self.lanes:
            if lane.conn.healthy and lane.claim(job):  # never a connection set-up on the caller's thread
                return lane
        return None

    def _submit(self, job: _Job) -> int:
        if self._closed.is_set() or not self._started:
            if job.kind == "place":
                self.put(Reject(job.client_id, "not_connected", "client not started or closed: order not sent",
                                time.perf_counter_ns()))
            return 0
        lane = self._claim(job)
        if lane is not None:
            try:
                self._write(lane, job)  # the lane's thread is in select() on the socket: the response wakes it
            except HttpError as e:
                return self._failed(lane, job, e)
            return job.t_sent
        lane = min(self.lanes, key=lambda ln: (len(ln.backlog), ln.busy))
        with lane.lock:
            lane.backlog.append(job)
        lane.wake()
        return time.perf_counter_ns()

    def _failed(self, lane: _Lane, job: _Job, e: HttpError) -> int:
        """A write on a claimed lane failed: free it (its thread reopens the connection) and report."""
        lane.release()
        lane.wake()
        self._write_failed(job, e)
        return time.perf_counter_ns() if e.sent and job.kind == "place" else 0

    def _write(self, lane: _Lane, job: _Job) -> None:
        self._send(lane, job, self._build(lane, job))

    def _build(self, lane: _Lane, job: _Job) -> bytes:
        """The signed request of ``job`` as the bytes ``_send`` writes on ``lane``."""
        endpoint, data, headers = self._prepare(job.method, job.path, job.query, job.body)
        return lane.conn.build_raw(job.method, endpoint, data, headers)

    def _send(self, lane: _Lane, job: _Job, raw: bytes) -> int:
        """Write ``job``'s request on its claimed ``lane``; the monotonic ns of the write."""
        job.deadline = time.monotonic() + self.timeout_s
        job.t_sent = lane.conn.write_raw(raw)
        job.sent = True
        return job.t_sent

    def _write_failed(self, job: _Job, e: HttpError) -> None:
        if job.kind != "place":
            self.log.warning("kucoin: cancel of %s not sent: %s", job.client_id, e)
        elif e.sent:
            self.unknown(job.client_id, f"request may have been sent: {e}")
        else:
            self.put(Reject(job.client_id, "not_sent", f"not sent: {e}", time.perf_counter_ns()))

    def _lane_run(self, lane: _Lane) -> None:
        """Sleep in select() on the lane's socket (and its wake-up socket); read a response when one is due;
        write queued requests; keep the connection open and warm."""
        while not self._closed.is_set():
            popped = None
            with lane.lock:
                if lane.job is None and lane.backlog and not lane.busy:
                    popped = lane.backlog.popleft()
                    lane.busy = True
                    lane.job = popped
            if popped is not None:
                try:
                    if not lane.conn.healthy:
                        lane.conn.connect()
                    self._write(lane, popped)
                except HttpError as e:
                    lane.release()
                    self._write_failed(popped, e)
                    continue
            with lane.lock:
                job = lane.job
            if job is not None and not job.sent:  # a caller is writing it right now (microseconds)
                time.sleep(0.0001)
                continue
            sock = lane.conn.conn.sock if lane.conn.conn is not None else None
            waits: list = [lane.wake_r] + ([sock] if sock is not None else [])
            timeout = 1.0 if job is None else max(0.0, min(1.0, job.deadline - time.monotonic()))
            try:
                ready, _, _ = select.select(waits, [], [], timeout)
            except (OSError, ValueError):  # the socket was closed meanwhile: look again
                ready = []
            if lane.wake_r in ready:
                lane.drain()
            if self._closed.is_set():
                break
            with lane.lock:
                job = lane.job
            if job is not None:
                if job.sent and ((sock is not None and sock in ready) or time.monotonic() >= job.deadline):
                    self._respond(lane, job)
            elif (sock is not None and sock in ready) or not ready:
                self._lane_maintain(lane)  # readable while idle: the server closed it; or time for upkeep

    def _respond(self, lane: _Lane, job: _Job) -> None:
        try:
            self._read(lane, job)
        except Exception:
            self.log.exception("kucoin: %s response handling failed", job.kind)
            if job.kind == "place":
                self.unknown(job.client_id, "response handling failed")
        if lane.conn.conn is None and not self._closed.is_set():  # reopen now, not on the next order
            try:
                lane.conn.connect()
            except HttpError as e:
                self.log.warning("kucoin: %s reconnect failed: %s", lane.name, e)
        lane.release()

    def _lane_maintain(self, lane: _Lane) -> None:
        """Reopen a connection the server closed; keep an idle one alive."""
        if not lane.claim():
            return
        try:
            if not lane.conn.healthy:
                lane.conn.connect()
            elif time.monotonic() - lane.conn.last_used > KEEPALIVE_S:
                if self.limiter.acquire({"public": 3}, self.wall()) == 0:
                    r = lane.conn.request("GET", "/api/v1/timestamp")
                    self.limiter.on_headers(r.headers, self.wall(), pool="public")
        except HttpError as e:
            lane.conn.close()
            self.log.debug("kucoin: %s keep-alive: %s", lane.name, e)
        finally:
            lane.release()

    def _read(self, lane: _Lane, job: _Job) -> None:
        try:
            r = lane.conn.receive(max(0.001, job.deadline - time.monotonic()))
        except HttpError as e:
            if job.kind == "place":
                self.unknown(job.client_id, str(e))
            else:
                self.log.warning("kucoin: cancel of %s: %s", job.client_id, e)
            return
        self._feedback(r, "spot")
        code, msg, data = _envelope(r)
        cid = job.client_id
        if job.kind == "cancel":
            if code != OK:
                self.log.warning("kucoin: cancel of %s refused: %s %s", cid, code, msg)
            return
        if code == OK and r.status < 300 and isinstance(data, dict):
            self.put(Ack(cid, str(data.get("orderId", "")), r.t_ns))
        elif r.status >= 500 or code.startswith("5000"):
            self.unknown(cid, f"HTTP {r.status} {code} {msg}: outcome unknown")
        elif r.status in (429, 418) or code == "429000":
            self.put(Reject(cid, str(r.status) if r.status in (429, 418) else "429", f"{code} {msg}", r.t_ns))
        else:
            low = msg.lower()
            self.clock_suspect(code)
            self.put(Reject(cid, code, msg, r.t_ns, duplicate=any(w in low for w in DUPLICATE_WORDS)))

    # ================================================================================================ user stream

    def _connect_user(self) -> websocket.WebSocket:
        """Token from ``bullet-private``, connect, welcome, subscribe the order topic and wait for the ack."""
        data = self._call("POST", "/api/v1/bullet-private", body=None, cost=10)
        try:
            server = data["instanceServers"][0]
            token = data["token"]
        except (KeyError, IndexError, TypeError):
            raise VenueError(self.venue, "bad_reply", "bullet-private: no token / instance server") from None
        self.ping_interval_s = int(server.get("pingInterval", 18000)) / 1000.0
        self.ping_timeout_s = int(server.get("pingTimeout", 10000)) / 1000.0
        url = f"{server['endpoint']}?token={token}&connectId={time.time_ns()}"
        try:
            ws = websocket.create_connection(url, timeout=self.timeout_s, sockopt=WS_SOCKOPT,
                                             skip_utf8_validation=True, enable_multithread=True)
        except (websocket.WebSocketException, OSError) as e:
            raise VenueError(self.venue, "ws", f"private stream connect failed: {type(e).__name__}: "
                             f"{str(e).replace(token, '***')}") from None
        try:
            welcome = orjson.loads(ws.recv())
            if not isinstance(welcome, dict) or welcome.get("type") != "welcome":
                raise VenueError(self.venue, "ws", f"private stream: expected a welcome, got {one_line(welcome)}")
            sub_id = str(time.time_ns())
            ws.send(orjson.dumps({"id": sub_id, "type": "subscribe", "topic": ORDER_TOPIC, "privateChannel": True,
                                  "response": True}).decode())
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                msg = orjson.loads(ws.recv())
                if isinstance(msg, dict) and str(msg.get("id")) == sub_id:
                    if msg.get("type") == "ack":
                        return ws
                    raise VenueError(self.venue, str(msg.get("code", "ws")),
                                     f"subscribe {ORDER_TOPIC} refused: {one_line(msg.get('data', msg))}")
            raise VenueError(self.venue, "ws", f"no ack for the {ORDER_TOPIC} subscription")
        except (websocket.WebSocketException, OSError, orjson.JSONDecodeError) as e:
            ws.abort()
            raise VenueError(self.venue, "ws", f"private stream set-up failed: {type(e).__name__}") from None
        except VenueError:
            ws.abort()
            raise

    def _user_read(self, ws: websocket.WebSocket) -> str:
        ws.settimeout(0.5)
        last_ping = time.monotonic()
        awaiting = 0.0
        n = 0
        while not self._closed.is_set():
            now = time.monotonic()
            try:
                if awaiting and now - awaiting > self.ping_timeout_s:
                    return f"no pong within {self.ping_timeout_s:g} s"
                if now - last_ping >= self.ping_interval_s:
                    n += 1
                    ws.send(f'{{"id":"p{n}","type":"ping"}}')
                    last_ping = now
                    awaiting = awaiting or now
                opcode, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError) as e:
                return f"connection lost: {type(e).__name__}"
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return "closed by the venue"
            t = time.perf_counter_ns()
            try:
                msg = orjson.loads(data)
            except orjson.JSONDecodeError:
                self.log.warning("kucoin: undecodable private frame (%d bytes)", len(data))
                continue
            if not isinstance(msg, dict):
                continue
            typ = msg.get("type")
            if typ == "pong":
                awaiting = 0.0
            elif typ == "message" and msg.get("topic") == ORDER_TOPIC and isinstance(msg.get("data"), dict):
                self._on_order_change(msg["data"], t)
            elif typ == "error":
                self.log.warning("kucoin: private stream error: %s", one_line(msg))
        return "closed"

    def _on_order_change(self, d: dict[str, Any], t: int) -> None:
        cid = str(d.get("clientOid") or "")
        if not cid:
            return
        oid, sym = str(d.get("orderId", "")), str(d.get("symbol", ""))
        if d.get("type") == "match" and d.get("tradeId") is not None:
            tid = str(d["tradeId"])
            if not self.has_fill(cid, tid):
                self._fills_q.put(("match", cid, sym, oid, tid))
        if d.get("status") == "done":
            filled = dec(d.get("filledSize"))
            size = dec(d.get("originSize") or d.get("size"))
            status: Status
            if size and filled >= size:
                status = "filled"
            elif self._kinds.get(cid) in ("ioc", "market"):
                status = "expired"
            else:
                status = "canceled"
            self._fills_q.put(("done", cid, sym, oid, Done(cid, status, filled, t)))

    # ================================================================================================ fills

    def _fills_run(self) -> None:
        while True:
            self._maybe_resync()  # between jobs, and at least every 0.2 s: a 400002 is mended at once
            try:
                job = self._fills_q.get(timeout=0.2)
            except queue.Empty:
                continue
            if job is None:
                return
            kind, cid, sym, oid, extra = job
            try:
                if kind == "match":
                    if not self.has_fill(cid, extra):
                        self._emit_fills(cid, sym, oid)
                else:
                    self._fills_until(cid, sym, oid, extra.filled_qty)
                    self.done(extra)
            except Exception:
                self.log.exception("kucoin: fills of %s failed", cid)
                if kind == "done":
                    self.done(extra)

    def _maybe_resync(self) -> None:
        if self._closed.is_set() or (time.monotonic() - self._last_sync < CLOCK_RESYNC_S and not self.resync_due):
            return
        self._last_sync = time.monotonic()
        self.resync_due = False
        try:
            self.sync_clock(self._server_ms)
        except VenueError as e:
            self.log.warning("kucoin: clock re-sync failed: %s", e)

    def _fills_until(self, cid: str, sym: str, oid: str, target: Decimal) -> None:
        for delay in FILL_DELAYS_S:
            if self.filled(cid) >= target:
                return
            if delay:
                time.sleep(delay)
            try:
                self._emit_fills(cid, sym, oid)
            except VenueError as e:
                self.log.warning("kucoin: fills of %s: %s", cid, e)
        if self.filled(cid) < target:
            self.log.warning("kucoin: %s done with %s filled but the fills list only %s", cid, target,
                             self.filled(cid))

    def _fetch_fills(self, cid: str, sym: str, oid: str) -> list[Fill]:
        out: list[Fill] = []
        last_id = None
        for _ in range(20):
            q: dict[str, Any] = {"symbol": sym, "orderId": oid, "limit": 100}
            if last_id:
                q["lastId"] = last_id
            data = self._call("GET", "/api/v1/hf/fills", q, cost=2)
            items = (data or {}).get("items") or []
            t = time.perf_counter_ns()
            for it in items:
                out.append(Fill(cid, str(it.get("orderId", oid)), str(it.get("tradeId")), dec(it.get("price")),
                                dec(it.get("size")), dec(it.get("fee")), str(it.get("feeCurrency", "")),
                                it.get("liquidity") == "maker", int(it.get("createdAt") or 0), t))
            last_id = (data or {}).get("lastId")
            if len(items) < 100 or not last_id:
                break
        return out

    def _emit_fills(self, cid: str, sym: str, oid: str) -> None:
        for f in self._fetch_fills(cid, sym, oid):
            self.fill(f)

    # ================================================================================================ queries

    def rules(self, symbols: list[str]) -> dict[str, object]:
        """``GET /api/v2/symbols`` -> ``Rules`` per requested symbol (VenueError if one is unknown)."""
        data = self._call("GET", "/api/v2/symbols", signed=False, cost=4, pool="public") or []
        want = set(symbols)
        out: dict[str, object] = {s["symbol"]: rules_from_kucoin(s) for s in data if s.get("symbol") in want}
        missing = want - set(out)
        if missing:
            raise VenueError(self.venue, "unknown_symbol", f"not listed: {', '.join(sorted(missing))}")
        return out

    def _state(self, o: dict[str, Any], fills: list[Fill] | None = None) -> OrderState:
        size, deal = dec(o.get("size")), dec(o.get("dealSize"))
        status: Status
        if o.get("active"):
            status = "partially_filled" if deal > 0 else "new"
        elif size and deal >= size:
            status = "filled"
        elif o.get("timeInForce") in ("IOC", "FOK") or o.get("type") == "market":
            status = "expired"
        else:
            status = "canceled"
        price = dec(o.get("price"))
        return OrderState(str(o.get("clientOid", "")), str(o.get("id", "")), str(o.get("symbol", "")),
                          1 if o.get("side") == "buy" else -1, size, price if price else None, deal, status,
                          fills or [])

    def order(self, symbol: str, client_id: str, with_fills: bool = True) -> OrderState | None:
        """``GET /api/v1/hf/orders/client-order/{clientOid}`` (+ its fills); None when the venue does not know it."""
        try:
            o = self._call("GET", f"/api/v1/hf/orders/client-order/{client_id}", {"symbol": symbol})
        except VenueError as e:
            if e.code == "400100" and any(w in e.msg.lower() for w in NOT_FOUND_WORDS):
                return None
            raise
        if not isinstance(o, dict):
            return None
        st = self._state(o)
        if with_fills and st.venue_order_id:
            st.fills = self._fetch_fills(client_id, symbol, st.venue_order_id)
        return st

    def open_orders(self, symbols: list[str]) -> list[OrderState]:
        """``GET /api/v1/hf/orders/active`` per symbol."""
        out: list[OrderState] = []
        for sym in symbols:
            data = self._call("GET", "/api/v1/hf/orders/active", {"symbol": sym}) or []
            out.extend(self._state(o) for o in data if isinstance(o, dict))
        return out

    def balances(self) -> dict[str, Decimal]:
        """``GET /api/v1/accounts?type=trade``: total balance per currency."""
        data = self._call("GET", "/api/v1/accounts", {"type": "trade"}, cost=5) or []
        out: dict[str, Decimal] = {}
        for a in data:
            out[a["currency"]] = out.get(a["currency"], ZERO) + dec(a.get("balance"))
        return out

    def positions(self) -> dict[str, Decimal]:
        """Spot: no positions."""
        return {}
