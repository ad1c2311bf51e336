"""Fixtures of the tracking tests: an index on each backend (SQLite file, PostgreSQL database),
processes started together, and waiting on a condition.

``tracker`` and ``db_url`` are parametrized over both backends; a test of SQLite files only
narrows it with ``@pytest.mark.parametrize("backend", ["sqlite"])``.
"""

from __future__ import annotations

import multiprocessing
from typing import Any, Callable, Sequence

import pytest
from waiting import wait_until

from unbroken.tracking import Tracker

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "home" / "unbroken.db"


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def db_url(request, backend, db_path) -> str:
    """Where the test's index lives: a SQLite path, or the URL of a fresh PostgreSQL database."""
    return str(db_path) if backend == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture
def tracker(db_url):
    t = Tracker(db_url)
    yield t
    t.close()


@pytest.fixture
def in_transaction() -> Callable[[Tracker], bool]:
    """``in_transaction(tracker)``: whether the tracker left a transaction or connection open."""
    def check(tracker: Tracker) -> bool:
        if tracker._conn is not None and tracker._conn.in_transaction:
            return True
        checked_out = getattr(tracker._backend.engine.pool, "checkedout", None)  # StaticPool (SQLite) has none
        return checked_out is not None and checked_out() > 0
    return check


@pytest.fixture
def wait_for() -> Callable[..., None]:
    """``wait_for(condition, timeout=30, what=...)``: poll until ``condition()`` holds, else fail."""
    return wait_until


@pytest.fixture
def run_together() -> Callable[[Callable[..., None], Sequence[tuple]], None]:
    """``run_together(target, [args, ...])``: one spawned process per ``args``, each calling
    ``target(*args, start)`` and meant to wait on the ``start`` event, released at once; asserts
    that all exit 0 (within 120 s each). Queues passed in come from ``multiprocessing.get_context("spawn")``.
    """
    def run(target: Callable[..., None], args_per_process: Sequence[tuple[Any, ...]]) -> None:
        ctx = multiprocessing.get_context("spawn")
        start = ctx.Event()
        procs = [ctx.Process(target=target, args=(*args, start)) for args in args_per_process]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0] * len(procs)
    return run
