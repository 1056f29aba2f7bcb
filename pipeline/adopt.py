"""Taking over a pipeline whose supervisor was killed: its stage and service processes keep running (they need
nothing from the supervisor while they run), so a new ``pipeline up`` of the same run directory and config adopts
them, with their rings and status block, and starts only what is missing.

The adopted processes are not the new supervisor's children, so it cannot ``waitpid`` them: ``Adopted`` watches
one through psutil with the part of ``subprocess.Popen``'s interface the supervisor uses. Their exit code is lost
with the old supervisor (init reaps them); ``poll`` then returns ``GONE``.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time

import psutil

GONE = 1 << 16
"""``Adopted.returncode`` of a process that ended: its real exit code went to whoever reaped it."""


def exit_reason(code: int) -> str:
    """Why a stage or service process ended, from its return code."""
    if code == GONE:
        return "ended (exit code unknown: a previous supervisor started it)"
    return f"exited with code {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"


def lock_text(pid: int, run_dir: str, config_text: str) -> str:
    """What the pipeline lock file says while a supervisor holds it: who, where, and which config."""
    return f"pid {pid} run dir {run_dir} config {hashlib.sha256(config_text.encode()).hexdigest()[:16]}"


def same_owner(old: str, new: str) -> bool:
    """True when two lock texts name the same run directory and config (the pid may differ)."""
    return old.partition(" run dir ")[2] == new.partition(" run dir ")[2] != ""


class Adopted:
    """A running process another supervisor started: ``pid``, ``poll``, ``wait``, ``terminate``, ``kill``."""

    def __init__(self, proc: psutil.Process) -> None:
        self._p = proc
        self.pid = proc.pid
        self.returncode: int | None = None

    @classmethod
    def find(cls, pid: int, *words: str) -> Adopted | None:
        """The live process ``pid`` if its command line holds every one of ``words``, else None."""
        try:
            p = psutil.Process(pid)
            cmd = p.cmdline()
            if p.status() == psutil.STATUS_ZOMBIE or not all(w in cmd for w in words):
                return None
        except (psutil.Error, OSError):
            return None
        return cls(p)

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                gone = self._p.status() == psutil.STATUS_ZOMBIE  # its reaper may be slow, or not reap at all
            except psutil.NoSuchProcess:
                gone = True
            if gone:
                self.returncode = GONE
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.01)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                self._p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
