"""Ray Train's guide pattern on unbroken.compat.ray_train: DDP on 2 workers, a checkpoint each epoch, auto-resume.

Written as for Ray (only the imports differ). The driver restores the experiment when it exists,
else starts it; at the end it writes the final checkpoint's weights to --out and prints the result
as one JSON line. Deterministic: the batches depend on (epoch, step, rank) only, so a resumed run
ends with the same weights as an uninterrupted one.

Options: --storage, --name, --epochs, --out; --slow S (seconds per epoch, so a test can kill it
mid-way) and --epoch-file F (each worker appends "<epoch>" to F.rank<r> when it finishes an epoch).
"""

import argparse
import json
import os
import tempfile
import time

import torch

from unbroken.compat import ray_train as train
from unbroken.compat.ray_train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
from unbroken.compat.ray_train.torch import TorchTrainer, prepare_model


def train_loop_per_worker(config):
    rank = train.get_context().get_world_rank()
    torch.manual_seed(0)
    model = prepare_model(torch.nn.Linear(8, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    start_epoch = 0
    checkpoint = train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as checkpoint_dir:
            state = torch.load(os.path.join(checkpoint_dir, "state.pt"))
            model.module.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_epoch = state["epoch"] + 1
    for epoch in range(start_epoch, config["epochs"]):
        for step in range(config["steps_per_epoch"]):
            generator = torch.Generator().manual_seed(100_000 * epoch + 100 * step + rank)
            loss = model(torch.randn(16, 8, generator=generator)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        time.sleep(config["slow"])
        with tempfile.TemporaryDirectory() as temp_checkpoint_dir:
            if rank == 0:
                torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
                           os.path.join(temp_checkpoint_dir, "state.pt"))
            with open(os.path.join(temp_checkpoint_dir, f"rank-{rank}.json"), "w") as out:
                json.dump({"epoch": epoch}, out)
            train.report({"loss": loss.item(), "epoch": epoch},
                         checkpoint=Checkpoint.from_directory(temp_checkpoint_dir))
        if config["epoch_file"]:
            with open(f"{config['epoch_file']}.rank{rank}", "a") as out:
                out.write(f"{epoch}\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", required=True)
    parser.add_argument("--name", default="ddp")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", required=True)
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--epoch-file", default="")
    args = parser.parse_args()
    config = {"epochs": args.epochs, "steps_per_epoch": 5, "slow": args.slow, "epoch_file": args.epoch_file}
    path = os.path.join(args.storage, args.name)
    if TorchTrainer.can_restore(path):
        trainer = TorchTrainer.restore(path, train_loop_per_worker=train_loop_per_worker, train_loop_config=config)
    else:
        trainer = TorchTrainer(train_loop_per_worker, train_loop_config=config,
                               scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
                               run_config=RunConfig(name=args.name, storage_path=args.storage,
                                                    failure_config=FailureConfig(max_failures=3)))
    result = trainer.fit()
    with result.checkpoint.as_directory() as checkpoint_dir:
        torch.save(torch.load(os.path.join(checkpoint_dir, "state.pt"))["model"], args.out)
        files = sorted(os.listdir(checkpoint_dir))
    print("RESULT " + json.dumps({"metrics": result.metrics, "path": result.path, "files": files,
                                  "error": repr(result.error)}), flush=True)


if __name__ == "__main__":
    main()
