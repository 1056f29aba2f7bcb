"""``bench feeds``: raw frame bytes -> published record, lowlat's parsers against cryptofeed's own handlers.

Input: the recorded real traffic in ``shared/data/recorded`` (nothing reaches the network). Three streams:

- ``kucoin_ticker``: the ``trade.ticker`` frames of ``KUCOIN.ws.1.0`` (KuCoin spot, 9 symbols).
- ``binance_bookticker``: the ``bookTicker`` frames of ``BINANCE_FUTURES.ws.1.0`` (USD-M futures, 4 symbols).
- ``binance_depth``: the ``depthUpdate`` frames (``depth@100ms``, U/u/pu) of ``BINANCE_FUTURES.ws.1.0``, after the
  ``/fapi/v1/depth?limit=1000`` snapshots of ``BINANCE_FUTURES.http.0.0`` (one per symbol, recorded during the same
  run, so both order books synchronize for real and every later diff is applied; the stream has no gap).

Each (implementation, stream) replays its frames in passes until it has timed ``frames`` of them; every pass starts
from fresh parser state (a new lowlat parser; cryptofeed's own ``_reset()``), so a second pass is never mistaken for
stale or out-of-order data. Book snapshots are applied before a pass, outside the timed loop, for both sides.

- lowlat: ``parser.on_frame(raw_bytes, t_mono_ns, t_wall_ns)`` of ``feeds.kucoin_messages.KucoinParser`` /
  ``feeds.binance_messages.BinanceParser(market="usdm")`` writing through a ``feeds.emit.RingEmitter`` into real
  shared-memory rings (BBO, TRADE, BOOK; drained between passes). Depth uses ``books=True, depth=10`` and
  ``on_snapshot(symbol, body, ...)`` with the recorded REST body.
- cryptofeed: ``await feed.message_handler(raw_bytes.decode(), None, recv_time)`` of a ``cryptofeed.exchanges.KuCoin``
  / ``BinanceFutures`` feed built with ``symbols``, ``channels`` and an appending async callback per channel, driven
  in an asyncio event loop. That is the call cryptofeed's ``ConnectionHandler._handler`` makes for each websocket
  message (the decode stands for the one the websockets library does before handing cryptofeed a ``str``); it runs
  cryptofeed's JSON parse (``yapic.json`` with ``Decimal`` floats), its dispatch, ``_ticker`` / ``_book`` (sequence
  check, ``Decimal`` levels into its ``OrderBook``), ``book_callback`` and our callback. Not timed: the event
  loop's own scheduling and the websockets reader in front of the handler (cryptofeed pays those live, so its
  figures here are a lower bound on its real cost). Its book keeps every level (``max_depth=0``, the default) and
  our callback only appends the book object, where lowlat copies the top 10 levels into a BOOK record.

What was replaced in cryptofeed (network only; parsing and book updates are cryptofeed's own code):

- construction: ``Exchange.http_sync`` (the feed class attribute used by ``symbol_mapping()`` for the symbol list
  and by ``KuCoin.__init__`` for ``bullet-public``) is patched, for the duration of the constructor only, with a
  stub returning a symbol list in the exchange's REST format built from the recorded symbols (cryptofeed's own
  ``_parse_symbol_data`` turns it into its symbol table) and a dummy websocket token;
- book snapshots: the feed's ``http_conn`` (``HTTPAsyncConn``, whose ``read(url)`` fetches the REST snapshot) is
  replaced by an object whose ``read(url)`` returns the body recorded for exactly that URL; cryptofeed's
  ``BinanceFutures._snapshot`` then parses it and builds its book.

Timing: ``time.perf_counter_ns()`` around each call, one call per frame; ``frames_per_s`` = frames / the summed
duration of the timed loops (timer and loop overhead included, pass set-up excluded). The process is pinned to one
CPU; each runner is warmed up with ``WARMUP_PASSES`` untimed passes (numba compilation or cache load, caches); the
garbage collector is frozen and disabled inside timed loops and run between passes, for both sides alike (as in
``bench ring``). ``rounds`` interleave the runners so a burst of host load lands on all of them alike; each row
also reports the CPU time the thread got during its timed loops (``on_cpu_pct``, getrusage) and its involuntary
context switches (``preempted``), which show when other tenants of the host took the CPU.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import numpy as np

from bench.host import cpu_times, host_info, loadavg

STREAMS: tuple[str, ...] = ("kucoin_ticker", "binance_bookticker", "binance_depth")
IMPLS: tuple[str, ...] = ("lowlat", "cryptofeed")
TICKER_STREAMS: tuple[str, ...] = ("kucoin_ticker", "binance_bookticker")

DEFAULT_FRAMES = 100_000
"""Timed frames per (implementation, stream)."""
DEFAULT_ROUNDS = 10
WARMUP_PASSES = 2
RATIO_BAR = 5.0
"""The project's bar: lowlat frames/s >= 5x cryptofeed's on every stream."""
TICKER_P99_BAR_US = 20.0
"""The project's bar: lowlat p99 < 20 µs per ticker frame."""
DEPTH = 10
SEGMENT_PREFIX = "lowlat-bench-feeds."
DEFAULT_DATA = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "data" / "recorded",
                                  Path("/work/shared/data/recorded")) if p.is_dir()),
                    Path(__file__).resolve().parents[2] / "shared" / "data" / "recorded")

