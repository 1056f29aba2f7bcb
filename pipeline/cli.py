"""The ``pipeline`` command: up, status, top, restart, down, tweaks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pipeline.control import SOCKET_NAME, ControlError, find_run_dir, request

# `up` imports the supervisor (numba and the stage runtime) when it runs, so status/restart/down start fast
CONFIG_NAME = "config.toml"

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run and control a lowlat pipeline.")
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

RunDir = typer.Option(None, "--run-dir", help="Run directory of the pipeline (default: the only one under ./runs).")


def _fail(msg: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def stage_table(status: dict) -> Table:
    """The stages (and rings) of a status reply as a table."""
    t = Table(title=f"pipeline {status['pipeline']} ({status['run_dir']})")
    for col in ("stage", "pid", "cpus", "wait", "state", "beat s", "restarts", "in", "out", "waits", "errors",
                "last error"):
        t.add_column(col, overflow="fold")
    for s in status["stages"]:
        t.add_row(s["name"], str(s["pid"] or "-"), ",".join(map(str, s["cpus"])), s["wait"], s["state"],
                  "-" if s["heartbeat_age_s"] is None else f"{s['heartbeat_age_s']:.3f}", str(s["restarts"]),
                  str(s["records_in"]), str(s["records_out"]), str(s["waits"]), str(s["errors"]),
                  s["last_error"] or s["reason"] if s["state"] in ("failed", "restarting") else s["last_error"])
    counters = [s for s in status["stages"] if s.get("counters")]
    if counters:
        t.caption = "counters: " + "; ".join(
            f"{s['name']} " + " ".join(f"{k}={v}" for k, v in s["counters"].items()) for s in counters)
    return t


def ring_table(status: dict) -> Table:
    """The rings of a status reply as a table."""
    t = Table(title="rings")
    for col in ("ring", "type", "producer", "consumer", "fill", "capacity", "prod pos", "cons pos", "prod waits",
                "cons waits", "doorbell"):
        t.add_column(col)
    for r in status["rings"]:
        t.add_row(r["name"], r["type"], r["producer"], r["consumer"], str(r["fill"]), str(r["capacity"]),
                  str(r["producer_pos"]), str(r["consumer_pos"]), str(r["producer_waits"]),
                  str(r["consumer_waits"]), str(r["doorbell_rings"]))
    return t


def _prepare(config: Path, run_dir: Path | None, replay: str | None = None, speed: str = "max") -> Path:
    """Check the config and copy it into the run directory; ``--replay`` appends its ``[replay]`` table."""
    import orjson

    from pipeline.config import ConfigError, parse

    try:
        text = config.read_text()
    except OSError as e:
        raise _fail(f"{config}: cannot read config: {e.strerror}") from None
    if replay:
        files = [str(Path(f).resolve()) for f in replay.split(",") if f]
        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            raise _fail(f"--replay: no such file: {missing[0]}")
        text += (f"\n[replay]  # added by pipeline up --replay\nfiles = {orjson.dumps(files).decode()}\n"
                 f"speed = {_speed(speed)}\n")
    try:
        cfg = parse(text, str(config))
    except ConfigError as e:
        raise _fail(str(e)) from None
    rd = (run_dir or Path(cfg.run_dir or f"runs/{cfg.name}")).resolve()
    rd.mkdir(parents=True, exist_ok=True)
    (rd / CONFIG_NAME).write_text(text)
    return rd


def _speed(text: str) -> float:
    """``--speed``: a positive multiple of recorded time, or ``max`` (0: as fast as possible)."""
    if text == "max":
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise _fail(f"--speed: expected a positive number or 'max', got {text!r}")
    return value


@app.command()
def up(
    config: Path = typer.Option(..., "--config", "-c", help="Pipeline config (TOML)."),
    run_dir: Path | None = RunDir,
    detach: bool = typer.Option(False, "--detach", help="Return once every stage reports ready."),
    duration: float | None = typer.Option(None, "--duration", help="Stop after this many seconds."),
    tweaks: bool = typer.Option(False, "--tweaks", help="Apply the host tweaks for the run, revert after."),
    ready_timeout: float = typer.Option(120.0, "--ready-timeout", help="Seconds to wait for every stage."),
    replay: str | None = typer.Option(None, "--replay", help="Recordings (comma-separated) replace the config's "
                                      "feeds; the run ends when they are replayed and every stage has drained."),
    speed: str = typer.Option("max", "--speed", help="Replay pacing: a multiple of recorded time, or 'max'."),
    metrics_port: int = typer.Option(0, "--metrics-port", min=0, max=65535, help="Serve Prometheus metrics on "
                                     "http://127.0.0.1:PORT/metrics (0: off)."),
) -> None:
    """Start a pipeline: rings, one pinned process per stage, control socket."""
    from pipeline.supervisor import Supervisor, SupervisorError

    rd = _prepare(config, run_dir, replay, speed)
    if detach:
        _up_detached(rd, duration, tweaks, ready_timeout, metrics_port)
        return
    sup = Supervisor(rd, apply_tweaks=tweaks, metrics_port=metrics_port)
    signal.signal(signal.SIGTERM, lambda *_: sup.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: sup.stopping.set())
    try:
        sup.start()
    except (SupervisorError, OSError) as e:
        sup.shutdown()
        raise _fail(str(e)) from None
    _report_cleanup(sup.cleaned, sup.adopted)
    deadline = time.monotonic() + ready_timeout
    while not sup.ready() and time.monotonic() < deadline and not sup.stopping.is_set():
        sup.check()
        time.sleep(0.02)
    out.print(stage_table(sup.status()))
    out.print("running; Ctrl-C stops it" + (f" (or after {duration:g} s)" if duration else ""), highlight=False)
    sup.run(duration)
    if sup.last_status:
        out.print(stage_table(sup.last_status))
    out.print(f"pipeline {sup.cfg.name} stopped", highlight=False)


def _report_cleanup(cleaned: list[str], adopted: list[str]) -> None:
    if cleaned:
        out.print(f"cleared what a previous run left: {', '.join(cleaned)}", highlight=False, soft_wrap=True)
    if adopted:
        out.print(f"took over from a killed supervisor: {', '.join(adopted)}", highlight=False, soft_wrap=True)


def _up_detached(rd: Path, duration: float | None, tweaks: bool, ready_timeout: float, metrics_port: int = 0) -> None:
    log = open(rd / "supervisor.log", "ab")
    args = [sys.executable, "-m", "pipeline.supervisor", str(rd), "-" if duration is None else str(duration)]
    args += (["--tweaks"] if tweaks else []) + (["--metrics-port", str(metrics_port)] if metrics_port else [])
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (rd / "supervisor.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise _fail(f"the supervisor exited with code {proc.returncode}: {' '.join(tail)}")
        try:
            if request(rd, {"cmd": "ping"}, 5).get("ready"):
                st = request(rd, {"cmd": "status"})
                _report_cleanup(st["cleared_at_start"], st["adopted_at_start"])
                out.print(stage_table(st))
                out.print(f"detached: supervisor pid {proc.pid}; `pipeline status --run-dir {rd}`, "
                          f"`pipeline down --run-dir {rd}`", highlight=False, soft_wrap=True)
                return
        except ControlError:
            pass
        time.sleep(0.1)
    raise _fail(f"not every stage was ready after {ready_timeout:g} s; see `pipeline status --run-dir {rd}`")


def _ask(run_dir: Path | None, payload: dict, timeout: float = 30.0) -> tuple[Path, dict]:
    try:
        rd = find_run_dir(run_dir)
        reply = request(rd, payload, timeout)
    except ControlError as e:
        raise _fail(str(e)) from None
    if not reply.get("ok"):
        raise _fail(reply.get("error", "request failed"))
    return rd, reply


@app.command()
def status(run_dir: Path | None = RunDir, as_json: bool = typer.Option(False, "--json", help="One JSON object.")
           ) -> None:
    """Stages (pid, CPUs, state, heartbeat, restarts, records, waits, errors) and rings (fill, positions)."""
    _, reply = _ask(run_dir, {"cmd": "status"})
    reply.pop("ok")
    if as_json:
        print(json.dumps(reply))
        return
    out.print(stage_table(reply))
    out.print(ring_table(reply))
    if reply.get("pairs") or reply.get("execution"):
        from pipeline.top import execution_line, pairs_table

        if reply.get("pairs"):
            out.print(pairs_table(reply["pairs"]))
        if reply.get("execution"):
            out.print(execution_line(reply["execution"]), soft_wrap=True)


@app.command()
def top(
    run_dir: Path | None = RunDir,
    interval: float = typer.Option(1.0, "--interval", min=0.1, help="Seconds between refreshes (one status "
                                   "request each)."),
    once: bool = typer.Option(False, "--once", help="Print one frame (rates over one interval) and exit."),
) -> None:
    """Live view: stages (CPU, core, RSS, state, records/s, errors), rings (fill, lag), order latency p50/p99 over
    the last minute, pairs (z, beta, position, PnL), execution. Reads status and shared memory only."""
    from rich.live import Live

    from pipeline.top import Sampler, render

    sampler = Sampler()
    rd, first = _ask(run_dir, {"cmd": "status"}, 10)

    def status() -> dict:
        reply = _ask(rd, {"cmd": "status"}, 10)[1]
        reply.pop("ok")
        return reply

    if once:
        sampler.sample(first)  # rates and CPU % are measured over one interval
        time.sleep(interval)
        st = status()
        out.print(render(st, sampler.sample(st)))
        return
    try:
        with Live(console=out, auto_refresh=False, redirect_stdout=False) as live:
            while True:
                t0 = time.monotonic()
                st = status()
                live.update(render(st, sampler.sample(st)), refresh=True)
                time.sleep(max(0.0, interval - (time.monotonic() - t0)))
    except KeyboardInterrupt:
        pass


@app.command()
def restart(stage: str = typer.Argument(..., help="Stage name."), run_dir: Path | None = RunDir) -> None:
    """Replace one stage's process; the others keep running and no record is lost."""
    t0 = time.monotonic()
    rd, reply = _ask(run_dir, {"cmd": "restart", "stage": stage}, 120)
    deadline = t0 + 120
    state = "starting"
    while time.monotonic() < deadline:
        st = next(s for s in _ask(rd, {"cmd": "status"})[1]["stages"] if s["name"] == stage)
        state = st["state"]
        if state in ("running", "failed"):
            break
        time.sleep(0.02)
    out.print(f"restarted {stage}: pid {reply['old_pid']} -> {reply['pid']}, {state} after "
              f"{time.monotonic() - t0:.2f} s", highlight=False)
    if state != "running":
        raise _fail(f"stage {stage} is {state}; see `pipeline status --run-dir {rd}`")


