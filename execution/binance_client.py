"""Binance spot and USD-M futures live client (EXCHANGES.md 2.4-2.8, 3.3-3.6).

Orders and cancels go over ONE long-lived WebSocket-API session (``order.place`` / ``order.cancel``), each request
signed on its own with HMAC (``wsapi_signed_params``: ``session.logon`` needs an Ed25519 key). ``place`` writes
the request from the caller's thread and returns the write time; the session's reader thread matches responses
to requests by id and emits ``Ack`` / ``Reject`` / ``Unknown``, spot ``FULL`` response fills as ``Fill``, and a
terminal status as ``Done``. A request without a response within ``timeout_s`` becomes ``Unknown`` (a late
answer is still reported); when the session is lost every request still waiting becomes ``Unknown`` and the
reader reconnects with backoff.

User data: spot subscribes with ``userDataStream.subscribe.signature`` on the same session (``executionReport``);
USD-M opens a listenKey (``POST /fapi/v1/listenKey``, ``PUT`` every 30 min) and reads ``<user_ws_url>/<key>``
(``ORDER_TRADE_UPDATE``). Fills are emitted once per (client id, trade id) whichever path brings them first, and
``Done`` once per order; a ``Done`` from an order response waits (up to ``HOLD_DONE_S``) for the user stream's
fills so that it follows them. Queries go over keep-alive REST.

Threads: ``binance-wsapi`` (session reader, reconnects), ``binance-user`` (USD-M user stream), ``binance-maint``
(clock re-sync, listenKey keep-alive).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import websocket

from execution.client_core import CLOCK_RESYNC_S, ZERO, ClientCore, dec, one_line
from execution.http import WS_SOCKOPT, HttpClient, HttpError, Response
from execution.ratelimit import Limiter, binance_spot_limiter, binance_usdm_limiter
from execution.rules import rules_from_binance
from execution.signing import Credentials, binance_query, binance_signed_query, wsapi_signed_params
from execution.venue import TERMINAL, Ack, Done, Fill, OrderRequest, OrderState, Reject, Status, VenueError

BINANCE_REST = "https://api.binance.com"
BINANCE_WS_API = "wss://ws-api.binance.com:443/ws-api/v3"
USDM_REST = "https://fapi.binance.com"
USDM_WS_API = "wss://ws-fapi.binance.com/ws-fapi/v1"
USDM_USER_WS = "wss://fstream.binance.com/private/ws"

STATUS: dict[str, Status] = {"NEW": "new", "PARTIALLY_FILLED": "partially_filled", "FILLED": "filled",
                             "CANCELED": "canceled", "EXPIRED": "expired", "EXPIRED_IN_MATCH": "expired",
                             "REJECTED": "rejected", "PENDING_CANCEL": "new"}
UNKNOWN_CODES = frozenset({-1006, -1007})
"""Binance "unexpected response" / "timeout waiting for the backend: execution status unknown"."""
HOLD_DONE_S = 2.0
"""How long a ``Done`` from an order response waits for fills still expected on the user stream."""
LISTEN_KEY_KEEPALIVE_S = 30 * 60.0
PING_IDLE_S = 20.0
"""Send a ping frame when nothing arrived for this long; give up after ``DEAD_S``."""
DEAD_S = 60.0
LATE_KEEP_S = 60.0
"""How long a timed-out request is remembered so that its late response is still reported."""
def _is_duplicate(code: int | str, msg: str) -> bool:
    return str(code) == "-4116" or (str(code) == "-2010" and "duplicate" in msg.lower())


@dataclass(slots=True)
class _Req:
    kind: str
    """``place``, ``cancel`` or ``subscribe``."""
    client_id: str
    deadline: float
    t_sent: int = 0
    timed_out: bool = False


class BinanceClient(ClientCore):
    """Binance spot (``futures=False``) or USD-M (``futures=True``) ``VenueClient`` (``execution.venue``)."""

    def __init__(self, rest_url: str, ws_api_url: str, user_ws_url: str, creds: Credentials, *, futures: bool,
                 timeout_s: float = 5.0, max_wait_s: float = 0.05, recv_window_ms: int = 5000,
                 limiter: Limiter | None = None) -> None:
        self.venue = "binance-usdm" if futures else "binance"
        super().__init__(limiter or (binance_usdm_limiter() if futures else binance_spot_limiter()), max_wait_s)
        self.futures = futures
        self.rest_url = rest_url.rstrip("/")
        self.ws_api_url = ws_api_url
        self.user_ws_url = user_ws_url.rstrip("/")
        self.creds = creds
        self.timeout_s = timeout_s
        self.recv_window_ms = recv_window_ms
        self.api = "/fapi/v1" if futures else "/api/v3"
        self.http = HttpClient(self.rest_url, timeout_s)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        """Guards ``_ws``, ``_pending`` and ``_held``."""
        self._ws: websocket.WebSocket | None = None
        self._pending: dict[int, _Req] = {}
        self._held: dict[str, tuple[Done, float]] = {}
        self._user_ws: websocket.WebSocket | None = None
        self._listen_key = ""
        self._key_renewed = 0.0
        self._closed = threading.Event()
        self._started = False
        self._threads: list[threading.Thread] = []
        self._last_rx = time.monotonic()

    def __repr__(self) -> str:
        return f"BinanceClient({self.rest_url!r}, futures={self.futures}, {self.creds!r})"

    @property
    def session_up(self) -> bool:
        """True while the WS-API session is connected (orders can be sent)."""
        return self._ws is not None

    # ================================================================================================ life cycle

    def start(self) -> None:
        """Sync the clock, open the REST connection and the WS-API session, and subscribe the user data (spot:
        on the session; USD-M: listenKey stream). Raises VenueError (e.g. ``-2015`` bad key, ``-1022`` bad
        signature) when that fails."""
        if self._started:
            return
        user_ws = None
        try:
            self.sync_clock(self._server_ms)
            self.http.warm(1)
            ws = self._open_session()
            with self._lock:
                self._ws = ws
            if self.futures:
                user_ws = self._connect_user()
            else:
                self._subscribe_sync(ws)
        except HttpError as e:
            self.close()
            raise VenueError(self.venue, "transport", str(e)) from None
        except VenueError:
            self.close()
            raise
        self._started = True
        self._threads = [threading.Thread(target=self._session_run, name="binance-wsapi", daemon=True),
                         threading.Thread(target=self._maint_run, name="binance-maint", daemon=True)]
        if self.futures:
            self._threads.append(threading.Thread(target=self._user_run, args=(user_ws,), name="binance-user",
                                                  daemon=True))
        for t in self._threads:
            t.start()
        self.stream(True, "user data stream subscribed")

    def close(self) -> None:
        """Stop the threads and close every connection (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            ws, self._ws = self._ws, None
        for w in (ws, self._user_ws):
            if w is not None:
                try:
                    w.abort()
                    w.close(timeout=0.2)
                except Exception:
                    pass
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=2.0)
        self.http.close()

    # ================================================================================================ REST

    def _server_ms(self) -> int:
        return int(self._call("GET", "/time", signed=False, weight=1)["serverTime"])

    def _feedback(self, r: Response) -> None:
        now = self.wall()
        self.limiter.on_headers(r.headers, now)
        self.limiter.on_status(r.status, r.headers.get("retry-after"), now)

    def _call(self, method: str, path: str, params: dict[str, Any] | None = None, *, signed: bool = True,
              weight: int = 1, prefix: str | None = None) -> Any:
        """One synchronous REST call (``path`` under ``/api/v3`` or ``/fapi/v1`` unless ``prefix`` is given);
        the decoded JSON, else VenueError with the venue's code."""
        self.query_gate({"REQUEST_WEIGHT": weight})
        p = dict(params or {})
        if signed:
            p["recvWindow"] = self.recv_window_ms
            p["timestamp"] = self.now_ms()
            query = binance_signed_query(p, self.creds.secret)
        else:
            query = binance_query(p)
        url = (self.api if prefix is None else prefix) + path + (f"?{query}" if query else "")
        try:
            r = self.http.request(method, url, None, {"X-MBX-APIKEY": self.creds.api_key})
        except HttpError as e:
            raise VenueError(self.venue, "transport", str(e)) from None
        self._feedback(r)
        try:
            obj = orjson.loads(r.body)
        except orjson.JSONDecodeError:
            obj = None
        is_err = isinstance(obj, dict) and isinstance(obj.get("code"), int) and obj["code"] < 0 and "msg" in obj
        if r.status < 300 and obj is not None and not is_err:
            return obj
        retry = r.headers.get("retry-after")
        try:
            retry_s = float(retry) if retry is not None else None
        except ValueError:
            retry_s = None
        if isinstance(obj, dict) and "code" in obj:
            self.clock_suspect(str(obj["code"]))
            raise VenueError(self.venue, str(obj["code"]), one_line(obj.get("msg", "")), r.status, retry_s)
        raise VenueError(self.venue, str(r.status), one_line(r.body[:200].decode(errors="replace")), r.status, retry_s)

    # ================================================================================================ WS-API

    def _open_session(self) -> websocket.WebSocket:
        try:
            ws = websocket.create_connection(self.ws_api_url, timeout=self.timeout_s, sockopt=WS_SOCKOPT,
                                             skip_utf8_validation=True, enable_multithread=True)
        except (websocket.WebSocketException, OSError) as e:
            raise VenueError(self.venue, "ws", f"WS-API connect to {self.ws_api_url} failed: "
                             f"{type(e).__name__}: {e}") from None
        self._last_rx = time.monotonic()
        return ws

    def _subscribe_params(self) -> dict[str, object]:
        return wsapi_signed_params({"timestamp": self.now_ms()}, self.creds.api_key, self.creds.secret)

    def _subscribe_sync(self, ws: websocket.WebSocket) -> None:
        """Spot, at start: ``userDataStream.subscribe.signature`` and wait for its answer."""
        rid = next(self._ids)
        try:
            ws.send(orjson.dumps({"id": rid, "method": "userDataStream.subscribe.signature",
                                  "params": self._subscribe_params()}).decode())
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                msg = orjson.loads(ws.recv())
                if isinstance(msg, dict) and msg.get("id") == rid:
                    if msg.get("rateLimits"):
                        self.limiter.on_wsapi(msg["rateLimits"], self.wall())
                    if msg.get("status") == 200:
                        return
                    err = msg.get("error") or {}
                    raise VenueError(self.venue, str(err.get("code", msg.get("status"))),
                                     f"userDataStream.subscribe.signature: {one_line(err.get('msg', ''))}",
                                     int(msg.get("status") or 0))
            raise VenueError(self.venue, "timeout", "no answer to userDataStream.subscribe.signature")
        except (websocket.WebSocketException, OSError, orjson.JSONDecodeError) as e:
            raise VenueError(self.venue, "ws", f"WS-API session failed during subscribe: {type(e).__name__}") \
                from None

    def _send(self, method: str, params: dict[str, object], req: _Req) -> int:
        """Register ``req`` and write the request on the session; the write time (also when the write failed:
        ``Unknown`` is then emitted), or 0 when not connected."""
        rid = next(self._ids)
        data = orjson.dumps({"id": rid, "method": method, "params": params}).decode()
        with self._lock:
            ws = self._ws
            if ws is None:
                return 0
            self._pending[rid] = req
        frame = websocket.ABNF.create_frame(data, websocket.ABNF.OPCODE_TEXT)
        t = time.perf_counter_ns()  # right before framing + the socket write (no blocking for a small frame)
        try:
            ws.send_frame(frame)
        except (websocket.WebSocketException, OSError) as e:
            with self._lock:
                self._pending.pop(rid, None)
            if req.kind == "place":
                self.unknown(req.client_id, f"WS-API write failed ({type(e).__name__}): may have been sent")
            return t
        req.t_sent = t
        return t

    def place(self, req: OrderRequest) -> int:
        """Sign and write ``order.place`` on the WS-API session; events follow from the reader thread."""
        costs = {"ORDERS": 1} if self.futures else {"ORDERS": 1, "REQUEST_WEIGHT": 1}
        if not self.gate(req.client_id, costs):
            return 0
        p: dict[str, object] = {"symbol": req.symbol, "side": "BUY" if req.side > 0 else "SELL",
                                "quantity": req.qty, "newClientOrderId": req.client_id,
                                "newOrderRespType": "RESULT" if self.futures else "FULL"}
        if req.kind != "market" and req.price is None:
            self.put(Reject(req.client_id, "bad_request", f"a {req.kind} order needs a price",
                            time.perf_counter_ns()))
            return 0
        if req.kind == "market":
            p["type"] = "MARKET"
        elif req.kind == "post_only" and not self.futures:
            p.update(type="LIMIT_MAKER", price=req.price)
        else:
            p.update(type="LIMIT", timeInForce="GTX" if req.kind == "post_only" else "IOC", price=req.price)
        if self.futures and req.reduce_only:
            p["reduceOnly"] = "true"
        p["recvWindow"] = self.recv_window_ms
        p["timestamp"] = self.now_ms()
        signed = wsapi_signed_params(p, self.creds.api_key, self.creds.secret)
        t = self._send("order.place", signed, _Req("place", req.client_id, time.monotonic() + self.timeout_s))
        if t == 0:
            self.put(Reject(req.client_id, "not_connected", "WS-API session down (reconnecting): order not sent",
                            time.perf_counter_ns()))
        return t

    def cancel(self, symbol: str, client_id: str) -> None:
        """``order.cancel`` by client id on the session; the outcome arrives as events."""
        if self.limiter.banned_until(self.wall()):
            self.log.warning("%s: cancel of %s not sent: rate-limit pause in force", self.venue, client_id)
            return
        self.limiter.acquire({"REQUEST_WEIGHT": 1}, self.wall())
        p = wsapi_signed_params({"symbol": symbol, "origClientOrderId": client_id, "recvWindow": self.recv_window_ms,
                                 "timestamp": self.now_ms()}, self.creds.api_key, self.creds.secret)
        if self._send("order.cancel", p, _Req("cancel", client_id, time.monotonic() + self.timeout_s)) == 0:
            self.log.warning("%s: cancel of %s not sent: WS-API session down", self.venue, client_id)

    def _session_run(self) -> None:
        attempts = 0
        while not self._closed.is_set():
            with self._lock:
                ws = self._ws
            if ws is None:
                try:
                    ws = self._open_session()
                except VenueError as e:
                    attempts += 1
                    delay = min(0.25 * 2 ** attempts, 30.0) * (0.5 + random.random() / 2)
                    self.log.warning("%s: WS-API reconnect failed (%s); retry in %.2f s", self.venue, e, delay)
                    self._closed.wait(delay)
                    continue
                attempts = 0
                with self._lock:
                    if self._closed.is_set():
                        ws.abort()
                        return
                    self._ws = ws
                if not self.futures:
                    self._send("userDataStream.subscribe.signature", self._subscribe_params(),
                               _Req("subscribe", "", time.monotonic() + self.timeout_s))
            reason = self._session_read(ws)
            if self._closed.is_set():
                return
            self._session_lost(ws, reason)
            self._closed.wait(0.05 + random.random() * 0.2)

    def _session_read(self, ws: websocket.WebSocket) -> str:
        ws.settimeout(0.2)
        pinged = 0.0
        while not self._closed.is_set():
            now = time.monotonic()
            self._expire(now)
            try:
                if now - self._last_rx > DEAD_S:
                    return f"nothing received for {DEAD_S:g} s"
                if now - self._last_rx > PING_IDLE_S and now - pinged > PING_IDLE_S:
                    ws.ping()
                    pinged = now
                opcode, data = ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError) as e:
                return f"connection lost: {type(e).__name__}"
            self._last_rx = time.monotonic()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return "closed by the venue"
            if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                continue
            t = time.perf_counter_ns()
            try:
                msg = orjson.loads(data)
            except orjson.JSONDecodeError:
                self.log.warning("%s: undecodable WS-API frame (%d bytes)", self.venue, len(data))
                continue
            if not isinstance(msg, dict):
                continue
            try:
                if "event" in msg and "id" not in msg:
                    ev = msg["event"]
                    if isinstance(ev, dict) and ev.get("e") == "executionReport":
                        self._on_execution_report(ev, t)
                    elif isinstance(ev, dict) and ev.get("e") == "eventStreamTerminated":
                        return "user data stream terminated by the venue"
                elif "id" in msg:
                    self._on_response(msg, t)
            except Exception:
                self.log.exception("%s: WS-API message handling failed", self.venue)
        return "closed"

    def _session_lost(self, ws: websocket.WebSocket, reason: str) -> None:
        with self._lock:
            if self._ws is ws:
                self._ws = None
            pending, self._pending = self._pending, {}
        try:
            ws.abort()
        except Exception:
            pass
        self.log.warning("%s: WS-API session lost: %s", self.venue, reason)
        for req in pending.values():
            if req.kind == "place" and not req.timed_out:
                self.unknown(req.client_id, f"WS-API session lost before the response ({reason})")
        if not self.futures:
            self.stream(False, f"WS-API session lost: {reason}")

    def _expire(self, now: float) -> None:
        """Requests past their deadline: ``Unknown`` once (kept a while for a late answer); held ``Done``s."""
        expired: list[_Req] = []
        ripe: list[Done] = []
        with self._lock:
            for rid, req in list(self._pending.items()):
                if now > req.deadline:
                    if req.timed_out:
                        if now > req.deadline + LATE_KEEP_S:
                            del self._pending[rid]
                    else:
                        req.timed_out = True
                        expired.append(req)
            for cid, (d, until) in list(self._held.items()):
                if now > until:
                    del self._held[cid]
                    ripe.append(d)
        for req in expired:
            if req.kind == "place":
                self.unknown(req.client_id, f"no WS-API response within {self.timeout_s:g} s: outcome unknown")
            elif req.kind == "subscribe":
                self.log.warning("%s: no answer to the user data subscription", self.venue)
        for d in ripe:
            self.done(d)

    def _on_response(self, msg: dict[str, Any], t: int) -> None:
        rid = msg.get("id")
        with self._lock:
            req = self._pending.pop(rid, None) if isinstance(rid, int) else None
        now = self.wall()
        if msg.get("rateLimits"):
            self.limiter.on_wsapi(msg["rateLimits"], now)
        if req is None:
            return
        status = int(msg.get("status") or 0)
        err = msg.get("error") if isinstance(msg.get("error"), dict) else {}
        if status in (429, 418):
            data = err.get("data") if isinstance(err.get("data"), dict) else {}
            retry = data.get("retryAfter")
            secs = max(0.0, (int(retry) - self.now_ms()) / 1000.0) if isinstance(retry, int) else None
            self.limiter.on_status(status, None if secs is None else str(secs), now)
        if req.kind == "subscribe":
            if status == 200:
                self.stream(True, "user data stream re-subscribed")
            else:
                self.log.warning("%s: user data subscription refused: %s %s", self.venue, err.get("code"),
                                 one_line(err.get("msg", "")))
            return
        cid = req.client_id
        result = msg.get("result") if isinstance(msg.get("result"), dict) else {}
        if req.kind == "cancel":
            if status == 200:
                st = STATUS.get(str(result.get("status")))
                if st in TERMINAL:
                    self._finish(Done(cid, st, dec(result.get("executedQty")), t))
            else:
                self.log.warning("%s: cancel of %s refused: %s %s", self.venue, cid, err.get("code"),
                                 one_line(err.get("msg", "")))
            return
        # place
        if status == 200:
            oid = str(result.get("orderId", ""))
            self.put(Ack(cid, oid, t))
            ts = int(result.get("transactTime") or result.get("updateTime") or 0)
            for f in result.get("fills") or []:
                self.fill(Fill(cid, oid, str(f.get("tradeId")), dec(f.get("price")), dec(f.get("qty")),
                               dec(f.get("commission")), str(f.get("commissionAsset", "")), False, ts, t))
            st = STATUS.get(str(result.get("status")))
            if st in TERMINAL:
                self._finish(Done(cid, st, dec(result.get("executedQty")), t))
            return
        code, text = err.get("code", status), one_line(err.get("msg", ""))
        if status >= 500 or code in UNKNOWN_CODES:
            self.unknown(cid, f"status {status} {code} {text}: outcome unknown")
        elif status in (429, 418):
            self.put(Reject(cid, str(status), f"{code} {text}", t))
        else:
            self.clock_suspect(str(code))
            self.put(Reject(cid, str(code), text, t, duplicate=_is_duplicate(code, text)))

    def _finish(self, d: Done) -> None:
        """Emit ``d`` now if its fills are all out, else hold it until they are (or ``HOLD_DONE_S`` passed)."""
        if self.filled(d.client_id) >= d.filled_qty:
            self.done(d)
            return
        with self._lock:
            if d.client_id not in self._held:
                self._held[d.client_id] = (d, time.monotonic() + HOLD_DONE_S)

    def _after_fill(self, cid: str) -> None:
        with self._lock:
            held = self._held.get(cid)
            if held is None or self.filled(cid) < held[0].filled_qty:
                return
            del self._held[cid]
        self.done(held[0])

    def _terminal(self, cid: str, status: str, cum: Any, t: int) -> None:
        st = STATUS.get(status)
        if st in TERMINAL:
            with self._lock:
                self._held.pop(cid, None)
            self.done(Done(cid, st, dec(cum), t))

    # ================================================================================================ user data

    def _on_execution_report(self, e: dict[str, Any], t: int) -> None:
        x = e.get("x")
        cid = str(e.get("C") if x == "CANCELED" and e.get("C") else e.get("c", ""))
        if x == "TRADE":
            self.fill(Fill(cid, str(e.get("i", "")), str(e.get("t")), dec(e.get("L")), dec(e.get("l")),
                           dec(e.get("n")), str(e.get("N") or ""), bool(e.get("m")), int(e.get("T") or 0), t))
            self._after_fill(cid)
        self._terminal(cid, str(e.get("X")), e.get("z"), t)

    def _on_order_update(self, o: dict[str, Any], t: int) -> None:
        cid = str(o.get("c", ""))
        if o.get("x") == "TRADE":
            self.fill(Fill(cid, str(o.get("i", "")), str(o.get("t")), dec(o.get("L")), dec(o.get("l")),
                           dec(o.get("n")), str(o.get("N") or ""), bool(o.get("m")), int(o.get("T") or 0), t))
            self._after_fill(cid)
        self._terminal(cid, str(o.get("X")), o.get("z"), t)

    def _connect_user(self) -> websocket.WebSocket:
        """USD-M: a listenKey, then ``<user_ws_url>/<listenKey>``."""
        key = self._call("POST", "/listenKey", signed=False, weight=1).get("listenKey", "")
        if not key:
            raise VenueError(self.venue, "bad_reply", "POST /fapi/v1/listenKey: no listenKey")
        self._listen_key = key
        self._key_renewed = time.monotonic()
        try:
            ws = websocket.create_connection(f"{self.user_ws_url}/{key}", timeout=self.timeout_s,
                                             sockopt=WS_SOCKOPT, skip_utf8_validation=True,
                                             enable_multithread=True)
        except (websocket.WebSocketException, OSError) as e:
            raise VenueError(self.venue, "ws", f"user stream connect failed: {type(e).__name__}: "
                             f"{str(e).replace(key, '***')}") from None
        return ws

    def _user_read(self, ws: websocket.WebSocket) -> str:
        ws.settimeout(0.5)
        last_rx = time.monotonic()
        pinged = 0.0
        while not self._closed.is_set():
            now = time.monotonic()
            try:
                if now - last_rx > DEAD_S:
                    return f"nothing received for {DEAD_S:g} s"
                if now - last_rx > PING_IDLE_S and now - pinged > PING_IDLE_S:
                    ws.ping()
                    pinged = now
                opcode, data = ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError) as e:
                return f"connection lost: {type(e).__name__}"
            last_rx = time.monotonic()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return "closed by the venue"
            if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                continue
            t = time.perf_counter_ns()
            try:
                ev = orjson.loads(data)
            except orjson.JSONDecodeError:
                self.log.warning("%s: undecodable user frame (%d bytes)", self.venue, len(data))
                continue
            if not isinstance(ev, dict):
                continue
            if isinstance(ev.get("data"), dict) and "stream" in ev:  # combined-stream wrapper
                ev = ev["data"]
            e = ev.get("e")
            if e == "ORDER_TRADE_UPDATE" and isinstance(ev.get("o"), dict):
                self._on_order_update(ev["o"], t)
            elif e == "listenKeyExpired":
                return "listen key expired"
        return "closed"

    # ================================================================================================ maintenance

    def _maint_run(self) -> None:
        last_sync = time.monotonic()
        while not self._closed.wait(0.5):
            now = time.monotonic()
            self._expire(now)  # also while the session reader is reconnecting
            if now - last_sync > CLOCK_RESYNC_S or self.resync_due:
                last_sync = now
                self.resync_due = False
                try:
                    self.sync_clock(self._server_ms)
                except VenueError as e:
                    self.log.warning("%s: clock re-sync failed: %s", self.venue, e)
            if self.futures and self._listen_key and now - self._key_renewed > LISTEN_KEY_KEEPALIVE_S:
                self._key_renewed = now
                try:
                    self._call("PUT", "/listenKey", signed=False, weight=1)
                except VenueError as e:
                    self.log.warning("%s: listenKey keep-alive failed: %s; reconnecting the user stream",
                                     self.venue, e)
                    ws = self._user_ws
                    if ws is not None:
                        ws.abort()

    # ================================================================================================ queries

    def rules(self, symbols: list[str]) -> dict[str, object]:
        """exchangeInfo -> ``Rules`` per requested symbol (VenueError if one is unknown); the limiter's windows
        are replaced by the venue's ``rateLimits``."""
        info = self._call("GET", "/exchangeInfo", signed=False, weight=1 if self.futures else 20)
        want = set(symbols)
        out: dict[str, object] = {s["symbol"]: rules_from_binance(s, self.futures)
                                  for s in info.get("symbols", []) if s.get("symbol") in want}
        if info.get("rateLimits"):
            new = Limiter.from_exchange_info(info["rateLimits"], self.venue)
            now = self.wall()
            banned = self.limiter.banned_until(now)
            if banned:
                new.on_status(429, str(banned - now), now)
            self.limiter = new
        missing = want - set(out)
        if missing:
            raise VenueError(self.venue, "unknown_symbol", f"not listed: {', '.join(sorted(missing))}")
        return out

    def _state(self, o: dict[str, Any], fills: list[Fill] | None = None) -> OrderState:
        price = dec(o.get("price"))
        return OrderState(str(o.get("clientOrderId", "")), str(o.get("orderId", "")), str(o.get("symbol", "")),
                          1 if o.get("side") == "BUY" else -1, dec(o.get("origQty")), price if price else None,
                          dec(o.get("executedQty")), STATUS.get(str(o.get("status")), "new"), fills or [])

    def order(self, symbol: str, client_id: str, with_fills: bool = True) -> OrderState | None:
        """``GET order`` by ``origClientOrderId`` (+ ``myTrades`` / ``userTrades`` by orderId); None on -2013."""
        try:
            o = self._call("GET", "/order", {"symbol": symbol, "origClientOrderId": client_id},
                           weight=1 if self.futures else 4)
        except VenueError as e:
            if e.code == "-2013":
                return None
            raise
        st = self._state(o)
        if with_fills and st.venue_order_id:
            path = "/userTrades" if self.futures else "/myTrades"
            trades = self._call("GET", path, {"symbol": symbol, "orderId": st.venue_order_id},
                                weight=5 if self.futures else 20)
            t = time.perf_counter_ns()
            st.fills = [Fill(client_id, str(x.get("orderId", st.venue_order_id)), str(x.get("id")),
                             dec(x.get("price")), dec(x.get("qty")), dec(x.get("commission")),
                             str(x.get("commissionAsset", "")), bool(x.get("maker", x.get("isMaker", False))),
                             int(x.get("time") or 0), t) for x in trades]
        return st

    def open_orders(self, symbols: list[str]) -> list[OrderState]:
        """``GET openOrders`` per symbol."""
        out: list[OrderState] = []
        for sym in symbols:
            out.extend(self._state(o) for o in self._call("GET", "/openOrders", {"symbol": sym},
                                                          weight=1 if self.futures else 6))
        return out

    def balances(self) -> dict[str, Decimal]:
        """Spot: free + locked per asset (``/api/v3/account``); USD-M: wallet balance per asset
        (``/fapi/v2/balance``)."""
        if self.futures:
            rows = self._call("GET", "/balance", weight=5, prefix="/fapi/v2")
            return {r["asset"]: dec(r.get("balance")) for r in rows}
        acct = self._call("GET", "/account", weight=20)
        return {b["asset"]: dec(b.get("free")) + dec(b.get("locked")) for b in acct.get("balances", [])}

    def positions(self) -> dict[str, Decimal]:
        """USD-M: signed position per symbol (``/fapi/v2/positionRisk``, non-zero only); spot: empty."""
        if not self.futures:
            return {}
        rows = self._call("GET", "/positionRisk", weight=5, prefix="/fapi/v2")
        out: dict[str, Decimal] = {}
        for r in rows:
            amt = dec(r.get("positionAmt"))
            if amt:
                out[r["symbol"]] = out.get(r["symbol"], ZERO) + amt
        return out
