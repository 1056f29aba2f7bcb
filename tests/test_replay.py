"""Replay of the real recordings through the live parsers: `pipeline replay --dump` gives the test vectors' values
and books that agree with the venue's own ticker; `pipeline up --replay` runs the real pipeline over a recording,
stops by itself once drained, and gives the same records as the dump, also when the replay stage is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from conftest import ENV, SHARED, cli

from pipeline.records import BBO, BOOK

DATA = SHARED / "data" / "recorded"
VECTORS = json.loads((SHARED / "reference" / "test_vectors.json")
                     .read_text())
USDM_BTC = DATA / "binance_2024-08-08" / "usdm_btcusdt_20240808.gz"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data/recorded is not beside the project")


def _dump(tmp_path: Path, *files: Path, extra: tuple[str, ...] = ()) -> list[dict]:
    out = tmp_path / "dump.jsonl"
    cli("replay", ",".join(map(str, files)), "--dump", str(out), *extra)
    return [orjson.loads(line) for line in out.read_bytes().splitlines()]


def test_dump_kucoin_gives_the_vectors_and_books_agree_with_the_ticker(tmp_path):
    rows = _dump(tmp_path, DATA / "KUCOIN.ws.1.0", DATA / "KUCOIN.http.0.0")
    bbo = [r for r in rows if r["kind"] == "bbo"]
    by_seq = {(r["symbol"], r["exch_seq"]): r for r in bbo}
    for v in VECTORS["messages"]["kucoin_ticker"]:
        e = v["expected"]
        r = by_seq[(e["symbol"], e["sequence"])]
        assert (r["bid"], r["bid_qty"], r["ask"], r["ask_qty"]) == (
            float(e["bid"]), float(e["bid_size"]), float(e["ask"]), float(e["ask_size"]))
        assert r["ts_event_ms"] == e["exchange_ts_ms"]
    # every ticker frame, parsed independently, is in the dump in order
    expect = []
    for line in (DATA / "KUCOIN.ws.1.0").read_text().splitlines():
        head, _, frame = line.partition(": ")
        if '"trade.ticker"' in frame and head.replace(".", "").isdigit():
            m = json.loads(frame)
            d = m["data"]
            expect.append((m["topic"].split(":")[1], int(d["sequence"]), float(d["bestBid"]), float(d["bestAsk"])))
    assert [(r["symbol"], r["exch_seq"], r["bid"], r["ask"]) for r in bbo] == expect
    # level2 books synced from the recorded snapshots: top == ticker at equal sequence
    books = {(r["symbol"], r["exch_seq"]): r for r in rows if r["kind"] == "book"}
    same = [k for k in books if k in by_seq]
    assert len(same) > 20
    for k in same:
        b, t = books[k], by_seq[k]
        assert (b["bids"][0][0], b["bids"][0][1], b["asks"][0][0], b["asks"][0][1]) == (
            t["bid"], t["bid_qty"], t["ask"], t["ask_qty"]), k
    trades = [r for r in rows if r["kind"] == "trade"]
    assert trades and all(r["side"] in ("buy", "sell") and r["price"] > 0 for r in trades)


def test_dump_binance_futures_vectors_and_book_against_book_ticker(tmp_path):
    rows = _dump(tmp_path, DATA / "BINANCE_FUTURES.ws.1.0", DATA / "BINANCE_FUTURES.http.0.0")
    bbo = {(r["symbol"], r["exch_seq"]): r for r in rows if r["kind"] == "bbo"}
    for v in VECTORS["messages"]["binance_usdm_bookTicker"]:
        e = v["expected"]
        r = bbo[(e["symbol"], e["sequence"])]
        assert (r["bid"], r["bid_qty"], r["ask"], r["ask_qty"], r["ts_event_ms"]) == (
            float(e["bid"]), float(e["bid_size"]), float(e["ask"]), float(e["ask_size"]), e["exchange_ts_ms"])
    trades = [r for r in rows if r["kind"] == "trade"]
    for v in VECTORS["messages"]["binance_usdm_aggTrade"]:
        e = v["expected"]
        assert any(r["exch_seq"] == e["agg_trade_id"] and r["price"] == float(e["price"]) and
                   r["side"] == e["taker_side"] for r in trades), e
    books = {(r["symbol"], r["exch_seq"]): r for r in rows if r["kind"] == "book"}
    same = [k for k in books if k in bbo]
    assert len(same) >= 12
    for k in same:
        b, t = books[k], bbo[k]
        assert (b["bids"][0][0], b["asks"][0][0], b["bids"][0][1], b["asks"][0][1]) == (
            t["bid"], t["ask"], t["bid_qty"], t["ask_qty"]), k


def test_dump_reads_hftbacktest_files_and_uses_receive_time_for_spot(tmp_path):
    rows = _dump(tmp_path, DATA / "binance_2024-08-08" / "spot_btcusdt_20240808.gz")
    bbo = [r for r in rows if r["kind"] == "bbo"]
    assert len(bbo) > 1000 and {r["symbol"] for r in bbo} == {"BTCUSDT"}
    # spot bookTicker has no event time: the recorded receive time stands in
    assert all(r["ts_event_ms"] == r["t_recv_ns"] // 1_000_000 for r in bbo)


def test_bad_venue_and_missing_file_are_one_line_errors(tmp_path):
    p = cli("replay", str(tmp_path / "nope.gz"), "--dump", str(tmp_path / "o.jsonl"), check=False)
    assert p.returncode == 1 and "no such recording" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = cli("replay", str(DATA / "KUCOIN.ws.1.0"), "--venue", "bitmex", "--dump", str(tmp_path / "o.jsonl"),
            check=False)
    assert p.returncode == 1 and "unknown venue" in p.stderr


REPLAY_CONFIG = """
name = "{name}"

