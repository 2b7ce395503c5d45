"""One owner per job: a lock on the state directory and an ownership epoch.

Two coordinators started by mistake on one job would train every agent twice, merge each other's
updates and publish two different models. Ownership has two guards:

- :class:`StateLock` — an exclusive ``flock`` on ``<state_dir>/<job_id>.lock`` for the life of the
  run. A second coordinator on the same state directory is refused at once. The kernel drops the
  lock when the process dies, so a crash never leaves it behind.
- The *epoch* — a counter saved in the state directory, raised each time a coordinator takes the
  job. Instructions carry it; agents ignore instructions of an older epoch than one they have seen,
  so a stale owner (one that lost its claim) cannot steer them. On a shared broker the retained
  job state names its owner and epoch; the fleet refuses to claim a job whose retained state says
  another live owner is running it (see ``MqttFleet.claim``).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from types import TracebackType

from link import LinkError, atomic_write_json

from .errors import CheckpointError, OwnershipError

__all__ = ["StateLock", "load_epoch", "save_epoch"]


class StateLock:
    """``with StateLock(state_dir, job_id):`` holds the job's state directory exclusively.

    Raises :class:`OwnershipError` when another process holds it (the message names its pid) and
    :class:`CheckpointError` when the directory cannot be used."""

    def __init__(self, state_dir: Path, job_id: str) -> None:
        self.path = state_dir / f"{job_id}.lock"
        self._job_id = job_id
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CheckpointError(f"cannot open the lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OwnershipError(
                f"job {self._job_id!r}: the state directory {self.path.parent} is in use by "
                f"another coordinator (pid {holder}); stop it, or give this run another job_id "
                "or state directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _epoch_path(state_dir: Path, job_id: str) -> Path:
    return state_dir / f"{job_id}.owner.json"


def load_epoch(state_dir: Path, job_id: str) -> int:
    """The job's last ownership epoch (0 for a job never started); :class:`CheckpointError`
    when the file is unreadable."""
    path = _epoch_path(state_dir, job_id)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the ownership file {path}: {exc}") from exc
    epoch = data.get("epoch") if isinstance(data, dict) else None
    if type(epoch) is not int or epoch < 0:
        raise CheckpointError(f"{path}: 'epoch' must be a non-negative integer, got {epoch!r}")
    return epoch


def save_epoch(state_dir: Path, job_id: str, epoch: int, *, owner: str) -> None:
    """Record that ``owner`` (a coordinator session id) took the job at ``epoch``."""
    try:
        atomic_write_json(
            _epoch_path(state_dir, job_id), {"epoch": epoch, "owner": owner, "pid": os.getpid()}
        )
    except (LinkError, OSError) as exc:
        raise CheckpointError(f"cannot write the ownership file: {exc}") from exc
