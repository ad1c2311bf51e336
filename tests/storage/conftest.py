"""Fixtures of these tests: a small tmpfs to fill up (see tests/oshelpers.py); the S3 server
fixtures are shared by all tests (tests/conftest.py)."""

from __future__ import annotations

import pytest
from oshelpers import mount_small_tmpfs


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted under tmp_path (skipped loudly where impossible; fails if $CI is set)."""
    yield from mount_small_tmpfs(tmp_path / "small-disk", "2m")


@pytest.fixture
def obstore():
    """The obstore module (skipped loudly without it; fails if $CI is set)."""
    try:
        import obstore
    except ImportError:
        import os
        message = "!!! OBJECT-STORE TESTS NOT RUN: obstore is not installed (pip install -e '.[s3]')"
        if os.environ.get("CI"):
            pytest.fail(message + " CI is set, so this is a failure, not a skip.")
        pytest.skip(message)
    return obstore
