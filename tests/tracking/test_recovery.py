"""The index never stops training and is never the truth: a corrupt index is moved aside and
rebuilt; reading commands open it read-only, even where nothing can be written."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import warnings

from pathlib import Path

import pytest

from unbroken.errors import NotFound, TrackingError, UnbrokenWarning
from unbroken.tracking import Tracker, _db
from unbroken.tracking.schema import MIGRATIONS


def _corrupt(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not sqlite" * 100)
    path.with_name(path.name + "-wal").write_bytes(b"stale wal")


# -- open_or_rebuild --------------------------------------------------------------------------

def test_a_corrupt_index_is_moved_aside_with_a_warning_and_rebuilt(db_path):
    _corrupt(db_path)
    with pytest.raises(TrackingError, match="not a database"):
        Tracker(db_path)
    with pytest.warns(UnbrokenWarning) as caught:
        tracker = Tracker.open_or_rebuild(db_path)
    (moved,) = [p for p in db_path.parent.iterdir() if p.name.startswith("unbroken.db.corrupt-") and
                not p.name.endswith("-wal")]
    message = str(caught[0].message)
    assert str(db_path) in message and str(moved) in message
    assert moved.read_bytes() == b"this is not sqlite" * 100
    stale = db_path.with_name("unbroken.db-wal")  # SQLite may drop it when the open fails; else it was moved
    assert not stale.exists() or stale.read_bytes() != b"stale wal"
    assert tracker.trials() == [] and tracker.create_trial("exp").number == 1  # a fresh, working index
    tracker.close()
    Tracker(db_path).close()  # later opens work too


def test_move_aside_takes_the_wal_and_shm_along(tmp_path):
    path = tmp_path / "unbroken.db"
    for suffix in ("", "-wal", "-shm"):
        tmp_path.joinpath("unbroken.db" + suffix).write_text(suffix or "main")
    moved = _db.move_aside(path)
    assert moved.name.startswith("unbroken.db.corrupt-")
    assert sorted(p.name for p in tmp_path.iterdir()) == [moved.name, moved.name + "-shm", moved.name + "-wal"]
    assert moved.read_text() == "main" and moved.with_name(moved.name + "-wal").read_text() == "-wal"


def test_corrupting_twice_keeps_both_copies(db_path):
    for _ in range(2):
        _corrupt(db_path)
        with pytest.warns(UnbrokenWarning):
            Tracker.open_or_rebuild(db_path).close()
    assert len([p for p in db_path.parent.iterdir() if ".corrupt-" in p.name and "-wal" not in p.name]) == 2


def test_a_healthy_index_is_opened_as_it_is(db_url):
    with Tracker(db_url) as writer:
        writer.create_trial("exp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Tracker.open_or_rebuild(db_url) as tracker:
            assert [t.ref for t in tracker.trials()] == ["exp/1"]


def test_other_errors_are_not_taken_for_corruption(db_path):
    Tracker(db_path).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(TrackingError, match="upgrade unbroken"):
        Tracker.open_or_rebuild(db_path)
    assert [p.name for p in db_path.parent.iterdir() if ".corrupt-" in p.name] == []


# -- open_readonly ----------------------------------------------------------------------------

def test_open_readonly_never_creates_an_index(tmp_path):
    missing = tmp_path / "no-home" / "unbroken.db"
    with pytest.raises(NotFound, match=f"no tracking index at {missing}"):
        Tracker.open_readonly(missing)
    assert not missing.parent.exists()


def test_open_readonly_reads_and_refuses_writes(db_path):
    writer = Tracker(db_path)
    trial = writer.create_trial("exp")
    reader = Tracker.open_readonly(db_path)
    assert reader.readonly and reader.trial("exp").id == trial.id
    writer.start_attempt(trial.id)  # written after the reader opened: seen (WAL)
    assert len(reader.attempts(trial.id)) == 1
    with pytest.raises(TrackingError, match="read-only"):
        reader.update_trial(trial.id, status="completed")
    with pytest.raises(TrackingError, match="readonly"):  # the connection itself is read-only (mode=ro)
        reader._query("UPDATE trials SET status = 'completed'")
    assert writer.trial_by_id(trial.id).status == "running"
    reader.close()
    writer.close()


def test_open_readonly_of_postgresql_reads_in_read_only_sessions(pg_url):
    with Tracker(pg_url) as writer:
        trial = writer.create_trial("exp")
        with Tracker.open_readonly(pg_url) as reader:
            assert reader.readonly and reader.trial("exp").id == trial.id
            writer.start_attempt(trial.id)
            assert len(reader.attempts(trial.id)) == 1
            with pytest.raises(TrackingError, match="read-only"):
                reader.update_trial(trial.id, status="completed")
            with pytest.raises(TrackingError, match="read-only transaction"):  # the session itself
                reader._query("UPDATE trials SET status = 'completed'")
        assert writer.trial_by_id(trial.id).status == "running"


def test_open_readonly_of_an_empty_postgresql_database_is_a_tracking_error(pg_url):
    with pytest.raises(TrackingError, match="empty"):
        Tracker.open_readonly(pg_url)


def test_open_readonly_reads_an_older_schema_without_migrating_it(db_path):
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.executescript(MIGRATIONS[0])
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO experiments (id, name, created_at) VALUES (1, 'exp', 0)")
        conn.execute("INSERT INTO trials (id, experiment_id, number, storage, created_at, updated_at) "
                     "VALUES (1, 1, 1, '', 0, 0)")
        conn.execute("INSERT INTO attempts (trial_id, number, started_at, host, pid) VALUES (1, 1, 0, 'h', 7)")
    with Tracker.open_readonly(db_path) as reader:
        assert reader.schema_version() == 1
        (attempt,) = reader.attempts(1)
        assert (attempt.pid, attempt.pid_start) == (7, None)


def test_open_readonly_of_a_corrupt_index_is_a_tracking_error(db_path):
    _corrupt(db_path)
    with pytest.raises(TrackingError, match="not a database"):
        Tracker.open_readonly(db_path)


@pytest.fixture
def readonly_mount(tmp_path):
    """A tmpfs that the test fills, then remounts read-only (needs root: skipped otherwise)."""
    mountpoint = tmp_path / "ro"
    mountpoint.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only file system needs root (test_open_readonly_in_a_0555_home covers it)")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")

    def make_readonly() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(mountpoint)], check=True)

    yield mountpoint, make_readonly
    subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def test_open_readonly_on_a_read_only_file_system(readonly_mount):
    # As root, chmod does not stop writes: a read-only mount is the real thing. There mode=ro
    # fails (the WAL index -shm cannot be created) and the index is read with immutable=1.
    mountpoint, make_readonly = readonly_mount
    path = mountpoint / "home" / "unbroken.db"
    with Tracker(path) as tracker:
        tracker.create_trial("exp", hparams={"lr": 0.1})
    make_readonly()
    with pytest.raises(TrackingError):
        Tracker(path)  # a writer cannot open it
    with Tracker.open_readonly(path) as reader:
        assert reader.trial("exp").hparams == {"lr": 0.1}
        with pytest.raises(TrackingError, match="read-only"):
            reader.create_trial("exp")


def test_open_readonly_in_a_0555_home(tmp_path_factory):
    """As a user who cannot write the home (root ignores modes, so root runs the reader as nobody)."""
    import shutil
    import subprocess
    import sys
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="unbroken-ro-"))  # outside pytest's 0700 folder: nobody can reach it
    db_path = home / "unbroken.db"
    try:
        with Tracker(db_path) as tracker:
            tracker.create_trial("exp")
        db_path.chmod(0o444)
        home.chmod(0o555)
        code = ("from unbroken.tracking import Tracker\n"
                f"with Tracker.open_readonly({str(db_path)!r}) as r: print([t.ref for t in r.trials()])\n")
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        if as_nobody and shutil.which("setpriv") is None:
            pytest.fail("running as root needs setpriv (util-linux) to test as an unprivileged user")
        out = subprocess.run([*as_nobody, sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "['exp/1']"
        assert sorted(p.name for p in home.iterdir()) == ["unbroken.db"]  # nothing could be created
    finally:
        home.chmod(0o755)
        shutil.rmtree(home, ignore_errors=True)
