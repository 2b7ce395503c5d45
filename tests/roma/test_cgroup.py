"""The kernel's CPU quota on this machine's real cgroups: a process moved into a model's group
is throttled to its cores, and ROMA puts each model's workers into one and follows its
controller. Skipped (with the reason) where this process may not write a cpu cgroup."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from cloud.roma import RomaRunner, ServeConfig
from cloud.roma.cgroup import CgroupUnavailable, CpuGroups

from .conftest import TrainedModels, make_repository


@pytest.fixture
def groups() -> Iterator[CpuGroups]:
    try:
        made = CpuGroups.detect()
    except CgroupUnavailable as exc:
        pytest.skip(f"no writable cpu cgroup here: {exc}")
    yield made
    made.close()


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_process_in_a_group_is_held_to_its_cores(groups: CpuGroups) -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    group = groups.group("busy-1")
    try:
        group.add(busy.pid)
        group.set_cores(0.2)
        assert str(busy.pid) in (group.path / "cgroup.procs").read_text().split()
        start_cpu, start = _cpu_s(busy.pid), time.monotonic()
        time.sleep(2.0)
        share = (_cpu_s(busy.pid) - start_cpu) / (time.monotonic() - start)
        assert group.throttled_s() > 0  # the kernel held it back ...
        assert share < 0.5  # ... to about 0.2 of a core (1.0 unthrottled)
    finally:
        busy.kill()
        busy.wait()
    group.close()
    assert not group.path.exists()


def test_by_default_the_quota_stays_in_user_space(
    tmp_path: Path, digits_models: TrainedModels
) -> None:
    repo = make_repository(tmp_path / "repo", digits_models)

    async def go() -> str:
        async with RomaRunner(ServeConfig(repository=repo, port=0)) as runner:
            return runner.server.served("digits").quota_mode

    assert asyncio.run(go()) == "user"


def test_roma_puts_each_models_workers_in_a_group_and_follows_its_cores(
    tmp_path: Path, digits_models: TrainedModels
) -> None:
    try:
        CpuGroups.detect().close()
    except CgroupUnavailable as exc:
        pytest.skip(f"no writable cpu cgroup here: {exc}")
    repo = make_repository(tmp_path / "repo", digits_models)
    config = ServeConfig(repository=repo, port=0, cgroup="auto")

    async def go() -> tuple[dict[str, object], Path, set[str], tuple[int | None, int]]:
        async with RomaRunner(config) as runner, aiohttp.ClientSession() as session:
            served = runner.server.served("digits")
            assert served.cgroup is not None
            pids = set((served.cgroup.path / "cgroup.procs").read_text().split())
            workers = {str(w.pid) for w in served._workers}
            served.set_cores(0.3)
            quota = served.cgroup.quota()
            async with session.get(f"{runner.url}/v2/models/digits/stats") as response:
                stats = await response.json()
            assert workers <= pids
            return stats, served.cgroup.path, pids, quota

    stats, path, pids, quota = asyncio.run(go())
    assert stats["quota"] == "kernel"
    assert quota == (30000, 100000)
    assert str(os.getpid()) not in pids  # only the workers, never the server
    assert not path.exists()  # removed with the version
