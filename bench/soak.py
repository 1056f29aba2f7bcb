"""`bench soak`: the whole pipeline for M minutes against the simulator's market at a multiple of the real BTC/ETH
message rate. Every sample (each ``--sample-s``): RSS of every stage process, records, ring waits, the feeds'
counters and the simulator's frames sent and dropped; per sample interval the frame -> sent p99 of the orders
sent in it. The report: RSS at the first and last sample and its growth per stage, dropped frames (the
simulator's frames lost to killed slow connections or stalls, plus the feeds' sequence gaps: must be 0), waits,
restarts, and the latency p99 per interval."""

from __future__ import annotations

import gzip
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench import exec_metrics as em
from bench.host import host_info, loadavg
from bench.latency import (
    POLL_S,
    BenchError,
    Tap,
    _start,
    _stop,
    bench_config,
    order_traces,
    sim_get,
    sim_port,
)
from pipeline.records import ORDER

GROWTH_LIMIT_PCT = 5.0
"""RSS growth per stage over the run above which the report flags the stage."""


def recorded_rate(files: list[str]) -> dict[str, float]:
    """Messages per second per instrument in hftbacktest recordings (``LOCAL_NS RAW_JSON`` lines, one file per
    instrument): lines over the span of their receive times."""
    rates = []
    for f in files:
        first = last = n = 0
        try:
            with gzip.open(f, "rt") as fh:
                for line in fh:
                    t = int(line.split(" ", 1)[0])
                    first, last, n = first or t, t, n + 1
        except (OSError, ValueError) as e:
            raise BenchError(f"--recorded {f}: not a readable hftbacktest recording ({e})") from None
        if n < 2 or last <= first:
            raise BenchError(f"--recorded {f}: fewer than two timed messages")
        rates.append(n / ((last - first) / 1e9))
    return {"per_instrument_hz": float(np.mean(rates)), "files": len(files)}


def _sample(run_dir: Path, port: int | None, t0: float) -> dict[str, Any]:
    from pipeline.control import request

    status = request(run_dir, {"cmd": "status"}, 10)
    stages = {}
    for s in status["stages"]:
        try:
            rss = psutil.Process(s["pid"]).memory_info().rss if s["pid"] else 0
        except psutil.Error:  # exited between the status and now (a restart): counted in restarts
            rss = 0
        stages[s["name"]] = {k: s[k] for k in ("pid", "records_in", "records_out", "waits", "restarts", "errors",
                                                "last_error", "counters")} | {"rss": rss}
    rings = {r["name"]: {k: r[k] for k in ("fill", "capacity", "producer_waits", "consumer_waits")}
             for r in status["rings"]}
    sim = sim_get(port, "/_sim/stats") if port else {}
    return {"t_s": round(time.monotonic() - t0, 3), "stages": stages, "rings": rings, "sim": sim.get("venues", {}),
            "sim_events": sim.get("events", 0)}


def _intervals(samples: list[dict], orders: list[em.OrderTrace], t0_ns: int) -> list[dict[str, Any]]:
    """Per interval between samples: frame -> sent p99 (µs) and count of the orders sent in it."""
    sent = np.array([o.t_sent - t0_ns for o in orders], dtype=np.int64)
    lat = np.array([o.t_sent - o.t_origin for o in orders], dtype=np.int64)
    out = []
    for a, b in itertools.pairwise(samples):
        m = (sent >= a["t_s"] * 1e9) & (sent < b["t_s"] * 1e9)
        s = em.summary_us(lat[m]) if m.any() else {"p99": None, "count": 0}
        out.append({"from_s": a["t_s"], "to_s": b["t_s"], "frame_to_sent_p99_us": s["p99"], "orders": s["count"]})
    return out