Frame = tuple[bytes, int, float]
"""(raw frame bytes, recorded receive time in ns, the same in s)."""


class BenchError(RuntimeError):
    """The benchmark could not run (missing data, a runner failed)."""


# ----------------------------------------------------------------------------------------------------------------
# recorded data
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class StreamData:
    """The frames of one stream and what is needed to replay them."""

    name: str
    source: str
    venue: str
    """``kucoin`` or ``binance`` (USD-M)."""
    books: bool
    frames: list[Frame]
    symbols: list[str]
    """Exchange symbols, in order of first appearance."""
    snapshots: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """Exchange symbol -> (REST URL, recorded body), for book streams."""


def _ws_frames(path: Path) -> Iterator[tuple[float, bytes]]:
    """Received frames ``T: MESSAGE`` of a cryptofeed websocket recording (connection and sent lines skipped)."""
    with path.open("rb") as f:
        for line in f:
            head, sep, body = line.partition(b": ")
            if not sep or not head[:1].isdigit():
                continue
            yield float(head), body.rstrip(b"\r\n")


def _http_bodies(path: Path) -> Iterator[tuple[str, bytes]]:
    """REST responses ``URL -> T: BODY`` of a cryptofeed http recording."""
    with path.open("rb") as f:
        for line in f:
            url, sep, rest = line.partition(b" -> ")
            if not sep:
                continue
            _, sep, body = rest.partition(b": ")
            if sep:
                yield url.decode(), body.rstrip(b"\r\n")


def _frame(t: float, raw: bytes) -> Frame:
    return raw, round(t * 1e9), t


def load(data_dir: Path) -> dict[str, StreamData]:
    """Read the three streams from the recorded files in ``data_dir``."""
    kucoin, futures, futures_http = (data_dir / n for n in ("KUCOIN.ws.1.0", "BINANCE_FUTURES.ws.1.0",
                                                             "BINANCE_FUTURES.http.0.0"))
    for p in (kucoin, futures, futures_http):
        if not p.is_file():
            raise BenchError(f"recorded file {p} not found (see --data)")
    dec = msgspec.json.Decoder()
    out = {
        "kucoin_ticker": StreamData("kucoin_ticker", f"{kucoin.name}: trade.ticker", "kucoin", False, [], []),
        "binance_bookticker": StreamData("binance_bookticker", f"{futures.name}: bookTicker (USD-M)", "binance",
                                         False, [], []),
        "binance_depth": StreamData("binance_depth", f"{futures.name}: depthUpdate depth@100ms (USD-M), snapshots "
                                    f"{futures_http.name}", "binance", True, [], []),
    }
    for t, raw in _ws_frames(kucoin):
        msg = dec.decode(raw)
        if msg.get("subject") == "trade.ticker":
            out["kucoin_ticker"].frames.append(_frame(t, raw))
            sym = msg["topic"].split(":", 1)[1]
            if sym not in out["kucoin_ticker"].symbols:
                out["kucoin_ticker"].symbols.append(sym)
    kinds = {"bookTicker": out["binance_bookticker"], "depthUpdate": out["binance_depth"]}
    for t, raw in _ws_frames(futures):
        data = dec.decode(raw).get("data") or {}
        sd = kinds.get(data.get("e"))
        if sd is not None:
            sd.frames.append(_frame(t, raw))
            if data["s"] not in sd.symbols:
                sd.symbols.append(data["s"])
    depth = out["binance_depth"]
    for url, body in _http_bodies(futures_http):
        sym = parse_qs(urlsplit(url).query).get("symbol", [""])[0]
        if sym in depth.symbols and sym not in depth.snapshots:
            depth.snapshots[sym] = (url, body)
    for sd in out.values():
        if not sd.frames:
            raise BenchError(f"no {sd.name} frames in {sd.source}")
    if missing := [s for s in depth.symbols if s not in depth.snapshots]:
        raise BenchError(f"no recorded depth snapshot for {', '.join(missing)} in {futures_http}")
    return out


