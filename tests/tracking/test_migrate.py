"""Schema versions: indexes made by the released DDL migrate in place with every row; one schema
for both backends; newer databases are refused; alembic is imported only when a migration is due."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy

from unbroken.errors import TrackingError
from unbroken.tracking import Tracker, tables
from unbroken.tracking.migrations import SCHEMA_VERSION
from unbroken.tracking.schema import MIGRATIONS

VERSIONS = Path(tables.__file__).parent / "migrations" / "versions"

#: A row in every table, as the first release wrote them (times with fractions, 64-bit values).
_RELEASED_ROWS = [
    "INSERT INTO experiments (id, name, created_at) VALUES (1, 'exp', 1795000000.123)",
    "INSERT INTO experiments (id, name, created_at) VALUES (2, 'other', 1795000001.5)",
    "INSERT INTO trials (id, experiment_id, number, hparams, status, message, storage, command, steps_completed, "
    "progress, created_at, updated_at) VALUES (1, 1, 1, '{\"lr\": 0.1}', 'running', NULL, '/s/1', 'python t.py', "
    "9223372036854775807, 0.25, 1795000000.123, 1795000002.75)",
    "INSERT INTO trials (id, experiment_id, number, storage, created_at, updated_at) VALUES (2, 2, 1, '', 0, 0)",
    "INSERT INTO attempts (id, trial_id, number, started_at, ended_at, host, pid, launcher, exit_code, signal, "
    "end_reason, message, log_path, restored_uuid, restored_steps, slurm_job_id, slurm_array_task, slurm_nodes, "
    "slurm_restarts) VALUES (1, 1, 1, 1795000000.5, 1795000009.25, 'h', 7, 'slurm', 1, 15, 'preempted', 'm', "
    "'/l', 'u0', 5, '123', '4', 'n[1-2]', 2)",
    "INSERT INTO attempts (id, trial_id, number, started_at, host, pid) VALUES (2, 1, 2, 1795000010.0, 'h', 8)",
    "INSERT INTO checkpoints (uuid, trial_id, attempt_id, steps_completed, created_at, size_bytes, state, message, "
    "metadata) VALUES ('u1', 1, 1, 10, 1795000003.125, 9223372036854775807, 'corrupt', 'bad', '{\"loss\": 0.5}')",
    "INSERT INTO metrics (id, trial_id, attempt_id, grp, steps_completed, name, value, time) "
    "VALUES (1, 1, 1, 'training', 1, 'loss', 0.5, 1795000004.0625)",
    "INSERT INTO metrics (id, trial_id, attempt_id, grp, steps_completed, name, value, time) "
    "VALUES (2, 1, 2, 'training', 2, 'loss', NULL, 1795000005.0)",
]
_TABLES = ("experiments", "trials", "attempts", "checkpoints", "metrics")


def _released_index(path: Path, version: int) -> dict[str, list[tuple]]:
    """An index made by the released DDL at ``version`` (PRAGMA user_version), with rows; returns them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        for migration in MIGRATIONS[:version]:
            conn.executescript(migration)
        conn.execute(f"PRAGMA user_version = {version}")
        for statement in _RELEASED_ROWS:
            conn.execute(statement)
    return _rows(path)


def _rows(path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in _TABLES}


