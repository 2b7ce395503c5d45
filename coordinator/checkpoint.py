"""Checkpoints: the job's weights and state after every round, atomically; SQLite for metadata.

Layout of a state directory::

    state/
    ├── jobs.sqlite              jobs(job_id, spec, status, round, file, ...), rounds(job_id, round, record)
    └── <job_id>/round-000012.npz  weights, best weights, strategy state (written to a temp file, then renamed)

The npz is written and renamed first, then one SQLite transaction points the job at it and adds
the round's record; older npz files are removed only after that commit. A crash at any point leaves
the previous checkpoint intact, and a restarted coordinator resumes at the last committed round.

The job's spec is saved with every checkpoint. A job file edited between runs may change its
constraints, rounds and planner, but not what the saved weights and strategy state mean
(:data:`RESUME_KEYS`); :meth:`CheckpointStore.check_spec` refuses that at load with
:class:`~coordinator.errors.JobStateConflict`, naming the keys.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import time
import zipfile
import zlib
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from link import atomic_write_bytes, atomic_write_json
from protocol import Weights

from .engine import JobProgress, RoundRecord
from .errors import CheckpointError, JobStateConflict

_log = logging.getLogger(__name__)

__all__ = ["RESUME_KEYS", "Checkpoint", "CheckpointStore"]

RESUME_KEYS: tuple[str, ...] = (
    "model.hidden",
    "model.conv",
    "model.image_shape",
    "model.activation",
    "model.input_dim",
    "model.num_classes",
    "strategy.name",
)
"""Spec keys a job must keep to resume from its state: the model's layout (the saved weights'
shapes) and the strategy (what its saved state means)."""

_MISSING = object()


def _lookup(spec: Mapping[str, Any], dotted: str) -> Any:
    value: Any = spec
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    round INTEGER NOT NULL,
    file TEXT,
    accuracy REAL NOT NULL,
    best_accuracy REAL NOT NULL,
    best_round INTEGER NOT NULL,
    elapsed_s REAL NOT NULL,
    bytes_moved INTEGER NOT NULL,
    agent_seconds REAL NOT NULL,
    infeasible_at_s REAL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    job_id TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS rounds (
    job_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (job_id, round)
);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    progress: JobProgress
    spec: dict[str, Any]
    strategy_state: dict[str, Weights]


class CheckpointStore:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as db, db:
                db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise CheckpointError(f"cannot open state directory {state_dir}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.state_dir / "jobs.sqlite", timeout=10)

    def save(
        self,
        progress: JobProgress,
        *,
        spec: dict[str, Any],
        strategy_state: Mapping[str, Weights],
    ) -> Path:
        job_dir = self.state_dir / progress.job_id
        name = f"round-{progress.round:06d}.npz"
        arrays: dict[str, npt.NDArray[Any]] = {}
        for i, w in enumerate(progress.weights):
            arrays[f"weights/{i}"] = w
        for i, w in enumerate(progress.best_weights):
            arrays[f"best/{i}"] = w
        for key, values in strategy_state.items():
            for i, w in enumerate(values):
                arrays[f"strategy/{key}/{i}"] = w
        try:
            job_dir.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            np.savez(buf, **arrays)  # type: ignore[arg-type]
            atomic_write_bytes(job_dir / name, buf.getvalue())
            with closing(self._connect()) as db, db:
                db.execute(
                    "INSERT INTO jobs (job_id, spec, status, round, file, accuracy, best_accuracy,"
                    " best_round, elapsed_s, bytes_moved, agent_seconds, infeasible_at_s, updated)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT(job_id) DO UPDATE SET spec=excluded.spec, status=excluded.status,"
                    " round=excluded.round, file=excluded.file, accuracy=excluded.accuracy,"
                    " best_accuracy=excluded.best_accuracy, best_round=excluded.best_round,"
                    " elapsed_s=excluded.elapsed_s, bytes_moved=excluded.bytes_moved,"
                    " agent_seconds=excluded.agent_seconds, infeasible_at_s=excluded.infeasible_at_s,"
                    " updated=excluded.updated",
                    (
                        progress.job_id,
                        json.dumps(spec),
                        progress.status,
                        progress.round,
                        name,
                        progress.accuracy,
                        progress.best_accuracy,
                        progress.best_round,
                        progress.elapsed_s,
                        progress.bytes_moved,
                        progress.agent_seconds,
                        progress.infeasible_at_s,
                        time.time(),
                    ),
                )
                if progress.history:
                    last = progress.history[-1]
                    db.execute(
                        "INSERT OR REPLACE INTO rounds (job_id, round, record) VALUES (?,?,?)",
                        (progress.job_id, last.round, json.dumps(last.to_json())),
                    )
        except (OSError, sqlite3.Error) as exc:
            raise CheckpointError(f"cannot checkpoint job {progress.job_id}: {exc}") from exc
        for old in job_dir.glob("round-*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)
        return job_dir / name

    def save_replay_state(self, job_id: str, state: Mapping[str, Any]) -> None:
        """Save the fleet's replay protection (recent message ids, drop counters) beside the
        checkpoint; :class:`CheckpointError` when it cannot be written."""
        try:
            atomic_write_json(self.state_dir / job_id / "replay.json", dict(state), indent=None)
        except OSError as exc:
            raise CheckpointError(f"cannot save the replay state of job {job_id}: {exc}") from exc

    def load_replay_state(self, job_id: str) -> dict[str, Any]:
        """What :meth:`save_replay_state` wrote; ``{}`` when there is none or it is unreadable
        (replay protection then starts afresh, which a reply's instruction id still covers)."""
        path = self.state_dir / job_id / "replay.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            _log.warning("job %s: ignoring unreadable replay state %s: %s", job_id, path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def next_model_version(self, name: str, job_id: str) -> int:
        """Register a new version of model ``name`` made by ``job_id``; versions start at 1."""
        try:
            with closing(self._connect()) as db, db:
                (last,) = db.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM models WHERE name = ?", (name,)
                ).fetchone()
                db.execute(
                    "INSERT INTO models (name, version, job_id, created) VALUES (?,?,?,?)",
                    (name, last + 1, job_id, time.time()),
                )
        except sqlite3.Error as exc:
            raise CheckpointError(f"cannot record a version of model {name}: {exc}") from exc
        return int(last) + 1

    def saved_spec(self, job_id: str) -> dict[str, Any] | None:
        """The spec saved with ``job_id``'s last checkpoint, or ``None`` if it never ran here."""
        try:
            with closing(self._connect()) as db:
                row = db.execute("SELECT spec FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            return None if row is None else dict(json.loads(row[0]))
        except (sqlite3.Error, ValueError, TypeError) as exc:
            raise CheckpointError(f"cannot read the saved spec of job {job_id}: {exc}") from exc

    def check_spec(self, job_id: str, spec: Mapping[str, Any]) -> None:
        """Refuse to resume ``job_id`` under a ``spec`` whose :data:`RESUME_KEYS` differ from
        the saved one's: :class:`~coordinator.errors.JobStateConflict` naming each key. A job
        that never ran here, or a key the saved spec lacks, passes."""
        saved = self.saved_spec(job_id)
        if saved is None:
            return
        conflicts = []
        for key in RESUME_KEYS:
            before, now = _lookup(saved, key), _lookup(spec, key)
            if before is not _MISSING and before != now:
                shown = "(absent)" if now is _MISSING else json.dumps(now)
                conflicts.append(f"{key}: saved {json.dumps(before)}, job file {shown}")
        if conflicts:
            raise JobStateConflict(
                f"job {job_id!r} cannot resume from {self.state_dir}: the job file changed what "
                f"its saved state was trained with ({'; '.join(conflicts)}). Give the job a new "
                f"job_id, or use a fresh state directory, to start it over; or restore those keys "
                f"to resume"
            )

    def load(self, job_id: str, *, spec: Mapping[str, Any] | None = None) -> Checkpoint | None:
        """The last committed checkpoint of ``job_id``, or ``None`` if the job never ran here.

        With ``spec`` (the job's ``model_dump(mode="json")``), first :meth:`check_spec`.
        """
        if spec is not None:
            self.check_spec(job_id, spec)
        try:
            with closing(self._connect()) as db:
                row = db.execute(
                    "SELECT spec, status, round, file, accuracy, best_accuracy, best_round,"
                    " elapsed_s, bytes_moved, agent_seconds, infeasible_at_s FROM jobs WHERE job_id = ?",
                    (job_id,),
                ).fetchone()
                if row is None:
                    return None
                records = [
                    RoundRecord.from_json(json.loads(r))
                    for (r,) in db.execute(
                        "SELECT record FROM rounds WHERE job_id = ? ORDER BY round", (job_id,)
                    )
                ]
            (
                saved,
                status,
                rnd,
                file,
                acc,
                best_acc,
                best_round,
                elapsed,
                nbytes,
                agent_s,
                infeasible,
            ) = row
            with np.load(self.state_dir / job_id / file, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
        # A damaged npz can also fail with EOFError, zlib.error or, for members it cannot read,
        # NotImplementedError / RuntimeError from zipfile (as in protocol._shard.decode_shard).
        except (
            OSError,
            sqlite3.Error,
            ValueError,
            zipfile.BadZipFile,
            EOFError,
            zlib.error,
            NotImplementedError,
            RuntimeError,
        ) as exc:
            raise CheckpointError(f"cannot load the checkpoint of job {job_id}: {exc}") from exc
        names = sorted({k.split("/")[1] for k in arrays if k.startswith("strategy/")})
        strategy_state = {name: tuple(_series(arrays, f"strategy/{name}")) for name in names}
        progress = JobProgress(
            job_id=job_id,
            weights=tuple(_series(arrays, "weights")),
            best_weights=tuple(_series(arrays, "best")),
            round=rnd,
            accuracy=acc,
            best_accuracy=best_acc,
            best_round=best_round,
            elapsed_s=elapsed,
            bytes_moved=nbytes,
            agent_seconds=agent_s,
            infeasible_at_s=infeasible,
            status=status,
            history=tuple(r for r in records if r.round <= rnd),
        )
        return Checkpoint(progress=progress, spec=json.loads(saved), strategy_state=strategy_state)


def _series(arrays: dict[str, npt.NDArray[Any]], prefix: str) -> list[npt.NDArray[Any]]:
    count = sum(1 for k in arrays if k.rsplit("/", 1)[0] == prefix)
    return [arrays[f"{prefix}/{i}"] for i in range(count)]
