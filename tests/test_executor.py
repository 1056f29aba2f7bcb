"""The executor stage end to end: real pipelines (simulator -> KuCoin feed -> test signal source -> executor) with
the executor trading live against the simulator over its REST and private websocket, or in paper mode.

Checked against the simulator's own accounts (``GET /_sim/accounts``): fills and fees reconcile to the last unit,
no client id is ever executed twice, positions agree; faults (rejects, partial fills, lost acks, timeouts) end in
the right state with a reason in status; SIGKILLs of the executor at random moments never duplicate an order.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, free_port

from pipeline.records import EV_ACK, EV_FILL, EV_REJECT, EV_SENT, ORDER, PURPOSE_REPAIR

CONFIG = """
name = "{name}"

[[instruments]]
symbol = "{btc}"
venue = "{venue}"
tick = 0.1
lot = 0.00001

[[instruments]]
symbol = "{eth}"
venue = "{venue}"
tick = 0.01
lot = 0.0001

[services.exchange]
module = "feeds.simulator"
args = ["--port", "{port}", "--seed", "7", "--order-latency-ms", "{latency}"]
port = {port}

[rings.ticks]
type = "bbo"
[rings.books]
type = "book"
capacity = 16384
[rings.signals]
type = "signal"
capacity = 1024
[rings.orders]
type = "order"
capacity = 16384

{feed}

[stages.source]
kind = "signal_source_stage:SignalSource"
inputs = ["ticks"]
outputs = ["signals"]
[stages.source.params]
every = {every}
count = {count}

[stages.executor]
kind = "executor"
inputs = ["signals", "books"]
outputs = ["orders"]
[stages.executor.params]
mode = "{mode}"
credentials = "simulator"
venues = {{ {venue_params} }}
max_signal_age_ms = 60000
{extra}

[stages.order_sink]
kind = "check"
inputs = ["orders"]
[stages.order_sink.params]
contiguous_src = false
record = true

[supervisor]
heartbeat_timeout_s = 5.0
max_restarts = 200
restart_window_s = 600
"""

INITIAL = {"USDT": Decimal(1_000_000), "BTC": Decimal(10), "ETH": Decimal(100)}


FEEDS = {
    "kucoin": """[rings.trades]
type = "trade"
[stages.kucoin]
kind = "kucoin"
outputs = ["ticks", "trades", "books"]
[stages.kucoin.params]
rest_url = "http://127.0.0.1:{port}"
trades = true
books = true
[stages.trade_sink]
kind = "check"
inputs = ["trades"]
[stages.trade_sink.params]
contiguous_src = false""",
    "binance": """[stages.binance]
kind = "binance"
outputs = ["ticks", "books"]
[stages.binance.params]
rest_url = "http://127.0.0.1:{port}"
ws_url = "ws://127.0.0.1:{port}/binance"
books = true""",
    "binance-usdm": """[stages.usdm]
