"""A local exchange simulator process for tests: ``python -m feeds.simulator`` on a free loopback port, with a small
REST client for its endpoints and fault injection."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class Sim:
    """``python -m feeds.simulator`` on a free port; ``stop()`` sends a signal and returns the exit code."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "feeds.simulator", "--port", "0", *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.port = 0

    def ready(self, timeout: float = 30.0) -> Sim:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        if not line.startswith("simulator listening on 127.0.0.1:"):
            self.proc.kill()
            raise AssertionError(f"simulator did not start: {line!r} {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.port = int(line.rsplit(":", 1)[1])
        return self

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def request(self, path: str, body: Any = None, method: str | None = None) -> tuple[int, Any, dict[str, str]]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.http + path, data=data, method=method or ("POST" if data else "GET"))
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read()), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read()), dict(e.headers)

    def get(self, path: str) -> Any:
        status, body, _ = self.request(path)
        assert status == 200, (path, status, body)
        return body

    def fault(self, **spec: Any) -> Any:
        status, body, _ = self.request("/_sim/fault", spec)
        assert status == 200 and body["ok"] is True, body
        return body

    def stats(self) -> Any:
        return self.get("/_sim/stats")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -999
