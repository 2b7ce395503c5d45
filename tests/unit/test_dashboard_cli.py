"""The dashboard's flags: off by default, on with ``--dashboard PORT`` for the coordinator and the
demo, on 127.0.0.1 unless told otherwise; a ROMA URL that is not http(s) is a usage error."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperfleet.cli import build_parser, main
from hyperfleet.commands import coordinator_settings
from hyperfleet.demo import DemoSettings
from hyperfleet.errors import UsageError
from hyperfleet.exits import EXIT_USAGE

JOB = """job_id = "cli"
holdout = "{holdout}"
[constraints]
target_accuracy = 0.9
time_budget_s = 60
"""


@pytest.fixture
def job(tmp_path: Path) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(JOB.format(holdout=tmp_path / "holdout.npz"))
    return path


def test_the_coordinator_serves_no_dashboard_unless_asked(job: Path) -> None:
    run = coordinator_settings(build_parser().parse_args(["coordinator", "--job", str(job)]))
    assert run.dashboard_port is None
    assert run.roma_url is None


def test_the_coordinator_dashboard_flags_reach_its_settings(job: Path) -> None:
    args = ["coordinator", "--job", str(job), "--dashboard", "8080"]
    args += ["--roma-url", "http://127.0.0.1:8000"]
    run = coordinator_settings(build_parser().parse_args(args))
    assert run.dashboard_port == 8080
    assert run.dashboard_host == "127.0.0.1"
    assert run.roma_url == "http://127.0.0.1:8000"


def test_a_roma_url_that_is_not_http_is_a_usage_error(job: Path) -> None:
    args = ["coordinator", "--job", str(job), "--dashboard", "0", "--roma-url", "roma:8000"]
    with pytest.raises(UsageError, match="--roma-url"):
        coordinator_settings(build_parser().parse_args(args))
    assert main(args) == EXIT_USAGE


def test_a_bad_dashboard_port_is_refused_by_the_parser(job: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["coordinator", "--job", str(job), "--dashboard", "70000"])
    assert exc.value.code == EXIT_USAGE


def test_the_demo_passes_its_dashboard_port_on(tmp_path: Path) -> None:
    off = DemoSettings.from_args(build_parser().parse_args(["demo", "--out", str(tmp_path)]))
    assert off.dashboard is None
    args = build_parser().parse_args(["demo", "--out", str(tmp_path), "--dashboard", "8080"])
    assert DemoSettings.from_args(args).dashboard == 8080
