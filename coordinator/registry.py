"""The registry of agents: who exists, who is available, what they can do, when we last heard.

A pure state holder: the fleet feeds it decoded messages with the time it received them on the
coordinator's own monotonic clock; planners read it. Liveness comes only from *fresh* evidence:

- ``status`` and ``hello`` are retained, so they may be hours old when they arrive. An ``online``
  status makes an agent a candidate, never available by itself.
- A heartbeat (never retained) or a reply proves the agent alive *now*. An agent is available
  from fresh evidence until its ``offline`` status (or Last Will), or until it has been silent for
  ``stale_after_s``.
- Times compared are all the coordinator's: an agent's own timestamp is used only to estimate
  its clock offset, which is reported, never trusted.

Every daemon run has a session id (in hello, status and heartbeats). Heartbeats of two sessions
under one agent id at once are an identity clash (two daemons started with the same ``--id``):
it is reported, and one session's ``offline`` never marks the other one offline.
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
    announced: bool = False
    """The newest status says ``online`` (it may be a stale retained one)."""
    online: bool = False
    """Announced and fresh: heard from (heartbeat or reply) within the registry's window."""
    last_seen: float = 0.0
    """Coordinator-clock time of the newest fresh evidence."""
    sessions: dict[str, float] = field(default_factory=dict)
    """Daemon sessions heard from recently: session id → time of its newest heartbeat."""
    clock_offset_s: float | None = None
    """Estimated agent clock minus coordinator clock, seconds (from heartbeat timestamps)."""
    heartbeat: Heartbeat | None = None
    """The newest heartbeat (its load and busy flag), for monitors."""
    heartbeat_at: float | None = None
    """Coordinator-clock time it arrived (``None``: no heartbeat yet)."""

    @property
    def num_examples(self) -> int:
        return self.hello.num_examples if self.hello else 0

    @property
    def clash(self) -> bool:
        """More than one daemon session is live under this agent id."""
        return len(self.sessions) > 1


class Registry:
    """The agents as the coordinator knows them. ``now`` arguments are the coordinator's
    monotonic clock in seconds; every method is pure bookkeeping."""

    def __init__(self, *, stale_after_s: float = 30.0) -> None:
        self._agents: dict[str, AgentRecord] = {}
        self._stale_after_s = stale_after_s

    @property
    def stale_after_s(self) -> float:
        """Seconds of silence after which an agent counts as gone."""
        return self._stale_after_s

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

    def on_status(self, agent_id: str, status: Status, now: float) -> None:
        """An ``online`` status announces the agent; ``offline`` ends the session it names."""
        rec = self._record(agent_id)
        if status.state == "online":
            rec.announced = True
            return
        rec.sessions.pop(status.session, None)
        if status.session and rec.sessions:
            return  # another daemon under this id is still alive: its stop is not ours
        rec.announced = rec.online = False

    def on_hello(self, agent_id: str, hello: Hello, now: float) -> None:
        self._record(agent_id).hello = hello

    def on_heartbeat(
        self, agent_id: str, beat: Heartbeat, now: float, *, offset_s: float | None = None
    ) -> bool:
        """Fresh evidence of life. ``offset_s`` is one sample of the agent's clock minus ours
        (its timestamp minus our receive time; network delay makes it an underestimate, so the
        largest recent sample is kept). Returns True when this heartbeat reveals a clash."""
        rec = self._record(agent_id)
        for session, seen in list(rec.sessions.items()):
            if now - seen > self._stale_after_s:
                del rec.sessions[session]
        new_session = beat.session not in rec.sessions
        rec.sessions[beat.session] = now
        rec.heartbeat, rec.heartbeat_at = beat, now
        if offset_s is not None:
            rec.clock_offset_s = (
                offset_s if rec.clock_offset_s is None else max(offset_s, rec.clock_offset_s - 0.05)
            )
        self.on_seen(agent_id, now)
        rec.announced = True  # a heartbeat after our offline mark: the agent is back
        rec.online = True
        return new_session and rec.clash

    def on_seen(self, agent_id: str, now: float) -> None:
        """Any valid non-retained message from a known agent proves it alive."""
        rec = self._agents.get(agent_id)
        if rec is not None:
            rec.last_seen = now
            rec.online = rec.announced

    def expire(self, now: float) -> list[str]:
        """Mark agents silent for longer than ``stale_after_s`` offline; return their ids."""
        gone = []
        for rec in self._agents.values():
            if rec.online and now - rec.last_seen > self._stale_after_s:
                rec.online = False
                gone.append(rec.agent_id)
        return gone

    def available(self, *, requires: str | None = None) -> list[AgentRecord]:
        """Agents that are online on fresh evidence, have announced themselves and hold data,
        in id order (an agent with an empty shard is never asked to train). With ``requires``
        (a runtime such as ``"keras"``), only agents whose hello lists it among their
        ``runtimes``: a model is never given to an agent that said it cannot train it."""
        return sorted(
            (
                r
                for r in self._agents.values()
                if r.online
                and r.hello is not None
                and r.num_examples > 0
                and (requires is None or requires in r.hello.runtimes)
            ),
            key=lambda r: r.agent_id,
        )
