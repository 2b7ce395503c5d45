"""MQTT topic names, all below one configurable prefix (default ``hf/v1``).

An agent publishes only below its own ``agents/{agent_id}/``, so a broker ACL is one pattern line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ._errors import InvalidTopic

__all__ = [
    "AGENT_ID_PATTERN",
    "ID_PATTERN",
    "AgentTopicKind",
    "Topics",
    "check_agent_id",
    "check_id",
    "check_topic_name",
]

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
"""Every id that becomes one MQTT topic level: agent ids, job ids, model names. Nothing a topic
level cannot hold (``/``, ``+``, ``#``, NUL), no control characters (TAB, newline), no spaces."""
AGENT_ID_PATTERN = ID_PATTERN
AgentTopicKind = Literal["status", "hello", "heartbeat", "inbox", "results"]
_AGENT_KINDS: frozenset[str] = frozenset({"status", "hello", "heartbeat", "inbox", "results"})


def check_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a valid id for one topic level; :class:`InvalidTopic` if not.

    The one check of every id that reaches a topic, wherever it enters: command-line flags,
    job files, fleet files, messages. Valid: 1-64 ASCII letters, digits, ``_``, ``.`` or ``-``,
    starting with a letter or digit. A ``/``, ``+``, ``#``, NUL, TAB or other control character
    is refused here, at start: in a topic, Mosquitto drops the client that publishes it, and
    paho then re-sends the queued message on every reconnect, forever.
    ``what`` names the id in the message (``"agent id"``, ``"job id"``).
    """
    # fullmatch, not match: with match() a trailing newline would slip past the ``$``.
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise InvalidTopic(
            f"invalid {what} {value!r:.80}: use 1-64 letters, digits, '_', '.' or '-', starting "
            "with a letter or digit (no '/', '+', '#', spaces, TAB, NUL or other control "
            "characters: the id is a level of an MQTT topic)"
        )
    return value


def _bad_char(c: str) -> bool:
    o = ord(c)
    return o < 0x20 or 0x7F <= o <= 0x9F or 0xD800 <= o <= 0xDFFF


def check_topic_name(topic: str) -> str:
    """Return ``topic`` if a broker accepts a publish to it; :class:`InvalidTopic` if not.

    MQTT 3.1.1 §4.7: 1 to 65,535 bytes of UTF-8, no ``+`` or ``#`` in a topic name, no NUL;
    Mosquitto also refuses control characters. A publish to such a topic makes the broker drop
    the connection, and the client re-sends it on every reconnect: refused here instead."""
    if (
        not topic
        or "+" in topic
        or "#" in topic
        or any(_bad_char(c) for c in topic)
        or len(topic.encode("utf-8")) > 65535
    ):
        raise InvalidTopic(
            f"invalid topic name {topic!r:.80}: 1-65535 bytes, no '+', '#', NUL or control "
            "characters"
        )
    return topic


def check_agent_id(agent_id: str) -> str:
    """Return ``agent_id`` if it is a valid id (:func:`check_id`)."""
    return check_id(agent_id, "agent id")


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic tree of one deployment."""

    prefix: str = "hf/v1"

    def __post_init__(self) -> None:
        p = self.prefix
        if (
            not isinstance(p, str)
            or not p
            or any(c in p for c in "+#")
            or p.endswith("/")
            or p.startswith("$")
            or any(_bad_char(c) for c in p)
            or len(p.encode("utf-8", "surrogatepass")) > 1024
        ):
            raise InvalidTopic(
                f"invalid topic prefix {p!r:.80}: non-empty, at most 1024 bytes, no '+' or '#', "
                "no control characters (TAB, NUL) or lone surrogates, not starting with '$' or ending with '/'"
            )

    def agent(self, agent_id: str, kind: AgentTopicKind) -> str:
        return f"{self.prefix}/agents/{check_agent_id(agent_id)}/{kind}"

    def status(self, agent_id: str) -> str:
        return self.agent(agent_id, "status")

    def hello(self, agent_id: str) -> str:
        return self.agent(agent_id, "hello")

    def heartbeat(self, agent_id: str) -> str:
        return self.agent(agent_id, "heartbeat")

    def inbox(self, agent_id: str) -> str:
        return self.agent(agent_id, "inbox")

    def results(self, agent_id: str) -> str:
        return self.agent(agent_id, "results")

    def all_agents(self, kind: AgentTopicKind) -> str:
        """Subscription filter for one kind of topic of every agent."""
        return f"{self.prefix}/agents/+/{kind}"

    def job_state(self, job_id: str) -> str:
        return f"{self.prefix}/jobs/{check_id(job_id, 'job id')}/state"

    def all_job_states(self) -> str:
        return f"{self.prefix}/jobs/+/state"

    def model_latest(self, model_name: str) -> str:
        return f"{self.prefix}/models/{check_id(model_name, 'model name')}/latest"

    def serving_stats(self, model_name: str) -> str:
        """Where ROMA publishes, retained, how it serves ``model_name`` (:class:`ServingStats`)."""
        return f"{self.prefix}/serving/{check_agent_id(model_name)}/stats"

    def all_serving_stats(self) -> str:
        return f"{self.prefix}/serving/+/stats"

    def parse_agent_topic(self, topic: str) -> tuple[str, AgentTopicKind]:
        """Split ``{prefix}/agents/{id}/{kind}`` into ``(id, kind)``; :class:`InvalidTopic` if not."""
        head = f"{self.prefix}/agents/"
        if not topic.startswith(head):
            raise InvalidTopic(f"topic {topic!r} is not below {head!r}")
        parts = topic[len(head) :].split("/")
        if len(parts) != 2 or parts[1] not in _AGENT_KINDS:
            raise InvalidTopic(f"topic {topic!r} is not an agent topic")
        agent_id, kind = parts
        check_agent_id(agent_id)
        return agent_id, kind  # type: ignore[return-value]
