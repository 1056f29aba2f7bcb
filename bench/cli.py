"""``bench``: benchmarks of the lowlat pipeline, one command each (``bench ring``, ``bench feeds``,
``bench compute``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="lowlat benchmarks.", no_args_is_help=True, add_completion=False)


@app.callback()
def main() -> None:
    """lowlat benchmarks. (A callback keeps `bench ring` a subcommand while it is the only command.)"""


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command()
def ring(
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON here.")] = None,
    count: Annotated[int, typer.Option(
        "--count", min=10,
        help="Latency records for the ring; the other counts scale with it (ring throughput 10x, batch path "
             "250x, peers 0.5x for latency and 1x for throughput).")] = 200_000,
    transports: Annotated[str, typer.Option(
        help="Comma list of transports (default: all): lowlat-ring, lowlat-ring-batch, mp-queue, mp-pipe, "
             "faster-fifo, zmq-ipc.")] = "",
    placements: Annotated[str, typer.Option(help="Comma list: cross-cpu, same-cpu (default: both).")] = "",
    rounds: Annotated[int, typer.Option(
        min=1, help="Interleaved rounds over all transports; counts are split over them and pooled.")] = 3,
) -> None:
    """One-way latency and throughput of the shared-memory ring vs multiprocessing, faster-fifo and zmq."""
    from rich.console import Console

    from bench import ring as bench_ring

    console = Console(width=None if sys.stdout.isatty() else 200)
    try:
        report = bench_ring.run(
            count=count,
            transports=_split(transports) or bench_ring.TRANSPORTS,
            placements=_split(placements) or bench_ring.PLACEMENTS,
            rounds=rounds,
            progress=lambda s: console.print(f"[dim]running {s}[/]"),
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    except bench_ring.BenchError as e:
        console.print(f"[bold red]bench ring failed:[/] {e}")
        raise typer.Exit(1) from None
    bench_ring.render(report, console)
    if json_path is not None:
        bench_ring.write_json(report, json_path)
        console.print(f"wrote {json_path}")


@app.command()
def feeds(
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON here.")] = None,
    frames: Annotated[int, typer.Option(
        "--frames", min=1, help="Timed frames per (implementation, stream), in passes over the recording.")] = 100_000,
    rounds: Annotated[int, typer.Option(
        min=1, help="Interleaved rounds over all (implementation, stream); frames split over them, pooled.")] = 10,
    data: Annotated[Path | None, typer.Option(
        "--data", help="Directory of the recorded files (default: shared/data/recorded beside the project).")] = None,
) -> None:
    """Recorded frame bytes -> published record: lowlat's KuCoin and Binance parsers vs cryptofeed's handlers."""
    from rich.console import Console

    from bench import feeds as bench_feeds

    console = Console(width=None if sys.stdout.isatty() else 200)
    try:
        report = bench_feeds.run(
            frames=frames,
            rounds=rounds,
            data_dir=data or bench_feeds.DEFAULT_DATA,
            progress=lambda s: console.print(f"[dim]{s}[/]"),
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    except bench_feeds.BenchError as e:
        console.print(f"[bold red]bench feeds failed:[/] {e}")
        raise typer.Exit(1) from None
    bench_feeds.render(report, console)
    if json_path is not None:
        bench_feeds.write_json(report, json_path)
        console.print(f"wrote {json_path}")


@app.command()
def compute(
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON here.")] = None,
    ticks: Annotated[int, typer.Option(min=100, help="Timed ticks for lowlat.")] = 20_000,
    port_ticks: Annotated[int, typer.Option(
        "--port-ticks", min=100, help="Timed ticks for the seed port and the numpy recompute (slow).")] = 20_000,
    warm_minutes: Annotated[int, typer.Option(
        "--warm-minutes", min=121, help="Minutes of the stream taken untimed first, so the window is full.")] = 125,
    throttle_ms: Annotated[int, typer.Option("--throttle-ms", min=0, help="The seed's compute throttle.")] = 0,
) -> None:
    """µs per tick through bars + stats + signal: lowlat's kernels vs the seed port and a numpy recompute."""
    from rich.console import Console

    from bench import compute as bench_compute

    console = Console(width=None if sys.stdout.isatty() else 200)
    doc = bench_compute.run(ticks=ticks, warm_minutes=warm_minutes, port_ticks=port_ticks, throttle_ms=throttle_ms)
    bench_compute.render(doc, console)
    if json_path is not None:
        bench_compute.write_json(doc, json_path)
        console.print(f"wrote {json_path}")
    if not all(doc["same_actions"].values()):
        console.print("[bold red]bench compute failed:[/] the implementations disagree on the actions")
        raise typer.Exit(1)


