"""decide() and classify() are pure: every supervisor policy, tested without processes or clocks."""

import signal

import pytest

from unbroken.launch.decide import EXIT_NO_PROGRESS, Facts, Policies, classify, decide, made_progress
from unbroken.launch.progress import Ledger, load_ledger, save_ledger
from unbroken.paths import TrialPaths
from unbroken.launch.restart import Outcome, exponential_backoff, max_failures

POLICIES = Policies(max_failures(2), exponential_backoff(1, 8), margin=60)
NOW = 1_000_000.0
CRASH, PROGRESS_CRASH = Outcome("crashed", exit_code=1), Outcome("crashed", progressed=True, exit_code=1)


def run(*history, policies=POLICIES, **facts):
    return decide(history[-1], list(history), policies, Facts(now=NOW, **facts))


def test_classify_each_exit():
    kw = {"progressed": False, "seconds": 1.0}
    assert classify(0, stop_requested=True, interrupts=2, **kw).kind == "completed"
    assert classify(1, stop_requested=False, interrupts=0, **kw).kind == "crashed"
    assert classify(75, stop_requested=False, interrupts=0, **kw).kind == "preempted"
    killed = classify(-signal.SIGKILL, stop_requested=True, interrupts=1, **kw)
    assert killed.kind == "preempted" and killed.signal == signal.SIGKILL and killed.exit_code is None
    assert classify(-signal.SIGKILL, stop_requested=True, interrupts=2, **kw).kind == "cancelled"


def test_progress_is_a_newer_checkpoint_or_a_long_attempt():
    assert made_progress(4, 5, 0.1, None)
    assert not made_progress(5, 5, 1e6, None)
    assert made_progress(5, 5, 30.0, 30.0) and not made_progress(5, 5, 29.9, 30.0)


def test_completed_and_cancelled_finish():
    done = run(CRASH, Outcome("completed", exit_code=0))
    assert (done.action, done.exit_code, done.end_reason, done.trial_status) == ("finish", 0, "completed", "completed")
    assert "2 attempt(s)" in done.message
    cancelled = run(Outcome("cancelled", signal=9))
    assert (cancelled.exit_code, cancelled.end_reason, cancelled.trial_status) == (130, "cancelled", "cancelled")


def test_crashes_restart_with_backoff_then_give_up():
    assert [(run(*[CRASH] * k).action, run(*[CRASH] * k).delay) for k in (1, 2)] == [("restart", 1), ("restart", 2)]
    gave_up = run(CRASH, CRASH, CRASH)
    assert (gave_up.action, gave_up.exit_code, gave_up.end_reason, gave_up.trial_status) == (
        "finish", 1, "crashed", "failed")
    assert "max_failures(2)" in gave_up.message and "exit status 1" in gave_up.message


def test_progress_resets_count_and_backoff():
    after_progress = run(CRASH, CRASH, PROGRESS_CRASH)
    assert after_progress.action == "restart" and after_progress.delay == 1


def test_preemption_is_no_failure_and_never_restarts_here():
    d = run(CRASH, CRASH, Outcome("preempted", exit_code=75), stop_reason="signal SIGTERM")
    assert (d.action, d.exit_code, d.end_reason, d.trial_status, d.requeue) == (
        "finish", 75, "preempted", "preempted", False)
    assert d.message == "signal SIGTERM"


def test_time_limit_vs_preemption_is_decided_from_the_clock():
    saved = Outcome("preempted", exit_code=75)
    # the child was asked to stop `margin` (60 s) before the deadline: at that point it is the time limit
    assert run(saved, deadline=NOW + 60).end_reason == "timed_out"
    assert run(saved, deadline=NOW + 30).message == "time limit"
    # long before it, a 75 is the command's own stop request; a signal is a preemption even near it
    assert run(saved, deadline=NOW + 3600).end_reason == "preempted"
    assert run(saved, deadline=NOW + 60, stop_reason="signal SIGUSR2").end_reason == "preempted"
    assert run(saved).end_reason == "preempted"


def test_preempted_without_a_final_save_says_so():
    d = run(Outcome("preempted", signal=signal.SIGKILL), stop_reason="signal SIGTERM")
    assert "killed by SIGKILL" in d.message and "without a final save" in d.message


@pytest.mark.parametrize("requeues,max_requeues,expected", [
    (None, None, False),  # a plain machine cannot requeue
    (0, None, True), (7, None, True),  # no limit
    (1, 2, True), (2, 2, False), (0, 0, False),
])
def test_slurm_requeue_decision(requeues, max_requeues, expected):
    policies = Policies(max_failures(2), exponential_backoff(), margin=60, max_requeues=max_requeues)
    d = run(Outcome("preempted", exit_code=75), policies=policies, requeues=requeues, stop_reason="signal SIGUSR2")
    assert d.requeue is expected and d.exit_code == 75
    assert ("--max-requeues" in d.message) is (requeues is not None and not expected)


# -- no endless requeues ------------------------------------------------------------------------------
PREEMPTED = Outcome("preempted", exit_code=75)


@pytest.mark.parametrize("stalled,requeue", [(0, True), (1, True), (2, True), (3, False), (4, False)])
def test_requeueing_stops_after_k_allocations_in_a_row_without_progress(stalled, requeue):
    decision = run(PREEMPTED, requeues=5, stalled=stalled, best_steps=400)
    assert decision.requeue is requeue
    if requeue:
        assert (decision.exit_code, decision.trial_status) == (75, "preempted")
    else:
        assert (decision.exit_code, decision.trial_status) == (EXIT_NO_PROGRESS, "failed")
        assert decision.message.startswith(f"no progress: {stalled} allocations in a row")
        assert "past step 400" in decision.message and "--max-requeues-without-progress 3" in decision.message


def test_no_progress_rule_is_configurable_and_needs_a_requeueing_environment():
    one = Policies(max_failures(2), exponential_backoff(1, 8), margin=60, max_stalled=1)
    assert run(PREEMPTED, policies=one, requeues=0, stalled=1).exit_code == EXIT_NO_PROGRESS
    unlimited = Policies(max_failures(2), exponential_backoff(1, 8), margin=60, max_stalled=None)
    assert run(PREEMPTED, policies=unlimited, requeues=9, stalled=50).requeue
    assert run(PREEMPTED, requeues=None, stalled=50).exit_code == 75  # a plain machine never requeues anyway
    timed_out = run(PREEMPTED, requeues=1, stalled=3, deadline=NOW + 60)
    assert timed_out.end_reason == "timed_out" and timed_out.trial_status == "failed"


def test_ledger_counts_allocations_in_a_row_without_a_newer_checkpoint(tmp_path):
    ledger = Ledger()
    for steps, expected in [(50, (50, 0)), (50, (50, 1)), (30, (50, 2)), (-1, (50, 3)), (60, (60, 0))]:
        ledger = ledger.after(steps)
        assert (ledger.best_steps, ledger.stalled) == expected
    path = TrialPaths(tmp_path, "exp", 1).requeue_ledger
    assert load_ledger(path) == Ledger()
    save_ledger(path, Ledger(7, 2))
    assert load_ledger(path) == Ledger(7, 2)
    path.write_text("{broken")
    assert load_ledger(path) == Ledger()