@pytest.mark.parametrize("version", [1, 2])
def test_an_index_of_a_released_version_is_migrated_in_place_and_keeps_every_row(db_path, version):
    before = _released_index(db_path, version)
    with Tracker(db_path) as tracker:
        assert tracker.schema_version() == SCHEMA_VERSION
    after = _rows(db_path)
    width = len(before["attempts"][0])
    assert [row[width:] for row in after["attempts"]] == [(None,)] * 2 if version == 1 else [()] * 2
    after["attempts"] = [row[:width] for row in after["attempts"]]
    assert after == before  # every row, every value
    with Tracker(db_path) as tracker:
        attempts = tracker.attempts(1)
        assert [(a.number, a.pid, a.pid_start) for a in attempts] == [(1, 7, None), (2, 8, None)]
        assert tracker.trial("exp", 1).steps_completed == 2**63 - 1
        assert tracker.checkpoint("u1").created_at == 1795000003.125
        assert tracker.start_attempt(1, pid=9, pid_start=1795000011.5).pid_start == 1795000011.5  # the new column
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION  # what 0.1 checks
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(f"{SCHEMA_VERSION:04d}",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def _columns(conn: sqlalchemy.Connection) -> dict[str, list[tuple]]:
    inspector = sqlalchemy.inspect(conn)
    return {t: sorted((c["name"], c["nullable"], c["type"]._type_affinity.__name__) for c in inspector.get_columns(t))
            for t in _TABLES}


def _sqlite_affinity(declared: str) -> str:
    """SQLite's type affinity of a declared type (its rules 1-5)."""
    declared = declared.upper()
    if "INT" in declared:
        return "INTEGER"
    if any(word in declared for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    return "REAL" if any(word in declared for word in ("REAL", "FLOA", "DOUB")) else "NUMERIC"


def test_a_new_sqlite_index_has_the_schema_of_a_migrated_released_one(tmp_path):
    _released_index(tmp_path / "old.db", 1)
    Tracker(tmp_path / "old.db").close()
    Tracker(tmp_path / "new.db").close()
    shapes = []
    for name in ("old.db", "new.db"):
        with sqlite3.connect(tmp_path / name) as conn:
            # (name, affinity, NOT NULL, primary key); an INTEGER PRIMARY KEY is the rowid, never NULL,
            # however it is declared
            shapes.append({t: [(c[1], _sqlite_affinity(c[2]), c[3] or c[5], c[5]) for c in
                               conn.execute(f"PRAGMA table_info({t})")] for t in _TABLES})
            shapes[-1]["indexes"] = sorted(r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%'"))
            shapes[-1]["foreign keys"] = {t: sorted(r[2:7] for r in conn.execute(f"PRAGMA foreign_key_list({t})"))
                                          for t in _TABLES}
    assert shapes[0] == shapes[1]


def test_the_query_tables_match_the_migrated_schema(tracker):
    present = tracker._read(_columns)
    declared = {t.name: sorted((c.name, c.nullable, c.type._type_affinity.__name__) for c in t.columns)
                for t in tables.metadata.sorted_tables}
    assert {t: [c[0] for c in cols] for t, cols in present.items()} == {
        t: [c[0] for c in cols] for t, cols in declared.items()}
    if tracker.backend == "postgresql":  # exact types there (SQLite reports what was declared)
        assert present == declared


def test_the_migrations_end_at_the_schema_version_and_released_ones_are_never_edited():
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(VERSIONS.parent))
    assert script.get_current_head() == f"{SCHEMA_VERSION:04d}"
    chain = [s.revision for s in reversed(list(script.walk_revisions()))]
    assert chain == [f"{v:04d}" for v in range(1, SCHEMA_VERSION + 1)]
    released = {  # a migration that ran on users' databases is never changed: add a new one
        "0001_first_release.py": "e8a85fe0a83367895d531c76c1f28f72ab5a7557dbda352e813d1068b5444f5c",
        "0002_attempt_pid_start.py": "c3e7daee3c97560ef8bb498e2c87f156efb165c17f0222a892d3016e089af122",
    }
    for name, digest in released.items():
        assert hashlib.sha256((VERSIONS / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("revision", [f"{SCHEMA_VERSION + 1:04d}", "ae1027a6acf"])
def test_a_database_of_a_newer_or_unknown_revision_is_refused(db_url, revision):
    with Tracker(db_url) as tracker:
        tracker._write(lambda conn: conn.exec_driver_sql(f"UPDATE alembic_version SET version_num = '{revision}'"))
    for opening in (Tracker, Tracker.open_readonly, Tracker.open_or_rebuild):
        with pytest.raises(TrackingError, match="upgrade unbroken"):
            opening(db_url)


def _open_and_count(url: str, results, start) -> None:
    start.wait(30)
    with Tracker(url) as tracker:
        results.put(tracker.schema_version())


def test_processes_creating_the_schema_at_once_create_it_once(db_url, run_together):
    results = multiprocessing.get_context("spawn").Queue()
    run_together(_open_and_count, [(db_url, results)] * 4)
    assert [results.get(timeout=10) for _ in range(4)] == [SCHEMA_VERSION] * 4
    with Tracker(db_url) as tracker:
        assert tracker._query("SELECT version_num FROM alembic_version") == [(f"{SCHEMA_VERSION:04d}",)]


_IMPORTS = """
import sys
{before}
loaded = sorted(m for m in ("sqlalchemy.engine", "alembic", "psycopg") if m in sys.modules)
print(" ".join(loaded) or "-")
"""


def _loaded_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _IMPORTS.format(before=code)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return [] if out.stdout.strip() == "-" else out.stdout.split()


def test_importing_unbroken_loads_no_database_library():
    assert _loaded_after("import unbroken, unbroken.tracking") == []


def test_alembic_is_imported_only_when_a_migration_is_due(db_path, db_url, backend):
    Tracker(db_url).close()  # created (and migrated) here
    code = f"from unbroken.tracking import Tracker\nTracker({db_url!r}).close()"
    expected = ["psycopg", "sqlalchemy.engine"] if backend == "postgresql" else ["sqlalchemy.engine"]
    assert _loaded_after(code) == expected
    if backend == "sqlite":
        _released_index(db_path.with_name("old.db"), 1)
        code = f"from unbroken.tracking import Tracker\nTracker({str(db_path.with_name('old.db'))!r}).close()"
        assert _loaded_after(code) == ["alembic", "sqlalchemy.engine"]
