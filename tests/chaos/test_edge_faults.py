"""Faults at the edges with the whole pipeline trading: configs/sim.toml (KuCoin feed, bars, stats, executor) live
against the simulator, measurement signals giving a steady flow of entries and exits. Each of the simulator's
faults in turn; after each one the pipeline is still up (no stage restarted), the risk state did the safe thing,
status names what happened, and trading goes on. At the end the simulator's account equals the executor's
journal to the last unit and no client id was executed twice."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections import Counter
from decimal import Decimal

import pytest
from conftest import cli, sim_toml
from test_executor import check_reconciled

from pipeline.config import to_toml

MEASURE_ORDERS_PER_S = 4.0
"""An entry and an exit (two orders each) every second."""


def fault(port: int, **spec) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/_sim/fault", data=json.dumps(spec).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert json.loads(r.read())["ok"], spec


def sim_stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/stats", timeout=5) as r:
        return json.loads(r.read())


def stage(s: dict, name: str) -> dict:
    return next(x for x in s["stages"] if x["name"] == name)


def feed(s: dict) -> dict:
    return stage(s, "kucoin")["counters"]


def journal(p) -> list[dict]:
    return [json.loads(x) for x in (p.run_dir / "executor.journal").read_text().splitlines()]


class Run:
    """The pipeline under test and what trading looked like before the current fault."""

    def __init__(self, p, port: int) -> None:
        self.p, self.port = p, port

    def now(self) -> dict:
        return self.p.status()

    def trading(self, what: str, timeout: float = 60) -> dict:
        """Wait until entries are traded again: two more measurement entries fully filled (intents journaled
        after this call whose orders all filled)."""
        start = len(journal(self.p))

        def done(_: dict) -> bool:
            tail = journal(self.p)[start:]
            entries = [e for e in tail if e["t"] == "intent" and e.get("measure") and e["action"] == 1]
            filled = {e["cid"] for e in tail if e["t"] == "done" and e.get("status") == "filled"}
            orders = [e for e in tail if e["t"] == "order"]
            sigs = {e["sig"] for e in entries}
            legs = [o for o in orders if o.get("sig") in sigs]
            return len(sigs) >= 2 and sum(o["cid"] in filled for o in legs) >= 4

        return self.p.wait_for(done, timeout, f"entries traded again after {what}")

    def blocked(self, s: dict, reason: str) -> int:
        return s["execution"]["risk_state"]["blocked"].get(reason, 0)

    def skips(self, reason: str) -> int:
        return sum(1 for e in journal(self.p) if e["t"] == "skip" and e["reason"] == reason)


@pytest.mark.timeout(900)
def test_every_edge_fault_with_the_whole_pipeline_trading(make_pipeline) -> None:
    raw = sim_toml()
    raw["name"] = "{name}"
    port = raw["services"]["exchange"]["port"]
    raw["stages"]["stats"]["params"]["measure_orders_per_s"] = MEASURE_ORDERS_PER_S
    raw["stages"]["executor"]["params"]["order_timeout_ms"] = 1000
    p = make_pipeline(to_toml(raw))
    p.up()
    r = Run(p, port)
    p.wait_for(lambda s: "execution" in s and s["execution"]["orders"]["filled"] >= 4, 180, "first fills")
    s0 = r.now()
    pids = {x["name"]: x["pid"] for x in s0["stages"]}
    assert all(pids.values()), pids

    # a dropped connection (every websocket of the venue: the feed and the executor's private order stream):
    # the feed reconnects and resyncs its books; the executor's user stream comes back; entries waited meanwhile
    c = feed(s0)
    fault(port, kind="drop", venue="kucoin")
    p.wait_for(lambda s: feed(s)["reconnects"] > c["reconnects"] and feed(s)["resyncs"] > c["resyncs"], 60,
               "the feed reconnected and resynced")
    p.wait_for(lambda s: s["execution"]["user_streams"].get("kucoin") == "up", 60, "the user stream back")
    assert "user stream lost" in (p.run_dir / "logs" / "executor.log").read_text()
    r.trading("a drop")

    # the venue holds its market data back for 5 s, then sends it in a burst: what was decided on it is late
    # (our receive time - the venue's event time, against the venue's usual): no entry on it
    late0 = r.blocked(r.now(), "late_data")
    fault(port, kind="stall", venue="kucoin", seconds=5, hold=True)
    s = p.wait_for(lambda s: r.blocked(s, "late_data") > late0, 60, "entries on the burst blocked as late")
    assert "late_data" in stage(s, "executor")["last_error"] or r.skips("late_data") > late0
    r.trading("a held-back burst")

    # a stall that loses its frames: the depth stream's next diff does not follow on: a gap, the book resynced
    c = feed(r.now())
    fault(port, kind="stall", venue="kucoin", seconds=3, hold=False)
    p.wait_for(lambda s: feed(s)["gaps"] > c["gaps"] and feed(s)["resyncs"] > c["resyncs"], 60,
               "the gap after the lost frames, and a resync")
    assert sim_stats(port)["venues"]["kucoin"]["frames_dropped"] > 0
    r.trading("a stall that lost frames")

    # a sequence gap and a burst of malformed frames: counted, the book resynced, nothing invalid published
    c = feed(r.now())
    fault(port, kind="skip_seq", venue="kucoin", symbol="ETH-USDT")
    fault(port, kind="malformed", venue="kucoin", count=12)
    p.wait_for(lambda s: feed(s)["gaps"] > c["gaps"] and feed(s)["resyncs"] > c["resyncs"] and
               feed(s)["parse_err"] + feed(s)["bad_value"] >= c["parse_err"] + c["bad_value"] + 10, 60,
               "the gap resynced and the malformed frames counted")
    r.trading("a gap and malformed frames")

    # REST 429, then 418 (Retry-After honoured: nothing sent into it), then 5xx (outcome unknown: asked)
    s = r.now()
    reasons0 = dict(s["execution"]["orders"]["rejected_by_reason"])
    hits0 = sim_stats(port)["faults_hit"].get("rest_error", 0)
    fault(port, kind="rest_error", venue="kucoin", status=429, count=2, retry_after=1)
    p.wait_for(lambda s: sim_stats(port)["faults_hit"].get("rest_error", 0) >= hits0 + 2, 30, "the 429s answered")
    r.trading("429s")
    fault(port, kind="rest_error", venue="kucoin", status=418, count=1, retry_after=2)
    p.wait_for(lambda s: sim_stats(port)["faults_hit"].get("rest_error", 0) >= hits0 + 3, 30, "the 418 answered")
    r.trading("a 418")
    s = r.now()
    reasons = s["execution"]["orders"]["rejected_by_reason"]
    told = sum(reasons.get(k, 0) - reasons0.get(k, 0) for k in ("429", "418", "rate_limit"))
    assert told >= 1, reasons  # (the executor's balance poll may have taken some of the errors instead)
    unknown0 = s["execution"]["orders"]["unknown"]
    fault(port, kind="rest_error", venue="kucoin", status=503, count=2)
    p.wait_for(lambda s: sim_stats(port)["faults_hit"].get("rest_error", 0) >= hits0 + 5, 30, "the 503s answered")
    r.trading("503s")

    # order entry: timeouts (executed, never answered), acks lost (executed, connection cut), fills before acks
    hit0 = sim_stats(port)["faults_hit"]
    fault(port, kind="order_timeout", venue="kucoin", count=2)
    p.wait_for(lambda s: sim_stats(port)["faults_hit"].get("order_timeout", 0) >= hit0.get("order_timeout", 0) + 2,
               60, "two orders timed out")
    r.trading("order timeouts")
    fault(port, kind="order_drop_ack", venue="kucoin", count=2)
    p.wait_for(lambda s: sim_stats(port)["faults_hit"].get("order_drop_ack", 0) >= hit0.get("order_drop_ack", 0)
               + 2, 60, "two acks lost")
    s = r.trading("lost acks")
    assert s["execution"]["orders"]["unknown"] >= unknown0 + 2, s["execution"]["orders"]
    fault(port, kind="fill_before_ack", venue="kucoin", count=4)
    r.trading("fills before acks")

    # the venue's clock 7 s ahead: signed orders refused (400002) until the client re-syncs; the feed counts the
    # exchange times ahead of ours; lateness follows the new usual at once
    s = r.now()
    skewed0 = feed(s)["skewed"]
    ts_rej0 = s["execution"]["orders"]["rejected_by_reason"].get("400002", 0)
    fault(port, kind="clock_skew", venue="kucoin", ms=7000)
    s = p.wait_for(lambda s: abs(s["execution"]["venue_clock_offset_ms"]["kucoin"] - 7000) < 1000, 60,
                   "the executor following the venue's clock")
    assert s["execution"]["orders"]["rejected_by_reason"].get("400002", 0) > ts_rej0
    assert feed(s)["skewed"] > skewed0
    assert re.search(r"kucoin clock \+[67]\.\d s", cli("status", "--run-dir", str(p.run_dir)).stdout)
    r.trading("a venue clock 7 s ahead")
    # ... and back by 7 s: everything the venue sends now looks 7 s late: no entry until its usual is known again
    late0 = r.blocked(r.now(), "late_data")
    fault(port, kind="clock_skew", venue="kucoin", ms=0)
    s = p.wait_for(lambda s: r.blocked(s, "late_data") > late0, 60, "entries blocked on a clock that jumped back")
    assert max(b["late_ms"] for b in s["execution"]["books"].values()) > 5000, s["execution"]["books"]
    assert re.search(r"USDT book [5-7]\.\d s late", cli("status", "--run-dir", str(p.run_dir)).stdout)
    r.trading("a venue clock back by 7 s", timeout=120)
    p.wait_for(lambda s: abs(s["execution"]["venue_clock_offset_ms"]["kucoin"]) < 1000, 60, "the clock re-synced")

    # every book still flows (none left stuck crossed or out of sync by the faults)
    p.wait_for(lambda s: all(b["age_ms"] is not None and b["age_ms"] < 1000 and b["late_ms"] < 1000
                             for b in s["execution"]["books"].values()), 30, "fresh books of both instruments")

    # the end: the market stops, the orders settle; nothing restarted, nothing doubled, positions reconcile
    fault(port, kind="stall", venue="kucoin", seconds=600, hold=False)
    time.sleep(1.0)
    s = p.wait_for(lambda s: all(v["working"] == 0 and not v["waiting"] for v in s["execution"]["pairs"].values()),
                   60, "orders settled")
    for x in s["stages"]:
        assert x["pid"] == pids[x["name"]] and x["restarts"] == 0 and x["state"] == "running", x
    assert s["execution"]["risk_state"]["state"] == "ok", s["execution"]["risk_state"]
    check_reconciled(p, port)
    # the executor's view of the venue (polled every 2 s) comes to the same positions
    p.wait_for(lambda s: all(v["venue"] is not None and Decimal(v["executor"]) == Decimal(v["venue"])
                             for v in s["execution"]["positions"].values()), 15, "the venue's positions polled")
    entries = journal(p)
    cids = [e["cid"] for e in entries if e["t"] == "order"]
    assert len(cids) == len(set(cids)) and len(cids) > 40, len(cids)
    # what the run did, for the README's figures (pytest -s)
    said = Counter(f"{e['t']} {e.get('reason') if e['t'] == 'skip' else e.get('code', '')}".strip()
                   for e in entries if e["t"] in ("skip", "reject", "unknown"))
    print(f"orders {len(cids)}, fills {sum(e['t'] == 'fill' for e in entries)}; {dict(sorted(said.items()))}; "
          f"feed {feed(s)}; faults hit {sim_stats(port)['faults_hit']}")
