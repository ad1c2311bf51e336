"""Fixtures of these tests: a small tmpfs to fill up (see tests/oshelpers.py)."""

from __future__ import annotations

import pytest
from oshelpers import mount_small_tmpfs


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted under tmp_path (skipped loudly where impossible; fails if $CI is set)."""
    yield from mount_small_tmpfs(tmp_path / "small-disk", "2m")
