"""Device classes and fleets from ``firmware_configs/``."""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from pathlib import Path

import pydantic
import pytest

from agent.device_class import (
    DEFAULT_CONFIG_DIR,
    DeviceClass,
    FleetEntry,
    FleetSpec,
    list_device_classes,
    list_fleets,
    load_device_class,
    load_fleet,
)
from agent.errors import AgentError, ConfigError

SHIPPED_CLASSES = ["jetson-orin-nano", "raspberry-pi-5", "x86-cpu", "x86-gpu-server"]
AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")  # protocol's agent-id rule

VALID_CLASS = """\
name = "{name}"
description = "a test device"
arch = "x86_64"
runtime = "numpy"
threads = 2
memory_limit_mb = 512

[emulation]
train_rate = 10.0
uplink_mbps = 10.0
downlink_mbps = 10.0
rtt_ms = 1.0
availability = 0.5
failure_rate = 0.0
"""


def write_class(directory: Path, name: str = "test-dev", text: str | None = None) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(VALID_CLASS.format(name=name) if text is None else text)
    return path


def write_fleet(directory: Path, name: str, agents: list[tuple[str, int]]) -> Path:
    (directory / "fleets").mkdir(exist_ok=True)
    tables = "".join(f'\n[[agents]]\ndevice_class = "{c}"\ncount = {n}\n' for c, n in agents)
    path = directory / "fleets" / f"{name}.toml"
    path.write_text(f'name = "{name}"\n{tables}')
    return path


# --- shipped files --------------------------------------------------------------------------------


def test_shipped_classes_are_listed() -> None:
    assert list_device_classes() == SHIPPED_CLASSES
    assert list_fleets() == ["mixed-100", "mixed-50", "small-4"]


@pytest.mark.parametrize("name", SHIPPED_CLASSES)
def test_every_shipped_class_loads_by_name_and_by_path(name: str) -> None:
    by_name = load_device_class(name)
    by_path = load_device_class(str(DEFAULT_CONFIG_DIR / f"{name}.toml"))
    assert by_name == by_path
    assert by_name.name == name
    assert by_name.description
    assert by_name.threads >= 1


@pytest.mark.parametrize(
    ("name", "arch", "runtime", "max_steps", "emulation"),
    [
        ("x86-gpu-server", "x86_64", "keras", 1000, (400, 1000, 1000, 5, 0.99, 0.01)),
        ("x86-cpu", "x86_64", "keras", 500, (40, 100, 100, 20, 0.95, 0.02)),
        ("jetson-orin-nano", "aarch64", "keras", 300, (25, 20, 50, 40, 0.90, 0.05)),
        ("raspberry-pi-5", "aarch64", "litert", 100, (3, 5, 20, 80, 0.80, 0.10)),
    ],
)
def test_shipped_class_values(
    name: str,
    arch: str,
    runtime: str,
    max_steps: int,
    emulation: tuple[float, float, float, float, float, float],
) -> None:
    dc = load_device_class(name)
    e = dc.emulation
    assert (dc.arch, dc.runtime, dc.max_local_steps) == (arch, runtime, max_steps)
    assert (
        e.train_rate,
        e.uplink_mbps,
        e.downlink_mbps,
        e.rtt_ms,
        e.availability,
        e.failure_rate,
    ) == pytest.approx(emulation)


def test_shipped_classes_are_ordered_by_capability() -> None:
    classes = {name: load_device_class(name) for name in SHIPPED_CLASSES}
    by_speed = sorted(SHIPPED_CLASSES, key=lambda n: classes[n].emulation.train_rate)
    by_session = sorted(SHIPPED_CLASSES, key=lambda n: classes[n].emulation.mean_session_s)
    assert by_speed == ["raspberry-pi-5", "jetson-orin-nano", "x86-cpu", "x86-gpu-server"]
    assert by_session == by_speed


def test_device_class_is_frozen() -> None:
    dc = load_device_class("x86-cpu")
    with pytest.raises(pydantic.ValidationError):
        dc.threads = 99


# --- device class errors --------------------------------------------------------------------------


