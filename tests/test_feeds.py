"""Feed stages against the local exchange simulator, as real processes under the supervisor: the KuCoin and
Binance feeds connect over loopback exactly as they would to the venue, survive every injected fault (counting and
resyncing), never put an invalid record in a ring, and a feed killed with SIGKILL goes on writing the same ring."""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import numpy as np
import pytest
from conftest import SHARED, feed_sinks, free_port

from pipeline.records import BBO, BOOK, TRADE

FEED_CONFIG = """
name = "{name}"

[[instruments]]
symbol = "BTC-USDT"
venue = "kucoin"
tick = 0.1

[[instruments]]
symbol = "ETH-USDT"
venue = "kucoin"
tick = 0.01

[[instruments]]
symbol = "BTCUSDT"
venue = "binance"
tick = 0.01

[[instruments]]
symbol = "ETHUSDT"
venue = "binance-usdm"
tick = 0.01

[services.exchange]
module = "feeds.simulator"
args = ["--port", "{port}", "--seed", "5", "--speed", "4"]
port = {port}

[rings.kc_ticks]
type = "bbo"
[rings.kc_trades]
type = "trade"
[rings.kc_books]
type = "book"
capacity = 16384
[rings.bn_ticks]
type = "bbo"
[rings.bn_books]
type = "book"
capacity = 16384
[rings.um_ticks]
type = "bbo"
[rings.um_books]
type = "book"
capacity = 16384

[stages.kucoin]
kind = "kucoin"
outputs = ["kc_ticks", "kc_trades", "kc_books"]
[stages.kucoin.params]
rest_url = "http://127.0.0.1:{port}"
trades = true
books = true
stall_s = 2.0
reconnect_initial_s = 0.05
reconnect_max_s = 0.5

[stages.binance]
kind = "binance"
outputs = ["bn_ticks", "bn_books"]
[stages.binance.params]
rest_url = "http://127.0.0.1:{port}"
ws_url = "ws://127.0.0.1:{port}/binance"
books = true
stall_s = 2.0
reconnect_initial_s = 0.05
reconnect_max_s = 0.5

[stages.usdm]
kind = "binance-usdm"
outputs = ["um_ticks", "um_books"]
[stages.usdm.params]
rest_url = "http://127.0.0.1:{port}"
ws_url = "ws://127.0.0.1:{port}/binance-usdm"
books = true
stall_s = 2.0
reconnect_initial_s = 0.05
reconnect_max_s = 0.5

{sinks}

[supervisor]
heartbeat_timeout_s = 3.0
backoff_initial_s = 0.02
backoff_max_s = 0.2
max_restarts = 20
"""

SINKS = {"kc_ticks": BBO, "kc_trades": TRADE, "kc_books": BOOK, "bn_ticks": BBO, "bn_books": BOOK,
         "um_ticks": BBO, "um_books": BOOK}


def _config(port: int) -> str:
    sinks = feed_sinks(SINKS)
    return FEED_CONFIG.replace("{port}", str(port)).replace("{sinks}", sinks)


def _fault(port: int, **body) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/_sim/fault", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert json.loads(r.read())["ok"]


def _counters(p, stage: str) -> dict:
    return p.stage(stage)["counters"]


