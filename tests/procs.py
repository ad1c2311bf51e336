"""Helpers for tests that run the examples (or any command) as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def example_cmd(script: str, *args: str) -> list[str]:
    return [sys.executable, "-u", str(EXAMPLES / script), *args]


def child_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNBROKEN_")}
    env.update(UNBROKEN_HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    return env


def run_example(script: str, home: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(example_cmd(script, *args), env=child_env(home), capture_output=True, text=True,
                          timeout=timeout)
