"""Acceptance: SIGTERM saves at the current step, exits "preempted" (75), and loses no step."""

from __future__ import annotations

import re
import signal
import subprocess

import pytest

from unbroken import EXIT_PREEMPTED
from unbroken.checkpoint import CheckpointStore
from unbroken.storage import LocalStorage
from unbroken.tracking import Tracker

from procs import child_env, example_cmd, run_example

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR2])
def test_stop_signal_saves_current_step_and_resume_loses_nothing(tmp_path, sig):
    home = tmp_path / "home"
    args = ["--name", "pre", "--steps", "400", "--save-every", "1000", "--step-time", "0.02"]
    proc = subprocess.Popen(example_cmd("torch_train.py", *args), env=child_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last_step = 0
    for line in proc.stdout:
        last_step = int(re.match(r"step (\d+)", line).group(1))
        if last_step == 30:
            proc.send_signal(sig)
            break
    for line in proc.stdout:  # steps that finished before the boundary check
        last_step = int(re.match(r"step (\d+)", line).group(1))
    assert proc.wait(timeout=60) == EXIT_PREEMPTED, proc.stderr.read()
    assert last_step < 400

    store = CheckpointStore(LocalStorage(home / "experiments" / "pre" / "trial-1" / "checkpoints"))
    assert store.newest_good().steps_completed == last_step  # zero lost steps

    tracker = Tracker(home / "unbroken.db")
    trial = tracker.trial("pre")
    assert trial.status == "preempted"
    assert tracker.attempts(trial.id)[-1].end_reason == "preempted"

    again = run_example("torch_train.py", home, *args[:-2])
    assert again.returncode == 0, again.stderr
    assert f"at step {last_step}" in again.stderr
    assert again.stdout.splitlines()[0].startswith(f"step {last_step + 1} ")
