"""Watching a pipeline run: the stats stage's ``pairs`` section of `pipeline status`, `pipeline top --once` and the
Prometheus endpoint of `pipeline up --metrics-port`, on real pipelines (the simulator, the KuCoin feed, bars warmed
up from the simulator's candles, stats, the executor trading live against the simulator)."""

from __future__ import annotations

import itertools
import json
import math
import socket
import time
import urllib.request
from datetime import datetime

from conftest import BASE_CONFIG, cli, free_port
from prometheus_client.parser import text_string_to_metric_families

PAIR = "BTC-USDT/ETH-USDT"
POSITIONS = {"FLAT", "LONG_SPREAD", "SHORT_SPREAD"}

# entry_z tiny: the stats stage enters a position once z has stayed on one side for hold_ms (5 s of event time, so
# the executor has the feed's books by then and does not refuse the entry as stale data), and the executor sends
# orders (the latency histogram has samples) within seconds; exit_z tinier still, so exits are rare
CONFIG = """
name = "{name}"

[[instruments]]
symbol = "BTC-USDT"
venue = "kucoin"
tick = 0.1
lot = 0.00001

[[instruments]]
symbol = "ETH-USDT"
venue = "kucoin"
tick = 0.01
lot = 0.0001

[services.exchange]
module = "feeds.simulator"
args = ["--port", "{port}", "--seed", "7"]
port = {port}

[rings.ticks]
type = "bbo"
capacity = 65536
[rings.books]
type = "book"
capacity = 16384
[rings.bars]
type = "bar"
capacity = 65536
[rings.signals]
type = "signal"
capacity = 1024
[rings.orders]
type = "order"
capacity = 16384

[stages.kucoin]
kind = "kucoin"
outputs = ["ticks", "books"]
[stages.kucoin.params]
rest_url = "http://127.0.0.1:{port}"
trades = false
books = true

[stages.bars]
kind = "bars"
inputs = ["ticks"]
outputs = ["bars"]
[stages.bars.params]
warmup = true
rest_urls = {{ kucoin = "http://127.0.0.1:{port}" }}

[stages.stats]
kind = "stats"
inputs = ["bars"]
outputs = ["signals"]
[stages.stats.params]
pairs = [{{ a = "BTC-USDT", b = "ETH-USDT", notional = 1000.0 }}]
entry_z = 0.02
exit_z = 0.001
hold_ms = 5000

[stages.executor]
kind = "executor"
inputs = ["signals", "books"]
outputs = ["orders"]
[stages.executor.params]
mode = "live"
credentials = "simulator"
venues = {{ kucoin = {{ rest_url = "http://127.0.0.1:{port}" }} }}
max_signal_age_ms = 60000
[stages.executor.params.risk]
stale_ms = 10000

[stages.order_sink]
kind = "check"
inputs = ["orders"]
[stages.order_sink.params]
contiguous_src = false

[supervisor]
heartbeat_timeout_s = 5.0
"""

