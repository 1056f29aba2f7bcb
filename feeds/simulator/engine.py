"""The simulator's core without HTTP: options, market + event source, clock, timers, registry, faults, and the
pacing loop that releases events and timers in simulated-time order when the wall clock reaches them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from .clock import SimClock, Timers
from .faults import Faults
from .market import EventSource, Generator, Market, MarketEvent, ModelParams, instrument_for
from .registry import Registry

DEFAULT_SYMBOLS = ["BTC-USDT", "ETH-USDT"]


@dataclass
class Options:
    """Command-line settings (see ``server.parse_args``)."""

    port: int = 0
    host: str = "127.0.0.1"
    seed: int = 7
    speed: float = 1.0
    start_ms: int | None = None
    symbols: list[str] | None = None
    """Generator default: BTC-USDT, ETH-USDT; replay default: every symbol recorded."""
    rate_hz: float = 30.0
    """Book events per simulated second per symbol."""
    ping_interval_ms: int = 18000
    """KuCoin: pingInterval announced by bullet-public."""
    ping_timeout_ms: int = 10000
    """KuCoin: pingTimeout; a client silent for pingInterval + pingTimeout is dropped."""
    kucoin_ticker_ms: int = 100
    """KuCoin: minimum simulated time between two tickers of a symbol."""
    binance_ping_ms: int = 20000
    binance_pong_timeout_ms: int = 60000
    usdm_ping_ms: int = 180000
    usdm_pong_timeout_ms: int = 600000
    replay: list[str] = field(default_factory=list)
    api_key: str = "lowlat-sim-key"
    api_secret: str = "lowlat-sim-secret"
    api_passphrase: str = "lowlat-sim-pass"
    """Order entry credentials (public test values, like the venues' documented example keys)."""
    balances: str = "USDT=1000000,BTC=10,ETH=100"
    """Initial balances of the KuCoin and Binance spot accounts; USD-M wallet = the USDT figure."""
    order_latency_ms: int = 0
    """Wall-clock delay before every order placement / cancel is matched and answered."""
    hold: bool = False
    """Simulated time stands still at the start until ``release`` (``POST /_sim/go``)."""


class Listener(Protocol):
    def on_event(self, ev: MarketEvent) -> None: ...


class Engine:
    """Everything the venue modules share."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.replay_done = False
        self.events = 0
        self.source: EventSource
        if opts.replay:
            from .replay import Replay

            self.source = Replay(opts.replay, opts.symbols, opts.start_ms)
            start_us = self.source.start_us
        else:
            start_ms = opts.start_ms if opts.start_ms is not None else int(time.time() * 1000)
            start_us = start_ms * 1000
            market = Market([instrument_for(s) for s in opts.symbols or DEFAULT_SYMBOLS])
            self.source = Generator(market, opts.seed, start_us, ModelParams(rate_hz=opts.rate_hz))
        self.market: Market = self.source.market
        self.clock = SimClock(start_us, opts.speed)
        self.timers = Timers()
        self.registry = Registry()
        self.faults = Faults(self.registry, self.market.find)
        self.listeners: list[Listener] = []
        self.last_event_us = start_us
        self.clock.frozen = opts.hold
        self._go: asyncio.Event | None = None

    def release(self) -> None:
        """Start simulated time (``--hold``); a no-op once it runs."""
        if self.clock.frozen:
            self.clock.frozen = False
            self.clock.wall0 = time.monotonic()
            if self._go is not None:
                self._go.set()

    async def run(self) -> None:
        """Release events and timers at their wall-clock times, forever (cancel to stop)."""
        clock, timers, src = self.clock, self.timers, self.source
        if clock.frozen:
            self._go = asyncio.Event()
            await self._go.wait()
        else:
            clock.wall0 = time.monotonic()
        burst = 0
        while True:
            te, tt = src.next_time(), timers.next_time()
            if te is None and tt is None:
                self.replay_done = True
                await asyncio.Event().wait()
            t = min(x for x in (te, tt) if x is not None)
            delay = clock.wall_at(t) - time.monotonic()
            if delay > 0.0005:
                burst = 0
                await asyncio.sleep(delay)
            else:
                burst += 1
                if burst >= 256:
                    burst = 0
                    await asyncio.sleep(0)
            if tt is not None and (te is None or tt <= te):
                timers.run_next()
                continue
            ev = src.step()
            self.events += 1
            self.last_event_us = ev.t_us
            for listener in self.listeners:
                listener.on_event(ev)

    def now_ms(self) -> int:
        """Simulated now, never before the last event."""
        return max(self.clock.now_us(), self.last_event_us) // 1000

    def venue_ms(self, venue: str, t_ms: int | None = None) -> int:
        """A venue's clock in ms: simulated now (or the simulated time ``t_ms``) plus its ``clock_skew`` fault."""
        return (self.now_ms() if t_ms is None else t_ms) + self.faults.skew_ms[venue]

    def stats(self) -> dict[str, Any]:
        return {
            "venues": self.registry.stats,
            "faults_applied": dict(self.faults.applied),
            "faults_hit": dict(self.faults.hit),
            "clock_skew_ms": {v: ms for v, ms in self.faults.skew_ms.items() if ms},
            "events": self.events,
            "sim_time_ms": self.now_ms(),
            "last_event_ms": self.last_event_us // 1000,
            "mode": "replay" if self.opts.replay else "generator",
            "replay_done": self.replay_done,
            "held": self.clock.frozen,
            "seed": self.opts.seed,
            "speed": self.opts.speed,
            "symbols": [ins.symbol for ins in self.market.instruments],
        }
