"""``bench latency --baseline``: the design users have today, the seed bot ported to one Python process.

THIS IS DELIBERATELY SLOW. It is the reference lowlat is compared with, so do not "optimize" it: it must stay the
seed's design (shared/seeds/001_d676f6603a56f020.statarb_signals.go.txt) as a Python user ports it:

* one process, one thread doing the work: everything happens in websocket-client's ``WebSocketApp.on_message``
  callback (library defaults: UTF-8 validation on, no wsaccel; ``run_forever`` is given only ``ping_timeout=1``,
  which here just bounds its select so a stop is seen on a silent socket); the only other thread is the seed's
  ping goroutine, which also asks the loop to stop at the deadline;
* stdlib ``json.loads`` of every frame;
* the seed's minute bars (``MinuteAgg``, 120-bar ``Ring`` per leg, as written) and, on every tick, the full window
  rebuilt from the rings (maps of minutes, sorted intersection, 119 closed + partial) and its OLS beta / spread
  mean / sample sd / z recomputed in pure Python, then the seed's ENTER/EXIT state machine (paper);
* orders sent synchronously from the callback, leg A then leg B, signed inline (hmac + base64, KC-API key
  version 3) over one persistent ``http.client.HTTPConnection``, waiting for each response before going on.

Warm-up is the seed's: REST 1-minute candles for both legs (the window ends at the venue's clock, which is the
simulator's replay clock under ``--replay``), aligned by start second, the last 120 common ones pushed.

Event time replaces the seed's wall clock (``nowMs`` = the ticker's ``time``), as in tests/seed_port.py;
``throttle_ms`` is the seed's 150 ms compute throttle, 0 (the default, as the pipeline's configs) computes on
every tick.

Measurement orders follow the pipeline's stats-stage rule: on a ticker whose event time ``ts >= next_at`` (the
first once both legs have a price) the pair alternately ENTERs (BUY leg A, SELL leg B, ``measure_notional`` quote
each at the decision mid, qty floored to the lot) and EXITs (the reverse, same quantities), as limit IOC orders at
mid * (1 +/- 10 bps) rounded to the tick; ``next_at = ts + 2000 / orders_per_s`` ms.

Output: ``out_path`` gets one JSON line per order::

    {"client_id","symbol","side" (1/-1),"qty","price","mid","signal","leg" (0/1),"action" ("enter"/"exit"),
     "t_frame_ns","t_decision_ns","t_sent_ns","t_ack_ns","http_status","code","order_id"}

(``time.monotonic_ns``: frame handed to the callback / window recomputed / request written / response read;
``http_status`` 0 and ``code`` "transport" when the request failed), and ``<stem>.ticks.jsonl`` beside it one
line per accepted ticker: ``{"symbol","ts_ms","bid","ask","t_frame_ns"}``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import math
import os
import signal
import sys
import threading
import time
import urllib.request
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, NamedTuple, TextIO
from urllib.parse import urlsplit

import websocket

from execution.signing import SIMULATOR

windowBars = 120  # const windowBars
TICKER_PREFIX = "/market/ticker:"
OK = "200000"
BAND = 0.001
"""Measurement limit price: mid * (1 +/- 10 bps), so the IOC crosses the spread."""
DEFAULT_LOTS = {"BTC-USDT": ("0.1", "0.00001"), "ETH-USDT": ("0.01", "0.0001")}
"""(tick, lot) when ``/api/v2/symbols`` does not list a symbol."""


# ====================== the seed's bars and stats (Go names, as tests/seed_port.py) ======================


class Bar(NamedTuple):
    """type Bar."""

    MinuteMs: int
    High: float
    Low: float
    Mean: float
    Count: int


class Tick(NamedTuple):
    """type Tick."""

    Symbol: str
    TimeMs: int
    Bid: float
    Ask: float

    def Mid(self) -> float:
        if self.Bid <= 0 or self.Ask <= 0:
            return 0.0
        return 0.5 * (self.Bid + self.Ask)


class Ring:
    """type Ring: a fixed-capacity ring of bars; ``Snapshot`` copies it out oldest first."""

    def __init__(self, capacity: int) -> None:
        self.buf: list[Bar | None] = [None] * capacity
        self.cap = capacity
        self.head = 0
        self.size = 0

    def Push(self, b: Bar) -> None:
        self.buf[self.head] = b
        self.head = (self.head + 1) % self.cap
        if self.size < self.cap:
            self.size += 1

    def Snapshot(self) -> list[Bar]:
        out: list[Bar] = []
        start = (self.head - self.size + self.cap) % self.cap
        for i in range(self.size):
            out.append(self.buf[(start + i) % self.cap])  # type: ignore[arg-type]
        return out


def minuteStartMs(tsMs: int) -> int:
    return (tsMs // 60000) * 60000


class MinuteAgg:
    """type MinuteAgg: ``Update`` returns (closed bar, True) when the tick starts a new minute."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.curMin = 0
        self.high = self.low = self.sum = 0.0
        self.cnt = 0

    def Update(self, t: Tick) -> tuple[Bar | None, bool]:
        mid = t.Mid()
        if mid <= 0:
            return None, False
        m = minuteStartMs(t.TimeMs)
        if self.curMin == 0:
            self.curMin = m
            self.high, self.low, self.sum, self.cnt = mid, mid, mid, 1
            return None, False
        if m == self.curMin:
            if mid > self.high:
                self.high = mid
            if mid < self.low:
                self.low = mid
            self.sum += mid
            self.cnt += 1
            return None, False
        closed = Bar(self.curMin, self.high, self.low, self.sum / float(self.cnt), self.cnt)
        self.curMin = m
        self.high, self.low, self.sum, self.cnt = mid, mid, mid, 1
        return closed, True

    def Partial(self) -> tuple[Bar | None, bool]:
        if self.curMin == 0 or self.cnt == 0:
            return None, False
        return Bar(self.curMin, self.high, self.low, self.sum / float(self.cnt), self.cnt), True


