"""The executor's risk limits and venue faults in real pipelines against the simulator: each block or fault ends
in the right risk state with its reason in `pipeline status`, nothing is sent twice and the simulator's account
still reconciles with the executor's journal (helpers in test_executor)."""

from __future__ import annotations

from decimal import Decimal

from conftest import cli
from test_executor import check_reconciled, config, on_target, settled, sim


def _up(make_pipeline, text: str):
    p = make_pipeline(text)
    p.up()
    p.wait_for(lambda s: "execution" in s, 60, "executor running")
    return p


def test_daily_loss_kill_switch_flattens_and_stays_killed(make_pipeline) -> None:
    """A daily-loss limit below one trade's fees: the first entry's fills trip the kill switch, the executor
    flattens both legs and refuses every later entry with the reason ``killed``; a restart stays killed."""
    text, port = config(count=3, every=40, extra="[stages.executor.params.risk]\nmax_daily_loss = 0.05")
    p = _up(make_pipeline, text)
    try:
        ex = settled(p, 3)["execution"]
        assert ex["risk_state"]["state"] == "killed" and "max_daily_loss" in ex["risk_state"]["reason"], ex
        assert ex["orders"]["flattens"] >= 1 and ex["orders"]["rejected_by_reason"].get("killed", 0) >= 1, ex

        assert all(Decimal(x) == 0 for x in ex["pairs"]["0"]["position"]), ex["pairs"]
        check_reconciled(p, port)
        old = next(x for x in p.status()["stages"] if x["name"] == "executor")["pid"]
        cli("restart", "executor", "--run-dir", str(p.run_dir))
        s = p.wait_for(lambda s: next(x for x in s["stages"] if x["name"] == "executor")["pid"] not in (None, old)
                       and s["execution"]["last_signal"] >= 2, 60, "executor restarted")
        assert s["execution"]["risk_state"]["state"] == "killed", s["execution"]["risk_state"]
    finally:
        p.down()


def test_entries_without_fresh_book_data_are_blocked_as_stale(make_pipeline) -> None:
    """No book ring feeds the executor, so no leg has a recent book: every entry is blocked with
    ``stale_data`` and nothing reaches the venue."""
    text, port = config(count=2, every=30)
    text = text.replace('inputs = ["signals", "books"]', 'inputs = ["signals"]')
    text += ('\n[stages.book_sink]\nkind = "check"\ninputs = ["books"]\n[stages.book_sink.params]\n'
             'contiguous_src = false\n')
    p = _up(make_pipeline, text)
    try:
        ex = settled(p, 2)["execution"]
        acct = sim(port, "/_sim/accounts")["kucoin"]
    finally:
        p.down()
    assert ex["orders"]["sent"] == 0 and ex["orders"]["rejected_by_reason"].get("stale_data", 0) == 1, ex["orders"]
    assert ex["risk_state"]["blocked"]["stale_data"] == 1 and not acct["client_ids"]


def test_consecutive_rejects_halt_new_risk(make_pipeline) -> None:
    """Every order rejected (insufficient balance): after ``max_consecutive_rejects`` the executor halts; the
    repairs give up and flatten, later entries are refused with ``halted``, and nothing executed twice."""
    text, port = config(count=3, every=40, extra="[stages.executor.params.risk]\nmax_consecutive_rejects = 2")
    p = _up(make_pipeline, text)
    try:
        sim(port, "/_sim/fault", {"kind": "order_reject", "venue": "kucoin", "count": 100})
        ex = settled(p, 3)["execution"]
        check_reconciled(p, port)
    finally:
        p.down()
    assert ex["risk_state"]["state"] == "halted" and "200004" in ex["risk_state"]["reason"], ex["risk_state"]
    assert ex["orders"]["rejected_by_reason"].get("200004", 0) >= 2, ex["orders"]
    assert ex["orders"]["rejected_by_reason"].get("halted", 0) >= 1, ex["orders"]
    assert ex["orders"]["filled"] == 0 and on_target(ex["pairs"]["0"]), ex


def test_venue_429_is_honoured_and_nothing_is_sent_into_it(make_pipeline) -> None:
    """The venue answers 429 with Retry-After: the order is rejected with the venue's status as reason, the
    client's limiter holds every order until Retry-After (refused locally as ``rate_limit``, never sent), and
    the pair still ends on target."""
    text, port = config(count=1, every=60)
    p = _up(make_pipeline, text)
    try:
        sim(port, "/_sim/fault", {"kind": "rest_error", "venue": "kucoin", "status": 429, "count": 1,
                                  "retry_after": 5})
        ex = settled(p, 1)["execution"]
        ex = check_reconciled(p, port)
        hits = sim(port, "/_sim/stats")
    finally:
        p.down()
    # the 429 may hit an order (reason "429") or the executor's balance poll; either way the limiter then
    # refuses orders locally ("rate_limit") until Retry-After, and the repair after it completes the trade
    reasons = ex["orders"]["rejected_by_reason"]
    assert reasons.get("429", 0) + reasons.get("rate_limit", 0) >= 1, reasons
    assert hits["faults_hit"].get("rest_error", 0) == 1, hits
    pair = ex["pairs"]["0"]
    assert on_target(pair) and Decimal(pair["target"][0]) > 0, pair


def test_fills_before_acks_keep_the_state_machine_right(make_pipeline) -> None:
    """The venue's user stream delivers the fills before the order responses: every order still ends filled,
    acked once, and the account reconciles."""
    text, port = config(count=2, every=40)
    p = _up(make_pipeline, text)
    try:
        sim(port, "/_sim/fault", {"kind": "fill_before_ack", "venue": "kucoin", "count": 4})
        settled(p, 2)
        ex = check_reconciled(p, port)
    finally:
        p.down()
    assert ex["orders"]["sent"] == ex["orders"]["acked"] == ex["orders"]["filled"] == 4, ex["orders"]
