"""hyperFL coordinator: registry, a pure round engine, planners, strategies, checkpoints, export.

The face of the package; its modules are public too (``coordinator.service``, ...). TensorFlow is
imported only when a model is built (``coordinator.model``), never by importing this package.
"""

from .engine import JobProgress, RoundRecord, StopReason, close_round, stop_reason, verdict
from .errors import (
    CheckpointError,
    CoordinatorError,
    InsufficientUpdates,
    JobConfigError,
    JobStateConflict,
    OwnershipError,
    StrategyError,
)
from .fleet import Fleet, InMemoryFleet, LocalAgent, RoundReplies
from .job import JobSpec, load_job
from .mqtt_fleet import MqttFleet, open_mqtt_fleet
from .planners import Planner, RoundPlan, make_planner
from .registry import AgentRecord, Registry
from .service import Coordinator, JobOutcome
from .strategies import ClientUpdate, Strategy, make_strategy

__all__ = [
    "AgentRecord",
    "CheckpointError",
    "ClientUpdate",
    "Coordinator",
    "CoordinatorError",
    "Fleet",
    "InMemoryFleet",
    "InsufficientUpdates",
    "JobConfigError",
    "JobOutcome",
    "JobProgress",
    "JobSpec",
    "JobStateConflict",
    "LocalAgent",
    "MqttFleet",
    "OwnershipError",
    "Planner",
    "Registry",
    "RoundPlan",
    "RoundRecord",
    "RoundReplies",
    "StopReason",
    "Strategy",
    "StrategyError",
    "close_round",
    "load_job",
    "make_planner",
    "make_strategy",
    "open_mqtt_fleet",
    "stop_reason",
    "verdict",
]
