"""`bench chaos`: the whole pipeline (a config with the simulator as a service, e.g. configs/sim.toml) trading live
while a seeded sequence of SIGKILLs hits random stages and the supervisor itself; then everything it kept is
compared with an uninterrupted computation.

The run: start the pipeline, release the simulator's seeded market, then ``kills`` times: wait a random 0.3-1.5 s,
SIGKILL a random target (any stage, or the supervisor), and wait until it is back (a stage: running under a new
pid; the supervisor: a new one started the way ``pipeline up --detach`` does, which takes over the live stages).
Then the feeds are held (stopped cleanly), every ring drains, and the executor's orders settle.

What is compared, and why not with a second live run of the same seed: a feed that is killed loses what the
venue sent while it was down (no venue replays its websocket), so from the feed on no interrupted run can equal an
uninterrupted one. What the pipeline promises is that nothing *after* the venue is lost or doubled: so the
reference is the uninterrupted computation over what the feeds published (the ticks ring, whole) and what the bars
stage warmed up with:

- bars: ``compute.bars.bars_py`` (the kernel's plain-Python twin, equal to it record for record in test_bars) over
  the ticks, from the state the warm-up bars leave; every field but ``t_pub_ns``;
- signals and events.jsonl: the stats stage's compiled kernel (``PairsEngine``) run once over those bars in this
  process, every signal field but ``t_pub_ns``, and events.jsonl byte for byte;
- orders: no client id in two journal ``order`` lines, no signal with two intents, no client id placed twice at
  the venue; the executor's positions equal the simulator's account (balance changes of each base asset);
- after ``down``: no segment, socket or process of the pipeline left.
"""

from __future__ import annotations

import random
import subprocess
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil

from bench.host import host_info, loadavg
from bench.latency import BenchError, _start, _stop, bench_config, sim_get, sim_port
from pipeline.records import BAR, BBO, SIGNAL

SUPERVISOR = "supervisor"
STALE = ("executor.journal", "order_sink.bin", "trade_sink.bin", "events.jsonl", "stats.ckpt")
"""Files a previous run in the same directory left that this run must not read as its own."""


def _status(rd: Path) -> dict:
    from pipeline.control import request

    return request(rd, {"cmd": "status"}, 10)


def _try_status(rd: Path) -> dict | None:
    from pipeline.control import ControlError

    try:
        return _status(rd)
    except (ControlError, OSError, ValueError):
        return None


