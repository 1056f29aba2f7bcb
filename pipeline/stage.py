"""The stage runtime: what every stage process gets, and the process entry point.

A stage is a subclass of ``Stage``. The runtime (``run``) gives it a status row and heartbeat, SIGTERM handling
(finish the current step, flush, exit 0), rebuild-from-history on start, and publish dedup by ``src_seq``
(``pipeline.dedup``). The contract a stage keeps:

- publish every output derived from an input record before releasing that record;
- ``rebuild`` restores state and returns, per input ring, the position from which to (re)process: behind the
  consumer cursor (records re-read from ring history, fed to ``replay``; their outputs are deduped) or ahead of
  it (records already fully reflected in the published outputs are released unprocessed);
- run logic on event time carried in records, never the wall clock.

Run a stage: ``python -m pipeline.stage RUN_DIR STAGE WAIT [--standby]`` (the supervisor does this; the run
directory holds the config copy the pipeline was started with). A stage's ``__init__`` must not change anything
outside the instance: a standby process constructs a throwaway instance to warm up.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import msgspec
import numpy as np

from pipeline import status as st
from pipeline.config import PipelineConfig, StageSpec, load, stage_class
from pipeline.dedup import marks_from
from pipeline.records import RECORD_TYPES
from pipeline.ring import Ring, RingError, RingSet

CONFIG_NAME = "config.toml"
"""The config copy inside a run directory (also in pipeline.cli, which must not import this module)."""

DONE = -1
"""``step()`` result of a finite source that has published everything."""

BLOCK_TIMEOUT_S = 0.05
"""Longest doorbell sleep: bounds heartbeat age and SIGTERM latency of an idle stage."""


class NoParams(msgspec.Struct, forbid_unknown_fields=True):
    """A stage kind without parameters."""


@dataclass
class StageContext:
    """What the runtime hands a stage."""

    name: str
    """The stage's name in the config."""
    config: PipelineConfig
    """The whole pipeline config."""
    spec: StageSpec
    """This stage's config."""
    inputs: list[Ring]
    """Input rings, in ``src_ring`` order (this stage is their consumer)."""
    outputs: list[Ring]
    """Output rings (this stage is their producer)."""
    row: np.void
    """This stage's status row (shared memory)."""
    wait: str
    """Wait strategy: spin, yield or block."""
    run_dir: Path
    """The pipeline's run directory."""
    stopping: bool = False
    """Set by SIGTERM: finish the current step and return."""
    ring_set: RingSet | None = None
    """The waking inputs waited on together (several of them), made at the first wait."""
    _last_logged: dict[str, float] = field(default_factory=dict)

    def error(self, kind: str, text: str) -> None:
        """Count an error; log it at most once per kind per minute."""
        st.set_error(self.row, f"{kind}: {text}", time.perf_counter_ns())
        now = time.monotonic()
        if now - self._last_logged.get(kind, -1e9) >= 60:
            self._last_logged[kind] = now
            print(f"[{self.name}] {kind}: {text}", file=sys.stderr, flush=True)

    def beat(self) -> None:
        """Heartbeat."""
        self.row["heartbeat_ns"] = time.perf_counter_ns()

    def set_counter(self, i: int, name: str, value: int) -> None:
        """Publish a stage-specific counter in the status row."""
        self.row["counter_names"][i] = name.encode()[:16]
        self.row["counters"][i] = value


