"""Acceptance: PBT with 4 trials and keep_latest(1) per trial. Exploits copy a donor's checkpoint
(under a read lease) into the recipient's own trial before anything runs on, so no recipient ever
fails to restore; killed trials and a killed driver end in the states of an uninterrupted run."""

from __future__ import annotations

import pytest
from waiting import wait_until

from sweep.sweephelp import kill, outcome, rows, run_driver, start_driver, write_sweep

from unbroken.checkpoint.store.trialstore import trial_store
from unbroken.tracking import Tracker

SWEEP = dict(space={"lr": {"uniform": [0.01, 0.3]}}, search={"seed": 4}, num_samples=4, max_concurrent=2,
             metric="loss", mode="min", stop={"training_iteration": 6}, checkpoint_freq=1, keep_checkpoints=1,
             scheduler={"type": "pbt", "perturbation_interval": 2, "seed": 9, "quantile_fraction": 0.25,
                        "hyperparam_mutations": {"lr": {"uniform": [0.01, 0.3]}}})


def exploits(home):
    return {n: r.exploit for n, r in rows(home, "pbt").items() if r.exploit}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pbt_exploits_copy_donor_checkpoints_and_kills_change_nothing(tmp_path):
    reference = tmp_path / "ref"
    sweep_file = write_sweep(tmp_path, name="pbt", **SWEEP)
    run_driver(reference, sweep_file)
    expected = outcome(reference, "pbt")
    assert all(state == "terminated" and iteration == 6 for _, state, iteration, _, _ in expected.values())
    assert exploits(reference), "no exploit happened"

    home, mark = tmp_path / "home", tmp_path / "mark"
    mark.mkdir()
    env = {"TRAINEE_STEP_TIME": "0.05", "TRAINEE_MARK": str(mark)}
    driver = start_driver(home, sweep_file, tmp_path / "driver.log", **env)
    pid = wait_until(lambda: next(iter(mark.glob("*.pid")), None), 60, "a trial process")
    kill(int(pid.read_text()))
    wait_until(lambda: (home / "unbroken.db").exists() and any(r.exploit and r.exploit.get("copy")
                                                                for r in rows(home, "pbt").values()), 90, "an exploit")
    kill(driver.pid)
    driver.wait()
    run_driver(home, sweep_file, **env)
    assert outcome(home, "pbt") == expected

    tracker = Tracker(home / "unbroken.db")
    try:
        for number, exploit in exploits(home).items():
            trial = tracker.trial("pbt", number)
            attempts = tracker.attempts(trial.id)
            assert exploit["copy"] in {a.restored_uuid for a in attempts}, attempts  # the copy was restored
            store = trial_store(home, trial, None)
            assert len(store.list()) == 1  # keep_latest(1) held for the recipient too
        for trial in tracker.trials("pbt"):
            assert not [c for c in tracker.checkpoints(trial.id) if c.state == "corrupt"]
    finally:
        tracker.close()
    assert "CheckpointGone" not in (tmp_path / "driver.log").read_text()