# ----------------------------------------------------------------------------------------------------------------
# runners: one per (implementation, stream)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Measured:
    """What timed loops measured, summed over passes."""

    elapsed_ns: int = 0
    """Summed duration of the timed loops."""
    lat: list[int] = field(default_factory=list)
    """ns per frame."""
    records: int = 0
    """Records out (ring records published, or callbacks invoked)."""
    cpu_s: float = 0.0
    """CPU time this thread got during the timed loops (getrusage): below the loop time when others ran."""
    preempted: int = 0
    """Involuntary context switches during the timed loops."""

    def add(self, elapsed_ns: int, lat: list[int], records: int, cpu_s: float, preempted: int) -> None:
        """Pool one more pass (or round)."""
        self.elapsed_ns += elapsed_ns
        self.lat += lat
        self.records += records
        self.cpu_s += cpu_s
        self.preempted += preempted


class Runner:
    """Replays one stream through one implementation."""

    impl = ""

    def __init__(self, sd: StreamData) -> None:
        self.sd = sd

    def prepare(self) -> None:
        """Fresh parser state before a pass (and book snapshots); not timed."""

    def timed(self, frames: list[Frame], lat: list[int]) -> tuple[int, int]:
        """Run ``frames`` with a timer around each call into ``lat``; returns (loop ns, records out)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the runner holds."""

    def measure(self, n: int) -> Measured:
        """Time ``n`` frames in passes over the stream."""
        m = Measured()
        while len(m.lat) < n:
            self.prepare()
            frames = self.sd.frames[: n - len(m.lat)]
            part = [0] * len(frames)
            gc.collect()
            gc.disable()
            try:
                ru0 = resource.getrusage(resource.RUSAGE_THREAD)
                ns, recs = self.timed(frames, part)
                ru1 = resource.getrusage(resource.RUSAGE_THREAD)
            finally:
                gc.enable()
            m.add(ns, part, recs, ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime,
                  ru1.ru_nivcsw - ru0.ru_nivcsw)
        return m


