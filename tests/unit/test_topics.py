"""Topic names below one prefix, agent ids that cannot smuggle wildcards, and broker URLs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import AGENT_ID_PATTERN, InvalidTopic, Topics, check_agent_id, parse_broker_url

KINDS = ("status", "hello", "heartbeat", "inbox", "results")
BAD_IDS = [
    "",
    "+",
    "#",
    "a+b",
    "a#",
    "a/b",
    "/a",
    "a" * 65,
    "-leading-dash",
    ".hidden",
    "_x",
    "with space",
    "tab\t",
    "trailing-newline\n",
    "caf\u00e9",
    "nul\x00",
]


def test_agent_topic_builders() -> None:
    t = Topics()
    assert t.status("pi-4.b_1") == "hf/v1/agents/pi-4.b_1/status"
    assert t.hello("a1") == "hf/v1/agents/a1/hello"
    assert t.heartbeat("a1") == "hf/v1/agents/a1/heartbeat"
    assert t.inbox("a1") == "hf/v1/agents/a1/inbox"
    assert t.results("a1") == "hf/v1/agents/a1/results"
    assert t.agent("a1", "inbox") == t.inbox("a1")


def test_other_topic_builders() -> None:
    t = Topics()
    assert t.all_agents("heartbeat") == "hf/v1/agents/+/heartbeat"
    assert t.job_state("job-7") == "hf/v1/jobs/job-7/state"
    assert t.all_job_states() == "hf/v1/jobs/+/state"
    assert t.model_latest("mnist.cnn") == "hf/v1/models/mnist.cnn/latest"


def test_custom_prefix() -> None:
    t = Topics("site-3/hf")
    assert t.inbox("a1") == "site-3/hf/agents/a1/inbox"
    assert t.all_job_states() == "site-3/hf/jobs/+/state"
    assert t.parse_agent_topic("site-3/hf/agents/a1/inbox") == ("a1", "inbox")
    with pytest.raises(InvalidTopic):
        t.parse_agent_topic("hf/v1/agents/a1/inbox")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("agent_id", ["a", "A9", "pi-4.b_1", "x" * 64, "0"])
def test_parse_agent_topic_round_trip(agent_id: str, kind: str) -> None:
    t = Topics()
    topic = getattr(t, kind)(agent_id)
    assert t.parse_agent_topic(topic) == (agent_id, kind)


@settings(max_examples=100, deadline=None)
@given(agent_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", fullmatch=True))
def test_every_valid_id_round_trips(agent_id: str) -> None:
    assert check_agent_id(agent_id) == agent_id
    t = Topics()
    assert t.parse_agent_topic(t.results(agent_id)) == (agent_id, "results")


@settings(max_examples=150, deadline=None)
@given(agent_id=st.text(max_size=70))
def test_ids_are_valid_exactly_when_they_fit_the_contract(agent_id: str) -> None:
    ok = (
        1 <= len(agent_id) <= 64
        and agent_id.isascii()
        and agent_id[0].isalnum()
        and all(c.isalnum() or c in "_.-" for c in agent_id)
    )
    if ok:
        assert check_agent_id(agent_id) == agent_id
    else:
        with pytest.raises(InvalidTopic):
            check_agent_id(agent_id)


@pytest.mark.parametrize("agent_id", BAD_IDS)
def test_bad_ids_are_refused_everywhere(agent_id: str) -> None:
    t = Topics()
    with pytest.raises(InvalidTopic):
        check_agent_id(agent_id)
    for kind in KINDS:
        with pytest.raises(InvalidTopic):
            getattr(t, kind)(agent_id)
    with pytest.raises(InvalidTopic):
        t.job_state(agent_id)
    with pytest.raises(InvalidTopic):
        t.model_latest(agent_id)
    with pytest.raises(InvalidTopic):
        t.parse_agent_topic(f"hf/v1/agents/{agent_id}/status")


def test_exported_pattern_matches_what_check_agent_id_accepts() -> None:
    assert AGENT_ID_PATTERN.fullmatch("x" * 64)
    assert not AGENT_ID_PATTERN.fullmatch("x" * 65)
    assert not AGENT_ID_PATTERN.fullmatch("a+b")


@pytest.mark.parametrize("prefix", ["", "hf/+", "#", "hf/v1/", "a/#/b"])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(InvalidTopic):
        Topics(prefix)


@pytest.mark.parametrize(
    "topic",
    [
        "hf/v1/agents/a1",
        "hf/v1/agents/a1/",
        "hf/v1/agents/a1/bogus",
        "hf/v1/agents/a1/status/extra",
        "hf/v1/agents//status",
        "hf/v1/agents/+/status",
        "hf/v1/agents/#",
        "hf/v1/jobs/j1/state",
        "hf/v1/models/m/latest",
        "hf/v2/agents/a1/status",
        "other/agents/a1/status",
        "hf/v1agents/a1/status",
        "/hf/v1/agents/a1/status",
        "",
    ],
)
def test_foreign_topics_do_not_parse(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        Topics().parse_agent_topic(topic)


# ------------------------------------------------------------------------------ broker URLs


def test_broker_url_default_port() -> None:
    addr = parse_broker_url("mqtt://broker.local")
    assert (addr.host, addr.port, addr.tls) == ("broker.local", 1883, False)
    assert (addr.username, addr.password) == (None, None)
    assert addr.url == "mqtt://broker.local:1883"


def test_broker_url_without_scheme_is_mqtt() -> None:
    addr = parse_broker_url("localhost:1884")
    assert (addr.host, addr.port, addr.tls) == ("localhost", 1884, False)
    assert parse_broker_url("tcp://h").port == 1883


def test_mqtts_default_port() -> None:
    addr = parse_broker_url("mqtts://broker.example.com")
    assert (addr.host, addr.port, addr.tls) == ("broker.example.com", 8883, True)
    assert addr.url == "mqtts://broker.example.com:8883"
    assert parse_broker_url("mqtts://h:9000").port == 9000


def test_ipv6_host() -> None:
    addr = parse_broker_url("mqtt://[::1]:1999/")
    assert (addr.host, addr.port) == ("::1", 1999)


def test_credentials_are_parsed_and_kept_out_of_repr_and_url() -> None:
    addr = parse_broker_url("mqtts://fleet%40edge:s3cr%3At@broker:8884")
    assert addr.username == "fleet@edge"
    assert addr.password == "s3cr:t"
    assert "s3cr" not in repr(addr)
    assert "s3cr" not in addr.url
    assert "fleet" not in addr.url
    assert addr.url == "mqtts://broker:8884"


def test_username_without_password() -> None:
    addr = parse_broker_url("mqtt://user@broker")
    assert (addr.username, addr.password) == ("user", None)


@pytest.mark.parametrize(
    "url",
    [
        "http://broker",
        "ws://broker:1883",
        "mqtt://",
        "mqtt://:1883",
        "mqtt://user:pw@",
        "mqtt://broker:99999",
        "mqtt://broker:port",
        "mqtt://broker:-1",
        "mqtt://broker:0",
        "mqtt://broker/topic",
        "mqtt://broker?x=1",
        "mqtt://broker#frag",
    ],
)
def test_bad_broker_urls(url: str) -> None:
    with pytest.raises(ValueError, match="broker URL"):
        parse_broker_url(url)