class Stats(NamedTuple):
    """type Stats."""

    Beta: float
    Spread: float
    Mu: float
    Sigma: float
    Z: float
    Mode: str
    MinMs: int


def meanStd(a: list[float]) -> tuple[float, float]:
    n = len(a)
    if n == 0:
        return 0.0, 0.0
    mu = 0.0
    for v in a:
        mu += v
    mu /= float(n)
    if n == 1:
        return mu, 0.0
    ss = 0.0
    for v in a:
        d = v - mu
        ss += d * d
    return mu, math.sqrt(ss / float(n - 1))


def olsBeta(x: list[float], y: list[float]) -> float:
    n = len(x)
    if n == 0 or n != len(y):
        return 1.0
    sx = sy = 0.0
    for i in range(n):
        sx += x[i]
        sy += y[i]
    mx, my = sx / float(n), sy / float(n)
    cov = vx = 0.0
    for i in range(n):
        dx = x[i] - mx
        dy = y[i] - my
        cov += dx * dy
        vx += dx * dx
    if vx == 0:
        return 1.0
    return cov / vx


def calcStatsFromPrices120(btc120: list[float], eth120: list[float]) -> tuple[float, float, float, float, float,
                                                                               bool]:
    if len(btc120) != 120 or len(eth120) != 120:
        return 0.0, 0.0, 0.0, 0.0, 0.0, False
    lbtc = [0.0] * 120
    leth = [0.0] * 120
    for i in range(120):
        if btc120[i] <= 0 or eth120[i] <= 0:
            return 0.0, 0.0, 0.0, 0.0, 0.0, False
        lbtc[i] = math.log(btc120[i])
        leth[i] = math.log(eth120[i])
    beta = olsBeta(leth, lbtc)
    spreads = [0.0] * 120
    for i in range(120):
        spreads[i] = lbtc[i] - beta * leth[i]
    mu, sigma = meanStd(spreads)
    spread = spreads[119]
    z = (spread - mu) / sigma if sigma > 0 else 0.0
    return beta, spread, mu, sigma, z, True


