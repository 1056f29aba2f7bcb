"""Config loading: every problem is one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import BASE_CONFIG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    ("tick = 0.1", "tick = nan", "x.toml: instruments[0].tick: must be a finite number, got nan"),
    ("tick = 0.01", "tick = 0", "x.toml: instruments[1].tick: expected `float` > 0.0"),
    ("rate_hz = 2500", "rate_hz = inf", "x.toml: stages.source.params.rate_hz: must be a finite number, got inf"),
    ("rate_hz = 2500", "rate_hz = -1", "x.toml: stages.source.params.rate_hz: expected `float` > 0.0"),
    ("restart_window_s = 60", "restart_window_s = [1.0, -nan]",
     "x.toml: supervisor.restart_window_s[1]: must be a finite number, got nan"),
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


# -- hypothesis: any edit of a shipped config loads or fails with one line ---------------------------------------

SHIPPED = {p.name: p.read_text() for p in sorted((Path(__file__).parents[1] / "configs").glob("*.toml"))}
VALUE_TEXT = st.one_of(
    st.integers(-2**70, 2**70).map(str), st.floats(allow_nan=False).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "-0.0", "0", "1e308", "true", "false", "[]", "{}", '""', "[1, \"a\"]",
                     "{ a = 1 }", '"\\u0000"', "[[]]", "1979-05-27", "[-1]", "[0, 0]", "[99999]"]),
    st.text(max_size=12).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SHIPPED)), st.data())
def test_fuzz_config_edits_load_or_fail_with_one_line(name: str, data) -> None:
    """Replace the value of a key, drop a line or add an unknown key, anywhere in a shipped config: ``parse``
    returns a config or raises ConfigError (one line); never another exception."""
    lines = SHIPPED[name].splitlines()
    keyed = [i for i, line in enumerate(lines) if "=" in line and not line.lstrip().startswith("#")]
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.sampled_from(keyed))
        edit = data.draw(st.sampled_from(["value", "drop", "unknown"]))
        key = lines[i].split("=", 1)[0]
        if edit == "value":
            lines[i] = f"{key}= {data.draw(VALUE_TEXT)}"
        elif edit == "drop":
            lines[i] = ""
        else:
            lines[i] += f"\n{data.draw(st.from_regex(r'[a-z_]{1,8}', fullmatch=True))}x = 1"
    try:
        parse("\n".join(lines), "x.toml", {0, 1})
    except ConfigError as e:
        assert "\n" not in str(e) and str(e).startswith("x.toml: "), str(e)
