"""Fixtures of the launch tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from waiting import wait_until as _wait_until

sys.path.insert(0, str(Path(__file__).parent))  # helpers of these tests (spotserver)


@pytest.fixture
def wait_until():
    """``wait_until(condition, timeout=30, what=...)``: wait on a condition with a deadline, never a bare sleep."""
    return _wait_until
