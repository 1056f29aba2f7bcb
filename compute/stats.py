"""The stats stage: the seed's pairs statistics and signals on event time, per configured pair.

Input: one ``bar`` ring (the bars stage); output: one ``signal`` ring; side output: ``<run_dir>/events.jsonl`` in
the seed's JSONL schema, and the seed's console lines on stdout (the stage log), with event time in place of
wall time. The compiled logic and its state are in ``compute.pairs``; this module holds the parameters, the
formatting (Go's encoding/json float format, RFC 3339 with milliseconds) and the restart design:

- Checkpoint ``<run_dir>/<stage>.ckpt`` (written to a temporary file, then renamed over the old one): the state
  arrays as of input position P (every record before P processed), the byte length of events.jsonl at P and the
  input ring's epoch. Written at batch boundaries after any closed bar (so at least every closed minute), every
  capacity/4 input records, after a rebuild and on SIGTERM.
- Restart: load the checkpoint, truncate events.jsonl to its length, return P from ``rebuild`` so the runtime
  replays ring history from there; signals already published are dropped by the dedup marks. A killed and
  restarted stage so yields the same signal stream and the same events.jsonl byte for byte, provided the input
  ring still holds the records since the checkpoint (the ring must not lap the stage while it restarts: size it
  for the tick rate times the restart time plus capacity/4).
- No checkpoint (first start) or one of another pipeline run (other ring epoch or configuration): start fresh
  from the first record in the ring; a previous events.jsonl is moved aside (``events.<epoch>.jsonl``).

No signal from stale data: a compute needs both legs' latest live ticks within ``fresh_ms`` of each other (the
seed's rule), so a leg that stops ticking stops every compute of its pairs (counted ``stale``) until it ticks
again; a window short of closed minutes for both legs is counted ``cold``; bar records that cannot arrive (NaN,
non-positive, late: the bars stage refuses them) are guarded anyway, counted ``bad`` and skipped.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from decimal import Decimal
from typing import Literal

import msgspec
import numpy as np

from compute.pair_status import PairStatus
from compute.pairs import (
    ACTIONS,
    COUNTER_NAMES,
    EV_ENTER_LONG,
    EV_ENTER_SHORT,
    EV_EXIT,
    EV_LOG_5M,
    EV_LOG_5M_SKIP,
    EV_PNL_1M,
    MODE_CLOSED,
    MODE_PARTIAL,
    N_DUP,
    N_POS,
    N_PUB,
    POSITIONS,
    PairCfg,
    PairsEngine,
)
from pipeline.config import ConfigError, PipelineConfig, StageSpec, stage_class
from pipeline.stage import Stage, StageContext

CKPT_VERSION = 2


# ----------------------------------------------------------------------------------------------------------------
# parameters
# ----------------------------------------------------------------------------------------------------------------


class PairParams(msgspec.Struct, forbid_unknown_fields=True):
    """One pair: legs name instruments of the config's table ("SYMBOL", or "venue:SYMBOL" when the symbol is on
    several venues); the other fields override the stage's defaults for this pair."""

    a: str
    """Leg A (the seed's BTC): LONG_SPREAD buys it."""
    b: str
    """Leg B (the seed's ETH): the hedge leg."""
    notional: float = 1000.0
    """Leg A's notional in quote currency; leg B gets |beta| times it."""
    entry_z: float | None = None
    exit_z: float | None = None
    hold_ms: int | None = None
    fresh_ms: int | None = None
    throttle_ms: int | None = None
    window: int | None = None
    hedge: Literal["ols", "kalman"] | None = None
    kalman_delta: float | None = None
    kalman_r: float | None = None


def _default_pairs() -> list[PairParams]:
    return [PairParams(a="BTC-USDT", b="ETH-USDT")]


