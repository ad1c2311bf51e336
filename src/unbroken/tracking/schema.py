"""The SQLite DDL of the released schema versions, frozen: the baseline that migrations start from.

``MIGRATIONS[i]`` took a SQLite database from version ``i`` to ``i + 1`` (``PRAGMA user_version``)
before the schema moved to alembic. Nothing runs it any more: it documents what an index made by
those versions holds, and the tests build such indexes from it to prove that they migrate in
place. Never edit it. The schema now lives in :mod:`unbroken.tracking.migrations` (the newest
version is :data:`SCHEMA_VERSION`) and, for queries, :mod:`unbroken.tracking.tables`.
"""

from __future__ import annotations

from .migrations import SCHEMA_VERSION

MIGRATIONS: list[str] = [
    # 0 -> 1: the first release.
    """
    CREATE TABLE experiments (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        created_at  REAL NOT NULL
    );
    CREATE TABLE trials (
        id               INTEGER PRIMARY KEY,
        experiment_id    INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
        number           INTEGER NOT NULL,
        hparams          TEXT NOT NULL DEFAULT '{}',
        status           TEXT NOT NULL DEFAULT 'created',
        message          TEXT,
        storage          TEXT NOT NULL,
        command          TEXT,
        steps_completed  INTEGER NOT NULL DEFAULT 0,
        progress         REAL,
        created_at       REAL NOT NULL,
        updated_at       REAL NOT NULL,
        UNIQUE (experiment_id, number)
    );
    CREATE TABLE attempts (
        id               INTEGER PRIMARY KEY,
        trial_id         INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
        number           INTEGER NOT NULL,
        started_at       REAL NOT NULL,
        ended_at         REAL,
        host             TEXT,
        pid              INTEGER,
        launcher         TEXT NOT NULL DEFAULT 'process',
        exit_code        INTEGER,
        signal           INTEGER,
        end_reason       TEXT,
        message          TEXT,
        log_path         TEXT,
        restored_uuid    TEXT,
        restored_steps   INTEGER,
        slurm_job_id     TEXT,
        slurm_array_task TEXT,
        slurm_nodes      TEXT,
        slurm_restarts   INTEGER,
        UNIQUE (trial_id, number)
    );
    CREATE TABLE checkpoints (
        uuid             TEXT PRIMARY KEY,
        trial_id         INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
        attempt_id       INTEGER REFERENCES attempts(id) ON DELETE SET NULL,
        steps_completed  INTEGER NOT NULL,
        created_at       REAL NOT NULL,
        size_bytes       INTEGER NOT NULL DEFAULT 0,
        state            TEXT NOT NULL DEFAULT 'committed',
        message          TEXT,
        metadata         TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX checkpoints_by_trial ON checkpoints (trial_id, steps_completed);
    CREATE TABLE metrics (
        id               INTEGER PRIMARY KEY,
        trial_id         INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
        attempt_id       INTEGER,
        grp              TEXT NOT NULL,
        steps_completed  INTEGER NOT NULL,
        name             TEXT NOT NULL,
        value            REAL,
        time             REAL NOT NULL
    );
    CREATE INDEX metrics_by_trial ON metrics (trial_id, grp, name, steps_completed);
    """,
    # 1 -> 2: the start time of an attempt's process, so that liveness is judged from
    # (host, pid, start time) and a reused pid is not taken for the attempt's process.
    """
    ALTER TABLE attempts ADD COLUMN pid_start REAL;
    """,
]

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]
