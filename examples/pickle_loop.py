"""A loop that does its own checkpointing with pickle, as cluster guides teach.

It knows nothing of unbroken; under `unbroken run` it still gets restarts, logs and history:

    unbroken run --max-restarts 10 -- python examples/pickle_loop.py --out /tmp/pickle-demo
"""

from __future__ import annotations

import argparse
import os
import pickle
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True, help="folder for the checkpoint and the result")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--step-time", type=float, default=0.01)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pkl"

    state = {"step": 0, "total": 0}
    if ckpt.exists():
        with open(ckpt, "rb") as f:
            state = pickle.load(f)  # our own file: trusted
        print(f"resumed at step {state['step']}", flush=True)
    while state["step"] < args.steps:
        state["step"] += 1
        state["total"] += state["step"]
        time.sleep(args.step_time)
        if state["step"] % 10 == 0:
            tmp = ckpt.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                pickle.dump(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, ckpt)
            print(f"step {state['step']} saved", flush=True)
    (out / "result.txt").write_text(str(state["total"]))
    print(f"done: total {state['total']}", flush=True)


if __name__ == "__main__":
    main()
