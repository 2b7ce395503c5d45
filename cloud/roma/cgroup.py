"""The kernel's CPU quota per model: CFS bandwidth control through cgroups, where this process
may write them.

A model's CPU workers are moved into a cgroup of their own and its quota is set to the
controller's cores: ``cores × period`` microseconds of CPU per ``period`` (100 ms), over all the
group's processes and threads. The kernel then holds the model to its allocation however its
workers' threads are scheduled, which the user-space emulation (:mod:`cloud.roma.quota`) can
only approximate batch by batch. Linux kernel docs: ``admin-guide/cgroup-v2.rst`` (``cpu.max``)
and ``scheduler/sched-bwc.rst`` (v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``).

::

    groups = CpuGroups.detect()          # None where no writable cpu controller is found
    group = groups.group("digits-3")     # {root}/digits-3/
    group.add(worker.pid)
    group.set_cores(0.4)                 # cpu.max = "40000 100000"
    group.close(); groups.close()        # removed once their processes have exited

cgroup v2 (``0::/path`` in ``/proc/self/cgroup``, a ``cgroup2`` mount): the ``cpu`` controller
must be enabled for the children of this process's group (``+cpu`` in its
``cgroup.subtree_control``), which the kernel allows only for a group without processes of its
own; the server therefore first moves itself into a leaf ``roma-server`` (as under systemd with
``Delegate=yes``). cgroup v1 (a ``cpu`` hierarchy): the groups are made under this process's
``cpu`` group, in ``hyperfleet-roma-{pid}``. Anything that fails on the way is a
:class:`CgroupUnavailable` naming the file, and the server falls back to the user-space quota.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import RomaError

__all__ = [
    "PERIOD_US",
    "CgroupUnavailable",
    "CpuGroup",
    "CpuGroups",
    "CpuHierarchy",
    "find_cpu_hierarchy",
]

_log = logging.getLogger(__name__)

PERIOD_US = 100_000
"""The CFS period: quotas are ``cores × PERIOD_US`` microseconds per period."""
_MIN_QUOTA_US = 1_000  # the kernel's floor


class CgroupUnavailable(RomaError):
    """No cgroup with a writable CPU controller: the quota stays in user space."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuHierarchy:
    """Where this process's CPU cgroup is: its directory and the cgroup version."""

    path: Path
    version: Literal[1, 2]


def find_cpu_hierarchy(proc_cgroup: str, mountinfo: str) -> CpuHierarchy | None:
    """This process's CPU cgroup from the text of ``/proc/self/cgroup`` and
    ``/proc/self/mountinfo`` (pure); ``None`` when neither a v1 ``cpu`` hierarchy nor a v2
    mount is there. A v1 ``cpu`` hierarchy wins (on a hybrid host the v2 mount has no ``cpu``);
    whether a v2 group offers ``cpu`` is for :meth:`CpuGroups.detect` to read."""
    mounts_v1: dict[str, Path] = {}
    mount_v2: Path | None = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, extra = left.split(), right.split()
        if len(fields) < 5 or len(extra) < 3:
            continue
        if extra[0] == "cgroup2":
            mount_v2 = Path(fields[4])
        elif extra[0] == "cgroup":
            for option in extra[2].split(","):
                mounts_v1[option] = Path(fields[4])
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if "cpu" in controllers.split(",") and "cpu" in mounts_v1:
            return CpuHierarchy(path=mounts_v1["cpu"] / rel.lstrip("/"), version=1)
    for line in proc_cgroup.splitlines():
        if line.startswith("0::") and mount_v2 is not None:
            return CpuHierarchy(path=mount_v2 / line[3:].lstrip("/"), version=2)
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, text: str) -> None:
    try:
        with path.open("w") as f:
            f.write(text)
    except OSError as exc:
        raise CgroupUnavailable(
            f"cannot write {text.strip()!r} to {path}: {exc.strerror or exc}"
        ) from exc


