"""Helpers for the 2-rank gloo tests: run the rank programs under torchrun, find and kill ranks."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from waiting import wait_until

JOB = Path(__file__).with_name("ddp_job.py")
REPO = Path(__file__).resolve().parents[2]

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is unavailable", allow_module_level=True)


def job_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNBROKEN_")}
    env.update(UNBROKEN_HOME=str(home), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def torchrun(home: Path, *, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess:
    """Run the job with 2 ranks under torchrun (no supervisor)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(JOB)]
    return subprocess.run(cmd, env=job_env(home, **extra), capture_output=True, text=True, timeout=timeout)


def final_params(out: Path) -> list[dict]:
    return [torch.load(f"{out}.rank{r}.pt") for r in (0, 1)]


def same(a: list[dict], b: list[dict]) -> bool:
    return all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def fresh_group(home, dead: set[int]) -> tuple[int, int] | None:
    """The pids of ranks 0 and 1 of a group none of whose ranks is in ``dead`` (found through /proc)."""
    pids = tuple(find_rank(home, rank) for rank in (0, 1))
    return pids if None not in pids and not dead & set(pids) else None


def find_rank(home, rank: int) -> int | None:
    """The pid of the live worker with RANK=rank, or None."""
    for entry in os.listdir("/proc"):
        try:
            env = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"UNBROKEN_HOME={home}".encode() in env and f"RANK={rank}".encode() in env \
                and b"TORCHELASTIC_RUN_ID" in b" ".join(env) and f"LOCAL_RANK={rank}".encode() in env:
            return int(entry)
    return None


def kill_seed() -> int:
    """The seed of the random kill moments: $UNBROKEN_KILL_SEED to replay a failure, else a new one."""
    return int(os.environ.get("UNBROKEN_KILL_SEED", time.time_ns() % 2**32))


def kill_at_random_moments(proc, home, steps_done, seed: int, kills: int) -> list[int]:
    """SIGKILL a random rank of the group under ``proc`` ``kills`` times; the ranks killed.

    Each kill waits for a fresh group (none of its ranks killed before) to make a step
    (``steps_done()`` grows), then a random 0-0.6 s (in a step, a save or a commit). Stops early
    when the training ends first.
    """
    rng, killed, dead = random.Random(seed), [], set()
    for _ in range(kills):
        pids = wait_until(lambda: fresh_group(home, dead) or proc.poll() is not None, timeout=60,
                          what=f"a new group (seed {seed})")
        done = steps_done()
        wait_until(lambda: steps_done() > done or proc.poll() is not None, timeout=60,
                   what=f"a step of the new group (seed {seed})")
        time.sleep(rng.uniform(0.0, 0.6))
        victim = rng.choice((0, 1))
        try:
            os.kill(pids[victim], signal.SIGKILL)
        except (ProcessLookupError, TypeError):  # the training ended first
            break
        killed.append(victim)
        dead |= set(pids)
    return killed
