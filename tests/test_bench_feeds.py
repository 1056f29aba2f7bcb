"""``bench feeds`` end to end over a small frame count: shape and sanity of the JSON, never timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.feeds import (
    DEFAULT_DATA,
    IMPLS,
    SEGMENT_PREFIX,
    STREAMS,
    TICKER_STREAMS,
    CryptofeedRunner,
    LowlatRunner,
    load,
)

ROW_KEYS = {"impl", "stream", "frames", "records", "p50_us", "p99_us", "frames_per_s"}
HOST_KEYS = {"cpu_count", "python", "cryptofeed"}

pytestmark = pytest.mark.skipif(not (DEFAULT_DATA / "KUCOIN.ws.1.0").is_file(),
                                reason=f"recorded data not found in {DEFAULT_DATA}")


def test_recorded_streams_load() -> None:
    data = load(DEFAULT_DATA)
    assert {s: len(d.frames) for s, d in data.items()} == {
        "kucoin_ticker": 830, "binance_bookticker": 613, "binance_depth": 764}
    assert sorted(data["binance_depth"].snapshots) == sorted(data["binance_depth"].symbols)
    assert all(raw.startswith(b"{") and wall_ns > 0 for d in data.values() for raw, wall_ns, _ in d.frames)


@pytest.mark.parametrize("stream", STREAMS)
def test_both_sides_do_the_same_work(stream: str) -> None:
    """One pass of each runner: the same records (tickers: the same bid/ask each frame; depth: the same diffs
    applied and the same top 10 levels at the end), so the two sides' figures compare like for like."""
    sd = load(DEFAULT_DATA)[stream]
    lo, cf = LowlatRunner(sd), CryptofeedRunner(sd)
    try:
        lo.prepare()
        cf.prepare()
        n = len(sd.frames)
        _, n_lo = lo.timed(sd.frames, [0] * n)
        cf.loop.run_until_complete(cf._timed(sd.frames, [0] * n))
        assert n_lo == len(cf.out) > 0
        assert lo.counts() == {"parse_err": 0, "bad_value": 0, "gaps": 0, "resyncs": 0}
        if not sd.books:
            recs = lo.rings["bbo"].history(n_lo)
            ours = [(sd.symbols[r["instrument"]], r["bid_px"], r["ask_px"]) for r in recs]
            theirs = [(cf.feed.std_symbol_to_exchange_symbol(t.symbol), float(t.bid), float(t.ask)) for t in cf.out]
            assert ours == theirs
            return
        recs = lo.rings["book"].history(n_lo)
        for i, sym in enumerate(sd.symbols):
            last = recs[recs["instrument"] == i][-1]
            book = cf.feed._l2_book[cf.feed.exchange_symbol_to_std_symbol(sym)].book
            for side, px, qty in ((book.bids, "bid_px", "bid_qty"), (book.asks, "ask_px", "ask_qty")):
                theirs = [(float(p), float(q)) for p, q in list(side.to_list())[:10]]
                assert list(zip(last[px].tolist(), last[qty].tolist(), strict=True)) == theirs, sym
    finally:
        lo.close()
        cf.close()


@pytest.mark.timeout(240)
def test_bench_feeds_small_run_writes_every_row(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    before = {p.name for p in shm.glob(f"{SEGMENT_PREFIX}*")}
    out = tmp_path / "feeds.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "feeds", "--json", str(out), "--frames", "400", "--rounds", "2"],
        capture_output=True, text=True, timeout=200, env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cryptofeed" in proc.stdout and "kucoin_ticker" in proc.stdout  # the table was printed

    report = json.loads(out.read_text())
    assert set(report) >= {"host", "params", "results", "ratios", "bars"}
    assert HOST_KEYS <= set(report["host"])
    rows = {(r["impl"], r["stream"]): r for r in report["results"]}
    assert set(rows) == {(i, s) for i in IMPLS for s in STREAMS}
    for key, r in rows.items():
        assert ROW_KEYS <= set(r), r
        assert not r.get("missing"), f"{key} missing: {r.get('missing')}"
        assert r["frames"] == 400, r
        assert r["records"] > 0, r
        assert all(isinstance(r[k], float) and r[k] > 0 for k in ("p50_us", "p99_us", "frames_per_s")), r
        assert r["p50_us"] <= r["p99_us"], r
    for stream in TICKER_STREAMS:  # one record per ticker frame, both sides
        assert rows[("lowlat", stream)]["records"] == rows[("cryptofeed", stream)]["records"] == 400
    assert set(report["ratios"]) == set(STREAMS)
    assert all(isinstance(v, float) and v > 0 for v in report["ratios"].values()), report["ratios"]

    after = {p.name for p in shm.glob(f"{SEGMENT_PREFIX}*")}
    assert after <= before  # every ring the bench created is gone


def test_bench_feeds_rejects_zero_frames(tmp_path: Path) -> None:
    out = tmp_path / "feeds.json"
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "feeds", "--json", str(out), "--frames", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert not out.exists()
