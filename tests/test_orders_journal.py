"""The order state machine (execution/orders.py) and the journal (execution/journal.py): events in any order,
terminal states final, fills counted once; journal lines durable, a torn last line dropped on open."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

from execution.journal import Journal
from execution.orders import Order


def _order() -> Order:
    return Order(1, "Labc-7-a1", "BTC-USDT", "kucoin", 0, 1, Decimal("0.003"), Decimal("60000.1"), "ioc", 0, 0, 0, 7)


def test_ack_then_partial_fills_then_filled() -> None:
    o = _order()
    assert o.status == "pending_new" and not o.terminal
    assert o.on_ack("v1", 10) and o.status == "new" and o.t_ack_ns == 10
    assert not o.on_ack("v1", 11) and o.t_ack_ns == 10  # a repeated ack changes nothing
    assert o.on_fill("t1", Decimal("0.001"), 12) and o.status == "partially_filled"
    assert not o.on_fill("t1", Decimal("0.001"), 13) and o.filled == Decimal("0.001")  # same trade: once
    assert o.on_fill("t2", Decimal("0.002"), 14) and o.status == "filled" and o.terminal
    assert not o.on_done("filled", 15) and o.status == "filled"


def test_fill_before_ack_implies_the_ack_and_a_later_ack_still_counts_once() -> None:
    o = _order()
    assert o.on_fill("t1", Decimal("0.003"), 5) and o.status == "filled" and o.t_ack_ns == 5
    assert o.on_ack("v9", 6) and o.venue_id == "v9" and o.status == "filled"
    assert not o.on_ack("v9", 7)


def test_terminal_states_are_final() -> None:
    o = _order()
    o.on_ack("v", 1)
    o.on_fill("t1", Decimal("0.001"), 2)
    assert o.on_done("expired", 3) and o.status == "expired" and o.remaining == Decimal("0.002")
    assert not o.on_done("canceled", 4) and o.status == "expired"
    assert not o.on_reject("-2010", "late reject") and o.status == "expired"
    assert o.on_fill("t9", Decimal("0.001"), 5) and o.status == "expired" and o.filled == Decimal("0.002")


def test_reject_only_before_acceptance() -> None:
    o = _order()
    assert o.on_reject("200004", "Balance insufficient!") and o.status == "rejected" and o.terminal
    assert o.reject_code == "200004"
    p = _order()
    p.on_ack("v", 1)
    assert not p.on_reject("400100", "The clientOid is duplicated") and p.status == "new"


def test_journal_line_round_trips_an_order() -> None:
    o = _order()
    back = Order.from_journal(json.loads(json.dumps(o.journal())))
    assert (back.client_id, back.qty, back.price, back.side, back.signal_seq) == \
        (o.client_id, o.qty, o.price, o.side, o.signal_seq)


def test_journal_appends_syncs_and_drops_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "x.journal"
    j = Journal(path)
    j.write({"t": "order", "cid": "a"}, sync=True)
    j.write({"t": "ack", "cid": "a"})
    assert j.dirty
    j.sync()
    assert not j.dirty
    j.close()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    with open(path, "ab") as f:
        f.write(b'{"t":"fill","ci')  # a crash mid-write
    again = Journal(path)
    assert [e["t"] for e in again] == ["order", "ack"] and again.torn == len(b'{"t":"fill","ci')
    again.write({"t": "done", "cid": "a"})
    again.close()
    assert [json.loads(x)["t"] for x in path.read_text().splitlines()] == ["order", "ack", "done"]
