"""Liveness of attempts from (host, pid, process start time), how readers see dead attempts and
trials, and the one end-reason -> trial-status table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest
from oshelpers import dead_pid, live_process

from unbroken._proc import ProcessIdentity, process_start_time
from unbroken.errors import ConfigError
from unbroken.tracking import (END_REASONS, TRIAL_STATUS_OF_END_REASON, TRIAL_STATUSES, attempt_state,
                               effective_status, trial_status_for)

_CHILD = """
import sys, time
from unbroken.tracking import Tracker
tracker = Tracker(sys.argv[1])
attempt = tracker.start_attempt(tracker.trial("exp").id)
tracker.close()
print(attempt.id, flush=True)
time.sleep(120)
"""


def test_start_attempt_records_the_process_start_time(tracker):
    t = tracker.create_trial("exp")
    mine = tracker.start_attempt(t.id)
    assert (mine.pid, mine.pid_start) == (os.getpid(), ProcessIdentity.current().start_time)
    assert mine.pid_start is not None
    gone = tracker.start_attempt(t.id, pid=dead_pid())
    assert gone.pid_start is None
    with live_process() as pid:
        other = tracker.start_attempt(t.id, pid=pid)
        assert other.pid_start == process_start_time(pid) is not None
        tracker.update_attempt(mine.id, pid=pid)  # a supervisor hands the attempt to its child
        assert tracker.attempt(mine.id).pid_start == other.pid_start
    tracker.update_attempt(mine.id, pid=123, pid_start=5.0)
    assert (tracker.attempt(mine.id).pid, tracker.attempt(mine.id).pid_start) == (123, 5.0)


def test_a_killed_child_that_is_still_a_zombie_is_lost(tracker, db_url, wait_for):
    t = tracker.create_trial("exp")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, db_url], stdout=subprocess.PIPE, text=True)
    try:
        attempt_id = int(child.stdout.readline())
        assert attempt_state(tracker.attempt(attempt_id)) == "running"
        assert effective_status(tracker, tracker.trial_by_id(t.id)) == "running"
        os.kill(child.pid, signal.SIGKILL)
        wait_for(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, what="the zombie")
        attempt = tracker.attempt(attempt_id)
        assert attempt.pid == child.pid and attempt.pid_start is not None
        assert attempt_state(attempt) == "lost"  # the pid still "exists": it is a zombie
        assert effective_status(tracker, tracker.trial_by_id(t.id)) == "lost"
        assert tracker.trial_by_id(t.id).status == "running"  # readers never write
        assert tracker.close_lost_attempts(t.id) == [attempt_id]
        assert tracker.attempt(attempt_id).end_reason == "lost"
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_a_reused_pid_with_another_start_time_is_lost(tracker):
    t = tracker.create_trial("exp")
    with live_process() as pid:
        start = process_start_time(pid)
        reused = tracker.start_attempt(t.id, pid=pid, pid_start=start - 100.0)
        same = tracker.start_attempt(t.id, pid=pid, pid_start=start)
        assert attempt_state(tracker.attempt(reused.id)) == "lost"
        assert attempt_state(tracker.attempt(same.id)) == "running"
        assert tracker.close_lost_attempts(t.id) == [reused.id]
        assert tracker.attempt(same.id).end_reason is None
        assert effective_status(tracker, tracker.trial_by_id(t.id)) == "running"  # one attempt still runs


def test_attempt_state_of_ended_foreign_and_pidless_attempts(tracker):
    t = tracker.create_trial("exp")
    ended = tracker.start_attempt(t.id, pid=dead_pid())
    tracker.end_attempt(ended.id, "preempted")
    foreign = tracker.start_attempt(t.id, pid=dead_pid())
    tracker.update_attempt(foreign.id, host="some-other-host")
    pidless = tracker.start_attempt(t.id)
    tracker.update_attempt(pidless.id, pid=None)
    assert attempt_state(tracker.attempt(ended.id)) == "preempted"
    assert attempt_state(tracker.attempt(foreign.id)) == "running"  # cannot be checked from here
    assert attempt_state(tracker.attempt(pidless.id)) == "running"
    assert attempt_state(tracker.attempt(foreign.id), alive=lambda pid, start: False) == "running"


def test_effective_status(tracker):
    t = tracker.create_trial("exp")
    assert effective_status(tracker, t) == "created"
    first = tracker.start_attempt(t.id, pid=dead_pid())
    running = tracker.trial_by_id(t.id)
    assert effective_status(tracker, running) == "lost"
    tracker.end_attempt(first.id, "crashed")  # between attempts (a supervisor's backoff): not lost
    assert effective_status(tracker, tracker.trial_by_id(t.id)) == "running"
    attempts = tracker.attempts(t.id)
    assert effective_status(tracker, running, attempts=attempts) == "running"
    tracker.update_trial(t.id, status="completed")
    assert effective_status(tracker, tracker.trial_by_id(t.id)) == "completed"


def test_one_table_maps_every_end_reason_to_a_trial_status():
    assert set(TRIAL_STATUS_OF_END_REASON) == set(END_REASONS)
    assert set(TRIAL_STATUS_OF_END_REASON.values()) <= set(TRIAL_STATUSES)
    assert [trial_status_for(r) for r in END_REASONS] == [
        "completed", "crashed", "preempted", "preempted", "cancelled", "crashed"]
    with pytest.raises(ConfigError, match="vanished"):
        trial_status_for("vanished")
