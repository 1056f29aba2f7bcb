"""execution.risk: every limit, the reason counters and the ok -> halted -> killed -> ok transitions."""

from __future__ import annotations

import math

import msgspec
import orjson
import pytest

from execution.risk import REASONS, Lateness, Risk, RiskParams, utc_day

S = 1_000_000_000
MS = 1_000_000
NOW = 100 * S


def legs(na: float = 1000.0, nb: float = 1000.0, age_ms: int = 10, late_ms: int = 0
         ) -> list[tuple[str, float, int, int]]:
    return [("A", na, NOW - age_ms * MS, 0), ("B", nb, NOW - age_ms * MS, late_ms)]


def test_params_defaults_and_strict_decoding():
    p = RiskParams()
    assert (p.max_notional_leg, p.max_notional_pair, p.max_open_positions, p.max_daily_loss, p.stale_ms,
            p.max_orders_per_s, p.max_consecutive_rejects) == (5000.0, 10000.0, 4, 500.0, 2000, 20, 5)
    assert msgspec.json.decode(b'{"stale_ms": 500}', type=RiskParams).stale_ms == 500
    with pytest.raises(msgspec.ValidationError, match="max_notional"):
        msgspec.json.decode(b'{"max_notional": 1}', type=RiskParams)  # unknown field
    with pytest.raises(msgspec.ValidationError, match="max_daily_loss"):
        msgspec.json.decode(b'{"max_daily_loss": -1}', type=RiskParams)
    with pytest.raises(ValueError, match="max_notional_leg"):
        RiskParams(max_notional_leg=math.nan)


def test_entry_allowed_and_each_limit():
    r = Risk()
    assert r.check_entry(0, legs(), 0, NOW) is None
    # stale: older than stale_ms, or never updated
    assert r.check_entry(0, legs(age_ms=2001), 0, NOW) == "stale_data"
    assert r.check_entry(0, legs(age_ms=2000), 0, NOW) is None
    assert r.check_entry(0, [("A", 1.0, NOW, 0), ("B", 1.0, 0, 0)], 0, NOW) == "stale_data"
    # late: a leg's book arrived more than stale_ms later than that venue's usual
    assert r.check_entry(0, legs(late_ms=2001), 0, NOW) == "late_data"
    assert r.check_entry(0, legs(late_ms=2000), 0, NOW) is None
    # notional per leg (either sign, NaN refused) and per pair
    assert r.check_entry(0, legs(na=5000.01), 0, NOW) == "max_notional_leg"
    assert r.check_entry(0, legs(nb=-5000.01), 0, NOW) == "max_notional_leg"
    assert r.check_entry(0, legs(na=math.nan), 0, NOW) == "max_notional_leg"
    assert r.check_entry(0, legs(na=5000.0, nb=5000.0), 0, NOW) is None
    r2 = Risk(RiskParams(max_notional_pair=9000.0))
    assert r2.check_entry(0, legs(na=5000.0, nb=-4000.01), 0, NOW) == "max_notional_pair"
    assert r2.check_entry(0, legs(na=5000.0, nb=-4000.0), 0, NOW) is None
    # open positions
    assert r.check_entry(0, legs(), 3, NOW) is None
    assert r.check_entry(0, legs(), 4, NOW) == "max_open_positions"
    assert r.blocked == {"halted": 0, "killed": 0, "stale_data": 2, "late_data": 1, "max_notional_leg": 3,
                         "max_notional_pair": 0, "max_open_positions": 1, "max_orders_per_s": 0}
    assert r2.blocked["max_notional_pair"] == 1
    assert set(r.blocked) == set(REASONS)