class StatsParams(msgspec.Struct, forbid_unknown_fields=True):
    """Parameters of the stats stage (defaults: the seed's)."""

    pairs: list[PairParams] = msgspec.field(default_factory=_default_pairs)
    """The pairs to trade."""
    entry_z: float = 2.2
    """Enter when z >= entry_z (SHORT_SPREAD) or z <= -entry_z (LONG_SPREAD), held for hold_ms."""
    exit_z: float = 0.8
    """Exit when |z| <= exit_z."""
    hold_ms: int = 1000
    """How long (event time) the entry condition must hold; 0: enter at once."""
    fresh_ms: int = 300
    """Compute only when both legs' latest ticks are within this many ms of each other."""
    throttle_ms: int = 0
    """Compute at most every throttle_ms of event time (the seed: 150 ms of wall time); 0: on every tick."""
    window: int = 120
    """Aligned one-minute bars in the window (the seed: 120)."""
    hedge: Literal["ols", "kalman"] = "ols"
    """Hedge ratio: rolling OLS over the window (the seed), or the Kalman filter of compute.kalman (state
    [beta, alpha], one step per minute joining the window; the window's spreads, mean, sd and z then use its
    beta)."""
    kalman_delta: float = 1e-5
    """Kalman: state noise, how fast beta may move (0 < delta < 1)."""
    kalman_r: float = 1e-3
    """Kalman: observation noise variance (> 0)."""
    measure_orders_per_s: float = 0.0
    """Measurement orders per second of event time (``bench latency --orders-per-s``): each pair, while flat,
    alternately enters LONG_SPREAD and exits with ``measure_notional`` per leg, one signal (two orders) every
    2 / rate s, flagged as measurement; 0: none."""
    measure_notional: float = 20.0
    """Each measurement leg's notional in quote currency."""
    events: str = "events.jsonl"
    """Event log, relative to the run directory."""
    console: bool = True
    """Print the seed's console lines (the stage log)."""


def _leg(cfg: PipelineConfig, name: str, key: str) -> int:
    venue, _, symbol = name.rpartition(":")
    hits = [i for i, ins in enumerate(cfg.instruments) if ins.symbol == symbol and venue in ("", ins.venue)]
    if not hits:
        known = ", ".join(dict.fromkeys(i.symbol for i in cfg.instruments))
        raise ConfigError(f"{key}: unknown instrument {name!r} (instruments: {known})")
    if len(hits) > 1:
        venues = ", ".join(f"{cfg.instruments[i].venue}:{symbol}" for i in hits)
        raise ConfigError(f"{key}: {name!r} is on several venues; name one of {venues}")
    return hits[0]


def _pick(pp: PairParams, p: StatsParams, field: str, key: str) -> tuple:
    """(value, its config key): the pair's override, else the stage's default."""
    v = getattr(pp, field)
    return (getattr(p, field), f"params.{field}") if v is None else (v, f"{key}.{field}")


def resolve_pairs(cfg: PipelineConfig, p: StatsParams) -> list[PairCfg]:
    """The pairs with legs resolved and defaults applied; ConfigError (one line naming the key) on bad values."""
    if not p.pairs:
        raise ConfigError("params.pairs: at least one pair is needed")
    if not (math.isfinite(p.measure_orders_per_s) and 0 <= p.measure_orders_per_s <= 1000):
        raise ConfigError(f"params.measure_orders_per_s: must be between 0 and 1000, got {p.measure_orders_per_s}")
    if not (math.isfinite(p.measure_notional) and p.measure_notional > 0):
        raise ConfigError(f"params.measure_notional: must be a finite number > 0, got {p.measure_notional}")
    measure_ms = max(1, round(2000 / p.measure_orders_per_s)) if p.measure_orders_per_s else 0
    out: list[PairCfg] = []
    seen: set[tuple[int, int]] = set()
    for k, pp in enumerate(p.pairs):
        key = f"params.pairs[{k}]"
        a, b = _leg(cfg, pp.a, f"{key}.a"), _leg(cfg, pp.b, f"{key}.b")
        if a == b:
            raise ConfigError(f"{key}: legs a and b are the same instrument {pp.a!r}")
        if (a, b) in seen:
            raise ConfigError(f"{key}: pair {pp.a}/{pp.b} is listed twice")
        seen.add((a, b))

        entry_z, ke = _pick(pp, p, "entry_z", key)
        exit_z, kx = _pick(pp, p, "exit_z", key)
        hold_ms, kh = _pick(pp, p, "hold_ms", key)
        fresh_ms, kf = _pick(pp, p, "fresh_ms", key)
        throttle_ms, kt = _pick(pp, p, "throttle_ms", key)
        window, kw = _pick(pp, p, "window", key)
        hedge, _ = _pick(pp, p, "hedge", key)
        kdelta, kd = _pick(pp, p, "kalman_delta", key)
        kr, kr_key = _pick(pp, p, "kalman_r", key)
        if not math.isfinite(exit_z) or exit_z < 0:
            raise ConfigError(f"{kx}: must be a finite number >= 0, got {exit_z}")
        if not math.isfinite(entry_z) or entry_z <= exit_z:
            raise ConfigError(f"{ke}: must be greater than exit_z ({kx} = {exit_z}), got {entry_z}")
        for v, kv in ((hold_ms, kh), (fresh_ms, kf), (throttle_ms, kt)):
            if v < 0:
                raise ConfigError(f"{kv}: must be >= 0, got {v}")
        if window < 3:
            raise ConfigError(f"{kw}: the window needs at least 3 minutes, got {window}")
        if not (math.isfinite(pp.notional) and pp.notional > 0):
            raise ConfigError(f"{key}.notional: must be a finite number > 0, got {pp.notional}")
        if hedge == "kalman":
            if not 0.0 < kdelta < 1.0:
                raise ConfigError(f"{kd}: must be between 0 and 1 (exclusive), got {kdelta}")
            if not (math.isfinite(kr) and kr > 0):
                raise ConfigError(f"{kr_key}: must be a finite number > 0, got {kr}")
        out.append(PairCfg(a=a, b=b, name=f"{pp.a}/{pp.b}", entry_z=float(entry_z), exit_z=float(exit_z),
                           hold_ms=hold_ms, fresh_ms=fresh_ms, throttle_ms=throttle_ms, window=window,
                           notional=float(pp.notional), hedge=hedge, kalman_delta=float(kdelta),
                           kalman_r=float(kr), measure_ms=measure_ms,
                           measure_notional=float(p.measure_notional)))
    return out


