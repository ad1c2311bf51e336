"""PyTorch Lightning with UnbrokenCheckpointIO + UnbrokenCallback.

End to end (programs/lightning_train.py: CPU, deterministic, 12 batches an epoch, a checkpoint
every 5 steps, so resumes are mid-epoch): a fit SIGKILLed under `unbroken run`, and one stopped
by SIGTERM whose newest checkpoint is then corrupted, end bitwise equal to an uninterrupted fit;
under a (faked) SLURM allocation with auto_requeue=False Lightning installs no requeue handler.
In process: the plugin's load/label/remove/refusal contracts on a hand-made checkpoint dict.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from integrations.inthelp import corrupt_newest, require
from compat.compathelp import committed, kill_child_after, supervise
from procs import child_env
from waiting import wait_until

import unbroken
from unbroken.errors import CheckpointNotFound, ConfigError, UnsupportedValue

pytestmark = pytest.mark.slow
PROGRAM = Path(__file__).resolve().parent / "programs" / "lightning_train.py"
EPOCHS = "3"
FAKE_SLURM = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0",
              "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}


@pytest.fixture(scope="module", autouse=True)
def lightning_installed():
    require("lightning", "lightning")


def command(out: Path) -> list[str]:
    return [sys.executable, "-u", str(PROGRAM), str(out), EPOCHS]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> np.ndarray:
    tmp = tmp_path_factory.mktemp("lightning-ref")
    done = subprocess.run(command(tmp / "w.npy"), env=child_env(tmp / "home"), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return np.load(tmp / "w.npy")


def test_sigkilled_fit_resumes_mid_epoch_to_the_uninterrupted_weights(tmp_path, reference):
    home, log = tmp_path / "home", tmp_path / "out.log"
    sup = supervise(home, ["--name", "lightning"], command(tmp_path / "w.npy"), log)
    kill_child_after(sup, home, "lightning", 3, log)
    assert sup.wait(timeout=120) == 0, log.read_text()
    text = log.read_text()
    assert "resumed from checkpoint" in text
    resumed_at = [line for line in text.splitlines() if line.startswith("data from epoch")][-1]
    assert resumed_at != "data from epoch 0 batch 0", text  # it did resume, and mid-epoch or later
    assert np.array_equal(np.load(tmp_path / "w.npy"), reference)


def test_sigterm_stops_cleanly_and_a_corrupt_newest_checkpoint_is_skipped(tmp_path, reference):
    home, out = tmp_path / "home", tmp_path / "w.npy"
    env = child_env(home)
    proc = subprocess.Popen(command(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: committed(home, "lightning") >= 3 or proc.poll() is not None, timeout=90, what="3 checkpoints")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert "stopping Lightning at step" in err
    assert not out.exists()
    bad = corrupt_newest(home, "lightning")
    again = subprocess.run(command(out), env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"skipping corrupt checkpoint {bad}" in again.stderr
    assert np.array_equal(np.load(out), reference)


def test_slurm_without_auto_requeue_leaves_stopping_to_unbroken(tmp_path):
    home, out, bin_dir = tmp_path / "home", tmp_path / "w.npy", tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "requeued"
    scontrol = bin_dir / "scontrol"  # a requeue by Lightning would run this
    scontrol.write_text(f"#!/bin/sh\ntouch {marker}\n")
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    env = child_env(home, LIGHTNING_SLURM="0", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **FAKE_SLURM)
    proc = subprocess.Popen(command(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: committed(home, "lightning") >= 1 or proc.poll() is not None, timeout=90, what="a checkpoint")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert "SIGUSR1 handler while training: default" in err  # no requeue handler (auto_requeue=True: installed)
    assert "stopping Lightning at step" in err
    assert not marker.exists()


# -- in process: the plugin's contracts ------------------------------------------------------------
@pytest.fixture
def run(tmp_path):
    with unbroken.init(name="lightning-io", home=tmp_path / "home") as run:
        yield run


def lightning_dict(step: int):
    import torch
    return {"epoch": 0, "global_step": step, "pytorch-lightning_version": "2.6.6",
            "state_dict": {"w": torch.full((3,), float(step))},
            "optimizer_states": [{"state": {0: {"step": torch.tensor(float(step))}}, "param_groups": [{"lr": 0.1}]}]}


def test_plugin_loads_by_uuid_folder_or_lightning_path_and_leaves_removal_to_retention(run):
    import torch
    from unbroken.integrations.lightning import UnbrokenCheckpointIO, resume_ckpt_path
    io = UnbrokenCheckpointIO(run)
    io.save_checkpoint(lightning_dict(5), "ckpts/step=5.ckpt")
    io.save_checkpoint(lightning_dict(10), "ckpts/step=10.ckpt")
    newest = resume_ckpt_path(run)
    assert run.checkpoint.get_metadata(newest)["steps_completed"] == 10
    folder = run.checkpoint.store.local_copy(newest)
    for path in (newest, folder, "ckpts/step=10.ckpt"):
        loaded = io.load_checkpoint(path)
        assert torch.equal(loaded["state_dict"]["w"], torch.full((3,), 10.0))
        assert loaded["optimizer_states"][0]["state"][0]["step"].item() == 10.0  # int keys survive
    assert io.load_checkpoint("ckpts/step=5.ckpt")["global_step"] == 5
    io.remove_checkpoint("ckpts/step=5.ckpt")
    assert len(run.checkpoint.list()) == 2
    with pytest.raises(CheckpointNotFound, match="resume_ckpt_path"):
        io.load_checkpoint("ckpts/never.ckpt")


def test_plugin_refuses_objects_unless_pickle_allowed(run):
    from unbroken.integrations.lightning import UnbrokenCheckpointIO
    checkpoint = {**lightning_dict(1), "hyper_parameters": {"loss": object()}}
    with pytest.raises(UnsupportedValue, match="allow_pickle=True"):
        UnbrokenCheckpointIO(run).save_checkpoint(checkpoint, "a.ckpt")
    assert run.checkpoint.list() == []
    with pytest.raises(ConfigError, match="storage_options"):
        UnbrokenCheckpointIO(run).save_checkpoint(lightning_dict(1), "a.ckpt", storage_options={"x": 1})
