"""Shared fixtures: an isolated unbroken home."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh unbroken home; the environment points at it and carries no supervisor identity."""
    h = tmp_path / "home"
    monkeypatch.setenv("UNBROKEN_HOME", str(h))
    for var in ("UNBROKEN_EXPERIMENT", "UNBROKEN_TRIAL", "UNBROKEN_ATTEMPT_ID", "UNBROKEN_DEADLINE",
                "UNBROKEN_PREEMPT_SIGNAL"):
        monkeypatch.delenv(var, raising=False)
    return h
