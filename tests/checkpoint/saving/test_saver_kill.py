"""SIGKILL while background saves are being written never leaves a visible partial checkpoint.

A child process saves asynchronously in a loop (each state is a pure function of its step,
and the tensors are changed in place right after every save returns); the parent kills it
at random moments, many of them while a staging directory exists (a write in flight). After
every kill each committed checkpoint must verify and hold exactly the state of its step.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from unbroken.checkpoint.saving import statefile
from unbroken.checkpoint import CheckpointStore, State
from unbroken.storage import LocalStorage

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent("""
    import sys, torch, numpy as np
    from pathlib import Path
    from unbroken.checkpoint import CheckpointStore, State, keep_latest
    from unbroken.checkpoint.saving.saver import Saver
    from unbroken.storage import LocalStorage

    store = CheckpointStore(LocalStorage(Path(sys.argv[1])))

    store.on_committed(lambda manifest: store.apply_retention(keep_latest(2)))  # as a run does
    saver = Saver(store)
    w = torch.zeros(8 << 20)            # 32 MiB: each write takes a while
    b = np.zeros(1000, dtype=np.int64)
    state = State(w=w, b=b, step=0, rng=False)
    for step in range(1, 10_000):
        w.fill_(float(step)); b[:] = step; state.step = step
        saver.save(state, step)         # returns after the snapshot
        w.fill_(-1.0); b[:] = -1        # training mutates in place while the writer runs
        print(step, flush=True)
""")


def writing(root: Path) -> bool:
    """True while a staging directory exists (the writer creates the folder on its first save)."""
    return root.exists() and any(p.name.startswith(".tmp-") for p in root.iterdir())


def check_all_committed(root: Path) -> list[int]:
    """Every committed checkpoint verifies and holds exactly its step's state."""
    store = CheckpointStore(LocalStorage(root))
    steps = []
    for manifest in store.list():
        store.verify(manifest.uuid, force=True)
        target = State(w=torch.empty(8 << 20), b=np.empty(1000, dtype=np.int64), step=None, rng=False)
        statefile.restore(target, store.local_path(manifest.uuid), manifest)
        step = manifest.steps_completed
        assert target.step == step
        assert bool((target.w == float(step)).all()) and bool((target.b == step).all()), step
        steps.append(step)
    return steps


def test_sigkill_during_background_writes_never_exposes_a_partial_checkpoint(tmp_path):
    rng = random.Random(4242)
    root = tmp_path / "ckpts"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    kills_in_flight = 0
    for attempt in range(8):
        proc = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "1"  # the first save returned
            if attempt % 2 == 0:
                # Kill while a staging directory exists: a background write is in flight.
                end = time.monotonic() + 10
                while time.monotonic() < end and not writing(root):
                    time.sleep(0.0002)
                time.sleep(rng.uniform(0, 0.05))
            else:
                time.sleep(rng.uniform(0, 0.6))
            in_flight = writing(root)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=30)
        kills_in_flight += in_flight
        assert proc.returncode == -signal.SIGKILL
        check_all_committed(root)
        CheckpointStore(LocalStorage(root)).clean_stale()  # what the next run does first
    assert kills_in_flight >= 3, kills_in_flight
    assert check_all_committed(root), "no checkpoint was ever committed"