[[instruments]]
symbol = "BTC-USDT"
venue = "kucoin"
tick = 0.1

[[instruments]]
symbol = "BCHSV-USDT"
venue = "kucoin"
tick = 0.001

[[instruments]]
symbol = "SNX-BTC"
venue = "kucoin"
tick = 0.00000001

[rings.ticks]
type = "bbo"
capacity = 65536

[rings.books]
type = "book"
capacity = 65536

[stages.kucoin]
kind = "kucoin"
outputs = ["ticks", "books"]
[stages.kucoin.params]
rest_url = "http://127.0.0.1:9"
books = true

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

[supervisor]
backoff_initial_s = 0.02
backoff_max_s = 0.2
"""


def _up_replay(make_pipeline, files: list[Path], speed: str, sub: str) -> tuple:
    p = make_pipeline(REPLAY_CONFIG, sub)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "up", "--config", str(p.config), "--run-dir",
                             str(p.run_dir), "--replay", ",".join(map(str, files)), "--speed", speed],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    return p, proc


def test_up_replay_runs_the_pipeline_over_a_recording_and_stops_by_itself(make_pipeline, tmp_path):
    # the KuCoin-configured pipeline takes Binance's BTCUSDT: symbols are matched by base and quote
    p, proc = _up_replay(make_pipeline, [USDM_BTC], "max", "a")
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    assert not p.segments(), "segments removed once the replay ended"
    recs = p.sink_records(BBO)
    rows = [r for r in _dump(tmp_path, USDM_BTC) if r["kind"] == "bbo"]
    assert len(recs) == len(rows) > 1000
    assert (recs["instrument"] == 0).all()
    assert np.array_equal(recs["bid_px"], [r["bid"] for r in rows])
    assert np.array_equal(recs["ask_qty"], [r["ask_qty"] for r in rows])
    assert np.array_equal(recs["ts_event_ms"], [r["ts_event_ms"] for r in rows])
    assert np.array_equal(recs["venue_seq"], [r["exch_seq"] for r in rows])
    assert len(p.sink_records(BOOK, "book_sink")) == 0, "no snapshot in an hftbacktest file: no book, no guess"


def test_replay_stage_killed_midway_gives_the_same_stream(make_pipeline, tmp_path):
    files = [DATA / "KUCOIN.ws.1.0", DATA / "KUCOIN.http.0.0"]
    p, proc = _up_replay(make_pipeline, files, "3", "a")  # ~30 s of recording at 3x: ~10 s
    deadline = time.monotonic() + 120
    kills = 0
    while time.monotonic() < deadline and kills < 3:
        try:
            st = p.stage("replay")
        except Exception:
            time.sleep(0.1)
            continue
        if st["state"] == "running" and st["records_out"] > 50 * (kills + 1) and st["pid"]:
            os.kill(st["pid"], signal.SIGKILL)
            kills += 1
            time.sleep(0.5)
        time.sleep(0.05)
    assert kills == 3
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    rows = [r for r in _dump(tmp_path, *files) if r["symbol"] in ("BCHSV-USDT", "SNX-BTC")]
    ticks = p.sink_records(BBO)
    want = [(r["exch_seq"], r["bid"], r["ask"]) for r in rows if r["kind"] == "bbo"]
    assert len(want) > 100
    assert list(zip(ticks["venue_seq"].tolist(), ticks["bid_px"].tolist(), ticks["ask_px"].tolist(),
                    strict=True)) == want
    books = p.sink_records(BOOK, "book_sink")
    want_books = [r for r in rows if r["kind"] == "book"]
    assert len(books) == len(want_books)
    assert books["venue_seq"].tolist() == [r["exch_seq"] for r in want_books]
