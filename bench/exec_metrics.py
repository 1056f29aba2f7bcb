"""The five figures of ``bench latency`` (DESIGN.md, Measuring), computed from order timelines and ticks.

Both sides of the comparison are first reduced to the same shape, a list of ``OrderTrace`` (one per order placed,
with its times and fills) plus the ticks each run received, so the pipeline and the baseline are measured by the
same code:

- execution latency per order, frame received -> acknowledged, and its parts, as HdrHistogram percentiles;
- micro-volatility (100 ms): per instrument, the sample standard deviation of log mid changes on a 100 ms grid of
  event time (last value carried forward), in bps, with the number of steps it rests on;
- fill ratio by quantity (filled / ordered) and by order (fully filled / placed);
- capture rate: realized PnL of the closed round trips (fill prices and fees) / the PnL of the same fills valued at
  their orders' decision-time mids, with both sums;
- inventory drift per leg and per pair: (position - target) x decision mid in quote, time-weighted over the run:
  mean |drift|, max |drift|, final drift, and the mean as % of the mean gross target notional while a target is
  held.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from hdrh.histogram import HdrHistogram

LATENCY_PARTS = ("total", "frame_to_sent", "frame_to_decision", "decision_to_sent", "sent_to_ack")
"""The execution latency parts, in the order the report shows them."""
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))
STEP_MS = 100


@dataclass(slots=True)
class OrderTrace:
    """One placed order: its times (monotonic ns), what was asked and what filled."""

    key: str
    """Order number or client id."""
    pair: int
    leg: int
    """0: leg A, 1: leg B."""
    symbol: str
    side: int
    """1 buy, -1 sell."""
    qty: float
    """Ordered quantity, base units."""
    mid: float
    """The leg's mid at the decision."""
    target: float
    """The pair's target position in this leg once the order is done (base units, signed)."""
    t_origin: int
    """The market-data frame behind the decision was received."""
    t_decision: int
    t_sent: int
    t_ack: int = 0
    """0: never acknowledged (rejected, lost)."""
    measure: bool = False
    fills: list[tuple[int, float, float, float]] = field(default_factory=list)
    """(time ns, qty, price, fee in quote) per execution."""

    @property
    def filled(self) -> float:
        return sum(f[1] for f in self.fills)


def histogram(values_ns: np.ndarray) -> HdrHistogram:
    """An HdrHistogram of non-negative ns values (1 ns .. 1 hour, 3 significant digits)."""
    h = HdrHistogram(1, 3_600_000_000_000, 3)
    for v in values_ns:
        h.record_value(max(1, int(v)))
    return h


def summary_us(values_ns: np.ndarray) -> dict[str, float | int]:
    """p50, p90, p99, p99.9, max (µs) and count of ns values, through HdrHistogram."""
    values_ns = np.asarray(values_ns, dtype=np.int64)
    if len(values_ns) == 0:
        return {**{k: None for k, _ in PERCENTILES}, "max": None, "count": 0}
    h = histogram(values_ns)
    out: dict[str, float | int] = {k: round(h.get_value_at_percentile(p) / 1e3, 1) for k, p in PERCENTILES}
    out["max"] = round(h.get_max_value() / 1e3, 1)
    out["count"] = len(values_ns)
    return out


def latency_parts(orders: list[OrderTrace]) -> dict[str, np.ndarray]:
    """ns per order for each of LATENCY_PARTS (``total`` and ``sent_to_ack`` over acknowledged orders only)."""
    sent = [o for o in orders if o.t_sent > 0]
    acked = [o for o in sent if o.t_ack > 0]
    return {
        "total": np.array([o.t_ack - o.t_origin for o in acked], dtype=np.int64),
        "frame_to_sent": np.array([o.t_sent - o.t_origin for o in sent], dtype=np.int64),
        "frame_to_decision": np.array([o.t_decision - o.t_origin for o in sent], dtype=np.int64),
        "decision_to_sent": np.array([o.t_sent - o.t_decision for o in sent], dtype=np.int64),
        "sent_to_ack": np.array([o.t_ack - o.t_sent for o in acked], dtype=np.int64),
    }


