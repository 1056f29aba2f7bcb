"""Replay: recorded best bid/ask and trades as the event source, served through every venue protocol.

Reads cryptofeed recordings (``T: FRAME`` lines; KuCoin ``trade.ticker`` / ``trade.l3match``, Binance
``bookTicker`` / ``trade`` / ``aggTrade``, combined or raw) and hftbacktest gzip files (``LOCAL_NS RAW_JSON``), lazily,
merged in receive-time order. Symbols map by base/quote (``BTCUSDT`` <-> ``BTC-USDT``); when two files carry the
same symbol the first file given wins. Tick and lot are the finest decimals seen in the first few thousand frames.
Each BBO record moves the book's top to the recorded one (levels it crossed are removed) over a synthetic tail of
20-40 levels, so depth snapshots and diffs stay consistent with bookTicker / ticker. Simulated time is the
recorded receive time (files recorded more than an hour apart are moved to start together), shifted to
``--start-ms`` if given. After the last record the source reports no next event and the server idles.
"""

from __future__ import annotations

import gzip
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .market import ASK, BID, EventBuilder, Instrument, Market, MarketEvent, make_instrument, parse_decimal, to_units

QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")
SCAN_LINES = 5000
MIN_LEVELS, MAX_LEVELS = 20, 40


@dataclass(slots=True)
class Record:
    """One replayed item: a BBO (``bid, bid_qty, ask, ask_qty``) or a trade (``px, qty, buy``) of ``symbol``."""

    t_us: int
    symbol: str
    kind: str
    values: tuple[Any, ...]


def to_symbol(name: str) -> str | None:
    """``BTCUSDT`` / ``btcusdt`` / ``BTC-USDT`` -> ``BTC-USDT`` (None if the quote is not recognised)."""
    name = name.upper()
    if "-" in name:
        return name
    for q in QUOTES:
        if name.endswith(q) and len(name) > len(q):
            return f"{name[: -len(q)]}-{q}"
    return None


def _open(path: Path) -> Iterator[str]:
    with path.open("rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    opener = gzip.open(path, "rt", encoding="utf-8", errors="replace") if gz else path.open(encoding="utf-8",
                                                                                                 errors="replace")
    with opener as lines:
        yield from lines


def _split(line: str) -> tuple[float, str] | None:
    """(receive time in seconds, frame text) of a recorded line, or None for anything else."""
    head, sep, rest = line.partition(" ")
    if not sep:
        return None
    if head.endswith(":"):
        try:
            return float(head[:-1]), rest
        except ValueError:
            return None
    if head.isdigit() and len(head) >= 16:
        return int(head) / 1e9, rest
    return None


def _records(line: str) -> Record | None:
    """Parse one line into a record (None: not a BBO / trade frame)."""
    if "bookTicker" not in line and "trade" not in line and "ticker" not in line and "match" not in line:
        return None
    split = _split(line)
    if split is None:
        return None
    t_s, text = split
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(frame, dict):
        return None
    t_us = int(t_s * 1e6)
    data = frame.get("data", frame)
    if not isinstance(data, dict):
        return None
    subject = frame.get("subject")
    try:
        if subject == "trade.ticker":
            sym = str(frame["topic"]).rpartition(":")[2]
            return Record(t_us, sym, "bbo", (data["bestBid"], data["bestBidSize"], data["bestAsk"],
                                             data["bestAskSize"]))
        if subject in ("trade.l3match", "trade.l2match", "match"):
            return Record(t_us, str(data["symbol"]), "trade", (data["price"], data["size"], data["side"] == "buy"))
        e = data.get("e")
        stream = str(frame.get("stream", ""))
        if e == "bookTicker" or (e is None and "u" in data and "b" in data and "a" in data) or \
                stream.endswith("@bookTicker"):
            sym = to_symbol(str(data["s"]))
            return Record(t_us, sym, "bbo", (data["b"], data["B"], data["a"], data["A"])) if sym else None
        if e in ("trade", "aggTrade"):
            sym = to_symbol(str(data["s"]))
            return Record(t_us, sym, "trade", (data["p"], data["q"], not data["m"])) if sym else None
    except (KeyError, TypeError):
        return None
    return None


