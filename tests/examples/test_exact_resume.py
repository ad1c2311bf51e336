"""Acceptance: SIGKILL at random moments (some during a save) never changes the result.

The PyTorch example (model, AdamW, cosine schedule, shuffled loader, dropout) trained in one go
and trained while being SIGKILLed repeatedly must end with bitwise-identical checkpoints: every
tensor (parameters, optimizer moments, RNG states) and every value of the state tree.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from unbroken.checkpoint import CheckpointStore
from unbroken.storage import LocalStorage
from unbroken.tracking import Tracker

from procs import child_env, example_cmd, run_example

pytestmark = pytest.mark.slow
ARGS = ["--steps", "200", "--save-every", "4", "--hidden", "768", "--step-time", "0.01"]


def final_checkpoint(home: Path, name: str) -> Path:
    store = CheckpointStore(LocalStorage(home / "experiments" / name / "trial-1" / "checkpoints"))
    newest = store.newest_good()
    assert newest is not None and newest.steps_completed == 200
    return store.local_path(newest.uuid)


def committed_steps(ckpt_dir: Path) -> dict[str, int]:
    store = CheckpointStore(LocalStorage(ckpt_dir))
    return {m.uuid: m.steps_completed for m in store.list()}


def kill_during_save(proc: subprocess.Popen, ckpt_dir: Path, timeout: float) -> bool:
    """SIGKILL the process as soon as a staging directory appears; False if none did in time."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if ckpt_dir.exists() and any(p.name.startswith(".tmp-") for p in ckpt_dir.iterdir()):
            proc.send_signal(signal.SIGKILL)
            return True
        time.sleep(0.0005)
    return False


def test_sigkill_chaos_ends_bitwise_equal(tmp_path):
    rng = random.Random(20261121)
    ref_home, chaos_home = tmp_path / "ref", tmp_path / "chaos"
    done = run_example("torch_train.py", ref_home, "--name", "ref", *ARGS)
    assert done.returncode == 0, done.stderr

    ckpt_dir = chaos_home / "experiments" / "chaos" / "trial-1" / "checkpoints"
    kills = during_save = 0
    seen: dict[str, int] = {}
    while kills < 7:
        proc = subprocess.Popen(example_cmd("torch_train.py", "--name", "chaos", *ARGS), env=child_env(chaos_home),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # training runs (after the restore) once a step is printed
        assert first.startswith("step "), (first, proc.stderr.read() if proc.poll() is not None else "")
        if kills % 2 == 1 and kill_during_save(proc, ckpt_dir, timeout=20):
            during_save += 1
        else:
            time.sleep(rng.uniform(0.0, 1.5))
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.returncode == 0:
            break  # it finished before the kill: the checks below still apply
        assert proc.returncode == -signal.SIGKILL
        kills += 1
        seen.update(committed_steps(ckpt_dir))
    assert kills >= 5 and during_save >= 2, (kills, during_save)

    if proc.returncode != 0:
        last = run_example("torch_train.py", chaos_home, "--name", "chaos", *ARGS)
        assert last.returncode == 0, last.stderr

    ref, chaos = final_checkpoint(ref_home, "ref"), final_checkpoint(chaos_home, "chaos")
    ref_tensors, chaos_tensors = load_file(str(ref / "tensors.safetensors")), load_file(str(chaos / "tensors.safetensors"))
    assert ref_tensors.keys() == chaos_tensors.keys()
    for key in ref_tensors:
        assert np.array_equal(ref_tensors[key], chaos_tensors[key]), key
    assert json.loads((ref / "state.json").read_text()) == json.loads((chaos / "state.json").read_text())

    # Every restore loaded a checkpoint that had been committed, never an older one than needed.
    tracker = Tracker(chaos_home / "unbroken.db")
    attempts = tracker.attempts(tracker.trial("chaos").id)
    assert len(attempts) == kills + 1
    restored = [a for a in attempts if a.restored_uuid]
    assert restored, "no attempt restored anything"
    for a in restored:
        assert a.restored_uuid in seen or a.restored_uuid in committed_steps(ckpt_dir), a
    assert [a.end_reason for a in attempts[:-1]] == ["lost"] * (len(attempts) - 1)
    assert attempts[-1].end_reason == "completed"
