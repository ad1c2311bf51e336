"""Acceptance: a Ray Tune program (tests/sweep/tune_program.py) runs with only its import changed,
survives trials that SIGKILL themselves and a SIGKILLed program, and resumes with resume=True to
exactly the results of an uninterrupted run (closed form: w0 = 4 * (1 - 2 lr) ** 6)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from waiting import wait_until

from sweep.sweephelp import kill, rows
from procs import child_env

from unbroken import tune
from unbroken.errors import ConfigError
from unbroken.tracking import Tracker

PROGRAM = Path(__file__).with_name("tune_program.py")


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_tune_program_survives_kills_and_resumes(tmp_path):
    home, crash = tmp_path / "home", tmp_path / "crash"
    crash.mkdir()
    env = child_env(home, TUNE_CRASH_DIR=str(crash))
    first = subprocess.Popen([sys.executable, str(PROGRAM), str(home)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    wait_until(lambda: (home / "unbroken.db").exists() and any(r.iteration for r in rows(home, "tuney").values()),
               90, "a first result")
    kill(first.pid)
    first.wait()
    done = subprocess.run([sys.executable, str(PROGRAM), str(home)], env=env, capture_output=True, text=True,
                          timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["best"] == {"lr": 0.2}
    for trial, lr in zip("123", (0.05, 0.1, 0.2)):
        iteration, loss, w0 = report["results"][trial]
        assert iteration == 6 and w0 == pytest.approx(4 * (1 - 2 * lr) ** 6, rel=1e-12)
        assert loss == pytest.approx(3 * w0 ** 2, rel=1e-12)
    assert sorted(p.name for p in crash.iterdir()) == ["crashed-1", "crashed-2", "crashed-3"]
    tracker = Tracker(home / "unbroken.db")
    try:
        crashed = [a for t in tracker.trials("tuney") for a in tracker.attempts(t.id) if a.end_reason == "crashed"]
        assert len(crashed) == 3 and all(t.status == "completed" for t in tracker.trials("tuney"))
    finally:
        tracker.close()
    with pytest.raises(ConfigError, match="resume=True"):
        tune.run("tune_program:Quadratic", name="tuney", config={"lr": 0.1}, local_dir=str(home))
