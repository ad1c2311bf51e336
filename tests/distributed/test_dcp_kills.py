"""DCP (FSDP2) checkpoints in a group restarted by `unbroken run --nproc-per-node 2`: ranks SIGKILLed at
random moments, many during a save, and the training ends bitwise equal to an uninterrupted one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ranks import job_env, kill_at_random_moments, kill_seed

from unbroken.checkpoint import CheckpointStore
from unbroken.storage import LocalStorage

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow
PROGRAM = Path(__file__).with_name("dcp_train.py")
STEPS = "30"


def steps_of(path: Path) -> list[int]:
    try:
        return [int(x) for x in path.read_text().split()]
    except FileNotFoundError:
        return []


def test_fsdp2_ranks_killed_during_dcp_saves_resume_to_the_uninterrupted_weights(tmp_path):
    seed = kill_seed()
    ref = tmp_path / "ref"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(PROGRAM)], env=job_env(ref / "home", STEPS=STEPS, STEP_FILE=str(ref / "steps"),
                                                      OUT=str(ref / "out")),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    home, steps = tmp_path / "home", tmp_path / "steps"
    cmd = [sys.executable, "-m", "unbroken", "run", "--name", "dcp-train", "--backoff", "0", "--max-restarts", "5",
           "--nproc-per-node", "2", "--", sys.executable, str(PROGRAM)]
    proc = subprocess.Popen(cmd, env=job_env(home, STEPS=STEPS, SLOW="0.05", STEP_FILE=str(steps),
                                             OUT=str(tmp_path / "out")),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = kill_at_random_moments(proc, home, lambda: len(steps_of(Path(f"{steps}.rank0"))), seed, kills=2)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, f"seed {seed}: {out[-4000:]}"
    assert killed, f"seed {seed}: the training ended before any kill"
    for rank in (0, 1):
        got, want = torch.load(f"{tmp_path / 'out'}.rank{rank}.pt"), torch.load(f"{ref / 'out'}.rank{rank}.pt")
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got), (seed, killed)
    folder = home / "experiments" / "dcp-train" / "trial-1" / "checkpoints"
    for manifest in CheckpointStore(LocalStorage(folder)).list():  # every committed one has both ranks' data
        assert {f.path for f in manifest.files} >= {".metadata", "__0_0.distcp", "__1_0.distcp"}, (seed, manifest)
