"""Every write is one transaction that is rolled back on any error, and bad values are refused
(ConfigError naming them) before anything is written."""

from __future__ import annotations

import numpy as np
import pytest

from unbroken.errors import ConfigError, TrackingError
from unbroken.tracking import check_steps

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


def _fill_up(tracker) -> None:
    """Make the database 'full': no page may be added beyond those it has (per connection)."""
    pages = tracker._conn.execute("PRAGMA page_count").fetchone()[0]
    tracker._conn.execute(f"PRAGMA max_page_count = {pages}")


# -- any exception leaves the connection usable -----------------------------------------------

def test_a_metric_step_that_overflows_does_not_poison_later_writes(tracker, in_transaction):
    # Regression: OverflowError inside add_metrics left the connection in a transaction, so every
    # later write of the process failed ("cannot start a transaction within a transaction").
    t = tracker.create_trial("exp")
    with pytest.raises(ConfigError, match="18446744073709551616"):
        tracker.add_metrics(t.id, None, [("training", 1, "ok", 1.0, 1.0), ("training", 2**64, "loss", 1.0, 1.0)])
    tracker.add_metrics(t.id, None, [("training", 1, "loss", 1.0, 1.0)])
    tracker.update_trial(t.id, status="completed")
    assert [(p.name, p.steps_completed) for p in tracker.metrics(t.id)] == [("loss", 1)]  # nothing of the bad batch
    assert tracker.trial_by_id(t.id).status == "completed"
    assert not in_transaction(tracker)


@pytest.mark.parametrize("error", [ZeroDivisionError("boom"), OverflowError("too big"), TypeError("bad type")])
def test_any_exception_in_a_write_rolls_back_and_is_translated(tracker, error):
    def body(conn):
        conn.exec_driver_sql("INSERT INTO experiments (name, created_at) VALUES ('half', 0)")
        raise error

    expected = ConfigError if isinstance(error, (OverflowError, TypeError)) else TrackingError
    with pytest.raises(expected, match=str(error)) as info:
        tracker._write(body)
    assert info.value.__cause__ is error
    assert tracker.experiments() == []  # rolled back
    tracker.experiment("after", create=True)  # the next write works
    assert [e.name for e in tracker.experiments()] == ["after"]


def test_a_keyboard_interrupt_in_a_write_rolls_back_and_passes_unchanged(tracker, in_transaction):
    def body(conn):
        conn.exec_driver_sql("INSERT INTO experiments (name, created_at) VALUES ('half', 0)")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tracker._write(body)
    assert tracker.experiments() == [] and not in_transaction(tracker)


@sqlite_only
def test_a_full_disk_names_the_real_cause_and_close_still_works(tracker):
    # Regression: SQLite rolls back by itself on a full disk; the unconditional ROLLBACK then
    # raised "cannot rollback - no transaction is active", hiding "database or disk is full".
    t = tracker.create_trial("exp")
    _fill_up(tracker)
    with pytest.raises(TrackingError, match="full"):
        tracker.add_metrics(t.id, None, [("training", i, "loss" * 50, float(i), 1.0) for i in range(5000)])
    with pytest.raises(TrackingError, match="database or disk is full") as info:
        tracker.update_trial(t.id, message="y" * 100_000)
    assert "no transaction" not in str(info.value)
    tracker.update_trial(t.id, message="small writes still fit")
    assert tracker.trial_by_id(t.id).message == "small writes still fit"
    tracker.close()
    tracker.close()  # twice: harmless


@sqlite_only
def test_close_never_raises_even_inside_a_transaction(tracker):
    tracker._conn.execute("BEGIN IMMEDIATE")
    tracker.close()
    tracker.close()


def test_a_write_on_a_closed_tracker_is_a_tracking_error(tracker):
    tracker.close()
    with pytest.raises(TrackingError, match="closed"):
        tracker.experiment("exp", create=True)


# -- values are checked before anything is written --------------------------------------------

