"""`pipeline up / status / restart / down` on real processes, rings and the control socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import BASE_CONFIG, ENV, cli

from pipeline.control import request
from pipeline.records import BBO, COUNT
from pipeline.ring import Ring

RUNNING = BASE_CONFIG.format(name="{name}", speed=1, count=0, max_restarts=10)


def _stage(status: dict, name: str) -> dict:
    return next(s for s in status["stages"] if s["name"] == name)


def test_up_status_restart_down(make_pipeline) -> None:
    p = make_pipeline(RUNNING)
    up = p.up()
    assert "source" in up.stdout and "counter" in up.stdout and "sink" in up.stdout
    s = json.loads(cli("status", "--run-dir", str(p.run_dir), "--json").stdout)
    assert set(s) >= {"stages", "rings"}
    assert [x["name"] for x in s["stages"]] == ["source", "counter", "sink"]
    for x in s["stages"]:
        assert x["state"] == "running" and x["pid"] and x["restarts"] == 0
        assert psutil.Process(x["pid"]).cpu_affinity() == x["cpus"], "stage not pinned to its CPUs"
        assert x["wait"] in ("spin", "yield", "block")
        assert set(x) >= {"heartbeat_age_s", "records_in", "records_out", "waits", "errors", "last_error"}
    assert {r["name"] for r in s["rings"]} == {"ticks", "counts"}
    for r in s["rings"]:
        assert set(r) >= {"fill", "producer_pos", "consumer_pos", "producer_waits", "consumer_waits"}
        assert 0 <= r["fill"] <= r["capacity"]
    assert sorted(p.segments()) == sorted(f"{p.name}.{x}" for x in ("counts", "lock", "status", "ticks"))
    for seg in p.segments():
        assert stat.S_IMODE(os.stat(f"/dev/shm/{seg}").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(p.run_dir / "control.sock").st_mode) == 0o600
    table = cli("status", "--run-dir", str(p.run_dir)).stdout
    assert all(word in table for word in ("beat s", "restarts", "ticks", "counts", "prod pos", "cons waits"))

    # restart the middle stage twice on request: new pid, same CPUs, neighbours untouched, nothing lost
    others = {x["name"]: x["pid"] for x in s["stages"] if x["name"] != "counter"}
    old = _stage(s, "counter")
    assert all(x["standby_pid"] and psutil.Process(x["standby_pid"]).cpu_affinity() == x["cpus"]
               for x in s["stages"]), "every stage has a warm standby on its CPUs"
    for _ in range(2):
        standby = _stage(p.status(), "counter")["standby_pid"]
        out = cli("restart", "counter", "--run-dir", str(p.run_dir)).stdout
        assert _stage(p.status(), "counter")["pid"] == standby, "the warm standby took over"
        assert "restarted counter" in out and "running after" in out
        assert _stage(p.status(), "counter")["state"] == "running", "restart returns once the stage runs again"
    p.wait_for(lambda s: _stage(s, "counter")["state"] == "running", what="counter running")
    before = _stage(p.status(), "sink")["records_in"]
    s2 = p.wait_for(lambda s: _stage(s, "sink")["records_in"] > before + 500, what="records flowing again")
    new = _stage(s2, "counter")
    assert new["pid"] != old["pid"] and new["cpus"] == old["cpus"] and new["restarts"] == 2
    assert old["standby_pid"] != new["standby_pid"] and new["standby_pid"] is not None
    assert {x["name"]: x["pid"] for x in s2["stages"] if x["name"] != "counter"} == others
    sink = _stage(s2, "sink")
    assert sink["errors"] == 0 and sink["counters"]["gaps"] == 0 and sink["counters"]["dups"] == 0

    bad = cli("restart", "nosuch", "--run-dir", str(p.run_dir), check=False)
    assert bad.returncode == 1 and "no stage 'nosuch'" in bad.stderr

    pids = [x["pid"] for x in s2["stages"]] + [s2["supervisor_pid"]]
    cli("down", "--run-dir", str(p.run_dir))
    assert p.segments() == []
    assert not (p.run_dir / "control.sock").exists()
    time.sleep(0.2)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in pids)
    recs = p.sink_records(COUNT)
    assert len(recs) > 1000 and (recs["seq"] == range(len(recs))).all()
    assert (recs["src_seq"] == range(len(recs))).all()


def test_supervisor_restarts_dead_and_silent_stages(make_pipeline) -> None:
    p = make_pipeline(RUNNING.replace("heartbeat_timeout_s = 3.0", "heartbeat_timeout_s = 1.0"))
    p.up()
    src = _stage(p.status(), "source")
    os.kill(src["pid"], signal.SIGKILL)
    s = p.wait_for(lambda s: _stage(s, "source")["restarts"] == 1 and _stage(s, "source")["state"] == "running",
                   what="source restarted after SIGKILL")
    assert _stage(s, "source")["pid"] != src["pid"]
    # a stage that stops beating (SIGSTOP: alive but silent) is killed and replaced
    sink = _stage(s, "sink")
    os.kill(sink["pid"], signal.SIGSTOP)
    s = p.wait_for(lambda s: _stage(s, "sink")["restarts"] == 1 and _stage(s, "sink")["state"] == "running",
                   what="silent sink restarted")
    assert "heartbeat stopped" in _stage(s, "sink")["reason"]
    assert not psutil.pid_exists(sink["pid"]) or psutil.Process(sink["pid"]).status() == psutil.STATUS_ZOMBIE
    before = _stage(s, "sink")["records_in"]
    s = p.wait_for(lambda s: _stage(s, "sink")["records_in"] > before + 500, what="records flowing")
    assert _stage(s, "sink")["counters"]["gaps"] == 0 and _stage(s, "sink")["counters"]["dups"] == 0


def test_crash_loop_is_capped_and_status_says_why(make_pipeline) -> None:
    text = RUNNING.replace('kind = "synthetic"', 'kind = "stages_for_tests:Crash"')
    text = text.replace("[stages.source.params]\nrate_hz = 2500\nspeed = 1\nseed = 11\ncount = 0\n", "")
    text = text.replace("max_restarts = 10", "max_restarts = 2\nstandby = false")  # the path without standbys
    p = make_pipeline(text)
    p.up()
    s = p.wait_for(lambda s: _stage(s, "source")["state"] == "failed", what="source marked failed")
    src = _stage(s, "source")
    assert src["restarts"] == 2 and src["pid"] is None
    assert "exited with code 7" in src["reason"] and "max_restarts" in src["reason"]
    assert "failed" in cli("status", "--run-dir", str(p.run_dir)).stdout
    assert _stage(s, "counter")["state"] == "running", "the other stages keep running"
    assert all(x["standby_pid"] is None for x in s["stages"])


@pytest.mark.parametrize("damage, error", [("garbage", "bad magic"), ("truncated", "shorter than a ring header"),
                                           ("other_type", "record type mismatch")])
def test_a_damaged_ring_fails_only_the_stage_that_attaches_it(make_pipeline, damage: str, error: str) -> None:
    """The ``counts`` segment is replaced under the running pipeline (random bytes, a file shorter than a header, a
    ring of another record type): the sink, restarted, cannot attach it and fails with one clear line in status;
    its neighbours never notice (same pids, records flowing), and ``down`` leaves nothing."""
    p = make_pipeline(RUNNING.replace("max_restarts = 10", "max_restarts = 2\nstandby = false"))
    p.up()
    s = p.wait_for(lambda s: _stage(s, "sink")["records_in"] > 100, what="records flowing")
    pids = {x["name"]: x["pid"] for x in s["stages"]}
    seg = Path("/dev/shm") / f"{p.name}.counts"
    size = seg.stat().st_size
    seg.unlink()  # the counter and the sink keep their mappings of the old segment
    if damage == "other_type":
        Ring.create(f"{p.name}.counts", BBO, 1024).close()
    else:
        fd = os.open(seg, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(size if damage == "garbage" else 100))
        os.close(fd)
    cli("restart", "sink", "--run-dir", str(p.run_dir), check=False)
    s = p.wait_for(lambda s: _stage(s, "sink")["state"] == "failed", 60, "the sink failed for good")
    sink = _stage(s, "sink")
    assert error in sink["last_error"] and f"{p.name}.counts" in sink["last_error"], sink
    assert "\n" not in sink["last_error"] and "max_restarts" in sink["reason"], sink
    out = _stage(s, "counter")["records_out"]
    s = p.wait_for(lambda s: _stage(s, "counter")["records_out"] > out + 500, what="the counter still publishing")
    for name in ("source", "counter"):
        assert _stage(s, name)["pid"] == pids[name] and _stage(s, name)["restarts"] == 0, _stage(s, name)
    p.down()
    assert p.segments() == []


def test_next_up_takes_over_from_a_killed_supervisor(make_pipeline) -> None:
    """The stages run on while their supervisor is dead; the next `up` of the same config adopts the live ones with
    their rings and starts only what died meanwhile, and the stream goes on without a gap or a duplicate."""
    p = make_pipeline(RUNNING)
    p.up()
    s = p.status()
    os.kill(s["supervisor_pid"], signal.SIGKILL)
    pids = {x["name"]: x["pid"] for x in s["stages"]}
    time.sleep(0.3)
    assert all(psutil.pid_exists(pid) for pid in pids.values())
    os.kill(pids["counter"], signal.SIGKILL)  # a stage dies while nobody supervises
    ticks_before = next(r for r in s["rings"] if r["name"] == "ticks")["producer_pos"]
    again = p.up()
    assert "took over from a killed supervisor" in again.stdout, again.stdout
    s2 = p.status()
    assert s2["supervisor_pid"] != s["supervisor_pid"]
    assert all(c.startswith("standby process") for c in s2["cleared_at_start"]), s2["cleared_at_start"]
    assert {f"stage {n} (pid {pids[n]})" for n in ("source", "sink")} == set(s2["adopted_at_start"])
    now = {x["name"]: x["pid"] for x in s2["stages"]}
    assert now["source"] == pids["source"] and now["sink"] == pids["sink"], "live stages were replaced"
    assert now["counter"] not in (None, pids["counter"])
    assert next(r for r in s2["rings"] if r["name"] == "ticks")["producer_pos"] >= ticks_before, "rings re-created"
    assert not list(p.run_dir.glob("sink.*.bin")), "the sink began a new stream"
    before = _stage(s2, "sink")["records_in"]
    s3 = p.wait_for(lambda s: _stage(s, "sink")["records_in"] > before + 500, what="records flowing")
    assert _stage(s3, "sink")["counters"]["gaps"] == 0 and _stage(s3, "sink")["counters"]["dups"] == 0
    # an adopted stage that dies is restarted like any other
    os.kill(pids["sink"], signal.SIGKILL)
    s4 = p.wait_for(lambda s: _stage(s, "sink")["pid"] not in (None, pids["sink"]) and
                    _stage(s, "sink")["state"] == "running", what="adopted sink restarted")
    assert "exit code unknown" in _stage(s4, "sink")["reason"]
    p.down()
    assert p.segments() == [] and not any(psutil.pid_exists(pid) and psutil.Process(pid).status() !=
                                          psutil.STATUS_ZOMBIE for pid in pids.values())


def test_killed_supervisor_of_another_config_is_cleaned_up_by_next_up(make_pipeline) -> None:
    p = make_pipeline(RUNNING)
    p.up()
    s = p.status()
    os.kill(s["supervisor_pid"], signal.SIGKILL)
    time.sleep(0.3)
    orphans = [x["pid"] for x in s["stages"]]
    assert all(psutil.pid_exists(pid) for pid in orphans)
    p.config.write_text(p.config.read_text() + "\n# changed\n")  # another config: nothing is taken over
    again = p.up()
    assert "cleared what a previous run left" in again.stdout
    s2 = p.status()
    assert s2["adopted_at_start"] == []
    assert all(x["state"] == "running" for x in s2["stages"])
    assert not set(orphans) & {x["pid"] for x in s2["stages"]}
    time.sleep(0.2)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in orphans), "stale stage processes left running"
    assert {f"stage process {pid}" for pid in orphans} <= set(s2["cleared_at_start"])
    assert f"/dev/shm/{p.name}.ticks" in s2["cleared_at_start"]
    # the sink began a new stream for the new rings and kept the old one aside
    assert len(list(p.run_dir.glob("sink.*.bin"))) == 1
    before = _stage(s2, "sink")["records_in"]
    s3 = p.wait_for(lambda s: _stage(s, "sink")["records_in"] > before + 500, what="records flowing")
    assert all(x["restarts"] == 0 and x["errors"] == 0 for x in s3["stages"])


def test_second_up_of_a_running_pipeline_is_refused(make_pipeline) -> None:
    p = make_pipeline(RUNNING)
    p.up()
    q = cli("up", "--config", str(p.config), "--run-dir", str(p.run_dir.parent / "other"), "--detach",
            check=False)
    assert q.returncode == 1 and "already running" in q.stderr
    assert all(x["state"] == "running" for x in p.status()["stages"])


def test_bad_config_fails_before_anything_starts(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(RUNNING.replace("{name}", "tbadcfg").replace("capacity = 65536", "capacity = 1000", 1))
    r = cli("up", "--config", str(cfg), "--run-dir", str(tmp_path / "run"), check=False)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "rings.ticks.capacity" in lines[0] and "power of two" in lines[0]
    assert not list(Path("/dev/shm").glob("tbadcfg.*")) and not (tmp_path / "run" / "control.sock").exists()


def test_foreground_up_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    cfg = tmp_path / "fg.toml"
    cfg.write_text(RUNNING.replace("{name}", "tfg" + str(os.getpid())))
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "up", "--config", str(cfg), "--run-dir",
                             str(tmp_path / "run")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=ENV)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp_path / "run" / "control.sock").exists():
        time.sleep(0.05)
    reply = {}
    while time.monotonic() < deadline and not reply.get("ready"):
        reply = request(tmp_path / "run", {"cmd": "ping"})
        time.sleep(0.05)
    assert reply.get("ready")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped" in out
    assert not list(Path("/dev/shm").glob(f"tfg{os.getpid()}.*"))
    assert (tmp_path / "run" / "sink.bin").stat().st_size > 0


def test_control_socket_rejects_unknown_commands(make_pipeline) -> None:
    p = make_pipeline(RUNNING)
    p.up("--tweaks")
    tw = p.status()["tweaks"]  # in a container most are "not possible": reported, and the pipeline runs
    assert [t["name"] for t in tw] == ["sleep-targets", "cpu-dma-latency", "cpu-governor"]
    assert all(t["status"] in ("applied", "already set", "not possible") and t["detail"] for t in tw)
    assert request(p.run_dir, {"cmd": "rm -rf"}) == {
        "ok": False, "error": "unknown command 'rm -rf' (commands: ping, status, restart, hold, down)"}
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(p.run_dir / "control.sock"))
        s.sendall(b"not json\n")
        reply = json.loads(s.makefile().readline())
    assert reply["ok"] is False and "bad request" in reply["error"]
    assert all(x["state"] == "running" for x in p.status()["stages"])


@pytest.mark.parametrize("flag", ["--check"])
def test_tweaks_command_reports_each_tweak(flag: str, tmp_path: Path) -> None:
    r = cli("tweaks", flag, "--root", str(tmp_path))
    for name in ("sleep-targets", "cpu-dma-latency", "cpu-governor"):
        assert name in r.stdout
    assert "not possible" in r.stdout


def test_stages_pinned_to_different_cpus_start_and_run(make_pipeline) -> None:
    """A config that places stages on CPUs of their own: each stage process, pinned to its CPU, still accepts the
    placement of the others (the supervisor checked it against the host), and records flow across CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    text = BASE_CONFIG.format(name="{name}", speed=1.0, count=0, max_restarts=3)
    text = text.replace('kind = "synthetic"\n', f'kind = "synthetic"\ncpus = [{cpus[0]}]\n').replace(
        'kind = "count"\n', f'kind = "count"\ncpus = [{cpus[1]}]\n')
    p = make_pipeline(text)
    p.up()
    s = p.wait_for(lambda s: p.stage("sink")["records_in"] > 100, 60, "records through both CPUs")
    stages = {x["name"]: x for x in s["stages"]}
    assert stages["source"]["cpus"] == [cpus[0]] and stages["counter"]["cpus"] == [cpus[1]]
    assert all(x["state"] == "running" and x["restarts"] == 0 for x in stages.values()), stages
