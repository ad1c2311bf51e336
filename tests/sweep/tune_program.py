"""A Ray Tune program whose only change is the import line (tests/sweep/test_tune.py runs it).

``python tune_program.py HOME`` runs 3 grid trials of a tiny numpy Trainable with checkpoint_freq,
max_failures and resume=True, and prints the results as JSON. With ``$TUNE_CRASH_DIR`` set, each
trial SIGKILLs itself once at iteration 3 (a marker file per trial says it did).
"""

import json
import os
import signal
import sys

import numpy as np

from unbroken import tune  # was: from ray import tune


class Quadratic(tune.Trainable):
    def setup(self, config):
        self.w = np.full(3, 4.0)
        self.lr = config["lr"]

    def step(self):
        self.w -= self.lr * 2 * self.w
        crash_dir = os.environ.get("TUNE_CRASH_DIR")
        if crash_dir and self.iteration == 2:
            marker = os.path.join(crash_dir, f"crashed-{self.trial_id}")
            if not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
        return {"loss": float(np.sum(self.w ** 2)), "w0": float(self.w[0])}

    def save_checkpoint(self, checkpoint_dir):
        np.save(os.path.join(checkpoint_dir, "w.npy"), self.w)
        return checkpoint_dir

    def load_checkpoint(self, checkpoint_dir):
        self.w = np.load(os.path.join(checkpoint_dir, "w.npy"))


if __name__ == "__main__":
    analysis = tune.run(
        Quadratic,
        name="tuney",
        config={"lr": tune.grid_search([0.05, 0.1, 0.2])},
        stop={"training_iteration": 6},
        metric="loss",
        mode="min",
        checkpoint_freq=1,
        checkpoint_at_end=True,
        max_failures=2,
        max_concurrent_trials=2,
        resume=True,
        local_dir=sys.argv[1],
    )
    print(json.dumps({"best": analysis.best_config,
                      "results": {k: [r["training_iteration"], r["loss"], r["w0"]] for k, r in analysis.results.items()}}))