class Stage:
    """Base class of stages. Subclasses set ``Params`` / ``input_types`` / ``output_types`` and implement
    ``step``; stateful ones implement ``rebuild`` and ``replay``."""

    Params: ClassVar[type[msgspec.Struct]] = NoParams
    """Parameter struct checked against ``[stages.NAME.params]``."""
    input_types: ClassVar[tuple[str | None, ...] | None] = ()
    """Record type of each input ring (None: any type; the tuple None: any number of any type)."""
    output_types: ClassVar[tuple[str | None, ...] | None] = ()
    """Record type of each output ring."""

    replayable: ClassVar[bool] = False
    """A market-data feed: ``pipeline up --replay`` replaces it with the replay of recordings."""

    @classmethod
    def check_spec(cls, cfg: PipelineConfig, spec: StageSpec) -> str | None:
        """A problem with this stage's config that the generic checks cannot see (one line), or None."""
        return None

    def __init__(self, ctx: StageContext, params: msgspec.Struct) -> None:
        self.ctx = ctx
        self.params = params
        self.marks = marks_from(ctx.outputs[0], len(ctx.inputs)) if ctx.outputs else None
        """Dedup marks for the first output ring (see ``pipeline.dedup``)."""

    def warm(self) -> None:
        """Compile the stage's numba functions (called before it reports ready; no side effects)."""

    def rebuild(self) -> list[int]:
        """Restore state; return per input the position to process from. Default: stateless, resume at the
        consumer cursor."""
        return [r.consumer_pos for r in self.ctx.inputs]

    def replay(self, src_ring: int, records: np.ndarray) -> None:
        """Process records re-read from history (already released): update state, publish through dedup."""
        raise NotImplementedError(f"{type(self).__name__} rebuilds from history but has no replay()")

    def step(self) -> int:
        """Do the work available now; return how many input records were consumed (0: the runtime waits).
        Sources return how many records they published, or ``DONE`` once a finite source has published
        everything (the stage then flushes, reports ``done`` and exits 0; the supervisor does not restart it)."""
        raise NotImplementedError

    def flush(self) -> None:
        """Called before a clean exit."""

    def idle_wait_s(self) -> float:
        """Longest wait for input when ``step`` found nothing (work arriving by other ways, such as a venue's
        responses on a thread, needs a shorter one)."""
        return BLOCK_TIMEOUT_S

    def waking_inputs(self) -> list[int]:
        """Indexes of the inputs whose records wake the stage; default all. An input left out is read when the
        stage wakes for another reason (at the latest after ``idle_wait_s``), so it must not need each record at
        once (the executor's books: only the latest matters when a signal comes)."""
        return list(range(len(self.ctx.inputs)))


def _wait_for_input(ctx: StageContext, stage: Stage) -> None:
    """Idle wait on the stage's waking inputs by its strategy, at most its ``idle_wait_s``."""
    ctx.row["waits"] += 1
    if ctx.ring_set is None:
        ctx.ring_set = RingSet([ctx.inputs[i] for i in stage.waking_inputs()])
    ctx.ring_set.wait(ctx.wait, stage.idle_wait_s())


def _resume(ctx: StageContext, stage: Stage, positions: list[int]) -> None:
    """Bring each input to the position ``rebuild`` asked for."""
    for i, (ring, pos) in enumerate(zip(ctx.inputs, positions, strict=True)):
        cons = ring.consumer_pos
        if pos < cons:
            recs = ring.read(pos, cons - pos)
            if len(recs) < cons - pos:
                ctx.error("history", f"input {ring.name}: wanted records from {pos}, the ring still holds "
                          f"only {len(recs)} of {cons - pos}; state rebuilt from what remains")
            if len(recs):
                stage.replay(i, recs)
        elif pos > cons:
            ring.skip(pos - cons)