kind = "binance-usdm"
outputs = ["ticks", "books"]
[stages.usdm.params]
rest_url = "http://127.0.0.1:{port}"
ws_url = "ws://127.0.0.1:{port}/binance-usdm"
books = true""",
}
VENUE_PARAMS = {
    "kucoin": 'kucoin = {{ rest_url = "http://127.0.0.1:{port}" }}',
    "binance": 'binance = {{ rest_url = "http://127.0.0.1:{port}", '
               'ws_api_url = "ws://127.0.0.1:{port}/binance/ws-api/v3" }}',
    "binance-usdm": '"binance-usdm" = {{ rest_url = "http://127.0.0.1:{port}", '
                    'ws_api_url = "ws://127.0.0.1:{port}/binance-usdm/ws-fapi/v1", '
                    'user_ws_url = "ws://127.0.0.1:{port}/binance-usdm/private/ws" }}',
}
SYMBOLS = {"kucoin": ("BTC-USDT", "ETH-USDT"), "binance": ("BTCUSDT", "ETHUSDT"),
           "binance-usdm": ("BTCUSDT", "ETHUSDT")}


def config(mode: str = "live", every: int = 30, count: int = 4, latency: int = 0, extra: str = "",
           venue: str = "kucoin") -> tuple[str, int]:
    port = free_port()
    btc, eth = SYMBOLS[venue]
    text = CONFIG.format(name="{name}", port=port, mode=mode, every=every, count=count, latency=latency,
                         extra=extra, venue=venue, btc=btc, eth=eth, feed=FEEDS[venue].format(port=port),
                         venue_params=VENUE_PARAMS[venue].format(port=port))
    return text, port


def base_quote(symbol: str) -> tuple[str, str]:
    return (symbol.split("-")[0], "USDT") if "-" in symbol else (symbol.removesuffix("USDT"), "USDT")


def sim(port: int, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def execution(p) -> dict:
    return p.status()["execution"]


def journal(p) -> list[dict]:
    return [json.loads(line) for line in (p.run_dir / "executor.journal").read_text().splitlines()]


def settled(p, signals: int):
    """Wait until the executor has handled ``signals`` signals and has nothing working."""
    def done(s: dict) -> bool:
        ex = s.get("execution")
        src = next(x for x in s["stages"] if x["name"] == "source")
        return (ex is not None and src["records_out"] >= signals and ex["last_signal"] >= signals - 1
                and all(v["working"] == 0 and not v["waiting"] for v in ex["pairs"].values()))
    return p.wait_for(done, 120, f"{signals} signals executed")


def fills_by_asset(entries: list[dict], orders: dict[str, dict]) -> dict[str, Decimal]:
    """Balance change per asset implied by the journal's fills (KuCoin: fees in the quote asset)."""
    delta: dict[str, Decimal] = {}
    for e in entries:
        if e["t"] != "fill":
            continue
        o = orders[e["cid"]]
        base, quote = base_quote(o["sym"])
        qty, px, fee = Decimal(e["qty"]), Decimal(e["px"]), Decimal(e["fee"])
        delta[base] = delta.get(base, Decimal(0)) + o["side"] * qty
        delta[quote] = delta.get(quote, Decimal(0)) - o["side"] * qty * px
        delta[e["fee_asset"]] = delta.get(e["fee_asset"], Decimal(0)) - fee
    return delta


def check_reconciled(p, port: int, venue: str = "kucoin") -> dict:
    """The simulator's account equals the initial balances plus the journal's fills, to the last unit (USD-M:
    positions, fees and the wallet against the executor's realized PnL and fees); no client id was executed
    twice; the executor's positions equal the venue's."""
    entries = journal(p)
    orders = {e["cid"]: e for e in entries if e["t"] == "order"}
    acct = sim(port, "/_sim/accounts")[venue]
    delta = fills_by_asset(entries, orders)
    ex = execution(p)
    if venue == "binance-usdm":
        fees = sum((Decimal(e["fee"]) for e in entries if e["t"] == "fill"), Decimal(0))
        assert Decimal(acct["fees"].get("USDT", "0")) == fees == Decimal(ex["fees"]), (acct["fees"], fees, ex["fees"])
        for sym in SYMBOLS[venue]:
            assert Decimal(acct["positions"][sym]["amount"]) == delta.get(base_quote(sym)[0], Decimal(0))
        wallet = Decimal(acct["balances"]["USDT"]["wallet"])
        assert wallet == INITIAL["USDT"] + Decimal(ex["realized_pnl"]) - fees, (wallet, ex["realized_pnl"], fees)
    else:
        for asset, start in INITIAL.items():
            assert Decimal(acct["balances"][asset]["total"]) == start + delta.get(asset, Decimal(0)), (asset, delta)
    placed = acct["client_ids"]  # client id -> accepted placements (0: seen and refused)
    assert all(n <= 1 for n in placed.values()), {k: n for k, n in placed.items() if n > 1}
    assert set(placed) <= set(orders), set(placed) - set(orders)
    for sym in SYMBOLS[venue]:
        mine = Decimal(ex["positions"][sym]["executor"])
        assert mine == delta.get(base_quote(sym)[0], Decimal(0)), (sym, mine, delta)
    return ex


