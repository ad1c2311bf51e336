"""`unbroken run` option parsing: what it accepts reaches RunConfig; what it rejects is a usage error."""

from __future__ import annotations

import math

import pytest

from unbroken.cli import run as run_cli


@pytest.fixture
def captured(monkeypatch):
    """Replace the Supervisor: record the RunConfig and exit 0 without starting anything."""
    configs = []

    class Capture:
        def __init__(self, config, environment=None):
            configs.append(config)

        def run(self):
            return 0

    monkeypatch.setattr(run_cli, "Supervisor", Capture)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    return configs


def test_readme_example_and_compound_durations_are_accepted(cli, captured):
    result = cli("run", "--time-limit", "11h30m", "--margin", "2m", "--grace", "1m30s", "--backoff", "2",
                 "--backoff-max", "1:00", "--reset-after", "1d2h", "--wait", "inf", "--", "python", "t.py")
    assert result.exit_code == 0, result.output
    (config,) = captured
    assert (config.time_limit, config.margin, config.grace, config.reset_after) == (41400, 120, 90, 93600)
    assert config.wait.initial == 2 and config.wait.maximum == 60 and config.wait_for_trial == math.inf


def test_defaults(cli, captured):
    assert cli("run", "--", "python", "t.py").exit_code == 0
    (config,) = captured
    assert (config.time_limit, config.margin, config.grace, config.wait_for_trial) == (None, 60, 60, 0)
    assert config.preempt_signal == "SIGUSR2"


@pytest.mark.parametrize("option", ["--time-limit", "--margin", "--grace", "--backoff", "--backoff-max",
                                    "--reset-after", "--wait"])
@pytest.mark.parametrize("value", ["nan", "-1", "-5m", "soon", "1h1h"])
def test_bad_durations_are_usage_errors_naming_the_option(cli, captured, option, value):
    result = cli("run", option, value, "--", "python", "t.py")
    assert result.exit_code == 2 and f"'{option}'" in result.output, result.output
    assert "Traceback" not in result.output and captured == []


@pytest.mark.parametrize("option", ["--time-limit", "--margin", "--grace", "--backoff", "--backoff-max",
                                    "--reset-after"])
def test_inf_is_only_for_wait(cli, captured, option):
    result = cli("run", option, "inf", "--", "python", "t.py")
    assert result.exit_code == 2 and f"'{option}'" in result.output and captured == []


@pytest.mark.parametrize("name,why", [("KILL", "cannot be caught"), ("SIGSTOP", "cannot be caught"),
                                      ("9", "cannot be caught"), ("NOPE", "unknown signal")])
def test_uncatchable_or_unknown_preempt_signal_is_a_usage_error(cli, captured, name, why):
    result = cli("run", "--preempt-signal", name, "--", "python", "t.py")
    assert result.exit_code == 2 and "'--preempt-signal'" in result.output and why in result.output
    assert "Traceback" not in result.output and "OSError" not in result.output and captured == []


def test_preempt_signal_names_are_normalised(cli, captured):
    assert cli("run", "--preempt-signal", "sigterm", "--", "python", "t.py").exit_code == 0
    assert captured[0].preempt_signal == "SIGTERM"


def test_time_limit_within_the_margin_is_one_line(cli, captured):
    result = cli("run", "--time-limit", "30s", "--", "python", "t.py")
    assert result.exit_code == 1 and "longer than the save margin" in result.output
    assert len(result.output.strip().splitlines()) == 1
