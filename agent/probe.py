"""What this machine can do: architecture, cores, memory, NVIDIA GPUs and local runtimes.

The result travels in the agent's retained ``hello``. GPUs are found through NVML
(``nvidia-ml-py``, imported as ``pynvml``); a machine without the package, the driver or a GPU
simply reports no GPUs. Runtimes are detected with ``importlib.util.find_spec`` only, so probing
never imports TensorFlow.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import platform
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

import psutil

from protocol import GpuInfo

if TYPE_CHECKING:
    from agent.device_class import DeviceClass

__all__ = ["Capabilities", "GpuInfo", "probe_capabilities", "probe_gpus", "probe_runtimes"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What the agent announces about its machine."""

    arch: str
    cores: int
    memory_bytes: int
    gpus: tuple[GpuInfo, ...]
    runtimes: tuple[str, ...]
    device_class: str | None = None


def probe_capabilities(*, device_class: DeviceClass | None = None) -> Capabilities:
    """Measure this machine; ``device_class``, if given, is named in the result.

    The numbers are always the real machine's, also when the agent emulates another class.
    """
    return Capabilities(
        arch=platform.machine(),
        cores=_usable_cores(),
        memory_bytes=int(psutil.virtual_memory().total),
        gpus=probe_gpus(),
        runtimes=probe_runtimes(),
        device_class=device_class.name if device_class is not None else None,
    )


def probe_gpus(nvml: ModuleType | None = None) -> tuple[GpuInfo, ...]:
    """List NVIDIA GPUs through NVML; an empty tuple where there are none. Never raises for NVML.

    ``nvml`` is a module with pynvml's interface (``nvmlInit``, ``nvmlDeviceGetCount``,
    ``nvmlDeviceGetHandleByIndex``, ``nvmlDeviceGetName``, ``nvmlDeviceGetMemoryInfo``,
    ``nvmlShutdown`` and the ``NVMLError`` class); by default the real ``pynvml``. A missing
    package or any ``NVMLError`` (no driver, no device, ...) gives ``()``, logged once at DEBUG.
    """
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError as exc:
            logger.debug("no GPUs: NVML bindings (nvidia-ml-py) not installed: %s", exc)
            return ()
    nvml_error: type[BaseException] = nvml.NVMLError
    try:
        nvml.nvmlInit()
    except nvml_error as exc:
        logger.debug("no GPUs: NVML unavailable: %s", exc)
        return ()
    try:
        gpus = tuple(_read_gpu(nvml, index) for index in range(int(nvml.nvmlDeviceGetCount())))
    except nvml_error as exc:
        logger.debug("no GPUs: NVML query failed: %s", exc)
        gpus = ()
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml_error as exc:
            logger.debug("NVML shutdown failed: %s", exc)
    return gpus


def probe_runtimes() -> tuple[str, ...]:
    """Local runtimes this environment can use, without importing them.

    ``numpy`` always; ``keras`` when both ``keras`` and ``tensorflow`` are installed; ``litert``
    when ``ai_edge_litert`` is installed.
    """
    runtimes = ["numpy"]
    if _installed("keras") and _installed("tensorflow"):
        runtimes.append("keras")
    if _installed("ai_edge_litert"):
        runtimes.append("litert")
    return tuple(runtimes)


def _read_gpu(nvml: ModuleType, index: int) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = nvml.nvmlDeviceGetName(handle)
    if isinstance(name, bytes):
        name = name.decode("utf-8", errors="replace")
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    return GpuInfo(index=index, name=str(name), memory_bytes=int(memory.total))


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        # find_spec raises for a broken parent package or a module with __spec__ = None.
        return False


def _usable_cores() -> int:
    sched_getaffinity = getattr(os, "sched_getaffinity", None)
    if sched_getaffinity is not None:
        return len(sched_getaffinity(0))
    return os.cpu_count() or 1