@pytest.mark.parametrize("venue", ["kucoin", "binance", "binance-usdm"])
def test_round_trips_reconcile_to_the_simulators_account(make_pipeline, venue: str) -> None:
    """Enter and exit both legs twice (long then short the spread) on each venue's real protocol (KuCoin HF REST
    + private websocket; Binance WS-API + user data): every order acked and filled, both legs back at zero,
    fills and fees equal to the simulator's account to the last unit."""
    text, port = config(count=4, venue=venue)
    p = make_pipeline(text)
    p.up()
    try:
        settled(p, 4)
        p.wait_for(lambda s: all(v["venue"] is not None for v in s["execution"]["positions"].values()), 30,
                   "venue view")
        ex = check_reconciled(p, port, venue)
        out = json.loads(cli("status", "--run-dir", str(p.run_dir), "--json").stdout)
        assert ex["orders"]["sent"] == 8 and ex["orders"]["filled"] == 8, ex["orders"]
        assert ex["orders"]["rejected"] == 0 and ex["risk_state"]["state"] == "ok", ex
        # settled orders leave memory after their grace (10 s), and no venue event came for an unknown order
        assert ex["orders"]["events_for_unknown_orders"] == 0, ex["orders"]
        p.wait_for(lambda s: s["execution"]["orders"]["in_memory"] == 0, 30, "settled orders out of memory")
        # back to flat, up to the base-asset fee Binance spot takes from each buy (dust below one step)
        for v in ex["pairs"].values():
            assert all(abs(Decimal(x)) < Decimal("0.0001") for x in v["position"]), ex["pairs"]
        assert Decimal(ex["fees"]) > 0
        recs = np.fromfile(p.run_dir / "order_sink.bin", dtype=ORDER)
    finally:
        p.down()
    # `pipeline status --json` carries the execution object, and no secret
    assert set(out["execution"]["orders"]) >= {"sent", "acked", "filled", "rejected", "canceled", "rejected_by_reason"}
    assert set(out["execution"]["positions"][SYMBOLS[venue][0]]) == {"executor", "venue", "avg_price"}
    assert {"realized_pnl", "fees", "risk_state"} <= set(out["execution"])
    assert "lowlat-sim-secret" not in json.dumps(out)
    sent = recs[recs["event"] == EV_SENT]
    acks = recs[recs["event"] == EV_ACK]
    assert len(sent) == 8 and len(acks) == 8
    # both legs of a signal are written before either is acknowledged
    for sig in np.unique(sent["signal_seq"]):
        s = sent[sent["signal_seq"] == sig]
        a = acks[acks["signal_seq"] == sig]
        assert len(s) == 2 and s["t_sent_ns"].max() < a["t_ack_ns"].min(), (s, a)
    # frame -> decision -> sent -> ack are ordered on every record
    assert (sent["t_origin_ns"] <= sent["t_decision_ns"]).all()
    assert (sent["t_decision_ns"] <= sent["t_sent_ns"]).all()
    assert (acks["t_sent_ns"] < acks["t_ack_ns"]).all()
    assert (recs[recs["event"] == EV_FILL]["last_qty"] > 0).all()
    assert not p.segments()


def test_paper_mode_trades_without_the_network(make_pipeline) -> None:
    """Paper fills come from the decision-time book in-process: the simulator's account never moves."""
    text, port = config(mode="paper", count=4, extra="[stages.executor.params.paper]\nlatency_ms = 2.0\n"
                        "fill_ratio = 1.0\ntaker_fee = 0.001")
    p = make_pipeline(text)
    p.up()
    try:
        settled(p, 4)
        ex = execution(p)
        acct = sim(port, "/_sim/accounts")["kucoin"]
    finally:
        p.down()
    assert ex["mode"] == "paper" and ex["orders"]["filled"] == 8, ex["orders"]
    assert Decimal(ex["fees"]) > 0
    assert not acct["client_ids"]
    assert {a: Decimal(b["total"]) for a, b in acct["balances"].items() if a in INITIAL} == INITIAL


def test_partial_fills_are_repaired_back_to_the_hedge(make_pipeline) -> None:
    """The simulator fills the next orders only in part: the executor re-sends the missing quantity until both
    legs are at target, and the simulator's account still reconciles."""
    text, port = config(count=1, every=60)
    p = make_pipeline(text)
    p.up()
    try:
        p.wait_for(lambda s: "execution" in s, 60, "executor running")
        sim(port, "/_sim/fault", {"kind": "order_partial", "venue": "kucoin", "count": 2, "ratio": 0.5})
        settled(p, 1)
        ex = check_reconciled(p, port)
        recs = np.fromfile(p.run_dir / "order_sink.bin", dtype=ORDER)
    finally:
        p.down()
    assert ex["orders"]["repairs"] >= 1, ex["orders"]
    assert on_target(ex["pairs"]["0"]), ex["pairs"]
    assert ((recs["purpose"] == PURPOSE_REPAIR) & (recs["event"] == EV_SENT)).sum() >= 1


