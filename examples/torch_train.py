"""A PyTorch training loop made fault-tolerant with unbroken.

Model, optimizer, LR scheduler, data position (shuffled DataLoader) and RNG states (dropout)
are checkpointed, so a run that is killed and restarted any number of times ends with exactly
the parameters of an uninterrupted run. Run it twice with the same --name: the second run
resumes where the first stopped. Ctrl-C or SIGTERM: it saves at the next step and exits 75.

    python examples/torch_train.py --name demo --steps 300
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

import torch
from torch import nn

import unbroken


def make_dataset(n: int = 4096, dim: int = 32, seed: int = 1234) -> torch.utils.data.TensorDataset:
    """A fixed synthetic classification task (the same on every run)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w = torch.randn(dim, 4, generator=g)
    y = (x @ w + 0.1 * torch.randn(n, 4, generator=g)).argmax(dim=1)
    return torch.utils.data.TensorDataset(x, y)


def make_model(dim: int, hidden: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(hidden, 4),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default=None, help="experiment name (default: set by `unbroken run`)")
    p.add_argument("--home", default=None, help="unbroken home (default $UNBROKEN_HOME or ~/.unbroken)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--save-every", type=int, default=25, help="checkpoint every N steps")
    p.add_argument("--step-time", type=float, default=0.0, help="extra seconds per step (to watch it)")
    args = p.parse_args()

    torch.set_num_threads(1)  # one thread: bitwise-reproducible float sums on any machine
    torch.manual_seed(0)  # a fresh start is seeded; a resumed one gets its RNG states from the checkpoint
    random.seed(0)
    np.random.seed(0)
    data = make_dataset()
    model = make_model(32, args.hidden)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
    loader = unbroken.ResumableLoader(data, batch_size=args.batch_size, shuffle=True, seed=7)
    loss_fn = nn.CrossEntropyLoss()

    hparams = {"lr": args.lr, "hidden": args.hidden, "batch_size": args.batch_size, "steps": args.steps}
    with unbroken.init(args.name, home=args.home, hparams=hparams,
                       save=unbroken.every_steps(args.save_every)) as run:
        state = unbroken.State(model=model, optimizer=optimizer, scheduler=scheduler, loader=loader)
        start = run.restore(state)
        batches = loader.batches()
        for step in run.steps(start, args.steps):
            x, y = next(batches)
            model.train()
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            run.report(step + 1, loss=loss.item(), lr=scheduler.get_last_lr()[0])
            print(f"step {step + 1} loss {loss.item():.4f} epoch {loader.epoch}", flush=True)
            if args.step_time:
                time.sleep(args.step_time)
        if not run.preempted:
            print(f"done: {args.steps} steps", flush=True)


if __name__ == "__main__":
    main()
