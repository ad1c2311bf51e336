"""A plain-Python loop (no tensors) made fault-tolerant with unbroken.

The state is ordinary Python: a list of weights, a ``random.Random`` generator, counters and
a history list. Linear regression by stochastic gradient descent on data drawn as it goes.
Kill it and run it again with the same --name: it resumes and ends with the same weights.

    python examples/plain_loop.py --name plain --steps 20000
"""

from __future__ import annotations

import argparse
import random

import unbroken


def sgd_step(weights: list[float], rng: random.Random, lr: float) -> float:
    """One SGD step on a fresh sample of y = 3*x0 - 2*x1 + 0.5 + noise; returns the squared error."""
    x = [rng.uniform(-1, 1), rng.uniform(-1, 1)]
    y = 3 * x[0] - 2 * x[1] + 0.5 + rng.gauss(0, 0.1)
    pred = weights[0] * x[0] + weights[1] * x[1] + weights[2]
    err = pred - y
    for i, xi in enumerate([*x, 1.0]):
        weights[i] -= lr * err * xi
    return err * err


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default=None)
    p.add_argument("--home", default=None)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--lr", type=float, default=0.01)
    args = p.parse_args()

    with unbroken.init(args.name, home=args.home, hparams={"lr": args.lr},
                       save=unbroken.every_steps(1000) | unbroken.every_seconds(30)) as run:
        # rng=False: this loop draws only from its own generator, which the State holds.
        state = unbroken.State(weights=[0.0, 0.0, 0.0], sampler=random.Random(42), history=[], running=0.0,
                               rng=False)
        start = run.restore(state)
        for step in run.steps(start, args.steps):
            state.running += sgd_step(state.weights, state.sampler, args.lr)
            if (step + 1) % 1000 == 0:
                mse = state.running / 1000
                state.history.append(mse)
                state.running = 0.0
                run.report(step + 1, mse=mse)
                print(f"step {step + 1} mse {mse:.5f} weights {[round(w, 4) for w in state.weights]}", flush=True)
        if not run.preempted:
            print(f"done: weights {state.weights}", flush=True)


if __name__ == "__main__":
    main()