STAGES = ("kucoin", "bars", "stats", "executor", "order_sink")
RINGS = ("ticks", "books", "bars", "signals", "orders")


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """GET /metrics, parsed: sample name -> {sorted label items: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def by_label(samples: dict[tuple, float], label: str) -> dict[str, float]:
    return {dict(k)[label]: v for k, v in samples.items()}


def finite(x: object) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def test_pairs_status_top_and_metrics_on_a_trading_pipeline(make_pipeline) -> None:
    port, mport = free_port(), free_port()
    p = make_pipeline(CONFIG.format(name="{name}", port=port))
    p.up("--metrics-port", str(mport))
    rd = str(p.run_dir)
    try:
        def traded(s: dict) -> bool:
            pair = s.get("pairs", {}).get(PAIR, {})
            ex = s.get("execution", {}).get("orders", {})
            return finite(pair.get("z")) and pair.get("entries", 0) >= 1 and ex.get("acked", 0) >= 2
        p.wait_for(traded, 90, "a warm window, an entry and its two orders acked")

        # `pipeline status --json`: the stats stage's pairs, merged beside the executor's execution section
        s = json.loads(cli("status", "--run-dir", rd, "--json").stdout)
        pair = s["pairs"][PAIR]
        assert finite(pair["z"]) and finite(pair["beta"]) and 0.5 < pair["beta"] < 2, pair
        assert finite(pair["sigma"]) and pair["sigma"] > 0 and finite(pair["mu"]) and finite(pair["spread"]), pair
        assert pair["position"] in POSITIONS and pair["window_n"] == 120, pair
        assert pair["entries"] >= 1 and pair["exits"] >= 0 and isinstance(pair["last_signal_ms"], int), pair
        assert abs(pair["last_signal_ms"] / 1000 - time.time()) < 600, pair  # the simulator runs on wall time
        assert finite(pair["pnl_log_total"]), pair
        assert s["execution"]["orders"]["sent"] >= 2 and {x["name"] for x in s["stages"]} == set(STAGES)

        # `pipeline status`: the pairs table and the execution line under the stage and ring tables
        table = cli("status", "--run-dir", rd).stdout
        assert PAIR in table and "entries" in table and "execution (live): orders sent" in table, table

        # `pipeline top --once`: one frame naming every stage and ring, the pair and the order latencies
        t0 = time.monotonic()
        top = cli("top", "--once", "--run-dir", rd, "--interval", "0.5", timeout=60)
        assert top.returncode == 0 and time.monotonic() - t0 < 30
        frame = top.stdout
        for name in STAGES + RINGS:
            assert name in frame, (name, frame)
        assert "frame->sent" in frame and "sent->ack" in frame and PAIR in frame and "execution (live)" in frame
        rows = [line.split() for line in frame.splitlines() if line.strip()]
        assert all(any(r[0] == name and "running" in r for r in rows) for name in STAGES), frame

        # the metrics endpoint: per-stage counters for every stage, rising; ring, pair, execution and latency
        m1 = scrape(mport)
        time.sleep(1.5)
        m2 = scrape(mport)
        in1 = by_label(m1["lowlat_stage_records_in_total"], "stage")
        in2 = by_label(m2["lowlat_stage_records_in_total"], "stage")
        assert set(in1) == set(in2) == set(STAGES), in1
        assert all(in2[k] >= in1[k] for k in STAGES), (in1, in2)
        assert in2["bars"] > in1["bars"] and in2["stats"] > in1["stats"], (in1, in2)  # the tick-driven stages
        for name in ("records_out", "errors", "restarts", "waits"):
            assert set(by_label(m2[f"lowlat_stage_{name}_total"], "stage")) == set(STAGES), name
        assert set(by_label(m2["lowlat_ring_fill"], "ring")) == set(RINGS)
        assert finite(by_label(m2["lowlat_pair_z"], "pair")[PAIR])
        assert finite(by_label(m2["lowlat_pair_beta"], "pair")[PAIR])
        orders = by_label(m2["lowlat_execution_orders_total"], "kind")
        assert orders["sent"] >= 2 and orders["acked"] >= 2, orders
        assert set(by_label(m2["lowlat_execution_position"], "symbol")) == {"BTC-USDT", "ETH-USDT"}
        assert "lowlat_execution_realized_pnl" in m2 and "lowlat_execution_fees" in m2
        count = by_label(m2["lowlat_order_frame_to_sent_seconds_count"], "ring")["orders"]
        assert count >= 2, m2["lowlat_order_frame_to_sent_seconds_count"]
        buckets = sorted((float(dict(k)["le"]), v) for k, v in m2["lowlat_order_frame_to_sent_seconds_bucket"].items())
        assert buckets[0][0] == 25e-6 and buckets[-2][0] == 0.1 and buckets[-1] == (math.inf, count), buckets
        assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets)), buckets
        assert 0 < by_label(m2["lowlat_order_frame_to_sent_seconds_sum"], "ring")["orders"] < count * 10
    finally:
        p.down()
    # at stop the stage wrote its last figures: they agree with events.jsonl, which the stage writes independently
    final = json.loads((p.run_dir / "stats.status.json").read_bytes())["pairs"][PAIR]
    rows = [json.loads(line) for line in (p.run_dir / "events.jsonl").read_text().splitlines()]
    trades = [r for r in rows if r["action"] in ("ENTER_LONG", "ENTER_SHORT", "EXIT")]
    assert final["entries"] == sum(r["action"] != "EXIT" for r in trades) >= 1, (final, trades)
    assert final["exits"] == sum(r["action"] == "EXIT" for r in trades), (final, trades)
    last = trades[-1]
    assert final["last_signal_ms"] == int(datetime.fromisoformat(last["at_utc"]).timestamp() * 1000 + 0.5)
    assert final["position"] == {"ENTER_LONG": "LONG_SPREAD", "ENTER_SHORT": "SHORT_SPREAD"}.get(last["action"], "FLAT")
    assert math.isclose(final["pnl_log_total"], sum(math.log1p(r.get("pnl_pct", 0)) for r in trades if r["action"] ==
                                                    "EXIT"), abs_tol=1e-12)
    assert not p.segments()


def test_metrics_count_records_and_a_busy_port_stops_the_start(make_pipeline) -> None:
    """The synthetic pipeline with metrics; a second pipeline asking for the same port, detached or in the
    foreground, fails with one line and starts nothing; the first keeps serving."""
    text = BASE_CONFIG.format(name="{name}", speed=1, count=0, max_restarts=10)
    mport = free_port()
    p = make_pipeline(text, "a")
    p.up("--metrics-port", str(mport))
    m1 = scrape(mport)
    time.sleep(1.0)
    m2 = scrape(mport)
    in1 = by_label(m1["lowlat_stage_records_in_total"], "stage")
    in2 = by_label(m2["lowlat_stage_records_in_total"], "stage")
    assert set(in1) == {"source", "counter", "sink"}
    assert in2["counter"] > in1["counter"] > 0 and in2["sink"] > in1["sink"] > 0, (in1, in2)
    assert "lowlat_pair_z" not in m2 and "lowlat_execution_orders_total" not in m2  # no stats, no executor
    assert "lowlat_order_frame_to_sent_seconds_count" not in m2  # no order ring

    q = make_pipeline(text, "b")
    for extra in (["--detach"], ["--duration", "5"]):
        r = cli("up", "--config", str(q.config), "--run-dir", str(q.run_dir), "--metrics-port", str(mport), *extra,
                check=False, timeout=60)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1, (extra, r.stdout, r.stderr)
        assert f"--metrics-port {mport}" in lines[0] and "in use" in lines[0], lines
        assert not q.segments() and not (q.run_dir / "control.sock").exists()
        assert not (q.run_dir / "logs").exists() or not any((q.run_dir / "logs").iterdir())
    assert all(x["state"] == "running" for x in p.status()["stages"])
    assert by_label(scrape(mport)["lowlat_stage_records_in_total"], "stage")["sink"] > in2["sink"]

    # a port held by something else entirely: the same
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        busy = s.getsockname()[1]
        r = cli("up", "--config", str(q.config), "--run-dir", str(q.run_dir), "--metrics-port", str(busy),
                "--duration", "5", check=False, timeout=60)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "in use" in r.stderr, r.stderr
    p.down()
    assert not p.segments()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=2)
        raise AssertionError("the metrics endpoint outlived the pipeline")
    except OSError:
        pass
