"""Fixtures of the tracking tests: an index in a fresh home, and waiting on a condition."""

from __future__ import annotations

import time
from typing import Callable

import pytest

from unbroken.tracking import Tracker


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "home" / "unbroken.db"


@pytest.fixture
def tracker(db_path):
    t = Tracker(db_path)
    yield t
    t.close()


@pytest.fixture
def wait_for() -> Callable[..., None]:
    """``wait_for(condition, timeout=30, what=...)``: poll until ``condition()`` holds, else fail."""
    return _wait_for


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "the condition") -> None:
    """Poll ``condition`` until it holds (fails the test after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
