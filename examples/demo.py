"""The README demo: a real PyTorch training under `unbroken run`, crashed and preempted, still exact.

1. Trains the example to the end in one go (the reference).
2. Trains it again under `unbroken run`, and interferes:
   - SIGKILL to the training process (a crash): the supervisor restarts it, it resumes;
   - SIGTERM to the supervisor (a preemption): the training saves at the next step, the
     supervisor exits 75; the demo runs `unbroken run` again, and it resumes;
   - another SIGKILL; then it runs to the end.
3. Prints the attempt history and compares every tensor of both final checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from safetensors.numpy import load_file

from unbroken.checkpoint import CheckpointStore
from unbroken.storage import LocalStorage
from unbroken.tracking import Tracker

HERE = Path(__file__).resolve().parent
TRAIN = [sys.executable, "-u", str(HERE / "torch_train.py"), "--steps", "400", "--save-every", "10",
         "--hidden", "512", "--step-time", "0.01"]
SUPERVISE = [sys.executable, "-m", "unbroken", "run", "--name", "interrupted", "--backoff", "0.5", "--"]


def launch(cmd: list[str], home: Path) -> subprocess.Popen:
    env = {**os.environ, "UNBROKEN_HOME": str(home)}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_step(proc: subprocess.Popen) -> None:
    """Echo unbroken's messages until a new attempt's training prints its first step.

    Lines a killed attempt left in the pipe are skipped: the supervisor announces each attempt.
    """
    started = False
    for line in proc.stdout:
        started = started or line.startswith("unbroken: attempt")
        if started and line.startswith("unbroken:") and "attempt" not in line:
            print("   ", line.rstrip())
        if started and line.startswith("step "):
            print("    training at", line.split(" loss")[0])
            return


def crash_child(supervisor: subprocess.Popen, after: float) -> None:
    wait_for_step(supervisor)
    time.sleep(after)
    child = psutil.Process(supervisor.pid).children()[0]
    print(f"    ** SIGKILL to the training process {child.pid} (a crash)")
    child.send_signal(signal.SIGKILL)


def preempt(supervisor: subprocess.Popen, after: float) -> None:
    wait_for_step(supervisor)
    time.sleep(after)
    print(f"    ** SIGTERM to `unbroken run` (a preemption)")
    supervisor.send_signal(signal.SIGTERM)
    rest = supervisor.communicate()[0]
    for line in rest.splitlines():
        if line.startswith("unbroken:") and ("stopping" in line or "saved" in line):
            print("   ", line)
    print(f"    `unbroken run` exited {supervisor.returncode} (75 = saved, run again to resume)")


def final_dir(home: Path, name: str) -> Path:
    store = CheckpointStore(LocalStorage(home / "experiments" / name / "trial-1" / "checkpoints"))
    return store.local_path(store.newest_good().uuid)


def print_history(home: Path) -> None:
    tracker = Tracker(home / "unbroken.db")
    trial = tracker.trial("interrupted")
    print(f"\n3) attempt history of trial {trial.ref} (also: unbroken --home {home} show {trial.ref})")
    print(f"    {'#':>2}  {'end reason':<10} {'exit':>8}  {'resumed at step':>15}")
    for a in tracker.attempts(trial.id):
        code = f"-{signal.Signals(a.signal).name}" if a.signal else str(a.exit_code)
        resumed = a.restored_steps if a.restored_steps is not None else "-"
        print(f"    {a.number:>2}  {a.end_reason or '?':<10} {code:>8}  {resumed:>15}")


def compare(home: Path) -> bool:
    a, b = final_dir(home, "reference"), final_dir(home, "interrupted")
    ta, tb = load_file(str(a / "tensors.safetensors")), load_file(str(b / "tensors.safetensors"))
    same = ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)
    same = same and json.loads((a / "state.json").read_text()) == json.loads((b / "state.json").read_text())
    size = sum(v.nbytes for v in ta.values()) / 2**20
    print(f"\n    {len(ta)} tensors ({size:.1f} MiB: weights, AdamW moments, RNG states) and the state tree")
    print(f"    compared with the uninterrupted run: {'BITWISE EQUAL' if same else 'DIFFERENT'}")
    return same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None, help="where to keep the demo's runs (default: a temp dir)")
    home = Path(parser.parse_args().home or tempfile.mkdtemp(prefix="unbroken-demo-"))
    t0 = time.monotonic()
    print(f"demo home: {home}\n1) reference run, uninterrupted")
    ref = launch([*TRAIN, "--name", "reference"], home)
    ref.communicate()
    assert ref.returncode == 0, "the reference run failed"

    print("2) the same training under `unbroken run`, interrupted")
    supervisor = launch([*SUPERVISE, *TRAIN], home)
    crash_child(supervisor, after=1.0)
    preempt(supervisor, after=1.0)
    print("    $ unbroken run ... (the same command again)")
    supervisor = launch([*SUPERVISE, *TRAIN], home)
    crash_child(supervisor, after=1.0)
    wait_for_step(supervisor)
    supervisor.communicate()
    print(f"    `unbroken run` exited {supervisor.returncode} (0 = completed)")

    print_history(home)
    same = compare(home)
    print(f"    demo took {time.monotonic() - t0:.0f} s")
    return 0 if same and supervisor.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
