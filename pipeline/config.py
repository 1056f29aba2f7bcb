"""The pipeline's TOML config, parsed into typed msgspec structs and checked before anything starts.

Every problem is reported as one line naming the key: ``configs/x.toml: rings.ticks.capacity: must be a power
of two, got 1000``. Stage parameters are checked against the ``Params`` struct of the stage's class, which is
imported by name (``pipeline/`` never imports ``feeds/``, ``compute/`` or ``execution/`` statically).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from pipeline.records import RECORD_TYPES

Wait = Literal["spin", "yield", "block"]

STAGE_KINDS: dict[str, str] = {
    "synthetic": "feeds.synthetic:SyntheticSource",
    "count": "compute.running_count:RunningCount",
    "check": "pipeline.check_sink:CheckSink",
    "kucoin": "feeds.kucoin:KucoinFeed",
    "binance": "feeds.binance:BinanceFeed",
    "binance-usdm": "feeds.binance:BinanceUsdmFeed",
    "mexc": "feeds.mexc:MexcFeed",
    "replay": "feeds.replay:ReplayFeed",
    "bars": "compute.bars:BarsStage",
    "stats": "compute.stats:StatsStage",
    "executor": "execution.executor:Executor",
}
"""Stage kinds by the name a config uses; a config may also name any class as ``module:Class``."""


class ConfigError(ValueError):
    """A config problem, as one line naming the key."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class Instrument(_Strict):
    """One tradable instrument; records carry its index in the ``instruments`` list."""

    symbol: str
    """The venue's symbol, e.g. ``BTC-USDT`` (KuCoin) or ``BTCUSDT`` (Binance)."""
    venue: str = "sim"
    """Venue name: ``kucoin``, ``binance``, ``binance-usdm`` or ``sim``."""
    tick: Annotated[float, msgspec.Meta(gt=0)] = 0.01
    """Price increment."""
    lot: Annotated[float, msgspec.Meta(gt=0)] = 1e-8
    """Quantity increment."""


class RingSpec(_Strict):
    """A ring between two stages."""

    type: str
    """Record type name (see ``pipeline.records.RECORD_TYPES``)."""
    capacity: int = 65536
    """Slots; a power of two. Size it so a stage restart (seconds) cannot fill it at the configured rate."""


class StageSpec(_Strict):
    """A stage: one process running one loop."""

    kind: str
    """A name from ``STAGE_KINDS`` or ``module:Class``."""
    inputs: list[str] = []
    """Rings this stage consumes, in ``src_ring`` order."""
    outputs: list[str] = []
    """Rings this stage produces."""
    cpus: list[int] | None = None
    """CPUs to pin to; default: assigned automatically (see ``Supervisor``)."""
    wait: Wait | None = None
    """Wait strategy; default: ``spin`` when the stage has a CPU of its own, else ``block``."""
    params: dict[str, Any] = {}
    """Parameters of the stage kind, checked against its ``Params`` struct."""


class SupervisorSpec(_Strict):
    """How the supervisor watches stages."""

    heartbeat_timeout_s: float = 3.0
    """A running stage whose heartbeat is older than this is restarted."""
    start_timeout_s: float = 60.0
    """A starting stage that has not reported ready after this long is restarted."""
    stop_timeout_s: float = 5.0
    """SIGTERM, then SIGKILL after this long."""
    backoff_initial_s: float = 0.05
    """Delay before the first restart; doubles with each restart inside the window."""
    backoff_max_s: float = 5.0
    """Longest delay between restarts."""
    max_restarts: int = 10
    """Restarts allowed per ``restart_window_s``; one more marks the stage failed."""
    restart_window_s: float = 60.0
    """Window for ``max_restarts``."""
    standby: bool = True
    """Keep a warm standby process per stage (imports done, functions compiled) so a restart takes
    milliseconds instead of an interpreter start; costs one idle process per stage."""
    realtime: bool = True
    """Run the loops of the blocking stages on the path to an order ring under ``SCHED_FIFO``, downstream above
    upstream, so each record's consumer preempts its producer at once on a shared core (see
    ``pipeline.supervisor.order_path_priorities``); needs root or an ``rtprio`` limit, else normal priority with
    a status error."""


