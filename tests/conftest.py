"""Helpers that drive real pipelines through the `pipeline` command, each test in its own run directory and
with its own pipeline name (so its shared-memory segments never clash with another run's)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from pipeline.control import request

TESTS = Path(__file__).parent


def _shared() -> Path:
    """The workspace's shared/ folder (reference vectors, recorded traffic): $LOWLAT_SHARED, else beside the
    project, else /work/shared."""
    for c in (os.environ.get("LOWLAT_SHARED"), TESTS.resolve().parents[1] / "shared", "/work/shared"):
        if c and (Path(c) / "reference" / "test_vectors.json").is_file():
            return Path(c)
    return Path("/work/shared")


SHARED = _shared()
"""Where shared/reference and shared/data/recorded are."""
ENV = dict(os.environ, PYTHONPATH=str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", ""))

BASE_CONFIG = """
name = "{name}"

[[instruments]]
symbol = "BTC-USDT"
tick = 0.1

[[instruments]]
symbol = "ETH-USDT"
tick = 0.01

[rings.ticks]
type = "bbo"
capacity = 65536

[rings.counts]
type = "count"
capacity = 65536

[stages.source]
kind = "synthetic"
outputs = ["ticks"]
[stages.source.params]
rate_hz = 2500
speed = {speed}
seed = 11
count = {count}

[stages.counter]
kind = "count"
inputs = ["ticks"]
outputs = ["counts"]

[stages.sink]
kind = "check"
inputs = ["counts"]

[supervisor]
heartbeat_timeout_s = 3.0
backoff_initial_s = 0.02
backoff_max_s = 0.2
max_restarts = {max_restarts}
restart_window_s = 60
"""


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sim_toml(*sim_args: str) -> dict:
    """``configs/sim.toml`` (parsed) under a unique name, its simulator on a free port (``sim_args`` added) and
    every URL pointing there: runs beside any other test's pipeline."""
    import tomllib

    raw = tomllib.loads((Path(__file__).resolve().parents[1] / "configs" / "sim.toml").read_text())
    port = free_port()
    raw["name"] = f"t{uuid.uuid4().hex[:8]}"
    raw["services"]["exchange"]["args"] = ["--port", str(port), "--seed", "7", *sim_args]
    raw["services"]["exchange"]["port"] = port
    url = f"http://127.0.0.1:{port}"
    raw["stages"]["kucoin"]["params"]["rest_url"] = url
    raw["stages"]["bars"]["params"]["rest_urls"] = {"kucoin": url}
    raw["stages"]["executor"]["params"]["venues"] = {"kucoin": {"rest_url": url}}
    return raw


def feed_sinks(rings) -> str:
    """Config text: one checking sink ``s_<ring>`` per feed ring (feeds' src_seq is per frame, not contiguous)."""
    return "\n".join(f'[stages.s_{r}]\nkind = "check"\ninputs = ["{r}"]\n[stages.s_{r}.params]\n'
                     f"contiguous_src = false\n" for r in rings)


def cli(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run `pipeline ARGS` as a real process."""
    p = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                       timeout=timeout, env=ENV)
    if check and p.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


class Pipeline:
    """A pipeline started detached from a config text, stopped at teardown."""

    def __init__(self, tmp: Path, text: str) -> None:
        self.name = f"t{uuid.uuid4().hex[:10]}"
        self.run_dir = tmp / "run"
        self.config = tmp / "pipeline.toml"
        self.config.write_text(text.replace("{name}", self.name))

    def up(self, *extra: str) -> subprocess.CompletedProcess:
        return cli("up", "--config", str(self.config), "--run-dir", str(self.run_dir), "--detach", *extra)

    def status(self) -> dict:
        """Status over the control socket (the CLI's `status --json` is tested on its own; polling through it
        would start a Python process per poll)."""
        reply = request(self.run_dir, {"cmd": "status"})
        assert reply.pop("ok"), reply
        return reply

    def stage(self, name: str) -> dict:
        return next(s for s in self.status()["stages"] if s["name"] == name)

    def down(self) -> None:
        if (self.run_dir / "control.sock").exists():
            cli("down", "--run-dir", str(self.run_dir), check=False)

    def wait_for(self, pred, timeout: float = 60.0, what: str = "condition") -> dict:
        """Poll status until ``pred(status)``; returns that status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.status()
            if pred(s):
                return s
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; last status: {json.dumps(self.status())[:2000]}")

    def sink_records(self, dtype: np.dtype, stage: str = "sink") -> np.ndarray:
        return np.fromfile(self.run_dir / f"{stage}.bin", dtype=dtype)

    def segments(self) -> list[str]:
        return sorted(p.name for p in Path("/dev/shm").glob(f"{self.name}.*"))


@pytest.fixture
def make_pipeline(tmp_path: Path):
    """Factory: make_pipeline(config_text, subdir) -> Pipeline; every one is brought down at teardown."""
    made: list[Pipeline] = []

    def make(text: str, sub: str = "a") -> Pipeline:
        d = tmp_path / sub
        d.mkdir()
        p = Pipeline(d, text)
        made.append(p)
        return p

    yield make
    for p in made:
        p.down()
