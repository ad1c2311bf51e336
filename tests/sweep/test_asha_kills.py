"""Acceptance: an 8-trial ASHA sweep on the local executor, 2 trials at a time, survives 2 SIGKILLed
trial processes and a SIGKILLed driver; the rerun ends every trial exactly once, with the results
of an uninterrupted sweep of the same seed. Also the CLI's status, best and results."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from waiting import wait_until

from sweep.sweephelp import kill, outcome, rows, run_driver, start_driver, write_sweep
from procs import child_env

from unbroken.tracking import Tracker

SWEEP = dict(space={"lr": {"loguniform": [0.01, 0.4]}, "drift": {"choice": [0.0, 0.05]}},
             search={"algorithm": "random", "seed": 11}, num_samples=8, max_concurrent=2, metric="loss", mode="min",
             stop={"training_iteration": 4}, checkpoint_freq=1, max_failures=3,
             scheduler={"type": "asha", "max_t": 4, "grace_period": 1, "reduction_factor": 2})


def pids(mark):
    return {int(p.name.split("-")[1].split(".")[0]): p for p in mark.glob("*.pid")}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_asha_sweep_survives_killed_trials_and_a_killed_driver(tmp_path):
    reference = tmp_path / "ref"
    run_driver(reference, write_sweep(tmp_path, name="asha", **SWEEP))
    expected = outcome(reference, "asha")
    assert sum(r[1] == "terminated" for r in expected.values()) == 8
    assert any("stopped by ASHA" in (r[3] or "") for r in expected.values())

    home, mark = tmp_path / "home", tmp_path / "mark"
    mark.mkdir()
    sweep_file = write_sweep(tmp_path / "ref", name="asha", **SWEEP)
    env = {"TRAINEE_STEP_TIME": "0.1", "TRAINEE_MARK": str(mark)}
    driver = start_driver(home, sweep_file, tmp_path / "driver-1.log", **env)
    killed = []
    for _ in range(2):  # SIGKILL two training processes while they run
        pid = wait_until(lambda: next((p for p in pids(mark) if p not in killed), None), 60, "a trial process")
        kill(pid)
        killed.append(pid)
    wait_until(lambda: (home / "unbroken.db").exists() and sum(r.state == "terminated" for r in rows(home, "asha")
                                                                .values()) >= 2, 90, "two trials ended")
    kill(driver.pid)  # the driver, at an arbitrary moment (its trials die with it)
    driver.wait()
    run_driver(home, sweep_file, **env)

    assert outcome(home, "asha") == expected
    logs = (tmp_path / "driver-1.log").read_text()
    assert "completed" not in logs  # the driver was killed mid-sweep
    tracker = Tracker(home / "unbroken.db")
    try:
        trials = tracker.trials("asha")
        assert [t.number for t in trials] == list(range(1, 9))  # no trial made twice
        restarted = [a for t in trials for a in tracker.attempts(t.id) if a.end_reason == "crashed"]
        assert len(restarted) >= 2  # the killed processes were restarted by their supervisors
        assert any(a.restored_steps for t in trials for a in tracker.attempts(t.id))
    finally:
        tracker.close()
    second = subprocess.run([sys.executable, "-m", "unbroken", "sweep", "status", "asha", "--json"],
                            env=child_env(home), capture_output=True, text=True, check=True)
    ended = re.findall(r"trial (\d+) (?:done|stopped)", logs)
    assert len(ended) == len(set(ended))  # the first driver ended each trial at most once
    assert json.loads(second.stdout)["status"] == "completed"
    best = json.loads(subprocess.run([sys.executable, "-m", "unbroken", "sweep", "best", "asha", "--json"],
                                     env=child_env(home), capture_output=True, text=True, check=True).stdout)
    assert best["result"]["loss"] == min(r[4][r[2]]["loss"] for r in expected.values())
    table = subprocess.run([sys.executable, "-m", "unbroken", "sweep", "results", "asha", "--csv"], env=child_env(home),
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert table[0].startswith("trial,state,iteration,config/drift,config/lr") and len(table) == 9