@app.command()
def replay(
    files: str = typer.Argument(..., help="Recording(s), comma-separated: merged by receive time."),
    venue: str = typer.Option("", "--venue", help="kucoin, binance, binance-usdm or mexc, when the recording does not "
                              "say (comma-separated: one per file)."),
    speed: str = typer.Option("max", "--speed", help="A multiple of recorded time (1, 10, ...) or 'max'."),
    dump: Path | None = typer.Option(None, "--dump", help="Write the normalized records as JSON lines here."),
    stage: str = typer.Option("", "--stage", help="Without --dump: the running pipeline's feed stage whose rings "
                              "the recording feeds (default: its only feed)."),
    run_dir: Path | None = RunDir,
) -> None:
    """Replay recordings through the live parsers: to JSON lines (--dump) or into a running pipeline's rings in
    place of one of its feeds (the feed is held meanwhile and resumed after)."""
    from feeds.emit import ListEmitter, RingEmitter
    from feeds.replay import Replayer, ReplayError, dump_rows
    from pipeline.stage import DONE

    pace = _speed(speed)
    names = [f for f in files.split(",") if f]
    venues = venue.split(",") if venue else []
    t0 = time.monotonic()
    if dump is not None:
        emit = ListEmitter()
        try:
            rep = Replayer(names, emit, None, venues, pace)
        except (ReplayError, OSError) as e:
            raise _fail(str(e)) from None
        with open(dump, "wb") as f:
            while rep.run(4096) != DONE:
                f.writelines(dump_rows(emit, rep.names))
            f.writelines(dump_rows(emit, rep.names))
        _replay_summary(emit.counts, time.monotonic() - t0, f"records written to {dump}")
        return
    rd, reply = _ask(run_dir, {"cmd": "status"})
    from pipeline.config import load
    from pipeline.records import RECORD_TYPES
    from pipeline.ring import Ring

    cfg = load(rd / CONFIG_NAME)
    feeds = [s["name"] for s in reply["stages"]
             if s["kind"] in ("kucoin", "binance", "binance-usdm", "mexc", "replay")]
    target = stage or (feeds[0] if len(feeds) == 1 else "")
    if target not in cfg.stages:
        raise _fail(f"--stage: name the feed stage to replace (feeds: {', '.join(feeds) or 'none'})")
    _, held = _ask(rd, {"cmd": "hold", "stage": target})
    try:
        rings = {cfg.rings[r].type: Ring.attach(f"{cfg.name}.{r}", RECORD_TYPES[cfg.rings[r].type])
                 for r in held["outputs"]}
        emit = RingEmitter(rings)
        emit.src_seq = max((int(r.last_published(1)["src_seq"][-1]) for r in rings.values()
                            if len(r.last_published(1))), default=0)
        rep = Replayer(names, emit, cfg.instruments, venues, pace, books="book" in rings)
        while rep.run(4096) != DONE:
            pass
    except (ReplayError, OSError) as e:
        raise _fail(str(e)) from None
    finally:
        _ask(rd, {"cmd": "restart", "stage": target}, 120)
    _replay_summary(emit.counts, time.monotonic() - t0, f"published into {', '.join(held['outputs'])} of "
                    f"{cfg.name}; stage {target} resumed")


