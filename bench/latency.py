"""``bench latency``: run a pipeline (or attach to one) and report the five figures from its records.

The run: the config is copied with the changes the options ask for (a ``-bench`` name so a pipeline already up
is not disturbed; the simulator service given ``--replay FILES --speed X`` and ``--order-latency-ms``; the stats
stages given ``measure_orders_per_s``), started detached (``python -m pipeline.supervisor``), and while it runs
every ring of type bbo, bar, signal and order is read from shared memory without consuming it (``Ring.read``:
the consumers are not slowed and nothing is taken from them). The run ends after ``--duration`` s or, with
``--replay``, when the simulator has served the last recorded record and the pipeline has drained.

From the records: execution latency per order (ORDER records: frame -> decision -> sent -> ack), the hop of each
stage (its output record published minus the input record it came from, by ``src_ring`` / ``src_seq``; sources:
frame received -> published), micro-volatility on the BBO records' event time, fill ratio, capture rate and
inventory drift (bench.exec_metrics). The executor's journal adds the signals it refused and why.

``--baseline`` then runs the seed's design (bench.baseline: one process, websocket callback, stdlib JSON, full
window recompute, signed synchronous REST) against a fresh simulator with the same arguments and data, for the
same wall time, and reports it with the same code, side by side.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench import exec_metrics as em
from bench.host import host_info, loadavg
from pipeline.records import (
    EV_FILL,
    EV_SENT,
    ORDER,
    PURPOSE_MEASURE,
    RECORD_TYPES,
)

TAPPED = ("bbo", "bar", "signal", "order")
POLL_S = 0.2
DRAIN_S = 3.0
"""After the replay ends: how long the pipeline gets to finish what is in flight."""
BAR_P99_US = 250.0
"""The bar on this 2-core machine: frame -> sent p99 under 250 µs (and at most 1/3 of the baseline's)."""


class BenchError(RuntimeError):
    """The benchmark could not run (config, pipeline start, simulator)."""


# -- config --------------------------------------------------------------------------------------------------------

def bench_config(text: str, source: str, *, replay: list[str], speed: float, venue_latency_ms: float | None,
                 orders_per_s: float, measure_notional: float | None) -> tuple[dict, dict | None]:
    """The config to run (a ``tomllib`` dict) and its simulator service (None if it has none)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"{source}: not valid TOML: {e}") from None
    raw["name"] = f"{raw.get('name', 'pipeline')}-bench"
    raw.pop("run_dir", None)
    sim = next((s for s in raw.get("services", {}).values() if s.get("module") == "feeds.simulator"), None)
    if sim is None and (replay or venue_latency_ms is not None):
        raise BenchError(f"{source}: --replay and --venue-latency-ms need the simulator as a service "
                         "([services.NAME] module = \"feeds.simulator\")")
    if sim is not None:
        args = [*sim.get("args", []), "--hold"]  # the market starts when the measured side is ready
        if replay:
            args += ["--replay", ",".join(replay), "--speed", repr(speed)]
        if venue_latency_ms is not None:
            args += ["--order-latency-ms", str(round(venue_latency_ms))]
        sim["args"] = args
    stats = [s for s in raw.get("stages", {}).values() if s.get("kind") == "stats"]
    if orders_per_s > 0:
        if not stats:
            raise BenchError(f"{source}: --orders-per-s needs a stats stage (it emits the measurement signals)")
        for s in stats:
            s.setdefault("params", {})["measure_orders_per_s"] = float(orders_per_s)
            if measure_notional is not None:
                s["params"]["measure_notional"] = float(measure_notional)
    return raw, sim


def sim_port(sim: dict) -> int:
    """The simulator's port from its service args (``--port N``)."""
    args = sim.get("args", [])
    return int(args[args.index("--port") + 1]) if "--port" in args else int(sim.get("port", 0))


def sim_get(port: int, path: str, timeout: float = 5.0, post: bool = False) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"" if post else None,
                                 method="POST" if post else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


# -- the run -------------------------------------------------------------------------------------------------------

@dataclass
class Tap:
    """Reads rings behind their producers, without consuming: every record still intact when polled."""

    rings: dict[str, Any]
    parts: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        from pipeline.ring import RingReader

        self.readers = {name: RingReader(ring) for name, ring in self.rings.items()}

    def poll(self) -> None:
        for name, reader in self.readers.items():
            recs = reader.read()
            if len(recs):
                self.parts[name].append(recs)

    @property
    def lost(self) -> dict[str, int]:
        """Records per ring the producers overwrote before the tap read them."""
        return {name: reader.missed for name, reader in self.readers.items()}

    def records(self, name: str, dtype: np.dtype) -> np.ndarray:
        p = self.parts.get(name)
        return np.concatenate(p) if p else np.zeros(0, dtype=dtype)


def _attach(cfg: Any) -> dict[str, Any]:
    from pipeline.ring import Ring

    return {r: Ring.attach(f"{cfg.name}.{r}", RECORD_TYPES[spec.type]) for r, spec in cfg.rings.items()
            if spec.type in TAPPED}


def _start(run_dir: Path, ready_timeout: float) -> subprocess.Popen:
    from pipeline.control import ControlError, request

    log = open(run_dir / "supervisor.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.supervisor", str(run_dir), "-"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (run_dir / "supervisor.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise BenchError(f"the pipeline exited with code {proc.returncode}: {' | '.join(tail)}")
        try:
            if request(run_dir, {"cmd": "ping"}, 5).get("ready"):
                return proc
        except ControlError:
            pass
        time.sleep(0.1)
    _stop(run_dir, proc)
    raise BenchError(f"not every stage was ready after {ready_timeout:g} s (see {run_dir / 'supervisor.log'})")


def _stop(run_dir: Path, proc: subprocess.Popen | None) -> dict | None:
    """Status just before stopping, then ``down``; waits for the supervisor to exit."""
    from pipeline.control import ControlError, request

    status = None
    try:
        status = request(run_dir, {"cmd": "status"}, 10)
        request(run_dir, {"cmd": "down"}, 10)
    except (ControlError, OSError, ValueError):  # no answer: the process group is killed below
        pass
    if proc is not None:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return status


def run_pipeline(raw: dict, run_dir: Path, *, duration: float, replay: bool, port: int | None,
                 ready_timeout: float = 180.0, progress=print) -> dict[str, Any]:
    """Start the pipeline of ``raw`` in ``run_dir``, tap its rings until the end, stop it. Returns the records
    by ring, the config, the wall time of the measured run and the last status."""
    from pipeline.config import ConfigError, parse, to_toml

    text = to_toml(raw)
    try:
        cfg = parse(text, "bench config")
    except ConfigError as e:
        raise BenchError(str(e)) from None
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("executor.journal", "order_sink.bin"):
        (run_dir / stale).unlink(missing_ok=True)
    (run_dir / "config.toml").write_text(text)
    progress(f"starting {cfg.name} in {run_dir}")
    proc = _start(run_dir, ready_timeout)
    status: dict | None = None
    try:
        tap = Tap(_attach(cfg))
        if port:
            sim_get(port, "/_sim/go", post=True)
        t0 = time.monotonic()
        progress(f"running ({'until the recordings end' if replay else f'{duration:g} s'})")
        ended = None
        while True:
            time.sleep(POLL_S)
            tap.poll()
            now = time.monotonic()
            if proc.poll() is not None:
                raise BenchError(f"the supervisor exited with code {proc.returncode} during the run")
            if replay and ended is None and port:
                try:
                    if sim_get(port, "/_sim/stats").get("replay_done"):
                        ended = now
                except OSError:
                    pass
            if (ended is not None and now - ended >= DRAIN_S) or (not replay and now - t0 >= duration) or (
                    replay and duration and now - t0 >= duration):
                break
        wall = time.monotonic() - t0
        tap.poll()
        t_end = time.monotonic_ns()
    finally:
        status = _stop(run_dir, proc)
    return {"cfg": cfg, "tap": tap, "wall_s": wall, "t_end": t_end, "status": status}


def attach_run(run_dir: Path, duration: float, progress=print) -> dict[str, Any]:
    """Tap a running pipeline's rings for ``duration`` s (records already in the rings count too)."""
    from pipeline.config import load

    cfg = load(run_dir / "config.toml")
    tap = Tap(_attach(cfg))
    progress(f"attached to {cfg.name} ({run_dir}) for {duration:g} s")
    t0 = time.monotonic()
    while time.monotonic() - t0 < duration:
        time.sleep(POLL_S)
        tap.poll()
    tap.poll()
    return {"cfg": cfg, "tap": tap, "wall_s": time.monotonic() - t0, "t_end": time.monotonic_ns(), "status": None}


# -- from records --------------------------------------------------------------------------------------------------

def order_traces(orders: np.ndarray, symbols: list[str]) -> list[em.OrderTrace]:
    """ORDER records -> one trace per order sent (times, fills)."""
    traces: dict[int, em.OrderTrace] = {}
    for r in orders[orders["event"] == EV_SENT]:
        no = int(r["order_no"])
        traces[no] = em.OrderTrace(
            str(no), int(r["pair"]), int(r["leg"]), symbols[int(r["instrument"])], int(r["side"]), float(r["qty"]),
            float(r["mid"]), float(r["target"]), int(r["t_origin_ns"]), int(r["t_decision_ns"]),
            int(r["t_sent_ns"]), measure=int(r["purpose"]) == PURPOSE_MEASURE)
    for r in orders:
        o = traces.get(int(r["order_no"]))
        if o is None:
            continue
        if not o.t_ack and int(r["t_ack_ns"]):  # the ack, or a fill read before it (it counts as the ack)
            o.t_ack = int(r["t_ack_ns"])
        if int(r["event"]) == EV_FILL:
            o.fills.append((int(r["t_event_ns"]), float(r["last_qty"]), float(r["last_px"]), float(r["fee"])))
    return list(traces.values())


def hops(cfg: Any, tap: Tap) -> dict[str, dict]:
    """Per stage and output ring: output published - input published (sources: - frame received), µs."""
    recs = {name: tap.records(name, RECORD_TYPES[cfg.rings[name].type]) for name in tap.rings}
    out: dict[str, dict] = {}
    for stage, spec in cfg.stages.items():
        for o in spec.outputs:
            r = recs.get(o)
            if r is None or not len(r):
                continue
            if cfg.rings[o].type == "order":
                r = r[r["event"] == EV_SENT]
            if not spec.inputs:
                ok = r["t_origin_ns"] > 0
                out[f"{stage}: frame->{o}"] = em.summary_us(r["t_pub_ns"][ok] - r["t_origin_ns"][ok])
                continue
            values = []
            for k, i in enumerate(spec.inputs):
                src = recs.get(i)
                if src is None or not len(src):
                    continue
                mine = r[r["src_ring"] == k]
                idx = mine["src_seq"].astype(np.int64) - int(src["seq"][0])
                ok = (idx >= 0) & (idx < len(src)) & (mine["t_origin_ns"] > 0)
                idx, mine = idx[ok], mine[ok]
                same = src["seq"][idx] == mine["src_seq"]
                values.append(mine["t_pub_ns"][same] - src["t_pub_ns"][idx[same]])
            if values:
                out[f"{stage}: {'+'.join(spec.inputs[:1])}->{o}"] = em.summary_us(np.concatenate(values))
    return out


def micro_vol(cfg: Any, tap: Tap) -> dict[str, dict]:
    out: dict[str, dict] = {}
    ticks = [tap.records(n, RECORD_TYPES["bbo"]) for n in tap.rings if cfg.rings[n].type == "bbo"]
    if not ticks:
        return out
    t = np.concatenate(ticks)
    for i, ins in enumerate(cfg.instruments):
        mine = t[t["instrument"] == i]
        if len(mine):
            v, steps = em.micro_volatility(mine["ts_event_ms"], (mine["bid_px"] + mine["ask_px"]) / 2)
            out[ins.symbol] = {"value": None if v is None else round(v, 6), "steps": steps,
                               "first_ms": int(mine["ts_event_ms"].min()), "last_ms": int(mine["ts_event_ms"].max())}
    return out


def journal_skips(path: Path) -> dict[str, int]:
    """Signals the executor refused, by reason (its journal's ``skip`` lines)."""
    c: Counter = Counter()
    if path.exists():
        for line in path.read_bytes().splitlines():
            try:
                e = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if e.get("t") == "skip":
                c[e.get("reason", "?")] += 1
    return dict(c)


def figures(orders: list[em.OrderTrace], t_end: int) -> dict[str, Any]:
    """The per-order figures common to both runs."""
    parts = em.latency_parts(orders)
    return {
        "orders": {"sent": sum(1 for o in orders if o.t_sent), "acked": sum(1 for o in orders if o.t_ack),
                   "measurement": sum(1 for o in orders if o.measure)},
        "execution_latency_us": {k: em.summary_us(v) for k, v in parts.items()},
        "fill_ratio": em.fill_ratio(orders),
        "capture_rate": em.capture_rate(orders),
        "inventory_drift": em.inventory_drift(orders, t_end),
        "_parts_ns": parts,
    }


def pipeline_report(run: dict[str, Any]) -> dict[str, Any]:
    cfg, tap = run["cfg"], run["tap"]
    order_rings = [n for n in tap.rings if cfg.rings[n].type == "order"]
    recs = np.concatenate([tap.records(n, ORDER) for n in order_rings]) if order_rings else np.zeros(0, ORDER)
    symbols = [i.symbol for i in cfg.instruments]
    doc = figures(order_traces(recs, symbols), run["t_end"])
    doc["hops_us"] = hops(cfg, tap)
    doc["micro_volatility_bps"] = micro_vol(cfg, tap)
    doc["records"] = {n: int(sum(len(p) for p in tap.parts.get(n, []))) for n in tap.rings}
    doc["records_lost_to_tap"] = dict(tap.lost)
    return doc


# -- baseline ------------------------------------------------------------------------------------------------------

def run_baseline(sim: dict, run_dir: Path, *, wall_s: float, replay: bool, orders_per_s: float,
                 measure_notional: float | None, progress=print) -> dict[str, Any]:
    """Start a fresh simulator with the service's arguments, run bench.baseline against it for ``wall_s`` (or
    until the replay ends), read the orders it wrote and the simulator's fills."""
    port = sim_port(sim)
    cmd = [sys.executable, "-m", sim["module"], *sim.get("args", [])]
    simp = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        line = simp.stdout.readline() if simp.stdout else ""
        if "listening" not in line:
            raise BenchError(f"baseline: the simulator did not start ({line.strip()!r})")
        out = run_dir / "baseline.orders.jsonl"
        for p in (out, out.with_name("baseline.orders.ticks.jsonl")):
            p.unlink(missing_ok=True)
        args = [sys.executable, "-m", "bench.baseline", "--rest-url", f"http://127.0.0.1:{port}", "--out", str(out),
                "--duration", f"{wall_s + 120:.3f}", "--orders-per-s", str(orders_per_s)]
        if measure_notional is not None:
            args += ["--measure-notional", str(measure_notional)]
        progress(f"baseline: the seed's design against a fresh simulator for {wall_s:.1f} s")
        bot = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(run_dir / "baseline.log", "wb"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and bot.poll() is None:  # its market websocket is up: start the market
            if sim_get(port, "/_sim/stats")["venues"]["kucoin"]["connections_open"] > 0:
                time.sleep(0.5)  # its subscriptions
                break
            time.sleep(0.05)
        sim_get(port, "/_sim/go", post=True)
        t0 = time.monotonic()
        try:
            bot.wait(wall_s)
        except subprocess.TimeoutExpired:
            bot.terminate()  # it stops and flushes its files
            bot.wait(30)
        t_end = time.monotonic_ns()
        fills = sim_get(port, "/_sim/accounts")["kucoin"]["fill_log"]
        wall = time.monotonic() - t0
    finally:
        simp.terminate()
        try:
            simp.wait(10)
        except subprocess.TimeoutExpired:
            simp.kill()
    rows = [orjson.loads(x) for x in out.read_bytes().splitlines() if x.strip()] if out.exists() else []
    by_cid: dict[str, list[dict]] = defaultdict(list)
    for f in fills:
        by_cid[f["client_id"]].append(f)
    orders: list[em.OrderTrace] = []
    position: dict[tuple[int, int], float] = defaultdict(float)
    for r in rows:
        if not r.get("t_sent_ns"):
            continue
        leg = int(r["leg"])
        o = em.OrderTrace(r["client_id"], 0, leg, r["symbol"], int(r["side"]), float(r["qty"]), float(r["mid"]), 0.0,
                          int(r["t_frame_ns"]), int(r["t_decision_ns"]), int(r["t_sent_ns"]),
                          int(r.get("t_ack_ns") or 0), measure=True)
        key = (0, leg)
        o.target = 0.0 if r.get("action") == "exit" else position[key] + o.side * o.qty
        for f in by_cid.get(o.key, []):  # an IOC fills inside the request: the fill is known at the ack
            fee = float(f["fee"]) if f["fee_asset"] == f["symbol"].split("-")[-1] else float(f["fee"]) * float(
                f["price"])
            o.fills.append((o.t_ack or o.t_sent, float(f["qty"]), float(f["price"]), fee))
        position[key] += o.side * o.filled
        orders.append(o)
    doc = figures(orders, t_end)
    ticks = out.with_name("baseline.orders.ticks.jsonl")
    mv: dict[str, dict] = {}
    if ticks.exists():
        per: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for x in ticks.read_bytes().splitlines():
            t = orjson.loads(x)
            per[t["symbol"]].append((int(t["ts_ms"]), (float(t["bid"]) + float(t["ask"])) / 2))
        for sym, v in per.items():
            val, steps = em.micro_volatility(np.array([a for a, _ in v]), np.array([b for _, b in v]))
            mv[sym] = {"value": None if val is None else round(val, 6), "steps": steps}
    doc["micro_volatility_bps"] = mv
    doc["wall_s"] = round(wall, 3)
    return doc


# -- report --------------------------------------------------------------------------------------------------------

def run(config: Path, *, duration: float, replay: list[str], speed: float, venue_latency_ms: float | None,
        orders_per_s: float, measure_notional: float | None, baseline: bool, attach: bool, run_dir: Path | None,
        progress=print) -> dict[str, Any]:
    """The whole benchmark; returns the JSON document (plus ``_parts_ns`` entries for the plot)."""
    if attach:
        if baseline or replay or venue_latency_ms is not None or orders_per_s:
            raise BenchError("--attach measures a running pipeline as it is: --baseline, --replay, "
                             "--venue-latency-ms and --orders-per-s need a run of their own")
        from pipeline.control import ControlError, find_run_dir

        try:
            rd = find_run_dir(run_dir)
        except ControlError as e:
            raise BenchError(str(e)) from None
        r = attach_run(rd, duration, progress)
        sim = None
        config_name = str(rd / "config.toml")
    else:
        try:
            text = config.read_text()
        except OSError as e:
            raise BenchError(f"{config}: cannot read config: {e.strerror}") from None
        missing = [f for f in replay if not Path(f).is_file()]
        if missing:
            raise BenchError(f"--replay: no such file: {missing[0]}")
        replay = [str(Path(f).resolve()) for f in replay]
        raw, sim = bench_config(text, str(config), replay=replay, speed=speed, venue_latency_ms=venue_latency_ms,
                                orders_per_s=orders_per_s, measure_notional=measure_notional)
        rd = (run_dir or Path("runs") / raw["name"]).resolve()
        r = run_pipeline(raw, rd, duration=duration, replay=bool(replay), port=sim_port(sim) if sim else None,
                         progress=progress)
        config_name = str(config)
    doc: dict[str, Any] = {"config": config_name, "host": host_info(("hdrhistogram",)), "loadavg": loadavg(),
                           "duration_s": round(r["wall_s"], 3), "replay": replay, "speed": speed if replay else None,
                           "simulated_venue_latency_ms": venue_latency_ms if venue_latency_ms is not None else (
                               0.0 if sim else None),
                           "orders_per_s": orders_per_s}
    doc.update(pipeline_report(r))
    doc["skipped_signals"] = journal_skips(rd / "executor.journal")
    if baseline:
        if sim is None:
            raise BenchError("--baseline needs the simulator as a service of the config")
        doc["baseline"] = run_baseline(sim, rd, wall_s=r["wall_s"], replay=bool(replay), orders_per_s=orders_per_s,
                                       measure_notional=measure_notional, progress=progress)
        ours = doc["execution_latency_us"]["frame_to_sent"]["p99"]
        theirs = doc["baseline"]["execution_latency_us"]["frame_to_sent"]["p99"]
        doc["ratio_frame_to_sent_p99"] = round(theirs / ours, 2) if ours and theirs else None
    return doc


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:,.1f}" if isinstance(x, float) else str(x)


def render(doc: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    base = doc.get("baseline")
    t = Table(title=f"execution latency, µs ({doc['orders']['sent']} orders, {doc['duration_s']:.1f} s; simulated "
                    f"venue latency {_fmt(doc['simulated_venue_latency_ms'])} ms, not ours)")
    t.add_column("part")
    for k in ("p50", "p90", "p99", "p999", "max", "count"):
        t.add_column(k, justify="right")
    for who, d in (("lowlat", doc), ("baseline", base)):
        if d is None:
            continue
        for part in em.LATENCY_PARTS:
            s = d["execution_latency_us"][part]
            t.add_row(f"{who} {part}", *(_fmt(s[k]) for k in ("p50", "p90", "p99", "p999", "max", "count")))
    console.print(t)
    h = Table(title="hops, µs (output published - input published)")
    for c in ("hop", "p50", "p99", "p999", "max", "count"):
        h.add_column(c, justify="left" if c == "hop" else "right")
    for name, s in doc["hops_us"].items():
        h.add_row(name, *(_fmt(s[k]) for k in ("p50", "p99", "p999", "max", "count")))
    console.print(h)
    f = Table(title="figures")
    f.add_column("figure")
    f.add_column("lowlat", justify="right")
    if base:
        f.add_column("baseline", justify="right")
    rows: list[tuple[str, Any, Any]] = []
    for sym, v in doc["micro_volatility_bps"].items():
        b = (base or {}).get("micro_volatility_bps", {}).get(sym, {})
        rows.append((f"micro-volatility 100 ms {sym} (bps / steps)", f"{_fmt(v['value'])} / {v['steps']}",
                     f"{_fmt(b.get('value'))} / {b.get('steps', '-')}"))
    for k in ("by_qty", "by_orders"):
        rows.append((f"fill ratio {k}", doc["fill_ratio"][k], (base or {}).get("fill_ratio", {}).get(k)))
    c, cb = doc["capture_rate"], (base or {}).get("capture_rate", {})
    rows.append(("capture rate (realized / theoretical)", f"{_fmt(c['value'])} ({_fmt(c['realized'])} / "
                 f"{_fmt(c['theoretical'])}, {c['round_trips']} trips)",
                 f"{_fmt(cb.get('value'))} ({_fmt(cb.get('realized'))} / {_fmt(cb.get('theoretical'))})"))
    for k, v in doc["inventory_drift"].items():
        b = (base or {}).get("inventory_drift", {}).get(k, {})
        rows.append((f"inventory drift {k} mean / max / final (quote), % gross",
                     f"{_fmt(v['mean'])} / {_fmt(v['max'])} / {_fmt(v['final'])}, {_fmt(v['pct_of_gross'])} %",
                     f"{_fmt(b.get('mean'))} / {_fmt(b.get('max'))} / {_fmt(b.get('final'))}, "
                     f"{_fmt(b.get('pct_of_gross'))} %"))
    for name, a, b in rows:
        f.add_row(name, _fmt(a), *([_fmt(b)] if base else []))
    console.print(f)
    p99 = doc["execution_latency_us"]["frame_to_sent"]["p99"]
    line = f"frame -> sent p99 {_fmt(p99)} µs (bar: < {BAR_P99_US:g} µs on a 2-core host)"
    if base:
        line += (f"; baseline {_fmt(base['execution_latency_us']['frame_to_sent']['p99'])} µs, ratio "
                 f"{_fmt(doc.get('ratio_frame_to_sent_p99'))}x (bar: >= 3x)")
    console.print(line, highlight=False)
    if doc.get("skipped_signals"):
        console.print(f"signals refused by the executor: {doc['skipped_signals']}", highlight=False)


def strip(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without the raw ns arrays (kept for the plot)."""
    out = {k: v for k, v in doc.items() if k != "_parts_ns"}
    if "baseline" in out:
        out["baseline"] = {k: v for k, v in out["baseline"].items() if k != "_parts_ns"}
    return out


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(strip(doc), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def plot(doc: dict[str, Any], path: Path) -> None:
    """CDFs of the latency parts on a log axis, lowlat solid, baseline dashed (matplotlib: the ``plot`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install -e '.[plot]'") from None
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for who, d, style in (("lowlat", doc, "-"), ("baseline", doc.get("baseline"), "--")):
        if not d:
            continue
        for k, part in enumerate(em.LATENCY_PARTS):
            v = np.sort(np.asarray(d["_parts_ns"][part], dtype=np.float64)) / 1e3
            v = v[v > 0]
            if len(v):
                ax.plot(v, np.arange(1, len(v) + 1) / len(v), style, color=f"C{k}", label=f"{who} {part}")
    ax.set_xscale("log")
    ax.set_xlabel("µs")
    ax.set_ylabel("fraction of orders")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"execution latency ({doc['config']})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
