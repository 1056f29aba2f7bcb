"""App assembly, command line and process lifecycle of the simulator.

``python -m feeds.simulator --port P`` prints ``simulator listening on 127.0.0.1:P`` once it accepts connections
(``--port 0`` picks a free port and prints it), exits 0 on SIGTERM / SIGINT, and exits 2 with a one-line error
when the port is taken. ``GET /_sim/stats`` returns counters; ``POST /_sim/fault`` injects faults (faults.py);
``GET /_sim/accounts`` shows the order-entry accounts (accounts.py) to the last unit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from aiohttp import web

from feeds.proto import ProtoError

from .accounts import DEFAULT_BALANCES, Desk, parse_balances
from .binance import BinanceVenue
from .engine import Engine, Options
from .kucoin import KucoinVenue
from .mexc import MexcVenue
from .orders_binance import BinanceOrders
from .orders_kucoin import KucoinOrders

ENGINE = web.AppKey("engine", Engine)
VENUES = web.AppKey("venues", list)
DESK = web.AppKey("desk", Desk)
"""Application keys: the engine, the venue objects and the order-entry accounts."""


def build_app(engine: Engine) -> web.Application:
    """The aiohttp application: every venue's routes, order entry, plus ``/_sim/*``."""
    app = web.Application()
    kucoin, spot, usdm = KucoinVenue(engine), BinanceVenue(engine, futures=False), BinanceVenue(engine, futures=True)
    venues: list[KucoinVenue | BinanceVenue | MexcVenue] = [kucoin, spot, usdm, MexcVenue(engine)]
    for venue in venues:
        venue.add_routes(app)
        engine.listeners.append(venue)
    desk = Desk(engine.market.instruments, engine.market.books, parse_balances(engine.opts.balances))
    KucoinOrders(engine, kucoin, desk.accounts["kucoin"]).add_routes(app)
    BinanceOrders(engine, spot, desk.accounts["binance"]).add_routes(app)
    BinanceOrders(engine, usdm, desk.accounts["binance-usdm"]).add_routes(app)
    engine.listeners.append(desk)
    app[ENGINE] = engine
    app[VENUES] = venues
    app[DESK] = desk

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(engine.stats())

    async def accounts(request: web.Request) -> web.Response:
        return web.json_response(desk.snapshot())

    app.router.add_get("/_sim/stats", stats)
    app.router.add_get("/_sim/accounts", accounts)
    app.router.add_post("/_sim/fault", engine.faults.handle)

    async def go(request: web.Request) -> web.Response:
        engine.release()
        return web.json_response({"ok": True, "sim_time_ms": engine.now_ms()})

    app.router.add_post("/_sim/go", go)
    return app


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def parse_args(argv: list[str] | None = None) -> Options:
    ap = argparse.ArgumentParser(prog="python -m feeds.simulator",
                                 description="Local KuCoin / Binance / MEXC exchange.")
    ap.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 (0: any free port)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--speed", type=_positive, default=1.0, help="simulated seconds per wall second")
    ap.add_argument("--start-ms", type=int, default=None, help="simulated start time (default: now)")
    ap.add_argument("--symbols", default="", help="comma-separated BASE-QUOTE symbols (default BTC-USDT,ETH-USDT; "
                    "replay: all recorded)")
    ap.add_argument("--rate-hz", type=_positive, default=30.0, help="book events per simulated second per symbol")
    ap.add_argument("--ping-interval-ms", type=int, default=18000, help="KuCoin pingInterval")
    ap.add_argument("--ping-timeout-ms", type=int, default=10000, help="KuCoin pingTimeout")
    ap.add_argument("--kucoin-ticker-ms", type=int, default=100, help="KuCoin ticker throttle (simulated ms)")
    ap.add_argument("--binance-ping-ms", type=int, default=20000, help="Binance spot server ping period")
    ap.add_argument("--binance-pong-timeout-ms", type=int, default=60000)
    ap.add_argument("--usdm-ping-ms", type=int, default=180000, help="Binance USD-M server ping period")
    ap.add_argument("--usdm-pong-timeout-ms", type=int, default=600000)
    ap.add_argument("--replay", default="", help="FILE[,FILE...]: serve recorded BBO / trades instead")
    ap.add_argument("--hold", action="store_true",
                    help="simulated time stands still at the start until POST /_sim/go (bench latency: the "
                         "market starts once every stage is ready)")
    ap.add_argument("--api-key", default="lowlat-sim-key", help="order entry API key (all venues)")
    ap.add_argument("--api-secret", default="lowlat-sim-secret", help="order entry API secret")
    ap.add_argument("--api-passphrase", default="lowlat-sim-pass", help="KuCoin API passphrase")
    ap.add_argument("--balances", default=DEFAULT_BALANCES,
                    help="initial spot balances ASSET=AMOUNT,... (USD-M wallet: the USDT figure)")
    ap.add_argument("--order-latency-ms", type=int, default=0,
                    help="wall-clock delay before each order placement / cancel is matched and answered")
    a = ap.parse_args(argv)
    try:
        parse_balances(a.balances)
    except ValueError as e:
        ap.error(str(e))
    if a.order_latency_ms < 0:
        ap.error("--order-latency-ms must be >= 0")
    symbols = [s.strip().upper() for s in a.symbols.split(",") if s.strip()]
    if any("-" not in s for s in symbols):
        ap.error("--symbols takes BASE-QUOTE names, e.g. BTC-USDT,ETH-USDT")
    return Options(
        port=a.port, host=a.host, seed=a.seed, speed=a.speed, start_ms=a.start_ms, symbols=symbols or None,
        rate_hz=a.rate_hz, ping_interval_ms=a.ping_interval_ms, ping_timeout_ms=a.ping_timeout_ms,
        kucoin_ticker_ms=a.kucoin_ticker_ms, binance_ping_ms=a.binance_ping_ms,
        binance_pong_timeout_ms=a.binance_pong_timeout_ms, usdm_ping_ms=a.usdm_ping_ms,
        usdm_pong_timeout_ms=a.usdm_pong_timeout_ms,
        replay=[f for f in a.replay.split(",") if f], api_key=a.api_key, api_secret=a.api_secret,
        api_passphrase=a.api_passphrase, balances=a.balances, order_latency_ms=a.order_latency_ms,
        hold=a.hold,
    )


async def serve(opts: Options) -> int:
    """Run until SIGTERM / SIGINT; returns the exit code."""
    engine = Engine(opts)
    app = build_app(engine)
    runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, opts.host, opts.port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        print(f"simulator: cannot listen on {opts.host}:{opts.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pacer = loop.create_task(engine.run())
    print(f"simulator listening on {opts.host}:{port}", flush=True)
    await asyncio.wait([pacer, loop.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if pacer.done() and pacer.exception() is not None:
        print(f"simulator: pacing loop failed: {pacer.exception()!r}", file=sys.stderr)
        code = 1
    pacer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pacer
    await engine.registry.close_all()
    await runner.cleanup()
    return code


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        return asyncio.run(serve(opts))
    except (OSError, ValueError, ProtoError) as e:
        print(f"simulator: {e}", file=sys.stderr)
        return 2