class ServiceSpec(_Strict):
    """A helper process that is not a stage (no rings), e.g. the local exchange simulator: started before the
    stages, restarted if it dies, stopped after them."""

    module: str
    """Run as ``python -m <module> <args>``."""
    args: list[str] = []
    """Command-line arguments."""
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    """Ready once 127.0.0.1:port accepts connections (0: ready once started)."""


class ReplaySpec(_Strict):
    """A replay run: recordings replace the config's feeds."""

    files: list[str]
    """Recordings, merged by receive time."""
    speed: float = 0.0
    """Pacing as a multiple of recorded time; 0: as fast as the pipeline takes it."""


def _key_path(msg: str) -> tuple[str, str]:
    """Split a msgspec message ``... - at `$.a.b[0]` `` into (``a.b[0]``, text)."""
    m = re.search(r" - at `\$\.?(.*)`$", msg)
    if not m:
        return "", msg
    return m.group(1), msg[: m.start()]


def _describe(e: msgspec.ValidationError) -> tuple[str, str]:
    """(key path, problem) of a msgspec validation error, in this module's words."""
    key, problem = _key_path(str(e))
    for pattern, text in ((r"Object contains unknown field `(.+)`", "unknown key"),
                          (r"Object missing required field `(.+)`", "missing required key")):
        m = re.match(pattern, problem)
        if m:
            return (f"{key}.{m.group(1)}" if key else m.group(1)), text
    return key, problem[0].lower() + problem[1:]