def test_defaults_apply(tmp_path: Path) -> None:
    dc = load_device_class("test-dev", search_dir=write_class(tmp_path).parent)
    assert dc.max_local_steps == 500
    assert dc.emulation.mean_session_s == 600


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("gpu_count = 1", "gpu_count"),  # top level, before [emulation]
        ("jitter_ms = 3.0", "emulation.jitter_ms"),  # inside [emulation]
    ],
)
def test_unknown_key_is_rejected_naming_file_and_key(tmp_path: Path, line: str, key: str) -> None:
    head, emulation = VALID_CLASS.format(name="test-dev").split("[emulation]")
    if key.startswith("emulation."):
        text = f"{head}[emulation]{emulation}{line}\n"
    else:
        text = f"{head}{line}\n[emulation]{emulation}"
    path = write_class(tmp_path, text=text)
    with pytest.raises(ConfigError) as info:
        load_device_class(str(path))
    message = str(info.value)
    assert str(path) in message
    assert f"unknown key '{key}'" in message
    assert isinstance(info.value.__cause__, pydantic.ValidationError)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("train_rate = 10.0", "train_rate = 0.0", "emulation.train_rate"),
        ("uplink_mbps = 10.0", "uplink_mbps = -1.0", "emulation.uplink_mbps"),
        ("downlink_mbps = 10.0", "downlink_mbps = 0", "emulation.downlink_mbps"),
        ("rtt_ms = 1.0", "rtt_ms = -0.1", "emulation.rtt_ms"),
        ("availability = 0.5", "availability = 0.0", "emulation.availability"),
        ("availability = 0.5", "availability = 1.01", "emulation.availability"),
        ("failure_rate = 0.0", "failure_rate = 1.0", "emulation.failure_rate"),
        ("failure_rate = 0.0", "failure_rate = -0.1", "emulation.failure_rate"),
        ("threads = 2", "threads = 0", "threads"),
        ("memory_limit_mb = 512", "memory_limit_mb = 0", "memory_limit_mb"),
        ('arch = "x86_64"', 'arch = "riscv64"', "arch"),
        ('runtime = "numpy"', 'runtime = "onnx"', "runtime"),
        ("threads = 2", 'threads = "two"', "threads"),
    ],
)
def test_out_of_range_values_are_rejected(tmp_path: Path, old: str, new: str, key: str) -> None:
    text = VALID_CLASS.format(name="test-dev")
    assert old in text
    path = write_class(tmp_path, text=text.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_device_class(str(path))
    assert str(path) in str(info.value)
    assert f"key '{key}'" in str(info.value)


def test_edge_values_are_accepted(tmp_path: Path) -> None:
    text = (
        VALID_CLASS.format(name="test-dev")
        .replace("availability = 0.5", "availability = 1.0")
        .replace("rtt_ms = 1.0", "rtt_ms = 0.0")
    )
    dc = load_device_class(str(write_class(tmp_path, text=text)))
    assert dc.emulation.availability == 1.0
    assert dc.emulation.rtt_ms == 0.0


def test_missing_key_is_named(tmp_path: Path) -> None:
    text = VALID_CLASS.format(name="test-dev").replace("threads = 2\n", "")
    with pytest.raises(ConfigError, match="missing key 'threads'"):
        load_device_class(str(write_class(tmp_path, text=text)))


def test_bad_name_pattern_is_rejected(tmp_path: Path) -> None:
    path = write_class(tmp_path, name="Bad_Name")
    with pytest.raises(ConfigError, match="key 'name'"):
        load_device_class(str(path))


def test_name_must_match_file_name(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text(VALID_CLASS.format(name="test-dev"))
    with pytest.raises(ConfigError, match=r"'test-dev'.*'other\.toml'"):
        load_device_class(str(path))


def test_invalid_toml_is_config_error(tmp_path: Path) -> None:
    path = write_class(tmp_path, text='name = "test-dev"\nthreads = = 2\n')
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_device_class(str(path))
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, tomllib.TOMLDecodeError)


def test_unknown_name_lists_known_classes() -> None:
    with pytest.raises(ConfigError) as info:
        load_device_class("raspberry-pi-4")
    message = str(info.value)
    assert "'raspberry-pi-4'" in message
    for name in SHIPPED_CLASSES:
        assert name in message


def test_unknown_name_in_empty_dir(tmp_path: Path) -> None:
    assert list_device_classes(tmp_path) == []
    with pytest.raises(ConfigError, match=r"known: \(none\)"):
        load_device_class("x86-cpu", search_dir=tmp_path)


def test_missing_path_is_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_device_class(str(missing))
    assert str(missing) in str(info.value)


def test_config_error_is_agent_error_and_value_error() -> None:
    assert issubclass(ConfigError, AgentError)
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ValueError, match="unknown device class"):
        load_device_class("no-such-device")


def test_search_dir_is_used_for_bare_names(tmp_path: Path) -> None:
    write_class(tmp_path, name="lab-box")
    assert list_device_classes(tmp_path) == ["lab-box"]
    assert load_device_class("lab-box", search_dir=tmp_path).name == "lab-box"


# --- fleets ---------------------------------------------------------------------------------------


