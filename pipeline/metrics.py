"""Prometheus exposition of a running pipeline (``pipeline up --metrics-port N``): the supervisor serves
``http://127.0.0.1:N/metrics``, built on every scrape from ``Supervisor.status()`` (the figures of
``pipeline status --json``) and, for the latency histograms, from the ORDER records of the pipeline's ``order``
rings, read back without consuming them (``RingReader``). A scrape only reads: the stages never see it.

Metrics (all prefixed ``lowlat_``): per stage (label ``stage``) the counters ``stage_records_in``,
``stage_records_out``, ``stage_errors``, ``stage_restarts``, ``stage_waits`` and the gauges ``stage_running`` and
``stage_counter`` (label ``name``: the stage's own counters); per ring (label ``ring``) the gauges ``ring_fill``,
``ring_capacity`` and the counter ``ring_published``; with an executor, ``execution_orders`` (label ``kind``),
``execution_rejected`` (label ``reason``), ``execution_position`` (labels ``symbol``, ``view`` executor / venue),
``execution_realized_pnl``, ``execution_fees``, ``execution_risk_state`` (label ``state``, 1 for the current one);
with a stats stage, ``pair_z``, ``pair_beta``, ``pair_position`` (1 LONG_SPREAD, -1 SHORT_SPREAD, 0 FLAT),
``pair_entries``, ``pair_exits``, ``pair_pnl_log_total`` (label ``pair``); per order ring the histograms
``order_frame_to_sent_seconds`` (EV_SENT records: t_sent_ns - t_origin_ns) and ``order_sent_to_ack_seconds``
(EV_ACK records: t_ack_ns - t_sent_ns), cumulative over the records published since the server started
(records the producer overwrote between two scrapes are missed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from pipeline.records import sent_and_acked
from pipeline.ring import Ring, RingReader

BUCKETS_S = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1)
"""Upper bounds of the latency histograms' buckets, seconds (+Inf follows)."""
POSITION_VALUE = {"FLAT": 0, "LONG_SPREAD": 1, "SHORT_SPREAD": -1}


class MetricsError(RuntimeError):
    """The metrics endpoint cannot be served (port in use, ...)."""