class CpuGroup:
    """One model version's cgroup; make it with :meth:`CpuGroups.group`."""

    def __init__(self, path: Path, version: Literal[1, 2]) -> None:
        self.path = path
        self.version = version
        self.cores: float | None = None

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the group."""
        _write(self.path / "cgroup.procs", f"{pid}\n")

    def set_cores(self, cores: float) -> None:
        """Hold the group to ``cores`` CPUs (``ValueError`` unless positive and finite)."""
        if not (math.isfinite(cores) and cores > 0):
            raise ValueError(f"cores must be positive and finite, got {cores}")
        quota = max(_MIN_QUOTA_US, round(cores * PERIOD_US))
        if self.version == 2:
            _write(self.path / "cpu.max", f"{quota} {PERIOD_US}\n")
        else:
            _write(self.path / "cpu.cfs_period_us", f"{PERIOD_US}\n")
            _write(self.path / "cpu.cfs_quota_us", f"{quota}\n")
        self.cores = cores

    def quota(self) -> tuple[int | None, int]:
        """The quota the kernel holds now, as (microseconds or ``None`` for none, period)."""
        if self.version == 2:
            text, period = _read(self.path / "cpu.max").split()
            return (None if text == "max" else int(text)), int(period)
        quota = int(_read(self.path / "cpu.cfs_quota_us"))
        return (None if quota < 0 else quota), int(_read(self.path / "cpu.cfs_period_us"))

    def throttled_s(self) -> float:
        """Seconds the kernel held the group back so far (``cpu.stat``)."""
        stat = dict(
            line.split(maxsplit=1)
            for line in _read(self.path / "cpu.stat").splitlines()
            if " " in line
        )
        if "throttled_usec" in stat:
            return int(stat["throttled_usec"]) / 1e6
        return int(stat.get("throttled_time", 0)) / 1e9

    def close(self) -> None:
        """Remove the group; its processes must have exited (a warning otherwise)."""
        _rmdir(self.path)


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        _log.warning("could not remove cgroup %s: %s", path, exc.strerror or exc)


_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class CpuGroups:
    """The server's cgroups, one per model version, under ``root``."""

    def __init__(self, root: Path, version: Literal[1, 2], *, owned: bool) -> None:
        self.root = root
        self.version = version
        self._owned = owned
        self._groups: dict[str, CpuGroup] = {}

    @classmethod
    def detect(cls, *, hierarchy: CpuHierarchy | None = None, pid: int | None = None) -> CpuGroups:
        """The server's groups under this process's CPU cgroup. Raises
        :class:`CgroupUnavailable` with the reason when there is none it may write."""
        pid = os.getpid() if pid is None else pid
        if hierarchy is None:
            hierarchy = find_cpu_hierarchy(
                _read(Path("/proc/self/cgroup")), _read(Path("/proc/self/mountinfo"))
            )
        if hierarchy is None:
            raise CgroupUnavailable("no cgroup hierarchy with the cpu controller")
        if not os.access(hierarchy.path, os.W_OK):
            raise CgroupUnavailable(f"{hierarchy.path} is not writable by this process")
        if hierarchy.version == 1:
            _sweep_stale(hierarchy.path)
            root = hierarchy.path / f"hyperfleet-roma-{pid}"
            try:
                root.mkdir(exist_ok=True)
            except OSError as exc:
                raise CgroupUnavailable(f"cannot make {root}: {exc.strerror or exc}") from exc
            return cls(root, 1, owned=True)
        root = hierarchy.path
        if "cpu" not in _read(root / "cgroup.controllers").split():
            raise CgroupUnavailable(f"the cpu controller is not delegated to {root}")
        _enable_cpu_for_children(root, pid)
        return cls(root, 2, owned=False)

    def group(self, name: str) -> CpuGroup:
        """A new group for ``name`` (a model version; made safe as a directory name)."""
        path = self.root / f"roma-{_SAFE.sub('_', name)}"
        try:
            path.mkdir(exist_ok=True)
        except OSError as exc:
            raise CgroupUnavailable(f"cannot make {path}: {exc.strerror or exc}") from exc
        group = CpuGroup(path, self.version)
        self._groups[name] = group
        return group

    def close(self) -> None:
        """Remove every group made here (and the server's own root on v1)."""
        for group in self._groups.values():
            group.close()
        self._groups.clear()
        if self._owned:
            _rmdir(self.root)


def _enable_cpu_for_children(root: Path, pid: int) -> None:
    """``+cpu`` in ``root``'s ``cgroup.subtree_control``; the kernel refuses it (EBUSY) while
    ``root`` holds processes, so this process first moves into the leaf ``roma-server``."""
    control = root / "cgroup.subtree_control"
    if "cpu" in _read(control).split():
        return
    try:
        _write(control, "+cpu\n")
        return
    except CgroupUnavailable as exc:
        cause = exc.__cause__
        if not (isinstance(cause, OSError) and cause.errno == errno.EBUSY):
            raise
    leaf = root / "roma-server"
    with contextlib.suppress(FileExistsError):
        leaf.mkdir()
    _write(leaf / "cgroup.procs", f"{pid}\n")
    _write(control, "+cpu\n")


def _sweep_stale(parent: Path) -> None:
    """Remove the empty groups of v1 servers that are gone (a crash leaves them)."""
    for root in _children(parent, "hyperfleet-roma-"):
        owner = root.name.rpartition("-")[2]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            for group in _children(root, "roma-"):
                _rmdir(group)
            _rmdir(root)


def _children(parent: Path, prefix: str) -> Iterable[Path]:
    try:
        return [p for p in parent.iterdir() if p.is_dir() and p.name.startswith(prefix)]
    except OSError:
        return []
