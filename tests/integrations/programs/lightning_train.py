"""A small Lightning training on unbroken (CPU, deterministic); writes its final weights to OUT.

Usage: lightning_train.py OUT EPOCHS. 12 batches an epoch, a checkpoint every 5 steps (so most
are mid-epoch). The batch order of each epoch depends on the epoch only, and a resumed epoch
skips the batches its checkpoint had trained: resumed and uninterrupted runs see the same data.
Env LIGHTNING_CKPT_STEPS=N or "epoch" changes when ModelCheckpoint saves. Env LIGHTNING_SLURM=0/1:
run under a (faked) SLURMEnvironment with auto_requeue off/on, and print which handler SIGUSR1
(Lightning's requeue signal) has while training. Env LIGHTNING_DDP=1: 2 gloo ranks under
`unbroken run --nproc-per-node 2` (each rank trains on half of every batch).
"""

import os
import signal
import sys
import time

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint

import unbroken
from unbroken.integrations.lightning import (UnbrokenCallback, UnbrokenCheckpointIO, resume_position,
                                             resume_ckpt_path)

SAMPLES, BATCH = 96, 8


class EpochBatches(torch.utils.data.Sampler):
    """Batches in an order fixed per epoch; the first epoch iterated skips ``skip`` batches."""

    def __init__(self, first_epoch, skip):
        self.epoch, self.skip = first_epoch, skip

    def __iter__(self):
        order = torch.randperm(SAMPLES, generator=torch.Generator().manual_seed(1000 + self.epoch)).tolist()
        batches = [order[i:i + BATCH] for i in range(0, SAMPLES, BATCH)]
        start, self.skip = self.skip, 0
        self.epoch += 1
        if torch.distributed.is_initialized():  # each rank takes its share of every batch
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
            batches = [b[rank::world] for b in batches]
        yield from batches[start:]

    def __len__(self):
        return SAMPLES // BATCH


class Regression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
        rng = np.random.default_rng(0)
        self.x = torch.tensor(rng.normal(size=(SAMPLES, 8)), dtype=torch.float32)
        self.y = self.x @ torch.tensor(rng.normal(size=(8, 1)), dtype=torch.float32)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        time.sleep(0.03)  # the "training"
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def train_dataloader(self):
        epoch, skip = resume_position(self.trainer)
        print(f"data from epoch {epoch} batch {skip}", file=sys.stderr)
        data = torch.utils.data.TensorDataset(self.x, self.y)
        return torch.utils.data.DataLoader(data, batch_sampler=EpochBatches(epoch, skip))


def checkpoints():
    every = os.environ.get("LIGHTNING_CKPT_STEPS", "5")
    if every == "epoch":
        return ModelCheckpoint(save_top_k=-1)
    return ModelCheckpoint(every_n_train_steps=int(every), save_top_k=-1)


class ShowRequeueHandler(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        handler = signal.getsignal(signal.SIGUSR1)
        name = "default" if handler == signal.SIG_DFL else type(handler).__name__
        print(f"SIGUSR1 handler while training: {name}", file=sys.stderr)


def main(out, epochs):
    ddp = os.environ.get("LIGHTNING_DDP") == "1"
    if ddp:  # the group exists before unbroken.init(), which joins it; Lightning then uses it
        torch.distributed.init_process_group("gloo")
    pl.seed_everything(0)
    model = Regression()
    slurm = os.environ.get("LIGHTNING_SLURM")
    with unbroken.init(name="lightning", keep=unbroken.keep_latest(3)) as run:
        plugins = [UnbrokenCheckpointIO(run)]
        callbacks = [UnbrokenCallback(run, report_every_n_steps=5), checkpoints()]
        if slurm is not None:
            plugins.append(SLURMEnvironment(auto_requeue=slurm == "1"))
            callbacks.append(ShowRequeueHandler())
        parallel = {"devices": 2, "strategy": "ddp", "use_distributed_sampler": False} if ddp else {"devices": 1}
        trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", deterministic=True, logger=False,
                             enable_progress_bar=False, enable_model_summary=False, plugins=plugins,
                             callbacks=callbacks, default_root_dir=os.path.dirname(os.path.abspath(out)), **parallel)
        trainer.fit(model, ckpt_path=resume_ckpt_path(run))
        if not run.preempted and trainer.is_global_zero:
            np.save(out, torch.cat([p.detach().ravel() for p in model.parameters()]).numpy())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