def _upstream_venues(cfg: PipelineConfig, spec: StageSpec) -> tuple[str, set[str]] | None:
    """(bars stage name, venues of the feeds behind it) when every source behind the input ring is a venue feed;
    None when unknown (synthetic or replayed sources, test stages)."""
    if not spec.inputs:
        return None
    producers = {r: (n, s) for n, s in cfg.stages.items() for r in s.outputs}
    bars = producers.get(spec.inputs[0])
    if bars is None or not bars[1].inputs:
        return None
    venues: set[str] = set()
    for ring in bars[1].inputs:
        src = producers.get(ring)
        if src is None:
            return None
        try:
            cls = stage_class(src[1].kind)
        except LookupError:
            return None
        venue = getattr(cls, "venue", "")
        if not (getattr(cls, "replayable", False) and isinstance(venue, str) and venue):
            return None
        venues.add(venue)
    return bars[0], venues


# ----------------------------------------------------------------------------------------------------------------
# formatting
# ----------------------------------------------------------------------------------------------------------------


def go_float(x: float) -> str:
    """``x`` as Go's encoding/json writes a float64: shortest round-trip digits, 'e' notation only when
    |x| < 1e-6 or |x| >= 1e21, a negative exponent without its leading zero (1e-07 -> 1e-7)."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"json: unsupported value: {x}")
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    sign = "-" if x < 0 else ""
    _, digs, exp = Decimal(repr(abs(x))).as_tuple()
    full = "".join(map(str, digs))
    digits = full.rstrip("0")
    point = len(digits) + int(exp) + len(full) - len(digits)  # value = 0.<digits> x 10**point
    n = len(digits)
    if abs(x) < 1e-6 or abs(x) >= 1e21:
        e = point - 1
        m = digits[0] + ("." + digits[1:] if n > 1 else "")
        return f"{sign}{m}e" + (f"-{-e}" if e < 0 else f"+{e:02d}")  # Go: e-07 -> e-7, e+21
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= n:
        return f"{sign}{digits}{'0' * (point - n)}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def go_string(s: str) -> str:
    """A JSON string as Go's encoding/json writes it (HTML-safe escapes)."""
    out = json.dumps(s, ensure_ascii=False)
    return out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def rfc3339_ms(ms: int) -> str:
    """Event time ``ms`` (Unix ms) as RFC 3339 UTC with milliseconds: 2024-08-08T12:00:00.123Z."""
    sec, frac = divmod(int(ms), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:03d}Z"