@pytest.mark.parametrize("steps", [2**63, 2**64, -1, "5", 5.0, True, None, np.array([1, 2])])
def test_record_checkpoint_refuses_bad_steps_before_writing(tracker, steps):
    t = tracker.create_trial("exp")
    with pytest.raises(ConfigError, match="steps_completed of checkpoint u1") as info:
        tracker.record_checkpoint(t.id, "u1", steps, created_at=1.0, size_bytes=1, metadata={})
    if isinstance(steps, int) and not isinstance(steps, bool):
        assert str(steps) in str(info.value)
    assert tracker.checkpoints(t.id) == [] and tracker.trial_by_id(t.id).steps_completed == 0


def test_record_checkpoint_refuses_a_size_or_time_that_cannot_be_stored(tracker):
    t = tracker.create_trial("exp")
    with pytest.raises(ConfigError, match="size_bytes"):
        tracker.record_checkpoint(t.id, "u1", 1, created_at=1.0, size_bytes=2**70, metadata={})
    with pytest.raises(ConfigError, match="created_at"):
        tracker.record_checkpoint(t.id, "u1", 1, created_at="yesterday", size_bytes=1, metadata={})
    with pytest.raises(ConfigError, match="checkpoint state"):
        tracker.record_checkpoint(t.id, "u1", 1, created_at=1.0, size_bytes=1, metadata={}, state="odd")
    assert tracker.checkpoints(t.id) == []


@pytest.mark.parametrize("point, match", [
    (("training", -1, "loss", 1.0, 1.0), "steps_completed of metric 'loss'"),
    (("training", "7", "loss", 1.0, 1.0), "steps_completed of metric 'loss'"),
    (("training", 1, "loss", 10**400, 1.0), "metric 'loss' is too large"),
    (("training", 1, "loss", "high", 1.0), "metric 'loss' must be a number"),
    (("training", 1, "loss", 1.0, "now"), "time of metric 'loss'"),
])
def test_add_metrics_refuses_bad_points_naming_the_metric(tracker, point, match):
    t = tracker.create_trial("exp")
    with pytest.raises(ConfigError, match=match):
        tracker.add_metrics(t.id, None, [point])
    assert tracker.metrics(t.id) == []


def test_add_metrics_stores_non_finite_values_as_null_and_sets_progress(tracker):
    t = tracker.create_trial("exp")
    tracker.add_metrics(t.id, None, [("training", 1, "a", float("inf"), 1.0), ("training", 1, "b", np.float32(2), 1.0)],
                        progress=0.25)
    assert [(p.name, p.value) for p in tracker.metrics(t.id)] == [("a", None), ("b", 2.0)]
    assert tracker.trial_by_id(t.id).progress == 0.25
    tracker.add_metrics(t.id, None, [], progress=0.5)  # progress alone
    assert tracker.trial_by_id(t.id).progress == 0.5
    with pytest.raises(ConfigError, match="progress"):
        tracker.add_metrics(t.id, None, [("training", 2, "a", 1.0, 1.0)], progress=1.5)
    assert len(tracker.metrics(t.id)) == 2


def test_update_trial_refuses_out_of_range_steps_and_progress(tracker):
    t = tracker.create_trial("exp")
    with pytest.raises(ConfigError, match="steps_completed"):
        tracker.update_trial(t.id, steps_completed=2**63)
    with pytest.raises(ConfigError, match="progress"):
        tracker.update_trial(t.id, progress=float("nan"))
    tracker.update_trial(t.id, progress=None)
    assert tracker.trial_by_id(t.id).steps_completed == 0


def test_check_steps():
    assert check_steps(0, "x") == 0 and check_steps(2**63 - 1, "x") == 2**63 - 1
    assert check_steps(np.int64(12), "x") == 12 and type(check_steps(np.int64(12), "x")) is int
    for bad in (2**63, -1, 1.0, "1", False, None, [1]):
        with pytest.raises(ConfigError, match="my steps"):
            check_steps(bad, "my steps")
    with pytest.raises(ConfigError, match="401 digits"):
        check_steps(10**400, "x")