def _aligned(rBTC: Ring, rETH: Ring) -> tuple[list[int], dict[int, float], dict[int, float]]:
    mB: dict[int, float] = {}
    for b in rBTC.Snapshot():
        mB[b.MinuteMs] = b.Mean
    mE: dict[int, float] = {}
    for b in rETH.Snapshot():
        mE[b.MinuteMs] = b.Mean
    common = [ms for ms in mB if ms in mE]
    common.sort()
    return common, mB, mE


def buildAligned120(rBTC: Ring, rETH: Ring, aggBTC: MinuteAgg,
                    aggETH: MinuteAgg) -> tuple[list[float], list[float], str, int, bool]:
    """119 common closed minutes + both partials when they are in the same minute, else the last 120 closed."""
    common, mB, mE = _aligned(rBTC, rETH)
    pbB, okB = aggBTC.Partial()
    pbE, okE = aggETH.Partial()
    if okB and okE and pbB.MinuteMs == pbE.MinuteMs and pbB.Mean > 0 and pbE.Mean > 0:  # type: ignore[union-attr]
        if len(common) < 119:
            return [], [], "", 0, False
        common = common[len(common) - 119:]
        btc120 = [mB[ms] for ms in common] + [pbB.Mean]  # type: ignore[union-attr]
        eth120 = [mE[ms] for ms in common] + [pbE.Mean]  # type: ignore[union-attr]
        return btc120, eth120, "119+partial_aligned", pbB.MinuteMs, True  # type: ignore[union-attr]
    if len(common) < 120:
        return [], [], "", 0, False
    common = common[len(common) - 120:]
    return [mB[ms] for ms in common], [mE[ms] for ms in common], "120closed_aligned", common[-1], True


def buildAligned120Closed(rBTC: Ring, rETH: Ring) -> tuple[list[float], list[float], int, bool]:
    common, mB, mE = _aligned(rBTC, rETH)
    if len(common) < 120:
        return [], [], 0, False
    common = common[len(common) - 120:]
    return [mB[ms] for ms in common], [mE[ms] for ms in common], common[-1], True


Flat, LongSpread, ShortSpread = 0, 1, 2


