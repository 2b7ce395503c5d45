"""An id that cannot be one MQTT topic level is refused at start, wherever it enters.

A TAB, NUL, ``+``, ``#`` or ``/`` in an agent id, a job id or a model name would reach a topic:
Mosquitto drops a client that publishes there, and paho re-sends the queued message on every
reconnect, forever. :func:`protocol.check_id` is the one check; these tests go through each door:
the ``hyperfleet`` command line, job files, fleet files, ROMA's settings and the library
constructors.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.daemon import AgentSettings
from agent.device_class import load_fleet
from agent.errors import ConfigError
from cloud.roma import ServeConfigError
from cloud.roma.config import load_serve_config
from coordinator.errors import JobConfigError
from coordinator.job import load_job
from hyperfleet.cli import main
from hyperfleet.exits import EXIT_USAGE
from protocol import ID_PATTERN, InvalidTopic, Topics, check_id, parse_broker_url

BAD = {
    "TAB": "agent\t1",
    "NUL": "agent\x001",
    "plus": "agent+1",
    "hash": "agent#1",
    "slash": "site/agent-1",
    "newline at the end": "agent-1\n",
    "space": "agent 1",
    "empty": "",
    "65 characters": "a" * 65,
}
TOML_ESCAPED = {  # the same ids as TOML basic strings
    name: '"' + "".join(c if c.isalnum() or c in "+#/ -" else f"\\u{ord(c):04x}" for c in v) + '"'
    for name, v in BAD.items()
}


@pytest.mark.parametrize("name", BAD)
def test_check_id_refuses_and_names_what_it_checked(name: str) -> None:
    with pytest.raises(InvalidTopic, match=r"invalid job id .*letters, digits"):
        check_id(BAD[name], "job id")
    assert not ID_PATTERN.fullmatch(BAD[name])


@pytest.mark.parametrize("name", BAD)
def test_the_agent_command_refuses_the_id_before_it_connects(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on port 9: had the id passed, the agent would try to connect there.
    argv = ["agent", "--id", BAD[name], "--data", str(tmp_path / "none.npz")]
    argv += ["--device-class", "x86-cpu", "--broker", "mqtt://127.0.0.1:9"]
    assert main(argv) == EXIT_USAGE
    assert "invalid agent id" in capsys.readouterr().err


def test_the_library_refuses_a_bad_agent_id_at_construction() -> None:
    for bad in BAD.values():
        with pytest.raises(InvalidTopic):
            AgentSettings(
                agent_id=bad, broker=parse_broker_url("mqtt://127.0.0.1:9"), device_class="x"
            )


def _job_file(tmp_path: Path, job_id: str, model: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(
        f'job_id = {job_id}\nholdout = "holdout.npz"\n[model]\nname = {model}\n'
        "[constraints]\ntarget_accuracy = 0.9\ntime_budget_s = 60\n"
    )
    return path


@pytest.mark.parametrize("name", BAD)
def test_a_job_file_with_a_bad_job_id_or_model_name_is_refused_at_load(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = '"digits"'
    with pytest.raises(JobConfigError, match=r"job_id.*invalid job id"):
        load_job(_job_file(tmp_path, TOML_ESCAPED[name], good))
    with pytest.raises(JobConfigError, match=r"model.name.*invalid model name"):
        load_job(_job_file(tmp_path, good, TOML_ESCAPED[name]))
    # and through the command line: a usage error, before any broker is reached
    job = _job_file(tmp_path, TOML_ESCAPED[name], good)
    argv = ["coordinator", "--job", str(job), "--broker", "mqtt://127.0.0.1:9"]
    argv += ["--state-dir", str(tmp_path / "s"), "--out", str(tmp_path / "o")]
    assert main(argv) == EXIT_USAGE
    assert "invalid job id" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ('device_class = "x86/cpu"\ncount = 2', "device_class"),
        ('device_class = "x86-cpu\\t"\ncount = 2', "device_class"),
        ('device_class = "x86-cpu"\ncount = 1000000000000', "count"),
    ],
)
def test_a_fleet_file_that_would_make_bad_agent_ids_is_refused(
    entry: str, complaint: str, tmp_path: Path
) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(f'name = "f"\n[[agents]]\n{entry}\n')
    with pytest.raises(ConfigError, match=complaint):
        load_fleet(path)


@pytest.mark.parametrize("prefix", ["hf\tv1", "hf\x00", "hf/+", "hf/#", "hf/", "$SYS/hf", ""])
def test_a_bad_topic_prefix_is_refused_by_flag_settings_and_library(
    prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(InvalidTopic, match="invalid topic prefix"):
        Topics(prefix)
    with pytest.raises(SystemExit) as exited:  # the parser: a usage error
        main(["watch", "--prefix", prefix, "--broker", "mqtt://127.0.0.1:9"])
    assert exited.value.code == EXIT_USAGE
    assert "prefix" in capsys.readouterr().err
    with pytest.raises(ServeConfigError, match="prefix"):
        load_serve_config(None, repository=tmp_path, prefix=prefix)
