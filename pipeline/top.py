"""``pipeline top``: a live view of a running pipeline, and the tables ``pipeline status`` shares with it.

Everything here reads: the supervisor's status reply (one control-socket request per refresh), psutil on the
stages' pids, and the ORDER records of the pipeline's ``order`` rings, read back from shared memory without
consuming them (``pipeline.ring.RingReader``). The stages never notice. The render functions take a
status dict and a ``Sample`` and return rich renderables, so they are testable without a terminal.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import psutil
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from pipeline.ring import RingReader  # imported when needed: numba

WINDOW_NS = 60_000_000_000
"""Latency percentiles cover the order events of the last minute."""


# ----------------------------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class LatencyWindow:
    """frame->sent (EV_SENT: t_sent_ns - t_origin_ns) and sent->ack (EV_ACK: t_ack_ns - t_sent_ns) samples of one
    order ring over the last ``WINDOW_NS``, as (event time, latency) ns arrays."""

    reader: RingReader
    sent: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    ack: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))

    def update(self, now_ns: int) -> None:
        """Read the records published since the last call (the first: the whole ring), drop samples older than
        the window."""
        from pipeline.records import sent_and_acked

        cut = now_ns - WINDOW_NS
        s, a = sent_and_acked(self.reader.read())
        self.sent = np.concatenate([self.sent, np.stack([s["t_sent_ns"], s["t_sent_ns"] - s["t_origin_ns"]], 1)])
        self.ack = np.concatenate([self.ack, np.stack([a["t_ack_ns"], a["t_ack_ns"] - a["t_sent_ns"]], 1)])
        self.sent = self.sent[self.sent[:, 0] >= cut]
        self.ack = self.ack[self.ack[:, 0] >= cut]

    def summary(self) -> dict:
        """{"frame_to_sent": {"n", "p50_ns", "p99_ns"}, "sent_to_ack": {...}}."""
        return {"frame_to_sent": _pcts(self.sent[:, 1]), "sent_to_ack": _pcts(self.ack[:, 1])}


def _pcts(lat: np.ndarray) -> dict:
    if not len(lat):
        return {"n": 0, "p50_ns": None, "p99_ns": None}
    p50, p99 = np.percentile(lat, [50, 99])
    return {"n": len(lat), "p50_ns": float(p50), "p99_ns": float(p99)}


@dataclass
class Sample:
    """What ``Sampler.sample`` measured besides the status reply."""

    procs: dict[str, dict] = field(default_factory=dict)
    """Per stage: ``cpu`` (% of one CPU), ``core`` (CPU it last ran on), ``rss`` (bytes)."""
    rates: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per stage: records in and out per second since the previous sample."""
    latency: dict[str, dict] = field(default_factory=dict)
    """Per order ring: ``LatencyWindow.summary()``."""
    notes: list[str] = field(default_factory=list)
    """Why something could not be read (a ring that cannot be attached, ...)."""