def test_venue_rejects_end_rejected_with_the_reason_and_no_exposure(make_pipeline) -> None:
    """Insufficient balance on every attempt: each order ends rejected with the venue's code in status, the
    repairs give up and flatten what filled; nothing is sent twice. (Journal synced before each send here, the
    strict mode; the other tests run the default, synced right after.)"""
    text, port = config(count=1, every=60, extra='journal_sync = "before_send"')
    p = make_pipeline(text)
    p.up()
    try:
        p.wait_for(lambda s: "execution" in s, 60, "executor running")
        sim(port, "/_sim/fault", {"kind": "order_reject", "venue": "kucoin", "count": 1})
        settled(p, 1)
        ex = check_reconciled(p, port)
        recs = np.fromfile(p.run_dir / "order_sink.bin", dtype=ORDER)
    finally:
        p.down()
    assert ex["orders"]["rejected"] >= 1 and ex["orders"]["rejected_by_reason"].get("200004", 0) >= 1, ex["orders"]
    assert on_target(ex["pairs"]["0"]), ex["pairs"]
    # the reject's ORDER record names the venue's code through the status's reason table
    rejects = recs[recs["event"] == EV_REJECT]
    assert len(rejects) >= 1 and {ex["reason_codes"][int(x)] for x in rejects["reason"]} == {"200004"}, rejects


@pytest.mark.parametrize("fault", ["order_drop_ack", "order_timeout"])
def test_lost_acks_are_looked_up_never_sent_twice(make_pipeline, fault: str) -> None:
    """The venue executes the orders but the responses never arrive: the executor marks them unknown, asks the
    venue by client id, takes their fills from there, and sends nothing twice."""
    text, port = config(count=2, every=60, extra="order_timeout_ms = 1000")
    p = make_pipeline(text)
    p.up()
    try:
        p.wait_for(lambda s: "execution" in s, 60, "executor running")
        sim(port, "/_sim/fault", {"kind": fault, "venue": "kucoin", "count": 2})
        settled(p, 2)
        ex = check_reconciled(p, port)
    finally:
        p.down()
    assert ex["orders"]["unknown"] >= 1 and ex["orders"]["acked"] == ex["orders"]["sent"] == 4, ex["orders"]
    assert all(on_target(v) for v in ex["pairs"].values()), ex["pairs"]


def test_post_only_orders_rest_then_are_canceled_and_reposted(make_pipeline) -> None:
    """Maker-only orders at the touch: those that do not fill within ``rest_ms`` are canceled and the missing
    quantity re-posted (then flattened after the repairs); whatever happens, nothing is left working at the
    venue, nothing executed twice, and the account reconciles."""
    text, port = config(count=2, every=40, extra='order_type = "post_only"\nrest_ms = 300\nrepair_attempts = 1')
    p = make_pipeline(text)
    p.up()
    try:
        ex = settled(p, 2)["execution"]
        ex = check_reconciled(p, port)
        acct = sim(port, "/_sim/accounts")["kucoin"]
    finally:
        p.down()
    assert not acct["open_orders"], acct["open_orders"]
    assert ex["orders"]["sent"] >= 4 and ex["orders"]["sent"] == ex["orders"]["acked"] + ex["orders"]["rejected"]
    assert ex["orders"]["filled"] + ex["orders"]["canceled"] + ex["orders"]["expired"] == ex["orders"]["acked"], ex
    assert all(on_target(v) for v in ex["pairs"].values()), ex["pairs"]