def _replay_summary(c, seconds: float, where: str) -> None:
    out.print(f"{c.frames} frames, {c.records} records in {seconds:.2f} s; parse errors {c.parse_err}, refused "
              f"{c.bad_value}, gaps {c.gaps}; {where}", highlight=False, soft_wrap=True)


@app.command()
def down(run_dir: Path | None = RunDir, timeout: float = typer.Option(60.0, help="Seconds to wait.")) -> None:
    """Stop every stage and remove the pipeline's segments and control socket."""
    import psutil

    rd, reply = _ask(run_dir, {"cmd": "down"})
    deadline = time.monotonic() + timeout

    def running() -> bool:  # the socket goes before the supervisor has exited: wait for both
        if (rd / SOCKET_NAME).exists():
            return True
        try:
            return psutil.Process(reply["pid"]).status() != psutil.STATUS_ZOMBIE
        except (psutil.Error, KeyError):
            return False

    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
    if running():
        raise _fail(f"the supervisor of {rd} did not finish stopping within {timeout:g} s")
    out.print(f"pipeline in {rd} is down", highlight=False)


@app.command()
def tweaks(
    check: bool = typer.Option(False, "--check", help="Report each tweak's state (default)."),
    apply: bool = typer.Option(False, "--apply", help="Apply the tweaks that are possible here."),
    revert: bool = typer.Option(False, "--revert", help="Undo what --apply did."),
    root: Path = typer.Option(Path("/"), "--root", help="Host root (a fake root directory for testing)."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="Where --apply records what to revert "
                                          "(default: $XDG_STATE_HOME/lowlat or ~/.local/state/lowlat)."),
) -> None:
    """Host tweaks: systemd sleep targets masked, /dev/cpu_dma_latency at 0, performance governor."""
    from pipeline import tweaks as host_tweaks

    state_dir = state_dir or Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state")) / "lowlat"
    if apply + revert + check > 1:
        raise _fail("choose one of --check, --apply, --revert")
    if apply or revert:
        state_dir.mkdir(parents=True, exist_ok=True)
    results = (host_tweaks.apply(root, state_dir) if apply else host_tweaks.revert(root, state_dir) if revert
               else host_tweaks.check(root))
    t = Table(title="host tweaks")
    for col in ("tweak", "status", "detail"):
        t.add_column(col, overflow="fold")
    for r in results:
        t.add_row(r.name, r.status, r.detail)
    out.print(t)


@app.command()
def scan(
    venue: str = typer.Option(..., "--venue", help="kucoin, binance or binance-usdm."),
    symbols: str = typer.Option(..., "--symbols", help="Venue symbols, comma-separated (at least 2), e.g. "
                                "BTC-USDT,ETH-USDT,SOL-USDT."),
    days: float = typer.Option(1.0, "--days", help="Days of one-minute candles before the current minute."),
    rest_url: str | None = typer.Option(None, "--rest-url", help="REST base URL (default: the real venue), "
                                        "e.g. a local simulator's http://127.0.0.1:PORT."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the ranking as JSON here."),
) -> None:
    """Rank candidate pairs from one-minute candles: Engle-Granger cointegration (p-value), hedge ratio, Hurst
    exponent and half-life of the spread (research; implemented in compute.scan_cli)."""
    import importlib

    impl = importlib.import_module("compute.scan_cli")  # by name: pipeline/ imports no compute/ code statically
    try:
        impl.run(venue, symbols, days, rest_url, json_path, out)
    except impl.ScanError as e:
        raise _fail(str(e), 2) from None


if __name__ == "__main__":
    app()