class Sampler:
    """Keeps what two refreshes share: psutil processes (CPU % is measured between calls), the previous record
    counts and time, the attached order rings."""

    def __init__(self) -> None:
        self.procs: dict[int, psutil.Process] = {}
        self.prev: dict[str, tuple[int, int]] = {}
        self.prev_t = 0.0
        self.rings: dict[str, LatencyWindow] = {}
        self.failed: dict[str, str] = {}
        self.supervisor: int | None = None

    def sample(self, status: dict) -> Sample:
        """Measure now; ``status`` is the reply taken just before."""
        out = Sample()
        now = time.monotonic()
        dt = now - self.prev_t if self.prev_t else 0.0
        live: set[int] = set()
        for s in status.get("stages", []):
            name, pid = s["name"], s.get("pid")
            if pid:
                live.add(pid)
                out.procs[name] = self._proc(pid)
            cur = (int(s.get("records_in") or 0), int(s.get("records_out") or 0))
            old = self.prev.get(name)
            if old is not None and dt > 0:
                out.rates[name] = (max(0, cur[0] - old[0]) / dt, max(0, cur[1] - old[1]) / dt)
            self.prev[name] = cur
        self.prev_t = now
        for pid in set(self.procs) - live:
            del self.procs[pid]
        self._latency(status, out)
        return out

    def _proc(self, pid: int) -> dict:
        try:
            p = self.procs.get(pid)
            first = p is None
            if p is None:
                p = self.procs[pid] = psutil.Process(pid)
            with p.oneshot():
                cpu = p.cpu_percent(None)
                return {"cpu": None if first else cpu, "core": p.cpu_num(), "rss": p.memory_info().rss}
        except psutil.Error:
            self.procs.pop(pid, None)
            return {}

    def _latency(self, status: dict, out: Sample) -> None:
        if status.get("supervisor_pid") != self.supervisor:  # another run: its rings are new segments
            self.supervisor = status.get("supervisor_pid")
            self.rings.clear()
            self.failed.clear()
        now_ns = time.monotonic_ns()
        for r in status.get("rings", []):
            if r.get("type") != "order":
                continue
            name = r["name"]
            if name not in self.rings and name not in self.failed:
                from pipeline.records import ORDER
                from pipeline.ring import Ring, RingError, RingReader

                try:
                    self.rings[name] = LatencyWindow(RingReader(Ring.attach(f"{status['pipeline']}.{name}", ORDER)))
                except (RingError, OSError) as e:
                    self.failed[name] = str(e)
            if name in self.failed:
                out.notes.append(f"ring {name}: {self.failed[name]}")
                continue
            lw = self.rings[name]
            lw.update(now_ns)
            out.latency[name] = lw.summary()


# ----------------------------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------------------------


def _ns(x: float | None) -> str:
    if x is None:
        return "-"
    if x < 1e6:
        return f"{x / 1e3:.0f} µs"
    if x < 1e9:
        return f"{x / 1e6:.2f} ms"
    return f"{x / 1e9:.2f} s"


def _num(x: object, fmt: str) -> str:
    if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x):
        return format(x, fmt)
    return "-"


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                 collapse_padding=True)


def stages_table(status: dict, sample: Sample) -> Table:
    """Per stage: process (pid, core, CPU %, RSS), state, restarts, records per second and in total, errors."""
    t = _table("stages")
    for col in ("stage", "pid", "core", "cpu %", "rss MiB", "state", "restarts", "in/s", "out/s", "in", "out",
                "errors", "last error"):
        t.add_column(col, overflow="fold", no_wrap=col in ("stage", "state"),
                     justify="right" if col not in ("stage", "state", "last error") else "left")
    for s in status.get("stages", []):
        name = s["name"]
        p = sample.procs.get(name, {})
        rate = sample.rates.get(name)
        state = s["state"]
        t.add_row(name, str(s.get("pid") or "-"), _num(p.get("core"), "d"), _num(p.get("cpu"), ".0f"),
                  _mib(p.get("rss")), state if state == "running" else f"[yellow]{state}[/yellow]",
                  str(s.get("restarts", 0)), "-" if rate is None else f"{rate[0]:.0f}",
                  "-" if rate is None else f"{rate[1]:.0f}", str(s.get("records_in", 0)),
                  str(s.get("records_out", 0)), str(s.get("errors", 0)),
                  (s.get("last_error") or s.get("reason") or "") if state in ("failed", "restarting")
                  else s.get("last_error") or "")
    return t


def rings_table(status: dict) -> Table:
    """Per ring: producer -> consumer, fill, lag (producer_pos - consumer_pos), waits."""
    t = _table("rings")
    for col in ("ring", "type", "producer -> consumer", "fill %", "lag", "capacity", "published", "prod waits"):
        t.add_column(col, no_wrap=col == "ring", justify="left" if col in ("ring", "type", "producer -> consumer")
                     else "right")
    for r in status.get("rings", []):
        lag = int(r["producer_pos"]) - int(r["consumer_pos"])
        t.add_row(r["name"], r["type"], f"{r['producer']} -> {r['consumer']}", f"{100 * r['fill'] / r['capacity']:.1f}",
                  str(lag), str(r["capacity"]), str(r["producer_pos"]), str(r["producer_waits"]))
    return t


