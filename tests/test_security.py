"""Secrets: API keys come from the environment or from an owner-only file the user names, and no output of a full
live run (logs, journals, event logs, sink files, status over the socket and the CLI, `pipeline top`, the
shared-memory status block) holds any of the key material."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import ENV, cli
from simulator_client import Sim
from test_executor import CONFIG, FEEDS, VENUE_PARAMS, settled

from execution.signing import Credentials

NAMES = ("LOWLAT_KUCOIN_API_KEY", "LOWLAT_KUCOIN_API_SECRET", "LOWLAT_KUCOIN_API_PASSPHRASE")


def _keys() -> dict[str, str]:
    return {n: f"{n.rsplit('_', 1)[1].lower()}-{secrets.token_hex(16)}" for n in NAMES}


def _write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_credentials_file_is_read_only_when_it_is_yours_and_0600(tmp_path: Path) -> None:
    keys = _keys()
    body = "# kucoin trading key\n\n" + "".join(f"export {n} = {v}\n" for n, v in keys.items())
    good = _write(tmp_path / "kucoin.env", body, 0o600)
    c = Credentials.from_file(good, *NAMES)
    assert (c.api_key, c.secret, c.passphrase) == tuple(keys.values())
    assert keys[NAMES[1]] not in repr(c) and keys[NAMES[2]] not in str(c)

    def refused(path: Path, *want: str) -> str:
        with pytest.raises(ValueError) as e:
            Credentials.from_file(path, *NAMES)
        msg = str(e.value)
        assert "\n" not in msg and all(w in msg for w in want), msg
        assert not any(v in msg for v in keys.values()), msg
        return msg

    for mode in (0o644, 0o640, 0o604, 0o660):
        refused(_write(tmp_path / f"m{mode:o}.env", body, mode), f"mode {mode:04o}", "chmod 600")
    link = tmp_path / "link.env"
    link.symlink_to(good)
    refused(link, str(link))  # a symlink is not followed (it could point anywhere)
    refused(tmp_path / "absent.env", "absent.env")
    refused(_write(tmp_path / "short.env", f"{NAMES[0]}={keys[NAMES[0]]}\n{NAMES[1]}=\n", 0o600),
            NAMES[1], NAMES[2])
    # a line that is not NAME=value is named by its number, never echoed (it may be a pasted secret)
    refused(_write(tmp_path / "bad.env", f"{NAMES[0]}=k\n{keys[NAMES[1]]}\n", 0o600), "line 2", "NAME=value")
    if os.geteuid() == 0:  # root: the file of another user is refused too
        other = _write(tmp_path / "other.env", body, 0o600)
        os.chown(other, 65534, 65534)
        refused(other, "uid 65534")


def _config(sim: Sim, credentials: str) -> str:
    """test_executor's live KuCoin pipeline against a simulator the test started (so the venue's side of the key
    is not in any of the pipeline's files), with the executor's credentials from ``credentials``."""
    port = sim.port
    text = CONFIG.format(name="{name}", port=port, mode="live", every=30, count=4, latency=0, extra="",
                         venue="kucoin", btc="BTC-USDT", eth="ETH-USDT", feed=FEEDS["kucoin"].format(port=port),
                         venue_params=VENUE_PARAMS["kucoin"].format(port=port))
    text = re.sub(r"\[services\.exchange\]\n(?:[^\n]+\n)*", "", text)
    return text.replace('credentials = "simulator"', credentials)


def test_credentials_file_readable_by_others_stops_up_with_one_line(make_pipeline, tmp_path: Path) -> None:
    keys = _keys()
    path = _write(tmp_path / "kucoin.env", "".join(f"{n}={v}\n" for n, v in keys.items()), 0o644)
    sim = Sim("--seed", "7").ready()
    try:
        p = make_pipeline(_config(sim, f'credentials = "file"\ncredentials_file = "{path}"'))
        out = cli("up", "--config", str(p.config), "--run-dir", str(p.run_dir), "--detach", check=False)
    finally:
        sim.stop()
    assert out.returncode != 0
    assert "mode 0644" in out.stderr + out.stdout and "chmod 600" in out.stderr + out.stdout, out
    assert not any(v in out.stdout + out.stderr for v in keys.values())
    assert not p.segments() and not (p.run_dir / "control.sock").exists()


@pytest.mark.parametrize("source", ["env", "file"])
def test_no_output_of_a_live_run_holds_the_key_material(make_pipeline, tmp_path: Path, source: str) -> None:
    """Trade live with a fresh random key (the simulator started with it), then search every byte the run left:
    the run directory (stage logs, journal, events, sink records, status), the shared-memory segments while it
    runs, and what `up`, `status --json` and `top --once` printed."""
    keys = _keys()
    env = dict(ENV)
    if source == "env":
        env.update(keys)
        creds = 'credentials = "env"'
    else:
        path = _write(tmp_path / "kucoin.env", "".join(f"{n}={v}\n" for n, v in keys.items()), 0o600)
        creds = f'credentials = "file"\ncredentials_file = "{path}"'
    sim = Sim("--seed", "7", "--api-key", keys[NAMES[0]], "--api-secret", keys[NAMES[1]],
              "--api-passphrase", keys[NAMES[2]]).ready()
    outputs: list[str] = []
    try:
        p = make_pipeline(_config(sim, creds))
        up = subprocess.run([sys.executable, "-m", "pipeline.cli", "up", "--config", str(p.config), "--run-dir",
                             str(p.run_dir), "--detach"], capture_output=True, text=True, timeout=120, env=env)
        assert up.returncode == 0, up
        outputs += [up.stdout, up.stderr]
        settled(p, 4)
        ex = p.status()["execution"]
        assert ex["orders"]["filled"] == 8 and ex["orders"]["rejected"] == 0, ex["orders"]  # the key worked
        outputs.append(repr(p.status()))
        for args in (("status", "--json"), ("top", "--once")):
            r = cli(*args, "--run-dir", str(p.run_dir))
            outputs += [r.stdout, r.stderr]
        shm = {seg: Path("/dev/shm", seg).read_bytes() for seg in p.segments()}
        assert shm
    finally:
        p.down()
        sim.stop()
    files = {str(f): f.read_bytes() for f in p.run_dir.rglob("*") if f.is_file()}
    assert any(name.endswith("executor.journal") for name in files) and len(files) > 5, sorted(files)
    blobs = {**files, **shm, **{f"output {i}": o.encode() for i, o in enumerate(outputs)}}
    for name, value in keys.items():
        leaks = [where for where, blob in blobs.items() if value.encode() in blob]
        assert not leaks, f"{name} found in {leaks}"


OTHER_USER = """
import json, os, socket, sys
try:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
except OSError:
    sys.exit(77)
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    s.settimeout(10)
    try:
        s.connect(sys.argv[1])
    except OSError as e:
        print(json.dumps({"connect": e.strerror}))
        sys.exit(0)
    try:
        s.sendall(json.dumps({"cmd": sys.argv[2]}).encode() + b"\\n")
    except BrokenPipeError:  # refused before the request was read: the reply is waiting
        pass
    print(json.dumps({"reply": json.loads(s.makefile("rb").readline() or b"null")}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
def test_control_requests_from_another_user_are_refused() -> None:
    """The control socket is the owner's only (mode 0600: another user cannot connect); and were its mode opened,
    the supervisor still refuses a peer of another uid (SO_PEERCRED) before reading the request."""
    from conftest import BASE_CONFIG, Pipeline

    top = Path(tempfile.mkdtemp(prefix="lowlat-sec-"))
    top.chmod(0o755)  # the directories open, so only the socket's own mode and the peer check stand in the way
    p = Pipeline(top, BASE_CONFIG.format(name="{name}", speed=1, count=0, max_restarts=3))
    try:
        p.up()
        p.run_dir.chmod(0o755)
        sock = p.run_dir / "control.sock"

        def as_nobody(cmd: str) -> dict:
            r = subprocess.run([sys.executable, "-c", OTHER_USER, str(sock), cmd], capture_output=True, text=True,
                               timeout=60)
            if r.returncode == 77:
                pytest.skip("cannot become another user here")
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)

        assert as_nobody("status") == {"connect": "Permission denied"}
        sock.chmod(0o666)
        reply = as_nobody("down")["reply"]
        assert reply["ok"] is False and reply["error"].startswith("refused: uid 65534"), reply
        sock.chmod(0o600)
        assert p.status()["stages"] and p.stage("sink")["state"] == "running", "the pipeline was not stopped"
    finally:
        p.down()
        shutil.rmtree(top, ignore_errors=True)
    assert not p.segments()