@contextmanager
def _compiling(ctx: StageContext | None) -> Iterator[None]:
    """Compile one stage process at a time, host-wide: the first compiles and fills numba's cache, the others then
    load from it in about a second instead of all compiling at once on shared cores (tens of seconds each on a
    fresh install). ``ctx``: beat its heartbeat meanwhile, so the supervisor sees a starting stage alive."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(0.2):
            ctx.beat()

    beater = threading.Thread(target=beat, daemon=True) if ctx is not None else None
    if beater is not None:
        beater.start()
    fd = os.open(Path(tempfile.gettempdir()) / f"lowlat-compile-{os.getuid()}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
        done.set()
        if beater is not None:
            beater.join()


def _realtime(ctx: StageContext, priority: int) -> None:
    """Put every thread of this process (the loop and the threads the stage started, such as the executor's
    venue readers, which would otherwise wait behind the whole chain for the CPU) under ``SCHED_FIFO`` at
    ``priority`` (the supervisor's ``order_path_priorities``); refused: a status error, normal priority."""
    if priority <= 0:
        return
    try:
        for tid in sorted(int(t) for t in os.listdir("/proc/self/task")):
            with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as e:
        ctx.error("realtime", f"SCHED_FIFO priority {priority} refused ({e.strerror}); running at normal priority")


def run(run_dir: Path, name: str, wait: str, standby: bool = False, priority: int = 0) -> int:
    """Run one stage until SIGTERM; the process's exit code.

    ``standby``: import and compile everything first (attaching the rings and warming a throwaway instance of the
    stage, which must not change anything), then wait for the line ``go`` on stdin before taking over; the
    supervisor keeps one such process per stage so a restart does not pay for interpreter start and imports."""
    # the supervisor checked the placement against the host; this process is pinned to its own CPUs only
    cfg = load(run_dir / CONFIG_NAME, host_cpus=set(range(os.cpu_count() or 1)))
    spec = cfg.stages[name]
    index = list(cfg.stages).index(name)
    block = st.StatusBlock.attach(cfg.name)
    row = block.rows[index]
    cls = stage_class(spec.kind)
    params = msgspec.convert(spec.params, cls.Params, strict=True)
    try:
        inputs = [Ring.attach(f"{cfg.name}.{r}", RECORD_TYPES[cfg.rings[r].type]) for r in spec.inputs]
        outputs = [Ring.attach(f"{cfg.name}.{r}", RECORD_TYPES[cfg.rings[r].type]) for r in spec.outputs]
    except RingError as e:
        if not standby:
            st.set_error(row, str(e), time.perf_counter_ns())
        print(f"[{name}] {e}", file=sys.stderr)
        return 2
    ctx = StageContext(name, cfg, spec, inputs, outputs, row, wait, run_dir)
    with _compiling(None if standby else ctx):
        for ring in inputs + outputs:
            ring.warm()
        if standby:
            cls(ctx, params).warm()
    if standby and sys.stdin.readline().strip() != "go":  # EOF: the supervisor is gone or no longer needs us
        return 0
    now = time.perf_counter_ns()
    row["pid"], row["state"], row["started_ns"], row["heartbeat_ns"] = os.getpid(), st.STARTING, now, now

    def on_term(signum: int, frame: object) -> None:
        ctx.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        if standby:  # compiled already, before "go": no lock to wait for on a restart
            stage = cls(ctx, params)
        else:
            with _compiling(ctx):
                stage = cls(ctx, params)
                stage.warm()
        row["state"] = st.REBUILDING
        ctx.beat()
        _resume(ctx, stage, stage.rebuild())
        # what start-up made (modules, numba's compiled code, the rebuilt state) lives as long as the process: out
        # of the collector's sight, so a full collection on the hot path scans only what came later (without
        # this, ~50 ms in a stage with numba loaded, on the decision path when it happens there). Before RUNNING:
        # a stage that reports running is in its loop.
        gc.collect()
        gc.freeze()
        row["state"] = st.RUNNING
        _realtime(ctx, priority)  # after start-up and rebuild, which may compute for seconds
        done = False
        while not ctx.stopping:
            ctx.beat()
            n = stage.step()
            if n == DONE:
                done = True
                break
            if n == 0 and not ctx.stopping:
                _wait_for_input(ctx, stage)
        row["state"] = st.STOPPING
        stage.flush()
        if done:
            row["state"] = st.DONE
            return 0
    except Exception as e:  # the supervisor restarts us; the status row and log say why
        st.set_error(row, f"crashed: {type(e).__name__}: {e}", time.perf_counter_ns())
        traceback.print_exc()
        return 1
    row["state"] = st.STOPPED
    return 0


def main(argv: list[str]) -> None:
    """``python -m pipeline.stage RUN_DIR STAGE WAIT [--standby] [--rt=N]``; exits without interpreter teardown
    (nothing is left to flush once ``run`` returns, and a restart waits for this process to be gone)."""
    rt = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--rt=")), 0)
    code = run(Path(argv[0]), argv[1], argv[2] if len(argv) > 2 else "block", "--standby" in argv, rt)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
