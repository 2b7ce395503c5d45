"""The core rides out the field's failures, probed with real processes (issue 13, section 2).

Each test starts Mosquitto, agents and coordinators as separate processes and does to them
what happens in the field: kill -9 the broker mid-job, kill -9 the coordinator, start a second
coordinator on the same job, SIGTERM an agent that cannot reach its broker. Each case failed
before its fix; the outcome is read from what the processes wrote (``outcome.json``, the
retained job state), never from timings.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable

import pytest
from faults.procstack import JOB_ID, Stack

pytestmark = pytest.mark.slow


def outcome(stack: Stack, name: str) -> dict[str, object]:
    return json.loads((stack.tmp / name / "outcome.json").read_text())  # type: ignore[no-any-return]


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_a_broker_killed_mid_job_and_restarted_loses_no_round(
    stack_factory: Callable[[int], Stack],
) -> None:
    stack = stack_factory(3)
    stack.start_broker()
    for i in range(3):
        stack.agent(i)
    # Rounds of a few seconds (many local epochs), so the broker dies while one is open.
    coordinator = stack.coordinator("coord", stack.job(local_epochs=300), stack.tmp / "state")
    assert stack.watch is not None
    stack.watch.wait_for(lambda s: s.round >= 1, timeout=90)
    time.sleep(0.3)
    stack.kill_broker()
    time.sleep(5.0)
    stack.start_broker()
    assert wait_exit(coordinator, 180) == 2, stack.log("coord")  # max_rounds, target not reached
    result = outcome(stack, "coord")
    history = result["history"]
    assert isinstance(history, list)
    assert [r["round"] for r in history] == [1, 2, 3, 4]
    # Every agent's work of every round arrived: the round's clock paused during the outage and
    # the open instruction went out again once the agents were back.
    assert [r["results"] for r in history] == [3, 3, 3, 3], stack.log("coord")


def test_a_killed_coordinator_is_marked_lost_and_a_restart_takes_over(
    stack_factory: Callable[[int], Stack],
) -> None:
    stack = stack_factory(2)
    stack.start_broker()
    for i in range(2):
        stack.agent(i)
    job, state = stack.job(local_epochs=100), stack.tmp / "state"
    first = stack.coordinator("first", job, state)
    assert stack.watch is not None
    running = stack.watch.wait_for(lambda s: s.status == "running" and s.round >= 1, timeout=90)
    first.send_signal(signal.SIGKILL)
    first.wait(5)
    lost = stack.watch.wait_for(lambda s: s.status == "lost", timeout=10)  # the Last Will
    assert lost.owner == running.owner  # (its numbers are as of the connection it was set on)
    assert running.epoch == 1

    second = stack.coordinator("second", job, state)
    assert wait_exit(second, 120) == 2, stack.log("second")
    final = stack.watch.latest()
    assert final is not None
    assert final.status == "max_rounds"
    assert final.epoch == 2  # took the job over at a higher epoch
    assert final.owner != running.owner
    assert outcome(stack, "second")["rounds"] == 4  # resumed, not restarted


def test_a_second_coordinator_on_a_running_job_is_refused(
    stack_factory: Callable[[int], Stack],
) -> None:
    stack = stack_factory(2)
    stack.start_broker()
    for i in range(2):
        stack.agent(i)
    # A job that runs until stopped, so the owner is still running whatever the start-up times.
    job, state = stack.job(max_rounds=1_000_000), stack.tmp / "state"
    owner = stack.coordinator("owner", job, state)
    assert stack.watch is not None
    stack.watch.wait_for(lambda s: s.status == "running", timeout=90)

    elsewhere = stack.coordinator("elsewhere", job, stack.tmp / "other-state")
    same_dir = stack.coordinator("same-dir", job, state)
    assert wait_exit(elsewhere, 60) == 1
    assert wait_exit(same_dir, 60) == 1
    assert "running under another coordinator" in stack.log("elsewhere")
    assert "in use by another coordinator" in stack.log("same-dir")

    latest = stack.watch.latest()
    assert latest is not None
    stack.watch.wait_for(lambda s: s.round > latest.round + 2, timeout=60)  # never noticed
    assert owner.poll() is None
    assert {s.owner for s in stack.watch.states if s.status == "running"} == {latest.owner}
    owner.send_signal(signal.SIGTERM)
    assert wait_exit(owner, 30) == 0
    assert not (stack.tmp / "elsewhere" / "outcome.json").exists()


@pytest.mark.parametrize("daemon", ["agent", "agents", "coordinator"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_daemon_that_cannot_reach_its_broker(
    stack_factory: Callable[[int], Stack], daemon: str, sig: signal.Signals
) -> None:
    stack = stack_factory(4)  # small-4's agents
    # Nothing listens on the stack's port: each daemon sits in its reconnect loop.
    if daemon == "agent":
        proc = stack.agent(0)
    elif daemon == "agents":
        shards = str(stack.layout.shards[0].parent)
        proc = stack.spawn(
            "agents", "agents", "--fleet", "small-4", "--shards", shards, "--broker", stack.url
        )
    else:
        proc = stack.coordinator("coordinator", stack.job(), stack.tmp / "state")
    time.sleep(4.0)
    assert proc.poll() is None, stack.log(daemon)
    proc.send_signal(sig)
    assert wait_exit(proc, 10) == 0, stack.log(daemon)


def test_the_demo_monitor_rides_out_a_broker_restart(
    stack_factory: Callable[[int], Stack], capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from hyperfleet.demo import _follow
    from protocol import JobState, encode, new_envelope

    stack = stack_factory(1)
    stack.start_broker()

    def publish(rnd: int) -> None:
        state = JobState(
            status="running",
            round=rnd,
            accuracy=0.5,
            best_accuracy=0.5,
            target_accuracy=0.9,
            elapsed_s=1.0,
            time_budget_s=60.0,
        )
        env = new_envelope(state, sender="coordinator", job_id=JOB_ID, round=rnd)
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{rnd}")
        c.connect("127.0.0.1", stack.port)
        c.loop_start()
        c.publish(stack.topics.job_state(JOB_ID), encode(env), qos=1, retain=True).wait_for_publish(
            5
        )
        c.loop_stop()
        c.disconnect()

    async def go() -> tuple[list[int], bool]:
        states: list[tuple[float, JobState]] = []
        follower = asyncio.create_task(_follow(stack.url, stack.topics, JOB_ID, states, 0.0))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(publish, 1)
        await asyncio.sleep(0.5)
        stack.kill_broker()  # a blip: before the fix the monitor died here and took the demo down
        await asyncio.sleep(1.0)
        stack.start_broker()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(publish, 2)
        for _ in range(100):
            if any(s.round == 2 for _, s in states):
                break
            await asyncio.sleep(0.1)
        alive = not follower.done()
        follower.cancel()
        return [s.round for _, s in states], alive

    rounds, alive = asyncio.run(go())
    assert alive
    assert 1 in rounds
    assert 2 in rounds
    out = capsys.readouterr().out
    assert out.count("round   1") == 1  # each round printed once, the replay after reconnect too
