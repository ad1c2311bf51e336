"""init() and Run: joining trials, the high-level state API, the Determined-style API."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import unbroken
from unbroken.errors import (CheckpointNotFound, ConfigError, CorruptCheckpointWarning, PickleNotAllowed,
                             StateMismatch)
from unbroken.tracking import Tracker


def train(home, name, total, *, save=None, keep=None, **init_kw):
    """Run a tiny numpy loop to ``total`` steps; return (run, state)."""
    with unbroken.init(name, home=home, save=save or unbroken.every_steps(2), keep=keep, exit_on_preempt=False,
                       **init_kw) as run:
        state = unbroken.State(w=np.zeros(4), n=0)
        start = run.restore(state)
        for _ in run.steps(start, total):
            state.w = state.w + 1.0
            state.n += 1
    return run, state


def test_rerun_with_same_name_resumes_same_trial(home):
    run1, s1 = train(home, "exp", 5)
    run2, s2 = train(home, "exp", 9)
    assert (run1.info.trial, run2.info.trial) == (1, 1)
    assert run2.info.attempt == 2
    assert s2.n == 9 and np.array_equal(s2.w, np.full(4, 9.0))
    tracker = Tracker(home / "unbroken.db")
    attempts = tracker.attempts(run2.info.trial_id)
    assert attempts[1].restored_steps == 5
    assert tracker.trial("exp").status == "completed"


def test_fresh_starts_new_trial(home):
    train(home, "exp", 3)
    run, state = train(home, "exp", 2, fresh=True)
    assert run.info.trial == 2 and state.n == 2


def test_hparams_are_fixed_per_trial(home):
    train(home, "exp", 1, hparams={"lr": 0.1})
    with pytest.raises(ConfigError, match="fresh=True"):
        unbroken.init("exp", home=home, hparams={"lr": 0.2})
    run, _ = train(home, "exp", 2, hparams={"lr": 0.2}, fresh=True)
    assert run.hparams == {"lr": 0.2}


def test_missing_name_is_a_clear_error(home):
    with pytest.raises(ConfigError, match="needs a name"):
        unbroken.init()
    with pytest.raises(ConfigError, match="invalid experiment name"):
        unbroken.init("../evil", home=home)


def test_corrupt_newest_falls_back_warns_and_marks(home):
    run, _ = train(home, "exp", 6, keep=unbroken.keep_all())
    newest = run.checkpoint.store.list()[-1]
    tensor_file = run.checkpoint.store.local_path(newest.uuid) / "tensors.safetensors"
    data = bytearray(tensor_file.read_bytes())
    data[-1] ^= 0x01
    tensor_file.write_bytes(bytes(data))
    with pytest.warns(CorruptCheckpointWarning, match=newest.uuid):
        with unbroken.init("exp", home=home, exit_on_preempt=False) as run2:
            state = unbroken.State(w=np.zeros(4), n=0)
            assert run2.restore(state) == 4
            assert state.n == 4
    record = Tracker(home / "unbroken.db").checkpoint(newest.uuid)
    assert record.state == "corrupt" and "checksum" in record.message


def test_truncated_newest_falls_back(home):
    run, _ = train(home, "exp", 4, keep=unbroken.keep_all())
    newest = run.checkpoint.store.list()[-1]
    path = run.checkpoint.store.local_path(newest.uuid) / "state.json"
    path.write_bytes(path.read_bytes()[:10])
    with pytest.warns(CorruptCheckpointWarning, match=newest.uuid):
        with unbroken.init("exp", home=home) as run2:
            assert run2.restore(unbroken.State(w=np.zeros(4), n=0)) == 2


def test_retention_across_restarts_keeps_exactly_policy(home):
    keep = unbroken.keep_latest(2) | unbroken.keep_every(4)
    train(home, "exp", 6, keep=keep)  # saves 2, 4, 6
    run, _ = train(home, "exp", 11, keep=keep)  # saves 8, 10, 11
    steps = [m.steps_completed for m in run.checkpoint.list()]
    assert steps == [4, 8, 10, 11]


def test_retention_never_deletes_the_restored_newest_good_checkpoint(home):
    with unbroken.init("exp", home=home, keep=unbroken.keep_all()) as run:
        best = run.save(unbroken.State(n=1), 1, metrics={"loss": 0.1})
        run.save(unbroken.State(n=2), 2, metrics={"loss": 0.5})
        corrupt = run.save(unbroken.State(n=3), 3, metrics={"loss": 0.9})
    (run.checkpoint.store.local_path(corrupt) / "state.json").write_text("{}")
    with pytest.warns(CorruptCheckpointWarning):
        with unbroken.init("exp", home=home, keep=unbroken.keep_best(1, "loss")) as run:
            state = unbroken.State(n=0)
            assert run.restore(state) == 2
            restored = run.checkpoint.latest_checkpoint
            run.checkpoint.apply_retention()
            remaining = {m.uuid for m in run.checkpoint.list()}
    # The policy keeps only the best (step 1); the restored step-2 checkpoint is the newest good one
    # and stays; the corrupt one is left for inspection (`unbroken gc` removes it).
    assert remaining == {best, restored, corrupt}


def test_state_mismatch_is_not_treated_as_corruption(home):
    train(home, "exp", 2)
    with unbroken.init("exp", home=home) as run:
        with pytest.raises(StateMismatch, match="missing entries"):
            run.restore(unbroken.State(w=np.zeros(4), n=0, extra=1))


class Opaque:
    def __init__(self):
        self.x = 5


def test_pickle_needs_opt_in_on_both_sides(home):
    with unbroken.init("exp", home=home) as run:
        with pytest.raises(unbroken.UnsupportedValue, match="allow_pickle"):
            run.save(unbroken.State(obj=Opaque()), 1)
        run.save(unbroken.State(obj=Opaque(), allow_pickle=True), 1)
    with unbroken.init("exp", home=home) as run:
        with pytest.raises(PickleNotAllowed):
            run.restore(unbroken.State(obj=None))
        state = unbroken.State(obj=None)
        assert run.restore(state, allow_pickle=True) == 1 and state.obj.x == 5


def test_determined_style_api(home, tmp_path):
    with unbroken.init("exp", home=home) as run:
        assert run.checkpoint.latest_checkpoint is None
        with pytest.raises(ConfigError, match="steps_completed"):
            with run.checkpoint.store_path({"loss": 1.0}):
                pass
        with run.checkpoint.store_path({"steps_completed": 3, "note": "a"}) as (path, uuid):
            (path / "weights.bin").write_bytes(b"\x00" * 100)
            (path / "sub").mkdir()
            (path / "sub" / "x.txt").write_text("hello")
        assert run.checkpoint.latest_checkpoint == uuid
        assert run.checkpoint.get_metadata(uuid) == {"steps_completed": 3, "note": "a", "uuid": uuid}
        with run.checkpoint.restore_path(uuid) as restored:
            assert (restored / "sub" / "x.txt").read_text() == "hello"

        with pytest.raises(RuntimeError):
            with run.checkpoint.store_path({"steps_completed": 9}) as (path, failed_uuid):
                (path / "half").write_bytes(b"1")
                raise RuntimeError("crash while writing")
        assert run.checkpoint.latest_checkpoint == uuid  # the failed one never became visible

        src = tmp_path / "src"
        src.mkdir()
        (src / "a.txt").write_text("uploaded")
        up = run.checkpoint.upload(src, {"steps_completed": 5})
        out = run.checkpoint.download(up, tmp_path / "out")
        assert (out / "a.txt").read_text() == "uploaded" and (out / "MANIFEST.json").exists()
        run.checkpoint.delete(up)
        with pytest.raises(CheckpointNotFound):
            run.checkpoint.get_metadata(up)
        with pytest.raises(CheckpointNotFound):
            with run.checkpoint.restore_path("no-such-id"):
                pass


def test_metrics_are_written_in_background_and_flushed(home):
    with unbroken.init("exp", home=home) as run:
        for i in range(250):
            run.report(i, loss=1.0 / (i + 1), acc=np.float32(0.5))
        run.report(250, group="validation", loss=0.3)
        trial_id = run.info.trial_id
    tracker = Tracker(home / "unbroken.db")
    assert len(tracker.metrics(trial_id, group="training", name="loss")) == 250
    assert tracker.latest_metrics(trial_id)["validation"]["loss"] == (250, 0.3)
    with pytest.raises(ConfigError, match="must be a number"):
        with unbroken.init("exp", home=home) as run:
            run.report(1, loss="high")


def test_crash_is_recorded(home):
    with pytest.raises(ZeroDivisionError):
        with unbroken.init("exp", home=home):
            1 / 0
    tracker = Tracker(home / "unbroken.db")
    trial = tracker.trial("exp")
    attempt = tracker.attempts(trial.id)[-1]
    assert attempt.end_reason == "crashed" and "ZeroDivisionError" in attempt.message
    assert trial.status == "crashed"


def test_preempt_request_saves_at_boundary_and_exits_75(home):
    with pytest.raises(SystemExit) as exit_info:
        with unbroken.init("exp", home=home, save=unbroken.never()) as run:
            state = unbroken.State(n=0)
            start = run.restore(state)
            for step in run.steps(start, 100):
                state.n += 1
                if step == 6:
                    run.preempt.request("test")
    assert exit_info.value.code == unbroken.EXIT_PREEMPTED
    with unbroken.init("exp", home=home) as run:
        state = unbroken.State(n=0)
        assert run.restore(state) == 7 and state.n == 7


def test_deadline_stops_the_loop(home):
    import time
    with unbroken.init("exp", home=home, deadline=time.time() - 1, exit_on_preempt=False) as run:
        state = unbroken.State(n=0)
        assert list(run.steps(run.restore(state), 10)) == []
        assert run.preempted and run.preempt.reason == "deadline"


def test_no_warning_on_clean_runs(home):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(home, "exp", 3)
