"""``pipeline scan``: rank candidate pairs of a venue's symbols from one-minute candles.

The command is declared in ``pipeline/cli.py`` and reaches this module by name (``importlib``), as the supervisor
reaches stages: ``pipeline/`` imports no ``compute/`` code statically (DESIGN.md, "Who may import whom").

For each symbol: the closes of the last ``days`` days of whole minutes before the current one (compute.candles);
minutes aligned across symbols (a minute missing for a symbol is NaN and only drops out of that symbol's pairs);
every pair ranked by the Engle-Granger p-value of log closes with beta, the statistic, the spread's Hurst exponent
and half-life in minutes (compute.research.scan_pairs).
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from compute.candles import DEFAULT_URLS, CandleError, fetch_candles
from compute.research import scan_pairs

MINUTE_MS = 60_000
MAX_DAYS = 366.0


class ScanError(RuntimeError):
    """A scan that cannot run; the message is one line for the user."""


def parse_symbols(text: str) -> list[str]:
    """Comma-separated symbols, stripped, duplicates dropped (first kept); at least two."""
    out: list[str] = []
    for s in text.split(","):
        s = s.strip()
        if s and s not in out:
            out.append(s)
    if len(out) < 2:
        raise ScanError(f"--symbols needs at least 2 distinct symbols, got {len(out)}"
                        + (f" ({', '.join(out)})" if out else ""))
    return out


def fetch_closes(venue: str, symbols: list[str], start_ms: int, end_ms: int, rest_url: str | None = None,
                 timeout_s: float = 10.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Closes per symbol aligned on the union of their minutes: (minute_ms array, {symbol: closes with NaN where
    the symbol has no candle})."""
    candles = {}
    for sym in symbols:
        try:
            c = fetch_candles(venue, sym, start_ms, end_ms, rest_url=rest_url, timeout_s=timeout_s)
        except CandleError as e:
            raise ScanError(str(e)) from None
        if len(c) == 0:
            raise ScanError(f"{venue} candles {sym}: no candles from {_utc(start_ms)} to {_utc(end_ms)}")
        candles[sym] = c
    minutes = np.unique(np.concatenate([c["minute_ms"] for c in candles.values()]))
    closes = {}
    for sym, c in candles.items():
        col = np.full(len(minutes), np.nan)
        col[np.searchsorted(minutes, c["minute_ms"])] = c["close"]
        closes[sym] = col
    return minutes, closes


def scan(venue: str, symbols: list[str], days: float, rest_url: str | None = None,
         end_ms: int | None = None) -> dict[str, Any]:
    """The scan report: {"venue", "days", "start_ms", "end_ms", "symbols", "minutes", "pairs": [...]}, pairs best
    first, each {"a", "b", "beta", "alpha", "eg_stat", "pvalue", "hurst", "half_life_min", "n_minutes"}
    (ln a = alpha + beta ln b + spread; non-finite numbers as None)."""
    if venue not in DEFAULT_URLS:
        raise ScanError(f"--venue must be one of {', '.join(DEFAULT_URLS)}, got {venue!r}")
    if not 0 < days <= MAX_DAYS:
        raise ScanError(f"--days must be in (0, {MAX_DAYS:g}], got {days:g}")
    if len(symbols) < 2:
        raise ScanError(f"--symbols needs at least 2 distinct symbols, got {len(symbols)}")
    end = (int(time.time() * 1000) if end_ms is None else end_ms) // MINUTE_MS * MINUTE_MS
    start = end - round(days * 1440) * MINUTE_MS
    minutes, closes = fetch_closes(venue, symbols, start, end, rest_url)
    rows = scan_pairs(closes)
    pairs = [{"a": r["a"], "b": r["b"], "beta": _num(r["beta"]), "alpha": _num(r["alpha"]),
              "eg_stat": _num(r["eg_stat"]), "pvalue": _num(r["pvalue"]), "hurst": _num(r["hurst"]),
              "half_life_min": _num(r["half_life"]), "n_minutes": int(r["n"])} for r in rows]
    return {"venue": venue, "days": int(days) if float(days).is_integer() else days, "start_ms": start,
            "end_ms": end, "symbols": symbols, "minutes": len(minutes), "pairs": pairs}


def table(report: dict[str, Any]) -> Table:
    """The report as a rich table."""
    t = Table(title=f"{report['venue']}: pairs by Engle-Granger p-value",
              caption=f"one-minute closes {_utc(report['start_ms'])} .. {_utc(report['end_ms'])} UTC")
    for col in ("pair", "beta", "EG stat", "p-value", "hurst", "half-life (min)", "n minutes"):
        t.add_column(col, justify="left" if col == "pair" else "right")
    for p in report["pairs"]:
        t.add_row(f"{p['a']}/{p['b']}", _fmt(p["beta"], ".4f"), _fmt(p["eg_stat"], ".3f"), _fmt(p["pvalue"], ".3g"),
                  _fmt(p["hurst"], ".3f"), _fmt(p["half_life_min"], ".1f"), str(p["n_minutes"]))
    return t


def run(venue: str, symbols: str, days: float, rest_url: str | None, json_path: Path | None,
        console: Console) -> dict[str, Any]:
    """``pipeline scan``: print the table, write the JSON report if asked; ScanError (one line) on failure."""
    report = scan(venue, parse_symbols(symbols), days, rest_url)
    console.print(table(report))
    if json_path is not None:
        try:
            Path(json_path).write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
        except OSError as e:
            raise ScanError(f"--json {json_path}: {e.strerror or e}") from None
    return report


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
