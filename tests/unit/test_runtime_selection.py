"""A model only Keras can train (a CNN) goes only to agents that train with Keras: the agent says
what it trains with in its hello, the registry offers the coordinator only those agents."""

from __future__ import annotations

import pytest

from agent.app import announced_runtimes, choose_trainer
from agent.device_class import load_device_class
from agent.probe import Capabilities
from cloud.pipelines import load_digits
from coordinator.job import ModelSpec, required_runtime
from coordinator.registry import Registry
from protocol import Heartbeat, Hello, Status

CAPS = Capabilities(arch="x86_64", cores=4, memory_bytes=1 << 30, gpus=(),
                    runtimes=("numpy", "keras", "litert"))  # fmt: skip


def test_a_cnn_needs_keras_and_a_dense_network_needs_nothing_special() -> None:
    assert required_runtime(ModelSpec(conv=[8, 16])) == "keras"
    assert required_runtime(ModelSpec(hidden=[64, 32])) is None


@pytest.mark.parametrize(
    ("device", "runtime", "announced"),
    [
        ("raspberry-pi-5", "auto", ("numpy", "litert")),  # trains with NumPy: no Keras to offer
        ("x86-cpu", "numpy", ("numpy", "litert")),  # Keras installed but not the trainer
        ("x86-cpu", "auto", ("numpy", "keras", "litert")),
    ],
)
def test_the_hello_announces_keras_only_when_the_agent_trains_with_it(
    device: str, runtime: str, announced: tuple[str, ...]
) -> None:
    shard = load_digits()
    trainer = choose_trainer(runtime, load_device_class(device), CAPS, shard)  # type: ignore[arg-type]
    assert announced_runtimes(CAPS, trainer).runtimes == announced


def hello(runtimes: tuple[str, ...], n: int = 10) -> Hello:
    return Hello(device_class="x", arch="x86_64", cores=1, memory_bytes=1, runtimes=runtimes,
                 num_examples=n)  # fmt: skip


def test_the_registry_offers_only_agents_that_announced_the_runtime() -> None:
    reg = Registry()
    for agent_id, runtimes in (("k", ("numpy", "keras")), ("n", ("numpy",)), ("old", ())):
        reg.on_hello(agent_id, hello(runtimes), 0.0)
        reg.on_status(agent_id, Status(state="online"), 0.0)
        reg.on_heartbeat(agent_id, Heartbeat(seq=1, busy=False, load=0.0, memory_used_bytes=1), 0.0)
    assert [a.agent_id for a in reg.available()] == ["k", "n", "old"]
    assert [a.agent_id for a in reg.available(requires="keras")] == ["k"]
