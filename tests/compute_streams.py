"""Tick streams for the compute parity tests (issue 4), written as recordings in our own format
(``feeds/recording.py``) so that ``pipeline up --replay FILE`` runs them through the live parsers.

* ``sim_recording``: the exchange simulator's seeded cointegrated BTC-USDT / ETH-USDT pair
  (``feeds.simulator.market.Generator``) driven offline, as fast as Python goes: the simulator's own KuCoin venue
  module (``feeds.simulator.kucoin.KucoinVenue``) turns its book events into ``trade.ticker`` frames (its
  100 ms ticker throttle and timers included) and a capturing registry collects them instead of sending them on
  websockets. Event order is the simulator's pacing loop's (events and timers in simulated-time order). Receive
  time = event time + 3 ms. One leg's frames can be left out for a whole minute (``gap_minute``): a leg that stops
  ticking, which the seed's 120-bar rings turn into LOG_5M_SKIP.
* ``binance_warmup_recording``: a synthetic Binance USD-M ``bookTicker`` prelude for the real recordings in
  shared/data/recorded/binance_2024-08-08: ``minutes`` of a cointegrated pair (ln ETH a random walk, ln BTC =
  c + beta ln ETH + an OU spread) whose last tick of each leg is exactly the recording's first bid/ask, at about
  one tick a second per leg, with update ids below the recording's and receive times before its first frame.
* ``replay_ticks``: the BBO records a recording gives through the live parsers (what ``pipeline replay --dump``
  writes), as the port's input ``(symbol, ts_ms, bid, ask)`` in the replay ring's order.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path
from types import MethodType, SimpleNamespace

from feeds.emit import ListEmitter
from feeds.recording import Recorder, read_frames
from feeds.replay import Replayer, key
from feeds.simulator.clock import Timers
from feeds.simulator.engine import Engine, Options
from feeds.simulator.faults import Faults
from feeds.simulator.kucoin import KucoinVenue
from feeds.simulator.market import Generator, Market, ModelParams, instrument_for
from feeds.simulator.registry import Registry

SIM_START_MS = 1_723_075_200_000 + 123_456
"""2024-08-08T00:02:03.456Z: the simulated stream's start (mid-minute, mid 5-minute bucket)."""
SIM_PARAMS = ModelParams(rate_hz=2.0, history_minutes=10)
"""Book events per simulated second per symbol: about 1.5 tickers a second per leg."""
RECV_LAG_NS = 3_000_000


class _Conn:
    """The pretend subscriber (what ``Registry.send`` looks at)."""

    def __init__(self) -> None:
        self.held: list[bytes] = []
        self.venue = "kucoin"


class _CaptureRegistry(Registry):
    """A registry with one pretend subscriber to every key: frames are collected, not sent."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[tuple[str, bytes]] = []
        self._one = {_Conn()}

    def subscribers(self, key):  # type: ignore[no-untyped-def]
        return self._one

    def send(self, conn, data: bytes) -> None:  # type: ignore[no-untyped-def]
        self.frames.append((conn.venue, data))


def sim_frames(seed: int, hours: float, start_ms: int = SIM_START_MS,
               params: ModelParams = SIM_PARAMS) -> list[tuple[int, bytes]]:
    """(simulated time in us, KuCoin trade.ticker frame) of the simulator's seeded BTC-USDT / ETH-USDT pair."""
    market = Market([instrument_for("BTC-USDT"), instrument_for("ETH-USDT")])
    gen = Generator(market, seed, start_ms * 1000, replace(params))
    reg = _CaptureRegistry()
    engine = SimpleNamespace(market=market, registry=reg, faults=Faults(reg, market.find), timers=Timers(),
                             opts=Options(seed=seed, start_ms=start_ms, rate_hz=params.rate_hz))
    engine.venue_ms = MethodType(Engine.venue_ms, engine)  # event times as the venue stamps them (no clock_skew)
    venue = KucoinVenue(engine)  # type: ignore[arg-type]
    # only tickers: level2 and match frames are not needed (KucoinVenue publishes what has subscribers)
    reg.subscribers = lambda key: reg._one if key[1].startswith("/market/ticker:") else set()  # type: ignore
    end_us = start_ms * 1000 + int(hours * 3600e6)
    out: list[tuple[int, bytes]] = []
    timers = engine.timers
    while True:  # Engine.run without the pacing: events and timers in simulated-time order
        te, tt = gen.next_time(), timers.next_time()
        t = min(x for x in (te, tt) if x is not None)
        if t >= end_us:
            break
        n = len(reg.frames)
        if tt is not None and tt <= te:
            timers.run_next()
        else:
            venue.on_event(gen.step())
        out.extend((t, f) for _, f in reg.frames[n:])
        reg.frames.clear()
    return out