def _down_and_check(p) -> dict[str, int]:
    """Stop the pipeline; every record every sink kept is a valid record, and no sink saw a gap or a duplicate.
    Returns how many records per ring."""
    sinks = {s["name"]: s["counters"] for s in p.status()["stages"] if s["name"].startswith("s_")}
    p.down()
    counts = {}
    for ring, dtype in SINKS.items():
        recs = p.sink_records(dtype, f"s_{ring}")
        counts[ring] = len(recs)
        if not len(recs):
            continue
        assert (np.diff(recs["seq"].astype(np.int64)) == 1).all(), ring
        assert (np.diff(recs["src_seq"].astype(np.int64)) >= 0).all(), ring
        assert (recs["ts_event_ms"] > 1_000_000_000_000).all(), ring
        if dtype is BBO:
            for f in ("bid_px", "ask_px", "bid_qty", "ask_qty"):
                assert np.isfinite(recs[f]).all() and (recs[f] > 0).all(), (ring, f)
            assert (recs["bid_px"] < recs["ask_px"]).all(), ring
            for inst in np.unique(recs["instrument"]):
                vseq = recs["venue_seq"][recs["instrument"] == inst].astype(np.int64)
                assert (np.diff(vseq) > 0).all(), f"{ring}: venue_seq of instrument {inst} not increasing"
        elif dtype is TRADE:
            assert (recs["price"] > 0).all() and (recs["qty"] > 0).all() and np.isin(recs["side"], (1, -1)).all()
        else:
            n = recs["n_bids"].min(), recs["n_asks"].min()
            assert min(n) >= 1, ring
            assert (recs["bid_px"][:, 0] < recs["ask_px"][:, 0]).all(), ring
            for i in range(len(recs)):
                b = recs["bid_px"][i, : recs["n_bids"][i]]
                a = recs["ask_px"][i, : recs["n_asks"][i]]
                assert (np.diff(b) < 0).all() and (np.diff(a) > 0).all(), f"{ring}: levels out of order"
    for name, st in sinks.items():
        assert st["gaps"] == 0 and st["dups"] == 0, (name, st)
    return counts


@pytest.fixture
def feeds(make_pipeline):
    port = free_port()
    p = make_pipeline(_config(port))
    p.up()
    p.port = port
    p.wait_for(lambda s: all(st["records_out"] > 20 for st in s["stages"] if st["name"] in ("kucoin", "binance",
                                                                                             "usdm")),
               60, "records from every feed")
    return p


def test_feeds_survive_every_fault_and_keep_rings_clean(feeds):
    p, port = feeds, feeds.port
    for stage in ("kucoin", "binance", "usdm"):
        c = _counters(p, stage)
        assert c["frames"] > 0 and c["parse_err"] == 0 and c["bad_value"] == 0, (stage, c)
    venues = {"kucoin": "kucoin", "binance": "binance", "usdm": "binance-usdm"}

    def after(stage: str, counter: str, before: int, what: str, timeout: float = 30):
        p.wait_for(lambda s: next(x for x in s["stages"] if x["name"] == stage)["counters"][counter] > before,
                   timeout, f"{stage}: {what}")
        out = p.stage(stage)["records_out"]
        p.wait_for(lambda s: next(x for x in s["stages"] if x["name"] == stage)["records_out"] > out + 5,
                   timeout, f"{stage}: records again after {what}")

    # a dropped connection: reconnect (KuCoin asks for a fresh token), resubscribe, resync the books
    for stage, venue in venues.items():
        c = _counters(p, stage)
        _fault(port, kind="drop", venue=venue)
        after(stage, "reconnects", c["reconnects"], "reconnect after drop")
        assert _counters(p, stage)["resyncs"] > c["resyncs"], "a new connection resyncs the book"
    # a sequence gap in the depth stream: that symbol's book is resynced from a new snapshot
    for stage, venue, sym in (("kucoin", "kucoin", "BTC-USDT"), ("binance", "binance", "BTCUSDT"),
                              ("usdm", "binance-usdm", "ETHUSDT")):
        c = _counters(p, stage)
        _fault(port, kind="skip_seq", venue=venue, symbol=sym)
        after(stage, "gaps", c["gaps"], "gap seen")
        assert _counters(p, stage)["resyncs"] > c["resyncs"]
    # malformed frames: counted, logged, never in a ring
    for stage, venue in venues.items():
        c = _counters(p, stage)
        _fault(port, kind="malformed", venue=venue, count=6)
        p.wait_for(lambda s, st=stage, c=c: (lambda k: k["parse_err"] + k["bad_value"] >= c["parse_err"] +
                                             c["bad_value"] + 4)(next(x for x in s["stages"]
                                                                      if x["name"] == st)["counters"]),
                   30, f"{stage}: malformed frames counted")
    # a stalled stream (socket open, no data): the feed notices and reconnects
    c = _counters(p, "kucoin")
    _fault(port, kind="stall", venue="kucoin", seconds=4)
    after("kucoin", "reconnects", c["reconnects"], "reconnect after a stall", 40)
    # REST answering 429 then 5xx: the token / snapshot requests are retried with backoff
    c = _counters(p, "kucoin")
    _fault(port, kind="rest_error", venue="kucoin", status=429, count=2)
    _fault(port, kind="drop", venue="kucoin")
    after("kucoin", "reconnects", c["reconnects"], "reconnect through 429s")
    c = _counters(p, "usdm")
    _fault(port, kind="rest_error", venue="binance-usdm", status=503, count=2)
    _fault(port, kind="skip_seq", venue="binance-usdm", symbol="ETHUSDT")
    after("usdm", "gaps", c["gaps"], "resync through 503s")
    for stage in venues:
        st = p.stage(stage)
        assert st["state"] == "running" and st["restarts"] == 0, st
        assert st["errors"] > 0 and st["last_error"], "faults are reported in the status row"
    counts = _down_and_check(p)
    assert all(counts[r] > 0 for r in SINKS), counts


