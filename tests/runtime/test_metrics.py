"""MetricsWriter: bad values are refused in the caller's thread, the background writer survives
failures, progress is written promptly (and throttled), and flush() waits for the writes."""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from pgcluster import free_port, start_cluster
from waiting import wait_until

from unbroken.errors import ConfigError, TrackingError
from unbroken.runtime.metrics import MetricsWriter
from unbroken.tracking import Tracker

HOUR = 3600.0  # periodic flushes that never come during a test


class SpyTracker:
    """Delegates add_metrics to a real tracker, records each call, and fails the first ``fail`` calls."""

    def __init__(self, tracker: Tracker, fail: int = 0):
        self.tracker, self.fail, self.calls = tracker, fail, []

    def add_metrics(self, trial_id, attempt_id, points, *, progress=None):
        self.calls.append((list(points), progress))
        if len(self.calls) <= self.fail:
            raise TrackingError("database or disk is full (simulated)")
        self.tracker.add_metrics(trial_id, attempt_id, points, progress=progress)


@pytest.fixture
def tracker(tmp_path):
    t = Tracker(tmp_path / "unbroken.db")
    yield t
    t.close()


@pytest.fixture
def trial(tracker):
    return tracker.create_trial("exp")


@pytest.fixture
def writer(tracker, trial):
    w = MetricsWriter(tracker, trial.id, None, flush_seconds=HOUR)
    yield w
    w.close()


@pytest.mark.parametrize("steps, metrics, match", [
    (2**64, {"loss": 1.0}, r"'loss'.*2\*\*63"),
    (-1, {"loss": 1.0}, r"'loss'.*between 0 and"),
    ("3", {"loss": 1.0}, r"'loss'.*whole number"),
    (1.5, {"loss": 1.0}, r"'loss'.*whole number"),
    (1, {"loss": np.array([1.0, 2.0])}, r"metric 'loss' must be a single number.*\(2,\)"),
    (1, {"loss": torch.tensor([1.0, 2.0])}, r"metric 'loss' must be a single number.*\(2,\)"),
    (1, {"loss": 10**400}, r"metric 'loss' is too large"),
    (1, {"loss": "low"}, r"metric 'loss' must be a number, not str"),
    (1, {"ok": 1.0, "loss": True}, r"metric 'loss' must be a number"),
])
def test_bad_reports_raise_config_error_in_the_caller_and_do_not_poison_the_writer(tracker, trial, writer,
                                                                                    steps, metrics, match):
    with pytest.raises(ConfigError, match=match):
        writer.put("training", steps, metrics)
    writer.put("training", 2, {"loss": 0.5})
    assert writer.flush(30)
    assert [(p.name, p.steps_completed, p.value) for p in tracker.metrics(trial.id)] == [("loss", 2, 0.5)]


def test_values_are_finite_floats_or_null(tracker, trial, writer):
    writer.put("training", 1, {"np": np.float32(0.5), "t": torch.tensor(2.0), "one": np.array([3.0]), "int": 7,
                               "nan": float("nan"), "inf": float("-inf"), "none": None})
    assert writer.flush(30)
    values = {p.name: p.value for p in tracker.metrics(trial.id)}
    assert values == {"np": 0.5, "t": 2.0, "one": 3.0, "int": 7.0, "nan": None, "inf": None, "none": None}


def test_flush_waits_until_everything_queued_is_written(tracker, trial, writer):
    for step in range(500):
        writer.put("training", step, {"loss": float(step)})
    assert writer.flush(30)  # no periodic flush for an hour: only flush() can have written them
    assert len(tracker.metrics(trial.id)) == 500
    assert writer.flush(30)  # nothing queued: returns at once


def test_progress_is_written_promptly_with_the_metrics_queued_before_it(tracker, trial, writer):
    writer.put("training", 1, {"loss": 1.0})
    writer.progress(0.25)
    wait_until(lambda: tracker.trial_by_id(trial.id).progress == 0.25, timeout=10)  # not after an hour
    assert [p.name for p in tracker.metrics(trial.id)] == ["loss"]


def test_progress_writes_are_throttled_and_coalesced(tracker, trial):
    spy = SpyTracker(tracker)
    writer = MetricsWriter(spy, trial.id, None, flush_seconds=HOUR, progress_seconds=HOUR)
    writer.progress(0.1)
    wait_until(lambda: tracker.trial_by_id(trial.id).progress == 0.1)  # the first is written at once
    for i in range(2, 10):
        writer.progress(i / 10)
    assert writer.flush(30)
    writer.close()
    assert [progress for _, progress in spy.calls] == [0.1, 0.9]  # the updates in between coalesced
    assert tracker.trial_by_id(trial.id).progress == 0.9


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan"), "half"])
def test_bad_progress_is_refused(writer, fraction):
    with pytest.raises(ConfigError, match="progress"):
        writer.progress(fraction)


