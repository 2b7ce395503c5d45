"""Job files (``JOB.toml``) written to a temporary directory and read back with ``load_job``."""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

import pytest

from coordinator.errors import JobConfigError
from coordinator.job import load_job, load_normalization

MINIMAL = """
job_id = "digits"
holdout = "data/holdout.npz"

[constraints]
target_accuracy = 0.9
time_budget_s = 300
"""


def job_file(directory: Path, text: str, name: str = "JOB.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_minimal_job_gets_the_documented_defaults(tmp_path: Path) -> None:
    spec = load_job(job_file(tmp_path, MINIMAL))

    assert spec.job_id == "digits"
    assert spec.constraints.target_accuracy == 0.9
    assert spec.constraints.time_budget_s == 300
    assert spec.constraints.max_rounds is None
    assert spec.strategy.name == "fedavg"
    assert spec.model.hidden == [64, 32]
    assert (spec.rounds.participants, spec.rounds.min_results) == (8, 1)
    assert spec.rounds.local_steps is None


def test_a_relative_holdout_is_resolved_against_the_job_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory must not matter

    spec = load_job(job_file(jobs, MINIMAL.replace("data/holdout.npz", "../data/holdout.npz")))

    assert spec.holdout == (tmp_path / "data" / "holdout.npz").resolve()
    assert spec.holdout.is_absolute()


def test_an_absolute_holdout_is_kept(tmp_path: Path) -> None:
    absolute = tmp_path / "somewhere" / "holdout.npz"

    spec = load_job(job_file(tmp_path, MINIMAL.replace("data/holdout.npz", str(absolute))))

    assert spec.holdout == absolute


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ('colour = "red"\n', "colour"),
        ("[rounds]\npartcipants = 3\n", "rounds.partcipants"),
        ("[model]\nhiden = [8]\n", "model.hiden"),
    ],
)
def test_an_unknown_key_is_rejected_by_name(tmp_path: Path, extra: str, named: str) -> None:
    text = MINIMAL.replace("[constraints]", extra + "\n[constraints]")
    path = job_file(tmp_path, text)

    with pytest.raises(JobConfigError, match=rf"{named}: Extra inputs are not permitted") as info:
        load_job(path)
    assert str(path) in str(info.value)


def test_min_results_above_participants_is_rejected(tmp_path: Path) -> None:
    path = job_file(tmp_path, MINIMAL + "\n[rounds]\nparticipants = 3\nmin_results = 4\n")

    with pytest.raises(
        JobConfigError, match=r"min_results \(4\) exceeds rounds.participants \(3\)"
    ):
        load_job(path)


def test_min_results_equal_to_participants_is_fine(tmp_path: Path) -> None:
    path = job_file(tmp_path, MINIMAL + "\n[rounds]\nparticipants = 3\nmin_results = 3\n")

    assert load_job(path).rounds.min_results == 3


def test_missing_constraints_are_named(tmp_path: Path) -> None:
    path = job_file(tmp_path, 'job_id = "digits"\nholdout = "h.npz"\n')

    with pytest.raises(JobConfigError, match="constraints"):
        load_job(path)


def test_out_of_range_values_are_rejected(tmp_path: Path) -> None:
    path = job_file(tmp_path, MINIMAL.replace("target_accuracy = 0.9", "target_accuracy = 1.5"))

    with pytest.raises(JobConfigError, match=r"constraints\.target_accuracy"):
        load_job(path)


def test_overrides_replace_values_of_the_file(tmp_path: Path) -> None:
    path = job_file(tmp_path, MINIMAL)

    spec = load_job(
        path,
        **{
            "constraints.target_accuracy": 0.5,
            "rounds.participants": 4,  # a section the file does not have
            "job_id": "digits-2",  # a top-level key
        },
    )

    assert spec.constraints.target_accuracy == 0.5
    assert spec.constraints.time_budget_s == 300  # the rest of the section stays
    assert spec.rounds.participants == 4
    assert spec.job_id == "digits-2"


def test_an_invalid_override_is_rejected_like_a_bad_file(tmp_path: Path) -> None:
    path = job_file(tmp_path, MINIMAL)

    with pytest.raises(JobConfigError, match=r"rounds\.min_results"):
        load_job(path, **{"rounds.participants": 1, "rounds.min_results": 2})


def test_bad_toml_is_a_job_config_error(tmp_path: Path) -> None:
    path = job_file(tmp_path, MINIMAL + "\n[rounds\nparticipants = 3\n")

    with pytest.raises(JobConfigError, match="not valid TOML") as info:
        load_job(path)
    assert isinstance(info.value.__cause__, tomllib.TOMLDecodeError)
    assert isinstance(info.value, ValueError)


