"""The inbound gate: decode → sender check → admission → handler, every refusal counted by code."""

from __future__ import annotations

import pytest

from link import AdmissionScope, InboundGate
from protocol import (
    Envelope,
    Heartbeat,
    MalformedMessage,
    StaleRound,
    Status,
    Topics,
    encode,
    new_envelope,
)

TOPICS = Topics("t/hf/v1")


def frame(sender: str = "a1", *, job_id: str = "", round: int = 0) -> bytes:
    beat = Heartbeat(seq=1, busy=False, load=0.0, memory_used_bytes=0)
    return encode(new_envelope(beat, sender=sender, job_id=job_id, round=round))


def sender_of(topic: str) -> str:
    agent_id, _ = TOPICS.parse_agent_topic(topic)
    return agent_id


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Envelope, int]] = []

    def __call__(self, topic: str, env: Envelope, nbytes: int) -> None:
        self.seen.append((topic, env, nbytes))


def test_a_good_frame_reaches_the_handler_with_its_size() -> None:
    got = Recorder()
    gate = InboundGate(name="t", handler=got, sender_of=sender_of)
    payload = frame()
    gate(TOPICS.heartbeat("a1"), payload)
    assert [(t, e.sender, n) for t, e, n in got.seen] == [
        (TOPICS.heartbeat("a1"), "a1", len(payload))
    ]
    assert not gate.dropped


@pytest.mark.parametrize(
    ("topic", "payload", "code"),
    [
        (TOPICS.heartbeat("a1"), b"\x00garbage", "malformed"),
        (TOPICS.heartbeat("a1"), None, "malformed"),
        (TOPICS.heartbeat("a1"), 42, "malformed"),
        (TOPICS.heartbeat("a1"), frame(sender="a2"), "spoofed"),
        ("not/our/topic", frame(), "bad_topic"),
    ],
)
def test_refusals_are_counted_by_code_and_never_raised(
    topic: str, payload: object, code: str
) -> None:
    got = Recorder()
    gate = InboundGate(name="t", handler=got, sender_of=sender_of)
    gate(topic, payload)
    assert got.seen == []
    assert gate.dropped == {code: 1}


def test_a_duplicate_message_id_is_dropped() -> None:
    got = Recorder()
    gate = InboundGate(name="t", handler=got)
    payload = frame()
    gate("any", payload)
    gate("any", payload)
    assert len(got.seen) == 1
    assert gate.dropped == {"duplicate": 1}


def test_scope_admits_for_the_round_and_exempts_retained_state() -> None:
    got = Recorder()

    def scope(topic: str, env: Envelope) -> AdmissionScope | None:
        return None if topic == "retained" else AdmissionScope(job_id="j", round=3)

    gate = InboundGate(name="t", handler=got, scope=scope)
    retained = frame()
    gate("retained", retained)
    gate("retained", retained)  # delivered again on a resubscribe: not a duplicate
    gate("reply", frame(job_id="j", round=2))
    gate("reply", frame(job_id="other", round=3))
    gate("reply", frame(job_id="j", round=3))
    assert [t for t, _, _ in got.seen] == ["retained", "retained", "reply"]
    assert gate.dropped == {"stale_round": 2}


def test_a_handler_refusal_is_counted_and_a_handler_bug_propagates() -> None:
    def refuse(topic: str, env: Envelope, nbytes: int) -> None:
        if isinstance(env.body, Heartbeat):
            raise StaleRound("no round is open")
        raise RuntimeError("a bug")

    gate = InboundGate(name="t", handler=refuse)
    gate("x", frame())
    assert gate.dropped == {"stale_round": 1}
    status = encode(new_envelope(Status(state="online"), sender="a1"))
    with pytest.raises(RuntimeError, match="a bug"):
        gate("x", status)


def test_drop_counts_refusals_found_before_the_gate() -> None:
    gate = InboundGate(name="t", handler=Recorder())
    gate.drop(MalformedMessage("empty"), "x")
    gate.drop(MalformedMessage("empty"), "x")
    assert gate.dropped["malformed"] == 2