def test_a_failed_write_is_logged_and_its_points_are_written_with_the_next(tracker, trial, caplog):
    spy = SpyTracker(tracker, fail=1)
    writer = MetricsWriter(spy, trial.id, None, flush_seconds=HOUR, retry_seconds=HOUR)
    with caplog.at_level(logging.WARNING, logger="unbroken"):
        writer.put("training", 1, {"first": 1.0})
        assert writer.flush(30)
        assert writer.pending == 1 and tracker.metrics(trial.id) == []
        writer.put("training", 2, {"second": 2.0})
        writer.close()  # writes what waits, even before its retry is due
    assert "could not write 1 metric points of trial" in caplog.text and "full" in caplog.text
    assert "writable again: wrote 2 metric points" in caplog.text
    assert [p.name for p in tracker.metrics(trial.id)] == ["first", "second"]  # in order
    assert [len(points) for points, _ in spy.calls] == [1, 2]


def test_failed_points_are_retried_by_the_writer_itself(tracker, trial):
    spy = SpyTracker(tracker, fail=3)
    writer = MetricsWriter(spy, trial.id, None, flush_seconds=HOUR, retry_seconds=0.01)
    writer.put("training", 1, {"loss": 1.0})
    writer.progress(0.5)
    wait_until(lambda: [p.name for p in tracker.metrics(trial.id)] == ["loss"], what="the retried write")
    assert len(spy.calls) == 4 and tracker.trial_by_id(trial.id).progress == 0.5
    writer.close()


def test_the_backlog_is_bounded_in_points_and_in_failed_writes(tracker, trial, caplog):
    spy = SpyTracker(tracker, fail=4)
    writer = MetricsWriter(spy, trial.id, None, flush_seconds=HOUR, retry_seconds=HOUR, max_pending=10,
                           max_retries=3)
    with caplog.at_level(logging.WARNING, logger="unbroken"):
        for step in range(25):
            writer.put("training", step, {"loss": float(step)})
        assert writer.flush(30)  # failure 1
        assert writer.pending == 10 and "dropped the 15 oldest metric points" in caplog.text
        writer.put("training", 25, {"loss": 25.0})
        assert writer.flush(30) and writer.flush(30)  # failures 2 and 3
        assert writer.pending == 10
        assert writer.flush(30)  # failure 4: more than max_retries in a row
        assert writer.pending == 0 and "dropped 10 metric points of trial" in caplog.text
        assert "after 4 failed writes" in caplog.text
        writer.put("training", 26, {"loss": 26.0})
        writer.close()
    assert [p.steps_completed for p in tracker.metrics(trial.id)] == [26]


def test_what_still_fails_at_close_is_dropped_and_said(tracker, trial, caplog):
    writer = MetricsWriter(SpyTracker(tracker, fail=2), trial.id, None, flush_seconds=HOUR)
    with caplog.at_level(logging.WARNING, logger="unbroken"):
        writer.put("training", 1, {"loss": 1.0})
        assert writer.flush(30)
        writer.close()
    assert "dropped 1 metric points of trial" in caplog.text and "at close" in caplog.text
    assert tracker.metrics(trial.id) == []


def test_points_reported_while_postgresql_is_down_are_written_when_it_is_back(caplog):
    cluster = start_cluster(Path(tempfile.mkdtemp(prefix="unbroken-pg-outage-")), free_port())
    try:
        url = cluster.create_database()
        tracker = Tracker(url)
        trial = tracker.create_trial("exp")
        writer = MetricsWriter(tracker, trial.id, None, flush_seconds=HOUR, retry_seconds=0.05)
        for step in range(100):
            writer.put("training", step, {"loss": float(step)})
        assert writer.flush(30) and writer.pending == 0
        cluster.stop()
        with caplog.at_level(logging.WARNING, logger="unbroken"):
            for step in range(100, 300):  # the run goes on reporting
                writer.put("training", step, {"loss": float(step)})
                if step % 50 == 0:
                    assert writer.flush(60)
            assert writer.flush(60)
            assert writer.pending == 200
            cluster.start()
            wait_until(lambda: writer.pending == 0, timeout=60, what="the retries after the restart")
        assert re.search(r"could not write \d+ metric points of trial .* connection failed", caplog.text)
        assert url in caplog.text and "Connection refused" in caplog.text
        assert "writable again: wrote 200 metric points" in caplog.text
        points = tracker.metrics(trial.id)
        assert [p.steps_completed for p in points] == list(range(300))  # nothing lost, nothing twice
        writer.close()
        tracker.close()
    finally:
        cluster.purge()


def test_close_writes_everything_and_is_idempotent(tracker, trial):
    writer = MetricsWriter(tracker, trial.id, None, flush_seconds=HOUR)
    writer.put("validation", 3, {"acc": 0.9})
    writer.progress(1.0)
    writer.close()
    writer.close()
    assert writer.flush(0)  # a stopped writer has nothing left to write
    assert [(p.group, p.name) for p in tracker.metrics(trial.id)] == [("validation", "acc")]
    assert tracker.trial_by_id(trial.id).progress == 1.0