class LatencyHistogram:
    """Cumulative histogram of latencies in seconds (buckets ``BUCKETS_S``)."""

    def __init__(self) -> None:
        self.counts = np.zeros(len(BUCKETS_S) + 1, dtype=np.int64)  # per bucket, not cumulative; last: > 0.1 s
        self.total = 0.0

    def add(self, seconds: np.ndarray) -> None:
        """Count the samples ``seconds``."""
        if len(seconds):
            self.counts += np.bincount(np.searchsorted(BUCKETS_S, seconds, side="left"),
                                       minlength=len(self.counts))
            self.total += float(seconds.sum())

    def buckets(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs, +Inf last."""
        cum = np.cumsum(self.counts)
        return [(floatToGoString(b), float(c)) for b, c in zip((*BUCKETS_S, float("inf")), cum, strict=True)]


class OrderLatency:
    """frame->sent and sent->ack histograms of one order ring, fed with the records published since the last
    ``update`` (read back, never consumed)."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.reader = RingReader(ring)
        self.to_sent = LatencyHistogram()
        self.to_ack = LatencyHistogram()

    def update(self) -> None:
        """Read the records published since the last call (at most capacity - 1) into the histograms."""
        sent, ack = sent_and_acked(self.reader.read())
        self.to_sent.add((sent["t_sent_ns"] - sent["t_origin_ns"]).astype(np.float64) / 1e9)
        self.to_ack.add((ack["t_ack_ns"] - ack["t_sent_ns"]).astype(np.float64) / 1e9)


def _float(x: object) -> float | None:
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def families(status: dict, latency: dict[str, OrderLatency] | None = None) -> list[Metric]:
    """The metric families of one status reply (and the order rings' latency histograms)."""
    out: list[Metric] = []
    stage_counters = [("records_in", "Input records consumed."), ("records_out", "Records published."),
                      ("errors", "Errors counted (the stage kept running)."), ("restarts", "Restarts of the stage."),
                      ("waits", "Times the stage found its input empty (or output full) and waited.")]
    for key, doc in stage_counters:
        m = CounterMetricFamily(f"lowlat_stage_{key}", doc, labels=["stage"])
        for s in status.get("stages", []):
            m.add_metric([s["name"]], float(s.get(key) or 0))
        out.append(m)
    running = GaugeMetricFamily("lowlat_stage_running", "1 when the stage runs.", labels=["stage"])
    own = GaugeMetricFamily("lowlat_stage_counter", "The stage's own counters.", labels=["stage", "name"])
    for s in status.get("stages", []):
        running.add_metric([s["name"]], 1.0 if s.get("state") == "running" else 0.0)
        for k, v in (s.get("counters") or {}).items():
            own.add_metric([s["name"], k], float(v))
    out += [running, own]

    fill = GaugeMetricFamily("lowlat_ring_fill", "Records published and not yet consumed.", labels=["ring"])
    cap = GaugeMetricFamily("lowlat_ring_capacity", "Slots of the ring.", labels=["ring"])
    pub = CounterMetricFamily("lowlat_ring_published", "Records published into the ring.", labels=["ring"])
    for r in status.get("rings", []):
        fill.add_metric([r["name"]], float(r["fill"]))
        cap.add_metric([r["name"]], float(r["capacity"]))
        pub.add_metric([r["name"]], float(r["producer_pos"]))
    out += [fill, cap, pub]

    ex = status.get("execution")
    if isinstance(ex, dict):
        orders = CounterMetricFamily("lowlat_execution_orders", "Order events by kind.", labels=["kind"])
        for k, v in (ex.get("orders") or {}).items():
            if isinstance(v, int):
                orders.add_metric([k], float(v))
        rej = CounterMetricFamily("lowlat_execution_rejected", "Rejects by venue code or local reason.",
                                  labels=["reason"])
        for k, v in ((ex.get("orders") or {}).get("rejected_by_reason") or {}).items():
            rej.add_metric([str(k)], float(v))
        pos = GaugeMetricFamily("lowlat_execution_position", "Position per symbol, base units.",
                                labels=["symbol", "view"])
        for sym, p in (ex.get("positions") or {}).items():
            for view in ("executor", "venue"):
                v = _float(p.get(view))
                if v is not None:
                    pos.add_metric([sym, view], v)
        out += [orders, rej, pos]
        for key, doc in (("realized_pnl", "Realized PnL, quote."), ("fees", "Fees paid, quote.")):
            v = _float(ex.get(key))
            if v is not None:
                out.append(GaugeMetricFamily(f"lowlat_execution_{key}", doc, value=v))
        risk = (ex.get("risk_state") or {}).get("state")
        if risk:
            g = GaugeMetricFamily("lowlat_execution_risk_state", "1 for the risk state now.", labels=["state"])
            for state in dict.fromkeys(("ok", "halted", "killed", risk)):
                g.add_metric([state], 1.0 if state == risk else 0.0)
            out.append(g)

    pairs = status.get("pairs")
    if isinstance(pairs, dict) and pairs:
        z = GaugeMetricFamily("lowlat_pair_z", "z-score of the pair's latest spread.", labels=["pair"])
        beta = GaugeMetricFamily("lowlat_pair_beta", "Hedge ratio of the pair.", labels=["pair"])
        pos = GaugeMetricFamily("lowlat_pair_position", "1 LONG_SPREAD, -1 SHORT_SPREAD, 0 FLAT.", labels=["pair"])
        ent = CounterMetricFamily("lowlat_pair_entries", "Entry signals.", labels=["pair"])
        exi = CounterMetricFamily("lowlat_pair_exits", "Exit signals.", labels=["pair"])
        pnl = GaugeMetricFamily("lowlat_pair_pnl_log_total", "Sum of closed trades' PnL in log-spread space.",
                                labels=["pair"])
        for name, p in pairs.items():
            for fam, key in ((z, "z"), (beta, "beta"), (pnl, "pnl_log_total")):
                v = _float(p.get(key))
                if v is not None:
                    fam.add_metric([name], v)
            pos.add_metric([name], float(POSITION_VALUE.get(p.get("position"), 0)))
            ent.add_metric([name], float(p.get("entries") or 0))
            exi.add_metric([name], float(p.get("exits") or 0))
        out += [z, beta, pos, ent, exi, pnl]

    if latency:
        h1 = HistogramMetricFamily("lowlat_order_frame_to_sent_seconds", "Market-data frame to order sent (EV_SENT).",
                                   labels=["ring"])
        h2 = HistogramMetricFamily("lowlat_order_sent_to_ack_seconds", "Order sent to venue ack (EV_ACK).",
                                   labels=["ring"])
        for name, lat in latency.items():
            h1.add_metric([name], lat.to_sent.buckets(), lat.to_sent.total)
            h2.add_metric([name], lat.to_ack.buckets(), lat.to_ack.total)
        out += [h1, h2]
    return out


class PipelineCollector(Collector):
    """Builds the families on every scrape. ``status``: the supervisor's status, or None while it is not running;
    ``order_rings``: the pipeline's order rings by name."""

    def __init__(self, status: Callable[[], dict | None], order_rings: Callable[[], dict[str, Ring]]) -> None:
        self.status = status
        self.order_rings = order_rings
        self.latency: dict[str, OrderLatency] = {}
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self.lock:  # scrapes may come in parallel: the histograms' cursors are shared
            status = self.status()
            if status is None:
                return iter(())
            for name, ring in self.order_rings().items():
                lat = self.latency.get(name)
                if lat is None or lat.ring is not ring:
                    lat = self.latency[name] = OrderLatency(ring)
                lat.update()
            return iter(families(status, self.latency))


class MetricsServer:
    """The HTTP endpoint on 127.0.0.1:``port`` (raises MetricsError, one line, when it cannot listen)."""

    def __init__(self, port: int, status: Callable[[], dict | None],
                 order_rings: Callable[[], dict[str, Ring]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PipelineCollector(status, order_rings))
        try:
            self.server, self.thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        except OSError as e:
            raise MetricsError(f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}: "
                               f"{e.strerror or e}") from None
        self.port = port

    def close(self) -> None:
        """Stop serving and free the port."""
        self.server.shutdown()
        self.server.server_close()