def test_mixed_50_expands_to_50_unique_ids() -> None:
    fleet = load_fleet("mixed-50")
    agents = fleet.expand()
    ids = [agent_id for agent_id, _ in agents]
    assert fleet.seed == 0
    assert fleet.total == len(agents) == 50
    assert len(set(ids)) == 50
    assert Counter(cls for _, cls in agents) == {
        "x86-gpu-server": 5,
        "x86-cpu": 15,
        "jetson-orin-nano": 10,
        "raspberry-pi-5": 20,
    }
    assert agents[0] == ("x86-gpu-server-00", "x86-gpu-server")
    assert ("raspberry-pi-5-19", "raspberry-pi-5") in agents
    assert all(agent_id.startswith(f"{cls}-") for agent_id, cls in agents)
    assert all(AGENT_ID.match(agent_id) for agent_id in ids)


def test_expand_is_deterministic() -> None:
    by_name = load_fleet("mixed-50")
    by_path = load_fleet(DEFAULT_CONFIG_DIR / "fleets" / "mixed-50.toml")
    assert by_name.expand() == by_path.expand() == load_fleet("mixed-50").expand()


def test_small_4_has_one_of_each_class() -> None:
    agents = load_fleet("small-4").expand()
    assert sorted(cls for _, cls in agents) == SHIPPED_CLASSES
    assert {agent_id for agent_id, _ in agents} == {f"{c}-00" for c in SHIPPED_CLASSES}


def test_expand_numbers_repeated_classes_on_and_pads_wide_counts() -> None:
    fleet = FleetSpec(
        name="t",
        entries=(
            FleetEntry(device_class="a", count=2),
            FleetEntry(device_class="b", count=1),
            FleetEntry(device_class="a", count=99),
        ),
    )
    agents = fleet.expand()
    ids = [agent_id for agent_id, _ in agents]
    assert ids[:3] == ["a-000", "a-001", "b-00"]
    assert ids[-1] == "a-100"
    assert len(set(ids)) == len(ids) == 102


def test_fleet_with_unknown_class_is_rejected(tmp_path: Path) -> None:
    write_class(tmp_path, name="lab-box")
    path = write_fleet(tmp_path, "f", [("lab-box", 2), ("quantum-box", 1)])
    with pytest.raises(ConfigError) as info:
        load_fleet(str(path), search_dir=tmp_path)
    message = str(info.value)
    assert str(path) in message
    assert "agents[1].device_class" in message
    assert "'quantum-box'" in message
    assert "lab-box" in message  # the known classes are listed


def test_fleet_with_broken_class_is_rejected(tmp_path: Path) -> None:
    write_class(tmp_path, name="lab-box", text=VALID_CLASS.format(name="lab-box") + "x = 1\n")
    path = write_fleet(tmp_path, "f", [("lab-box", 1)])
    with pytest.raises(ConfigError, match=re.escape("unknown key 'emulation.x'")):
        load_fleet(path, search_dir=tmp_path)


