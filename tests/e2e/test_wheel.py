"""An installed wheel works away from the repository: it carries the shipped device classes and
fleets, and ``agent.device_class`` finds them there (not in a checkout that is not there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

SHIPPED = {
    "firmware_configs/jetson-orin-nano.toml",
    "firmware_configs/raspberry-pi-5.toml",
    "firmware_configs/x86-cpu.toml",
    "firmware_configs/x86-gpu-server.toml",
    "firmware_configs/fleets/mixed-100.toml",
    "firmware_configs/fleets/mixed-50.toml",
    "firmware_configs/fleets/small-4.toml",
    "coordinator/dashboard/static/index.html",
    "coordinator/dashboard/static/dashboard.js",
    "coordinator/dashboard/static/dashboard.css",
}

_PROBE = """
import json
from agent.device_class import DEFAULT_CONFIG_DIR, list_fleets, load_device_class, load_fleet
print(json.dumps({
    "dir": str(DEFAULT_CONFIG_DIR),
    "pi": load_device_class("raspberry-pi-5").name,
    "fleet": load_fleet("mixed-50").total,
    "fleets": list_fleets(),
}))
"""


def _pip(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_an_installed_wheel_finds_its_device_classes(clone: Path, tmp_path: Path) -> None:
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), ".", cwd=clone)
    (wheel,) = wheels.glob("hyperfleet-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert names >= SHIPPED, sorted(SHIPPED - names)

    _pip(
        "install",
        "--no-deps",
        "--no-compile",
        "-q",
        "--target",
        str(target),
        str(wheel),
        cwd=tmp_path,
    )
    # Only the installed copy is importable: not the checkout, not the clone.
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout)
    assert Path(found["dir"]).is_relative_to(target.resolve())
    assert found["pi"] == "raspberry-pi-5"
    assert found["fleet"] == 50
    assert found["fleets"] == ["mixed-100", "mixed-50", "small-4"]
