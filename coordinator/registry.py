"""The registry of agents: who exists, who is online, what they can do, when we last heard.

A pure state holder: the fleet feeds it decoded messages, planners read it. An agent is *online*
from its ``online`` status (or any fresh heartbeat) until its ``offline`` status or Last Will, or
until it has been silent for ``stale_after_s``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from protocol import Heartbeat, Hello, Status

__all__ = ["AgentRecord", "Registry"]


@dataclass(slots=True)
class AgentRecord:
    agent_id: str
    hello: Hello | None = None
    online: bool = False
    last_seen: float = 0.0
    last_heartbeat: Heartbeat | None = None
    sessions: int = 0
    """How many times the agent came online (reconnects count)."""
    history: list[tuple[float, bool]] = field(default_factory=list)
    """(time, online) transitions, newest last, for availability estimates."""

    @property
    def num_examples(self) -> int:
        return self.hello.num_examples if self.hello else 0


class Registry:
    def __init__(self, *, stale_after_s: float = 30.0) -> None:
        self._agents: dict[str, AgentRecord] = {}
        self._stale_after_s = stale_after_s

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def __iter__(self) -> Iterator[AgentRecord]:
        return iter(self._agents.values())

    def __len__(self) -> int:
        return len(self._agents)

    def get(self, agent_id: str) -> AgentRecord | None:
        return self._agents.get(agent_id)

    def _record(self, agent_id: str) -> AgentRecord:
        rec = self._agents.get(agent_id)
        if rec is None:
            rec = self._agents[agent_id] = AgentRecord(agent_id)
        return rec

    def _set_online(self, rec: AgentRecord, online: bool, now: float) -> None:
        if rec.online != online:
            rec.online = online
            rec.history.append((now, online))
            del rec.history[:-64]
            if online:
                rec.sessions += 1

    def on_status(self, agent_id: str, status: Status, now: float) -> None:
        rec = self._record(agent_id)
        self._set_online(rec, status.state == "online", now)
        rec.last_seen = now

    def on_hello(self, agent_id: str, hello: Hello, now: float) -> None:
        rec = self._record(agent_id)
        rec.hello = hello
        rec.last_seen = now

    def on_heartbeat(self, agent_id: str, beat: Heartbeat, now: float) -> None:
        rec = self._record(agent_id)
        rec.last_heartbeat = beat
        rec.last_seen = now
        self._set_online(rec, True, now)

    def on_seen(self, agent_id: str, now: float) -> None:
        """Any valid message from a known agent proves it alive."""
        rec = self._agents.get(agent_id)
        if rec is not None:
            rec.last_seen = now

    def expire(self, now: float) -> list[str]:
        """Mark agents silent for longer than ``stale_after_s`` offline; return their ids."""
        gone = []
        for rec in self._agents.values():
            if rec.online and now - rec.last_seen > self._stale_after_s:
                self._set_online(rec, False, now)
                gone.append(rec.agent_id)
        return gone

    def available(self) -> list[AgentRecord]:
        """Online agents that have announced themselves with data to train on, in id order.

        An agent whose ``hello`` says ``num_examples = 0`` can only fail an instruction, and each
        failure would lower its standing for nothing: it is never available.
        """
        return sorted(
            (
                r
                for r in self._agents.values()
                if r.online and r.hello is not None and r.hello.num_examples > 0
            ),
            key=lambda r: r.agent_id,
        )