def test_a_missing_file_is_a_job_config_error(tmp_path: Path) -> None:
    with pytest.raises(JobConfigError, match="cannot read job file"):
        load_job(tmp_path / "nope.toml")


KRUM = '\n[strategy]\nname = "krum"\nparams = { num_malicious = 1 }\n'


def test_krum_with_too_few_participants_is_refused_at_load(tmp_path: Path) -> None:
    """Issue 13: Krum with num_malicious = 1 (needs 5 updates) and participants = 4 was accepted,
    then refused 385 rounds in a row with no model."""
    path = job_file(tmp_path, MINIMAL + KRUM + "\n[rounds]\nparticipants = 4\n")

    with pytest.raises(JobConfigError) as info:
        load_job(path)
    message = str(info.value)
    assert "at least 5 updates" in message
    assert "rounds.participants = 4" in message
    assert "raise rounds.participants to at least 5" in message
    assert "lower strategy.params.num_malicious to 0" in message


def test_krum_with_enough_participants_loads(tmp_path: Path) -> None:
    path = job_file(tmp_path, MINIMAL + KRUM + "\n[rounds]\nparticipants = 5\n")

    assert load_job(path).strategy.name == "krum"


def test_krum_under_a_planner_that_may_ask_fewer_is_refused(tmp_path: Path) -> None:
    text = MINIMAL + KRUM + '\n[rounds]\nparticipants = 8\n\n[planner]\nname = "hyperfl"\n'
    assert load_job(job_file(tmp_path, text)).planner.name == "hyperfl"

    with pytest.raises(JobConfigError, match=r"planner\.min_participants = 3 .* at least 5"):
        load_job(job_file(tmp_path, text + "min_participants = 3\n"))


def test_multi_krum_needs_f_plus_m_updates(tmp_path: Path) -> None:
    strategy = '\n[strategy]\nname = "krum"\nparams = { num_malicious = 1, num_to_keep = 6 }\n'
    path = job_file(tmp_path, MINIMAL + strategy + "\n[rounds]\nparticipants = 6\n")

    with pytest.raises(JobConfigError, match="at least 7 updates"):
        load_job(path)


def test_strategy_parameters_are_checked_at_load(tmp_path: Path) -> None:
    bad = '\n[strategy]\nname = "fedadam"\nparams = { beta_1 = 1.5 }\n'
    with pytest.raises(JobConfigError, match="strategy: fedadam beta_1"):
        load_job(job_file(tmp_path, MINIMAL + bad))
    with pytest.raises(JobConfigError, match="unknown strategy 'fedavgg'"):
        load_job(job_file(tmp_path, MINIMAL + '\n[strategy]\nname = "fedavgg"\n'))


def test_normalization_statistics_are_read_relative_to_the_job_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "normalization.json").write_text(
        '{"offset": [1.0, 2.0], "scale": [0.5, 0.25], "mean": [1.0, 2.0], "rows": 10}'
    )
    text = MINIMAL.replace(
        'holdout = "data/holdout.npz"',
        'holdout = "data/holdout.npz"\nnormalization = "data/normalization.json"',
    )
    spec = load_job(job_file(tmp_path, text))
    assert spec.normalization == (tmp_path / "data" / "normalization.json").resolve()
    stats = load_normalization(spec.normalization)
    assert stats is not None
    assert (stats.offset, stats.scale) == ((1.0, 2.0), (0.5, 0.25))
    assert load_normalization(None) is None


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (None, "cannot read"),
        ("not json", "not JSON"),
        ('{"offset": [0.0]}', "'scale'"),
        ('{"offset": [0.0, 1.0], "scale": [1.0, 2.0, 3.0]}', "offset has 2 values, scale 3"),
        ('{"offset": [0.0], "scale": [NaN]}', "non-finite"),
        ('{"offset": "0", "scale": [1.0]}', "'offset'"),
    ],
)
def test_bad_normalization_statistics_are_refused_at_load(
    tmp_path: Path, content: str | None, named: str
) -> None:
    if content is not None:
        (tmp_path / "stats.json").write_text(content)
    text = MINIMAL.replace(
        'holdout = "data/holdout.npz"', 'holdout = "data/holdout.npz"\nnormalization = "stats.json"'
    )
    with pytest.raises(JobConfigError, match=named):
        load_job(job_file(tmp_path, text))


