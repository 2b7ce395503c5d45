"""The agent's device probe, against the real machine and real pynvml, plus a fake NVML."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import psutil
import pynvml
import pytest

from agent.probe import Capabilities, GpuInfo, probe_capabilities, probe_gpus

GIB = 1 << 30


def real_nvml_gpu_count() -> int | None:
    """How many GPUs pynvml itself sees here, or None where NVML cannot start (no driver)."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


class FakeNvml(ModuleType):
    """A stand-in for pynvml with the same call contract, for GPU paths this machine cannot run.

    Raises the real ``pynvml.NVMLError`` subclasses, as the real module does.
    """

    NVMLError = pynvml.NVMLError

    def __init__(
        self,
        gpus: list[tuple[str | bytes, int]] | None = None,
        *,
        fail: dict[str, pynvml.NVMLError] | None = None,
    ) -> None:
        super().__init__("fake_pynvml")
        self.gpus = gpus or []
        self.fail = fail or {}
        self.initialised = False
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]
        if name not in {"nvmlInit", "nvmlShutdown"} and not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def nvmlInit(self) -> None:
        self._call("nvmlInit")
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self._call("nvmlShutdown")
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        self._call("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._call("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        self._call("nvmlDeviceGetName")
        return self.gpus[handle][0]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        self._call("nvmlDeviceGetMemoryInfo")
        total = self.gpus[handle][1]
        return SimpleNamespace(total=total, free=total, used=0)


# --- real machine ---------------------------------------------------------------------------------


def test_probe_capabilities_reports_this_machine() -> None:
    caps = probe_capabilities()
    assert isinstance(caps, Capabilities)
    assert caps.arch == platform.machine()
    assert caps.arch
    assert 1 <= caps.cores <= (os.cpu_count() or 1)
    assert caps.memory_bytes == psutil.virtual_memory().total
    assert caps.memory_bytes > 64 * (1 << 20)
    assert caps.runtimes[0] == "numpy"
    assert "keras" in caps.runtimes  # tensorflow and keras are installed in this venv
    assert caps.device_class is None


def test_probe_capabilities_names_the_device_class() -> None:
    from agent.device_class import load_device_class  # pydantic; the probe itself needs none

    caps = probe_capabilities(device_class=load_device_class("raspberry-pi-5"))
    assert caps.device_class == "raspberry-pi-5"
    assert caps.arch == platform.machine()  # the real machine, not the class's arch


def test_probe_does_not_import_tensorflow() -> None:
    code = (
        "import sys; from agent.probe import probe_capabilities; caps = probe_capabilities();"
        " print(','.join(caps.runtimes));"
        " print(sorted(m for m in ('tensorflow', 'keras', 'ai_edge_litert') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    runtimes, imported = done.stdout.splitlines()
    assert runtimes == "numpy,keras,litert"  # all three are installed in this venv
    assert imported == "[]"


def test_real_pynvml_matches_nvml_and_never_raises() -> None:
    expected = real_nvml_gpu_count()
    gpus = probe_gpus()  # the real pynvml
    assert isinstance(gpus, tuple)
    if expected is None:  # no driver here: a clean empty result
        assert gpus == ()
    else:
        assert len(gpus) == expected
        assert [g.index for g in gpus] == list(range(expected))
        assert all(g.name and g.memory_bytes > 0 for g in gpus)
    assert probe_capabilities().gpus == gpus


def test_missing_pynvml_gives_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    assert probe_gpus() == ()


# --- fake NVML, for the paths that need a GPU -----------------------------------------------------


def test_fake_nvml_lists_gpus_and_shuts_down() -> None:
    nvml = FakeNvml([("NVIDIA H100 80GB HBM3", 80 * GIB), ("NVIDIA A2", 16 * GIB)])
    gpus = probe_gpus(nvml)
    assert gpus == (
        GpuInfo(index=0, name="NVIDIA H100 80GB HBM3", memory_bytes=80 * GIB),
        GpuInfo(index=1, name="NVIDIA A2", memory_bytes=16 * GIB),
    )
    assert nvml.calls[0] == "nvmlInit"
    assert nvml.calls[-1] == "nvmlShutdown"
    assert not nvml.initialised


def test_fake_nvml_name_as_bytes_is_decoded() -> None:
    gpus = probe_gpus(FakeNvml([(b"Orin (nvgpu)", 8 * GIB)]))
    assert gpus == (GpuInfo(index=0, name="Orin (nvgpu)", memory_bytes=8 * GIB),)
    assert isinstance(gpus[0].name, str)


def test_fake_nvml_with_no_devices() -> None:
    nvml = FakeNvml([])
    assert probe_gpus(nvml) == ()
    assert nvml.calls == ["nvmlInit", "nvmlDeviceGetCount", "nvmlShutdown"]


def test_nvml_init_failure_gives_no_gpus_and_logs_once_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    nvml = FakeNvml([("never seen", GIB)], fail={"nvmlInit": error})
    with caplog.at_level(logging.DEBUG, logger="agent.probe"):
        assert probe_gpus(nvml) == ()
    records = [r for r in caplog.records if r.name == "agent.probe"]
    assert len(records) == 1
    assert records[0].levelno == logging.DEBUG
    assert "NVML" in records[0].getMessage()
    assert nvml.calls == ["nvmlInit"]  # nothing else is called when init fails


@pytest.mark.parametrize(
    "failing",
    [
        "nvmlDeviceGetCount",
        "nvmlDeviceGetHandleByIndex",
        "nvmlDeviceGetName",
        "nvmlDeviceGetMemoryInfo",
    ],
)
def test_nvml_query_failure_gives_no_gpus_and_still_shuts_down(failing: str) -> None:
    nvml = FakeNvml(
        [("NVIDIA L4", 24 * GIB)],
        fail={failing: pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)},
    )
    assert probe_gpus(nvml) == ()
    assert failing in nvml.calls
    assert nvml.calls[-1] == "nvmlShutdown"
    assert not nvml.initialised


def test_nvml_shutdown_failure_keeps_the_result() -> None:
    nvml = FakeNvml(
        [("NVIDIA T4", 16 * GIB)],
        fail={"nvmlShutdown": pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)},
    )
    assert probe_gpus(nvml) == (GpuInfo(index=0, name="NVIDIA T4", memory_bytes=16 * GIB),)


def test_errors_that_are_not_nvml_errors_propagate() -> None:
    class Broken(FakeNvml):
        def nvmlDeviceGetName(self, handle: int) -> str | bytes:
            raise RuntimeError("a bug, not a missing GPU")

    with pytest.raises(RuntimeError, match="a bug"):
        probe_gpus(Broken([("x", GIB)]))


def test_the_fake_behaves_like_real_pynvml_without_a_gpu() -> None:
    """The fake and the real module share one contract: same error type, same uninitialised rule."""
    calls: list[Callable[[], object]] = [
        lambda: pynvml.nvmlDeviceGetCount(),
        lambda: FakeNvml([("x", GIB)]).nvmlDeviceGetCount(),
    ]
    for call in calls:
        with pytest.raises(pynvml.NVMLError):
            call()
