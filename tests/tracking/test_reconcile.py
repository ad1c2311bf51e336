"""reconcile_checkpoints: storage is the truth; the index follows it in one transaction, and a
trial's steps_completed is never advanced by corrupt rows nor lowered by recording."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy

from unbroken.errors import ConfigError, TrialNotFound
from unbroken.tracking import ReconcileReport, Tracker, _engine, reconcile_checkpoints


@dataclasses.dataclass
class Stored:
    uuid: str
    steps_completed: int
    created_at: float = 1.0
    size: int = 100
    metadata: dict = dataclasses.field(default_factory=dict)


def _states(tracker, trial_id) -> dict[str, str]:
    return {c.uuid: c.state for c in tracker.checkpoints(trial_id)}


def _record(tracker, trial_id, uuid, steps, state="committed"):
    tracker.record_checkpoint(trial_id, uuid, steps, created_at=1.0, size_bytes=1, metadata={}, state=state)


def test_a_fresh_index_is_filled_from_storage(tracker):
    t = tracker.create_trial("exp")
    a = tracker.start_attempt(t.id)
    report = reconcile_checkpoints(tracker, t.id, [Stored("u1", 10, metadata={"loss": 0.5}), Stored("u2", 20, size=7)],
                                   attempt_id=a.id)
    assert report == ReconcileReport(added=2, marked_deleted=0, unchanged=0, steps_completed=20)
    u1, u2 = tracker.checkpoints(t.id)
    assert (u1.uuid, u1.state, u1.metadata, u1.attempt_id) == ("u1", "committed", {"loss": 0.5}, a.id)
    assert (u2.size_bytes, u2.steps_completed) == (7, 20)
    assert tracker.trial_by_id(t.id).steps_completed == 20
    again = reconcile_checkpoints(tracker, t.id, [Stored("u1", 10), Stored("u2", 20)])
    assert again == ReconcileReport(added=0, marked_deleted=0, unchanged=2, steps_completed=20)


def test_rows_follow_storage(tracker):
    t = tracker.create_trial("exp")
    _record(tracker, t.id, "kept", 10)
    _record(tracker, t.id, "vanished", 30)
    _record(tracker, t.id, "bad-here", 40, state="corrupt")
    _record(tracker, t.id, "bad-gone", 50, state="corrupt")
    _record(tracker, t.id, "back", 20, state="deleted")
    other = tracker.create_trial("exp")
    _record(tracker, other.id, "other-trial", 5)
    report = reconcile_checkpoints(tracker, t.id, [Stored("kept", 10), Stored("bad-here", 40), Stored("back", 20),
                                                   Stored("new", 25)])
    assert report == ReconcileReport(added=2, marked_deleted=2, unchanged=2, steps_completed=25)
    assert _states(tracker, t.id) == {"kept": "committed", "vanished": "deleted", "bad-here": "corrupt",
                                      "bad-gone": "deleted", "back": "committed", "new": "committed"}
    assert tracker.checkpoint("vanished").message == "gone from storage"
    assert _states(tracker, other.id) == {"other-trial": "committed"}  # other trials are not touched
    # The newest good checkpoint in storage, not the corrupt one at 40 nor the vanished one at 30.
    assert tracker.trial_by_id(t.id).steps_completed == 25


def test_reconcile_is_one_transaction_with_one_query(tracker):
    t = tracker.create_trial("exp")
    for i in range(200):
        _record(tracker, t.id, f"old-{i}", i)
    events = []
    engine = tracker._backend.engine

    def executed(conn, cursor, statement, parameters, context, executemany):
        events.append(statement)

    def begun(conn):  # reads begin (and roll back) too: mark the write transactions only
        events.append("<begin>" if conn.get_execution_options().get(_engine.WRITE) else "<read>")

    listeners = [("begin", begun), ("commit", lambda conn: events.append("<commit>")),
                 ("before_cursor_execute", executed)]
    for name, listener in listeners:
        sqlalchemy.event.listen(engine, name, listener)
    try:
        reconcile_checkpoints(tracker, t.id, [Stored(f"new-{i}", i) for i in range(300)])
    finally:
        for name, listener in listeners:
            sqlalchemy.event.remove(engine, name, listener)
    inside = events[events.index("<begin>"):]
    assert inside[-1] == "<commit>" and inside.count("<begin>") == 1 and "<read>" not in inside
    assert sum(s.lstrip().startswith("SELECT") for s in inside) == 1
    # Batched statements (executemany): no round trip per row, so a constant number of executions.
    assert len(inside) <= 8
    assert len(tracker.checkpoints(t.id)) == 500


def test_a_bad_stored_value_writes_nothing(tracker):
    t = tracker.create_trial("exp")
    _record(tracker, t.id, "kept", 10)
    with pytest.raises(ConfigError, match="steps_completed of checkpoint huge"):
        reconcile_checkpoints(tracker, t.id, [Stored("ok", 5), Stored("huge", 2**64)])
    assert _states(tracker, t.id) == {"kept": "committed"}
    with pytest.raises(TrialNotFound):
        reconcile_checkpoints(tracker, 999, [])


def test_steps_completed_never_goes_back_nor_follows_corrupt_rows(tracker):
    t = tracker.create_trial("exp")
    _record(tracker, t.id, "u20", 20)
    _record(tracker, t.id, "u10", 10)  # recorded later, fewer steps
    assert tracker.trial_by_id(t.id).steps_completed == 20
    _record(tracker, t.id, "bad", 99, state="corrupt")
    assert tracker.trial_by_id(t.id).steps_completed == 20
    tracker.mark_checkpoint("u20", "corrupt")
    assert tracker.trial_by_id(t.id).steps_completed == 20


def test_one_process_rebuilding_while_another_reads(tracker, db_url):
    t = tracker.create_trial("exp")
    reconcile_checkpoints(tracker, t.id, [Stored("u1", 1)])
    with Tracker.open_readonly(db_url) as reader:  # another connection sees the committed result
        assert reader.checkpoint("u1").state == "committed"
