"""One worker, no torch: a training function whose first --crashes attempts crash after one report each.

Each report carries a checkpoint holding the iteration; a restarted worker resumes from it. The
driver prints ``RESULT <json>`` (metrics, the final checkpoint's files and iteration, the context
it saw) or ``FAILED <message>`` when fit() raises TrainingFailedError (exit status 1).
"""

import argparse
import json
import os
import sys
import tempfile

from unbroken.compat import ray_train as train
from unbroken.compat.ray_train import Checkpoint, FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
from unbroken.compat.ray_train.torch import TorchTrainer


def count_attempt(path):
    with open(path, "a") as out:
        out.write("x")
    with open(path) as counted:
        return len(counted.read())


def train_loop_per_worker(config):
    attempt = count_attempt(config["attempts_file"])
    ctx = train.get_context()
    start, resumed = 0, None
    checkpoint = train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            start = resumed = json.load(open(os.path.join(folder, "it.json")))["it"]
    with open(config["log"], "a") as log:
        log.write(json.dumps({"attempt": attempt, "resumed": resumed, "rank": ctx.get_world_rank(),
                              "size": ctx.get_world_size(), "experiment": ctx.get_experiment_name()}) + "\n")
    for it in range(start + 1, config["iterations"] + 1):
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "it.json"), "w") as out:
                json.dump({"it": it}, out)
            train.report({"it": it, "note": "text is kept"}, checkpoint=Checkpoint.from_directory(folder))
        if it == start + 1 and attempt <= config["crashes"]:
            raise RuntimeError(f"crash in attempt {attempt}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", required=True)
    parser.add_argument("--crashes", type=int, default=0)
    parser.add_argument("--max-failures", type=int, default=0)
    args = parser.parse_args()
    config = {"iterations": 3, "crashes": args.crashes, "attempts_file": os.path.join(args.storage, "attempts"),
              "log": os.path.join(args.storage, "log.jsonl")}
    trainer = TorchTrainer(train_loop_per_worker, train_loop_config=config, scaling_config=ScalingConfig(num_workers=1),
                           run_config=RunConfig(name="basic", storage_path=args.storage,
                                                failure_config=FailureConfig(max_failures=args.max_failures)))
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:
        print(f"FAILED {exc}", flush=True)
        sys.exit(1)
    final = json.loads(open(result.checkpoint.to_directory(os.path.join(args.storage, "final")) + "/it.json").read())
    print("RESULT " + json.dumps({"metrics": result.metrics, "final": final, "path": result.path,
                                  "kept": len(result.best_checkpoints)}), flush=True)


if __name__ == "__main__":
    main()
