"""MQTT topic names, all below one configurable prefix (default ``hf/v1``).

An agent publishes only below its own ``agents/{agent_id}/``, so a broker ACL is one pattern line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ._errors import InvalidTopic

__all__ = ["AGENT_ID_PATTERN", "AgentTopicKind", "Topics", "check_agent_id"]

AGENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
AgentTopicKind = Literal["status", "hello", "heartbeat", "inbox", "results"]
_AGENT_KINDS: frozenset[str] = frozenset({"status", "hello", "heartbeat", "inbox", "results"})


def check_agent_id(agent_id: str) -> str:
    """Return ``agent_id`` if it is a valid id (letters, digits, ``_.-``; no MQTT wildcards)."""
    if not AGENT_ID_PATTERN.fullmatch(agent_id):  # match() would let a trailing newline through
        raise InvalidTopic(
            f"invalid agent id {agent_id!r}: use 1-64 letters, digits, '_', '.' or '-'"
        )
    return agent_id


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic tree of one deployment."""

    prefix: str = "hf/v1"

    def __post_init__(self) -> None:
        if not self.prefix or any(c in self.prefix for c in "+#") or self.prefix.endswith("/"):
            raise InvalidTopic(f"invalid topic prefix {self.prefix!r}")

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
        return f"{self.prefix}/jobs/{check_agent_id(job_id)}/state"

    def all_job_states(self) -> str:
        return f"{self.prefix}/jobs/+/state"

    def model_latest(self, model_name: str) -> str:
        return f"{self.prefix}/models/{check_agent_id(model_name)}/latest"

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
