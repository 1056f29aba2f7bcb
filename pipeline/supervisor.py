"""The supervisor: creates rings, starts and pins stages, watches them, restarts them, serves the control socket.

One supervisor per pipeline holds ``/dev/shm/<name>.lock`` (flock) for its whole life, so a second ``up`` of the
same pipeline is refused, and a new ``up`` after a killed supervisor knows that what it finds (stage processes,
segments, a socket) is stale and clears it.

CPU placement: stages with ``cpus`` in the config get those; the others get one CPU each, round-robin over the
host's CPUs except the lowest, which is left to the OS, interrupts and the supervisor (on a 1-CPU host, that one).
Wait strategy default: ``spin`` for a stage that has its CPUs to itself, ``block`` for one that shares, since a
spinning stage on a shared core turns microseconds into milliseconds (shared/reference/IPC_BASELINE.md).

Priority: on a shared core a woken consumer waits for its producer's time slice to end (up to milliseconds
under EEVDF), so the blocking stages on the path to an order ring run their loops under ``SCHED_FIFO``, each one
level above the stages that feed it: a record's consumer preempts its producer the moment it is published and the
decision runs through the chain without waiting for the scheduler (``order_path_priorities``).

Run detached: ``python -m pipeline.supervisor RUN_DIR [DURATION_S] [--tweaks] [--metrics-port N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from pipeline import status as st
from pipeline import tweaks
from pipeline.adopt import Adopted, exit_reason, lock_text, same_owner
from pipeline.config import PipelineConfig, load
from pipeline.control import SOCKET_NAME
from pipeline.records import RECORD_TYPES
from pipeline.ring import MAGIC, SHM_DIR, Ring, RingError
from pipeline.stage import CONFIG_NAME

if TYPE_CHECKING:
    from pipeline.metrics import MetricsServer

COMMANDS = ("ping", "status", "restart", "hold", "down")
"""Commands the control socket accepts."""
POLL_S = 0.02


class SupervisorError(RuntimeError):
    """The pipeline cannot be started (already running, bad placement, ...)."""


def assign(cfg: PipelineConfig, host_cpus: set[int]) -> dict[str, tuple[list[int], str]]:
    """CPUs and wait strategy of every stage (see module docstring)."""
    cpus = sorted(host_cpus)
    pool = cpus[1:] if len(cpus) > 1 else cpus
    placed: dict[str, list[int]] = {}
    auto = 0
    for name, spec in cfg.stages.items():
        if spec.cpus is not None:
            placed[name] = sorted(spec.cpus)
        else:
            placed[name] = [pool[auto % len(pool)]]
            auto += 1
    users: dict[int, int] = {}
    for cs in placed.values():
        for c in cs:
            users[c] = users.get(c, 0) + 1
    out = {}
    for name, spec in cfg.stages.items():
        own = all(users[c] == 1 for c in placed[name]) and len(cpus) > 1
        out[name] = (placed[name], spec.wait or ("spin" if own else "block"))
    return out


def order_path_priorities(cfg: PipelineConfig, placement: dict[str, tuple[list[int], str]]) -> dict[str, int]:
    """``SCHED_FIFO`` priority per stage, 0 for normal scheduling. A stage gets one when ``supervisor.realtime``
    is on, it waits by ``block`` (a spinning stage never sleeps, so it would starve its core) and an ``order``
    ring is reachable from its outputs (or is one): 1 + its depth (the longest chain of rings from a source), so
    downstream preempts upstream. Sinks, side branches and spinning stages stay normal."""
    if not cfg.supervisor.realtime:
        return {}
    producers = {r: n for n, s in cfg.stages.items() for r in s.outputs}
    depth: dict[str, int] = {}

    def depth_of(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in depth:
            ups = [producers[r] for r in cfg.stages[name].inputs if r in producers and producers[r] not in seen]
            depth[name] = 1 + max((depth_of(u, seen | {name}) for u in ups), default=-1)
        return depth[name]

    on_path = {n for n, s in cfg.stages.items() if any(cfg.rings[r].type == "order" for r in s.outputs)}
    todo = list(on_path)
    while todo:
        for r in cfg.stages[todo.pop()].inputs:
            up = producers.get(r)
            if up is not None and up not in on_path:
                on_path.add(up)
                todo.append(up)
    return {n: 1 + depth_of(n) for n in on_path if placement[n][1] == "block"}


@dataclass
class ServiceProc:
    """The supervisor's view of one service process (e.g. the exchange simulator)."""

    name: str
    module: str
    args: list[str]
    port: int
    proc: subprocess.Popen | Adopted | None = None
    restarts: int = 0
    reason: str = ""


