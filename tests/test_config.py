"""Config loading: every problem is one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import BASE_CONFIG

from pipeline.config import ConfigError, parse

GOOD = BASE_CONFIG.format(name="cfgtest", speed=1, count=0, max_restarts=3)


def _err(text: str, cpus: set[int] | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        parse(text, "x.toml", cpus or {0, 1})
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_good_config_parses_into_typed_structs() -> None:
    cfg = parse(GOOD, "x.toml", {0, 1})
    assert cfg.rings["ticks"].capacity == 65536 and cfg.stages["counter"].inputs == ["ticks"]
    assert cfg.supervisor.max_restarts == 3 and cfg.instruments[1].symbol == "ETH-USDT"


@pytest.mark.parametrize("old,new,expect", [
    ('name = "cfgtest"', 'name = "cfgtest"\ncolour = "red"', "x.toml: colour: unknown key"),
    ("capacity = 65536", "capacity = 1000", "x.toml: rings.ticks.capacity: must be a power of two >= 2, got 1000"),
    ("capacity = 65536", 'capacity = "big"', "x.toml: rings.ticks.capacity: expected `int`, got `str`"),
    ('type = "bbo"', 'type = "tick"', "x.toml: rings.ticks.type: unknown record type 'tick'"),
    ('kind = "count"', 'kind = "nope"', "x.toml: stages.counter.kind: unknown stage kind 'nope'"),
    ("seed = 11", "seed = 11\nsed = 3", "x.toml: stages.source.params.sed: unknown key"),
    ("seed = 11", 'seed = "eleven"', "x.toml: stages.source.params.seed: expected `int`, got `str`"),
    ('inputs = ["counts"]', 'inputs = ["cnts"]', "x.toml: stages.sink.inputs: no ring named 'cnts'"),
    ('kind = "check"\ninputs = ["counts"]', 'kind = "check"\ninputs = ["ticks"]',
     "x.toml: stages.sink.inputs: ring 'ticks' already has a consumer (counter): rings are SPSC"),
    ('outputs = ["counts"]', 'outputs = ["ticks"]',
     "x.toml: stages.counter.outputs: ring 'ticks' already has a producer (source)"),
    ('[stages.sink]\nkind = "check"\ninputs = ["counts"]', '[stages.sink]\nkind = "count"\ninputs = ["counts"]',
     "x.toml: stages.sink.inputs: ring 'counts' carries 'count' records, kind 'count' needs 'bbo'"),
    ("max_restarts = 3", "max_restarts = -1", "x.toml: supervisor.max_restarts: must be >= 0"),
    ("heartbeat_timeout_s = 3.0", "heartbeat_timeout_s = 0", "x.toml: supervisor.heartbeat_timeout_s: must be > 0"),
    ('symbol = "BTC-USDT"', "", "x.toml: instruments[0].symbol: missing required key"),
    ('[stages.counter]\nkind = "count"', '[stages.counter]\nkind = "count"\nwait = "sleep"',
     "x.toml: stages.counter.wait: invalid enum value 'sleep'"),
    ('name = "cfgtest"', 'name = "cfg/test"', "x.toml: name: use letters"),
])
def test_problems_name_the_key(old: str, new: str, expect: str) -> None:
    assert old in GOOD
    assert _err(GOOD.replace(old, new, 1)).startswith(expect)


def test_cpu_not_on_this_host() -> None:
    text = GOOD.replace('kind = "count"', 'kind = "count"\ncpus = [5]')
    assert _err(text, {0, 1}) == "x.toml: stages.counter.cpus: CPU 5 is not available on this host (available: 0,1)"


def test_ring_without_consumer_and_not_toml() -> None:
    text = GOOD + '\n[rings.spare]\ntype = "bbo"\n'
    assert _err(text) == "x.toml: rings.spare: no stage produces this ring"
    assert _err("name = [").startswith("x.toml: not valid TOML:")


def test_placement_and_default_wait_follow_the_core_count() -> None:
    from pipeline.supervisor import assign

    cfg = parse(GOOD, "x.toml", set(range(8)))
    # 2 cores: CPU 0 left to the OS and supervisor, every stage shares CPU 1, so none may spin
    assert assign(cfg, {0, 1}) == {n: ([1], "block") for n in ("source", "counter", "sink")}
    # 8 cores: a CPU of its own for each stage, so they spin
    assert assign(cfg, set(range(8))) == {"source": ([1], "spin"), "counter": ([2], "spin"), "sink": ([3], "spin")}
    # a configured wait wins; a configured CPU shared with another stage makes the other one block
    text = GOOD.replace('kind = "count"', 'kind = "count"\ncpus = [1]')
    text = text.replace('kind = "check"', 'kind = "check"\nwait = "yield"')
    placed = assign(parse(text, "x.toml", set(range(8))), set(range(8)))
    assert placed == {"source": ([1], "block"), "counter": ([1], "block"), "sink": ([2], "yield")}


def test_order_path_runs_realtime_downstream_above_upstream() -> None:
    from pipeline.supervisor import assign, order_path_priorities

    sim = (Path(__file__).resolve().parents[1] / "configs" / "sim.toml").read_text()
    cfg = parse(sim, "sim.toml", {0, 1})
    # 2 cores, all blocking: feed -> bars -> stats -> executor by depth; the sinks are off the path to an order
    assert order_path_priorities(cfg, assign(cfg, {0, 1})) == {"kucoin": 1, "bars": 2, "stats": 3, "executor": 4}
    # a core for each stage: they spin, and a spinning SCHED_FIFO loop would starve its core
    big = parse(sim, "sim.toml", set(range(16)))
    assert order_path_priorities(big, assign(big, set(range(16)))) == {}
    # one stage told to yield keeps normal scheduling; the others keep their depth
    text = sim.replace('kind = "bars"', 'kind = "bars"\nwait = "yield"')
    cfg = parse(text, "sim.toml", {0, 1})
    assert order_path_priorities(cfg, assign(cfg, {0, 1})) == {"kucoin": 1, "stats": 3, "executor": 4}
    # no order ring in the pipeline: nothing is on an order path
    cfg = parse(GOOD, "x.toml", {0, 1})
    assert order_path_priorities(cfg, assign(cfg, {0, 1})) == {}
    cfg = parse(sim.replace("[supervisor]", "[supervisor]\nrealtime = false"), "sim.toml", {0, 1})
    assert order_path_priorities(cfg, assign(cfg, {0, 1})) == {}
