"""`unbroken slurm submit` options, with --dry-run (no Slurm needed)."""

from __future__ import annotations

import pytest


def test_margin_takes_durations_and_the_signal_is_checked(cli):
    result = cli("slurm", "submit", "--dry-run", "--margin", "2m", "--signal", "usr1", "--", "python", "t.py")
    assert result.exit_code == 0, result.output
    assert "#SBATCH --signal=B:USR1@120" in result.output and "--margin 120s" in result.output
    assert "--preempt-signal USR1" in result.output


@pytest.mark.parametrize("args,option", [(["--margin", "nan"], "--margin"), (["--margin", "-3"], "--margin"),
                                         (["--margin", "0"], "--margin"), (["--signal", "KILL"], "--signal"),
                                         (["--signal", "BOGUS"], "--signal")])
def test_bad_values_are_usage_errors(cli, args, option):
    result = cli("slurm", "submit", "--dry-run", *args, "--", "python", "t.py")
    assert result.exit_code == 2 and f"'{option}'" in result.output, result.output


def test_signal_none_relies_on_the_end_time(cli):
    result = cli("slurm", "submit", "--dry-run", "--signal", "none", "--", "python", "t.py")
    assert result.exit_code == 0 and "--signal=" not in result.output


def test_submit_joins_the_trial_it_will_resume(cli, home, monkeypatch):
    from unbroken.cli import slurm as slurm_cli
    from unbroken.tracking import Tracker

    scripts = []
    monkeypatch.setattr(slurm_cli, "submit", lambda path, *a: scripts.append(path.read_text()) or "77")
    for _ in range(2):
        result = cli("slurm", "submit", "--name", "job", "--", "python", "t.py")
        assert result.exit_code == 0 and "job/1" in result.output, result.output
    tracker = Tracker(home / "unbroken.db")
    (trial,) = tracker.trials("job")
    assert trial.command == "python t.py" and all("--trial 1" in s for s in scripts)
    tracker.close()


def test_several_tasks_run_through_srun_under_one_supervisor(cli):
    result = cli("slurm", "submit", "--dry-run", "--nodes", "2", "--ntasks-per-node", "2", "--", "python", "t.py")
    assert result.exit_code == 0, result.output
    (run_line,) = [line for line in result.output.splitlines() if line.startswith("exec ")]
    assert run_line.count(" unbroken run ") == 1 and " -- srun " in run_line
    assert run_line.endswith("-m unbroken.launch.slurmtasks -- python t.py")
    single = cli("slurm", "submit", "--dry-run", "--ntasks-per-node", "1", "--", "python", "t.py")
    assert single.exit_code == 0 and "srun" not in single.output


def test_a_signal_srun_does_not_pass_on_is_refused_for_several_tasks(cli):
    result = cli("slurm", "submit", "--dry-run", "--ntasks-per-node", "2", "--signal", "TERM", "--", "python", "t.py")
    assert result.exit_code == 1 and "srun" in result.output and "USR2" in result.output, result.output
