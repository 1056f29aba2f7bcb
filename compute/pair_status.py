"""The stats stage's ``pairs`` section of ``pipeline status``: the latest figures of every pair, written to
``<run_dir>/<stage>.status.json`` (a temporary file renamed over the old one) at most every ``PERIOD_S`` of wall
time, by a writer thread (the stage's thread only takes the snapshot, some microseconds), and at flush; the supervisor
merges it into its status reply.

- z, beta, spread, mu, sigma: the statistics of the pair's current window, recomputed from the engine's state
  arrays by the kernel's own compiled ``compute.pairs.window_stats``, on the window the kernel would use for the
  next tick (the open minute when both legs' coincide, else the closed one); while the window is not warm, those
  of the latest event row or SIGNAL record, else null.
- position, window_n: the engine's state.
- entries, exits, last_signal_ms, pnl_log_total: from the SIGNAL records in the stage's own output ring (read
  back, never consumed; a restarted stage counts them again from the ring).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from compute.pairs import (
    EV_LOG_5M_SKIP,
    F_PART_MEAN,
    FLAT,
    I_LAST_MS,
    I_PART_MIN,
    MODE_CLOSED,
    MODE_PARTIAL,
    P_POS,
    P_WIN_N,
    POSITIONS,
    Q_ENTRY_SPREAD,
    SHORT,
    PairCfg,
    PairsEngine,
    window_stats,
)
from pipeline.records import SIG_ENTER_LONG, SIG_ENTER_SHORT, SIG_EXIT
from pipeline.ring import Ring, RingReader, entry_point
from pipeline.status_file import StatusFile

PERIOD_S = 0.25
"""Least wall time between two writes (``update``)."""
STATS = ("z", "beta", "spread", "mu", "sigma")


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _mode(mode: int, window: int) -> str | None:
    """The window's name as events.jsonl writes it (compute.stats.mode_name), None when unknown."""
    return {MODE_CLOSED: f"{window}closed_aligned", MODE_PARTIAL: f"{window - 1}+partial_aligned"}.get(mode)


class PairStatus:
    """Per-pair status of one stats stage (see the module docstring). Constructing it writes nothing."""

    def __init__(self, path: Path, engine: PairsEngine, pairs: list[PairCfg], out: Ring) -> None:
        self.path = path
        self.engine = engine
        self.pairs = pairs
        self.out = out
        n = len(pairs)
        self.last_row: list[dict | None] = [None] * n
        self.last_sig: list[dict | None] = [None] * n
        self.entries = [0] * n
        self.exits = [0] * n
        self.last_signal_ms: list[int | None] = [None] * n
        self.pnl_log_total = [0.0] * n
        self.reader = RingReader(out)
        self.last_write = -math.inf
        self._file: StatusFile | None = None
        # the kernel's own statistics, called through its compiled entry point (compiled or loaded from numba's
        # cache here, while the stage is built under the runtime's compile lock; a call then costs about 2 us)
        self._stats = entry_point(window_stats, engine.wa[0], engine.wb[0], 0, 0, 0.0, 0.0, False, 0.0, False)

    def update(self, rows: np.ndarray) -> None:
        """Take the event rows of one compiled call; when ``PERIOD_S`` has passed since the last write, take a
        snapshot and hand it to the writer thread (the file I/O, about a millisecond on a disk, stays off the
        stage's thread)."""
        if len(rows):
            for r in rows:
                if int(r["action"]) != EV_LOG_5M_SKIP:
                    self.last_row[int(r["pair"])] = {k: float(r[k]) for k in STATS} | {"mode": int(r["mode"])}
        if time.monotonic() - self.last_write >= PERIOD_S:
            self.write(wait=False)

    def _signals(self) -> None:
        """Count the SIGNAL records published since the last look."""
        for r in self.reader.read():
            p = int(r["pair"])
            if not 0 <= p < len(self.pairs):
                continue
            action = int(r["action"])
            if action in (SIG_ENTER_LONG, SIG_ENTER_SHORT):
                self.entries[p] += 1
            elif action == SIG_EXIT:
                self.exits[p] += 1
                self.pnl_log_total[p] += float(r["pnl_log"])
            self.last_signal_ms[p] = int(r["ts_event_ms"])
            self.last_sig[p] = {k: float(r[k]) for k in STATS} | {"mode": int(r["mode"])}

    def _window(self, p: int) -> dict | None:
        """The pair's statistics on its current window (None while it is not warm)."""
        e, c = self.engine, self.pairs[p]
        w, wn = c.window, int(e.pi[p, P_WIN_N])
        kal, kbeta = c.hedge == "kalman", float(e.kst[p, 0])
        pma = int(e.ii[c.a, I_PART_MIN])
        pa, pb = float(e.fi[c.a, F_PART_MEAN]), float(e.fi[c.b, F_PART_MEAN])
        if pma >= 0 and pma == int(e.ii[c.b, I_PART_MIN]) and pa > 0 and pb > 0 and wn >= w - 1:
            got = self._stats(e.wa[p], e.wb[p], wn - (w - 1), w - 1, math.log(pa), math.log(pb), True, kbeta, kal)
            mode = MODE_PARTIAL
        elif wn >= w:
            got = self._stats(e.wa[p], e.wb[p], wn - w, w, 0.0, 0.0, False, kbeta, kal)
            mode = MODE_CLOSED
        else:
            return None
        b, spread, mu, sigma, z = got
        return {"z": z, "beta": b, "spread": spread, "mu": mu, "sigma": sigma, "mode": mode}

    def snapshot(self) -> dict:
        """``{"pairs": {name: {...}}}`` as of now."""
        self._signals()
        e = self.engine
        out = {}
        for p, c in enumerate(self.pairs):
            cur = self._window(p) or self.last_row[p] or self.last_sig[p] or {}
            pos = int(e.pi[p, P_POS])
            spread = cur.get("spread")
            open_pnl = None
            if pos != FLAT and spread is not None:
                d = spread - float(e.pf[p, Q_ENTRY_SPREAD])
                open_pnl = _num(-d if pos == SHORT else d)
            last_tick = max(int(e.ii[c.a, I_LAST_MS]), int(e.ii[c.b, I_LAST_MS]))
            out[c.name] = {
                **{k: None if cur.get(k) is None else _num(cur[k]) for k in STATS},
                "mode": _mode(cur.get("mode", -1), c.window),
                "position": POSITIONS.get(pos, str(pos)), "entries": self.entries[p], "exits": self.exits[p],
                "last_signal_ms": self.last_signal_ms[p], "pnl_log_total": _num(self.pnl_log_total[p]),
                "pnl_log_open": open_pnl, "window_n": min(int(e.pi[p, P_WIN_N]), c.window), "window": c.window,
                "last_tick_ms": last_tick or None,
            }
        return {"pairs": out}

    def write(self, wait: bool = True) -> None:
        """Snapshot now and write it atomically (temporary file, rename): here (``wait``: at flush), or on the
        status file's writer thread."""
        self.last_write = time.monotonic()
        if self._file is None:
            self._file = StatusFile(self.path)
        if wait:
            self._file.close(self.snapshot())
            self._file = None
        else:
            self._file.publish(self.snapshot())
