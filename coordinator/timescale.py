"""The coordinator's clock in device-seconds, for jobs on an emulated fleet.

An emulated fleet runs at a time scale (``hyperfleet agents --emulate --time-scale 0.25``: every
emulated duration takes a quarter of its device time on the wall clock). A job file's
``[emulation] time_scale`` tells the coordinator the same, and from then on the coordinator
counts in *device-seconds*: its elapsed time, the time budget, round deadlines and timeouts, the
planner's deadline bounds, profiles and learning curve, and every figure it reports. Only the
edges convert: a round's deadline goes to the agents (and to the fleet's wait) as ``device_s *
scale`` wall seconds, and what comes back (the reply time per agent, the agent's own ``train_s``)
is divided by the scale. So one seeded job plans the same rounds at every scale; only the
coordinator's own real overheads (evaluation, aggregation, MQTT hops) grow in device terms as
the scale shrinks.

``wait_for_agents_s`` and the registry's staleness are not device time: they are how long real
processes take to connect and how often real heartbeats arrive.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .fleet import RoundReplies

__all__ = ["TimeScale"]


@dataclass(frozen=True, slots=True)
class TimeScale:
    """Wall seconds per device-second; 1.0 (the default) makes both the same."""

    scale: float = 1.0

    def __post_init__(self) -> None:
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"time scale must be positive and finite, got {self.scale}")

    def to_wall(self, device_s: float) -> float:
        """Wall seconds of ``device_s`` device-seconds."""
        return device_s * self.scale

    def to_device(self, wall_s: float) -> float:
        """Device-seconds of ``wall_s`` wall seconds."""
        return wall_s / self.scale

    def device_replies(self, replies: RoundReplies) -> RoundReplies:
        """``replies`` with reply times and each result's ``train_s`` in device-seconds (the same
        object when the scale is 1)."""
        if self.scale == 1.0:
            return replies
        return RoundReplies(
            results={
                agent_id: dataclasses.replace(res, train_s=self.to_device(res.train_s))
                for agent_id, res in replies.results.items()
            },
            failures=dict(replies.failures),
            reply_s={agent_id: self.to_device(s) for agent_id, s in replies.reply_s.items()},
            bytes_sent=replies.bytes_sent,
            bytes_received=replies.bytes_received,
        )
