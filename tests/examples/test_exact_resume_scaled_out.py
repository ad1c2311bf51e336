"""Acceptance: the exact-resume chaos test with checkpoints on S3 (a real SeaweedFS) and the index
on PostgreSQL: SIGKILLs at random moments, some while a checkpoint is being uploaded, never change
the result, and no restore loads an uncommitted checkpoint."""

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
from unbroken.storage import LocalStorage, open_storage
from unbroken.tracking import Tracker

from procs import child_env, example_cmd, run_example

pytestmark = pytest.mark.slow
STEPS = 240
ARGS = ["--steps", str(STEPS), "--save-every", "3", "--hidden", "512", "--step-time", "0.02"]
PREFIX = "experiments/chaos/trial-1/checkpoints"


def test_sigkill_chaos_on_s3_and_postgresql_ends_bitwise_equal(tmp_path, s3_url, pg_url):
    rng = random.Random(20261129)
    ref_home, chaos_home = tmp_path / "ref", tmp_path / "chaos"
    done = run_example("torch_train.py", ref_home, "--name", "ref", *ARGS)
    assert done.returncode == 0, done.stderr

    env = child_env(chaos_home, UNBROKEN_STORAGE=s3_url, UNBROKEN_DB=pg_url)
    storage = open_storage(f"{s3_url}/{PREFIX}", cache_dir=tmp_path / "reader-cache")
    kills, during_upload, seen = 0, 0, set()
    while kills < 6:
        proc = subprocess.Popen(example_cmd("torch_train.py", "--name", "chaos", *ARGS), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = proc.stdout.readline()
        if first.startswith("done"):  # the previous attempt committed the last step before its kill
            proc.wait(timeout=60)
            break
        assert first.startswith("step "), (first, proc.stderr.read() if proc.poll() is not None else "")
        time.sleep(rng.uniform(0.0, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        if proc.returncode == 0:
            break
        kills += 1
        during_upload += bool(storage.commit.stale())  # an upload the killed writer never committed
        seen |= set(storage.names())
    assert kills >= 4, kills
    last = subprocess.run(example_cmd("torch_train.py", "--name", "chaos", *ARGS), env=env, capture_output=True,
                          text=True, timeout=300)  # finishes (or finds the trial finished)
    assert last.returncode == 0, last.stderr

    ref = _newest(CheckpointStore(LocalStorage(ref_home / "experiments" / "ref" / "trial-1" / "checkpoints")))
    chaos = _newest(CheckpointStore(storage))
    ref_tensors, chaos_tensors = load_file(str(ref / "tensors.safetensors")), load_file(str(chaos / "tensors.safetensors"))
    assert ref_tensors.keys() == chaos_tensors.keys()
    for key in ref_tensors:
        assert np.array_equal(ref_tensors[key], chaos_tensors[key]), key
    assert json.loads((ref / "state.json").read_text()) == json.loads((chaos / "state.json").read_text())

    tracker = Tracker(pg_url)
    attempts = tracker.attempts(tracker.trial("chaos").id)
    restored = [a for a in attempts if a.restored_uuid]
    assert restored and all(a.restored_uuid in seen | set(storage.names()) for a in restored)
    assert attempts[-1].end_reason == "completed"
    print(f"kills={kills} with an upload in flight: {during_upload}")


def _newest(store: CheckpointStore) -> Path:
    newest = store.newest_good()
    assert newest is not None and newest.steps_completed == STEPS
    return store.local_copy(newest.uuid)
