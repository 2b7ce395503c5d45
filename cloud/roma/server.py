"""The ROMA server's state: the models it serves, their controllers, and the control loop.

::

    RomaServer(config)
    ├── start()            every model in the repository, its highest version (failures: the
    │                      model is UNAVAILABLE with the reason, the others serve)
    ├── load(m, version)   start and warm the new version's workers, then swap atomically; the
    │                      old version drains and stops; a failed load keeps the old one serving
    ├── unload(m)
    ├── install(ref)       a ModelRef from the broker: with a verify key, every artifact's
    │                      signature checked first (link.signing); fetch each over HTTP (size
    │                      and sha256 verified), install it as a new version, load it
    └── control_loop()     every period: window response time → PI controller per model →
                           contention normalisation → active workers + CPU quota; each decision
                           logged and kept for ``/v2/models/{m}/stats``

HTTP lives in :mod:`cloud.roma.app`; this module holds no sockets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from link import ArtifactError, LinkError, atomic_write_json
from link.artifacts import fetch_artifact
from link.signing import ArtifactVerifier
from protocol import ModelRef, ServingStats

from .cgroup import CgroupUnavailable, CpuGroups
from .config import ModelConfig, ServeConfig
from .controller import ControllerSettings, CoreController, allocate
from .errors import (
    ModelNotFound,
    ModelUnavailable,
    RepositoryError,
    RomaError,
    ServeConfigError,
)
from .gpu import GpuArbiter, gpu_present
from .metrics import ServerMetrics
from .repository import NORMALIZATION_FILE, ModelRepository
from .served import InferResult, ServedModel

__all__ = ["ModelEntry", "RomaServer", "available_cores"]

_log = logging.getLogger(__name__)

_REF_FILES = {"keras": "model.keras", "tflite": "model.tflite", "tflite_dynamic": "dynamic.tflite"}
"""Where each ModelRef format lands in a version directory (the float TFLite is the one served
under LiteRT; the dynamic-range one is kept beside it)."""


@dataclass(slots=True, kw_only=True)
class ModelEntry:
    """One model name: the version serving (if any), its controller and what happened to it."""

    name: str
    served: ServedModel | None = None
    controller: CoreController | None = None
    state: str = "UNAVAILABLE"
    reason: str = ""
    previous: str | None = None
    """The version served before the current one (the one a rollback goes back to)."""
    decisions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=120))


def available_cores() -> float:
    """CPUs this process may run on."""
    try:
        return float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return float(os.cpu_count() or 1)


class RomaServer:
    def __init__(self, config: ServeConfig) -> None:
        """Raises :class:`ServeConfigError` when ``config.verify_key`` is not an Ed25519 public
        key file."""
        self.config = config
        self.verifier: ArtifactVerifier | None = None
        """Checks the signatures of published models before they are fetched (``verify_key``)."""
        if config.verify_key is not None:
            try:
                self.verifier = ArtifactVerifier.load(config.verify_key)
            except ArtifactError as exc:
                raise ServeConfigError(f"verify_key: {exc}") from exc
        self.repository = ModelRepository(config.repository, default_config=config.default_model)
        self.metrics = ServerMetrics()
        self.capacity = config.cores or available_cores()
        self.entries: dict[str, ModelEntry] = {}
        self.gpu = config.fake_gpu or gpu_present()
        self.arbiter = GpuArbiter() if self.gpu else None
        self.cgroups: CpuGroups | None = None
        """The kernel's per-model CPU quota, where this process may set it (:meth:`start`)."""
        self.quota_mode = "user" if config.quota else "off"
        """How each model is held to its cores: ``kernel``, ``user`` or ``off``."""
        self._locks: dict[str, asyncio.Lock] = {}
        self.ready = asyncio.Event()
        """Set once :meth:`start` has tried every model in the repository."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the highest version of every model in the repository; a model that fails is
        marked UNAVAILABLE with the reason and the others still serve."""
        if self.config.quota and self.config.cgroup == "auto":
            try:
                self.cgroups = CpuGroups.detect()
                self.quota_mode = "kernel"
                _log.info("CPU quota: the kernel's, cgroup v%d groups under %s",
                          self.cgroups.version, self.cgroups.root)  # fmt: skip
            except CgroupUnavailable as exc:
                _log.info("CPU quota: user space (%s)", exc)
        for name in self.repository.models():
            if not self.repository.versions(name):
                # A folder with only its config.toml: a model to be published (hot reload).
                self.entries.setdefault(name, ModelEntry(name=name, state="UNAVAILABLE",
                                                         reason="no version yet"))  # fmt: skip
                _log.info("model %s: no version yet; waiting for one to be published", name)
                continue
            try:
                await self.load(name)
            except RomaError as exc:
                _log.error("model %s not served: %s", name, exc)
        self.ready.set()

    async def close(self) -> None:
        for entry in list(self.entries.values()):
            if entry.served is not None:
                await self._retire(entry.served)
                entry.served = None
        if self.cgroups is not None:
            self.cgroups.close()

    def entry(self, name: str) -> ModelEntry:
        entry = self.entries.get(name)
        if entry is None:
            raise ModelNotFound(f"no model named {name!r}")
        return entry

    def served(self, name: str, version: str | None = None) -> ServedModel:
        """The version of ``name`` that serves (``version`` None: the current one). Raises
        :class:`ModelNotFound` for an unknown model or a version not loaded and
        :class:`ModelUnavailable` when the model has none loaded."""
        entry = self.entry(name)
        if entry.served is None:
            raise ModelUnavailable(f"model {name!r} is not ready: {entry.reason or entry.state}")
        if version is not None and version != entry.served.version:
            raise ModelNotFound(
                f"model {name!r} serves version {entry.served.version}, not {version!r}"
            )
        return entry.served

    async def infer(self, name: str, version: str | None, x: Any) -> InferResult:
        return await self.served(name, version).infer(x)

    # ------------------------------------------------------------------ repository control

    async def load(self, name: str, version: int | None = None) -> ServedModel:
        """Serve ``version`` of ``name`` (default: its highest on disk). The new version's
        workers load and warm up before the swap; if that fails the version serving now keeps
        serving, the entry records why and :class:`ModelLoadError`/:class:`RepositoryError` is
        raised."""
        # An unknown or unsafe name is refused before it leaves a trace (an entry, a lock).
        if name not in self.entries:
            self.repository.versions(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            entry = self.entries.setdefault(name, ModelEntry(name=name))
            try:
                versions = self.repository.versions(name)
                if not versions:
                    raise ModelNotFound(f"model {name!r} has no versions in the repository")
                chosen = versions[-1] if version is None else version
                if chosen not in versions:
                    raise ModelNotFound(f"model {name!r} has no version {chosen}")
                config = self.repository.version_config(name, chosen)
                path = self.repository.model_file(name, chosen, config.runtimes)
                if entry.served is None:
                    entry.state = "LOADING"
                new = await ServedModel.load(
                    name=name,
                    version=str(chosen),
                    path=path,
                    config=config,
                    gpu=self.gpu,
                    quota=self.config.quota,
                    cgroups=self.cgroups,
                )
                await _check_normalization(new)
            except RomaError as exc:
                entry.reason = f"loading {name} failed: {exc}"
                if entry.served is None:
                    entry.state = "UNAVAILABLE"
                else:
                    entry.reason += f" (version {entry.served.version} keeps serving)"
                raise
            self._attach(new)
            old = entry.served
            entry.served = new
            entry.state, entry.reason = "READY", ""
            if entry.controller is None or old is None or old.config != config:
                entry.controller = self._controller(config)
            new.set_cores(entry.controller.cores)
            self.metrics.cores.labels(name).set(entry.controller.cores)
            self.metrics.sla.labels(name).set(config.sla_s)
            if old is not None:
                entry.previous = old.version
                _log.info("model %s: version %s replaces %s", name, new.version, old.version)
                await self._retire(old)
            else:
                _log.info("model %s: serving version %s from %s", name, new.version, path)
            return new

    async def unload(self, name: str) -> None:
        """Stop serving ``name`` (queued requests finish first); :class:`ModelNotFound` for a
        model this server never loaded."""
        self.entry(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            entry = self.entry(name)
            old, entry.served = entry.served, None
            entry.state, entry.reason = "UNAVAILABLE", "unloaded"
            if old is not None:
                await self._retire(old)

    async def install(self, ref: ModelRef) -> ServedModel:
        """Fetch a published model over HTTP (each artifact's size and sha256 checked), install
        it as version ``ref.version`` and serve it. On any failure the version serving now keeps
        serving and the entry says why; raises :class:`RepositoryError`."""
        entry = self.entries.setdefault(ref.name, ModelEntry(name=ref.name))
        current = entry.served
        if current is not None and int(current.version) >= ref.version:
            return current
        staging = self.repository.staging_dir(ref.name)
        files: dict[str, Path] = {}
        try:
            if self.verifier is not None:
                self.verifier.check_all(ref)  # before a byte is fetched
            for artifact in _artifacts(ref):
                dest_name = _REF_FILES.get(artifact[0])
                if dest_name is None:
                    continue
                files[dest_name] = await fetch_artifact(
                    artifact[1],
                    sha256=artifact[2],
                    size_bytes=artifact[3],
                    dest=staging / dest_name,
                    max_bytes=self.config.max_body_bytes * 64,
                )
            if not files:
                raise RepositoryError(f"ModelRef {ref.name} v{ref.version} names no model file")
            if ref.normalization is not None:
                files[NORMALIZATION_FILE] = staging / NORMALIZATION_FILE
                atomic_write_json(
                    files[NORMALIZATION_FILE],
                    {
                        "offset": list(ref.normalization.offset),
                        "scale": list(ref.normalization.scale),
                    },
                )
            self.repository.install(ref.name, ref.version, files, _ref_json(ref))
        except (LinkError, ArtifactError, OSError, RepositoryError) as exc:
            why = f"version {ref.version} from {ref.url} not installed: {exc}"
            entry.reason = why + (
                f" (version {current.version} keeps serving)" if current is not None else ""
            )
            _log.error("model %s: %s", ref.name, entry.reason)
            raise RepositoryError(why) from exc
        finally:
            for leftover in staging.glob("*"):
                leftover.unlink(missing_ok=True)
            staging.rmdir()
        return await self.load(ref.name, ref.version)

    # ------------------------------------------------------------------ control

    def _controller(self, config: ModelConfig) -> CoreController:
        c = self.config.controller
        settings = ControllerSettings(
            kp=c.kp,
            ki=c.ki,
            period_s=c.period_s,
            quantum=c.quantum,
            min_cores=config.min_cores,
            max_cores=min(config.max_cores, self.capacity),
            setpoint_ratio=c.setpoint_ratio,
            utilisation=c.utilisation,
        )
        return CoreController(
            sla_s=config.sla_s,
            settings=settings,
            initial_cores=min(config.initial_cores, self.capacity),
        )

    def control_step(self, dt_s: float) -> dict[str, float]:
        """One control period: each model's controller on its window's SLA percentile, then
        contention normalisation over the node's cores; returns the cores given."""
        now = time.monotonic()
        wanted: dict[str, float] = {}
        minimum: dict[str, float] = {}
        observed: dict[str, float | None] = {}
        static = self.config.controller.mode == "static"
        for name, entry in self.entries.items():
            if entry.served is None or entry.controller is None:
                continue
            cfg = entry.served.config
            response = entry.served.window.percentile(
                now, cfg.percentile, within_s=min(self.config.controller.window_s, cfg.window_s)
            )
            observed[name] = response
            if static:
                wanted[name] = entry.controller.cores
            else:
                demand = (
                    entry.served.demand_cores(now, self.config.controller.period_s)
                    if self.config.controller.feedforward
                    else 0.0
                )
                wanted[name] = entry.controller.step(response, dt_s, demand=demand)
            minimum[name] = cfg.min_cores
        if not wanted:
            return {}
        given = allocate(
            wanted, capacity=self.capacity, quantum=self.config.controller.quantum, minimum=minimum
        )
        for name, cores in given.items():
            entry = self.entries[name]
            assert entry.served is not None
            assert entry.controller is not None
            entry.served.set_cores(cores)
            entry.controller.limit(cores)
            decision = entry.controller.last
            response = observed[name]
            record = {
                "t": round(time.time(), 3),
                "response_ms": None if response is None else round(response * 1e3, 3),
                "sla_ms": entry.served.config.sla_ms,
                "wanted": wanted[name],
                "cores": cores,
                "error": round(decision.error, 4),
                "feedforward": round(decision.feedforward, 3),
                "saturated": decision.saturated,
                "queued": entry.served.queued,
            }
            entry.decisions.append(record)
            self.metrics.cores.labels(name).set(cores)
            if response is not None:
                self.metrics.window.labels(name).set(response)
            _log.debug("control %s: %s", name, record)
        return given

    async def control_loop(self) -> None:
        """Run :meth:`control_step` every control period until cancelled."""
        period = self.config.controller.period_s
        last = time.monotonic()
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            self.control_step(now - last)
            last = now

    def serving_stats(self, now: float, *, period_s: float) -> list[ServingStats]:
        """How each model serves at ``now`` (monotonic seconds), over its SLA window, as the
        retained ``serving/{model}/stats`` record; ``period_s`` is how often it is published."""
        out = []
        for name, entry in sorted(self.entries.items()):
            served = entry.served
            cfg = served.config if served is not None else self.config.default_model
            stats = ServingStats(
                model=name,
                version=int(served.version) if served is not None else 0,
                state=entry.state,
                reason=entry.reason,
                sla_ms=cfg.sla_ms,
                percentile=cfg.percentile,
                window_s=cfg.window_s,
                period_s=period_s,
            )
            if served is not None:
                window = served.window
                response = window.percentile(now, cfg.percentile)
                p95 = window.percentile(now, 95.0)
                stats = dataclasses.replace(
                    stats,
                    response_ms=None if response is None else response * 1e3,
                    p95_ms=None if p95 is None else p95 * 1e3,
                    violation_share=window.violation_share(now, cfg.sla_s),
                    requests_per_s=window.count(now) / cfg.window_s,
                    requests=served.counters.requests,
                    shed=served.counters.shed,
                    cores=served.cores,
                    queued=served.queued,
                )
            out.append(stats)
        return out

    # ------------------------------------------------------------------ internals

    def _attach(self, served: ServedModel) -> None:
        m = self.metrics
        name = served.name

        def on_result(_: ServedModel, result: InferResult) -> None:
            m.queue.labels(name).observe(result.queue_s)
            if result.response_s > served.config.sla_s:
                m.violations.labels(name).inc()

        def on_batch(_: ServedModel, device: str, size: int, compute_s: float) -> None:
            m.batches.labels(name, device).inc()
            m.batch_size.labels(name).observe(size)
            m.compute.labels(name).observe(compute_s)

        served.on_result.append(on_result)
        served.on_batch.append(on_batch)
        if self.arbiter is not None and served.has_gpu:
            served.arbiter = self.arbiter
            self.arbiter.register(served)

    async def _retire(self, served: ServedModel) -> None:
        if self.arbiter is not None:
            self.arbiter.unregister(served)
        await served.close()


def _artifacts(ref: ModelRef) -> list[tuple[str, str, str, int]]:
    """``(format, url, sha256, size)`` of every artifact the reference names."""
    found = [(ref.format, ref.url, ref.sha256, ref.size_bytes)]
    artifacts = getattr(ref, "artifacts", None)
    if callable(artifacts):
        found = [(a.format, a.url, a.sha256, a.size_bytes) for a in artifacts()]
    return found


async def _check_normalization(served: ServedModel) -> None:
    """Refuse (and stop) a loaded version whose per-feature normalisation does not fit its
    input: :class:`RepositoryError`. Otherwise every request would fail with a 400."""
    features = served.info.input.shape[-1] if served.info.input.shape else 1
    for key in ("offset", "scale"):
        values = getattr(served.config.normalization, key)
        if isinstance(values, list) and len(values) != features:
            await served.close()
            raise RepositoryError(
                f"normalization {key} has {len(values)} values, the model's input {features} "
                "features"
            )


def _ref_json(ref: ModelRef) -> dict[str, Any]:
    return {
        "name": ref.name,
        "version": ref.version,
        "job_id": ref.job_id,
        "artifacts": [
            {"format": f, "url": u, "sha256": s, "size_bytes": n} for f, u, s, n in _artifacts(ref)
        ],
        "metrics": dict(ref.metrics),
        "normalization": None
        if ref.normalization is None
        else {"offset": list(ref.normalization.offset), "scale": list(ref.normalization.scale)},
    }