@dataclass
class StageProc:
    """The supervisor's view of one stage."""

    name: str
    index: int
    kind: str
    cpus: list[int]
    wait: str
    priority: int = 0
    """``SCHED_FIFO`` priority of the stage's loop; 0: normal (see ``order_path_priorities``)."""
    proc: subprocess.Popen | Adopted | None = None
    restarts: int = 0
    recent: deque = field(default_factory=deque)
    state: str = "starting"  # supervisor's word: starting | up | restarting | failed | done | stopped
    reason: str = ""
    restart_at: float = 0.0
    started: float = 0.0
    standby: subprocess.Popen | None = None


class Supervisor:
    """Owns one running pipeline."""

    def __init__(self, run_dir: Path, apply_tweaks: bool = False, metrics_port: int = 0) -> None:
        self.run_dir = run_dir.resolve()
        self.cfg = load(self.run_dir / CONFIG_NAME)
        self.apply_tweaks = apply_tweaks
        self.metrics_port = metrics_port
        """Serve Prometheus metrics on 127.0.0.1:metrics_port (0: off; ``pipeline.metrics``)."""
        self.metrics: MetricsServer | None = None
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.stages: dict[str, StageProc] = {}
        self.services: dict[str, ServiceProc] = {}
        self.rings: dict[str, Ring] = {}
        self.block: st.StatusBlock | None = None
        self._lock_fd = -1
        self._server: socket.socket | None = None
        self._dma = None
        self.tweak_results: list[tweaks.TweakResult] = []
        self.cleaned: list[str] = []
        self.adopted: list[str] = []
        """Processes taken over from a killed supervisor of this run directory and config (``pipeline.adopt``)."""
        self._prev_owner = ""
        self._lock_text = ""
        self.last_status: dict | None = None
        """Status taken as shutdown began (what `pipeline up` prints at the end)."""

    # -- start ---------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Take the pipeline lock, clear leftovers, create rings and status, start every stage."""
        cfg = self.cfg
        self._take_lock()
        if self.metrics_port:  # before anything starts: a port in use stops the start with one line
            from pipeline.metrics import MetricsError, MetricsServer

            try:
                self.metrics = MetricsServer(self.metrics_port, self._metrics_status, self._order_rings)
            except MetricsError as e:
                raise SupervisorError(str(e)) from None
        left = self._leftovers() if same_owner(self._prev_owner, self._lock_text) else None
        if left is None:
            self._clear_leftovers()
        host = os.sched_getaffinity(0)
        placement = assign(cfg, host)
        priorities = order_path_priorities(cfg, placement)
        if len(host) > 1:
            os.sched_setaffinity(0, {min(host)})
        if self.apply_tweaks:
            self._dma = tweaks.DmaLatencyHold()
            self.tweak_results = tweaks.apply(state_dir=self.run_dir, hold=self._dma)
        if left is None:
            self.block = st.StatusBlock.create(cfg.name, len(cfg.stages))
            for rname, spec in cfg.rings.items():
                self.rings[rname] = Ring.create(f"{cfg.name}.{rname}", RECORD_TYPES[spec.type], spec.capacity)
            for name in cfg.stages:  # a previous run's status sections are not this run's
                (self.run_dir / f"{name}.status.json").unlink(missing_ok=True)
        else:
            (self.run_dir / SOCKET_NAME).unlink(missing_ok=True)
        (self.run_dir / "logs").mkdir(exist_ok=True)
        self._serve()
        for name, svc in cfg.services.items():
            self.services[name] = sv = ServiceProc(name, svc.module, list(svc.args), svc.port)
            if left is not None and name in left:
                sv.proc = left[name]
                self.adopted.append(f"service {name} (pid {sv.proc.pid})")
            else:
                self._start_service(sv)
        self._write_services()
        for sv in self.services.values():
            self._wait_service(sv)
        for i, (name, spec) in enumerate(cfg.stages.items()):
            cpus, wait = placement[name]
            self.stages[name] = sp = StageProc(name, i, spec.kind, cpus, wait, priorities.get(name, 0))
            if left is not None and name in left:
                sp.proc, sp.started = left[name], time.monotonic()
                self.adopted.append(f"stage {name} (pid {sp.proc.pid})")
                if self.cfg.supervisor.standby:
                    sp.standby = self._popen(sp, standby=True)
            else:
                self._spawn(sp)

    def _leftovers(self) -> dict[str, Adopted] | None:
        """What a killed supervisor of this run directory and config left running, to take over: its status
        block and rings (attached as they are), and its live stage and service processes by name. None when the
        block or a ring is missing or does not match the config: then everything is cleared and started anew."""
        cfg = self.cfg
        try:
            block = st.StatusBlock.attach(cfg.name)
        except (FileNotFoundError, ValueError):
            return None
        rings: dict[str, Ring] = {}
        try:
            for rname, spec in cfg.rings.items():
                rings[rname] = ring = Ring.attach(f"{cfg.name}.{rname}", RECORD_TYPES[spec.type])
                if ring.capacity != spec.capacity:
                    raise RingError(f"ring {rname}: capacity {ring.capacity}, the config says {spec.capacity}")
            if len(block.rows) != len(cfg.stages):
                raise RingError(f"status block of {len(block.rows)} stages, the config has {len(cfg.stages)}")
        except RingError as e:
            print(f"supervisor: not taking over the previous run ({e}); starting anew", file=sys.stderr, flush=True)
            for ring in rings.values():
                ring.close()
            return None
        self.block, self.rings = block, rings
        current = {int(x) for x in block.rows["pid"] if x > 0}
        for p in psutil.process_iter(["cmdline"]):  # its idle standbys (they would leave once compiled)
            cmd = p.info["cmdline"] or []
            # a standby that took over a stage keeps --standby in its command line: it is the stage's process
            if "pipeline.stage" in cmd and str(self.run_dir) in cmd and "--standby" in cmd and p.pid not in current:
                with contextlib.suppress(psutil.Error):
                    p.kill()
                    self.cleaned.append(f"standby process {p.pid}")
        left: dict[str, Adopted] = {}
        for i, name in enumerate(cfg.stages):
            pid = int(block.rows[i]["pid"])
            proc = Adopted.find(pid, "pipeline.stage", str(self.run_dir), name) if pid > 0 else None
            if proc is not None:
                left[name] = proc
        for pid, module in self._recorded_services():
            name = next((n for n, s in cfg.services.items() if s.module == module), None)
            proc = Adopted.find(pid, module) if name else None
            if proc is not None and name is not None:
                left[name] = proc
        return left

    def _take_lock(self) -> None:
        path = SHM_DIR / f"{self.cfg.name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            raise SupervisorError(f"pipeline {self.cfg.name!r} is already running (supervisor {holder}); "
                                  f"`pipeline down` first") from None
        self._prev_owner = os.read(fd, 4096).decode(errors="replace").strip()  # a killed supervisor's
        self._lock_text = lock_text(os.getpid(), str(self.run_dir), (self.run_dir / CONFIG_NAME).read_text())
        os.ftruncate(fd, 0)
        os.pwrite(fd, self._lock_text.encode(), 0)
        self._lock_fd = fd

    def _clear_leftovers(self) -> None:
        """Kill stage processes and remove segments and socket a killed supervisor of this pipeline left."""
        name = self.cfg.name
        try:
            old = st.StatusBlock.attach(name)
            pids = [int(p) for p in old.rows["pid"] if p > 0]
        except (FileNotFoundError, ValueError):
            pids = []
        for pid in pids:
            try:
                p = psutil.Process(pid)
                if "pipeline.stage" in p.cmdline():
                    p.kill()
                    p.wait(5)
                    self.cleaned.append(f"stage process {pid}")
            except (psutil.Error, OSError):
                pass
        for path in SHM_DIR.glob(f"{name}.*"):
            if path.name == f"{name}.lock":
                continue
            try:
                with path.open("rb") as f:
                    magic = int.from_bytes(f.read(8), "little")
            except OSError:
                continue
            if magic in (MAGIC, st.MAGIC) or path.name == f"{name}.status":
                path.unlink(missing_ok=True)
                self.cleaned.append(str(path))
        for pid, module in self._recorded_services():
            try:
                proc = psutil.Process(pid)
                if module in proc.cmdline():
                    proc.kill()
                    proc.wait(5)
                    self.cleaned.append(f"service process {pid} ({module})")
            except (psutil.Error, OSError):
                pass
        (SHM_DIR / f"{name}.services").unlink(missing_ok=True)
        sock = self.run_dir / SOCKET_NAME
        if sock.exists():
            sock.unlink()
            self.cleaned.append(str(sock))

    def _start_service(self, sv: ServiceProc) -> None:
        log = open(self.run_dir / "logs" / f"{sv.name}.log", "ab")
        sv.proc = subprocess.Popen([sys.executable, "-m", sv.module, *sv.args], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        log.close()
        self._write_services()

    def _recorded_services(self) -> list[tuple[int, str]]:
        """(pid, module) of the service processes a previous supervisor of this pipeline wrote down."""
        path = SHM_DIR / f"{self.cfg.name}.services"
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return []
        return [(int(pid), module) for pid, _, module in (line.partition(" ") for line in lines) if pid.isdigit()]

    def _write_services(self) -> None:
        """What the next `up` takes over (or kills) should this supervisor be killed (a service keeps its port)."""
        text = "".join(f"{s.proc.pid} {s.module}\n" for s in self.services.values() if s.proc is not None)
        path = SHM_DIR / f"{self.cfg.name}.services"
        if text:
            path.write_text(text)
        else:
            path.unlink(missing_ok=True)

    def _wait_service(self, sv: ServiceProc) -> None:
        """Wait until the service accepts connections on its port (or at least runs)."""
        assert sv.proc is not None
        deadline = time.monotonic() + self.cfg.supervisor.start_timeout_s
        while time.monotonic() < deadline:
            if sv.proc.poll() is not None:
                tail = (self.run_dir / "logs" / f"{sv.name}.log").read_text(errors="replace").strip()
                raise SupervisorError(f"service {sv.name} exited with code {sv.proc.returncode}: "
                                      f"{tail.splitlines()[-1] if tail else 'no output'}")
            if not sv.port:
                return
            try:
                socket.create_connection(("127.0.0.1", sv.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SupervisorError(f"service {sv.name} does not accept connections on 127.0.0.1:{sv.port} "
                              f"after {self.cfg.supervisor.start_timeout_s:g} s")

    def _popen(self, sp: StageProc, standby: bool) -> subprocess.Popen:
        """Start a stage process (or a standby for it) pinned to the stage's CPUs."""
        log = open(self.run_dir / "logs" / f"{sp.name}.log", "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        args = [sys.executable, "-m", "pipeline.stage", str(self.run_dir), sp.name, sp.wait, f"--rt={sp.priority}"]
        proc = subprocess.Popen(args + (["--standby"] if standby else []), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.PIPE if standby else subprocess.DEVNULL, env=env)
        log.close()
        try:
            psutil.Process(proc.pid).cpu_affinity(sp.cpus)
        except psutil.Error as e:
            sp.reason = f"could not pin to CPUs {sp.cpus}: {e}"
        return proc

    def _spawn(self, sp: StageProc) -> None:
        """Start the stage: hand over to its warm standby if it has a live one, else start a process; then
        start the next standby."""
        assert self.block is not None
        row = self.block.rows[sp.index]
        row["pid"], row["state"], row["heartbeat_ns"] = 0, st.STARTING, time.perf_counter_ns()
        proc, sp.standby = sp.standby, None
        if proc is not None:
            try:
                proc.stdin.write(b"go\n")
                proc.stdin.close()
            except OSError:  # the standby died: start from scratch
                proc.kill()
                proc.wait()
                proc = None
        sp.proc = proc or self._popen(sp, standby=False)
        sp.state = "starting"
        sp.started = time.monotonic()
        if self.cfg.supervisor.standby:
            sp.standby = self._popen(sp, standby=True)

    # -- watch ---------------------------------------------------------------------------------------------------

    def ready(self) -> bool:
        """True when every stage reports running (or has failed for good)."""
        assert self.block is not None
        with self.lock:
            started = len(self.stages) == len(self.cfg.stages)
            return started and all(
                sp.state in ("failed", "done", "held") or (sp.proc is not None and sp.proc.poll() is None and
                                                           self.block.rows[sp.index]["state"] == st.RUNNING)
                for sp in self.stages.values())

    def check(self) -> None:
        """One round of supervision: restart dead or silent stages, with backoff and a cap."""
        assert self.block is not None
        sup = self.cfg.supervisor
        now = time.monotonic()
        with self.lock:
            for sv in self.services.values():
                if sv.proc is not None and sv.proc.poll() is not None:
                    sv.restarts += 1
                    sv.reason = f"{exit_reason(sv.proc.returncode)}; restarted"
                    print(f"supervisor: service {sv.name} {sv.reason}", file=sys.stderr, flush=True)
                    self._start_service(sv)
            for sp in self.stages.values():
                if sp.state in ("failed", "stopped", "done", "held"):
                    continue
                if sp.state == "restarting":
                    if now >= sp.restart_at:
                        self._spawn(sp)
                    continue
                row = self.block.rows[sp.index]
                code = sp.proc.poll() if sp.proc else None
                why = ""
                if code == 0 and row["state"] == st.DONE:
                    sp.state = "done"
                    sp.reason = "published everything"
                    continue
                if code is not None:
                    why = exit_reason(code)
                elif row["state"] == st.RUNNING:
                    sp.state = "up"
                    age = (time.perf_counter_ns() - int(row["heartbeat_ns"])) / 1e9
                    if age > sup.heartbeat_timeout_s:
                        why = f"heartbeat stopped ({age:.1f} s old)"
                elif min(now - sp.started, (time.perf_counter_ns() - int(row["heartbeat_ns"])) / 1e9) > \
                        sup.start_timeout_s:  # a starting stage that beats (compiling, or waiting to) is alive
                    why = f"not ready after {sup.start_timeout_s:.0f} s"
                if why:
                    self._crashed(sp, why, now)

    def _crashed(self, sp: StageProc, why: str, now: float) -> None:
        sup = self.cfg.supervisor
        self._kill(sp, 0.0)
        while sp.recent and now - sp.recent[0] > sup.restart_window_s:
            sp.recent.popleft()
        if len(sp.recent) >= sup.max_restarts:
            sp.state = "failed"
            sp.reason = (f"{why}; restarted {len(sp.recent)} times in {sup.restart_window_s:.0f} s "
                         f"(max_restarts), not restarting")
            print(f"supervisor: stage {sp.name} failed: {sp.reason}", file=sys.stderr, flush=True)
            return
        delay = min(sup.backoff_initial_s * 2 ** len(sp.recent), sup.backoff_max_s)
        sp.recent.append(now)
        sp.restarts += 1
        sp.state = "restarting"
        sp.restart_at = now + delay
        sp.reason = f"{why}; restart {sp.restarts} in {delay:.2f} s"
        print(f"supervisor: stage {sp.name} {why}; restarting in {delay:.2f} s", file=sys.stderr, flush=True)

    def _kill(self, sp: StageProc, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; waits for the process to be gone."""
        p = sp.proc
        if p is None or p.poll() is not None:
            return
        if timeout > 0:
            p.terminate()
            try:
                p.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                pass
        p.kill()
        p.wait()

    def restart(self, name: str) -> dict:
        """Replace one stage's process (SIGTERM, SIGKILL after the stop timeout); the others keep running."""
        with self.lock:
            sp = self.stages.get(name)
            if sp is None:
                return {"ok": False, "error": f"no stage {name!r} (stages: {', '.join(self.stages)})"}
            old = sp.proc.pid if sp.proc else None
            self._kill(sp, self.cfg.supervisor.stop_timeout_s)
            code = sp.proc.returncode if sp.proc else None
            sp.restarts += 1
            sp.reason = f"restarted on request (old process {old} exited with {code})"
            sp.recent.clear()
            self._spawn(sp)
            return {"ok": True, "stage": name, "old_pid": old, "pid": sp.proc.pid, "exit_code": code}

    def hold(self, name: str) -> dict:
        """Stop one stage and keep it stopped (its rings stay) until ``restart``: ``pipeline replay`` then
        produces into its output rings."""
        with self.lock:
            sp = self.stages.get(name)
            if sp is None:
                return {"ok": False, "error": f"no stage {name!r} (stages: {', '.join(self.stages)})"}
            old = sp.proc.pid if sp.proc else None
            self._kill(sp, self.cfg.supervisor.stop_timeout_s)
            sp.state = "held"
            sp.reason = "held: its output rings are fed by `pipeline replay`; `pipeline restart` resumes it"
            return {"ok": True, "stage": name, "old_pid": old, "outputs": list(self.cfg.stages[name].outputs)}

    # -- status --------------------------------------------------------------------------------------------------

    def status(self) -> dict:
        """Stages and rings, as `pipeline status --json` prints them."""
        assert self.block is not None
        now = time.perf_counter_ns()
        stages = []
        with self.lock:
            for sp in self.stages.values():
                row = self.block.rows[sp.index]
                own = st.STATES[int(row["state"])] if 0 <= row["state"] < len(st.STATES) else "?"
                alive = sp.proc is not None and sp.proc.poll() is None
                state = sp.state if sp.state in ("failed", "restarting", "done", "held") or not alive else own
                counters = {n.decode(): int(v) for n, v in zip(row["counter_names"], row["counters"], strict=True)
                            if n}
                stages.append({
                    "name": sp.name, "kind": sp.kind, "pid": sp.proc.pid if alive else None, "cpus": sp.cpus,
                    "standby_pid": sp.standby.pid if sp.standby and sp.standby.poll() is None else None,
                    "wait": sp.wait, "priority": sp.priority, "state": state,
                    "heartbeat_age_s": round(max(0, now - int(row["heartbeat_ns"])) / 1e9, 3) if alive else None,
                    "restarts": sp.restarts, "records_in": int(row["records_in"]),
                    "records_out": int(row["records_out"]), "waits": int(row["waits"]),
                    "errors": int(row["errors"]), "deduped": int(row["deduped"]),
                    "last_error": row["last_error"].decode(errors="replace"), "reason": sp.reason,
                    "counters": counters,
                })
        rings = []
        for rname, ring in self.rings.items():
            spec = self.cfg.rings[rname]
            rings.append({
                "name": rname, "type": spec.type, "capacity": ring.capacity, "fill": ring.fill,
                "producer_pos": ring.producer_pos, "consumer_pos": ring.consumer_pos,
                "producer_waits": ring.producer_waits, "consumer_waits": ring.consumer_waits,
                "doorbell_rings": ring.doorbell_rings,
                "producer": next(n for n, s in self.cfg.stages.items() if rname in s.outputs),
                "consumer": next(n for n, s in self.cfg.stages.items() if rname in s.inputs),
            })
        services = [{"name": sv.name, "module": sv.module, "port": sv.port,
                     "pid": sv.proc.pid if sv.proc and sv.proc.poll() is None else None,
                     "restarts": sv.restarts, "reason": sv.reason} for sv in self.services.values()]
        out = {"pipeline": self.cfg.name, "run_dir": str(self.run_dir), "supervisor_pid": os.getpid(),
               "stages": stages, "rings": rings, "services": services, "cleared_at_start": self.cleaned,
               "adopted_at_start": self.adopted,
               "tweaks": [{"name": t.name, "status": t.status, "detail": t.detail} for t in self.tweak_results]}
        own: set[str] = set()
        for name in self.stages:  # sections stages publish themselves (executor ``execution``, stats ``pairs``)
            try:
                extra = json.loads((self.run_dir / f"{name}.status.json").read_bytes())
            except (OSError, ValueError):
                continue
            if not isinstance(extra, dict):
                continue
            for key, value in extra.items():
                if key in own and isinstance(out[key], dict) and isinstance(value, dict):
                    out[key] = {**out[key], **value}  # several stages of a kind: one section, merged
                elif key not in out:
                    out[key] = value
                    own.add(key)
        return out

    def _metrics_status(self) -> dict | None:
        """Status for a metrics scrape; None before the start and once stopping."""
        if self.block is None or self.stopping.is_set():
            return None
        return self.status()

    def _order_rings(self) -> dict[str, Ring]:
        """The pipeline's rings of ORDER records by name (the metrics' latency histograms)."""
        if self.stopping.is_set():
            return {}
        return {n: r for n, r in self.rings.items() if self.cfg.rings[n].type == "order"}

    # -- control socket ------------------------------------------------------------------------------------------

    def _serve(self) -> None:
        path = self.run_dir / SOCKET_NAME
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            srv.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        srv.listen(16)
        srv.settimeout(0.2)
        self._server = srv
        threading.Thread(target=self._accept_loop, name="control", daemon=True).start()

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self.stopping.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != os.getuid():
                reply = {"ok": False, "error": f"refused: uid {uid} does not own this pipeline"}
            else:
                try:
                    line = conn.makefile("rb").readline(65536)
                    reply = self.command(json.loads(line))
                except (ValueError, OSError, AttributeError, TypeError) as e:
                    reply = {"ok": False, "error": f"bad request: {e}"}
            try:
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass
        if reply.get("shutdown"):
            self.stopping.set()

    def command(self, req: dict) -> dict:
        """Execute one control request ``{"cmd": ...}``."""
        cmd = req.get("cmd")
        if cmd == "ping":
            return {"ok": True, "ready": self.ready()}
        if cmd == "status":
            return {"ok": True, **self.status()}
        if cmd == "restart":
            return self.restart(str(req.get("stage")))
        if cmd == "hold":
            return self.hold(str(req.get("stage")))
        if cmd == "down":
            self.stopping.set()
            return {"ok": True, "shutdown": True, "pid": os.getpid()}
        return {"ok": False, "error": f"unknown command {cmd!r} (commands: {', '.join(COMMANDS)})"}

    # -- run and stop --------------------------------------------------------------------------------------------

    def run(self, duration_s: float | None = None) -> None:
        """Supervise until ``down``, SIGTERM/SIGINT, or ``duration_s``; then shut down."""
        end = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not self.stopping.is_set() and (end is None or time.monotonic() < end):
                self.check()
                if self.cfg.replay is not None and self.drained():
                    print("supervisor: the recordings are replayed and every stage has drained; stopping",
                          file=sys.stderr, flush=True)
                    break
                self.stopping.wait(POLL_S)
        finally:
            self.shutdown()

    def drained(self) -> bool:
        """True when every source stage is done and every ring has been consumed to its end (checked twice, so a
        record in flight between two stages is not missed)."""
        with self.lock:
            sources = [sp for sp in self.stages.values() if not self.cfg.stages[sp.name].inputs]
            if not sources or any(sp.state != "done" for sp in sources):
                return False
        for _ in range(2):
            if any(ring.consumer_pos != ring.producer_pos for ring in self.rings.values()):
                return False
            time.sleep(0.05)
        return True

    def shutdown(self) -> None:
        """Stop every stage (SIGTERM, then SIGKILL), remove segments, socket and lock; revert tweaks."""
        self.stopping.set()
        if self._lock_fd < 0:  # never started, or another supervisor owns this pipeline: nothing here is ours
            return
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.block is not None:
            self.last_status = self.status()
        with self.lock:
            for sp in self.stages.values():
                if sp.proc and sp.proc.poll() is None:
                    sp.proc.terminate()
            deadline = time.monotonic() + self.cfg.supervisor.stop_timeout_s
            for sp in self.stages.values():
                self._kill(sp, max(0.01, deadline - time.monotonic()))
                sp.state = "stopped"
                if sp.standby is not None:
                    sp.standby.kill()
                    sp.standby.wait()
                    sp.standby = None
            for sv in self.services.values():
                if sv.proc and sv.proc.poll() is None:
                    sv.proc.terminate()
                    try:
                        sv.proc.wait(self.cfg.supervisor.stop_timeout_s)
                    except subprocess.TimeoutExpired:
                        sv.proc.kill()
                        sv.proc.wait()
            (SHM_DIR / f"{self.cfg.name}.services").unlink(missing_ok=True)
            for ring in self.rings.values():
                ring.close()
            for rname in self.cfg.rings:
                Ring.unlink(f"{self.cfg.name}.{rname}")
            (SHM_DIR / f"{self.cfg.name}.status").unlink(missing_ok=True)
            if self._server is not None:
                self._server.close()
                (self.run_dir / SOCKET_NAME).unlink(missing_ok=True)
            if self._dma is not None:
                self._dma.release()
                tweaks.revert(state_dir=self.run_dir)
            if self._lock_fd >= 0:
                (SHM_DIR / f"{self.cfg.name}.lock").unlink(missing_ok=True)
                os.close(self._lock_fd)
                self._lock_fd = -1


def main(argv: list[str]) -> int:
    """Detached supervisor entry point: ``RUN_DIR [DURATION_S|-] [--tweaks] [--metrics-port N]``."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.supervisor")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("duration", nargs="?", default="-", help="seconds to run, '-': until stopped")
    ap.add_argument("--tweaks", action="store_true")
    ap.add_argument("--metrics-port", type=int, default=0)
    args = ap.parse_args(argv)
    duration = None if args.duration == "-" else float(args.duration)
    sup = Supervisor(args.run_dir, apply_tweaks=args.tweaks, metrics_port=args.metrics_port)
    signal.signal(signal.SIGTERM, lambda *_: sup.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: sup.stopping.set())
    try:
        sup.start()
    except Exception as e:
        print(f"supervisor: cannot start: {e}", file=sys.stderr, flush=True)
        sup.shutdown()
        return 1
    if sup.cleaned:
        print(f"supervisor: cleared what a previous run left: {', '.join(sup.cleaned)}", file=sys.stderr, flush=True)
    if sup.adopted:
        print(f"supervisor: took over from a killed supervisor: {', '.join(sup.adopted)}", file=sys.stderr,
              flush=True)
    sup.run(duration)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