def latency_table(latency: dict[str, dict]) -> Table:
    """Per order ring: frame->sent and sent->ack p50 / p99 over the last minute."""
    t = _table("order latency, last 60 s")
    for col in ("ring", "frame->sent p50", "p99", "n", "sent->ack p50", "p99 ", "n "):
        t.add_column(col, justify="left" if col == "ring" else "right")
    for name, lat in latency.items():
        a, b = lat["frame_to_sent"], lat["sent_to_ack"]
        t.add_row(name, _ns(a["p50_ns"]), _ns(a["p99_ns"]), str(a["n"]), _ns(b["p50_ns"]), _ns(b["p99_ns"]),
                  str(b["n"]))
    return t


def pairs_table(pairs: dict[str, dict]) -> Table:
    """Per pair (the stats stage's ``pairs`` status): position, z, beta, spread, window, signals, PnL."""
    t = _table("pairs")
    for col in ("pair", "position", "z", "beta", "spread", "window", "entries", "exits", "pnl closed %",
                "pnl open %", "last signal"):
        t.add_column(col, no_wrap=col in ("pair", "position"),
                     justify="left" if col in ("pair", "position", "last signal") else "right")
    for name, p in pairs.items():
        last = p.get("last_signal_ms")
        when = time.strftime("%H:%M:%S", time.gmtime(last / 1000)) if isinstance(last, int) else "-"
        pnl = p.get("pnl_log_total")
        opn = p.get("pnl_log_open")
        t.add_row(name, str(p.get("position", "-")), _num(p.get("z"), "+.3f"), _num(p.get("beta"), ".4f"),
                  _num(p.get("spread"), ".6f"), f"{p.get('window_n', '-')}/{p.get('window', '-')}",
                  str(p.get("entries", 0)), str(p.get("exits", 0)),
                  _num(None if pnl is None else 100 * math.expm1(pnl), ".4f"),
                  _num(None if opn is None else 100 * math.expm1(opn), ".4f"), when)
    return t


def execution_line(ex: dict) -> Text:
    """One line of the executor's ``execution`` status: mode, orders, fills, PnL, fees, risk, positions."""
    o = ex.get("orders") or {}
    risk = ex.get("risk_state") or {}
    state = risk.get("state", "?")
    pos = ", ".join(f"{sym} {p.get('executor', '?')}" for sym, p in (ex.get("positions") or {}).items())
    rej = o.get("rejected_by_reason") or {}
    text = (f"execution ({ex.get('mode', '?')}): orders sent {o.get('sent', 0)}, acked {o.get('acked', 0)}, "
            f"filled {o.get('filled', 0)}, rejected {o.get('rejected', 0)}, local rejected "
            f"{o.get('local_rejected', 0)}" + (f" ({', '.join(f'{k} {v}' for k, v in rej.items())})" if rej else "")
            + f"; realized pnl {ex.get('realized_pnl', '-')}, fees {ex.get('fees', '-')}; risk {state}"
            + (f" ({risk['reason']})" if risk.get("reason") else "") + (f"; positions {pos}" if pos else ""))
    # what keeps entries waiting or orders refused, named: a user stream down, books arriving late, venue clocks
    text += "".join(f"; user stream {v} {st}" for v, st in (ex.get("user_streams") or {}).items() if st != "up")
    text += "".join(f"; {sym} book {b['late_ms'] / 1000:.1f} s late" for sym, b in (ex.get("books") or {}).items()
                    if b.get("late_ms", 0) >= 1000)
    text += "".join(f"; {v} clock {ms / 1000:+.1f} s" for v, ms in (ex.get("venue_clock_offset_ms") or {}).items()
                    if abs(ms) >= 1000)
    return Text(text, style=None if state == "ok" else "bold red")


def render(status: dict, sample: Sample) -> Group:
    """One frame of ``pipeline top``."""
    parts: list = [Text(f"pipeline {status.get('pipeline')} ({status.get('run_dir')}), supervisor pid "
                        f"{status.get('supervisor_pid')}, {time.strftime('%H:%M:%S')}", style="bold"),
                   stages_table(status, sample), rings_table(status)]
    if sample.latency:
        parts.append(latency_table(sample.latency))
    if status.get("pairs"):
        parts.append(pairs_table(status["pairs"]))
    if status.get("execution"):
        parts.append(execution_line(status["execution"]))
    parts += [Text(n, style="yellow") for n in sample.notes]
    return Group(*parts)
