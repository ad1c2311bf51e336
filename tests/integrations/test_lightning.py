"""PyTorch Lightning with UnbrokenCheckpointIO + UnbrokenCallback.

End to end (programs/lightning_train.py: CPU, deterministic, 12 batches an epoch, a checkpoint
every 5 steps, so resumes are mid-epoch): a fit SIGKILLed under `unbroken run`, and one stopped
by SIGTERM (under a faked SLURM allocation with auto_requeue=False: Lightning installs no requeue
handler and requeues nothing) whose newest checkpoint is then corrupted, end bitwise equal to an
uninterrupted fit; 2 DDP ranks (gloo) under `unbroken run --nproc-per-node 2` stop after the same
step and resume. In process: the plugin's load/label/remove/refusal contracts on a hand-made checkpoint dict.
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
from compat.compathelp import committed, kill_child_after, show, supervise
from procs import child_env
from waiting import wait_until

import unbroken
from unbroken.errors import CheckpointNotFound, ConfigError, PickleNotAllowed, UnsupportedValue

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
    trial = show(tmp / "home", "lightning")
    assert trial["trial"]["latest_checkpoint_steps"] == 36  # 3 epochs of 12 batches: the final state is saved
    assert trial["metrics"]["training"]["train_loss"]["points"] == 7  # reported every 5 steps
    return np.load(tmp / "w.npy")


def test_sigkilled_fit_resumes_mid_epoch_to_the_uninterrupted_weights(tmp_path, reference):
    home, log = tmp_path / "home", tmp_path / "out.log"
    sup = supervise(home, ["--name", "lightning"], command(tmp_path / "w.npy"), log)
    kill_child_after(sup, home, "lightning", 2, log)
    assert sup.wait(timeout=120) == 0, log.read_text()
    text = log.read_text()
    assert "resumed from checkpoint" in text
    resumed_at = [line for line in text.splitlines() if line.startswith("data from epoch")][-1]
    assert not resumed_at.endswith(" batch 0"), text  # checkpoints every 5 steps, 12 batches an epoch: mid-epoch
    assert np.array_equal(np.load(tmp_path / "w.npy"), reference)


def slurm_env(tmp_path: Path, home: Path) -> tuple[dict[str, str], Path]:
    """A faked one-task SLURM allocation with auto_requeue off, and the file a requeue would create."""
    bin_dir, marker = tmp_path / "bin", tmp_path / "requeued"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"  # Lightning's requeue runs `scontrol requeue <job>`
    scontrol.write_text(f"#!/bin/sh\ntouch {marker}\n")
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    env = child_env(home, LIGHTNING_SLURM="0", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **FAKE_SLURM)
    return env, marker


def test_sigterm_under_slurm_stops_cleanly_and_a_corrupt_newest_checkpoint_is_skipped(tmp_path, reference):
    home, out = tmp_path / "home", tmp_path / "w.npy"
    env, requeued = slurm_env(tmp_path, home)
    proc = subprocess.Popen(command(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: committed(home, "lightning") >= 3 or proc.poll() is not None, timeout=90, what="3 checkpoints")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert "stopping Lightning at step" in err
    assert "SIGUSR1 handler while training: default" in err  # auto_requeue=True installs Lightning's requeue
    assert not requeued.exists()
    assert not out.exists()
    bad = corrupt_newest(home, "lightning")
    again = subprocess.run(command(out), env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"skipping corrupt checkpoint {bad}" in again.stderr
    assert np.array_equal(np.load(out), reference)
    assert not requeued.exists()


def test_ddp_ranks_stop_at_one_step_and_resume(tmp_path):
    home, log = tmp_path / "home", tmp_path / "out.log"
    args = ["--name", "lightning", "--nproc-per-node", "2"]
    sup = supervise(home, args, command(tmp_path / "w.npy"), log, LIGHTNING_DDP="1")
    wait_until(lambda: committed(home, "lightning") >= 2 or sup.poll() is not None, timeout=90, what="2 checkpoints")
    sup.send_signal(signal.SIGTERM)  # the supervisor forwards the stop to both ranks
    assert sup.wait(timeout=60) == 75, log.read_text()
    stops = {line.split("stopping Lightning at step ")[1].split()[0] for line in log.read_text().splitlines()
             if "stopping Lightning at step" in line}
    assert len(stops) == 1, log.read_text()  # both ranks stopped after the same step
    (stopped_at,) = stops
    assert show(home, "lightning")["trial"]["latest_checkpoint_steps"] == int(stopped_at)
    again = supervise(home, args, command(tmp_path / "w.npy"), tmp_path / "again.log", LIGHTNING_DDP="1")
    assert again.wait(timeout=120) == 0, (tmp_path / "again.log").read_text()
    text = (tmp_path / "again.log").read_text()
    assert text.count("resumed from checkpoint") == 2 and f"at step {stopped_at}" in text, text
    assert show(home, "lightning")["trial"]["latest_checkpoint_steps"] == 36
    assert (tmp_path / "w.npy").exists()


# -- in process: the plugin's contracts ------------------------------------------------------------
@pytest.fixture
def run(tmp_path):
    with unbroken.init(name="lightning-io", home=tmp_path / "home", exit_on_preempt=False) as run:
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
    assert io.load_checkpoint(newest, map_location="cpu")["state_dict"]["w"].device.type == "cpu"
    with pytest.raises(ConfigError, match="map_location"):
        io.load_checkpoint(newest, map_location=lambda storage, loc: storage)
    io.remove_checkpoint("ckpts/step=5.ckpt")
    assert len(run.checkpoint.list()) == 2
    with pytest.raises(CheckpointNotFound, match="resume_ckpt_path"):
        io.load_checkpoint("ckpts/never.ckpt")


def test_plugin_refuses_objects_unless_pickle_allowed(run):
    from unbroken.integrations.lightning import UnbrokenCheckpointIO
    checkpoint = {**lightning_dict(1), "hyper_parameters": {"loss": object()}}
    with pytest.raises(UnsupportedValue, match="allow_pickle=True"):
        UnbrokenCheckpointIO(run).save_checkpoint(checkpoint, "a.ckpt")
    assert run.checkpoint.list() == []  # refused before anything was written
    UnbrokenCheckpointIO(run, allow_pickle=True).save_checkpoint(checkpoint, "b.ckpt")
    with pytest.raises(PickleNotAllowed):
        UnbrokenCheckpointIO(run).load_checkpoint("b.ckpt")
    loaded = UnbrokenCheckpointIO(run, allow_pickle=True).load_checkpoint("b.ckpt")
    assert type(loaded["hyper_parameters"]["loss"]) is object
    with pytest.raises(ConfigError, match="storage_options"):
        UnbrokenCheckpointIO(run).save_checkpoint(lightning_dict(1), "a.ckpt", storage_options={"x": 1})


def test_after_a_stop_request_one_checkpoint_per_step(run):
    from unbroken.integrations.lightning import UnbrokenCheckpointIO
    io = UnbrokenCheckpointIO(run)
    io.save_checkpoint(lightning_dict(7), "a.ckpt")
    run.preempt.request("test")
    io.save_checkpoint(lightning_dict(7), "stop.ckpt")  # the stop's save: step 7 again, but now stopping
    io.save_checkpoint(lightning_dict(7), "epoch-end.ckpt")  # e.g. ModelCheckpoint at the epoch's end: skipped
    labels = [m.metadata["lightning_path"] for m in run.checkpoint.list()]
    assert labels == ["a.ckpt", "stop.ckpt"]


def test_callback_without_the_plugin_is_refused(run):
    import lightning.pytorch as pl
    from unbroken.integrations.lightning import UnbrokenCallback
    trainer = pl.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, callbacks=[UnbrokenCallback(run)])
    with pytest.raises(ConfigError, match="UnbrokenCheckpointIO"):
        trainer.fit(tiny_module_class()())
    assert run.checkpoint.list() == []


def test_module_state_dict_versions_survive(run):
    import torch
    from unbroken.integrations.lightning import UnbrokenCheckpointIO
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    io = UnbrokenCheckpointIO(run)
    io.save_checkpoint({**lightning_dict(1), "state_dict": module.state_dict()}, "a.ckpt")
    for map_location in (None, "cpu"):
        loaded = io.load_checkpoint("a.ckpt", map_location=map_location)["state_dict"]
        assert loaded._metadata == module.state_dict()._metadata  # BatchNorm's version, as torch.load keeps it
        module.load_state_dict(loaded)


def tiny_module_class():
    """A tiny LightningModule that counts its batches and records resume_position (lightning imported here)."""
    import lightning.pytorch as pl
    import torch
    from unbroken.integrations.lightning import resume_position

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)
            self.position, self.batches = None, 0

        def training_step(self, batch, batch_idx):
            self.batches += 1
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            self.position = resume_position(self.trainer)
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 2)), batch_size=2)

    return Tiny


@pytest.mark.parametrize("checkpoint, first_fit, expected", [
    ({"every_n_train_steps": 3}, {"max_steps": 3}, (0, 3)),      # mid-epoch (4 batches an epoch)
    ({"every_n_train_steps": 4}, {"max_epochs": 1}, (1, 0)),     # at the epoch's last batch
    ({}, {"max_epochs": 1}, (1, 0)),                             # at the epoch's end
])
def test_resume_position_agrees_with_lightnings_loop(run, tmp_path, checkpoint, first_fit, expected):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from unbroken.integrations.lightning import UnbrokenCheckpointIO, resume_ckpt_path
    tiny = tiny_module_class()
    common = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                  plugins=[UnbrokenCheckpointIO(run)])
    first = tiny()
    pl.Trainer(callbacks=[ModelCheckpoint(save_top_k=-1, **checkpoint)], **first_fit, **common).fit(first)
    assert first.position == (0, 0)
    again = tiny()
    pl.Trainer(max_epochs=2, enable_checkpointing=False, **common).fit(again, ckpt_path=resume_ckpt_path(run))
    epoch, done = again.position
    assert (epoch, done) == expected
    assert again.batches == (2 - epoch) * 4 - done  # what Lightning trained after the resume
