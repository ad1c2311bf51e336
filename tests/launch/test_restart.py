"""Restart policies are pure functions of the history: no processes needed."""

import pytest

from unbroken.errors import ConfigError
from unbroken.launch.restart import (Outcome, exponential_backoff, failures_since_progress, max_failures,
                                     max_total_failures)

CRASH, CRASH_AFTER_PROGRESS, PREEMPT = Outcome("crashed"), Outcome("crashed", progressed=True), Outcome("preempted")


def test_preemptions_are_not_failures():
    assert failures_since_progress([PREEMPT] * 10) == 0
    assert not max_failures(0).should_stop([PREEMPT, PREEMPT])


def test_always_failing_stops_after_exactly_n_restarts():
    policy = max_failures(3)
    history = []
    attempts = 0
    while True:
        attempts += 1
        history.append(CRASH)
        if policy.should_stop(history):
            break
    assert attempts == 4  # the first run and exactly 3 restarts


def test_progress_resets_the_count():
    policy = max_failures(2)
    assert policy.should_stop([CRASH, CRASH, CRASH])
    assert not policy.should_stop([CRASH, CRASH, CRASH_AFTER_PROGRESS, CRASH])
    assert failures_since_progress([CRASH, CRASH, CRASH_AFTER_PROGRESS, CRASH]) == 2


def test_total_failures_is_a_safety_net_and_policies_combine():
    policy = max_failures(5) | max_total_failures(2)
    assert policy.should_stop([CRASH_AFTER_PROGRESS, CRASH_AFTER_PROGRESS, CRASH_AFTER_PROGRESS])
    assert not policy.should_stop([CRASH_AFTER_PROGRESS, CRASH_AFTER_PROGRESS])


def test_exponential_backoff():
    wait = exponential_backoff(1, 5)
    assert [wait.delay([CRASH] * k) for k in range(1, 6)] == [1, 2, 4, 5, 5]
    assert wait.delay([CRASH, PREEMPT]) == 0
    assert wait.delay([CRASH, CRASH, CRASH_AFTER_PROGRESS]) == 1


@pytest.mark.parametrize("bad", [lambda: max_failures(-1), lambda: max_failures(1.5),
                                 lambda: exponential_backoff(5, 1), lambda: exponential_backoff(1, 2, 0.5)])
def test_bad_arguments(bad):
    with pytest.raises(ConfigError):
        bad()