class SeedState:
    """func main's state and the body of its ``case t := <-ticks`` (paper trading; the seed's logs are not
    written, their stats are still computed), on event time."""

    def __init__(self, symA: str, symB: str, throttle_ms: int = 0, entryZ: float = 2.2, exitZ: float = 0.8,
                 freshMs: int = 300, holdMs: int = 1000) -> None:
        self.symA, self.symB = symA, symB
        self.entryZ, self.exitZ, self.freshMs, self.holdMs = entryZ, exitZ, freshMs, holdMs
        self.calcThrottleMs = throttle_ms
        self.rBTC, self.rETH = Ring(windowBars), Ring(windowBars)
        self.aggBTC, self.aggETH = MinuteAgg(symA), MinuteAgg(symB)
        self.lastBTCms = self.lastETHms = 0
        self.holdLongSince = self.holdShortSince = 0
        self.tradePos = Flat
        self.tradeEntrySpread = 0.0
        self.tradeEntryAtMs = 0
        self.lastCalcAtMs = 0
        self.pendingBTC: dict[int, Bar] = {}
        self.pendingETH: dict[int, Bar] = {}
        self.computed = 0
        self.signals: list[tuple[int, str]] = []

    def warmup(self, btcK: list[list[float]], ethK: list[list[float]]) -> None:
        """Align candles ``[startSec, high, low]`` by start second; push the last 120 common ones."""
        mBTC = {int(k[0]): k for k in btcK}
        mETH = {int(k[0]): k for k in ethK}
        secs = sorted(s for s in mBTC if s in mETH)
        if len(secs) > windowBars:
            secs = secs[len(secs) - windowBars:]
        for s in secs:
            kb, ke = mBTC[s], mETH[s]
            self.rBTC.Push(Bar(s * 1000, kb[1], kb[2], 0.5 * (kb[1] + kb[2]), 1))
            self.rETH.Push(Bar(s * 1000, ke[1], ke[2], 0.5 * (ke[1] + ke[2]), 1))

    def computeIntra(self, nowMs: int) -> Stats | None:
        if self.calcThrottleMs > 0 and nowMs - self.lastCalcAtMs < self.calcThrottleMs:
            return None
        self.lastCalcAtMs = nowMs
        if self.lastBTCms == 0 or self.lastETHms == 0 or abs(self.lastBTCms - self.lastETHms) > self.freshMs:
            return None
        btc120, eth120, mode, minMs, ok = buildAligned120(self.rBTC, self.rETH, self.aggBTC, self.aggETH)
        if not ok:
            return None
        beta, spread, mu, sigma, z, ok = calcStatsFromPrices120(btc120, eth120)
        return Stats(beta, spread, mu, sigma, z, mode, minMs) if ok else None

    def computeClosed(self) -> Stats | None:
        btc120, eth120, minMs, ok = buildAligned120Closed(self.rBTC, self.rETH)
        if not ok:
            return None
        beta, spread, mu, sigma, z, ok = calcStatsFromPrices120(btc120, eth120)
        return Stats(beta, spread, mu, sigma, z, "120closed_aligned", minMs) if ok else None

    def printPnLClosed(self) -> None:
        if self.tradePos != Flat:
            self.computeClosed()  # the seed prints / logs PNL_1M from these stats

    def onTick(self, t: Tick) -> None:
        if t.Symbol == self.symA:
            self.lastBTCms = t.TimeMs
            bar, ok = self.aggBTC.Update(t)
            if ok and bar is not None:
                self.rBTC.Push(bar)
                self.pendingBTC[bar.MinuteMs] = bar
                if bar.MinuteMs in self.pendingETH:
                    del self.pendingBTC[bar.MinuteMs], self.pendingETH[bar.MinuteMs]
                    self.printPnLClosed()
        elif t.Symbol == self.symB:
            self.lastETHms = t.TimeMs
            bar, ok = self.aggETH.Update(t)
            if ok and bar is not None:
                self.rETH.Push(bar)
                self.pendingETH[bar.MinuteMs] = bar
                if bar.MinuteMs in self.pendingBTC:
                    del self.pendingBTC[bar.MinuteMs], self.pendingETH[bar.MinuteMs]
                    self.printPnLClosed()
        nowMs = t.TimeMs
        st = self.computeIntra(nowMs)
        if st is None:
            return
        self.computed += 1
        if self.tradePos == Flat:
            if st.Z >= self.entryZ:
                if self.holdShortSince == 0:
                    self.holdShortSince = nowMs
                self.holdLongSince = 0
                if self.holdMs == 0 or nowMs - self.holdShortSince >= self.holdMs:
                    self._enter(ShortSpread, st, nowMs, "ENTER_SHORT")
            elif st.Z <= -self.entryZ:
                if self.holdLongSince == 0:
                    self.holdLongSince = nowMs
                self.holdShortSince = 0
                if self.holdMs == 0 or nowMs - self.holdLongSince >= self.holdMs:
                    self._enter(LongSpread, st, nowMs, "ENTER_LONG")
            else:
                self.holdShortSince = self.holdLongSince = 0
        elif abs(st.Z) <= self.exitZ:
            self.signals.append((nowMs, "EXIT"))
            self.tradePos = Flat
            self.tradeEntrySpread = 0.0
            self.tradeEntryAtMs = 0
            self.holdShortSince = self.holdLongSince = 0

    def _enter(self, pos: int, st: Stats, nowMs: int, action: str) -> None:
        self.tradePos = pos
        self.tradeEntrySpread = st.Spread
        self.tradeEntryAtMs = nowMs
        self.holdShortSince = self.holdLongSince = 0
        self.signals.append((nowMs, action))


# ====================== the bot ======================