def test_fleet_loads_from_search_dir(tmp_path: Path) -> None:
    write_class(tmp_path, name="lab-box")
    write_fleet(tmp_path, "lab", [("lab-box", 3)])
    assert list_fleets(tmp_path) == ["lab"]
    fleet = load_fleet("lab", search_dir=tmp_path)
    assert fleet.expand() == [(f"lab-box-0{i}", "lab-box") for i in range(3)]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            'name = "f"\nowner = "me"\n[[agents]]\ndevice_class = "x86-cpu"\ncount = 1\n',
            "unknown key 'owner'",
        ),
        ('name = "f"\n[[agents]]\ndevice_class = "x86-cpu"\ncount = 0\n', "key 'agents[0].count'"),
        (
            'name = "f"\n[[agents]]\ndevice_class = "x86-cpu"\nn = 1\ncount = 1\n',
            "unknown key 'agents[0].n'",
        ),
        ('name = "f"\nagents = []\n', "key 'agents'"),
        ('name = "f"\n', "missing key 'agents'"),
    ],
)
def test_invalid_fleet_is_rejected(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "f.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_fleet(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_unknown_fleet_name_lists_known_fleets() -> None:
    with pytest.raises(ConfigError, match=r"unknown fleet 'mixed-500'.*mixed-50, small-4"):
        load_fleet("mixed-500")


def test_device_class_model_is_usable_directly() -> None:
    dc = DeviceClass.model_validate(
        tomllib.loads(VALID_CLASS.format(name="direct")),
    )
    assert dc.name == "direct"
    assert dc.emulation.train_rate == 10.0


def test_the_memory_limit_caps_what_the_hello_announces_and_the_step_cap_is_applied() -> None:
    import numpy as np

    from agent import create_agent
    from agent.daemon import AgentSettings, cap_steps
    from protocol import Shard, TrainConfig, parse_broker_url

    pi = load_device_class("raspberry-pi-5")
    shard = Shard(x=np.zeros((10, 4), dtype=np.float32), y=np.zeros(10, dtype=np.int64))
    settings = AgentSettings(
        agent_id="pi-1", broker=parse_broker_url("mqtt://127.0.0.1:1"), device_class=pi.name
    )
    agent = create_agent(settings, device=pi, shard=shard, runtime="numpy")
    assert agent.capabilities.memory_bytes <= pi.memory_limit_mb * 1024 * 1024

    many = TrainConfig(epochs=100, batch_size=2)  # 500 steps over 10 examples
    assert cap_steps(many, 10, pi.max_local_steps).local_steps == 100
    few = TrainConfig(local_steps=7)
    assert cap_steps(few, 10, pi.max_local_steps) is few
    assert cap_steps(many, 10, None) is many


# --- speed variance, background load and the emulated model size -----------------------------------


def test_speed_knobs_default_and_map_to_the_rate_process(tmp_path: Path) -> None:
    dc = load_device_class("test-dev", search_dir=write_class(tmp_path).parent)
    e = dc.emulation
    assert (e.rate_sigma, e.load_factor, e.load_on_mean_s, e.load_off_mean_s) == (
        0.2,
        2.0,
        120.0,
        600.0,
    )
    speed = e.speed()
    assert (speed.rate, speed.sigma, speed.load_factor) == (10.0, 0.2, 2.0)
    assert speed.loaded_share == pytest.approx(120 / 720)


def test_a_class_sets_its_own_speed_knobs_and_bad_ones_are_named(tmp_path: Path) -> None:
    text = VALID_CLASS.format(name="test-dev") + "rate_sigma = 0.5\nload_factor = 1.0\n"
    dc = load_device_class(str(write_class(tmp_path, text=text)))
    assert dc.emulation.speed().sigma == 0.5
    assert dc.emulation.speed().loaded_share == 0.0
    bad = VALID_CLASS.format(name="test-dev") + "load_factor = 0.5\n"
    with pytest.raises(ConfigError, match=re.escape("'emulation.load_factor'")):
        load_device_class(str(write_class(tmp_path, text=bad)))


def test_a_fleets_emulation_table_overrides_every_class_and_sets_the_model_size(
    tmp_path: Path,
) -> None:
    write_class(tmp_path, name="lab-box")
    path = write_fleet(tmp_path, "lab", [("lab-box", 2)])
    path.write_text(
        path.read_text()
        + "\n[emulation]\nmodel_wire_bytes = 14_000_000\nrate_sigma = 0.4\nload_factor = 3.0\n"
    )
    fleet = load_fleet("lab", search_dir=tmp_path)
    assert fleet.emulation.model_wire_bytes == 14_000_000
    spec = fleet.emulation.apply(load_device_class("lab-box", search_dir=tmp_path).emulation)
    assert (spec.rate_sigma, spec.load_factor) == (0.4, 3.0)
    assert spec.load_on_mean_s == 120.0  # not set by the fleet: the class's own
    assert spec.train_rate == 10.0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("model_wire_bytes = 0", "'emulation.model_wire_bytes'"),
        ("rate_sigma = -1", "'emulation.rate_sigma'"),
        ("jitter = 1", "unknown key 'emulation.jitter'"),
    ],
)
def test_a_bad_fleet_emulation_table_is_named(tmp_path: Path, line: str, message: str) -> None:
    write_class(tmp_path, name="lab-box")
    path = write_fleet(tmp_path, "lab", [("lab-box", 1)])
    path.write_text(path.read_text() + f"\n[emulation]\n{line}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_fleet("lab", search_dir=tmp_path)


def test_mixed_50_emulates_a_mobilenet_class_update_and_small_4_the_real_size() -> None:
    assert load_fleet("mixed-50").emulation.model_wire_bytes == 14_000_000
    assert load_fleet("small-4").emulation.model_wire_bytes is None


@pytest.mark.parametrize("key", ["train_rate", "uplink_mbps", "rtt_ms"])
def test_an_infinite_emulation_figure_is_refused_at_load(tmp_path: Path, key: str) -> None:
    """Issue 17: ``train_rate = inf`` passed ``> 0``; the hello announcing it was then dropped
    by every receiver as ``non_finite``, and the agent never joined."""
    text = re.sub(rf"^{key} = .*$", f"{key} = inf", VALID_CLASS.format(name="inf-dev"), flags=re.M)
    with pytest.raises(ConfigError, match=f"emulation.{key}': Input should be a finite number"):
        load_device_class(write_class(tmp_path, "inf-dev", text))