class LowlatRunner(Runner):
    """``on_frame`` of lowlat's parser, publishing through a ``RingEmitter`` into shared-memory rings."""

    impl = "lowlat"

    def __init__(self, sd: StreamData) -> None:
        super().__init__(sd)
        from feeds.emit import RingEmitter
        from pipeline.records import BBO, BOOK, TRADE
        from pipeline.ring import Ring

        if sd.venue == "kucoin":
            from feeds.kucoin_messages import KucoinParser

            self._make = lambda: KucoinParser(self.inst, self.emitter, books=sd.books, depth=DEPTH)
        else:
            from feeds.binance_messages import BinanceParser

            self._make = lambda: BinanceParser(self.inst, self.emitter, market="usdm", books=sd.books, depth=DEPTH)
        self.inst = {s: i for i, s in enumerate(sd.symbols)}
        cap = 1 << max(10, math.ceil(math.log2(2 * len(sd.frames) + 4 * len(sd.symbols) + 16)))
        self.names: list[str] = []
        self.rings: dict[str, Any] = {}
        try:
            for kind, dtype in (("bbo", BBO), ("trade", TRADE), ("book", BOOK)):
                name = f"{SEGMENT_PREFIX}{os.getpid()}.{sd.name}.{kind}"
                self.names.append(name)
                self.rings[kind] = Ring.create(name, dtype, cap, replace=True)
        except Exception:
            self.close()
            raise
        try:
            self.emitter = RingEmitter(self.rings, stop=self._ring_full)
            self.parser = self._make()
        except BaseException:
            self.close()
            raise

    def _ring_full(self) -> bool:
        raise BenchError(f"{self.sd.name}: a ring filled up during a pass (rings are sized to hold one)")

    def _drain(self) -> int:
        n = 0
        for ring in self.rings.values():
            fill = ring.fill
            if fill:
                ring.skip(fill)
            n += fill
        return n

    def prepare(self) -> None:
        self.parser = self._make()
        for sym, (_url, body) in self.sd.snapshots.items():
            self.parser.on_snapshot(sym, body, time.perf_counter_ns(), self.sd.frames[0][1])
        self._drain()

    def timed(self, frames: list[Frame], lat: list[int]) -> tuple[int, int]:
        on_frame = self.parser.on_frame
        pc = time.perf_counter_ns
        i = 0
        start = pc()
        for raw, wall_ns, _ in frames:
            t0 = pc()
            on_frame(raw, t0, wall_ns)
            lat[i] = pc() - t0
            i += 1
        elapsed = pc() - start
        return elapsed, self._drain()

    def counts(self) -> dict[str, int]:
        """The emitter's refusal counters (parse errors, bad values, gaps, resyncs)."""
        c = self.emitter.counts
        return {"parse_err": c.parse_err, "bad_value": c.bad_value, "gaps": c.gaps, "resyncs": c.resyncs}

    def close(self) -> None:
        from pipeline.ring import Ring

        for ring in self.rings.values():
            ring.close()
        for name in self.names:
            Ring.unlink(name)


class _OfflineHTTPSync:
    """Stands in for ``Exchange.http_sync`` while a feed is constructed: the symbol list and KuCoin's token."""

    def __init__(self, symbols_payload: dict[str, Any]) -> None:
        self.symbols_payload = symbols_payload
        self.urls: list[str] = []

    def read(self, address: str, params: Any = None, headers: Any = None, json: bool = False, text: bool = True,
             uuid: str | None = None) -> Any:
        self.urls.append(address)
        return self.symbols_payload

    def write(self, address: str, data: Any = None, json: bool = False, text: bool = True, uuid: str | None = None,
              is_data_json: bool = False) -> Any:
        self.urls.append(address)
        return {"data": {"token": "TOKEN", "instanceServers": [{"endpoint": "wss://offline.invalid/endpoint",
                                                                "pingInterval": 18000}]}}


class _RecordedREST:
    """Stands in for a feed's ``http_conn``: ``read(url)`` returns the body recorded for exactly that URL."""

    def __init__(self, bodies: dict[str, str]) -> None:
        self.bodies = bodies

    async def read(self, address: str, header: Any = None, params: Any = None, return_headers: bool = False,
                   retry_count: int = 0, retry_delay: int = 60) -> str:
        try:
            return self.bodies[address]
        except KeyError:
            raise BenchError(f"cryptofeed asked for {address}, which was not recorded") from None

    async def close(self) -> None:
        pass


def _split_binance(sym: str) -> tuple[str, str]:
    for quote in ("USDT", "BUSD", "USDC"):
        if sym.endswith(quote):
            return sym[: -len(quote)], quote
    raise BenchError(f"cannot split Binance symbol {sym}")