def test_feed_killed_with_sigkill_goes_on_writing_the_same_ring(feeds):
    p = feeds
    before = p.stage("kucoin")
    pos_before = next(r for r in p.status()["rings"] if r["name"] == "kc_ticks")["producer_pos"]
    os.kill(before["pid"], signal.SIGKILL)
    p.wait_for(lambda s: next(x for x in s["stages"] if x["name"] == "kucoin")["restarts"] == 1, 30, "restart")
    # records_out sums all of the stage's rings; what the assertion needs is 20 more ticks in kc_ticks
    p.wait_for(lambda s: next(x for x in s["stages"] if x["name"] == "kucoin")["state"] == "running" and
               next(r for r in s["rings"] if r["name"] == "kc_ticks")["producer_pos"] > pos_before + 20,
               60, "ticks after the restart")
    _down_and_check(p)
    recs = p.sink_records(BBO, "s_kc_ticks")
    assert recs["seq"][0] == 0 and len(recs) > pos_before + 20, "one stream, before and after the kill"
    resync = np.flatnonzero(recs["flags"] & 4)
    assert len(resync) >= 2, "the first records after each (re)connect carry FLAG_RESYNC"


RECORD_CONFIG = """
name = "{name}"

[[instruments]]
symbol = "BTC-USDT"
venue = "kucoin"
tick = 0.1

[[instruments]]
symbol = "ETH-USDT"
venue = "kucoin"
tick = 0.01

[services.exchange]
module = "feeds.simulator"
args = ["--port", "{port}", "--seed", "9", "--speed", "4"]
port = {port}

[rings.ticks]
type = "bbo"
[rings.books]
type = "book"
capacity = 16384

[stages.kucoin]
kind = "kucoin"
outputs = ["ticks", "books"]
[stages.kucoin.params]
rest_url = "http://127.0.0.1:{port}"
books = true
record = "rec/kucoin"
reconnect_initial_s = 0.05

[stages.sink]
kind = "check"
inputs = ["ticks"]
[stages.sink.params]
contiguous_src = false

[stages.book_sink]
kind = "check"
inputs = ["books"]
[stages.book_sink.params]
contiguous_src = false
"""


