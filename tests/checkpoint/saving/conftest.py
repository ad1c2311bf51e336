"""Fixtures of the saving tests: a checkpoints folder and its store."""

from __future__ import annotations

from pathlib import Path

import pytest

from unbroken.checkpoint import CheckpointStore
from unbroken.storage import LocalStorage


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "ckpts"


@pytest.fixture
def store(root) -> CheckpointStore:
    return CheckpointStore(LocalStorage(root))
