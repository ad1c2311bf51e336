"""Fixtures of the launch tests."""

from __future__ import annotations

import time

import pytest


def _wait_until(condition, timeout: float = 30.0, what: str = "condition"):
    """Poll ``condition`` every 20 ms until it is truthy (and return its value); fail after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout} s")


@pytest.fixture
def wait_until():
    """``wait_until(condition, timeout=30, what=...)``: wait on a condition with a deadline, never a bare sleep."""
    return _wait_until
