"""hyperfleet edge agent daemon: one MQTT session, local training, device emulation.

The face of the package; its modules are public too (``agent.daemon``, ``agent.app``, ...).
TensorFlow is imported only by the Keras trainer, when one is made.
"""

from .app import RuntimeChoice, choose_trainer, create_agent, read_shard
from .daemon import Agent, AgentSettings, Emulator, StaleOwner
from .device_class import DeviceClass, FleetSpec, load_device_class, load_fleet
from .emulation import DeviceEmulator
from .errors import AgentError, ConfigError, TrainingError
from .probe import Capabilities, probe_capabilities
from .trainer import EvalResult, FitResult, Trainer

__all__ = [
    "Agent",
    "AgentError",
    "AgentSettings",
    "Capabilities",
    "ConfigError",
    "DeviceClass",
    "DeviceEmulator",
    "Emulator",
    "EvalResult",
    "FitResult",
    "FleetSpec",
    "RuntimeChoice",
    "StaleOwner",
    "Trainer",
    "TrainingError",
    "choose_trainer",
    "create_agent",
    "load_device_class",
    "load_fleet",
    "probe_capabilities",
    "read_shard",
]
