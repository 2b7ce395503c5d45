"""What the coordinator has learned about each agent: speed, link, reliability, recent loss.

A profile starts from what the agent announced in ``hello`` (its device class's *nominal*
figures, which a real device or an emulated one with per-round variance and background load need
not keep to) and is then smoothed towards what rounds show (exponentially weighted, ``alpha`` per
observation):

- ``train_rate``: examples per second of the agent's own reported compute time;
- ``comm_s``: the rest of the reply time (download, upload, latency, queueing);
- ``reliability``: the share of instructions answered in time;
- ``loss``: the agent's last training loss (statistical utility, after Oort).

Units are the job's device-seconds (:mod:`coordinator.timescale`). Announced figures are device
units at the agent's own ``time_scale`` (1 when it announces none): an agent emulated at 0.25 for a
job counting at 1.0 trains four times its announced rate per job-second, so rates and bandwidths
are multiplied, and the round-trip time divided, by ``job time_scale / agent time_scale``. The
link is seeded with the agent's announced ``model_wire_bytes`` when it emulates a model size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from protocol import MAP_BOUNDS, Hello

__all__ = ["AgentProfile", "ProfileBook"]

_log = logging.getLogger(__name__)
_DEFAULT_RATE = 100.0  # examples/s when an agent announces nothing
_DEFAULT_MBPS = 100.0
_DEFAULT_RTT_MS = 20.0


@dataclass(slots=True)
class AgentProfile:
    agent_id: str
    device_class: str
    num_examples: int
    train_rate: float
    comm_s: float
    reliability: float
    label_counts: tuple[int, ...] = ()
    loss: float | None = None
    observations: int = 0
    selected: int = 0
    last_selected: int = 0
    """The last round this agent was asked to train (0: never)."""
    busy_until: float = 0.0
    """Job time before which the agent is probably still working on a late instruction."""
    history: list[float] = field(default_factory=list)

    @property
    def explored(self) -> bool:
        return self.observations > 0

    def predict_s(self, examples: int) -> float:
        """Seconds from sending an instruction of ``examples`` examples to its reply."""
        return self.comm_s + examples / self.train_rate


_PROFILE_BOUNDS = MAP_BOUNDS[(Hello, "profile")]


def _announced(profile: Mapping[str, float], key: str, default: float) -> float:
    """An announced figure, or ``default`` when absent or outside the wire's bounds (a hello made
    in-process skips decoding, where an out-of-range one is dropped)."""
    value = profile.get(key, default)
    bound = _PROFILE_BOUNDS.get(key)
    if not math.isfinite(value) or (bound is not None and value not in bound):
        return default
    return float(value)


def _seed_comm_s(profile: Mapping[str, float], model_bytes: int, speedup: float) -> float:
    """Download + upload + one round trip, in job device-seconds."""
    nbytes = _announced(profile, "model_wire_bytes", float(model_bytes))
    up = _announced(profile, "uplink_mbps", _DEFAULT_MBPS)
    down = _announced(profile, "downlink_mbps", _DEFAULT_MBPS)
    rtt = _announced(profile, "rtt_ms", _DEFAULT_RTT_MS) / 1000
    return (nbytes * 8 / (down * 1e6) + nbytes * 8 / (up * 1e6) + rtt) / speedup


class ProfileBook:
    """Profiles of every agent seen, keyed by id."""

    def __init__(self, *, model_bytes: int, alpha: float = 0.3, time_scale: float = 1.0) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        if not time_scale > 0:
            raise ValueError("time_scale must be positive")
        self.model_bytes = model_bytes
        self.time_scale = time_scale
        self._scale_warned = False
        self.alpha = alpha
        self._profiles: dict[str, AgentProfile] = {}

    def __getitem__(self, agent_id: str) -> AgentProfile:
        return self._profiles[agent_id]

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._profiles

    def __iter__(self) -> Iterator[AgentProfile]:
        return iter(self._profiles.values())

    def ensure(self, agent_id: str, hello: Hello) -> AgentProfile:
        """The agent's profile, created from its ``hello`` the first time."""
        p = self._profiles.get(agent_id)
        if p is None:
            announced = hello.profile
            # Job device-seconds per agent device-second.
            agent_scale = _announced(announced, "time_scale", 1.0)
            speedup = self.time_scale / agent_scale
            if speedup != 1.0 and not self._scale_warned:
                self._scale_warned = True
                _log.warning(
                    "agent %s runs at time scale %g but the job counts at %g: its announced "
                    "figures are converted, but the job's seconds are not the fleet's device-"
                    "seconds (set [emulation] time_scale = %g in the job file)",
                    agent_id,
                    agent_scale,
                    self.time_scale,
                    agent_scale,
                )
            p = AgentProfile(
                agent_id=agent_id,
                device_class=hello.device_class,
                num_examples=hello.num_examples,
                train_rate=_announced(announced, "train_rate", _DEFAULT_RATE) * speedup,
                comm_s=_seed_comm_s(announced, self.model_bytes, speedup),
                reliability=1.0 - _announced(announced, "failure_rate", 0.0),
                label_counts=tuple(hello.label_counts),
            )
            self._profiles[agent_id] = p
        else:
            p.num_examples = hello.num_examples
            p.label_counts = tuple(hello.label_counts)
        return p

    def _smooth(self, old: float, new: float, first: bool) -> float:
        return new if first else (1 - self.alpha) * old + self.alpha * new

    def observe_result(
        self, agent_id: str, *, examples: int, train_s: float, reply_s: float, loss: float
    ) -> None:
        p = self._profiles[agent_id]
        first = p.observations == 0
        if train_s > 0 and examples > 0:
            p.train_rate = self._smooth(p.train_rate, examples / train_s, first)
        p.comm_s = self._smooth(p.comm_s, max(0.0, reply_s - train_s), first)
        p.reliability = self._smooth(p.reliability, 1.0, False)
        if math.isfinite(loss):
            p.loss = loss
        p.observations += 1

    def observe_failure(
        self, agent_id: str, *, timed_out: bool, now: float, expected_s: float
    ) -> None:
        p = self._profiles[agent_id]
        p.reliability = self._smooth(p.reliability, 0.0, False)
        if timed_out:
            # It may still be working; the next instruction would queue behind the late one.
            p.busy_until = now + expected_s
        p.observations += 1

    def mark_selected(self, agent_id: str, round: int) -> None:
        p = self._profiles[agent_id]
        p.selected += 1
        p.last_selected = round
