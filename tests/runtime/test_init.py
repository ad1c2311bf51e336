"""init(): joining the trial, one writer per trial, the supervisor's trial whatever the name."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

import unbroken
from unbroken.errors import ConfigError, TrialBusy
from unbroken.tracking import Tracker


def test_a_second_writer_of_a_live_trial_is_refused_with_the_holder_named(home):
    with unbroken.init("one", home=home) as first:
        with pytest.raises(TrialBusy) as info:
            unbroken.init("one", home=home)
        text = str(info.value)
        assert f"pid {os.getpid()}" in text and "trial one/1" in text and "fresh=True" in text
        assert first.info.trial == 1
    with unbroken.init("one", home=home) as again:  # released on close
        assert again.info.attempt == 2


def test_a_fresh_trial_is_not_blocked_by_a_live_one(home):
    with unbroken.init("one", home=home):
        with unbroken.init("one", home=home, fresh=True) as other:
            assert other.info.trial == 2


def test_waiting_for_the_trial_gives_up_after_the_time_given(home):
    with unbroken.init("one", home=home):
        started = time.monotonic()
        with pytest.raises(TrialBusy, match="waited 0.3 s"):
            unbroken.init("one", home=home, wait_for_trial=0.3)
        assert time.monotonic() - started >= 0.3


def test_a_killed_writer_releases_the_trial_at_once(home):
    script = ("import sys, unbroken\n"
              f"run = unbroken.init('held', home={str(home)!r})\n"
              "print('holding', flush=True)\n"
              "sys.stdin.read()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNBROKEN_")}
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "holding"
        with pytest.raises(TrialBusy, match=f"pid {proc.pid}"):
            unbroken.init("held", home=home)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        with unbroken.init("held", home=home) as run:
            attempts = Tracker(home / "unbroken.db").attempts(run.info.trial_id)
            assert [a.end_reason for a in attempts] == ["lost", None]
    finally:
        proc.kill()
        proc.wait()


def _supervisor_rows(home, experiment: str):
    tracker = Tracker(home / "unbroken.db")
    trial = unbroken.tracking.join_trial(tracker, experiment)
    attempt = tracker.start_attempt(trial.id, pid=None)
    tracker.close()
    return trial, attempt


def test_under_a_supervisor_init_joins_its_trial_whatever_name_it_is_given(home, monkeypatch, caplog):
    trial, attempt = _supervisor_rows(home, "train")
    for var, value in {"UNBROKEN_HOME": str(home), "UNBROKEN_EXPERIMENT": "train", "UNBROKEN_TRIAL": "1",
                       "UNBROKEN_ATTEMPT_ID": str(attempt.id)}.items():
        monkeypatch.setenv(var, value)
    with caplog.at_level(logging.WARNING, logger="unbroken"):
        with unbroken.init("cifar", hparams={"lr": 0.1}) as run:
            assert (run.info.experiment, run.info.trial, run.info.attempt_id) == ("train", 1, attempt.id)
            assert run.info.supervised and run.hparams == {"lr": 0.1}
    assert "joins the supervisor's trial train/1" in caplog.text
    tracker = Tracker(home / "unbroken.db")
    assert [e.name for e in tracker.experiments()] == ["train"]  # no second trial "cifar"
    row = tracker.attempt(attempt.id)
    assert row.pid == os.getpid() and row.end_reason is None  # the supervisor ends it, not the child


def test_the_child_of_a_supervisor_leaves_its_crash_message_but_does_not_end_the_attempt(home, monkeypatch):
    trial, attempt = _supervisor_rows(home, "train")
    for var, value in {"UNBROKEN_HOME": str(home), "UNBROKEN_EXPERIMENT": "train", "UNBROKEN_TRIAL": "1",
                       "UNBROKEN_ATTEMPT_ID": str(attempt.id)}.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(RuntimeError):
        with unbroken.init():
            raise RuntimeError("boom")
    row = Tracker(home / "unbroken.db").attempt(attempt.id)
    assert row.end_reason is None and "RuntimeError: boom" in row.message


def test_init_refuses_a_name_with_a_newline(home):
    with pytest.raises(ConfigError, match="invalid experiment name"):
        unbroken.init("abc\n", home=home)


def test_a_corrupt_index_is_moved_aside_and_the_run_goes_on(home):
    home.mkdir(parents=True)
    (home / "unbroken.db").write_bytes(b"this is not a database" * 100)
    with pytest.warns(unbroken.UnbrokenWarning, match="corrupt"):
        with unbroken.init("exp", home=home) as run:
            assert run.info.trial == 1
    assert any(p.name.startswith("unbroken.db.corrupt") for p in home.iterdir())


def test_incremental_runs_write_only_what_changed_and_resume_bitwise(home):
    import numpy as np

    from unbroken.tracking import Tracker

    frozen = np.arange(1 << 16, dtype=np.float32)
    with unbroken.init("inc", home=home, incremental=True, keep=unbroken.keep_latest(2)) as run:
        state = unbroken.State(frozen=frozen.copy(), live=np.zeros(1 << 16, dtype=np.float32), rng=False)
        for step in range(1, 5):
            state.live += 1
            run.save(state, step)
        run.wait_for_saves()
        trial_id = run.info.trial_id
    written = [p.value for p in Tracker(home / "unbroken.db").metrics(trial_id, group="checkpoint",
                                                                       name="bytes_written")]
    assert 0 < written[-1] < 0.6 * written[0]  # later saves skip the frozen half
    with unbroken.init("inc", home=home) as run:
        restored = unbroken.State(frozen=np.zeros_like(frozen), live=np.zeros(1 << 16, dtype=np.float32), rng=False)
        assert run.restore(restored) == 4
        assert np.array_equal(restored.frozen, frozen) and np.all(restored.live == 4)


def test_a_resumed_incremental_run_writes_only_what_changed_since_the_restore(home):
    import numpy as np

    from unbroken.tracking import Tracker

    frozen = np.arange(1 << 16, dtype=np.float32)
    with unbroken.init("inc-resume", home=home, incremental=True) as run:
        state = unbroken.State(frozen=frozen.copy(), live=np.zeros(1 << 16, dtype=np.float32), rng=False)
        run.save(state, 1)
        trial_id = run.info.trial_id
    with unbroken.init("inc-resume", home=home, incremental=True) as run:  # a restarted process
        state = unbroken.State(frozen=np.zeros_like(frozen), live=np.zeros(1 << 16, dtype=np.float32), rng=False)
        assert run.restore(state) == 1
        state.live += 1
        run.save(state, 2)
    first, resumed = [p.value for p in Tracker(home / "unbroken.db").metrics(trial_id, group="checkpoint",
                                                                             name="bytes_written")]
    assert 0 < resumed < 0.6 * first  # the frozen half is referred to, not written again
    with unbroken.init("inc-resume", home=home) as run:
        restored = unbroken.State(frozen=np.zeros_like(frozen), live=np.zeros(1 << 16, dtype=np.float32), rng=False)
        assert run.restore(restored) == 2
        assert np.array_equal(restored.frozen, frozen) and np.all(restored.live == 1)


def test_auto_interval_starts_from_the_save_cost_an_earlier_attempt_measured(home):
    import numpy as np

    with unbroken.init("auto-cost", home=home) as run:
        state = unbroken.State(w=np.zeros(1 << 16), rng=False)
        run.save(state, 1, wait=True)
    policy = unbroken.auto_interval(mtbf_hint=3600.0, cost_hint=50.0)
    with unbroken.init("auto-cost", home=home, save=policy):
        decision = policy.decision()
    assert decision.cost_measured and decision.cost_s < 50.0  # the recorded stall, not the hint
    fresh = unbroken.auto_interval(mtbf_hint=3600.0, cost_hint=50.0)
    with unbroken.init("auto-cost-new", home=home, save=fresh):
        assert not fresh.decision().cost_measured and fresh.decision().cost_s == 50.0


def test_auto_interval_learns_from_the_trials_failures(home, caplog):
    import logging

    for _ in range(2):  # two attempts that crashed
        with pytest.raises(RuntimeError):
            with unbroken.init("auto", home=home):
                raise RuntimeError("boom")
    policy = unbroken.auto_interval(mtbf_hint=3600.0)
    with caplog.at_level(logging.INFO, logger="unbroken"):
        with unbroken.init("auto", home=home, save=policy):
            decision = policy.decision()
    assert decision.failures == 2 and decision.mtbf_s < 3600.0
    assert "Young/Daly" in caplog.text
