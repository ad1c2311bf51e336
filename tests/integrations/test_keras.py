"""Keras 3 (torch backend) with UnbrokenCallback: a fit SIGKILLed under `unbroken run`, and one
stopped by SIGTERM whose newest checkpoint is then corrupted, end bitwise equal to an
uninterrupted fit (CPU, fixed seeds, shuffle=False: Keras on torch is deterministic there)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from integrations.inthelp import corrupt_newest, require
from compat.compathelp import committed, kill_child_after, supervise
from procs import child_env
from waiting import wait_until

pytestmark = pytest.mark.slow
PROGRAM = Path(__file__).resolve().parent / "programs" / "keras_train.py"
EPOCHS = "10"


@pytest.fixture(scope="module", autouse=True)
def keras_installed():
    require("keras", "keras")


def command(out: Path) -> list[str]:
    return [sys.executable, "-u", str(PROGRAM), str(out), EPOCHS]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> np.ndarray:
    tmp = tmp_path_factory.mktemp("keras-ref")
    done = subprocess.run(command(tmp / "w.npy"), env=child_env(tmp / "home", KERAS_BACKEND="torch"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return np.load(tmp / "w.npy")


def test_sigkilled_fit_resumes_to_the_uninterrupted_weights(tmp_path, reference):
    home, log = tmp_path / "home", tmp_path / "out.log"
    sup = supervise(home, ["--name", "keras"], command(tmp_path / "w.npy"), log, KERAS_BACKEND="torch")
    kill_child_after(sup, home, "keras", 3, log)
    assert sup.wait(timeout=120) == 0, log.read_text()
    assert "resumed from checkpoint" in log.read_text()
    assert np.array_equal(np.load(tmp_path / "w.npy"), reference)


def test_sigterm_stops_cleanly_and_a_corrupt_newest_checkpoint_is_skipped(tmp_path, reference):
    home, out = tmp_path / "home", tmp_path / "w.npy"
    env = child_env(home, KERAS_BACKEND="torch")
    proc = subprocess.Popen(command(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: committed(home, "keras") >= 3 or proc.poll() is not None, timeout=60, what="3 epochs")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert not out.exists()
    bad = corrupt_newest(home, "keras")
    again = subprocess.run(command(out), env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"skipping corrupt checkpoint {bad}" in again.stderr
    assert np.array_equal(np.load(out), reference)