def test_orders_below_the_venue_minimum_are_refused_locally(make_pipeline) -> None:
    """A signal whose legs are worth less than the venue's minimum funds is refused before anything leaves,
    with the reason in status and an ORDER-free ring; the venue sees nothing."""
    text, port = config(count=1, every=30)
    p = make_pipeline(text.replace("count = 1\n", "count = 1\nqty_a = 0.00001\nqty_b = 0.0001\n", 1))
    p.up()
    try:
        ex = settled(p, 1)["execution"]
        acct = sim(port, "/_sim/accounts")["kucoin"]
        recs = np.fromfile(p.run_dir / "order_sink.bin", dtype=ORDER)
    finally:
        p.down()
    assert ex["orders"]["sent"] == 0 and ex["orders"]["local_rejected"] == 1, ex["orders"]
    assert ex["orders"]["rejected_by_reason"] == {"notional_below_min": 1}, ex["orders"]
    assert not acct["client_ids"] and len(recs) == 0


def test_sigkill_between_send_ack_and_fill_never_duplicates(make_pipeline) -> None:
    """SIGKILL the executor 20 times while it trades (orders take 150 ms at the venue): a third at random moments,
    a third as soon as the journal shows an order sent and not acknowledged, a third as soon as it shows an order
    acknowledged and not yet filled. After each kill the venue holds no duplicate order; once all is settled, the
    executor's positions and fills equal the venue's account."""
    text, port = config(count=40, every=12, latency=150)
    p = make_pipeline(text)
    p.up()
    rng = random.Random(5)
    kills, killed = 0, 0
    try:
        p.wait_for(lambda s: "execution" in s, 60, "executor running")
        while kills < 20:
            s = p.wait_for(lambda s: p_stage(s, "executor")["state"] == "running"
                           and p_stage(s, "executor")["pid"], 60, "executor running")
            if p_stage(s, "executor")["pid"] == killed:  # the last one is dying, not yet replaced
                time.sleep(0.01)
                continue
            if kills % 3 == 0:
                time.sleep(rng.uniform(0.05, 0.8))
            else:
                wait_in_flight(p.run_dir / "executor.journal", "sent" if kills % 3 == 1 else "acked")
            killed = p_stage(s, "executor")["pid"]
            try:
                os.kill(killed, signal.SIGKILL)
            except ProcessLookupError:  # it was being restarted already
                continue
            kills += 1
            acct = sim(port, "/_sim/accounts")["kucoin"]
            assert all(n <= 1 for n in acct["client_ids"].values()), acct["client_ids"]
        settled(p, 40)
        p.wait_for(lambda s: all(v["venue"] is not None for v in s["execution"]["positions"].values()), 30,
                   "venue view")
        time.sleep(2.5)  # one more venue poll after the last fill
        ex = check_reconciled(p, port)
        for sym, v in ex["positions"].items():
            assert Decimal(v["executor"]) == Decimal(v["venue"]), (sym, v)
        restarts = p_stage(p.status(), "executor")["restarts"]
    finally:
        p.down()
    assert restarts >= 20
    # where the kills landed: at each restart ("boot" line), orders journaled but not acked / acked, not done
    state: dict[str, str] = {}
    landed = {"before_ack": 0, "before_fill": 0}
    for e in journal(p):
        if e["t"] == "order":
            state[e["cid"]] = "sent"
        elif e["t"] == "ack" and state.get(e["cid"]) == "sent":
            state[e["cid"]] = "acked"
        elif e["t"] in ("fill", "done", "reject"):
            state[e["cid"]] = "done"
        elif e["t"] == "boot":
            landed["before_ack"] += any(v == "sent" for v in state.values())
            landed["before_fill"] += any(v == "acked" for v in state.values())
    print("kills with orders in flight:", landed)
    assert landed["before_ack"] >= 3, landed


def wait_in_flight(path: Path, want: str, timeout: float = 5.0) -> None:
    """Poll the journal's tail until an order is in state ``want`` (``sent``: journaled, no ack; ``acked``: no
    fill or end yet), or the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state: dict[str, str] = {}
        for line in path.read_bytes().splitlines()[-40:]:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            cid = e.get("cid")
            if e["t"] == "order":
                state[cid] = "sent"
            elif e["t"] == "ack" and state.get(cid) == "sent":
                state[cid] = "acked"
            elif e["t"] in ("fill", "done", "reject"):
                state[cid] = "done"
        if want in state.values():
            return
        time.sleep(0.0005)


def on_target(pair: dict) -> bool:
    return [Decimal(x) for x in pair["target"]] == [Decimal(x) for x in pair["position"]]


def p_stage(s: dict, name: str) -> dict:
    return next(x for x in s["stages"] if x["name"] == name)
