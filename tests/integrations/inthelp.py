"""Helpers of the integration tests (imported as integrations.inthelp)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from unbroken.checkpoint import CheckpointStore
from unbroken.storage import LocalStorage


def require(module: str, extra: str) -> None:
    """Import ``module`` or skip loudly (fail under $CI): the extra is installed by scripts/setup.sh."""
    if importlib.util.find_spec(module) is None:  # found, not imported (keras would pick a backend here)
        message = f"{module} is not installed: pip install -e '.[{extra}]' (scripts/setup.sh does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(f"SKIPPED LOUDLY: {message}")


def corrupt_newest(home: Path, name: str) -> str:
    """Flip a byte in the middle of the largest file of the newest checkpoint of ``name``/1; its uuid."""
    folder = home / "experiments" / name / "trial-1" / "checkpoints"
    newest = CheckpointStore(LocalStorage(folder)).list()[-1]
    victim = max((folder / newest.uuid).rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else -1)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    return newest.uuid
