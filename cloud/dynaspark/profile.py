"""Job profiles: what each stage of a Spark job cost in a profiling run. Pure.

A stage is identified across runs of the same script by its call site (Spark's stage name,
e.g. ``groupBy at prep.py:42``) and the number of earlier stages with the same call site
(:func:`stage_keys`), never by its stage id, which depends on what ran before in the session.
The *nominal rate* of a stage is the records it reads per core-second of task time (dynaSpark,
Baresi, Quattrocchi et al., TSE 2021, §4.1: the rate measured in the profiling run sizes the
cores of later runs).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ProfileError

__all__ = ["PROFILE_VERSION", "JobProfile", "StageProfile", "stage_keys"]

PROFILE_VERSION = 1


def stage_keys(names: Iterable[str]) -> list[str]:
    """``["map at a.py:3", "map at a.py:3", "count at a.py:9"]`` →
    ``["map at a.py:3#0", "map at a.py:3#1", "count at a.py:9#0"]``: stable keys for stages
    in the order they ran."""
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        k = seen.get(name, 0)
        seen[name] = k + 1
        keys.append(f"{name}#{k}")
    return keys


@dataclass(frozen=True, slots=True, kw_only=True)
class StageProfile:
    """One stage of a profiling run. Times in seconds, sizes in bytes."""

    key: str
    name: str
    tasks: int
    duration_s: float
    """Wall time from submission to completion."""
    task_s: float
    """Total task run time (core-seconds of work, ``executorRunTime`` summed)."""
    task_cv: float = 0.3
    """Coefficient of variation of the task times (for the simulator)."""
    records_in: int = 0
    records_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def __post_init__(self) -> None:
        if not self.key:
            raise ProfileError("a stage needs a key")
        if self.tasks < 1:
            raise ProfileError(f"stage {self.key}: tasks must be >= 1, got {self.tasks}")
        for name in ("duration_s", "task_s", "task_cv"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ProfileError(f"stage {self.key}: {name} must be finite and >= 0, got {v}")
        for name in ("records_in", "records_out", "bytes_in", "bytes_out"):
            if getattr(self, name) < 0:
                raise ProfileError(f"stage {self.key}: {name} must be >= 0")

    @property
    def work_s(self) -> float:
        """Core-seconds of task time the stage needs (at least a millisecond per task)."""
        return max(self.task_s, 1e-3 * self.tasks)

    @property
    def task_mean_s(self) -> float:
        return self.work_s / self.tasks

    @property
    def nominal_rate(self) -> float:
        """Records read per core-second (tasks per core-second when it read no records)."""
        return (self.records_in or self.tasks) / self.work_s

    def shortest_s(self, cores: int) -> float:
        """A lower bound on the stage's wall time on ``cores`` task slots: whole waves of
        mean-length tasks (a stage of 3 tasks cannot use a fourth core)."""
        slots = max(1, min(cores, self.tasks))
        return math.ceil(self.tasks / slots) * self.task_mean_s


@dataclass(frozen=True, slots=True, kw_only=True)
class JobProfile:
    """The stages of one profiling run, in the order they completed."""

    script: str
    cores: int
    """Task slots the profiling run had."""
    wall_s: float
    stages: tuple[StageProfile, ...]
    version: int = PROFILE_VERSION

    def __post_init__(self) -> None:
        if not self.stages:
            raise ProfileError("a profile needs at least one stage")
        keys = [s.key for s in self.stages]
        if len(set(keys)) != len(keys):
            raise ProfileError("stage keys must be unique (use stage_keys)")
        if self.cores < 1:
            raise ProfileError(f"cores must be >= 1, got {self.cores}")

    @property
    def work_s(self) -> float:
        return sum(s.work_s for s in self.stages)

    def stage(self, key: str) -> StageProfile | None:
        return next((s for s in self.stages if s.key == key), None)

    def shortest_s(self, cores: int) -> float:
        """Lower bound on the job's wall time on ``cores`` slots (stages one after another)."""
        return sum(s.shortest_s(cores) for s in self.stages)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "script": self.script, "cores": self.cores,
                "wall_s": self.wall_s, "stages": [asdict(s) for s in self.stages]}  # fmt: skip

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> JobProfile:
        """Raises :class:`ProfileError` naming what is wrong."""
        if not isinstance(doc, Mapping):
            raise ProfileError("a profile is a JSON object")
        if doc.get("version") != PROFILE_VERSION:
            raise ProfileError(
                f"profile version {doc.get('version')!r} is not {PROFILE_VERSION}: profile again"
            )
        try:
            stages = tuple(StageProfile(**s) for s in doc["stages"])
            return cls(script=str(doc["script"]), cores=int(doc["cores"]),
                       wall_s=float(doc["wall_s"]), stages=stages)  # fmt: skip
        except (KeyError, TypeError) as exc:
            raise ProfileError(f"malformed profile: {exc}") from exc

    @classmethod
    def loads(cls, text: str) -> JobProfile:
        try:
            return cls.from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ProfileError(f"a profile is JSON: {exc}") from exc

    def matches(self, keys: Sequence[str]) -> list[str]:
        """Keys of ``keys`` (stages seen in a run) that the profile does not know."""
        known = {s.key for s in self.stages}
        return [k for k in keys if k not in known]
