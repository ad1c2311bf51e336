"""The tracking index: schema migrations, CRUD of every table, lost attempts, concurrent writers."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import socket
import sqlite3

import pytest
import sqlalchemy
from oshelpers import dead_pid, live_process

from unbroken.errors import ConfigError, NotFound, TrackingError, TrialNotFound
from unbroken.tracking import Tracker
from unbroken.tracking.schema import MIGRATIONS, SCHEMA_VERSION

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


# -- schema -----------------------------------------------------------------------------------

def test_new_database_is_migrated_to_the_latest_version(tracker):
    assert tracker.schema_version() == SCHEMA_VERSION
    tables = set(tracker._read(lambda conn: sqlalchemy.inspect(conn).get_table_names()))
    assert {"experiments", "trials", "attempts", "checkpoints", "metrics", "alembic_version"} <= tables


@sqlite_only
def test_a_new_sqlite_database_is_in_wal_mode_and_keeps_user_version(tracker, db_path):
    assert tracker.schema_version() == len(MIGRATIONS) == SCHEMA_VERSION
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION  # what 0.1 reads
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"experiments", "trials", "attempts", "checkpoints", "metrics"} <= tables


def test_reopening_is_idempotent_and_keeps_data(db_url):
    first = Tracker(db_url)
    trial = first.create_trial("exp", hparams={"lr": 0.1})
    first.close()
    for _ in range(2):
        again = Tracker(db_url)
        assert again.schema_version() == SCHEMA_VERSION
        assert again.trial("exp", 1) == trial
        assert len(again.experiments()) == 1
        again.close()


def test_released_migrations_are_never_edited():
    # A released migration already ran on users' databases: changes go into a new migration.
    released = {0: "4628bef9a4320de88da312ba676aa4ba71c2784b2cff774a5c4919de54947c6b"}
    for index, digest in released.items():
        assert hashlib.sha256(MIGRATIONS[index].encode()).hexdigest() == digest


def test_a_version_1_database_is_upgraded_and_keeps_its_attempts(db_path):
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.executescript(MIGRATIONS[0])
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO experiments (id, name, created_at) VALUES (1, 'exp', 0)")
        conn.execute("INSERT INTO trials (id, experiment_id, number, storage, created_at, updated_at) "
                     "VALUES (1, 1, 1, '', 0, 0)")
        conn.execute("INSERT INTO attempts (trial_id, number, started_at, host, pid) VALUES (1, 1, 0, 'h', 7)")
    tracker = Tracker(db_path)
    assert tracker.schema_version() == SCHEMA_VERSION >= 2
    (attempt,) = tracker.attempts(1)
    assert (attempt.host, attempt.pid, attempt.pid_start) == ("h", 7, None)
    tracker.close()


def test_in_home_uses_the_default_file_name(tmp_path):
    t = Tracker.in_home(tmp_path)
    assert t.path == tmp_path / "unbroken.db" and t.path.exists()
    t.close()


def test_a_newer_sqlite_schema_is_refused(db_path):
    Tracker(db_path).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(TrackingError, match="upgrade unbroken"):
        Tracker(db_path)
    with sqlite3.connect(db_path) as conn:  # untouched
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1


def test_a_file_that_is_not_a_database_is_a_tracking_error(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(TrackingError):
        Tracker(path)


# -- experiments and trials -------------------------------------------------------------------

def test_experiments(tracker):
    with pytest.raises(NotFound, match="no experiment named 'exp'"):
        tracker.experiment("exp")
    created = tracker.experiment("exp", create=True)
    assert tracker.experiment("exp", create=True) == created  # idempotent
    assert tracker.experiment("exp") == created and created.name == "exp"
    tracker.experiment("other", create=True)
    assert [e.name for e in tracker.experiments()] == ["exp", "other"]


@pytest.mark.parametrize("name", ["", "a/b", "../x", "-dash", "x" * 200, "sp ace"])
def test_invalid_experiment_names(tracker, name):
    with pytest.raises(ConfigError):
        tracker.experiment(name, create=True)


def test_trials_are_numbered_per_experiment(tracker, tmp_path):
    t1 = tracker.create_trial("exp", hparams={"lr": 0.1, "layers": [1, 2]}, command="python train.py",
                              storage_of=lambda n: tmp_path / f"trial-{n}")
    t2 = tracker.create_trial("exp")
    o1 = tracker.create_trial("other")
    assert (t1.number, t2.number, o1.number) == (1, 2, 1)
    assert t1.ref == "exp/1" and t1.hparams == {"lr": 0.1, "layers": [1, 2]} and t1.status == "created"
    assert t1.storage == str(tmp_path / "trial-1") and t2.storage == "" and t1.command == "python train.py"
    assert tracker.trial("exp") == t2  # newest
    assert tracker.trial("exp", 1) == t1
    assert tracker.trial_by_id(o1.id) == o1
    assert [t.ref for t in tracker.trials()] == ["exp/1", "exp/2", "other/1"]
    assert [t.ref for t in tracker.trials("exp")] == ["exp/1", "exp/2"]
    with pytest.raises(TrialNotFound, match="exp/3"):
        tracker.trial("exp", 3)
    with pytest.raises(TrialNotFound, match="nope"):
        tracker.trial("nope")
    with pytest.raises(TrialNotFound):
        tracker.trial_by_id(999)


def test_update_trial(tracker):
    t = tracker.create_trial("exp")
    tracker.update_trial(t.id, status="completed", message="done", steps_completed=10, progress=1.0,
                         hparams={"lr": 1})
    u = tracker.trial_by_id(t.id)
    assert (u.status, u.message, u.steps_completed, u.progress, u.hparams) == ("completed", "done", 10, 1.0, {"lr": 1})
    assert u.updated_at >= t.updated_at
    with pytest.raises(ConfigError):
        tracker.update_trial(t.id, status="exploded")
    with pytest.raises(ConfigError):
        tracker.update_trial(t.id, number=5)
    with pytest.raises(ConfigError):
        tracker.update_trial(t.id)
    with pytest.raises(ConfigError, match="hparams"):
        tracker.update_trial(t.id, hparams={"x": object()})
    with pytest.raises(ConfigError, match="hparams"):
        tracker.create_trial("exp", hparams={"x": float("nan")})
    assert tracker.trial_by_id(t.id).status == "completed"


def test_delete_experiment_cascades(tracker):
    t = tracker.create_trial("exp")
    a = tracker.start_attempt(t.id)
    tracker.record_checkpoint(t.id, "u1", 5, created_at=1.0, size_bytes=10, metadata={}, attempt_id=a.id)
    tracker.add_metrics(t.id, a.id, [("training", 1, "loss", 0.5, 1.0)])
    keep = tracker.create_trial("keep")
    tracker.delete_experiment("exp")
    with pytest.raises(NotFound):
        tracker.experiment("exp")
    with pytest.raises(NotFound):
        tracker.checkpoint("u1")
    with pytest.raises(NotFound):
        tracker.attempt(a.id)
    assert tracker.metrics(t.id) == []
    assert tracker.trials() == [keep]


# -- attempts ---------------------------------------------------------------------------------

def test_attempts(tracker):
    t = tracker.create_trial("exp")
    a1 = tracker.start_attempt(t.id, log_path="/logs/1.log", slurm_job_id="123", slurm_restarts=0, bogus=1)
    assert tracker.trial_by_id(t.id).status == "running"
    assert (a1.number, a1.pid, a1.host, a1.launcher) == (1, os.getpid(), socket.gethostname(), "process")
    assert (a1.log_path, a1.slurm_job_id, a1.slurm_restarts, a1.end_reason) == ("/logs/1.log", "123", 0, None)
    tracker.end_attempt(a1.id, "crashed", exit_code=1, message="boom")
    a2 = tracker.start_attempt(t.id, pid=4242, launcher="slurm")
    assert a2.number == 2 and a2.pid == 4242 and a2.launcher == "slurm"
    tracker.update_attempt(a2.id, restored_uuid="u1", restored_steps=7)
    tracker.end_attempt(a2.id, "preempted", signal=15)
    tracker.end_attempt(a2.id, "completed", overwrite=False)  # keeps the first end
    e1, e2 = tracker.attempts(t.id)
    assert (e1.end_reason, e1.exit_code, e1.message) == ("crashed", 1, "boom") and e1.ended_at is not None
    assert (e2.end_reason, e2.signal, e2.restored_uuid, e2.restored_steps) == ("preempted", 15, "u1", 7)
    tracker.end_attempt(a2.id, "completed")  # overwrite=True by default
    assert tracker.attempt(a2.id).end_reason == "completed" and tracker.attempt(a2.id).signal == 15
    with pytest.raises(ConfigError):
        tracker.end_attempt(a2.id, "vanished")
    with pytest.raises(ConfigError):
        tracker.update_attempt(a2.id, number=9)
    with pytest.raises(NotFound):
        tracker.attempt(999)


def test_close_lost_attempts_marks_dead_pids_only(tracker):
    t = tracker.create_trial("exp")
    gone = tracker.start_attempt(t.id, pid=dead_pid())
    mine = tracker.start_attempt(t.id)  # this process
    finished = tracker.start_attempt(t.id, pid=dead_pid())
    tracker.end_attempt(finished.id, "completed")
    other_host = tracker.start_attempt(t.id, pid=dead_pid())
    tracker.update_attempt(other_host.id, host="some-other-host")
    with live_process() as pid:
        alive = tracker.start_attempt(t.id, pid=pid)
        assert tracker.close_lost_attempts(t.id) == [gone.id]
        assert tracker.attempt(alive.id).end_reason is None
    assert tracker.attempt(gone.id).end_reason == "lost"
    assert "without recording" in tracker.attempt(gone.id).message
    assert tracker.attempt(mine.id).end_reason is None
    assert tracker.attempt(finished.id).end_reason == "completed"
    assert tracker.attempt(other_host.id).end_reason is None
    assert tracker.close_lost_attempts(t.id) == [alive.id]  # its process has ended now
    assert tracker.close_lost_attempts(t.id) == []


def test_close_lost_attempts_takes_a_liveness_function(tracker):
    t = tracker.create_trial("exp")
    a = tracker.start_attempt(t.id, pid=12345)
    assert tracker.close_lost_attempts(t.id, alive=lambda pid, start: True) == []
    assert tracker.close_lost_attempts(t.id, alive=lambda pid, start: pid != 12345) == [a.id]


# -- checkpoints ------------------------------------------------------------------------------

def test_checkpoints(tracker):
    t = tracker.create_trial("exp")
    a = tracker.start_attempt(t.id)
    tracker.record_checkpoint(t.id, "u2", 20, created_at=2.0, size_bytes=200, metadata={"loss": 0.2}, attempt_id=a.id)
    tracker.record_checkpoint(t.id, "u1", 10, created_at=1.0, size_bytes=100, metadata={})
    assert [c.uuid for c in tracker.checkpoints(t.id)] == ["u1", "u2"]
    c2 = tracker.checkpoint("u2")
    assert (c2.steps_completed, c2.size_bytes, c2.metadata, c2.attempt_id, c2.state) == (20, 200, {"loss": 0.2}, a.id,
                                                                                         "committed")
    assert tracker.trial_by_id(t.id).steps_completed == 20  # the max, not the last recorded
    tracker.mark_checkpoint("u2", "corrupt", "bad crc")
    assert (tracker.checkpoint("u2").state, tracker.checkpoint("u2").message) == ("corrupt", "bad crc")
    tracker.mark_checkpoint("u1", "deleted")
    assert tracker.checkpoint("u1").state == "deleted"
    with pytest.raises(ConfigError):
        tracker.mark_checkpoint("u1", "vaporized")
    with pytest.raises(NotFound):
        tracker.checkpoint("nope")
    with pytest.raises(ConfigError, match="metadata"):
        tracker.record_checkpoint(t.id, "u3", 1, created_at=0, size_bytes=0, metadata={"x": {1, 2}})
    # Re-recording (a reindex) replaces the row.
    tracker.record_checkpoint(t.id, "u1", 10, created_at=1.0, size_bytes=111, metadata={})
    assert tracker.checkpoint("u1").size_bytes == 111 and tracker.checkpoint("u1").state == "committed"


# -- metrics ----------------------------------------------------------------------------------

def test_metrics(tracker):
    t = tracker.create_trial("exp")
    a = tracker.start_attempt(t.id)
    tracker.add_metrics(t.id, a.id, [("training", 1, "loss", 1.0, 10.0), ("training", 1, "lr", 0.1, 10.0),
                                     ("validation", 1, "acc", 0.5, 11.0), ("training", 2, "loss", 0.5, 12.0),
                                     ("training", 3, "loss", None, 13.0)])
    tracker.add_metrics(t.id, a.id, [])
    assert len(tracker.metrics(t.id)) == 5
    loss = tracker.metrics(t.id, "training", "loss")
    assert [(p.steps_completed, p.value) for p in loss] == [(1, 1.0), (2, 0.5), (3, None)]
    assert loss[0].group == "training" and loss[0].attempt_id == a.id and loss[0].time == 10.0
    assert [p.name for p in tracker.metrics(t.id, group="validation")] == ["acc"]
    assert tracker.latest_metrics(t.id) == {"training": {"loss": (3, None), "lr": (1, 0.1)},
                                            "validation": {"acc": (1, 0.5)}}
    other = tracker.create_trial("exp")
    assert tracker.metrics(other.id) == [] and tracker.latest_metrics(other.id) == {}


def test_times_keep_their_fraction_and_counts_their_64_bits(tracker):
    # A 4-byte REAL (PostgreSQL's REAL) would round a Unix time to about 2 minutes.
    t = tracker.create_trial("exp")
    a = tracker.start_attempt(t.id, pid=1, pid_start=1795000000.123)
    tracker.add_metrics(t.id, a.id, [("training", 2**63 - 1, "loss", 1795000000.123, 1795000000.123)])
    tracker.record_checkpoint(t.id, "u1", 2**63 - 1, created_at=1795000000.123, size_bytes=2**63 - 1, metadata={})
    (point,) = tracker.metrics(t.id)
    assert (point.time, point.value, point.steps_completed) == (1795000000.123, 1795000000.123, 2**63 - 1)
    assert tracker.attempt(a.id).pid_start == 1795000000.123
    record = tracker.checkpoint("u1")
    assert (record.created_at, record.size_bytes) == (1795000000.123, 2**63 - 1)
    assert tracker.trial_by_id(t.id).steps_completed == 2**63 - 1


def test_metrics_of_a_missing_trial_are_refused(tracker):
    with pytest.raises(TrackingError):
        tracker.add_metrics(999, None, [("training", 1, "loss", 1.0, 1.0)])


# -- several processes at once ----------------------------------------------------------------

def _add_points(url: str, trial_id: int, tag: str, n: int, start) -> None:
    tracker = Tracker(url)
    start.wait(30)
    for i in range(n):
        tracker.add_metrics(trial_id, None, [(tag, i, "x", float(i), float(i))])
    tracker.close()


def _create_trials(url: str, n: int, errors, start) -> None:
    tracker = Tracker(url)
    start.wait(30)
    for _ in range(n):
        try:
            tracker.create_trial("shared")
            tracker.start_attempt(tracker.trial("shared", 1).id, pid=1)
        except TrackingError as exc:
            errors.put(str(exc))
    tracker.close()


def test_concurrent_metric_writers_lose_nothing(db_url, run_together):
    tracker = Tracker(db_url)
    trial = tracker.create_trial("exp")
    run_together(_add_points, [(db_url, trial.id, "p1", 500), (db_url, trial.id, "p2", 500)])
    for tag in ("p1", "p2"):
        points = tracker.metrics(trial.id, group=tag)
        assert sorted(p.steps_completed for p in points) == list(range(500))
    assert len(tracker.metrics(trial.id)) == 1000
    tracker.close()


def test_concurrent_trial_and_attempt_creation_gets_distinct_numbers(db_url, run_together):
    # Regression: the next number was read outside the write transaction, so two processes
    # could pick the same one and fail with "UNIQUE constraint failed". On PostgreSQL the
    # transaction alone is not enough (READ COMMITTED): the parent row is locked.
    tracker = Tracker(db_url)
    tracker.create_trial("shared")
    errors = multiprocessing.get_context("spawn").Queue()
    run_together(_create_trials, [(db_url, 40, errors) for _ in range(4)])
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
    assert [t.number for t in tracker.trials("shared")] == list(range(1, 162))
    assert [a.number for a in tracker.attempts(tracker.trial("shared", 1).id)] == list(range(1, 161))
    tracker.close()
