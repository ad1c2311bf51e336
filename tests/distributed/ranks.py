"""Helpers for the 2-rank gloo tests: run tests/distributed/ddp_job.py under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
