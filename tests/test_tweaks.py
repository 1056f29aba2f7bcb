"""Tests for pipeline.tweaks against a fake root directory (real files, no mocks)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from pipeline.tweaks import (
    ALREADY_SET,
    APPLIED,
    CPU_DMA_LATENCY,
    CPU_GOVERNOR,
    NOT_POSSIBLE,
    NOT_SET,
    REVERTED,
    SLEEP_TARGETS,
    SLEEP_UNITS,
    STATE_FILENAME,
    DmaLatencyHold,
    TweakResult,
    apply,
    check,
    revert,
)

NAMES = [SLEEP_TARGETS, CPU_DMA_LATENCY, CPU_GOVERNOR]
STATUSES = {APPLIED, ALREADY_SET, NOT_SET, REVERTED, NOT_POSSIBLE}
KERNEL_DEFAULT_LATENCY = 2_000_000_000  # what /dev/cpu_dma_latency reads when nobody holds a request


def make_root(base: Path, governors: tuple[str, ...] = ("powersave", "schedutil")) -> Path:
    """A fake root laid out like a real host with systemd, PM QoS and cpufreq."""
    root = base / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "run/systemd/system").mkdir(parents=True)
    (root / "dev").mkdir()
    (root / "dev/cpu_dma_latency").write_bytes(struct.pack("<i", KERNEL_DEFAULT_LATENCY))
    cpu_dir = root / "sys/devices/system/cpu"
    (cpu_dir / "cpufreq").mkdir(parents=True)  # global dirs that also match cpu*: must be ignored
    (cpu_dir / "cpuidle").mkdir()
    for i, governor in enumerate(governors):
        d = cpu_dir / f"cpu{i}" / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_governor").write_text(governor + "\n")
        (d / "scaling_available_governors").write_text("performance powersave schedutil\n")
    return root


def by_name(results: list[TweakResult]) -> dict[str, TweakResult]:
    assert [r.name for r in results] == NAMES
    return {r.name: r for r in results}


def governor(root: Path, cpu: int) -> str:
    return (root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor").read_text().strip()


def unit(root: Path, name: str) -> Path:
    return root / "etc/systemd/system" / name


def is_masked(p: Path) -> bool:
    return p.is_symlink() and os.readlink(p) == "/dev/null"


def test_check_empty_root_is_not_possible_with_reasons(tmp_path: Path) -> None:
    r = by_name(check(tmp_path))
    assert all(x.status == NOT_POSSIBLE for x in r.values())
    assert "no systemd" in r[SLEEP_TARGETS].detail
    assert "run/systemd/system missing" in r[SLEEP_TARGETS].detail
    assert "cpu_dma_latency" in r[CPU_DMA_LATENCY].detail
    assert "no cpufreq" in r[CPU_GOVERNOR].detail
    assert all("\n" not in x.detail for x in r.values())


def test_check_full_root_is_not_set(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    r = by_name(check(root))
    assert {x.status for x in r.values()} == {NOT_SET}
    assert "sleep.target" in r[SLEEP_TARGETS].detail
    assert str(KERNEL_DEFAULT_LATENCY) in r[CPU_DMA_LATENCY].detail
    assert "powersave on cpu0" in r[CPU_GOVERNOR].detail
    assert "schedutil on cpu1" in r[CPU_GOVERNOR].detail


def test_apply_again_and_revert(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    state_dir = tmp_path / "state"
    state_file = state_dir / STATE_FILENAME
    os.symlink("/dev/null", unit(root, "hibernate.target"))  # masked by the admin before us

    r = by_name(apply(root, state_dir))
    assert r[SLEEP_TARGETS].status == APPLIED
    assert r[CPU_GOVERNOR].status == APPLIED
    # No hold passed: a one-shot apply cannot keep the fd open, and says so.
    assert r[CPU_DMA_LATENCY].status == NOT_POSSIBLE
    assert "pipeline up --tweaks" in r[CPU_DMA_LATENCY].detail
    assert all(is_masked(unit(root, u)) for u in SLEEP_UNITS)
    assert governor(root, 0) == governor(root, 1) == "performance"
    state = json.loads(state_file.read_text())
    assert sorted(state["masked_units"]) == sorted(set(SLEEP_UNITS) - {"hibernate.target"})
    assert state["governors"] == {"cpu0": "powersave", "cpu1": "schedutil"}

    r = by_name(check(root))
    assert r[SLEEP_TARGETS].status == ALREADY_SET
    assert r[CPU_GOVERNOR].status == ALREADY_SET

    r = by_name(apply(root, state_dir))
    assert r[SLEEP_TARGETS].status == ALREADY_SET
    assert r[CPU_GOVERNOR].status == ALREADY_SET
    assert json.loads(state_file.read_text()) == state  # previous governors not overwritten

    r = by_name(revert(root, state_dir))
    assert r[SLEEP_TARGETS].status == REVERTED
    assert r[CPU_GOVERNOR].status == REVERTED
    assert r[CPU_DMA_LATENCY].status == NOT_SET
    assert (governor(root, 0), governor(root, 1)) == ("powersave", "schedutil")
    assert is_masked(unit(root, "hibernate.target"))  # not ours: stays masked
    for u in set(SLEEP_UNITS) - {"hibernate.target"}:
        assert not os.path.lexists(unit(root, u))
    assert not state_file.exists()

    r = by_name(revert(root, state_dir))
    assert {x.status for x in r.values()} == {NOT_SET}
    assert "nothing to revert" in r[SLEEP_TARGETS].detail
    assert "nothing to revert" in r[CPU_GOVERNOR].detail


def test_reapply_after_external_change_keeps_first_saved_governor(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    state_dir = tmp_path / "state"
    apply(root, state_dir)
    (root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").write_text("ondemand")
    r = by_name(apply(root, state_dir))
    assert r[CPU_GOVERNOR].status == APPLIED
    state = json.loads((state_dir / STATE_FILENAME).read_text())
    assert state["governors"] == {"cpu0": "powersave", "cpu1": "schedutil"}
    revert(root, state_dir)
    assert (governor(root, 0), governor(root, 1)) == ("powersave", "schedutil")


def test_existing_unit_file_is_left_alone(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    state_dir = tmp_path / "state"
    unit(root, "suspend.target").write_text("[Unit]\nDescription=admin override\n")
    r = by_name(apply(root, state_dir))
    assert r[SLEEP_TARGETS].status == APPLIED
    assert "suspend.target" in r[SLEEP_TARGETS].detail
    assert unit(root, "suspend.target").read_text().startswith("[Unit]")
    assert by_name(check(root))[SLEEP_TARGETS].status == NOT_POSSIBLE  # nothing left we could mask
    revert(root, state_dir)
    assert unit(root, "suspend.target").is_file()
    assert not os.path.lexists(unit(root, "sleep.target"))


def test_unit_dir_not_writable_is_not_possible(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    # Tests run as root, which ignores permission bits: a regular file where the directory should be fails
    # for root too.
    unit_dir = root / "etc/systemd/system"
    unit_dir.rmdir()
    unit_dir.write_text("")
    r = by_name(apply(root, tmp_path / "state"))
    assert r[SLEEP_TARGETS].status == NOT_POSSIBLE
    assert "not a directory" in r[SLEEP_TARGETS].detail


def test_governor_not_writable_is_not_possible(tmp_path: Path) -> None:
    root = make_root(tmp_path, governors=("powersave",))
    gov = root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
    # chmod 0o444 would not stop us: tests run as root and root ignores permission bits. A directory in
    # place of the file cannot be opened for writing even by root (EISDIR).
    gov.unlink()
    gov.mkdir()
    assert by_name(check(root))[CPU_GOVERNOR].status == NOT_POSSIBLE
    r = by_name(apply(root, tmp_path / "state"))
    assert r[CPU_GOVERNOR].status == NOT_POSSIBLE
    assert "not writable" in r[CPU_GOVERNOR].detail
    assert json.loads((tmp_path / "state" / STATE_FILENAME).read_text())["governors"] == {}


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits (covered by the directory trick)")
def test_governor_read_only_file_when_not_root(tmp_path: Path) -> None:
    root = make_root(tmp_path, governors=("powersave",))
    (root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").chmod(0o444)
    r = by_name(apply(root, tmp_path / "state"))
    assert r[CPU_GOVERNOR].status == NOT_POSSIBLE
    assert "need root" in r[CPU_GOVERNOR].detail


def test_governor_partly_writable_applies_where_writable(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    gov1 = root / "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor"
    gov1.unlink()
    gov1.mkdir()  # see test_governor_not_writable_is_not_possible
    r = by_name(apply(root, tmp_path / "state"))
    assert r[CPU_GOVERNOR].status == APPLIED
    assert "cpu1" in r[CPU_GOVERNOR].detail
    assert governor(root, 0) == "performance"
    r = by_name(revert(root, tmp_path / "state"))
    assert r[CPU_GOVERNOR].status == REVERTED
    assert governor(root, 0) == "powersave"


def test_dma_latency_hold(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    dev = root / "dev/cpu_dma_latency"
    hold = DmaLatencyHold(root)
    res = hold.acquire()
    assert res == TweakResult(CPU_DMA_LATENCY, APPLIED, res.detail)
    assert hold.held and hold.fd is not None
    fd = hold.fd
    assert dev.read_bytes() == struct.pack("i", 0)
    assert os.readlink(f"/proc/self/fd/{fd}") == str(dev)
    assert by_name(check(root))[CPU_DMA_LATENCY].status == ALREADY_SET
    assert hold.acquire().status == ALREADY_SET
    hold.release()
    assert not hold.held and hold.fd is None
    try:
        still_ours = os.readlink(f"/proc/self/fd/{fd}") == str(dev)
    except FileNotFoundError:
        still_ours = False
    assert not still_ours
    hold.release()  # idempotent


def test_dma_latency_hold_context_manager_and_apply(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    dev = root / "dev/cpu_dma_latency"
    with DmaLatencyHold(root) as hold:
        assert hold.held
        assert hold.result is not None and hold.result.status == APPLIED
        assert dev.read_bytes() == struct.pack("i", 0)
    assert not hold.held

    dev.write_bytes(struct.pack("<i", KERNEL_DEFAULT_LATENCY))
    hold = DmaLatencyHold(root)
    try:
        r = by_name(apply(root, tmp_path / "state", hold=hold))
        assert r[CPU_DMA_LATENCY].status == APPLIED
        assert hold.held
    finally:
        hold.release()


def test_dma_latency_hold_without_device(tmp_path: Path) -> None:
    hold = DmaLatencyHold(tmp_path)
    res = hold.acquire()
    assert res.status == NOT_POSSIBLE
    assert "cpu_dma_latency" in res.detail
    assert not hold.held
    assert not (tmp_path / "dev/cpu_dma_latency").exists()  # never created


def test_corrupt_state_file_is_not_touched(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / STATE_FILENAME).write_text("{not json")
    for results in (apply(root, state_dir), revert(root, state_dir)):
        r = by_name(results)
        assert r[SLEEP_TARGETS].status == r[CPU_GOVERNOR].status == NOT_POSSIBLE
        assert "corrupt" in r[SLEEP_TARGETS].detail
    assert governor(root, 0) == "powersave"
    assert not os.path.lexists(unit(root, "sleep.target"))
    assert (state_dir / STATE_FILENAME).read_text() == "{not json"


def test_state_dir_is_required(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        apply(tmp_path)
    with pytest.raises(TypeError):
        revert(tmp_path)


def test_check_real_root() -> None:
    results = check()
    assert [r.name for r in results] == NAMES
    assert all(r.status in {ALREADY_SET, NOT_SET, NOT_POSSIBLE} for r in results)
    assert all(r.detail for r in results)
