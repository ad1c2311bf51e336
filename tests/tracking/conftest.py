"""Fixtures of the tracking tests: an index in a fresh home, and waiting on a condition."""

from __future__ import annotations

from typing import Callable

import pytest
from waiting import wait_until

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
    return wait_until