def micro_volatility(ts_ms: np.ndarray, mids: np.ndarray, step_ms: int = STEP_MS) -> tuple[float | None, int]:
    """(sample sd of log mid changes on a ``step_ms`` grid of event time, in bps; number of changes). The grid runs
    from the first tick's step to the last one's; each point takes the last mid at or before it."""
    order = np.argsort(ts_ms, kind="stable")
    ts, m = np.asarray(ts_ms, dtype=np.int64)[order], np.asarray(mids, dtype=np.float64)[order]
    ok = np.isfinite(m) & (m > 0)
    ts, m = ts[ok], m[ok]
    if len(ts) == 0:
        return None, 0
    grid = np.arange(ts[0] // step_ms * step_ms + step_ms, ts[-1] + 1, step_ms)
    idx = np.searchsorted(ts, grid, side="right") - 1
    r = np.diff(np.log(m[idx]))
    if len(r) < 2:
        return None, len(r)
    return float(np.std(r, ddof=1) * 1e4), len(r)


def fill_ratio(orders: list[OrderTrace]) -> dict[str, float | None]:
    """Filled / ordered quantity, and fully filled orders / orders placed."""
    sent = [o for o in orders if o.t_sent > 0]
    if not sent:
        return {"by_qty": None, "by_orders": None}
    qty = sum(o.qty for o in sent)
    full = sum(1 for o in sent if o.filled >= o.qty * (1 - 1e-9))
    return {"by_qty": round(sum(o.filled for o in sent) / qty, 6) if qty else None,
            "by_orders": round(full / len(sent), 6)}


def _fills_by_pair(orders: list[OrderTrace]) -> dict[int, list[tuple[int, OrderTrace, tuple]]]:
    out: dict[int, list[tuple[int, OrderTrace, tuple]]] = defaultdict(list)
    for o in orders:
        for f in o.fills:
            out[o.pair].append((f[0], o, f))
    for v in out.values():
        v.sort(key=lambda x: x[0])
    return out


def capture_rate(orders: list[OrderTrace]) -> dict[str, float | int | None]:
    """Realized / theoretical PnL over round trips closed in the run (both legs back to flat). Realized: quote cash
    flow of the fills minus fees; theoretical: the same fills at their orders' decision mids, no fees."""
    realized = theoretical = 0.0
    trips = 0
    for fills in _fills_by_pair(orders).values():
        pos = [0.0, 0.0]
        r = t = 0.0
        for _, o, (_, q, px, fee) in fills:
            pos[o.leg] += o.side * q
            r += -o.side * q * px - fee
            t += -o.side * q * o.mid
            if all(abs(p) < 1e-12 for p in pos):
                realized, theoretical, trips = realized + r, theoretical + t, trips + 1
                r = t = 0.0
                pos = [0.0, 0.0]
    value = realized / theoretical if theoretical else None
    return {"value": None if value is None else round(value, 6), "realized": round(realized, 8),
            "theoretical": round(theoretical, 8), "round_trips": trips}


def inventory_drift(orders: list[OrderTrace], t_end: int) -> dict[str, dict[str, float | None]]:
    """Per leg (``PAIR.leg``) and per pair: time-weighted mean |drift|, max |drift|, final drift (quote), and the
    mean as % of the mean gross target notional while a target is held. The target of a leg changes when an order
    is decided; the position when a fill arrives."""
    out: dict[str, dict[str, float | None]] = {}
    by_pair: dict[int, list[OrderTrace]] = defaultdict(list)
    for o in orders:
        if o.t_sent > 0:
            by_pair[o.pair].append(o)
    for pair, os_ in by_pair.items():
        events: list[tuple[int, int, int, float, float]] = []  # (t, kind 0 target / 1 fill, leg, value, mid)
        for o in os_:
            events.append((o.t_decision, 0, o.leg, o.target, o.mid))
            events += [(f[0], 1, o.leg, o.side * f[1], o.mid) for f in o.fills]
        events.sort(key=lambda e: (e[0], e[1]))
        t0 = events[0][0]
        pos, tgt, mid = [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]
        series: dict[str, list[tuple[int, float, float]]] = {"0": [], "1": [], "pair": []}  # (t, drift, gross)

        for t, kind, leg, value, m in events:
            if kind == 0:
                tgt[leg] = value
            else:
                pos[leg] += value
            mid[leg] = m
            d = [(pos[k] - tgt[k]) * mid[k] for k in (0, 1)]
            g = [abs(tgt[k]) * mid[k] for k in (0, 1)]
            series["0"].append((t, d[0], g[0]))
            series["1"].append((t, d[1], g[1]))
            series["pair"].append((t, d[0] + d[1], g[0] + g[1]))
        for name, s in series.items():
            ts = np.array([x[0] for x in s] + [max(t_end, s[-1][0])], dtype=np.float64)
            d = np.array([x[1] for x in s])
            g = np.array([x[2] for x in s])
            w = np.diff(ts)
            span = w.sum()
            mean = float((np.abs(d) * w).sum() / span) if span > 0 else float(np.abs(d).mean())
            held = g > 0
            gmean = float((g[held] * w[held]).sum() / w[held].sum()) if held.any() and w[held].sum() > 0 else (
                float(g[held].mean()) if held.any() else 0.0)
            key = f"{pair}.{'ab'[int(name)]}" if name != "pair" else f"{pair}"
            out[key] = {"mean": round(mean, 6), "max": round(float(np.abs(d).max()), 6),
                        "final": round(float(d[-1]), 6),
                        "pct_of_gross": round(100 * mean / gmean, 4) if gmean > 0 else None,
                        "since_s": round((t_end - t0) / 1e9, 3)}
    return out


def finite(x: float | None) -> float | None:
    """``x`` if finite, else None (JSON has no NaN)."""
    return x if x is not None and math.isfinite(x) else None