def test_one_number_normalises_every_feature(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    path.write_text('{"offset": 0.0, "scale": [0.5, 0.25, 2.0]}')
    stats = load_normalization(path)
    assert stats is not None
    assert stats.offset == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("constraints", "time_budget_s"),
        ("rounds", "round_timeout_s"),
        ("rounds", "learning_rate"),
        ("rounds", "wait_for_agents_s"),
    ],
)
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_toml_infinities_and_nan_are_refused_by_name(
    tmp_path: Path, table: str, key: str, value: str
) -> None:
    """Issue 17: TOML writes ``inf`` and ``nan``, and ``inf`` passed every ``> 0`` check: an
    endless time budget, or instruction budgets that agents drop as ``non_finite``."""
    if table == "constraints":
        text = MINIMAL.replace("time_budget_s = 300", f"{key} = {value}")
    else:
        text = MINIMAL + f"\n[{table}]\n{key} = {value}\n"
    with pytest.raises(
        JobConfigError, match=rf"{table}\.{key}: Input should be (a finite number|greater)"
    ):
        load_job(job_file(tmp_path, text))


# --- mode = "async" --------------------------------------------------------------------------


def async_job(tmp_path: Path, table: str = "", top: str = 'mode = "async"\n') -> Path:
    return job_file(tmp_path, top + MINIMAL + table)


def test_a_job_is_synchronous_unless_it_says_async(tmp_path: Path) -> None:
    assert load_job(job_file(tmp_path, MINIMAL)).mode == "sync"


def test_an_async_job_gets_fedbuffs_defaults_and_its_own_settings(tmp_path: Path) -> None:
    spec = load_job(async_job(tmp_path))
    assert spec.mode == "async"
    a = spec.asynchronous
    assert (a.buffer_size, a.concurrency, a.max_staleness, a.server_lr) == (10, 20, 10, 1.0)

    table = "\n[async]\nbuffer_size = 4\nconcurrency = 8\nmax_staleness = 3\nserver_lr = 0.5\n"
    a = load_job(async_job(tmp_path, table)).asynchronous
    assert (a.buffer_size, a.concurrency, a.max_staleness, a.server_lr) == (4, 8, 3, 0.5)


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ("\n[async]\nbufer_size = 4\n", "async.bufer_size: Extra inputs are not permitted"),
        ("\n[async]\nbuffer_size = 0\n", "async.buffer_size: Input should be greater than"),
        ("\n[async]\nmax_staleness = -1\n", "async.max_staleness: Input should be greater"),
        ("\n[async]\nserver_lr = 0\n", "async.server_lr: Input should be greater than 0"),
    ],
)
def test_bad_async_settings_are_rejected_by_name(tmp_path: Path, table: str, named: str) -> None:
    with pytest.raises(JobConfigError, match=named):
        load_job(async_job(tmp_path, table))


def test_an_unknown_mode_and_a_stray_async_table_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(JobConfigError, match="mode: Input should be 'sync' or 'async'"):
        load_job(async_job(tmp_path, top='mode = "asynchronous"\n'))
    with pytest.raises(JobConfigError, match=r"an \[async\] table is given but mode is \"sync\""):
        load_job(async_job(tmp_path, "\n[async]\nbuffer_size = 4\n", top=""))


def test_async_mode_takes_the_rule_over_each_buffer_not_fedbuff(tmp_path: Path) -> None:
    with pytest.raises(JobConfigError, match='strategy fedbuff is what mode = "async" runs'):
        load_job(async_job(tmp_path, '\n[strategy]\nname = "fedbuff"\n'))


def test_krum_in_async_mode_needs_a_buffer_it_can_aggregate(tmp_path: Path) -> None:
    with pytest.raises(JobConfigError, match=r"buffers of at least 5 updates.*raise it to 5"):
        load_job(async_job(tmp_path, KRUM + "\n[async]\nbuffer_size = 4\n"))
    spec = load_job(
        async_job(tmp_path, KRUM + "\n[async]\nbuffer_size = 5\n[rounds]\nparticipants = 2\n")
    )
    assert spec.asynchronous.buffer_size == 5  # rounds.participants does not matter here


@pytest.mark.parametrize(("agents", "concurrency", "buffer_size"), [(50, 15, 5), (3, 3, 3)])
def test_the_demos_async_job_file_loads_with_its_fedbuff_settings(
    tmp_path: Path, agents: int, concurrency: int, buffer_size: int
) -> None:
    from hyperfleet.demo import DemoSettings, _job_toml

    path = tmp_path / "job.toml"
    settings = DemoSettings(out=tmp_path, mode="async")
    path.write_text(_job_toml(settings, tmp_path / "holdout.npz", agents, None))

    spec = load_job(path)
    assert spec.mode == "async"
    assert spec.asynchronous.concurrency == concurrency
    assert spec.asynchronous.buffer_size == buffer_size
    sync = DemoSettings(out=tmp_path)
    path.write_text(_job_toml(sync, tmp_path / "holdout.npz", agents, None))
    assert load_job(path).mode == "sync"