def _dec_str(x: Decimal) -> str:
    s = format(x, "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


class BaselineBot:
    """The one-file bot: warm-up, websocket callback, measurement orders over one keep-alive connection."""

    def __init__(self, rest_url: str, out_path: Path, duration_s: float | None, orders_per_s: float,
                 measure_notional: float, symbols: tuple[str, str], stop_event: threading.Event | None,
                 throttle_ms: int) -> None:
        if len(symbols) != 2:
            raise ValueError("symbols: exactly two (leg A, leg B)")
        if not (math.isfinite(orders_per_s) and orders_per_s <= 1000):
            raise ValueError(f"orders_per_s must be <= 1000, got {orders_per_s}")
        if not (math.isfinite(measure_notional) and measure_notional > 0):
            raise ValueError(f"measure_notional must be > 0, got {measure_notional}")
        u = urlsplit(rest_url.rstrip("/"))
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"rest_url must be http(s)://host[:port][/prefix], got {rest_url!r}")
        self.rest_url = rest_url.rstrip("/")
        self.host, self.port, self.https, self.prefix = u.hostname, u.port, u.scheme == "https", u.path
        self.symA, self.symB = symbols
        self.out_path = Path(out_path)
        self.ticks_path = self.out_path.with_name(self.out_path.stem + ".ticks.jsonl")
        self.deadline = time.monotonic() + duration_s if duration_s is not None else None
        self.stop_event = stop_event
        self.period_ms = max(1, round(2000 / orders_per_s)) if orders_per_s > 0 else 0
        self.notional = measure_notional
        self.seed = SeedState(self.symA, self.symB, throttle_ms)
        self.creds = SIMULATOR
        self.conn: http.client.HTTPConnection | None = None
        self.mid: dict[str, float] = {}
        self.rules: dict[str, tuple[Decimal, Decimal]] = {}
        self.next_at = 0.0
        self.open_qty: tuple[Decimal, Decimal] | None = None
        self.signal = 0
        self.n_orders = self.n_ticks = self.n_errors = 0
        self.cid_prefix = f"B{os.getpid()}-{os.urandom(3).hex()}-"  # unique per run, even two runs per process
        self.orders_f: TextIO | None = None
        self.ticks_f: TextIO | None = None
        self.closed = threading.Event()
        self.ping_interval_s = 18.0

    # -- REST -----------------------------------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self.conn = cls(self.host, self.port, timeout=10)
        return self.conn

    def _request(self, method: str, path: str, body: str | None = None,
                 signed: bool = False) -> tuple[int, int, bytes]:
        """One request on the keep-alive connection (reopened and retried once when the server had closed it);
        returns (t_sent_ns, status, body): t_sent right after the request is written."""
        for attempt in (0, 1):
            conn = self._connection()
            headers: dict[str, str] = {}
            if signed:
                ts = str(int(time.time() * 1000))
                sec = self.creds.secret.encode()
                sign = base64.b64encode(hmac.new(sec, (ts + method + path + (body or "")).encode(),
                                                 hashlib.sha256).digest()).decode()
                phrase = base64.b64encode(hmac.new(sec, self.creds.passphrase.encode(),
                                                   hashlib.sha256).digest()).decode()
                headers = {"KC-API-KEY": self.creds.api_key, "KC-API-SIGN": sign, "KC-API-TIMESTAMP": ts,
                           "KC-API-PASSPHRASE": phrase, "KC-API-KEY-VERSION": "3",
                           "Content-Type": "application/json"}
            try:
                conn.request(method, path, body=body.encode() if body is not None else None, headers=headers)
                t_sent = time.monotonic_ns()
                resp = conn.getresponse()
                data = resp.read()
                return t_sent, resp.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if attempt:
                    raise
            except (http.client.HTTPException, OSError):
                conn.close()
                raise
        raise AssertionError("unreachable")

    def _get_json(self, path: str) -> Any:
        _, status, data = self._request("GET", self.prefix + path)
        obj = json.loads(data)
        if status != 200 or obj.get("code") != OK:
            raise RuntimeError(f"GET {path}: HTTP {status} {data[:200]!r}")
        return obj["data"]

    def fetch_klines(self, symbol: str, start_sec: int, end_sec: int) -> list[list[float]]:
        """func fetchKlines: [startSec, high, low] rows, ascending (a fresh HTTP client per call, as the seed)."""
        url = (f"{self.rest_url}/api/v1/market/candles?symbol={symbol}&type=1min&startAt={start_sec}"
               f"&endAt={end_sec}")
        with urllib.request.urlopen(url, timeout=15) as r:
            obj = json.loads(r.read())
        if obj.get("code") != OK:
            raise RuntimeError(f"candles {symbol}: code={obj.get('code')}")
        out = []
        for row in obj["data"]:
            if len(row) < 5:
                continue
            ts, op, cl, hi, lo = int(row[0]), float(row[1]), float(row[2]), float(row[3]), float(row[4])
            if ts == 0 or op <= 0 or cl <= 0 or hi <= 0 or lo <= 0:
                continue
            out.append([ts, hi, lo])
        out.sort(key=lambda k: k[0])
        return out

    def prepare(self) -> None:
        """Venue clock, lot / tick sizes (this opens the order connection), warm-up candles."""
        now_ms = int(self._get_json("/api/v1/timestamp"))
        listed = {s["symbol"]: s for s in self._get_json("/api/v2/symbols")}
        for sym in (self.symA, self.symB):
            s = listed.get(sym)
            tick, lot = (s["priceIncrement"], s["baseIncrement"]) if s else DEFAULT_LOTS.get(sym, ("0.01", "0.001"))
            self.rules[sym] = (Decimal(tick), Decimal(lot))
        now_sec = now_ms // 1000
        start_sec = now_sec - (windowBars + 30) * 60
        self.seed.warmup(self.fetch_klines(self.symA, start_sec, now_sec),
                         self.fetch_klines(self.symB, start_sec, now_sec))

    # -- orders ---------------------------------------------------------------------------------------------------
    def error(self, msg: str) -> None:
        self.n_errors += 1
        print(f"baseline: {msg}", file=sys.stderr, flush=True)

    def measure(self, ts: int, t_frame: int, t_decision: int) -> None:
        """One measurement signal: ENTER (buy A, sell B) or EXIT (the reverse), leg A then leg B, synchronously."""
        self.next_at = ts + self.period_ms
        sig = self.signal
        self.signal += 1
        mA, mB = self.mid[self.symA], self.mid[self.symB]
        if self.open_qty is None:
            action, side_a = "enter", 1
            qa = self._qty(self.symA, mA)
            qb = self._qty(self.symB, mB)
            self.open_qty = (qa, qb)
        else:
            action, side_a = "exit", -1
            qa, qb = self.open_qty
            self.open_qty = None
        for leg, (sym, side, qty, mid) in enumerate(((self.symA, side_a, qa, mA), (self.symB, -side_a, qb, mB))):
            self.place(sym, side, qty, mid, sig, leg, action, t_frame, t_decision)

    def _qty(self, sym: str, mid: float) -> Decimal:
        lot = self.rules[sym][1]
        return (Decimal(repr(self.notional / mid)) / lot).to_integral_value(ROUND_FLOOR) * lot

    def place(self, sym: str, side: int, qty: Decimal, mid: float, sig: int, leg: int, action: str,
              t_frame: int, t_decision: int) -> None:
        tick = self.rules[sym][0]
        price = (Decimal(repr(mid * (1 + side * BAND))) / tick).to_integral_value(ROUND_HALF_EVEN) * tick
        cid = f"{self.cid_prefix}{self.n_orders}"
        self.n_orders += 1
        body = json.dumps({"clientOid": cid, "side": "buy" if side > 0 else "sell", "symbol": sym, "type": "limit",
                           "price": _dec_str(price), "size": _dec_str(qty), "timeInForce": "IOC"},
                          separators=(",", ":"))
        status, code, order_id = 0, "transport", ""
        try:
            t_sent, status, data = self._request("POST", self.prefix + "/api/v1/hf/orders", body, signed=True)
            t_ack = time.monotonic_ns()
        except (http.client.HTTPException, OSError) as e:
            t_ack = t_sent = time.monotonic_ns()
            self.error(f"order {cid} {sym}: transport error {e!r}")
        else:
            try:
                obj = json.loads(data)
                code = str(obj.get("code"))
                order_id = str((obj.get("data") or {}).get("orderId") or "")
                msg = obj.get("msg", "")
            except (ValueError, AttributeError):
                code, msg = str(status), data[:200].decode(errors="replace")
            if status != 200 or code != OK:
                self.error(f"order {cid} {sym}: HTTP {status} code {code} {msg}".replace("\n", " "))
        assert self.orders_f is not None
        self.orders_f.write(json.dumps({
            "client_id": cid, "symbol": sym, "side": side, "qty": float(qty), "price": float(price), "mid": mid,
            "signal": sig, "leg": leg, "action": action, "t_frame_ns": t_frame, "t_decision_ns": t_decision,
            "t_sent_ns": t_sent, "t_ack_ns": t_ack, "http_status": status, "code": code, "order_id": order_id}) + "\n")

    # -- websocket ------------------------------------------------------------------------------------------------
    def on_message(self, ws: websocket.WebSocketApp, message: str) -> None:
        """The whole bot: frame -> json -> seed bars + window recompute -> (measurement orders)."""
        t_frame = time.monotonic_ns()
        try:
            env = json.loads(message)
            kind = env.get("type")
        except (ValueError, AttributeError):
            self.error(f"malformed frame {message[:120]!r}")
            return
        if kind != "message" or env.get("subject") != "trade.ticker":
            if kind == "error":
                self.error(f"websocket error frame {message[:200]!r}")
            return
        topic = env.get("topic")
        sym = topic[len(TICKER_PREFIX):] if isinstance(topic, str) and topic.startswith(TICKER_PREFIX) else ""
        if sym != self.symA and sym != self.symB:
            return
        try:
            d = env["data"]
            ts = int(d.get("time") or d.get("Time") or 0)
            bid = float(d["bestBid"])
            ask = float(d["bestAsk"])
        except (KeyError, TypeError, ValueError, AttributeError):
            self.error(f"malformed ticker {message[:200]!r}")
            return
        if ts <= 0 or not (bid > 0 and ask > 0) or math.isinf(bid) or math.isinf(ask):
            self.error(f"bad ticker values {message[:200]!r}")
            return
        self.n_ticks += 1
        t = Tick(sym, ts, bid, ask)
        self.mid[sym] = t.Mid()
        self.seed.onTick(t)
        t_decision = time.monotonic_ns()
        if self.period_ms and ts >= self.next_at and len(self.mid) == 2:
            self.measure(ts, t_frame, t_decision)
        assert self.ticks_f is not None  # the measurement's own log, after the orders (not counted against the bot)
        self.ticks_f.write(json.dumps({"symbol": sym, "ts_ms": ts, "bid": bid, "ask": ask, "t_frame_ns": t_frame})
                           + "\n")

    def on_open(self, ws: websocket.WebSocketApp) -> None:
        for sym in (self.symA, self.symB):  # the seed subscribes one topic per symbol
            ws.send(json.dumps({"id": str(time.time_ns()), "type": "subscribe", "topic": TICKER_PREFIX + sym,
                                "response": True}))

    def on_error(self, ws: websocket.WebSocketApp, err: Exception) -> None:
        self.error(f"websocket: {err!r}")

    def on_close(self, ws: websocket.WebSocketApp, code: int | None, msg: str | None) -> None:
        self.closed.set()

    def keeper(self, ws: websocket.WebSocketApp) -> None:
        """The seed's ping goroutine (KuCoin JSON pings every pingInterval) and the stop: at the deadline or when
        stop_event is set it clears ``keep_running``, so the callback thread closes the socket after the frame in
        hand (or within the dispatcher's 1 s select timeout on a silent socket)."""
        next_ping = time.monotonic() + self.ping_interval_s
        while not self.closed.wait(0.05):
            now = time.monotonic()
            if (self.deadline is not None and now >= self.deadline) or \
                    (self.stop_event is not None and self.stop_event.is_set()):
                ws.keep_running = False
                return
            if now >= next_ping:
                next_ping = now + self.ping_interval_s
                try:
                    ws.send(json.dumps({"id": str(time.time_ns()), "type": "ping"}))
                except websocket.WebSocketException:
                    pass

    def run(self) -> dict[str, int]:
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out_path, "w") as self.orders_f, open(self.ticks_path, "w") as self.ticks_f:
            try:
                self.prepare()
                bullet = self._request("POST", self.prefix + "/api/v1/bullet-public", "")
                obj = json.loads(bullet[2])
                if bullet[1] != 200 or obj.get("code") != OK or not obj["data"]["instanceServers"]:
                    raise RuntimeError(f"bullet-public: HTTP {bullet[1]} {bullet[2][:200]!r}")
                server = obj["data"]["instanceServers"][0]
                self.ping_interval_s = (server.get("pingInterval") or 18000) / 1000
                url = f"{server['endpoint']}?token={obj['data']['token']}&connectId=baseline-{time.time_ns()}"
                ws = websocket.WebSocketApp(url, on_open=self.on_open, on_message=self.on_message,
                                            on_error=self.on_error, on_close=self.on_close)
                keeper = threading.Thread(target=self.keeper, args=(ws,), name="baseline-ping", daemon=True)
                keeper.start()
                ws.run_forever(reconnect=0, ping_timeout=1)  # ping_timeout: only the select timeout here
                self.closed.set()
                keeper.join(timeout=5)
            finally:
                if self.conn is not None:
                    self.conn.close()
        return {"orders": self.n_orders, "ticks": self.n_ticks, "errors": self.n_errors, "windows": self.seed.computed}


