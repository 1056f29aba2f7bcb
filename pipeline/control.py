"""Client side of the control socket: one JSON request line, one JSON reply line."""

from __future__ import annotations

import json
import socket
from pathlib import Path

SOCKET_NAME = "control.sock"
"""The control socket's name inside a run directory."""
RUNS = Path("runs")


class ControlError(RuntimeError):
    """No pipeline answers at that run directory, or it refused the request."""


def find_run_dir(run_dir: Path | None) -> Path:
    """The run directory given, or the only one under ./runs with a control socket."""
    if run_dir is not None:
        return run_dir
    live = sorted(p.parent for p in RUNS.glob(f"*/{SOCKET_NAME}"))
    if len(live) == 1:
        return live[0]
    if not live:
        raise ControlError(f"no running pipeline under {RUNS}/ (start one with `pipeline up`, or pass --run-dir)")
    raise ControlError(f"several pipelines under {RUNS}/: {', '.join(map(str, live))}; pass --run-dir")


def request(run_dir: Path, payload: dict, timeout_s: float = 30.0) -> dict:
    """Send one request to the supervisor of ``run_dir`` and return its reply."""
    path = run_dir / SOCKET_NAME
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"no pipeline is running in {run_dir} (no supervisor at {path})") from None
        s.sendall(json.dumps(payload).encode() + b"\n")
        line = s.makefile("rb").readline()
    if not line:
        raise ControlError(f"the supervisor at {path} closed the connection without a reply")
    return json.loads(line)