def _scan(path: Path) -> tuple[int | None, dict[str, list[int]]]:
    """First receive time and, per symbol, [price decimals, size decimals, typical top size units]."""
    first: int | None = None
    seen: dict[str, list[int]] = {}
    for n, line in enumerate(_open(path)):
        if n >= SCAN_LINES:
            break
        rec = _records(line)
        if rec is None:
            continue
        first = rec.t_us if first is None else min(first, rec.t_us)
        d = seen.setdefault(rec.symbol, [0, 0])
        prices, sizes = (rec.values[0::2], rec.values[1::2]) if rec.kind == "bbo" else (rec.values[:1],
                                                                                         rec.values[1:2])
        d[0] = max([d[0], *(parse_decimal(str(p))[1] for p in prices)])
        d[1] = max([d[1], *(parse_decimal(str(q))[1] for q in sizes)])
    return first, seen


class Replay:
    """Event source over recorded files (see the module docstring)."""

    def __init__(self, files: list[str], symbols: list[str] | None = None, start_ms: int | None = None) -> None:
        paths = [Path(f) for f in files]
        for p in paths:
            if not p.is_file():
                raise ValueError(f"replay file not found: {p}")
        scans = [_scan(p) for p in paths]
        owner: dict[str, int] = {}
        decimals: dict[str, list[int]] = {}
        for k, (_, seen) in enumerate(scans):
            for sym, d in seen.items():
                if symbols and sym not in symbols:
                    continue
                owner.setdefault(sym, k)
                if owner[sym] == k:
                    decimals[sym] = d
        if not owner:
            raise ValueError(f"no bookTicker / ticker / trade frames found in {', '.join(files)}")
        instruments: list[Instrument] = [make_instrument(s, f"{10.0 ** -d[0]:.{d[0]}f}", f"{10.0 ** -d[1]:.{d[1]}f}")
                                         for s, d in sorted(decimals.items())]
        self.market = Market(instruments)
        self.owner = owner
        starts = [s for s, _ in scans if s is not None]
        ref = min(starts)
        shift = [0 if s is None or s - ref < 3_600_000_000 else ref - s for s, _ in scans]
        offset = 0 if start_ms is None else start_ms * 1000 - ref
        self.start_us = ref + offset
        streams = [self._stream(k, p, shift[k] + offset) for k, p in enumerate(paths) if k in owner.values()]
        self._merged = heapq.merge(*streams, key=lambda r: r.t_us)
        self._next: Record | None = next(self._merged, None)
        self.fill_lots = [0] * len(instruments)
        self.records = 0

    def _stream(self, k: int, path: Path, shift: int) -> Iterator[Record]:
        last = 0
        for line in _open(path):
            rec = _records(line)
            if rec is None or self.owner.get(rec.symbol) != k:
                continue
            rec.t_us = max(rec.t_us + shift, last)
            last = rec.t_us
            yield rec

    def next_time(self) -> int | None:
        return self._next.t_us if self._next is not None else None

    def step(self) -> MarketEvent:
        rec = self._next
        assert rec is not None
        self._next = next(self._merged, None)
        self.records += 1
        mk = self.market
        i = mk.find(rec.symbol)
        assert i is not None
        ins = mk.instruments[i]
        eb = EventBuilder(mk.books[i])
        if rec.kind == "trade":
            px, qty, buy = rec.values
            return mk.finish(i, rec.t_us, eb, (to_units(str(px), ins.price_dp) // ins.tick_units,
                                               max(1, to_units(str(qty), ins.size_dp) // ins.lot_units), bool(buy)))
        b, bq, a, aq = (to_units(str(v), dp) // u for v, dp, u in zip(
            rec.values, (ins.price_dp, ins.size_dp) * 2, (ins.tick_units, ins.lot_units) * 2, strict=True))
        if b >= a or b <= 0:
            return mk.finish(i, rec.t_us, eb)
        book = eb.book
        for px in [px for px in book.bids if px > b]:
            eb.set(BID, px, 0)
        for px in [px for px in book.asks if px < a]:
            eb.set(ASK, px, 0)
        if book.bids.get(b) != bq:
            eb.set(BID, b, bq)
        if book.asks.get(a) != aq:
            eb.set(ASK, a, aq)
        self.fill_lots[i] = self.fill_lots[i] or max(1, bq, aq)
        for side in (BID, ASK):
            d = book.side(side)
            while len(d) > MAX_LEVELS:
                eb.set(side, min(d) if side == BID else max(d), 0)
            while d and len(d) < MIN_LEVELS:
                far = min(d) - 1 if side == BID else max(d) + 1
                if far <= 0:
                    break
                eb.set(side, far, self.fill_lots[i])
        return mk.finish(i, rec.t_us, eb, None, (b + a) // 2)
