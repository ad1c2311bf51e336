"""The run's index writes never turn a good training into a failed one."""

from __future__ import annotations

import numpy as np
import pytest

import unbroken
from unbroken import IndexWarning


def _fill_the_index(run) -> None:
    """Make the index's disk 'full': no page may be added any more (SQLITE_FULL on the next growth)."""
    conn = run._index.tracker._conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_index_after_a_good_save_warns_with_the_real_cause_and_the_run_completes(home, caplog):
    with pytest.warns(IndexWarning, match="database or disk is full"):
        with unbroken.init("full", home=home, save=unbroken.never()) as run:
            state = unbroken.State(w=np.zeros(1000), rng=False)
            start = run.restore(state)
            _fill_the_index(run)
            for step in run.steps(start, 20):
                state.w += 1
                run.report(step + 1, **{f"m{i}": float(step) for i in range(50)})  # needs new pages
                run.save(state, step + 1, metadata={"notes": "x" * 8000})  # rows that need new pages
    assert "database or disk is full" in caplog.text  # the metrics writer says so too, and goes on
    assert run.close() == "closed"
    with unbroken.init("full", home=home) as again:  # the checkpoints are the truth
        state = unbroken.State(w=np.zeros(1000), rng=False)
        assert again.restore(state) == 20 and state.w[0] == 20


@pytest.mark.parametrize("step, value, error", [
    (2**64, 1.0, "between 0 and 2"),
    ("3", 1.0, "whole number"),
    (1, 10**400, "metric"),
    (1, np.zeros(2), "metric"),
])
def test_bad_metrics_raise_the_librarys_error_and_do_not_poison_later_writes(home, step, value, error):
    with unbroken.init("bad", home=home) as run:
        with pytest.raises(unbroken.ConfigError, match=error):
            run.report(step, loss=value)
        run.report(5, loss=0.5)
        trial_id = run.info.trial_id
    points = unbroken.tracking.Tracker(home / "unbroken.db").metrics(trial_id, name="loss")
    assert [(p.steps_completed, p.value) for p in points] == [(5, 0.5)]


def test_init_reconciles_rows_of_checkpoints_that_vanished_or_were_never_indexed(home):
    import shutil

    from unbroken.tracking import Tracker

    with unbroken.init("drift", home=home, keep=unbroken.keep_all()) as run:
        state = unbroken.State(w=np.zeros(3), rng=False)
        uuids = [run.save(state, step, wait=True) for step in (1, 2, 3)]
        trial_id, root = run.info.trial_id, run.info.trial_dir / "checkpoints"
    shutil.rmtree(root / uuids[2])  # deleted behind the index's back (a kill mid-gc, a person)
    tracker = Tracker(home / "unbroken.db")
    tracker._conn.execute("DELETE FROM checkpoints WHERE uuid = ?", (uuids[0],))  # never indexed (killed)
    tracker.close()
    with unbroken.init("drift", home=home):
        pass
    rows = {r.uuid: r.state for r in Tracker(home / "unbroken.db").checkpoints(trial_id)}
    assert rows == {uuids[0]: "committed", uuids[1]: "committed", uuids[2]: "deleted"}
    assert Tracker(home / "unbroken.db").trial_by_id(trial_id).steps_completed == 2
