"""Host tweaks for the trading host: no sleep, no deep C-states, performance CPU governor.

Three tweaks, each reported as a :class:`TweakResult`:

* ``sleep-targets``: mask ``sleep.target suspend.target hibernate.target hybrid-sleep.target``
  (a symlink ``/etc/systemd/system/<unit> -> /dev/null``, exactly what ``systemctl mask`` creates).
* ``cpu-dma-latency``: hold ``/dev/cpu_dma_latency`` at 0. The kernel keeps the request only while the
  file descriptor stays open, so it is held by a :class:`DmaLatencyHold` for the lifetime of a pipeline.
* ``cpu-governor``: write ``performance`` to every ``cpu*/cpufreq/scaling_governor``.

Every path is resolved under ``root`` so the whole module can run against a fake root directory.
What ``apply`` changed (units we masked, previous governors) is recorded in
``state_dir / "tweaks-state.json"`` so ``revert`` undoes exactly that and nothing else.
Expected environment problems (no systemd, no cpufreq, not root, ...) never raise: they come back
as ``"not possible"`` results with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "ALREADY_SET",
    "APPLIED",
    "CPU_DMA_LATENCY",
    "CPU_GOVERNOR",
    "NOT_POSSIBLE",
    "NOT_SET",
    "REVERTED",
    "SLEEP_TARGETS",
    "SLEEP_UNITS",
    "STATE_FILENAME",
    "TWEAK_NAMES",
    "DmaLatencyHold",
    "TweakResult",
    "apply",
    "check",
    "revert",
]

# Tweak names (the units themselves are SLEEP_UNITS).
SLEEP_TARGETS = "sleep-targets"
CPU_DMA_LATENCY = "cpu-dma-latency"
CPU_GOVERNOR = "cpu-governor"
TWEAK_NAMES: tuple[str, ...] = (SLEEP_TARGETS, CPU_DMA_LATENCY, CPU_GOVERNOR)

# Statuses.
APPLIED = "applied"
ALREADY_SET = "already set"
NOT_SET = "not set"
REVERTED = "reverted"
NOT_POSSIBLE = "not possible"

SLEEP_UNITS: tuple[str, ...] = ("sleep.target", "suspend.target", "hibernate.target", "hybrid-sleep.target")
STATE_FILENAME = "tweaks-state.json"
PERFORMANCE = "performance"
DMA_HINT = "held only while a pipeline runs; use `pipeline up --tweaks`"

_STATE_VERSION = 1
_UNIT_DIR = "/etc/systemd/system"
_SYSTEMD_RUN_DIR = "/run/systemd/system"
_DMA_FILE = "/dev/cpu_dma_latency"
_CPU_DIR = "/sys/devices/system/cpu"
_CPU_RE = re.compile(r"cpu(\d+)")
_MASK_TARGET = "/dev/null"


@dataclass(frozen=True)
class TweakResult:
    """Outcome of one tweak: ``name``, ``status`` (applied / already set / not set / reverted /
    not possible) and a one-line ``detail`` (what was found or done, or why it is not possible)."""

    name: str
    status: str
    detail: str


# --------------------------------------------------------------------------- helpers


def _under(root: Path, abs_path: str) -> Path:
    """``abs_path`` (absolute, as on a real host) resolved under ``root``."""
    return Path(root) / abs_path.lstrip("/")


def _need_root() -> str:
    return " (need root)" if os.geteuid() != 0 else ""


def _os_error(e: OSError) -> str:
    what = e.strerror or e.__class__.__name__
    where = f": {e.filename}" if e.filename else ""
    suffix = _need_root() if isinstance(e, PermissionError) else ""
    return f"{what}{suffix}{where}"


def _safe(name: str, fn: Callable[..., TweakResult], *args: Any) -> TweakResult:
    """Run one tweak step; an unexpected OSError becomes a "not possible" result instead of raising."""
    try:
        return fn(*args)
    except OSError as e:
        return TweakResult(name, NOT_POSSIBLE, _os_error(e))


def _dir_problem(d: Path) -> str | None:
    """Why we could not create entries in directory ``d`` (created if missing), or None if we can."""
    probe = d
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"not a directory: {probe}"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"not writable{_need_root()}: {probe}"
    return None


def _cpu_list(names: list[str]) -> str:
    if len(names) <= 4:
        return ", ".join(names)
    return f"{len(names)} cpus ({names[0]}..{names[-1]})"


def _group(pairs: list[tuple[str, str]], sep: str = " on ") -> str:
    """``[(cpu, value), ...]`` -> ``"value on cpu0, cpu1; other on cpu2"``."""
    groups: dict[str, list[str]] = {}
    for cpu, value in pairs:
        groups.setdefault(value, []).append(cpu)
    return "; ".join(f"{value}{sep}{_cpu_list(cpus)}" for value, cpus in groups.items())


# --------------------------------------------------------------------------- state file


def _empty_state() -> dict[str, Any]:
    return {"version": _STATE_VERSION, "masked_units": [], "governors": {}}


def _load_state(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(state or None when there is no state file, error message when it is unusable)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"cannot read state file: {_os_error(e)}"
    try:
        data = json.loads(text)
    except ValueError as e:
        return None, f"state file {path} is corrupt ({e}); not touching anything"
    masked = data.get("masked_units", []) if isinstance(data, dict) else None
    governors = data.get("governors", {}) if isinstance(data, dict) else None
    if (
        not isinstance(masked, list)
        or not all(u in SLEEP_UNITS for u in masked)
        or not isinstance(governors, dict)
        or not all(
            isinstance(k, str) and _CPU_RE.fullmatch(k) and isinstance(v, str) for k, v in governors.items()
        )
    ):
        return None, f"state file {path} has unexpected content; not touching anything"
    state = _empty_state()
    state["masked_units"] = list(masked)
    state["governors"] = dict(governors)
    return state, None


def _state_is_empty(state: dict[str, Any]) -> bool:
    return not state["masked_units"] and not state["governors"]


def _save_state(path: Path, state: dict[str, Any]) -> None:
    """Write the state atomically, or delete the file when there is nothing left to revert."""
    if _state_is_empty(state):
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- sleep-targets


def _has_systemd(root: Path) -> bool:
    # Same test as sd_booted(): systemd creates /run/systemd/system early at boot.
    return _under(root, _SYSTEMD_RUN_DIR).is_dir()


def _daemon_reload(root: Path) -> None:
    # The /dev/null symlink is exactly what `systemctl mask` creates; it is `systemctl daemon-reload` that
    # makes the running systemd notice the change (otherwise it applies at the next reload / boot).
    # Only done for the real root with systemd running; any failure is ignored.
    if Path(root) != Path("/") or not _has_systemd(root):
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["systemctl", "daemon-reload"], check=False, capture_output=True, timeout=30)


def _is_masked(p: Path) -> bool:
    return p.is_symlink() and os.readlink(p) == _MASK_TARGET


def _sleep_plan(root: Path) -> TweakResult | tuple[Path, list[str], list[str], list[str]]:
    """A final result (already set / not possible) or (unit dir, masked, free, blocked units)."""
    if not _has_systemd(root):
        return TweakResult(
            SLEEP_TARGETS, NOT_POSSIBLE, f"no systemd ({_under(root, _SYSTEMD_RUN_DIR)} missing)"
        )
    unit_dir = _under(root, _UNIT_DIR)
    masked: list[str] = []
    free: list[str] = []
    blocked: list[str] = []  # a real unit file / other symlink: `systemctl mask` refuses those too
    for unit in SLEEP_UNITS:
        p = unit_dir / unit
        if _is_masked(p):
            masked.append(unit)
        elif os.path.lexists(p):
            blocked.append(unit)
        else:
            free.append(unit)
    if not free and not blocked:
        return TweakResult(SLEEP_TARGETS, ALREADY_SET, f"masked: {' '.join(masked)}")
    if not free:
        return TweakResult(
            SLEEP_TARGETS,
            NOT_POSSIBLE,
            f"unit file exists in {unit_dir}, not overwriting: {' '.join(blocked)}",
        )
    problem = _dir_problem(unit_dir)
    if problem is not None:
        return TweakResult(SLEEP_TARGETS, NOT_POSSIBLE, problem)
    return unit_dir, masked, free, blocked


def _sleep_extras(masked: list[str], blocked: list[str]) -> str:
    extra = f"; already masked: {' '.join(masked)}" if masked else ""
    if blocked:
        extra += f"; left alone (existing unit file): {' '.join(blocked)}"
    return extra


def _check_sleep(root: Path) -> TweakResult:
    plan = _sleep_plan(root)
    if isinstance(plan, TweakResult):
        return plan
    _, masked, free, blocked = plan
    return TweakResult(
        SLEEP_TARGETS, NOT_SET, f"not masked: {' '.join(free)}{_sleep_extras(masked, blocked)}"
    )


def _apply_sleep(root: Path, state: dict[str, Any]) -> TweakResult:
    plan = _sleep_plan(root)
    if isinstance(plan, TweakResult):
        return plan
    unit_dir, masked, free, blocked = plan
    unit_dir.mkdir(parents=True, exist_ok=True)
    created: list[str] = []
    failed: list[str] = []
    for unit in free:
        try:
            os.symlink(_MASK_TARGET, unit_dir / unit)
        except OSError as e:
            failed.append(f"{unit}: {_os_error(e)}")
        else:
            created.append(unit)
    ours: list[str] = state["masked_units"]
    ours.extend(u for u in created if u not in ours)
    if not created:
        return TweakResult(SLEEP_TARGETS, NOT_POSSIBLE, "; ".join(failed))
    _daemon_reload(root)
    detail = f"masked {' '.join(created)} (-> {_MASK_TARGET}){_sleep_extras(masked, blocked)}"
    if failed:
        detail += f"; failed: {'; '.join(failed)}"
    return TweakResult(SLEEP_TARGETS, APPLIED, detail)


def _revert_sleep(root: Path, state: dict[str, Any]) -> TweakResult:
    ours: list[str] = state["masked_units"]
    if not ours:
        return TweakResult(SLEEP_TARGETS, NOT_SET, "nothing to revert: no units were masked by us")
    unit_dir = _under(root, _UNIT_DIR)
    removed: list[str] = []
    failed: list[str] = []
    gone: list[str] = []
    for unit in ours:
        p = unit_dir / unit
        if not _is_masked(p):
            gone.append(unit)  # unmasked or replaced by someone else since: leave it alone
            continue
        try:
            p.unlink()
        except OSError as e:
            failed.append(f"{unit}: {_os_error(e)}")
        else:
            removed.append(unit)
    state["masked_units"] = [u for u in ours if u not in removed and u not in gone]
    extra = f"; no longer masked by us, left alone: {' '.join(gone)}" if gone else ""
    if failed:
        extra += f"; failed: {'; '.join(failed)}"
    if removed:
        _daemon_reload(root)
        return TweakResult(SLEEP_TARGETS, REVERTED, f"unmasked {' '.join(removed)}{extra}")
    if failed:
        return TweakResult(SLEEP_TARGETS, NOT_POSSIBLE, extra.lstrip("; "))
    return TweakResult(SLEEP_TARGETS, NOT_SET, f"nothing to revert{extra}")


# --------------------------------------------------------------------------- cpu-dma-latency


def _dma_path(root: Path) -> Path:
    return _under(root, _DMA_FILE)


def _check_dma(root: Path) -> TweakResult:
    path = _dma_path(root)
    if not os.path.lexists(path):
        return TweakResult(CPU_DMA_LATENCY, NOT_POSSIBLE, f"no {path} (kernel without PM QoS?)")
    try:
        # The kernel returns the current aggregate request as a native (little-endian on x86/arm64) s32.
        with open(path, "rb", buffering=0) as f:
            data = f.read(4)
    except PermissionError:
        return TweakResult(CPU_DMA_LATENCY, NOT_POSSIBLE, f"not readable{_need_root()}: {path}")
    except OSError as e:
        return TweakResult(CPU_DMA_LATENCY, NOT_POSSIBLE, _os_error(e))
    if len(data) != 4:
        return TweakResult(CPU_DMA_LATENCY, NOT_POSSIBLE, f"unexpected content in {path} ({len(data)} bytes)")
    (value,) = struct.unpack("<i", data)
    if value == 0:
        return TweakResult(CPU_DMA_LATENCY, ALREADY_SET, f"{path} is 0 us (held by a running process)")
    return TweakResult(CPU_DMA_LATENCY, NOT_SET, f"{path} is {value} us; 0 is {DMA_HINT}")


class DmaLatencyHold:
    """Holds ``/dev/cpu_dma_latency`` at 0 (no deep C-states) for as long as it is acquired.

    The kernel keeps a PM QoS request only while its file descriptor is open, so ``acquire()`` writes a
    32-bit 0 and keeps the fd; ``release()`` (or leaving the ``with`` block, or process exit) closes it.
    """

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = Path(root)
        self.path = _dma_path(self.root)
        self.result: TweakResult | None = None  # result of the last acquire()
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while the fd holding the request is open."""
        return self._fd is not None

    @property
    def fd(self) -> int | None:
        """The open file descriptor holding the request, or None."""
        return self._fd

    def acquire(self) -> TweakResult:
        """Open the file, write 0 and keep the fd open; "applied", "already set" or "not possible"."""
        if self._fd is not None:
            self.result = TweakResult(
                CPU_DMA_LATENCY, ALREADY_SET, f"holding {self.path} at 0 (fd {self._fd})"
            )
            return self.result
        self.result = self._open_and_write()
        return self.result

    def _open_and_write(self) -> TweakResult:
        if not os.path.lexists(self.path):
            return TweakResult(CPU_DMA_LATENCY, NOT_POSSIBLE, f"no {self.path} (kernel without PM QoS?)")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)  # no O_CREAT/O_TRUNC: it is a device
        except PermissionError:
            return TweakResult(CPU_DMA_LATENCY, NOT_POSSIBLE, f"not writable{_need_root()}: {self.path}")
        except OSError as e:
            return TweakResult(CPU_DMA_LATENCY, NOT_POSSIBLE, _os_error(e))
        try:
            written = os.write(fd, struct.pack("i", 0))
        except OSError as e:
            os.close(fd)
            return TweakResult(CPU_DMA_LATENCY, NOT_POSSIBLE, _os_error(e))
        if written != 4:
            os.close(fd)
            return TweakResult(CPU_DMA_LATENCY, NOT_POSSIBLE, f"short write ({written} bytes) to {self.path}")
        self._fd = fd
        return TweakResult(CPU_DMA_LATENCY, APPLIED, f"holding {self.path} at 0 us while this process runs")

    def release(self) -> None:
        """Close the fd, which ends the request. Safe to call more than once."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> DmaLatencyHold:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self.release()


def _apply_dma(root: Path, hold: DmaLatencyHold | None) -> TweakResult:
    if hold is not None:
        return hold.acquire()
    current = _check_dma(root)
    if current.status in (ALREADY_SET, NOT_POSSIBLE):
        return current
    # A one-shot command exits right away, and with it the request: be honest about it.
    return TweakResult(CPU_DMA_LATENCY, NOT_POSSIBLE, DMA_HINT)


def _revert_dma() -> TweakResult:
    return TweakResult(
        CPU_DMA_LATENCY,
        NOT_SET,
        "nothing to revert: the request ends when the holding process releases or exits",
    )


# --------------------------------------------------------------------------- cpu-governor


@dataclass(frozen=True)
class _Cpu:
    name: str
    path: Path
    current: str | None
    problem: str | None  # why we cannot set it, None if we can


def _governor_path(root: Path, cpu: str) -> Path:
    return _under(root, _CPU_DIR) / cpu / "cpufreq" / "scaling_governor"


def _probe_cpu(name: str, path: Path) -> _Cpu:
    if not path.is_file():
        return _Cpu(name, path, None, "not writable (not a regular file)")
    try:
        current = path.read_text().strip()
    except OSError as e:
        return _Cpu(name, path, None, f"unreadable ({_os_error(e)})")
    if not os.access(path, os.W_OK):
        return _Cpu(name, path, current, f"not writable{_need_root()}")
    available = path.with_name("scaling_available_governors")
    with contextlib.suppress(OSError):
        offered = available.read_text().split()
        if offered and PERFORMANCE not in offered:
            return _Cpu(name, path, current, f"performance not offered (available: {' '.join(offered)})")
    return _Cpu(name, path, current, None)


def _governor_cpus(root: Path) -> list[_Cpu]:
    base = _under(root, _CPU_DIR)
    found: list[tuple[int, str]] = []
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            m = _CPU_RE.fullmatch(entry.name)
            if m and os.path.lexists(entry / "cpufreq" / "scaling_governor"):
                found.append((int(m.group(1)), entry.name))
    return [_probe_cpu(name, _governor_path(root, name)) for _, name in sorted(found)]


def _no_cpufreq(root: Path) -> TweakResult:
    where = _under(root, _CPU_DIR) / "cpu*" / "cpufreq" / "scaling_governor"
    return TweakResult(CPU_GOVERNOR, NOT_POSSIBLE, f"no cpufreq ({where} missing; common in VMs/containers)")


def _problems(cpus: list[_Cpu]) -> str:
    return _group([(c.name, c.problem or "") for c in cpus], sep=": ")


def _governor_plan(root: Path) -> TweakResult | tuple[list[_Cpu], list[_Cpu]]:
    """A final result (already set / not possible) or (cpus to change, cpus that cannot be changed)."""
    cpus = _governor_cpus(root)
    if not cpus:
        return _no_cpufreq(root)
    todo = [c for c in cpus if c.current != PERFORMANCE]
    if not todo:
        return TweakResult(CPU_GOVERNOR, ALREADY_SET, f"{PERFORMANCE} on {_cpu_list([c.name for c in cpus])}")
    fixable = [c for c in todo if c.problem is None]
    stuck = [c for c in todo if c.problem is not None]
    if not fixable:
        return TweakResult(CPU_GOVERNOR, NOT_POSSIBLE, _problems(stuck))
    return fixable, stuck


def _check_governor(root: Path) -> TweakResult:
    plan = _governor_plan(root)
    if isinstance(plan, TweakResult):
        return plan
    fixable, stuck = plan
    detail = _group([(c.name, c.current or "?") for c in fixable])
    if stuck:
        detail += f"; cannot change: {_problems(stuck)}"
    return TweakResult(CPU_GOVERNOR, NOT_SET, detail)


def _write_sysfs(path: Path, text: str) -> None:
    # No O_CREAT: never create a file that is not already there (matters under a fake root).
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _apply_governor(root: Path, state: dict[str, Any]) -> TweakResult:
    plan = _governor_plan(root)
    if isinstance(plan, TweakResult):
        return plan
    fixable, stuck = plan
    saved: dict[str, str] = state["governors"]
    changed: list[_Cpu] = []
    failed: list[str] = []
    for cpu in fixable:
        try:
            _write_sysfs(cpu.path, PERFORMANCE)
        except OSError as e:
            failed.append(f"{cpu.name}: {_os_error(e)}")
            continue
        # Keep the first saved value: a second apply must not record "performance" as "previous".
        saved.setdefault(cpu.name, cpu.current or "")
        changed.append(cpu)
    extra = f"; cannot change: {_problems(stuck)}" if stuck else ""
    if failed:
        extra += f"; failed: {'; '.join(failed)}"
    if not changed:
        return TweakResult(CPU_GOVERNOR, NOT_POSSIBLE, extra.lstrip("; "))
    was = _group([(c.name, c.current or "?") for c in changed])
    detail = f"{PERFORMANCE} on {_cpu_list([c.name for c in changed])} (was {was}){extra}"
    return TweakResult(CPU_GOVERNOR, APPLIED, detail)


def _revert_governor(root: Path, state: dict[str, Any]) -> TweakResult:
    saved: dict[str, str] = state["governors"]
    if not saved:
        return TweakResult(CPU_GOVERNOR, NOT_SET, "nothing to revert: no governors were changed by us")
    restored: list[tuple[str, str]] = []
    failed: list[str] = []
    for cpu, previous in sorted(saved.items(), key=lambda kv: int(kv[0][3:])):
        path = _governor_path(root, cpu)
        if not path.is_file():
            failed.append(f"{cpu}: {path} missing or not a regular file")  # kept in state: e.g. cpu offline
            continue
        try:
            _write_sysfs(path, previous)
        except OSError as e:
            failed.append(f"{cpu}: {_os_error(e)}")
        else:
            restored.append((cpu, previous))
    for cpu, _ in restored:
        del saved[cpu]
    extra = f"; failed (kept for a later revert): {'; '.join(failed)}" if failed else ""
    if not restored:
        return TweakResult(CPU_GOVERNOR, NOT_POSSIBLE, extra.lstrip("; "))
    return TweakResult(CPU_GOVERNOR, REVERTED, f"restored {_group(restored)}{extra}")


# --------------------------------------------------------------------------- public API


def _state_path(state_dir: Path | None, fn: str) -> Path:
    if state_dir is None:
        raise TypeError(f"{fn}() missing required argument: 'state_dir'")
    return Path(state_dir) / STATE_FILENAME


def check(root: Path = Path("/")) -> list[TweakResult]:
    """Read-only look at the three tweaks: "already set", "not set" or "not possible" (with the reason)."""
    root = Path(root)
    return [
        _safe(SLEEP_TARGETS, _check_sleep, root),
        _safe(CPU_DMA_LATENCY, _check_dma, root),
        _safe(CPU_GOVERNOR, _check_governor, root),
    ]


def apply(
    root: Path = Path("/"), state_dir: Path | None = None, hold: DmaLatencyHold | None = None
) -> list[TweakResult]:
    """Apply the three tweaks under ``root``, recording what was changed in ``state_dir``/tweaks-state.json.

    ``state_dir`` is required. Idempotent: what is already in place is reported "already set" and the saved
    previous governors are never overwritten. ``cpu-dma-latency`` is only applied when a ``hold`` is passed
    (it is acquired and stays held until ``hold.release()``); without one it is reported "not possible".
    """
    root = Path(root)
    path = _state_path(state_dir, "apply")
    state, error = _load_state(path)
    if error is None:
        dir_problem = _dir_problem(path.parent)
        if dir_problem is not None:
            error = f"cannot record state in {path.parent}: {dir_problem}"
    dma = _safe(CPU_DMA_LATENCY, _apply_dma, root, hold)
    if error is not None:
        return [
            TweakResult(SLEEP_TARGETS, NOT_POSSIBLE, error),
            dma,
            TweakResult(CPU_GOVERNOR, NOT_POSSIBLE, error),
        ]
    if state is None:
        state = _empty_state()
    before = json.dumps(state, sort_keys=True)
    sleep = _safe(SLEEP_TARGETS, _apply_sleep, root, state)
    governor = _safe(CPU_GOVERNOR, _apply_governor, root, state)
    if json.dumps(state, sort_keys=True) != before:
        try:
            _save_state(path, state)
        except OSError as e:
            warning = f"; WARNING: state not saved ({_os_error(e)}), revert cannot undo this"
            sleep, governor = (
                TweakResult(r.name, r.status, r.detail + warning) if r.status == APPLIED else r
                for r in (sleep, governor)
            )
    return [sleep, dma, governor]


def revert(root: Path = Path("/"), state_dir: Path | None = None) -> list[TweakResult]:
    """Undo what ``apply`` recorded in ``state_dir``: unmask only the units we masked, restore the previous
    governors, then delete the state file. Without a state file every tweak is "not set" (nothing to do).
    """
    root = Path(root)
    path = _state_path(state_dir, "revert")
    state, error = _load_state(path)
    if error is not None:
        return [
            TweakResult(SLEEP_TARGETS, NOT_POSSIBLE, error),
            _revert_dma(),
            TweakResult(CPU_GOVERNOR, NOT_POSSIBLE, error),
        ]
    if state is None:
        nothing = f"nothing to revert (no state file {path})"
        return [
            TweakResult(SLEEP_TARGETS, NOT_SET, nothing),
            _revert_dma(),
            TweakResult(CPU_GOVERNOR, NOT_SET, nothing),
        ]
    sleep = _safe(SLEEP_TARGETS, _revert_sleep, root, state)
    governor = _safe(CPU_GOVERNOR, _revert_governor, root, state)
    try:
        _save_state(path, state)  # deletes the file once everything has been reverted
    except OSError as e:
        warning = f"; WARNING: state file not updated ({_os_error(e)})"
        sleep, governor = (TweakResult(r.name, r.status, r.detail + warning) for r in (sleep, governor))
    return [sleep, _revert_dma(), governor]
