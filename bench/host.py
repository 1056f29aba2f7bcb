"""What a benchmark records about the machine it ran on: versions, CPU, load and steal time."""

from __future__ import annotations

import os
import platform
import socket
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numba
import numpy as np


def host_info(libs: tuple[str, ...] = ()) -> dict[str, Any]:
    """Hostname, CPU model and count, kernel, Python, numpy, numba and the versions of ``libs``."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for dist in libs:
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = None
    return {
        "hostname": socket.gethostname(),
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        **versions,
    }


def cpu_times() -> tuple[int, int]:
    """(total, steal) jiffies over all CPUs, from /proc/stat."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(v), v[7]
    except (OSError, IndexError, ValueError):
        return 0, 0


def loadavg() -> float | None:
    """The 1-minute load average."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