class CryptofeedRunner(Runner):
    """``await feed.message_handler(frame.decode(), None, recv_time)`` of cryptofeed's own feed class."""

    impl = "cryptofeed"

    def __init__(self, sd: StreamData) -> None:
        super().__init__(sd)
        from unittest import mock

        from cryptofeed.defines import L2_BOOK, TICKER

        self.out: list[Any] = []

        async def sink(obj: Any, receipt_timestamp: float) -> None:
            self.out.append(obj)

        channel = L2_BOOK if sd.books else TICKER
        if sd.venue == "kucoin":
            from cryptofeed.exchanges import KuCoin as cls

            pairs = [s.split("-", 1) for s in sd.symbols]
            payload: dict[str, Any] = {"data": [
                {"symbol": s, "baseCurrency": b, "quoteCurrency": q, "enableTrading": True, "priceIncrement": "1e-8"}
                for s, (b, q) in zip(sd.symbols, pairs, strict=True)]}
        else:
            from cryptofeed.exchanges import BinanceFutures as cls

            pairs = [list(_split_binance(s)) for s in sd.symbols]
            payload = {"symbols": [
                {"symbol": s, "baseAsset": b, "quoteAsset": q, "contractType": "PERPETUAL", "status": "TRADING",
                 "filters": [{"tickSize": "0.0001"}]} for s, (b, q) in zip(sd.symbols, pairs, strict=True)]}
        stub = _OfflineHTTPSync(payload)
        with mock.patch.object(cls, "http_sync", stub):
            std, _ = cls._parse_symbol_data(payload)  # cryptofeed's own symbol table from the stub's list
            by_exchange = {v: k for k, v in std.items()}
            self.feed = cls(symbols=[by_exchange[s] for s in sd.symbols], channels=[channel],
                            callbacks={channel: sink})
        self.construction_urls = stub.urls
        self.feed.http_conn = _RecordedREST({url: body.decode() for url, body in sd.snapshots.values()})
        self.loop = asyncio.new_event_loop()

    async def _resync(self) -> None:
        self.feed._reset()  # what cryptofeed's subscribe() does on (re)connect
        for sym in self.sd.snapshots:
            await self.feed._snapshot(sym)  # cryptofeed's own snapshot parse and book build (recorded body)

    def prepare(self) -> None:
        if self.sd.books:
            self.loop.run_until_complete(self._resync())
        self.out.clear()

    async def _timed(self, frames: list[Frame], lat: list[int]) -> int:
        handler = self.feed.message_handler
        pc = time.perf_counter_ns
        i = 0
        start = pc()
        for raw, _, ts in frames:
            t0 = pc()
            await handler(raw.decode(), None, ts)
            lat[i] = pc() - t0
            i += 1
        return pc() - start

    def timed(self, frames: list[Frame], lat: list[int]) -> tuple[int, int]:
        elapsed = self.loop.run_until_complete(self._timed(frames, lat))
        n = len(self.out)
        self.out.clear()
        return elapsed, n

    def close(self) -> None:
        self.loop.close()


# ----------------------------------------------------------------------------------------------------------------
# orchestration
# ----------------------------------------------------------------------------------------------------------------


def _row(impl: str, stream: str, source: str, m: Measured) -> dict[str, Any]:
    us = np.asarray(m.lat, dtype=np.float64) / 1000.0
    p50, p90, p99, p999 = (round(float(v), 3) for v in np.percentile(us, [50, 90, 99, 99.9]))
    seconds = m.elapsed_ns * 1e-9
    return {"impl": impl, "stream": stream, "source": source, "frames": len(m.lat), "records": m.records,
            "p50_us": p50, "p90_us": p90, "p99_us": p99, "p999_us": p999, "max_us": round(float(us.max()), 3),
            "mean_us": round(float(us.mean()), 3), "frames_per_s": round(len(m.lat) / seconds, 1),
            "on_cpu_pct": round(min(100.0, 100 * m.cpu_s / seconds), 1), "preempted": m.preempted}


def _missing_row(stream: str, source: str, reason: str) -> dict[str, Any]:
    return {"impl": "lowlat", "stream": stream, "source": source, "frames": 0, "records": 0, "p50_us": None,
            "p90_us": None, "p99_us": None, "p999_us": None, "max_us": None, "mean_us": None, "frames_per_s": None,
            "on_cpu_pct": None, "preempted": None, "missing": reason}