def report(samples: list[dict], orders: list[em.OrderTrace], t0_ns: int) -> dict[str, Any]:
    """The soak's figures from its samples and the orders it saw."""
    first, last = samples[0], samples[-1]
    stages = {}
    for name, a in first["stages"].items():
        b = last["stages"].get(name, a)
        growth = (b["rss"] - a["rss"]) / a["rss"] * 100 if a["rss"] and b["rss"] else None
        stages[name] = {"rss_start_mb": round(a["rss"] / 2**20, 1), "rss_end_mb": round(b["rss"] / 2**20, 1),
                        "rss_max_mb": round(max(s["stages"][name]["rss"] for s in samples) / 2**20, 1),
                        "rss_growth_pct": None if growth is None else round(growth, 2),
                        "records_in": b["records_in"] - a["records_in"],
                        "records_out": b["records_out"] - a["records_out"], "waits": b["waits"] - a["waits"],
                        "restarts": b["restarts"], "errors": b["errors"] - a["errors"], "last_error": b["last_error"]}
    rings = {name: {"max_fill": max(s["rings"][name]["fill"] for s in samples), "capacity": r["capacity"],
                    "producer_waits": r["producer_waits"] - first["rings"][name]["producer_waits"],
                    "consumer_waits": r["consumer_waits"] - first["rings"][name]["consumer_waits"]}
             for name, r in last["rings"].items()}
    feeds = {name: s["counters"] for name, s in last["stages"].items() if "frames" in s["counters"]}
    gaps = sum(c.get("gaps", 0) for c in feeds.values())
    venues = {v: st for v, st in last["sim"].items() if st.get("connections_total")}
    sim_dropped = sum(st.get("frames_dropped", 0) for st in venues.values())
    span = last["t_s"] - first["t_s"]
    frames = sum(c["frames"] for c in feeds.values()) - sum(
        first["stages"][n]["counters"].get("frames", 0) for n in feeds)  # none yet if it has not yet read one
    return {
        "stages": stages,
        "rings": rings,
        "dropped_frames": sim_dropped + gaps,
        "dropped": {"simulator_frames_dropped": sim_dropped, "feed_gaps": gaps},
        "feed_frames_per_s": round(frames / span, 1) if span > 0 else None,
        "simulator_events_per_s": round((last["sim_events"] - first["sim_events"]) / span, 1) if span > 0 else None,
        "feeds": {n: {k: c.get(k, 0) for k in ("frames", "parse_err", "bad_value", "gaps", "reconnects")}
                  for n, c in feeds.items()},
        "venues": venues,
        "intervals": _intervals(samples, orders, t0_ns),
        "max_rss_growth_pct": max((s["rss_growth_pct"] for s in stages.values()
                                   if s["rss_growth_pct"] is not None), default=None),
    }


def run(config: Path, *, minutes: float, rate_x: float, recorded: list[str], sample_s: float, orders_per_s: float,
        run_dir: Path | None, progress=print) -> dict[str, Any]:
    """The whole soak; returns the JSON document."""
    from pipeline.config import ConfigError, parse, to_toml
    from pipeline.ring import Ring

    try:
        text = config.read_text()
    except OSError as e:
        raise BenchError(f"{config}: cannot read config: {e.strerror}") from None
    rec = recorded_rate(recorded)
    rate_hz = rec["per_instrument_hz"] * rate_x
    raw, sim = bench_config(text, str(config), replay=[], speed=1.0, venue_latency_ms=None,
                            orders_per_s=orders_per_s, measure_notional=None)
    if sim is None:
        raise BenchError(f"{config}: bench soak needs the simulator as a service ([services.NAME] module = "
                         "\"feeds.simulator\")")
    raw["name"] = raw["name"].removesuffix("-bench") + "-soak"
    sim["args"] = [*sim["args"], "--rate-hz", f"{rate_hz:.3f}"]
    text = to_toml(raw)
    try:
        cfg = parse(text, "soak config")
    except ConfigError as e:
        raise BenchError(str(e)) from None
    rd = (run_dir or Path("runs") / cfg.name).resolve()
    rd.mkdir(parents=True, exist_ok=True)
    for stale in ("executor.journal", "order_sink.bin"):
        (rd / stale).unlink(missing_ok=True)
    (rd / "config.toml").write_text(text)
    port = sim_port(sim)
    progress(f"starting {cfg.name} in {rd}: the simulator at {rate_x:g}x the recorded rate "
             f"({rate_hz:.1f} messages/s per instrument)")
    proc = _start(rd, 180.0)
    samples: list[dict] = []
    try:
        tap = Tap({r: Ring.attach(f"{cfg.name}.{r}", ORDER) for r, spec in cfg.rings.items() if spec.type == "order"})
        sim_get(port, "/_sim/go", post=True)
        t0, t0_ns = time.monotonic(), time.monotonic_ns()
        end = t0 + minutes * 60
        samples.append(_sample(rd, port, t0))
        next_at = t0 + sample_s
        while True:
            time.sleep(POLL_S)
            tap.poll()
            if proc.poll() is not None:
                raise BenchError(f"the supervisor exited with code {proc.returncode} during the soak")
            now = time.monotonic()
            if now >= next_at or now >= end:
                samples.append(_sample(rd, port, t0))
                s = samples[-1]
                progress(f"{s['t_s']:7.0f} s  RSS " + ", ".join(
                    f"{n} {x['rss'] / 2**20:.0f}" for n, x in s["stages"].items()) + " MB")
                next_at += sample_s
                if now >= end:
                    break
        symbols = [i.symbol for i in cfg.instruments]
        orders = [o for r in tap.parts for o in order_traces(tap.records(r, ORDER), symbols)]
    finally:
        _stop(rd, proc)
    doc: dict[str, Any] = {"config": str(config), "host": host_info(), "loadavg": loadavg(),
                           "minutes": minutes, "rate_x": rate_x, "recorded": rec, "rate_hz_per_instrument": rate_hz,
                           "sample_s": sample_s, "orders_per_s": orders_per_s, "orders": len(orders)}
    doc.update(report(samples, orders, t0_ns))
    doc["samples"] = samples
    return doc


