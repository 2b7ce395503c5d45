"""The link between one process and the broker fails while the rest runs on (issue 17, part 5).

A :class:`~faults.netproxy.Proxy` sits between one agent, or the coordinator, and a real
Mosquitto; the test delays, partitions or cuts that link mid-job. The outcome is read from
what the coordinator wrote (``outcome.json``: every round with the results it merged), never
from timings.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from faults.netproxy import Proxy
from faults.procstack import Stack

pytestmark = pytest.mark.slow


@pytest.fixture
def proxies() -> Iterator[Callable[[int], Proxy]]:
    made: list[Proxy] = []

    def make(port: int) -> Proxy:
        proxy = Proxy(port)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


def history(stack: Stack, name: str) -> list[dict[str, object]]:
    doc = json.loads((stack.tmp / name / "outcome.json").read_text())
    rounds = doc["history"]
    assert isinstance(rounds, list)
    return rounds


def finish(stack: Stack, proc: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    try:
        status = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(stack.log(name)) from None
    assert status == 2, stack.log(name)  # max_rounds: the job ran to its end


def test_an_agent_partitioned_from_the_broker_costs_only_its_own_rounds(
    stack_factory: Callable[[int], Stack], proxies: Callable[[int], Proxy]
) -> None:
    stack = stack_factory(3)
    stack.start_broker()
    link = proxies(stack.port)
    stack.agent(0, url=link.url)
    for i in (1, 2):
        stack.agent(i)
    # Rounds of about a second; a round waits at most 4 s for a silent agent.
    job = stack.job(max_rounds=14, round_timeout_s=4)
    coordinator = stack.coordinator("coord", job, stack.tmp / "state")
    assert stack.watch is not None
    stack.watch.wait_for(lambda s: s.round >= 2, timeout=90)
    link.partition()  # shorter than the 30 s keepalive: nobody is told, bytes are held
    time.sleep(12.0)
    link.heal()
    finish(stack, coordinator, "coord", 240)
    rounds = history(stack, "coord")
    assert [r["round"] for r in rounds] == list(range(1, 15))
    results = [int(str(r["results"])) for r in rounds]
    assert 2 in results, results  # the partition cost agent-0's contribution in its rounds ...
    assert results[-3:] == [3, 3, 3], results  # ... and agent-0 is back once the link heals
    assert min(results) >= 2, results  # never the others'
    procs = stack.procs
    assert procs["agent-0"].poll() is None, stack.log("agent-0")  # the held bytes broke nothing


def test_the_coordinators_link_cut_mid_round_loses_no_round(
    stack_factory: Callable[[int], Stack], proxies: Callable[[int], Proxy]
) -> None:
    stack = stack_factory(3)
    stack.start_broker()
    link = proxies(stack.port)
    for i in range(3):
        stack.agent(i)
    # Rounds of a few seconds (many local epochs), so the cuts come while one is open.
    job = stack.job(local_epochs=300)
    coordinator = stack.coordinator("coord", job, stack.tmp / "state", url=link.url)
    assert stack.watch is not None
    stack.watch.wait_for(lambda s: s.round >= 1, timeout=90)
    time.sleep(0.3)
    link.cut(refuse_s=3.0)  # a reset, and the broker unreachable for 3 s
    stack.watch.wait_for(lambda s: s.round >= 3, timeout=90)
    time.sleep(0.3)
    link.cut()
    finish(stack, coordinator, "coord", 180)
    assert link.connections >= 3, stack.log("coord")  # it reconnected after each cut
    rounds = history(stack, "coord")
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    # Every agent's work of every round arrived: the instruction went out again on reconnect.
    assert [r["results"] for r in rounds] == [3, 3, 3, 3], stack.log("coord")


def test_latency_on_the_coordinators_and_an_agents_link_loses_nothing(
    stack_factory: Callable[[int], Stack], proxies: Callable[[int], Proxy]
) -> None:
    stack = stack_factory(3)
    stack.start_broker()
    agent_link, coordinator_link = proxies(stack.port), proxies(stack.port)
    agent_link.delay(0.3)  # 300 ms each way: a satellite or a congested cellular link
    coordinator_link.delay(0.15)
    stack.agent(0, url=agent_link.url)
    for i in (1, 2):
        stack.agent(i)
    job = stack.job()
    coordinator = stack.coordinator("coord", job, stack.tmp / "state", url=coordinator_link.url)
    finish(stack, coordinator, "coord", 180)
    rounds = history(stack, "coord")
    assert [r["results"] for r in rounds] == [3, 3, 3, 3], stack.log("coord")