def _wait(pred, timeout: float, what: str, poll: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(poll)
    raise BenchError(f"timed out after {timeout:g} s waiting for {what}")


def _stage(status: dict, name: str) -> dict:
    return next(s for s in status["stages"] if s["name"] == name)


def _all_running(status: dict | None) -> bool:
    return status is not None and all(s["state"] == "running" and s["pid"] for s in status["stages"])


# -- the kills -----------------------------------------------------------------------------------------------------

def _kill_stage(rd: Path, name: str) -> float:
    """SIGKILL the stage's process; seconds until it runs again under a new pid (every other stage running)."""
    st = _wait(lambda: (s := _try_status(rd)) and _all_running(s) and s, 120, "every stage running")
    pid = _stage(st, name)["pid"]
    t0 = time.monotonic()
    psutil.Process(pid).kill()
    _wait(lambda: (s := _try_status(rd)) and _stage(s, name)["pid"] not in (None, pid) and _all_running(s), 120,
          f"{name} to run again after SIGKILL")
    return time.monotonic() - t0


def _kill_supervisor(rd: Path, proc: subprocess.Popen) -> tuple[float, subprocess.Popen, list[str]]:
    """SIGKILL the supervisor and start a new one at once: seconds until every stage is ready under it."""
    t0 = time.monotonic()
    proc.kill()
    proc.wait()
    new = _start(rd, 180.0)
    took = time.monotonic() - t0
    adopted = _status(rd)["adopted_at_start"]
    return took, new, adopted


# -- the comparison ------------------------------------------------------------------------------------------------

def _ring_all(cfg: Any, name: str, dtype: np.dtype) -> np.ndarray:
    from pipeline.ring import Ring

    ring = Ring.attach(f"{cfg.name}.{name}", dtype)
    try:
        n = ring.producer_pos
        if n > ring.capacity:
            raise BenchError(f"ring {name}: {n} records, more than its capacity {ring.capacity}: the run is too long "
                             "to compare whole (fewer kills, or a larger ring)")
        return ring.read(0, n).copy()
    finally:
        ring.close()


def _differ(a: np.ndarray, b: np.ndarray, what: str, skip: tuple[str, ...] = ("t_pub_ns",)) -> list[str]:
    """Mismatches between two record arrays, field by field (a list of one-line descriptions)."""
    if len(a) != len(b):
        return [f"{what}: {len(a)} records, the uninterrupted computation {len(b)}"]
    out = []
    for f in a.dtype.names or ():
        if f in skip or f.startswith("_"):
            continue
        bad = np.flatnonzero(a[f] != b[f])
        if len(bad):
            k = int(bad[0])
            out.append(f"{what}: field {f} differs in {len(bad)} records, first at {k}: {a[f][k]!r} vs {b[f][k]!r}")
    return out


def reference_bars(ticks: np.ndarray, warm: np.ndarray, n_instruments: int) -> np.ndarray:
    """The bars an uninterrupted bars stage publishes after ``warm`` for ``ticks`` (ring order), with ring seqs."""
    from compute.bars import bars_py, new_state, state_from_records

    fst, ist = new_state(n_instruments)
    state_from_records(warm, fst, ist)
    live, *_ = bars_py(ticks, 0, fst, ist, np.array([[-1, 0]], np.int64))
    out = np.concatenate([warm, live]) if len(live) else warm.copy()
    out["seq"] = np.arange(len(out))
    return out


def reference_signals(cfg: Any, stats_name: str, bars: np.ndarray) -> tuple[np.ndarray, bytes]:
    """Signals and events.jsonl of an uninterrupted stats stage over ``bars``: its compiled kernel, in-process."""
    import msgspec

    from compute.pairs import PairsEngine
    from compute.stats import StatsParams, event_line, resolve_pairs
    from pipeline.ring import Ring

    params = msgspec.convert(cfg.stages[stats_name].params, StatsParams, strict=True)
    pairs = resolve_pairs(cfg, params)
    names = [pc.name if len(pairs) > 1 else None for pc in pairs]
    engine = PairsEngine(len(cfg.instruments), pairs)
    name = f"chaosref{uuid.uuid4().hex[:10]}.signals"
    out = Ring.create(name, SIGNAL, 1 << 16)
    lines: list[str] = []
    try:
        engine.bind(None, out, BAR)
        start = 0
        while start < len(bars):
            n, nrows, _closes, full = engine.replay(bars, start)
            start += n
            for r in engine.rows[:nrows]:
                try:
                    lines.append(event_line(r, pairs, names))
                except ValueError:
                    pass  # the stage drops such a row too (and counts it)
            if full:
                raise BenchError("the reference's signal ring filled up")
        sigs = out.read(0, out.producer_pos).copy()
    finally:
        out.close()
        Ring.unlink(name)
    return sigs, "".join(lines).encode()


def order_checks(journal: list[dict], account: dict, positions: dict, balances: dict[str, Decimal]) -> dict:
    """Duplicate orders (journal, intents, venue placements) and positions against the simulator's account."""
    cids = [e["cid"] for e in journal if e.get("t") == "order"]
    sigs = [e["sig"] for e in journal if e.get("t") == "intent"]
    placed = account.get("client_ids", {})
    dup = {"journal_orders": len(cids) - len(set(cids)), "intents": len(sigs) - len(set(sigs)),
           "venue_placements": sum(n - 1 for n in placed.values() if n > 1)}
    pos = {}
    for sym, v in positions.items():
        base = sym.split("-")[0]
        venue = Decimal(account["balances"][base]["total"]) - balances.get(base, Decimal(0))
        pos[sym] = {"executor": v["executor"], "simulator": str(venue), "equal": Decimal(v["executor"]) == venue}
    return {"orders": len(cids), "duplicates": dup, "duplicate_orders": sum(dup.values()), "positions": pos,
            "unknown_placements": len(set(placed) - set(cids))}


def leftovers(cfg: Any, rd: Path, port: int) -> list[str]:
    """What of the pipeline is left after ``down``: segments, socket, processes, the simulator's port."""
    import socket

    from pipeline.control import SOCKET_NAME
    from pipeline.ring import SHM_DIR

    left = [str(p) for p in SHM_DIR.glob(f"{cfg.name}.*")]
    if (rd / SOCKET_NAME).exists():
        left.append(str(rd / SOCKET_NAME))
    me = psutil.Process()
    ours = {me.pid, *(p.pid for p in me.parents())}
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if p.pid not in ours and str(rd) in cmd and p.info["status"] != psutil.STATUS_ZOMBIE:
            left.append(f"process {p.pid}: {' '.join(cmd[-4:])}")
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            left.append(f"something still listens on the simulator's port {port}")
    return left


def _pcts(xs: list[float]) -> dict[str, float | int]:
    return {"n": len(xs), "p50_s": round(float(np.median(xs)), 3), "max_s": round(max(xs), 3)} if xs else {"n": 0}


# -- the run -------------------------------------------------------------------------------------------------------

def run(config: Path, *, kills: int, seed: int, orders_per_s: float, run_dir: Path | None,
        gap_s: tuple[float, float] = (0.3, 1.5), progress=print) -> dict[str, Any]:
    """The whole chaos run; returns the JSON document (``mismatches`` and ``duplicate_orders`` must be 0)."""
    from feeds.simulator.accounts import DEFAULT_BALANCES, parse_balances
    from pipeline.config import ConfigError, parse, to_toml

    try:
        text = config.read_text()
    except OSError as e:
        raise BenchError(f"{config}: cannot read config: {e.strerror}") from None
    raw, sim = bench_config(text, str(config), replay=[], speed=1.0, venue_latency_ms=None,
                            orders_per_s=orders_per_s, measure_notional=None)
    if sim is None:
        raise BenchError(f"{config}: bench chaos needs the simulator as a service ([services.NAME] module = "
                         "\"feeds.simulator\")")
    raw["name"] = raw["name"].removesuffix("-bench") + "-chaos"
    # no --hold: simulated time is the wall clock's from the simulator's start, so the market's first minute is
    # after the bars stage's warm-up (held, the simulated clock lags the wall clock by the pipeline's start-up and
    # the first live minute overlaps the last warm-up candle: its ticks are late)
    sim["args"] = [a for a in sim["args"] if a != "--hold"]
    # restarts are the point here: the supervisor must never give a stage up
    raw.setdefault("supervisor", {})["max_restarts"] = 1_000_000
    text = to_toml(raw)
    try:
        cfg = parse(text, "chaos config")
    except ConfigError as e:
        raise BenchError(str(e)) from None
    kinds = {n: s.kind for n, s in cfg.stages.items()}
    stats = [n for n, k in kinds.items() if k == "stats"]
    bars = [n for n, k in kinds.items() if k == "bars"]
    feeds = [n for n, s in cfg.stages.items() if not s.inputs]
    if len(stats) != 1 or len(bars) != 1 or cfg.stages[bars[0]].inputs != [cfg.stages[bars[0]].inputs[0]]:
        raise BenchError(f"{config}: bench chaos compares one bars stage (one input) and one stats stage")
    ticks_ring, bars_ring = cfg.stages[bars[0]].inputs[0], cfg.stages[bars[0]].outputs[0]
    signals_ring = cfg.stages[stats[0]].outputs[0]
    rd = (run_dir or Path("runs") / cfg.name).resolve()
    rd.mkdir(parents=True, exist_ok=True)
    for stale in STALE:
        (rd / stale).unlink(missing_ok=True)
    (rd / "config.toml").write_text(text)
    port = sim_port(sim)
    sim_args = sim.get("args", [])
    balances = parse_balances(sim_args[sim_args.index("--balances") + 1] if "--balances" in sim_args
                              else DEFAULT_BALANCES)
    targets = [*cfg.stages, SUPERVISOR]
    rng = random.Random(seed)
    progress(f"starting {cfg.name} in {rd}; {kills} SIGKILLs over {', '.join(targets)} (seed {seed})")
    proc = _start(rd, 180.0)
    recovery: dict[str, list[float]] = {t: [] for t in targets}
    adopted: list[list[str]] = []
    log: list[dict] = []
    t_start = time.monotonic()
    try:
        # the first kill once orders flow: then kills land between send, ack and fill
        _wait(lambda: ((s := _try_status(rd)) and s.get("execution", {}).get("orders", {}).get("sent", 0) >= 2) or
              orders_per_s == 0, 180, "the executor's first orders")
        for k in range(kills):
            time.sleep(rng.uniform(*gap_s))
            target = rng.choice(targets)
            if target == SUPERVISOR:
                took, proc, took_over = _kill_supervisor(rd, proc)
                adopted.append(took_over)
            else:
                took = _kill_stage(rd, target)
            recovery[target].append(took)
            log.append({"k": k + 1, "target": target, "t_s": round(time.monotonic() - t_start, 2),
                        "recovered_s": round(took, 3)})
            progress(f"kill {k + 1:3d}/{kills}: {target:12s} back in {took:6.2f} s")
        # the end: the feeds stop cleanly, every ring drains, the executor's orders settle
        from pipeline.control import request

        for f in feeds:
            reply = request(rd, {"cmd": "hold", "stage": f}, 30)
            if not reply.get("ok"):
                raise BenchError(f"hold {f}: {reply.get('error')}")

        def drained() -> dict | None:
            s = _try_status(rd)
            if s is None or any(r["consumer_pos"] != r["producer_pos"] for r in s["rings"]):
                return None
            ex = s.get("execution", {})
            if any(p["working"] or p["waiting"] for p in ex.get("pairs", {}).values()):
                return None
            return s

        _wait(drained, 120, "the rings to drain and the orders to settle", 0.2)
        time.sleep(1.0)  # the last fills' status and journal lines
        final = _wait(drained, 60, "the rings to drain and the orders to settle", 0.2)
        ticks = _ring_all(cfg, ticks_ring, BBO)
        got_bars = _ring_all(cfg, bars_ring, BAR)
        got_sigs = _ring_all(cfg, signals_ring, SIGNAL)
        events = (rd / "events.jsonl").read_bytes()
        journal = [orjson.loads(x) for x in (rd / "executor.journal").read_bytes().splitlines() if x.strip()]
        account = sim_get(port, "/_sim/accounts")["kucoin"]
        positions = final["execution"]["positions"]
    finally:
        _stop(rd, proc)
    left = leftovers(cfg, rd, port)

    from compute.bars import WARMUP_RING

    warm = got_bars[got_bars["src_ring"] == WARMUP_RING]
    n_inst = len(cfg.instruments)
    params = cfg.stages[bars[0]].params
    want_warm = int(params.get("warmup_minutes", 150)) * n_inst if params.get("warmup", True) else 0
    mismatches: list[str] = []
    if len(warm) != want_warm or not (got_bars["src_ring"][:len(warm)] == WARMUP_RING).all():
        mismatches.append(f"bars: {len(warm)} warm-up bars (want {want_warm}, all first)")
    ref_bars = reference_bars(ticks, warm, n_inst)
    mismatches += _differ(got_bars, ref_bars, "bars")
    ref_sigs, ref_events = reference_signals(cfg, stats[0], ref_bars)
    mismatches += _differ(got_sigs, ref_sigs, "signals")
    if events != ref_events:
        a, b = events.splitlines(), ref_events.splitlines()
        k = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        mismatches.append(f"events.jsonl: {len(a)} lines, the uninterrupted computation {len(b)}; first difference "
                          f"at line {k + 1}")
    orders = order_checks(journal, account, positions, balances)
    mismatches += [f"position {s}: executor {v['executor']}, simulator {v['simulator']}"
                   for s, v in orders["positions"].items() if not v["equal"]]
    restarts = {s["name"]: s["restarts"] for s in final["stages"]}
    return {
        "config": str(config), "host": host_info(), "loadavg": loadavg(), "seed": seed, "kills": kills,
        "orders_per_s": orders_per_s, "run_s": round(time.monotonic() - t_start, 1),
        "kills_done": len(log), "kills_by_target": {t: len(v) for t, v in recovery.items()},
        "restarts_last_supervisor": restarts, "supervisor_takeovers": adopted,
        "recovery": {t: _pcts(v) for t, v in recovery.items()},
        "compared": {"ticks": len(ticks), "bars": len(got_bars), "warmup_bars": len(warm), "signals": len(got_sigs),
                     "event_lines": events.count(b"\n")},
        "mismatches": len(mismatches), "mismatch_details": mismatches[:20],
        "duplicate_orders": orders["duplicate_orders"], "orders": orders,
        "left_after_down": left, "kill_log": log,
    }


def render(doc: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    t = Table(title=f"bench chaos: {doc['kills_done']} SIGKILLs in {doc['run_s']} s (seed {doc['seed']})")
    for c in ("target", "kills", "recovery p50 s", "recovery max s"):
        t.add_column(c, justify="left" if c == "target" else "right")
    for name, r in doc["recovery"].items():
        t.add_row(name, str(r["n"]), f"{r['p50_s']:.2f}" if r["n"] else "-", f"{r['max_s']:.2f}" if r["n"] else "-")
    console.print(t)
    c = doc["compared"]
    console.print(f"compared with the uninterrupted computation: {c['bars']} bars ({c['warmup_bars']} warm-up) from "
                  f"{c['ticks']} ticks, {c['signals']} signals, {c['event_lines']} events.jsonl lines", highlight=False)
    console.print(f"mismatches: {doc['mismatches']}   duplicate orders: {doc['duplicate_orders']} "
                  f"(of {doc['orders']['orders']} orders)   positions equal the simulator's: "
                  f"{all(v['equal'] for v in doc['orders']['positions'].values())}   "
                  f"left after down: {len(doc['left_after_down'])}", highlight=False)
    for m in doc["mismatch_details"] + doc["left_after_down"]:
        console.print(f"  {m}", highlight=False, soft_wrap=True)