def _utc(ms: int, fmt: str) -> str:
    return time.strftime(fmt, time.gmtime(int(ms) // 1000))


def mode_name(mode: int, window: int) -> str:
    """The seed's window names: "120closed_aligned", "119+partial_aligned", "skip"."""
    if mode == MODE_CLOSED:
        return f"{window}closed_aligned"
    if mode == MODE_PARTIAL:
        return f"{window - 1}+partial_aligned"
    return "skip"


def json_row(ts_ms: int, beta: float, spread: float, mu: float, sigma: float, z: float, mode: str, pos: str,
             action: str, pnl_pct: float, pair: str | None = None) -> str:
    """One events.jsonl line in the seed's schema and key order (pnl_pct omitted when 0, Go's omitempty; "pair"
    last when given). ValueError on NaN/inf, which Go's encoder refuses (the seed then writes nothing)."""
    parts = [f'{{"at_utc":"{rfc3339_ms(ts_ms)}"', f'"beta":{go_float(beta)}', f'"spread":{go_float(spread)}',
             f'"mu":{go_float(mu)}', f'"sigma":{go_float(sigma)}', f'"z":{go_float(z)}', f'"mode":{go_string(mode)}',
             f'"pos":{go_string(pos)}', f'"action":{go_string(action)}']
    if pnl_pct != 0:
        parts.append(f'"pnl_pct":{go_float(pnl_pct)}')
    if pair is not None:
        parts.append(f'"pair":{go_string(pair)}')
    return ",".join(parts) + "}\n"


def event_line(r: np.void, pairs: list[PairCfg], names: list[str | None]) -> str:
    """The events.jsonl line of one row of the kernel's row buffer (``names[p]``: the pair's name, or None with
    one pair); ValueError when the seed's encoder would refuse it (a non-finite number)."""
    p = int(r["pair"])
    return json_row(int(r["ts_ms"]), float(r["beta"]), float(r["spread"]), float(r["mu"]), float(r["sigma"]),
                    float(r["z"]), mode_name(int(r["mode"]), pairs[p].window), POSITIONS[int(r["pos"])],
                    ACTIONS[int(r["action"])], float(r["pnl"]), names[p])


def short_name(symbol: str) -> str:
    """The base asset for console lines: BTC-USDT -> BTC, BTCUSDT -> BTC."""
    base = symbol.rpartition(":")[2]
    if "-" in base:
        return base.split("-")[0]
    for q in ("USDT", "USDC", "FDUSD", "BUSD", "USD"):
        if base.endswith(q) and len(base) > len(q):
            return base[: -len(q)]
    return base


def console_line(row: np.void, window: int, a: str, b: str, prefix: str = "") -> str:
    """The seed's console line for an event row (event time in place of wall time)."""
    action = int(row["action"])
    pos = POSITIONS[int(row["pos"])]
    mode = mode_name(int(row["mode"]), window)
    z, beta, spread = float(row["z"]), float(row["beta"]), float(row["spread"])
    if action == EV_LOG_5M_SKIP:
        return f"{prefix}[5m log] SKIP: not enough closed aligned bars yet"
    if action == EV_LOG_5M:
        return f"{prefix}[5m log] beta={beta:.4f} spread={spread:.6f} z={z:+.3f} mode={mode} pos={pos}"
    minute = _utc(int(row["minute_ms"]), "%Y-%m-%d %H:%M")
    pnl = float(row["pnl"])
    if action == EV_PNL_1M:
        sign = "LOSS" if pnl < 0 else "PROFIT"
        return f"{prefix}[1m {sign}] {pnl * 100.0:.4f}% | minute={minute} | pos={pos} | z={z:+.3f} mode={mode}"
    tag = {EV_ENTER_SHORT: f"ENTER SHORT_SPREAD (sell {a}, buy {b})",
           EV_ENTER_LONG: f"ENTER LONG_SPREAD (buy {a}, sell {b})",
           EV_EXIT: f"EXIT (back to FLAT) | pnl={pnl * 100.0:.4f}%"}[action]
    t = _utc(int(row["ts_ms"]), "%Y-%m-%d %H:%M:%S")
    return (f"{prefix}[{t}] {tag} | minute={minute} | z={z:+.3f} beta={beta:.4f} spread={spread:.6f} "
            f"mode={mode} pos={pos}")


# ----------------------------------------------------------------------------------------------------------------
# the stage
# ----------------------------------------------------------------------------------------------------------------


class StatsStage(Stage):
    """Bars in, pairs signals out, events.jsonl beside (see the module docstring)."""

    Params = StatsParams
    input_types = ("bar",)
    output_types = ("signal",)

    @classmethod
    def check_spec(cls, cfg: PipelineConfig, spec: StageSpec) -> str | None:
        """Legs exist and are unambiguous, thresholds are consistent, every leg's venue has a feed upstream."""
        params = msgspec.convert(spec.params, StatsParams, strict=True)
        try:
            pairs = resolve_pairs(cfg, params)
        except ConfigError as e:
            return str(e)
        up = _upstream_venues(cfg, spec)
        if up is not None:
            bars, venues = up
            for k, pc in enumerate(pairs):
                for leg, idx in (("a", pc.a), ("b", pc.b)):
                    ins = cfg.instruments[idx]
                    if ins.venue not in venues:
                        return (f"params.pairs[{k}].{leg}: {ins.symbol!r} is on venue {ins.venue!r}, which no "
                                f"feed behind stage {bars!r} reads (feeds: {', '.join(sorted(venues))})")
        return None

    def __init__(self, ctx: StageContext, params: StatsParams) -> None:
        super().__init__(ctx, params)
        self.inp, self.out = ctx.inputs[0], ctx.outputs[0]
        cfg = ctx.config
        self.pairs = resolve_pairs(cfg, params)
        self.engine = PairsEngine(len(cfg.instruments), self.pairs)
        self.engine.marks[...] = self.marks
        self.marks = self.engine.marks  # the compiled code admits through the engine's copy
        multi = len(self.pairs) > 1
        self.pair_names = [pc.name if multi else None for pc in self.pairs]
        self.short = [(short_name(cfg.instruments[pc.a].symbol), short_name(cfg.instruments[pc.b].symbol))
                      for pc in self.pairs]
        self.events_path = ctx.run_dir / params.events
        self.ckpt_path = ctx.run_dir / f"{ctx.name}.ckpt"
        self.batch = max(1, min(1024, self.inp.capacity // 8))
        self.ckpt_every = max(1, self.inp.capacity // 4)
        self.fd = -1
        self.events_len = 0
        self.since_ckpt = 0
        self.dropped_rows = 0
        self.pub_dup = (0, 0)
        self.pair_status = PairStatus(ctx.run_dir / f"{ctx.name}.status.json", self.engine, self.pairs,
                                      self.out)

    def warm(self) -> None:
        """Compile the kernels (or load them from numba's cache)."""
        self.engine.bind(self.inp, self.out)

    # -- restart -------------------------------------------------------------------------------------------------

    def _aside(self, tag: str) -> None:
        p = self.events_path
        if p.exists() and p.stat().st_size > 0:
            os.replace(p, p.with_name(f"{p.stem}.{tag}{p.suffix}"))

    def _load_checkpoint(self) -> dict | None:
        """The checkpoint if it belongs to this ring epoch and configuration; else None (the events file of an
        earlier run is moved aside)."""
        if not self.ckpt_path.exists():
            self._aside("prev")
            return None
        try:
            with np.load(self.ckpt_path) as z:
                ck = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as e:
            self.ctx.error("checkpoint", f"unreadable {self.ckpt_path.name} ({e}); starting from the ring's start")
            self._aside("prev")
            return None
        epoch = int(ck.get("epoch", -1))
        if epoch != self.inp.epoch:
            self._aside(str(epoch))
            return None
        same = int(ck.get("version", 0)) == CKPT_VERSION and all(
            k in ck and ck[k].shape == v.shape and np.array_equal(ck[k], v)
            for k, v in self.engine.config_arrays().items()) and all(
            k in ck and ck[k].shape == v.shape and ck[k].dtype == v.dtype for k, v in self.engine.state().items())
        if not same:
            self.ctx.error("checkpoint", f"{self.ckpt_path.name} was written for another configuration; "
                           "starting from the ring's start")
            self._aside(str(epoch))
            return None
        return ck

    def rebuild(self) -> list[int]:
        """Restore the checkpoint (or start fresh); truncate events.jsonl to match; replay from its position."""
        if not self.engine.bound:  # a standby process warmed a throwaway instance, not this one
            self.engine.bind(self.inp, self.out)
        self.events_path.parent.mkdir(parents=True, exist_ok=True)
        ck = self._load_checkpoint()
        self.fd = os.open(self.events_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        if ck is None:
            os.ftruncate(self.fd, 0)
            self.events_len = 0
            self._checkpoint()
            self._counters()
            return [0]
        for k, arr in self.engine.state().items():
            arr[...] = ck[k]
        self.events_len = int(ck["events_len"])
        size = os.fstat(self.fd).st_size
        if size < self.events_len:
            self.ctx.error("checkpoint", f"{self.events_path.name} is {size} bytes, shorter than the checkpoint's "
                           f"{self.events_len}: the file was changed outside the stage")
            self.events_len = size
        os.ftruncate(self.fd, self.events_len)
        self._counters()
        return [int(self.engine.cnt[N_POS])]

    def replay(self, src_ring: int, records: np.ndarray) -> None:
        """Re-process records from ring history (already released) through the dedup marks."""
        start = 0
        while start < len(records):
            n, nrows, _closes, full = self.engine.replay(records, start)
            start += n
            self._after(0, nrows)
            self.ctx.beat()
            if full:
                self.out.output_full(self.ctx.wait)
        self._checkpoint()

    def _checkpoint(self) -> None:
        """Write the state as of the input position, with the events length, atomically."""
        tmp = self.ckpt_path.with_name(self.ckpt_path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, version=np.int64(CKPT_VERSION), epoch=np.int64(self.inp.epoch),
                     events_len=np.int64(self.events_len), **self.engine.config_arrays(), **self.engine.state())
        os.replace(tmp, self.ckpt_path)
        self.since_ckpt = 0

    # -- running -------------------------------------------------------------------------------------------------

    def step(self) -> int:
        """One compiled call over the available records; then rows to events.jsonl, counters, checkpoint."""
        n, nrows, closes, full = self.engine.step(self.batch)
        if n or full:
            self._after(n, nrows)
        if full:
            self.ctx.row["waits"] += 1
            self.out.output_full(self.ctx.wait)
        if n:
            self.since_ckpt += n
            if closes or self.since_ckpt >= self.ckpt_every:
                self._checkpoint()
        return n

    def _after(self, n: int, nrows: int) -> None:
        row = self.ctx.row
        cnt = self.engine.cnt
        pub, dup = int(cnt[N_PUB]), int(cnt[N_DUP])
        row["records_in"] += n
        row["records_out"] += pub - self.pub_dup[0]
        row["deduped"] += dup - self.pub_dup[1]
        self.pub_dup = (pub, dup)
        if nrows:
            self._write_rows(self.engine.rows[:nrows])
        row["counters"][:len(COUNTER_NAMES)] = cnt[:len(COUNTER_NAMES)]
        self.pair_status.update(self.engine.rows[:nrows])  # `pipeline status` pairs, at most every 250 ms

    def _write_rows(self, rows: np.ndarray) -> None:
        lines: list[str] = []
        console: list[str] = []
        for r in rows:
            p = int(r["pair"])
            pc = self.pairs[p]
            name = self.pair_names[p]
            try:
                lines.append(event_line(r, self.pairs, self.pair_names))
            except ValueError as e:
                self.dropped_rows += 1
                self.ctx.error("events", f"row not written ({e}), as the seed's encoder would refuse it")
                continue
            if self.params.console:
                console.append(console_line(r, pc.window, *self.short[p], f"{name} " if name else ""))
        data = "".join(lines).encode()
        view = memoryview(data)
        while view:
            k = os.write(self.fd, view)
            view = view[k:]
        self.events_len += len(data)
        if console:
            sys.stdout.write("\n".join(console) + "\n")
            sys.stdout.flush()

    def _counters(self) -> None:
        for i, name in enumerate(COUNTER_NAMES):
            self.ctx.set_counter(i, name, int(self.engine.cnt[i]))
        self.pub_dup = (int(self.engine.cnt[N_PUB]), int(self.engine.cnt[N_DUP]))

    def flush(self) -> None:
        """Checkpoint and close the event log (SIGTERM)."""
        self.pair_status.write()
        if self.fd >= 0:
            self._checkpoint()
            os.close(self.fd)
            self.fd = -1
