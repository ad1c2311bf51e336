"""A tiny training run for the dashboard tests, driven through files in a control folder.

    python trainee.py CONTROL --steps N [--hold 12,22] [--tick]

Reports loss (and, every 5 steps, validation acc) at each step and prints "step S"; saves every 5
steps. The first attempt to reach a step listed in --hold creates CONTROL/held-S, prints "holding
at S" and waits (at most two minutes) to be killed there by the test; later attempts pass. With --tick, after the steps it waits for CONTROL/tick-K (K = 1, 2, ...)
and then reports one more loss point at step N+K and prints "tick K", until CONTROL/stop exists.
"""

import argparse
import time
from pathlib import Path

import unbroken


def wait_while(condition) -> None:
    while condition():
        time.sleep(0.02)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("control", type=Path)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--hold", default="")
    p.add_argument("--tick", action="store_true")
    args = p.parse_args()
    holds = {int(s) for s in args.hold.split(",") if s}
    with unbroken.init(hparams={"lr": 0.1, "model": {"width": 8}}, save=unbroken.every_steps(5)) as run:
        state = unbroken.State(w=0.0, rng=False)
        start = run.restore(state)
        for step in run.steps(start, args.steps):
            state.w += 1.0
            done = step + 1
            run.report(done, loss=1.0 / done + 0.01 * (done % 3))
            if done % 5 == 0:
                run.report(done, group="validation", acc=done / args.steps)
            run.report_progress(done / args.steps)
            print(f"step {done}", flush=True)
            if done in holds and not (args.control / f"held-{done}").exists():
                (args.control / f"held-{done}").touch()
                print(f"holding at {done}", flush=True)
                deadline = time.monotonic() + 120
                wait_while(lambda: time.monotonic() < deadline)
        k = 0
        while args.tick and not (args.control / "stop").exists():
            if (args.control / f"tick-{k + 1}").exists():
                k += 1
                run.report(args.steps + k, loss=0.5 / k)
                print(f"tick {k}", flush=True)
            time.sleep(0.02)


if __name__ == "__main__":
    main()
