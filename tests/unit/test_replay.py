"""Replay protection survives a coordinator restart: recent message ids and drop counters are
saved with the checkpoint and restored (issue 13: they used to reset on every restart)."""

from __future__ import annotations

from pathlib import Path

from coordinator.checkpoint import CheckpointStore
from coordinator.mqtt_fleet import MqttFleet
from protocol import (
    Envelope,
    Failure,
    Hello,
    Topics,
    encode,
    parse_broker_url,
)

TOPICS = Topics("hf/v1")
HELLO = Hello(device_class="x86-cpu", arch="x86_64", cores=1, memory_bytes=1, num_examples=5)


def fleet() -> MqttFleet:
    return MqttFleet(broker=parse_broker_url("mqtt://127.0.0.1:1"), topics=TOPICS, job_id="j")


def reply(msg_id: str) -> bytes:
    body = Failure(code="x", reason="y")
    env = Envelope(body=body, msg_id=msg_id, sender="a1", job_id="j", round=3, ts=1.0)
    return encode(env)


def test_a_reply_seen_before_a_restart_is_still_a_duplicate_after_it(tmp_path: Path) -> None:
    before = fleet()
    before.registry.on_hello("a1", HELLO, 0.0)
    before.dispatch(TOPICS.results("a1"), reply("m-1"))  # no round open: admitted, then stale
    before.dispatch(TOPICS.results("a1"), b"garbage")
    assert before.dropped["stale_round"] == 1
    store = CheckpointStore(tmp_path)
    (tmp_path / "j").mkdir()
    store.save_replay_state("j", before.replay_state())

    after = fleet()
    after.restore_replay_state(store.load_replay_state("j"))
    after.registry.on_hello("a1", HELLO, 0.0)
    after.dispatch(TOPICS.results("a1"), reply("m-1"))  # the same frame, replayed

    assert after.dropped["duplicate"] == 1
    assert after.dropped["malformed"] == 1  # the counters carried over
    assert after.dropped["stale_round"] == 1


def test_unreadable_or_hostile_replay_state_is_ignored(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "replay.json").write_text("{not json")
    assert store.load_replay_state("j") == {}
    assert store.load_replay_state("never-ran") == {}

    f = fleet()
    f.restore_replay_state({"seen": [1, 2], "dropped": {"x": -5, "y": "many", "z": 2}})
    assert dict(f.dropped) == {"z": 2}