def test_recorded_frames_replay_to_the_records_the_live_feed_published(make_pipeline, tmp_path):
    from conftest import cli

    port = free_port()
    p = make_pipeline(RECORD_CONFIG.replace("{port}", str(port)))
    p.up()
    p.wait_for(lambda s: next(x for x in s["stages"] if x["name"] == "kucoin")["records_out"] > 200, 60, "records")
    _fault(port, kind="drop", venue="kucoin")  # the recording holds both connections and both snapshots
    p.wait_for(lambda s: next(x for x in s["stages"] if x["name"] == "kucoin")["counters"]["reconnects"] >= 1 and
               next(x for x in s["stages"] if x["name"] == "sink")["records_in"] > 400, 60, "records after reconnect")
    p.down()
    files = sorted((p.run_dir / "rec").glob("kucoin.*.rec.gz"))
    assert files, "the feed wrote a recording"
    out = tmp_path / "dump.jsonl"
    cli("replay", ",".join(map(str, files)), "--dump", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    names = ["BTC-USDT", "ETH-USDT"]
    for ring, kind, stage, dtype in (("ticks", "bbo", "sink", BBO), ("books", "book", "book_sink", BOOK)):
        live = p.sink_records(dtype, stage)
        replayed = [r for r in rows if r["kind"] == kind]
        assert len(live) > 100 and len(replayed) >= len(live), ring
        for rec, row in zip(live, replayed, strict=False):  # the sinks may stop a few records before the feed
            assert names[rec["instrument"]] == row["symbol"] and rec["venue_seq"] == row["exch_seq"]
            assert rec["ts_event_ms"] == row["ts_event_ms"]
            if kind == "bbo":
                assert (rec["bid_px"], rec["ask_px"], rec["bid_qty"]) == (row["bid"], row["ask"], row["bid_qty"])
            else:
                n = rec["n_bids"]
                assert rec["bid_px"][:n].tolist() == [b[0] for b in row["bids"]]
                assert rec["ask_qty"][: rec["n_asks"]].tolist() == [a[1] for a in row["asks"]]


def test_pipeline_replay_feeds_a_running_pipeline_in_place_of_its_feed(make_pipeline, tmp_path):
    from conftest import cli

    data = SHARED / "data" / "recorded"
    usdm = data / "binance_2024-08-08" / "usdm_btcusdt_20240808.gz"
    if not usdm.exists():
        pytest.skip("shared/data/recorded is not beside the project")
    port = free_port()
    p = make_pipeline(RECORD_CONFIG.replace("{port}", str(port)))
    p.up()
    p.wait_for(lambda s: next(x for x in s["stages"] if x["name"] == "sink")["records_in"] > 50, 60, "records")
    run = cli("replay", str(usdm), "--stage", "kucoin", "--run-dir", str(p.run_dir), timeout=300)
    assert "stage kucoin resumed" in run.stdout
    p.wait_for(lambda s: next(x for x in s["stages"] if x["name"] == "kucoin")["state"] == "running", 60, "resumed")
    after = p.stage("sink")["records_in"]
    p.wait_for(lambda s: next(x for x in s["stages"] if x["name"] == "sink")["records_in"] > after + 20, 60,
               "the live feed publishes again")
    sink = p.stage("sink")["counters"]
    assert sink["gaps"] == 0 and sink["dups"] == 0, sink
    p.down()
    out = tmp_path / "dump.jsonl"
    cli("replay", str(usdm), "--dump", str(out))
    want = [(r["exch_seq"], r["bid"], r["ask"]) for r in map(json.loads, out.read_text().splitlines())
            if r["kind"] == "bbo"]
    recs = p.sink_records(BBO)
    got = list(zip(recs["venue_seq"].tolist(), recs["bid_px"].tolist(), recs["ask_px"].tolist(), strict=True))
    start = got.index(want[0])
    assert got[start: start + len(want)] == want, "the whole recording, in order, as one block"
    assert start > 0 and start + len(want) < len(got), "live records before and after the replayed ones"
    assert (np.diff(recs["src_seq"].astype(np.int64)) >= 0).all()


def test_up_after_a_killed_supervisor_takes_over_or_replaces_its_simulator(make_pipeline):
    import psutil
    from conftest import cli

    port = free_port()
    p = make_pipeline(RECORD_CONFIG.replace("{port}", str(port)))
    p.up()
    s = p.status()
    old = s["services"][0]["pid"]
    os.kill(s["supervisor_pid"], signal.SIGKILL)
    # the same config: the live simulator is taken over, and the feed goes on reading it
    again = cli("up", "--config", str(p.config), "--run-dir", str(p.run_dir), "--detach")
    assert "took over from a killed supervisor" in again.stdout and f"(pid {old})" in again.stdout, again.stdout
    assert p.status()["services"][0]["pid"] == old
    before = next(x for x in p.status()["stages"] if x["name"] == "sink")["records_in"]
    p.wait_for(lambda s: next(x for x in s["stages"] if x["name"] == "sink")["records_in"] > before + 20, 60,
               "records after the takeover")
    # another config: the old simulator holds the port, so the new up kills it and starts its own
    os.kill(p.status()["supervisor_pid"], signal.SIGKILL)
    p.config.write_text(p.config.read_text() + "\n# changed\n")
    again = cli("up", "--config", str(p.config), "--run-dir", str(p.run_dir), "--detach")
    assert f"service process {old}" in again.stdout, "the old simulator held the port; the new up cleared it"
    assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE
    p.wait_for(lambda s: next(x for x in s["stages"] if x["name"] == "sink")["records_in"] > 20, 60,
               "records from the new simulator")
    assert p.status()["services"][0]["pid"] != old
