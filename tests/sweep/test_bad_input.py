"""Bad input is a clear error before any trial starts (or, for a metric no trial reports, at the
first result, which stops the sweep): unknown parameter types, empty spaces, a metric never
reported, a checkpoint-based scheduler on a trainable that never saves."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sweep.sweephelp import driver_cmd, write_sweep
from procs import child_env

from unbroken import tune
from unbroken.errors import ConfigError
from unbroken.sweep import SweepSpec, run_sweep
from unbroken.tune.schedulers import HyperBandScheduler, PopulationBasedTraining


class NeverSaves(tune.Trainable):
    def step(self):
        return {"loss": 1.0}


def no_checkpoint_fn(config):
    tune.report({"loss": 1.0})


def cli(home, sweep_file):
    return subprocess.run(driver_cmd(sweep_file), env=child_env(home), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("space,message", [
    ({"lr": {"gaussian": [0, 1]}}, "unknown parameter type 'gaussian' for 'lr'"),
    ({}, "the search space is empty"),
])
def test_bad_spaces_fail_before_any_trial(tmp_path, space, message):
    home = tmp_path / "home"
    done = cli(home, write_sweep(tmp_path, name="bad", space=space))
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr
    assert not (home / "unbroken.db").exists()


def test_checkpoint_schedulers_refuse_trainables_that_never_save(tmp_path):
    pbt = PopulationBasedTraining(metric="loss", mode="min", hyperparam_mutations={"lr": [0.1, 0.2]})
    for trainable, scheduler in ((NeverSaves, pbt), (no_checkpoint_fn, HyperBandScheduler(metric="loss", mode="min"))):
        with pytest.raises(ConfigError, match="never saves"):
            tune.run(trainable, config={"lr": tune.choice([0.1, 0.2])}, scheduler=scheduler,
                     local_dir=str(tmp_path / "home"))
    assert not (tmp_path / "home" / "unbroken.db").exists()
    with pytest.raises(ConfigError, match="exactly one"):
        run_sweep(SweepSpec(name="x", space={"a": 1}), home=tmp_path / "h2")
    with pytest.raises(ConfigError, match="needs a mode"):
        SweepSpec(name="x", space={"a": 1}, command=["true"], metric="loss").check()


@pytest.mark.slow
def test_a_metric_no_trial_reports_stops_the_sweep_with_a_clear_error(tmp_path):
    home = tmp_path / "home"
    done = cli(home, write_sweep(tmp_path, name="nometric", space={"lr": 0.1}, metric="accuracy", mode="max",
                                 stop={"training_iteration": 1}))
    assert done.returncode == 1, done.stderr
    assert "never reported the sweep's metric 'accuracy'" in done.stderr and "'loss'" in done.stderr
    status = subprocess.run([sys.executable, "-m", "unbroken", "sweep", "status", "nometric", "--json"],
                            env=child_env(home), capture_output=True, text=True)
    assert '"status": "failed"' in status.stdout