def test_lateness_against_the_venues_usual_delay():
    lt = Lateness(["kucoin", "kucoin", "binance"])
    wall = 1_700_000_000_000
    for k in range(100):  # 50-90 ms transport, venue clock 300 ms behind ours
        assert lt.on_book(k % 2, wall + k * 100, wall + k * 100 - 350 - k % 5 * 10) <= 40
    wall += 10_000
    # frames held back 5 s and sent in a burst: late by the hold
    assert lt.on_book(0, wall, wall - 5_350) == 5_000
    assert lt.on_book(1, wall + 1, wall + 1 - 350) == 0 and lt.late_ms[:2] == [5_000, 0]
    # another venue has its own usual
    assert lt.on_book(2, wall, wall - 9_000) == 0
    # the venue's clock jumps back 7 s: every update is late until the window has passed, then usual again
    lates = [lt.on_book(0, wall + k * 1000, wall + k * 1000 - 7_350) for k in range(1, 40)]
    assert all(x == 7_000 for x in lates[: Lateness.WINDOW_MS // 1000 - Lateness.BUCKET_MS // 1000]), lates
    assert lates[-1] == 0, lates
    # ... and jumps ahead 10 s: the minimum follows at once
    wall += 40_000
    assert lt.on_book(1, wall, wall + 2_650) == 0 and lt.late_ms == [0, 0, 0]


def test_order_rate_sliding_window():
    r = Risk(RiskParams(max_orders_per_s=5))
    for i in range(3):
        r.on_order_sent(NOW + i * 100 * MS)  # at +0, +100, +200 ms
    t = NOW + 200 * MS
    assert r.orders_last_s(t) == 3
    assert r.check_entry(0, legs(), 0, t) is None  # 3 + 2 legs = 5
    r.on_order_sent(t)
    assert r.check_entry(0, legs(), 0, t) == "max_orders_per_s"  # 4 + 2 > 5
    assert r.check_reduce(t) is None  # 4 + 1
    r.on_order_sent(t)
    assert r.check_reduce(t) == "max_orders_per_s"
    # the first order leaves the window exactly one second after it was sent
    assert r.check_reduce(NOW + S - 1) == "max_orders_per_s"
    assert r.check_reduce(NOW + S) is None
    assert r.orders_last_s(NOW + S) == 4
    assert r.check_entry(0, legs(), 0, NOW + S + 100 * MS) is None  # +100 ms gone too: 3 + 2
    assert r.blocked["max_orders_per_s"] == 3
    assert r.check_reduce(NOW + S + 100 * MS, n_orders=2) is None
    assert r.check_reduce(NOW + S + 100 * MS, n_orders=3) == "max_orders_per_s"


def test_consecutive_rejects_halt_and_resume():
    r = Risk(RiskParams(max_consecutive_rejects=3))
    r.on_reject("-2010 insufficient balance")
    r.on_reject("-2010 insufficient balance")
    r.on_accept()  # an accepted order resets the count
    r.on_reject("a")
    r.on_reject("b")
    assert r.state == "ok" and r.consecutive_rejects == 2
    r.on_reject("-1013 Filter failure: LOT_SIZE")
    assert r.state == "halted"
    assert r.reason.startswith("max_consecutive_rejects") and "LOT_SIZE" in r.reason
    assert r.check_entry(0, legs(), 0, NOW) == "halted"
    assert r.check_reduce(NOW) is None  # exits and repairs still go when halted
    r.on_reject("more")  # stays halted, reason kept
    assert r.state == "halted" and "LOT_SIZE" in r.reason
    r.resume()
    assert (r.state, r.reason, r.consecutive_rejects) == ("ok", "", 0)
    assert r.check_entry(0, legs(), 0, NOW) is None
    assert r.blocked["halted"] == 1


def test_daily_loss_kill_flatten_and_day_roll():
    day0 = utc_day(1_700_000_000_000)
    assert utc_day(0) == 0 and utc_day(86_399_999) == 0 and utc_day(86_400_000) == 1
    r = Risk(RiskParams(max_daily_loss=100.0))
    r.on_pnl(-60.0, day0)
    r.on_pnl(-100.0, day0)  # exactly the limit: still ok
    assert r.state == "ok"
    # a new UTC day: its loss counts from the previous day's last value (-100)
    r.on_pnl(-150.0, day0 + 1)
    r.on_pnl(-190.0, day0 + 1)
    r.on_pnl(-195.0, day0)  # a late event of the previous day counts in the current one
    assert r.state == "ok" and r.snapshot()["daily_pnl"] == -95.0
    r.on_pnl(-200.5, day0 + 1)
    assert r.state == "killed" and r.reason.startswith("max_daily_loss")
    # killed: no entries; reductions allowed while the executor flattens, then blocked
    assert r.check_entry(0, legs(), 0, NOW) == "killed"
    assert r.check_reduce(NOW) is None
    r.on_flattened()
    assert r.check_reduce(NOW) == "killed"
    r.on_reject("x")  # rejects never downgrade a kill
    r.on_reject("x")
    r.on_reject("x")
    r.on_reject("x")
    r.on_reject("x")
    assert r.state == "killed"
    assert r.blocked["killed"] == 2
    # resume: ok again, the day's loss counts afresh from the current PnL
    r.resume()
    assert r.state == "ok" and not r.flattened
    r.on_pnl(-250.0, day0 + 1)
    assert r.state == "ok"
    r.on_pnl(-301.0, day0 + 1)
    assert r.state == "killed"


def test_halt_kill_commands_and_snapshot():
    r = Risk()
    r.halt("user stream down")
    assert (r.state, r.reason) == ("halted", "user stream down")
    r.kill("operator")
    assert (r.state, r.reason) == ("killed", "operator")
    r.halt("ignored")  # a halt never downgrades a kill
    assert r.state == "killed"
    r.on_pnl(-10_000.0, 1)  # already killed: reason kept
    assert r.reason == "operator"
    r.on_order_sent(NOW)
    snap = r.snapshot(NOW)
    assert orjson.loads(orjson.dumps(snap)) == snap
    assert snap["state"] == "killed" and snap["orders_last_s"] == 1 and snap["params"]["max_orders_per_s"] == 20
    assert set(snap["blocked"]) == set(REASONS)
    assert "orders_last_s" not in r.snapshot()