def run_baseline(rest_url: str, out_path: Path, duration_s: float | None, orders_per_s: float,
                 measure_notional: float, symbols: tuple[str, str] = ("BTC-USDT", "ETH-USDT"),
                 stop_event: threading.Event | None = None, *, throttle_ms: int = 0) -> dict[str, int]:
    """Run the seed-design bot against ``rest_url`` (KuCoin REST base: the simulator's ``http://127.0.0.1:P``)
    until ``duration_s`` wall seconds pass, ``stop_event`` is set or the websocket closes; returns
    ``{orders, ticks, errors, windows}`` (windows: ticks whose recomputed window gave statistics). Orders go to
    ``out_path``, tickers to ``<stem>.ticks.jsonl`` beside it."""
    bot = BaselineBot(rest_url, Path(out_path), duration_s, orders_per_s, measure_notional, tuple(symbols),
                      stop_event, throttle_ms)  # type: ignore[arg-type]
    return bot.run()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rest-url", required=True, help="KuCoin REST base, e.g. http://127.0.0.1:PORT")
    ap.add_argument("--out", required=True, type=Path, help="orders JSONL (ticks go to <stem>.ticks.jsonl)")
    ap.add_argument("--duration", type=float, default=None, help="wall seconds (default: until the socket closes)")
    ap.add_argument("--orders-per-s", type=float, default=1.0, help="measurement orders per second of event time")
    ap.add_argument("--measure-notional", type=float, default=20.0, help="quote notional per measurement leg")
    ap.add_argument("--symbols", default="BTC-USDT,ETH-USDT", help="leg A,leg B")
    ap.add_argument("--throttle-ms", type=int, default=0, help="the seed's compute throttle (0: every tick)")
    a = ap.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    syms = tuple(s.strip() for s in a.symbols.split(",") if s.strip())
    try:
        summary = run_baseline(a.rest_url, a.out, a.duration, a.orders_per_s, a.measure_notional,
                               syms, stop, throttle_ms=a.throttle_ms)  # type: ignore[arg-type]
    except (ValueError, RuntimeError, OSError, http.client.HTTPException) as e:
        print(f"baseline: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
