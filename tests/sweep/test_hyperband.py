"""Acceptance: HyperBand pauses trials at each rung and resumes the kept ones from their checkpoints
with zero lost steps (every resumed attempt restores exactly where its trial paused, and no
iteration is trained or reported twice)."""

from __future__ import annotations

import pytest

from sweep.sweephelp import rows, run_driver, write_sweep

from unbroken.tracking import Tracker

SWEEP = dict(space={"lr": {"uniform": [0.01, 0.3]}}, search={"seed": 2}, num_samples=4, max_concurrent=2,
             metric="loss", mode="min", scheduler={"type": "hyperband", "max_t": 4, "reduction_factor": 2})


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_hyperband_pauses_and_resumes_from_checkpoints_with_zero_lost_steps(tmp_path):
    home = tmp_path / "home"
    run_driver(home, write_sweep(tmp_path, name="hb", **SWEEP))
    final = rows(home, "hb")
    assert sorted(r.iteration for r in final.values()) == [1, 1, 2, 4]  # 4 -> 2 -> 1 survivors
    tracker = Tracker(home / "unbroken.db")
    try:
        for number, row in final.items():
            trial = tracker.trial("hb", number)
            attempts = tracker.attempts(trial.id)
            pauses = sorted(row.results)  # where each segment ended
            assert len(attempts) == len(pauses)  # one process per segment, none restarted
            assert [a.restored_steps for a in attempts] == [None, *pauses[:-1]]
            steps = [p.steps_completed for p in tracker.metrics(trial.id, name="loss")]
            assert steps == list(range(1, row.iteration + 1))  # each iteration reported once: none lost or redone
    finally:
        tracker.close()