def render(doc: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    t = Table(title=f"soak: {doc['minutes']:g} min at {doc['rate_x']:g}x the recorded rate "
                    f"(feeds {doc['feed_frames_per_s']} frames/s, simulator {doc['simulator_events_per_s']} events/s)")
    for c in ("stage", "RSS start MB", "RSS end MB", "RSS max MB", "growth %", "records in", "records out",
              "waits", "restarts", "errors"):
        t.add_column(c, justify="left" if c == "stage" else "right")
    for name, s in doc["stages"].items():
        g = s["rss_growth_pct"]
        flag = "" if g is None or g < GROWTH_LIMIT_PCT else " [red](> 5 %)[/]"
        t.add_row(name, f"{s['rss_start_mb']:,.1f}", f"{s['rss_end_mb']:,.1f}", f"{s['rss_max_mb']:,.1f}",
                  ("-" if g is None else f"{g:+.2f}") + flag, f"{s['records_in']:,}", f"{s['records_out']:,}",
                  f"{s['waits']:,}", str(s["restarts"]), str(s["errors"]))
    console.print(t)
    for name, s in doc["stages"].items():
        if s["errors"]:
            console.print(f"{name}: last error: {s['last_error']}", highlight=False, soft_wrap=True)
    r = Table(title="rings (producer waits: the ring was full)")
    for c in ("ring", "max fill", "capacity", "producer waits", "consumer waits"):
        r.add_column(c, justify="left" if c == "ring" else "right")
    for name, s in doc["rings"].items():
        r.add_row(name, f"{s['max_fill']:,}", f"{s['capacity']:,}", f"{s['producer_waits']:,}",
                  f"{s['consumer_waits']:,}")
    console.print(r)
    i = Table(title="frame -> sent p99 per interval, µs")
    for c in ("from s", "to s", "p99", "orders"):
        i.add_column(c, justify="right")
    for row in doc["intervals"]:
        p99 = row["frame_to_sent_p99_us"]
        i.add_row(f"{row['from_s']:,.0f}", f"{row['to_s']:,.0f}", "-" if p99 is None else f"{p99:,.1f}",
                  str(row["orders"]))
    console.print(i)
    d = doc["dropped"]
    colour = "green" if doc["dropped_frames"] == 0 else "red"
    console.print(f"dropped frames: [{colour}]{doc['dropped_frames']}[/] (simulator {d['simulator_frames_dropped']}, "
                  f"feed gaps {d['feed_gaps']}); largest RSS growth {doc['max_rss_growth_pct']} % "
                  f"(limit {GROWTH_LIMIT_PCT:g} %)")
