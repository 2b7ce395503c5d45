"""Finding this process's CPU cgroup (pure) and the quota files each cgroup version takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.roma.cgroup import PERIOD_US, CpuGroups, CpuHierarchy, find_cpu_hierarchy

V1_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_SELF = "4:memory:/box\n2:cpu,cpuacct:/jobs/roma\n0::/\n"
V2_MOUNTS = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V2_SELF = "0::/system.slice/roma.service\n"


def test_a_v1_cpu_hierarchy_is_found_under_this_process_group() -> None:
    assert find_cpu_hierarchy(V1_SELF, V1_MOUNTS) == CpuHierarchy(
        path=Path("/sys/fs/cgroup/cpu,cpuacct/jobs/roma"), version=1
    )


def test_a_v2_group_is_found_from_the_unified_mount() -> None:
    assert find_cpu_hierarchy(V2_SELF, V2_MOUNTS) == CpuHierarchy(
        path=Path("/sys/fs/cgroup/system.slice/roma.service"), version=2
    )


def test_no_cgroup_mount_means_none() -> None:
    assert find_cpu_hierarchy("0::/\n", "22 1 0:21 / /proc rw - proc proc rw\n") is None
    assert find_cpu_hierarchy("", "") is None


@pytest.mark.parametrize(("version", "cores", "files"), [
    (2, 0.4, {"cpu.max": f"40000 {PERIOD_US}\n"}),
    (1, 1.5, {"cpu.cfs_quota_us": "150000\n", "cpu.cfs_period_us": f"{PERIOD_US}\n"}),
    (2, 0.001, {"cpu.max": f"1000 {PERIOD_US}\n"}),  # the kernel's 1 ms floor
])  # fmt: skip
def test_the_quota_is_written_in_each_versions_format(
    tmp_path: Path, version: int, cores: float, files: dict[str, str]
) -> None:
    """The files of a cgroup directory, as plain files: the format each version's kernel reads."""
    groups = CpuGroups(tmp_path, 2 if version == 2 else 1, owned=False)
    group = groups.group("digits/3")
    assert group.path == tmp_path / "roma-digits_3"  # no path tricks in a model's name
    group.set_cores(cores)
    for name, text in files.items():
        assert (group.path / name).read_text() == text
    quota, period = group.quota()
    assert (quota, period) == (max(1000, round(cores * PERIOD_US)), PERIOD_US)
    with pytest.raises(ValueError, match="positive"):
        group.set_cores(0.0)