def sim_recording(path_prefix: Path, seed: int = 7, hours: float = 5.0, gap_minute: int | None = 150,
                  gap_symbol: str = "ETH-USDT", params: ModelParams = SIM_PARAMS) -> Path:
    """Write the simulator's stream as a KuCoin recording; ``gap_minute``: minutes after the start whose whole
    minute (floor) of ``gap_symbol`` frames is left out. Returns the file."""
    frames = sim_frames(seed, hours, params=params)
    gap = None
    if gap_minute is not None:
        m0 = (SIM_START_MS // 60000 + gap_minute) * 60000
        gap = (m0, m0 + 60000, f"/market/ticker:{gap_symbol}".encode())
    rec = Recorder(path_prefix, "kucoin", rotate_daily=False)
    t0 = frames[0][0] * 1000 + RECV_LAG_NS
    rec.connect(t0 - 1_000_000, "wss://ws-api-spot.kucoin.com/?token=sim&connectId=parity")
    for t_us, data in frames:
        if gap is not None and gap[0] <= t_us // 1000 < gap[1] and gap[2] in data:
            continue
        rec.ws(t_us * 1000 + RECV_LAG_NS, data)
    rec.close()
    return rec.files[0]


def _first_bbo(path: Path) -> tuple[str, int, int, str, str, int]:
    """(stream, event ms, receive ns, bid, ask, update id) of a Binance recording's first bookTicker frame."""
    import orjson

    for fr in read_frames(path):
        if b"@bookTicker" in fr.data:
            m = orjson.loads(fr.data)
            d = m["data"]
            return m["stream"], int(d["E"]), fr.t_ns, d["b"], d["a"], int(d["u"])
    raise ValueError(f"{path}: no bookTicker frame")


def binance_warmup_recording(path_prefix: Path, recordings: list[Path], minutes: int = 132, seed: int = 10,
                             beta: float = 1.05, spread_sd_bps: float = 6.0, half_life_s: float = 600.0,
                             vol_bps: float = 0.6, tail_bps: float = 14.0) -> Path:
    """Write a synthetic USD-M bookTicker prelude of ``minutes`` that ends at each recording's first bid/ask
    (two recordings: leg A = the first, ln A = c + beta ln B + s). Returns the file."""
    firsts = [_first_bbo(p) for p in recordings]
    t_end = min(f[1] for f in firsts) - 1500  # the last synthetic tick: 1.5 s before the first real one
    t_recv_first = min(f[2] for f in firsts)
    rng = random.Random(seed)
    n = minutes * 60
    # latent paths on a 1 s grid, built backwards from the end so that they end at the recordings' first mids
    mid_end = [0.5 * (float(f[3]) + float(f[4])) for f in firsts]
    x = [0.0] * (n + 1)  # ln B relative to its end
    s = [0.0] * (n + 1)  # spread relative to its end
    phi = math.exp(-math.log(2.0) / half_life_s)
    sd = spread_sd_bps * 1e-4 * math.sqrt(1.0 - phi * phi)
    for k in range(n - 1, -1, -1):
        x[k] = x[k + 1] + vol_bps * 1e-4 * rng.gauss(0.0, 1.0)
    acc = 0.0
    for k in range(n + 1):
        acc = phi * acc + sd * rng.gauss(0.0, 1.0)
        s[k] = acc
    ramp = 900  # the last 15 minutes climb by tail_bps: the real data starts with z far from 0
    for k in range(n - ramp, n + 1):
        s[k] += tail_bps * 1e-4 * (k - (n - ramp)) / ramp
    s = [v - s[n] for v in s]  # the spread ends at 0: leg A ends at its first real mid
    ticks_ = [0.1, 0.01]
    decimals = [1, 2]
    rec = Recorder(path_prefix, "binance-usdm", rotate_daily=False)
    t_start = t_end - n * 1000
    rec.connect((t_start - 5000) * 1_000_000 - 2_000_000_000, "wss://fstream.binance.com/stream?streams="
                + "/".join(f[0] for f in firsts))
    uid = [f[5] - 10 * n for f in firsts]
    for k in range(n + 1):
        t_a = t_start + k * 1000 + rng.randrange(0, 400)
        t_b = t_a + rng.randrange(0, 250)
        if k == n:
            t_a = t_b = t_end
        lb = math.log(mid_end[1]) + x[k]
        la = math.log(mid_end[0]) + beta * x[k] + s[k]
        for leg, t, lm in ((0, t_a, la), (1, t_b, lb)):
            if k < n and rng.random() < 0.15:  # a leg sometimes misses a second: freshness varies
                continue
            tick = ticks_[leg]
            if k == n:
                bid, ask = firsts[leg][3], firsts[leg][4]
            else:
                w = 1 if rng.random() < 0.8 else 2
                b = math.floor(math.exp(lm) / tick - w / 2)
                bid, ask = f"{b * tick:.{decimals[leg]}f}", f"{(b + w) * tick:.{decimals[leg]}f}"
            uid[leg] += rng.randrange(1, 9)
            sym = firsts[leg][0].split("@")[0].upper()
            frame = (f'{{"stream":"{firsts[leg][0]}","data":{{"e":"bookTicker","u":{uid[leg]},"s":"{sym}",'
                     f'"b":"{bid}","B":"1.000","a":"{ask}","A":"1.000","T":{t},"E":{t}}}}}')
            rec.ws(min(t * 1_000_000 - 2_000_000_000, t_recv_first - 1000), frame.encode())
    rec.close()
    return rec.files[0]


def replay_ticks(files: list[Path]) -> list[tuple[str, int, float, float]]:
    """(instrument symbol in BTC-USDT form, ts_event_ms, bid, ask) of every BBO record the recordings give through
    the live parsers, in the replay's order."""
    emit = ListEmitter()
    rp = Replayer([str(f) for f in files], emit, None, books=False)
    out: list[tuple[str, int, float, float]] = []
    names = {key(s): s for s in ("BTC-USDT", "ETH-USDT")}
    while True:
        n = rp.run(4096)
        for r in emit.records:
            if r[0] == "bbo":
                sym = names.get(key(rp.names[r[3]].split(":", 1)[1]), rp.names[r[3]])
                out.append((sym, int(r[4]), float(r[7]), float(r[9])))
        emit.records.clear()
        if rp.done:
            return out
        assert n != 0