@app.command()
def latency(
    config: Annotated[Path, typer.Option("--config", "-c", help="Pipeline config (TOML).")] = Path(
        "configs/sim.toml"),
    duration: Annotated[float, typer.Option(
        min=1.0, help="Seconds to measure (with --replay: at most this long, 0 = until the recordings end).")] = 60.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON here.")] = None,
    plot_path: Annotated[Path | None, typer.Option(
        "--plot", help="Draw the latency CDFs to this PNG (needs the 'plot' extra: matplotlib).")] = None,
    attach: Annotated[bool, typer.Option(
        "--attach", help="Measure the pipeline already running (--run-dir) instead of starting one.")] = False,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Run directory (default runs/NAME-bench).")] = None,
    orders_per_s: Annotated[float, typer.Option(
        "--orders-per-s", min=0.0, help="Measurement orders per second: the stats stage emits small round-trip "
                                        "signals at this rate from live prices, flagged as measurement.")] = 0.0,
    measure_notional: Annotated[float | None, typer.Option(
        "--measure-notional", help="Quote notional per measurement leg (default: the stats stage's, 20).")] = None,
    replay: Annotated[str, typer.Option(
        "--replay", help="Recordings (comma-separated) the simulator serves as its market data; the run ends when "
                         "they end.")] = "",
    speed: Annotated[float, typer.Option("--speed", min=0.01, help="Replay pace: a multiple of recorded time.")] = 1.0,
    venue_latency_ms: Annotated[float | None, typer.Option(
        "--venue-latency-ms", min=0.0, help="Simulated network + matching latency of the simulator's order entry "
                                            "(reported, never counted as ours).")] = None,
    baseline: Annotated[bool, typer.Option(
        "--baseline", help="Also run the seed's design (one process, callback, stdlib JSON, full recompute, "
                           "signed REST) against the same simulator and data, and report both.")] = False,
) -> None:
    """Execution latency and its parts, hops, micro-volatility, fill ratio, capture rate, inventory drift."""
    from rich.console import Console

    from bench import latency as bench_latency

    console = Console(width=None if sys.stdout.isatty() else 200)
    try:
        doc = bench_latency.run(config, duration=duration, replay=_split(replay), speed=speed,
                                venue_latency_ms=venue_latency_ms, orders_per_s=orders_per_s,
                                measure_notional=measure_notional, baseline=baseline, attach=attach,
                                run_dir=run_dir, progress=lambda s: console.print(f"[dim]{s}[/]"))
        bench_latency.render(doc, console)
        if json_path is not None:
            bench_latency.write_json(doc, json_path)
            console.print(f"wrote {json_path}")
        if plot_path is not None:
            bench_latency.plot(doc, plot_path)
            console.print(f"wrote {plot_path}")
    except bench_latency.BenchError as e:
        console.print(f"[bold red]bench latency failed:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.command()
def soak(
    config: Annotated[Path, typer.Option("--config", "-c", help="Pipeline config (TOML) with the simulator as a "
                                                                "service.")] = Path("configs/sim.toml"),
    minutes: Annotated[float, typer.Option(min=0.1, help="How long to run.")] = 30.0,
    rate_x: Annotated[float, typer.Option(
        "--rate-x", min=0.1, help="The simulator's message rate as a multiple of the recorded one.")] = 10.0,
    recorded: Annotated[str, typer.Option(
        "--recorded", help="The real recordings (comma-separated, one per instrument) whose message rate is "
                           "multiplied.")] = ",".join(("../shared/data/recorded/binance_2024-08-08/"
                                                       "spot_btcusdt_20240808.gz",
                                                       "../shared/data/recorded/binance_2024-08-08/"
                                                       "spot_ethusdt_20240808.gz")),
    sample_s: Annotated[float, typer.Option("--sample-s", min=1.0, help="Seconds between samples.")] = 60.0,
    orders_per_s: Annotated[float, typer.Option(
        "--orders-per-s", min=0.0, help="Measurement orders per second (latency p99 per interval).")] = 2.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON here.")] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Run directory (default runs/NAME-soak).")] = None,
) -> None:
    """RSS of every stage at start and end, dropped frames, ring waits and latency p99 per interval under load."""
    from rich.console import Console

    from bench import soak as bench_soak

    console = Console(width=None if sys.stdout.isatty() else 200)
    _report("soak", console, json_path, bench_soak.render, lambda: bench_soak.run(
        config, minutes=minutes, rate_x=rate_x, recorded=_split(recorded), sample_s=sample_s,
        orders_per_s=orders_per_s, run_dir=run_dir, progress=lambda s: console.print(f"[dim]{s}[/]")))


@app.command()
def chaos(
    config: Annotated[Path, typer.Option("--config", "-c", help="Pipeline config (TOML) with the simulator as a "
                                                                "service.")] = Path("configs/sim.toml"),
    kills: Annotated[int, typer.Option(min=1, help="SIGKILLs of random stages and of the supervisor.")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the kill sequence (targets and moments).")] = 1,
    orders_per_s: Annotated[float, typer.Option(
        "--orders-per-s", min=0.0, help="Measurement orders per second (so that kills land between send, ack "
                                        "and fill).")] = 2.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON here.")] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Run directory (default runs/NAME-chaos).")] = None,
) -> None:
    """SIGKILL random stages and the supervisor while the pipeline trades; compare bars, signals, events and
    orders with the uninterrupted computation. Exits 1 on any mismatch, duplicate order or leftover."""
    from rich.console import Console

    from bench import chaos as bench_chaos

    console = Console(width=None if sys.stdout.isatty() else 200)
    doc = _report("chaos", console, json_path, bench_chaos.render, lambda: bench_chaos.run(
        config, kills=kills, seed=seed, orders_per_s=orders_per_s, run_dir=run_dir,
        progress=lambda s: console.print(f"[dim]{s}[/]")))
    if doc["mismatches"] or doc["duplicate_orders"] or doc["left_after_down"]:
        raise typer.Exit(1)


def _report(what: str, console, json_path: Path | None, render, make) -> dict:  # type: ignore[no-untyped-def]
    """Run a bench (``make()`` -> its JSON document), print its table, write the JSON; a BenchError is one line and
    exit code 1."""
    from bench import latency as bench_latency

    try:
        doc = make()
        render(doc, console)
        if json_path is not None:
            bench_latency.write_json(doc, json_path)
            console.print(f"wrote {json_path}")
        return doc
    except bench_latency.BenchError as e:
        console.print(f"[bold red]bench {what} failed:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None

if __name__ == "__main__":
    app()
