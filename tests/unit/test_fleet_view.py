"""The monitor's state model: every message type lands in the right table, garbage is counted and
listed but never raises, and the rendered frame shows what the model holds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from hyperfleet.fleet_render import Header, render_fleet
from hyperfleet.fleet_view import TOPIC_KINDS, FleetView, TopicRates, topic_kind
from protocol import (
    Failure,
    Heartbeat,
    Hello,
    JobState,
    Message,
    ModelRef,
    ServingStats,
    Status,
    Topics,
    TrainConfig,
    TrainIns,
    TrainRes,
    encode,
    new_envelope,
)

T = Topics("hf/v1")


def frame(body: Message, *, sender: str = "x", reply_to: str = "", round: int = 0) -> bytes:
    return encode(new_envelope(body, sender=sender, reply_to=reply_to, round=round))


def hello(device_class: str = "raspberry-pi-5") -> Hello:
    return Hello(device_class=device_class, arch="aarch64", cores=4, memory_bytes=8 << 30)


def beat(seq: int, *, session: str = "s1", load: float = 0.5) -> Heartbeat:
    return Heartbeat(seq=seq, busy=False, load=load, memory_used_bytes=100 << 20, session=session)


def train_ins(budget_s: float = 10.0) -> TrainIns:
    return TrainIns(
        model="{}",
        weights=(np.zeros((2, 3), np.float32),),
        config=TrainConfig(),
        budget_s=budget_s,
    )


def train_res() -> TrainRes:
    return TrainRes(
        weights=(np.ones((2, 3), np.float32),), num_examples=10, steps=1, loss=0.1, train_s=1.0
    )


def job_state(**overrides: object) -> JobState:
    fields: dict[str, object] = {
        "status": "running",
        "round": 7,
        "accuracy": 0.81,
        "best_accuracy": 0.83,
        "target_accuracy": 0.9,
        "elapsed_s": 40.0,
        "time_budget_s": 100.0,
        "participants": ("a1", "a2"),
        "failures": ("a3",),
        "plan": {"feasible": True, "predicted_time_to_target_s": 25.0},
    }
    fields.update(overrides)
    return JobState(**fields)  # type: ignore[arg-type]


def model_ref(name: str = "digits", version: int = 3) -> ModelRef:
    return ModelRef(name=name, version=version, job_id="j", format="keras", url="http://h/m",
                    sha256="0" * 64, size_bytes=10, metrics={"accuracy": 0.91})  # fmt: skip


def serving(model: str = "digits", **overrides: object) -> ServingStats:
    fields: dict[str, object] = {
        "model": model,
        "version": 3,
        "state": "READY",
        "sla_ms": 20.0,
        "percentile": 95.0,
        "window_s": 5.0,
        "period_s": 1.0,
        "response_ms": 12.5,
        "p95_ms": 12.5,
        "violation_share": 0.02,
        "requests_per_s": 40.0,
        "requests": 400,
        "cores": 1.5,
    }
    fields.update(overrides)
    return ServingStats(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ topics


@pytest.mark.parametrize(
    ("topic", "kind", "ident"),
    [
        ("hf/v1/agents/a1/heartbeat", "heartbeat", "a1"),
        ("hf/v1/agents/a1/hello", "hello", "a1"),
        ("hf/v1/agents/a1/status", "status", "a1"),
        ("hf/v1/agents/a1/inbox", "inbox", "a1"),
        ("hf/v1/agents/a1/results", "results", "a1"),
        ("hf/v1/jobs/digits/state", "job state", "digits"),
        ("hf/v1/models/digits/latest", "models", "digits"),
        ("hf/v1/serving/digits/stats", "serving", "digits"),
        ("hf/v1/jobs/digits/owner", "other", ""),
        ("hf/v1/agents/a1/extra/deep", "other", ""),
        ("other/v1/agents/a1/status", "other", ""),
        ("hf/v1/agents/bad id/status", "other", ""),
    ],
)
def test_topic_kinds(topic: str, kind: str, ident: str) -> None:
    assert topic_kind(T, topic) == (kind, ident)


def test_the_serving_topic_is_in_the_tree() -> None:
    assert T.serving_stats("digits") == "hf/v1/serving/digits/stats"
    assert topic_kind(T, T.serving_stats("digits")) == ("serving", "digits")


# ------------------------------------------------------------------------------ agents


def test_status_hello_and_heartbeats_fill_an_agent_row() -> None:
    view = FleetView(T)
    view.apply(T.status("a1"), frame(Status(state="online", session="s1")), 0.0)
    view.apply(T.hello("a1"), frame(hello()), 0.0)
    for seq, at in ((1, 1.0), (2, 2.0), (5, 5.0)):  # 3 and 4 never came
        event = view.apply(T.heartbeat("a1"), frame(beat(seq, load=0.25 * seq)), at)
        assert event.outcome == "decoded"
    row = view.agents["a1"]
    assert (row.status, row.device_class, row.load) == ("online", "raspberry-pi-5", 1.25)
    assert row.missed_heartbeats == 2
    assert row.heartbeat_interval_s == pytest.approx(1.0)
    assert row.heartbeat_age(6.5) == pytest.approx(1.5)
    assert not row.stale(6.5)
    assert row.stale(9.0)  # four intervals of silence


def test_a_new_session_resets_the_sequence_and_an_old_offline_does_not_hide_it() -> None:
    view = FleetView(T)
    view.apply(T.heartbeat("a1"), frame(beat(50, session="old")), 0.0)
    view.apply(T.heartbeat("a1"), frame(beat(0, session="new")), 1.0)
    view.apply(T.heartbeat("a1"), frame(beat(1, session="new")), 2.0)
    assert view.agents["a1"].missed_heartbeats == 0
    view.apply(T.status("a1"), frame(Status(state="online", session="new")), 2.0)
    view.apply(T.status("a1"), frame(Status(state="offline", session="old")), 2.1)
    assert view.agents["a1"].status == "online"
    view.apply(T.status("a1"), frame(Status(state="offline", session="new")), 3.0)
    assert view.agents["a1"].status == "offline"


def test_reliability_counts_replies_in_time_failures_and_silence() -> None:
    view = FleetView(T, reply_grace_s=1.0)
    answered = new_envelope(train_ins(5.0), sender="coordinator")
    failed = new_envelope(train_ins(5.0), sender="coordinator")
    silent = new_envelope(train_ins(5.0), sender="coordinator")
    for i, env in enumerate((answered, failed, silent)):
        view.apply(T.inbox("a1"), encode(env), float(i))
    row = view.agents["a1"]
    assert (row.asked, row.due, row.reliability) == (3, 0, None)
    view.apply(T.results("a1"), frame(train_res(), reply_to=answered.msg_id), 3.0)
    view.apply(T.results("a1"), frame(Failure(code="no_data", reason="empty shard"),
                                      reply_to=failed.msg_id), 3.0)  # fmt: skip
    assert (row.ok, row.failed, row.missed) == (1, 1, 0)
    assert row.last_failure == "no_data: empty shard"
    view.expire(7.9)  # silent was seen at 2.0: due at 2 + 5 + 1 = 8
    assert row.missed == 0
    view.expire(8.1)
    assert (row.ok, row.failed, row.missed, row.due) == (1, 1, 1, 3)
    assert row.reliability == pytest.approx(1 / 3)
    # A late reply is not counted again, and a reply to an unseen instruction is not counted.
    view.apply(T.results("a1"), frame(train_res(), reply_to=silent.msg_id), 9.0)
    view.apply(T.results("a1"), frame(train_res(), reply_to="unseen"), 9.0)
    assert (row.ok, row.due) == (1, 3)


# ------------------------------------------------------------------------------ jobs, models


def test_job_state_row_with_budget_and_prediction() -> None:
    view = FleetView(T)
    view.apply(T.job_state("digits"), frame(job_state(), sender="coord-1"), 3.0)
    job = view.jobs["digits"]
    assert (job.state.round, job.sender, job.budget_left_s) == (7, "coord-1", 60.0)
    assert job.prediction == "target in ~25s"
    view.apply(
        T.job_state("digits"),
        frame(job_state(round=8, plan={"feasible": False, "predicted_accuracy_at_budget": 0.8})),
        4.0,
    )
    assert view.jobs["digits"].state.round == 8
    assert view.jobs["digits"].prediction == "infeasible, 0.800 at budget"
    view.apply(T.job_state("digits"), frame(job_state(plan={})), 5.0)
    assert view.jobs["digits"].prediction == ""
    view.apply(T.job_state("digits"), frame(job_state(status="reached")), 6.0)
    assert view.jobs["digits"].prediction == ""  # a finished job has nothing left to predict


def test_model_ref_and_serving_stats_share_a_row() -> None:
    view = FleetView(T)
    view.apply(T.model_latest("digits"), frame(model_ref()), 0.0)
    view.apply(T.serving_stats("digits"), frame(serving(), sender="hf-roma-1"), 1.0)
    row = view.models["digits"]
    assert row.ref is not None
    assert row.ref.version == 3
    assert row.stats is not None
    assert row.stats.p95_ms == 12.5
    assert row.stats_sender == "hf-roma-1"
    assert not row.stats_stale(3.0)
    assert row.stats_stale(4.5)  # three periods of 1 s without a new one
    view.apply(T.serving_stats("digits"), frame(serving(state="STOPPED")), 5.0)
    assert not view.models["digits"].stats_stale(100.0)  # a stopped server's last word


def test_empty_retained_payloads_clear_rows() -> None:
    view = FleetView(T)
    view.apply(T.job_state("digits"), frame(job_state()), 0.0)
    view.apply(T.model_latest("digits"), frame(model_ref()), 0.0)
    view.apply(T.hello("a1"), frame(hello()), 0.0)
    for topic in (T.job_state("digits"), T.model_latest("digits"), T.hello("a1")):
        assert view.apply(topic, b"", 1.0).outcome == "cleared"
    assert "digits" not in view.jobs
    assert view.models["digits"].ref is None
    assert view.agents["a1"].hello is None


# ------------------------------------------------------------------------------ bad input


def test_garbage_is_counted_and_listed_never_raised() -> None:
    view = FleetView(T)
    bad = [
        (T.heartbeat("a1"), b"\x00garbage", "MalformedMessage"),
        (T.job_state("digits"), b"HF\x00\x00\x00\x05abc", "MalformedMessage"),
        (T.status("a1"), "text, not bytes", "TypeError"),
        (T.status("a1"), None, "TypeError"),
    ]
    for topic, payload, error_type in bad:
        event = view.apply(topic, payload, 0.0)
        assert event.outcome == "undecodable"
        assert event.error_type == error_type
        assert event.error
    assert view.undecodable == 4
    assert view.problems[0].startswith("undecodable on hf/v1/agents/a1/heartbeat: ")
    assert not view.agents
    assert not view.jobs


def test_a_message_on_the_wrong_topic_is_unexpected_and_not_applied() -> None:
    view = FleetView(T)
    cases = [
        (T.heartbeat("a1"), frame(job_state())),
        (T.model_latest("other"), frame(model_ref("digits"))),
        (T.serving_stats("other"), frame(serving("digits"))),
        (T.inbox("a1"), frame(train_res())),
    ]
    for topic, payload in cases:
        event = view.apply(topic, payload, 0.0)
        assert event.outcome == "unexpected", topic
        assert event.envelope is not None
    assert view.unexpected == 4
    assert not view.jobs
    assert not view.models
    assert not view.agents
    assert "unexpected on hf/v1/models/other/latest" in view.problems[1]


@settings(max_examples=200, deadline=None)
@given(
    topic=st.sampled_from([T.heartbeat("a1"), T.job_state("j"), "hf/v1/x", T.serving_stats("m")]),
    payload=st.binary(max_size=200) | st.builds(lambda b: b"HF" + b, st.binary(max_size=200)),
)
def test_any_bytes_on_any_topic_never_raise(topic: str, payload: bytes) -> None:
    view = FleetView(T)
    event = view.apply(topic, payload, 0.0)
    assert event.outcome in ("undecodable", "cleared", "decoded", "unexpected")
    json.dumps(event.to_json(wall_time=0.0))


# ------------------------------------------------------------------------------ rates, JSON


def test_rates_per_topic_kind() -> None:
    rates = TopicRates(window_s=10)
    for i in range(20):
        rates.add("heartbeat", 100, 100.0 + i * 0.5)  # 2 per second for 10 s
    rates.add("models", 5000, 105.0)
    assert rates.messages["heartbeat"] == 20
    assert rates.bytes["heartbeat"] == 2000
    count, nbytes = rates.rate("heartbeat", 110.0)
    assert count == pytest.approx(2.0, rel=0.15)
    assert nbytes == pytest.approx(200.0, rel=0.15)
    assert rates.rate("heartbeat", 200.0) == (0.0, 0.0)  # all of it left the window
    assert rates.rate("serving", 110.0) == (0.0, 0.0)


def test_every_message_type_makes_a_json_event() -> None:
    view = FleetView(T)
    messages = [
        (T.status("a1"), Status(state="online")),
        (T.hello("a1"), hello()),
        (T.heartbeat("a1"), beat(1)),
        (
            T.inbox("a1"),
            TrainIns(
                model="x" * 2000,
                weights=(np.zeros((2, 3), np.float32),),
                config=TrainConfig(),
                budget_s=5.0,
            ),
        ),
        (T.results("a1"), train_res()),
        (T.results("a1"), Failure(code="c", reason="r")),
        (T.job_state("digits"), job_state()),
        (T.model_latest("digits"), model_ref()),
        (T.serving_stats("digits"), serving()),
    ]
    kinds = set()
    for topic, body in messages:
        doc = json.loads(
            json.dumps(view.apply(topic, frame(body, round=2), 1.0).to_json(wall_time=1e9))
        )
        assert (doc["outcome"], doc["type"], doc["round"]) == ("decoded", body.TYPE, 2)
        kinds.add(doc["kind"])
    assert kinds == set(TOPIC_KINDS) - {"other"}
    inbox = view.apply(T.inbox("a1"), frame(messages[3][1]), 2.0).to_json(wall_time=0.0)
    assert inbox["body"]["weights"] == [{"dtype": "<f4", "shape": [2, 3]}]
    assert inbox["body"]["model"] == "<2000 characters>"


# ------------------------------------------------------------------------------ rendering


def test_the_rendered_frame_shows_agents_jobs_models_and_problems() -> None:
    view = FleetView(T)
    for agent in ("edge-a", "edge-b"):
        view.apply(T.status(agent), frame(Status(state="online")), 0.0)
        view.apply(T.hello(agent), frame(hello("jetson-orin-nano")), 0.0)
        view.apply(T.heartbeat(agent), frame(beat(1)), 1.0)
    view.apply(T.status("edge-c"), frame(Status(state="offline")), 0.0)
    view.apply(T.job_state("digits"), frame(job_state(round=12)), 1.0)
    view.apply(T.model_latest("digits"), frame(model_ref(version=4)), 1.0)
    view.apply(T.serving_stats("digits"), frame(serving(version=4, p95_ms=17.25)), 1.0)
    view.apply(T.heartbeat("edge-a"), b"junk", 1.5)
    console = Console(record=True, width=220, color_system=None)
    header = Header(broker="mqtt://127.0.0.1:1883", connected=True, connections=1, running_s=2)
    console.print(render_fleet(view, 2.0, header=header))
    text = console.export_text()
    for expected in ("edge-a", "edge-b", "edge-c", "jetson-orin-nano", "digits", "12",
                     "0.8100", "target in ~25s", "v4", "17.2", "p95 12.5 / 20 ms",
                     "2 online of 3", "undecodable on hf/v1/agents/edge-a/heartbeat",
                     "connected", "heartbeat"):  # fmt: skip
        assert expected in text, expected
    # Rows past the limit are summarised, online agents first.
    console = Console(record=True, width=220, color_system=None)
    console.print(render_fleet(view, 2.0, max_agent_rows=1))
    text = console.export_text()
    assert "edge-a" in text
    assert "edge-c" not in text
    assert "... 2 more" in text
