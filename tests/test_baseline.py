"""``bench.baseline`` (the seed's design as one Python process) against a real simulator, run as
``python -m bench.baseline``: measurement orders reach the venue and are timed in order, tickers are logged."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import defaultdict
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from simulator_client import ROOT, Sim

from bench.baseline import run_baseline


@pytest.fixture(scope="module")
def sim() -> Any:
    s = Sim("--seed", "7").ready()
    yield s
    s.stop()


def run_bot(sim: Sim, out: Path, *args: str, timeout: float = 60) -> tuple[dict[str, int], float]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "bench.baseline", "--rest-url", sim.http, "--out", str(out), *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1]), time.monotonic() - t0


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_orders_and_ticks(sim: Sim, tmp_path: Path) -> None:
    out = tmp_path / "baseline.jsonl"
    summary, wall = run_bot(sim, out, "--duration", "8", "--orders-per-s", "2", "--measure-notional", "50")
    orders = lines(out)
    assert summary["orders"] == len(orders) >= 4, summary
    assert summary["errors"] == 0 and summary["windows"] > 0.9 * summary["ticks"], summary
    assert wall < 20
    # timing order, alternating enter / exit signals with both legs
    for o in orders:
        assert o["t_frame_ns"] <= o["t_decision_ns"] <= o["t_sent_ns"] <= o["t_ack_ns"], o
        assert o["http_status"] == 200 and o["code"] == "200000" and o["order_id"], o
    by_signal: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for o in orders:
        by_signal[o["signal"]].append(o)
    assert sorted(by_signal) == list(range(len(by_signal)))
    for sig, legs in by_signal.items():
        assert [o["leg"] for o in legs] == [0, 1]
        assert [o["symbol"] for o in legs] == ["BTC-USDT", "ETH-USDT"]
        action = "enter" if sig % 2 == 0 else "exit"
        assert {o["action"] for o in legs} == {action}
        side_a = 1 if action == "enter" else -1
        assert [o["side"] for o in legs] == [side_a, -side_a]
        assert len({o["t_frame_ns"] for o in legs}) == 1
        assert legs[0]["t_ack_ns"] <= legs[1]["t_sent_ns"]  # synchronous: leg B goes after leg A's answer
        for o in legs:
            assert abs(o["price"] / o["mid"] - 1 - o["side"] * 0.001) < 1e-4
            if action == "exit":
                enter = by_signal[sig - 1][o["leg"]]
                assert o["qty"] == enter["qty"]
    assert len({o["client_id"] for o in orders}) == len(orders)
    # the venue accepted every one; fills never exceed the order quantities
    acct = sim.get("/_sim/accounts")["kucoin"]
    mine = {o["client_id"]: o for o in orders}
    assert all(acct["client_ids"].get(cid) == 1 for cid in mine)
    filled: dict[str, Decimal] = defaultdict(Decimal)
    for f in acct["fill_log"]:
        if f["client_id"] in mine:
            filled[f["client_id"]] += Decimal(f["qty"])
    assert filled, "no measurement order filled"
    for cid, q in filled.items():
        assert q <= Decimal(repr(mine[cid]["qty"])), (cid, q)
    # tickers: both symbols, event time increasing per symbol
    ticks = lines(tmp_path / "baseline.ticks.jsonl")
    assert len(ticks) == summary["ticks"]
    per: dict[str, list[int]] = defaultdict(list)
    for t in ticks:
        assert 0 < t["bid"] < t["ask"]
        per[t["symbol"]].append(t["ts_ms"])
    assert set(per) == {"BTC-USDT", "ETH-USDT"}
    for ts in per.values():
        assert len(ts) > 10 and all(a < b for a, b in pairwise(ts))
    frames = [t["t_frame_ns"] for t in ticks]
    assert frames == sorted(frames)


def test_no_orders_at_rate_zero(sim: Sim, tmp_path: Path) -> None:
    """In process this time, stopped by ``stop_event``."""
    before = sim.get("/_sim/accounts")["kucoin"]["orders"]
    out = tmp_path / "none.jsonl"
    stop = threading.Event()
    timer = threading.Timer(3.0, stop.set)
    timer.start()
    t0 = time.monotonic()
    summary = run_baseline(sim.http, out, None, 0.0, 20.0, stop_event=stop)
    assert 3.0 <= time.monotonic() - t0 < 8.0
    assert summary["orders"] == 0 and summary["ticks"] > 0 and summary["errors"] == 0, summary
    assert out.read_text() == ""
    assert sim.get("/_sim/accounts")["kucoin"]["orders"] == before
