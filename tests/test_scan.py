"""`pipeline scan` as a real process against the simulator on loopback: the simulator's cointegrated BTC/ETH pair
ranks first among random-walk symbols; errors are one line and exit code 2."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from conftest import cli
from simulator_client import Sim

SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "ADA-USDT"]


@pytest.fixture(scope="module")
def sim():
    # simulated start = the current wall minute: the scan's window (whole minutes before now) lies in the
    # simulator's seeded history (3000 minutes), so the numbers do not depend on when the test runs
    start = int(time.time() * 1000) // 60_000 * 60_000
    s = Sim("--seed", "3", "--rate-hz", "2", "--start-ms", str(start), "--symbols", ",".join(SYMBOLS)).ready()
    yield s
    s.stop()


def check_report(path: Path, venue: str, symbols: list[str], days: int) -> dict:
    report = json.loads(path.read_text())
    assert report["venue"] == venue and report["days"] == days and report["symbols"] == symbols
    n = len(symbols)
    pairs = report["pairs"]
    assert len(pairs) == n * (n - 1) // 2
    for p in pairs:
        for k in ("beta", "alpha", "eg_stat", "pvalue", "hurst", "half_life_min"):
            assert isinstance(p[k], float) and math.isfinite(p[k]), (p, k)
        assert p["n_minutes"] == days * 1440
    assert [p["pvalue"] for p in pairs] == sorted(p["pvalue"] for p in pairs)
    top = pairs[0]
    btc, eth = symbols[0], symbols[1]
    assert {top["a"], top["b"]} == {btc, eth}
    assert top["pvalue"] < 1e-4 and all(p["pvalue"] > 0.01 for p in pairs[1:])
    beta = top["beta"] if top["a"] == btc else 1.0 / top["beta"]
    assert beta == pytest.approx(1.2, abs=0.05)  # the simulator's cointegration coefficient
    assert top["hurst"] < 0.45
    assert 8 < top["half_life_min"] < 50  # the simulator's spread: half-life 1200 s = 20 minutes
    return report


def test_scan_kucoin(sim: Sim, tmp_path: Path) -> None:
    out = tmp_path / "scan.json"
    p = cli("scan", "--venue", "kucoin", "--symbols", ",".join(SYMBOLS), "--days", "2", "--rest-url", sim.http,
            "--json", str(out))
    check_report(out, "kucoin", SYMBOLS, 2)
    lines = p.stdout.splitlines()
    header = next(line for line in lines if "EG stat" in line)
    for col in ("pair", "beta", "p-value", "hurst", "half-life (min)", "n minutes"):
        assert col in header
    first_row = next(line for line in lines if "-USDT/" in line)
    assert "BTC-USDT/ETH-USDT" in first_row or "ETH-USDT/BTC-USDT" in first_row


def test_scan_binance_usdm(sim: Sim, tmp_path: Path) -> None:
    out = tmp_path / "scan.json"
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    cli("scan", "--venue", "binance-usdm", "--symbols", ",".join(symbols), "--days", "1", "--rest-url", sim.http,
        "--json", str(out))
    check_report(out, "binance-usdm", symbols, 1)


def one_error_line(p, text: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], p.stderr


def test_scan_errors(sim: Sim, tmp_path: Path) -> None:
    base = ["scan", "--days", "1", "--rest-url", sim.http]
    one_error_line(cli(*base, "--venue", "kucoin", "--symbols", "BTC-USDT,NOPE-USDT", check=False),
                   "kucoin candles NOPE-USDT: HTTP 400 code 400100: symbol not exists")
    one_error_line(cli(*base, "--venue", "binance", "--symbols", "BTCUSDT", check=False),
                   "--symbols needs at least 2 distinct symbols, got 1 (BTCUSDT)")
    one_error_line(cli(*base, "--venue", "binance", "--symbols", "BTCUSDT, BTCUSDT", check=False),
                   "at least 2 distinct symbols")
    one_error_line(cli(*base, "--venue", "mexc", "--symbols", "BTCUSDT,ETHUSDT", check=False),
                   "--venue must be one of kucoin, binance, binance-usdm, got 'mexc'")
    sim.fault(kind="rest_error", venue="binance", status=503, count=1)
    out = tmp_path / "never.json"
    one_error_line(cli(*base, "--venue", "binance", "--symbols", "BTCUSDT,ETHUSDT", "--json", str(out),
                       check=False), "binance candles BTCUSDT: HTTP 503 code -1008: Server is currently overloaded")
    assert not out.exists()