def _fail(source: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


def stage_class(kind: str) -> type:
    """Import the class behind a stage kind (a ``STAGE_KINDS`` name or ``module:Class``)."""
    target = STAGE_KINDS.get(kind, kind)
    if ":" not in target:
        raise LookupError(f"unknown stage kind {kind!r} (known: {', '.join(STAGE_KINDS)}, or module:Class)")
    module, _, cls = target.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise LookupError(f"stage kind {kind!r}: cannot load {target}: {e}") from None


def parse(text: str, source: str = "<config>", host_cpus: set[int] | None = None) -> PipelineConfig:
    """Parse and check a config; raises ConfigError with one line naming the key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _fail(source, "", f"not valid TOML: {e}") from None
    where = _non_finite(raw)
    if where is not None:  # no setting takes nan or inf (a price cap, a notional, a rate, a tick...)
        raise _fail(source, where[0], f"must be a finite number, got {where[1]}")
    # tables of named entries are converted one by one, so an error names the entry (msgspec says "[...]")
    for table, spec in (("rings", RingSpec), ("stages", StageSpec), ("services", ServiceSpec)):
        entries = raw.get(table)
        if isinstance(entries, dict):
            for name, value in entries.items():
                try:
                    msgspec.convert(value, spec, strict=True)
                except msgspec.ValidationError as e:
                    key, problem = _describe(e)
                    raise _fail(source, f"{table}.{name}" + (f".{key}" if key else ""), problem) from None
    try:
        cfg = msgspec.convert(raw, PipelineConfig, strict=True)
    except msgspec.ValidationError as e:
        raise _fail(source, *_describe(e)) from None
    if cfg.replay is not None:
        cfg = with_replay(cfg, source)
    _check(cfg, source, host_cpus if host_cpus is not None else os.sched_getaffinity(0))
    return cfg


def _non_finite(value: object, key: str = "") -> tuple[str, str] | None:
    """(key path, value) of the first nan or inf in a parsed config, if any."""
    if isinstance(value, float) and not math.isfinite(value):
        return key, _toml_value(value)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _non_finite(v, f"{key}[{k}]" if isinstance(k, int) else f"{key}.{k}" if key else str(k))
        if found is not None:
            return found
    return None


def with_replay(cfg: PipelineConfig, source: str = "<config>") -> PipelineConfig:
    """The config with its feeds (stage classes with ``replayable = True``) replaced by one ``replay`` stage that
    merges the recordings by receive time: per record type, the first feed ring of that type is kept and fed by
    the replay stage, the other feeds' rings of that type are dropped and their consumers read the kept one."""
    assert cfg.replay is not None
    feeds = {}
    for name, spec in cfg.stages.items():
        try:
            if getattr(stage_class(spec.kind), "replayable", False):
                feeds[name] = spec
        except LookupError:
            continue
    if not feeds:
        raise _fail(source, "replay", "the config has no feed stage to replace with the recordings")
    kept: dict[str, str] = {}  # record type -> kept ring
    renamed: dict[str, str] = {}  # dropped ring -> kept ring
    for spec in feeds.values():
        for r in spec.outputs:
            rtype = cfg.rings[r].type if r in cfg.rings else ""
            renamed[r] = kept.setdefault(rtype, r)
    first = next(iter(feeds))
    stages: dict[str, StageSpec] = {}
    for name, spec in cfg.stages.items():
        if name == first:
            params = {"files": list(cfg.replay.files), "speed": cfg.replay.speed}
            stages["replay"] = StageSpec(kind="replay", outputs=list(kept.values()), cpus=spec.cpus,
                                         wait=spec.wait, params=params)
        elif name not in feeds:
            inputs = list(dict.fromkeys(renamed.get(r, r) for r in spec.inputs))
            stages[name] = msgspec.structs.replace(spec, inputs=inputs)
    rings = {r: spec for r, spec in cfg.rings.items() if renamed.get(r, r) == r}
    return msgspec.structs.replace(cfg, stages=stages, rings=rings)


def load(path: str | Path, host_cpus: set[int] | None = None) -> PipelineConfig:
    """Read and check the config file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    return parse(text, str(path), host_cpus)


def _check(cfg: PipelineConfig, src: str, host_cpus: set[int]) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", cfg.name):
        raise _fail(src, "name", f"use letters, digits, '-' and '_' only, got {cfg.name!r}")
    if not cfg.instruments:
        raise _fail(src, "instruments", "at least one instrument is needed")
    if len(cfg.instruments) > 65535:
        raise _fail(src, "instruments", "at most 65535 instruments")
    for name, ring in cfg.rings.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise _fail(src, f"rings.{name}", "ring names use letters, digits, '-' and '_' only")
        if ring.type not in RECORD_TYPES:
            raise _fail(src, f"rings.{name}.type", f"unknown record type {ring.type!r} "
                        f"(known: {', '.join(RECORD_TYPES)})")
        if ring.capacity < 2 or ring.capacity & (ring.capacity - 1):
            raise _fail(src, f"rings.{name}.capacity", f"must be a power of two >= 2, got {ring.capacity}")
    producers: dict[str, str] = {}
    consumers: dict[str, str] = {}
    if not cfg.stages:
        raise _fail(src, "stages", "at least one stage is needed")
    for name, st in cfg.stages.items():
        key = f"stages.{name}"
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise _fail(src, key, "stage names use letters, digits, '-' and '_' only")
        for role, rings, owners in (("inputs", st.inputs, consumers), ("outputs", st.outputs, producers)):
            for r in rings:
                if r not in cfg.rings:
                    raise _fail(src, f"{key}.{role}", f"no ring named {r!r} in [rings]")
                if r in owners:
                    raise _fail(src, f"{key}.{role}", f"ring {r!r} already has a "
                                f"{'consumer' if role == 'inputs' else 'producer'} ({owners[r]}): rings are SPSC")
                owners[r] = name
        if st.cpus is not None:
            if not st.cpus:
                raise _fail(src, f"{key}.cpus", "empty list (leave it out for automatic assignment)")
            bad = sorted(set(st.cpus) - host_cpus)
            if bad:
                raise _fail(src, f"{key}.cpus", f"CPU {bad[0]} is not available on this host "
                            f"(available: {','.join(map(str, sorted(host_cpus)))})")
        try:
            cls = stage_class(st.kind)
        except LookupError as e:
            raise _fail(src, f"{key}.kind", str(e)) from None
        try:
            msgspec.convert(st.params, cls.Params, strict=True)
        except msgspec.ValidationError as e:
            pkey, problem = _describe(e)
            raise _fail(src, f"{key}.params{'.' + pkey if pkey else ''}", problem) from None
        problem = cls.check_spec(cfg, st) if hasattr(cls, "check_spec") else None
        if problem:
            raise _fail(src, key, problem)
        for role, rings, types in (("inputs", st.inputs, cls.input_types), ("outputs", st.outputs, cls.output_types)):
            if types is not None and len(rings) != len(types):
                raise _fail(src, f"{key}.{role}", f"kind {st.kind!r} takes {len(types)} {role}, got {len(rings)}")
            for r, want in zip(rings, types or [None] * len(rings), strict=True):
                if want is not None and cfg.rings[r].type != want:
                    raise _fail(src, f"{key}.{role}", f"ring {r!r} carries {cfg.rings[r].type!r} records, "
                                f"kind {st.kind!r} needs {want!r}")
    for r in cfg.rings:
        if r not in producers:
            raise _fail(src, f"rings.{r}", "no stage produces this ring")
        if r not in consumers:
            raise _fail(src, f"rings.{r}", "no stage consumes this ring (a full ring would stall its producer)")
    sup = cfg.supervisor
    for field in ("heartbeat_timeout_s", "start_timeout_s", "stop_timeout_s", "backoff_initial_s",
                  "backoff_max_s", "restart_window_s"):
        if not getattr(sup, field) > 0:
            raise _fail(src, f"supervisor.{field}", f"must be > 0, got {getattr(sup, field)}")
    if sup.max_restarts < 0:
        raise _fail(src, "supervisor.max_restarts", f"must be >= 0, got {sup.max_restarts}")


class PipelineConfig(_Strict):
    """A whole pipeline."""

    name: str
    """Pipeline name: prefix of its shared-memory segments (``/dev/shm/<name>.<ring>``)."""
    instruments: list[Instrument]
    """The instrument table."""
    rings: dict[str, RingSpec]
    """Rings by name."""
    stages: dict[str, StageSpec]
    """Stages by name, in start order."""
    run_dir: str = ""
    """Run directory (control socket, logs, stage outputs); default ``runs/<name>``."""
    supervisor: SupervisorSpec = SupervisorSpec()
    """Supervision settings."""
    services: dict[str, ServiceSpec] = {}
    """Helper processes by name (e.g. the exchange simulator)."""
    replay: ReplaySpec | None = None
    """Set by ``pipeline up --replay``: the feeds are replaced by one replay stage (see ``with_replay``)."""



def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_value(v: object) -> str:
    """One TOML value: strings and numbers as JSON writes them (valid TOML), tables inline."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if v != v else ("inf" if v > 0 else "-inf")
    if isinstance(v, int | float | str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML for {type(v).__name__}")


def to_toml(raw: dict, prefix: str = "") -> str:
    """A config (as ``tomllib.loads`` returns it) back to TOML text: each table's plain values, then its
    sub-tables under their headers; top-level arrays of tables as ``[[...]]``, deeper ones inline (used to write
    a modified copy of a config)."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in raw.items()
             if not isinstance(v, dict) and not (not prefix and isinstance(v, list) and v
                                                  and all(isinstance(x, dict) for x in v))]
    out = "\n".join(lines) + ("\n" if lines else "")
    if not prefix:
        for k, v in raw.items():
            if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                for item in v:
                    out += f"\n[[{_toml_key(k)}]]\n" + "".join(f"{_toml_key(a)} = {_toml_value(b)}\n"
                                                             for a, b in item.items())
    for k, v in raw.items():
        if isinstance(v, dict):
            key = prefix + _toml_key(k)
            out += f"\n[{key}]\n" + to_toml(v, key + ".")
    return out
