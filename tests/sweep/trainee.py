"""A tiny numpy training for the sweep tests: gradient descent on a quadratic, one report per iteration.

Run by a sweep (``command: [python, trainee.py]``). ``$TRAINEE_STEP_TIME`` slows each iteration
down so that tests can kill it mid-run; ``$TRAINEE_MARK`` names a folder where each process
leaves its pid (so a test can find and kill it).
"""

import os
import time

import numpy as np

import unbroken
from unbroken import sweep


def main() -> None:
    with sweep.trial() as t:
        mark = os.environ.get("TRAINEE_MARK")
        if mark:
            with open(os.path.join(mark, f"{t.directive.trial}-{os.getpid()}.pid"), "w") as f:
                f.write(str(os.getpid()))
        state = unbroken.State(w=np.full(4, 3.0), rng=False)
        t.restore(state)
        target = np.arange(4.0)
        lr = float(t.config["lr"])
        while not t.over:
            state.w -= lr * 2 * (state.w - target) + t.config.get("drift", 0.0)
            time.sleep(float(os.environ.get("TRAINEE_STEP_TIME", "0")))
            t.report(loss=float(np.sum((state.w - target) ** 2)), w0=float(state.w[0]))


if __name__ == "__main__":
    main()