def _shares(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def run(frames: int = DEFAULT_FRAMES, rounds: int = DEFAULT_ROUNDS, data_dir: Path = DEFAULT_DATA,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every (implementation, stream); returns ``{"host", "params", "results", "ratios", "bars"}``."""
    if rounds < 1:
        raise ValueError("--rounds must be at least 1")
    if frames < rounds:
        raise ValueError("--frames must be at least one per round")
    say = progress or (lambda s: None)
    t_start = time.monotonic()
    data = load(data_dir)
    affinity = sorted(os.sched_getaffinity(0))
    cpu = affinity[-1]
    os.sched_setaffinity(0, {cpu})
    runners: dict[tuple[str, str], Runner] = {}
    missing: dict[str, str] = {}
    notes: list[str] = []
    try:
        for stream in STREAMS:
            sd = data[stream]
            for impl in IMPLS:
                say(f"setting up and warming {impl} {stream}")
                try:
                    runner: Runner = LowlatRunner(sd) if impl == "lowlat" else CryptofeedRunner(sd)
                except ImportError as e:
                    if impl != "lowlat":
                        raise
                    missing[stream] = f"lowlat parser not available: {e}"
                    continue
                try:
                    runner.measure(WARMUP_PASSES * len(sd.frames))
                except Exception as e:
                    runner.close()
                    if impl != "lowlat":
                        raise
                    missing[stream] = f"lowlat parser failed: {type(e).__name__}: {e}"
                    notes.append(f"{stream}: lowlat failed in warm-up:\n{traceback.format_exc()}")
                    continue
                runners[(impl, stream)] = runner
        gc.collect()
        gc.freeze()
        acc = {key: Measured() for key in runners}
        load0, cpu0 = loadavg(), cpu_times()
        for r, n in enumerate(_shares(frames, rounds)):
            for key, runner in runners.items():
                say(f"round {r + 1}/{rounds}: {key[0]} {key[1]} ({n:,} frames)")
                m = runner.measure(n)
                acc[key].add(m.elapsed_ns, m.lat, m.records, m.cpu_s, m.preempted)
        cpu1 = cpu_times()
        results: list[dict[str, Any]] = []
        for stream in STREAMS:
            for impl in IMPLS:
                key = (impl, stream)
                if key in acc:
                    results.append(_row(impl, stream, data[stream].source, acc[key]))
                    if isinstance(runners[key], LowlatRunner):
                        results[-1]["lowlat_counts"] = runners[key].counts()
                else:
                    results.append(_missing_row(stream, data[stream].source, missing[stream]))
        cf_urls = sorted({u for k, rn in runners.items() if isinstance(rn, CryptofeedRunner)
                          for u in rn.construction_urls})
    finally:
        for runner in runners.values():
            runner.close()
        gc.unfreeze()
        os.sched_setaffinity(0, affinity)
    by = {(r["impl"], r["stream"]): r for r in results}
    ratios: dict[str, float | None] = {}
    for stream in STREAMS:
        ours, theirs = by[("lowlat", stream)]["frames_per_s"], by[("cryptofeed", stream)]["frames_per_s"]
        ratios[stream] = round(ours / theirs, 2) if ours and theirs else None
    bars = {
        f"frames_per_s >= {RATIO_BAR:g}x cryptofeed": {s: None if v is None else v >= RATIO_BAR
                                                       for s, v in ratios.items()},
        f"p99 < {TICKER_P99_BAR_US:g} us per ticker frame": {
            s: None if by[("lowlat", s)]["p99_us"] is None else by[("lowlat", s)]["p99_us"] < TICKER_P99_BAR_US
            for s in TICKER_STREAMS},
    }
    host = host_info(("cryptofeed", "msgspec", "orjson"))
    jiffies = cpu1[0] - cpu0[0]
    host["load"] = {"loadavg_start": load0, "loadavg_end": loadavg(),
                    "steal_pct": round(100 * (cpu1[1] - cpu0[1]) / jiffies, 1) if jiffies > 0 else None}
    return {
        "host": host,
        "params": {
            "frames": frames, "rounds": rounds, "warmup_passes": WARMUP_PASSES, "pinned_cpu": cpu,
            "data_dir": str(data_dir), "depth": DEPTH,
            "frames_per_pass": {s: len(d.frames) for s, d in data.items()},
            "symbols": {s: d.symbols for s, d in data.items()},
            "gc": "frozen after warm-up; disabled inside timed loops, collected between passes (both sides)",
            "cryptofeed_call": "await feed.message_handler(raw.decode(), None, recorded_receive_time) in an asyncio "
                               "loop; callback: async append to a list",
            "cryptofeed_replaced": [
                "Exchange.http_sync during feed construction only (stub answering " + ", ".join(cf_urls) +
                " with a symbol list built from the recorded symbols / a dummy websocket token)",
                "feed.http_conn.read(url) (REST snapshot fetch) -> the body recorded for that exact URL in "
                "BINANCE_FUTURES.http.0.0",
            ],
            "lowlat_call": "parser.on_frame(raw, perf_counter_ns(), recorded_receive_ns) -> RingEmitter -> rings",
            "elapsed_s": round(time.monotonic() - t_start, 1),
            "notes": notes,
        },
        "results": results,
        "ratios": ratios,
        "bars": bars,
    }


# ----------------------------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------------------------


def _fmt(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 1000 else f"{v:.{digits}f}"


def bar_lines(report: dict[str, Any]) -> list[str]:
    """The project's bars computed from a report, for a human to read (nothing is asserted)."""
    by = {(r["impl"], r["stream"]): r for r in report["results"]}
    lines = []
    for stream, ratio in report["ratios"].items():
        if ratio is None:
            lines.append(f"{stream}: ratio unavailable (lowlat row missing) - bar >= {RATIO_BAR:g}x: not measured")
            continue
        verdict = "met" if ratio >= RATIO_BAR else "NOT met"
        lines.append(f"{stream}: lowlat / cryptofeed frames/s = {ratio:.2f}x (bar >= {RATIO_BAR:g}x: {verdict})")
    for stream in TICKER_STREAMS:
        p99 = by[("lowlat", stream)]["p99_us"]
        if p99 is None:
            lines.append(f"{stream}: lowlat p99 not measured (bar < {TICKER_P99_BAR_US:g} µs)")
        else:
            verdict = "met" if p99 < TICKER_P99_BAR_US else "NOT met"
            lines.append(f"{stream}: lowlat p99 {p99:.2f} µs per frame (bar < {TICKER_P99_BAR_US:g} µs: {verdict})")
    return lines


def render(report: dict[str, Any], console: Any = None) -> None:
    """Print the report as a rich table, then the ratios and the bars."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 200)
    h, p = report["host"], report["params"]
    table = Table(title=f"bench feeds: recorded frame bytes -> published record ({h['cpu_model']}, {h['cpu_count']} "
                        f"CPUs, pinned to CPU {p['pinned_cpu']}, Python {h['python']}, cryptofeed {h['cryptofeed']})")
    table.add_column("impl")
    table.add_column("stream")
    for col in ("frames", "records", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "mean µs", "frames/s",
                "on CPU", "preempted"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        if r.get("missing"):
            table.add_row(r["impl"], r["stream"], "MISSING", *["-"] * 10)
            continue
        table.add_row(r["impl"], r["stream"], f"{r['frames']:,}", f"{r['records']:,}", _fmt(r["p50_us"]),
                      _fmt(r["p90_us"]), _fmt(r["p99_us"]), _fmt(r["p999_us"]), _fmt(r["max_us"], 1),
                      _fmt(r["mean_us"]), _fmt(r["frames_per_s"]), f"{r['on_cpu_pct']:.0f}%",
                      f"{r['preempted']:,}")
    console.print(table)
    sources = {r["stream"]: r["source"] for r in report["results"]}
    for stream, src in sources.items():
        console.print(f"  {stream}: {src}, {p['frames_per_pass'][stream]} frames a pass")
    console.print(f"  lowlat: {p['lowlat_call']}. cryptofeed: {p['cryptofeed_call']}. records = ring records "
                  f"published (lowlat) / callbacks invoked (cryptofeed) in the timed loops.")
    console.print(f"  cryptofeed network replaced: {'; '.join(p['cryptofeed_replaced'])}.")
    console.print(f"  {p['rounds']} interleaved rounds, {p['warmup_passes']} warm-up passes per runner; gc: {p['gc']}; "
                  f"the run took {p['elapsed_s']} s.")
    load = h.get("load") or {}
    console.print(f"  Host load: loadavg {load.get('loadavg_start')} at start, {load.get('loadavg_end')} at end, steal "
                  f"{load.get('steal_pct')}% of CPU time. on CPU = CPU time the bench thread got / timed-loop time; "
                  f"preempted = involuntary context switches in the timed loops (other tenants of the host).")
    for r in report["results"]:
        if r.get("missing"):
            console.print(f"  [bold red]lowlat {r['stream']} missing:[/] {r['missing']}")
    for line in bar_lines(report):
        console.print(f"  {line}")


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write the report as JSON."""
    path.write_text(json.dumps(report, indent=2) + "\n")
