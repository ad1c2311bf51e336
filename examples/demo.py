"""The README demo: a real PyTorch training that is SIGKILLed and SIGTERMed, and still ends exact.

1. Trains the example to the end in one go (the reference).
2. Trains it again under a different name, killing it on the way: SIGKILL (a crash) and
   SIGTERM (a preemption: it saves at the next step and exits 75). Each restart resumes from
   the newest good checkpoint.
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
from safetensors.numpy import load_file

from unbroken.checkpoint import CheckpointStore
from unbroken.storage import LocalStorage
from unbroken.tracking import Tracker

HERE = Path(__file__).resolve().parent
TRAIN = [sys.executable, "-u", str(HERE / "torch_train.py"), "--steps", "400", "--save-every", "10",
         "--hidden", "512", "--step-time", "0.01"]
PLAN = [("SIGKILL", 1.5), ("SIGTERM", 1.0), ("SIGKILL", 1.0), ("SIGTERM", 1.0)]


def start(name: str, home: Path) -> subprocess.Popen:
    env = {**os.environ, "UNBROKEN_HOME": str(home)}
    return subprocess.Popen([*TRAIN, "--name", name], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def wait_first_step(proc: subprocess.Popen) -> None:
    for line in proc.stdout:
        if line.startswith("unbroken:"):
            print("   ", line.rstrip())
        if line.startswith("step "):
            print("    first step after start:", line.split(" loss")[0])
            return


def final_dir(home: Path, name: str) -> Path:
    store = CheckpointStore(LocalStorage(home / "experiments" / name / "trial-1" / "checkpoints"))
    return store.local_path(store.newest_good().uuid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None, help="where to keep the demo's runs (default: a temp dir)")
    home = Path(parser.parse_args().home or tempfile.mkdtemp(prefix="unbroken-demo-"))
    t0 = time.monotonic()
    print(f"demo home: {home}\n1) reference run, uninterrupted")
    ref = start("reference", home)
    ref.communicate()
    assert ref.returncode == 0, "reference run failed"

    print("2) the same training, interrupted")
    for sig, delay in PLAN:
        proc = start("interrupted", home)
        wait_first_step(proc)
        time.sleep(delay)
        print(f"    sending {sig}")
        proc.send_signal(getattr(signal, sig))
        proc.communicate()
        print(f"    exit status {proc.returncode}"
              + (" (preempted: saved, wants to resume)" if proc.returncode == 75 else ""))
    proc = start("interrupted", home)
    wait_first_step(proc)
    proc.communicate()
    assert proc.returncode == 0

    tracker = Tracker(home / "unbroken.db")
    trial = tracker.trial("interrupted")
    print("\n3) attempt history of trial interrupted/1")
    print(f"    {'#':>2} {'end reason':<10} {'resumed at':>10}")
    for a in tracker.attempts(trial.id):
        print(f"    {a.number:>2} {a.end_reason or '?':<10} {a.restored_steps if a.restored_steps is not None else '-':>10}")

    a, b = final_dir(home, "reference"), final_dir(home, "interrupted")
    ta, tb = load_file(str(a / "tensors.safetensors")), load_file(str(b / "tensors.safetensors"))
    same = ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)
    same = same and json.loads((a / "state.json").read_text()) == json.loads((b / "state.json").read_text())
    print(f"\n    {len(ta)} tensors ({sum(v.nbytes for v in ta.values()) / 2**20:.1f} MiB) and the state tree "
          f"compared with the uninterrupted run: {'BITWISE EQUAL' if same else 'DIFFERENT'}")
    print(f"    demo took {time.monotonic() - t0:.0f} s")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
