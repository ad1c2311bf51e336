"""Run.save is asynchronous: what it saves, when it commits, and how background failures surface.

The disk-full and read-only tests mount a small tmpfs exactly where the trial's checkpoints
go (the tracking database stays on the normal disk), so only checkpoint writes fail. They
need root: skipped loudly otherwise, and a failure instead of a skip when $CI is set.
"""

from __future__ import annotations

import errno
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from oshelpers import mount_small_tmpfs

import unbroken
from unbroken.checkpoint import CheckpointStore
from unbroken.errors import BackgroundSaveError
from unbroken.storage import LocalStorage
from unbroken.tracking import Tracker


def checkpoints_dir(home: Path, name: str = "exp", trial: int = 1) -> Path:
    return home / "experiments" / name / f"trial-{trial}" / "checkpoints"


def committed(home: Path) -> list[int]:
    return [m.steps_completed for m in CheckpointStore(LocalStorage(checkpoints_dir(home))).list()]


def test_save_returns_a_uuid_that_is_committed_once_waited_for_and_reports_metrics(home):
    with unbroken.init("exp", home=home, keep=unbroken.keep_all()) as run:
        state = unbroken.State(w=torch.arange(1000.0), rng=False)
        uuid = run.save(state, 1)
        state.w.mul_(0)  # after save() returned: not part of the checkpoint
        run.wait_for_saves()
        assert [m.uuid for m in run.checkpoint.list()] == [uuid]
        uuid2 = run.save(state, 2, wait=True)
        assert run.checkpoint.list()[-1].uuid == uuid2  # committed on return
        trial_id = run.info.trial_id
    with unbroken.init("exp", home=home) as run:
        target = unbroken.State(w=torch.zeros(1000), rng=False)
        store = run.checkpoint.store
        from unbroken.checkpoint.saving import statefile
        statefile.restore(target, store.local_path(uuid), store.manifest(uuid))
        assert torch.equal(target.w, torch.arange(1000.0))
    names = {p.name for p in Tracker(home / "unbroken.db").metrics(trial_id, group="checkpoint")}
    assert {"stall_s", "wait_s", "save_s", "bytes"} <= names


def test_preemption_stop_commits_before_the_loop_ends(home):
    with unbroken.init("exp", home=home, save=unbroken.every_steps(3), exit_on_preempt=False) as run:
        state = unbroken.State(w=torch.zeros(256, 1024), n=0, rng=False)
        for step in run.steps(run.restore(state), 100):
            state.w.add_(1)
            state.n += 1
            if step == 7:
                run.preempt.request("test")
        # Still inside the run: the stop already committed the step-8 checkpoint.
        assert committed(home)[-1] == 8
        assert run.preempted


def test_end_of_loop_save_is_committed_at_close(home):
    with unbroken.init("exp", home=home, save=unbroken.never()) as run:
        state = unbroken.State(w=torch.zeros(512, 1024), rng=False)
        for _ in run.steps(run.restore(state), 5):
            state.w.add_(1)
    assert committed(home) == [5]
    with unbroken.init("exp", home=home) as run:
        state = unbroken.State(w=torch.zeros(512, 1024), rng=False)
        assert run.restore(state) == 5 and bool((state.w == 5).all())


# -- disk full and read-only storage -------------------------------------------------------------


@pytest.fixture
def tiny_checkpoints(home):
    """The trial's checkpoint folder on a 2 MiB tmpfs."""
    yield from mount_small_tmpfs(checkpoints_dir(home), "2m")


def wait_until_done(run) -> None:
    """Let the save in flight finish without asking for its result."""
    handle = run._loop.saver.in_flight if run._loop.saver is not None else None
    while handle is not None and not handle.done():
        time.sleep(0.01)


def assert_first_checkpoint_intact(home: Path) -> None:
    assert committed(home) == [1]
    assert not [p for p in checkpoints_dir(home).iterdir() if p.name.startswith(".tmp-")]
    with unbroken.init("exp", home=home) as run:
        state = unbroken.State(w=np.zeros(300_000, dtype=np.float32), rng=False)
        assert run.restore(state) == 1
        assert np.array_equal(state.w, np.full(300_000, 1.0, dtype=np.float32))


def big_state() -> unbroken.State:
    return unbroken.State(w=np.full(300_000, 1.0, dtype=np.float32), rng=False)  # 1.2 MB per checkpoint


def test_disk_full_in_the_background_is_raised_at_the_next_save(home, tiny_checkpoints):
    with pytest.raises(BackgroundSaveError) as at_save:
        with unbroken.init("exp", home=home, keep=unbroken.keep_all()) as run:
            state = big_state()
            run.save(state, 1, wait=True)
            run.save(state, 2)  # does not fit: fails in the background
            wait_until_done(run)
            run.save(state, 3)
    cause = at_save.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.ENOSPC, repr(cause)
    assert_first_checkpoint_intact(home)


def test_disk_full_in_the_background_is_raised_at_the_next_step_boundary(home, tiny_checkpoints):
    seen = []
    with pytest.raises(BackgroundSaveError, match="steps_completed=2"):
        with unbroken.init("exp", home=home, save=unbroken.every_steps(1), keep=unbroken.keep_all()) as run:
            trial_id = run.info.trial_id
            state = big_state()
            for step in run.steps(run.restore(state), 10):
                seen.append(step)
                wait_until_done(run)
    assert seen == [0, 1, 2]  # step 1 saved; step 2's save failed; raised after step 3
    assert_first_checkpoint_intact(home)
    attempt = Tracker(home / "unbroken.db").attempts(trial_id)[0]
    assert attempt.end_reason == "crashed" and "BackgroundSaveError" in attempt.message


def test_disk_full_in_the_background_is_raised_at_exit(home, tiny_checkpoints):
    with pytest.raises(BackgroundSaveError, match="steps_completed=2") as info:
        with unbroken.init("exp", home=home, keep=unbroken.keep_all()) as run:
            state = big_state()
            run.save(state, 1, wait=True)
            run.save(state, 2)
            trial_id = run.info.trial_id
    assert info.value.__cause__.errno == errno.ENOSPC
    attempt = Tracker(home / "unbroken.db").attempts(trial_id)[0]
    assert attempt.end_reason == "crashed" and "BackgroundSaveError" in attempt.message
    assert_first_checkpoint_intact(home)


def remount_read_only(path: Path) -> None:
    result = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_read_only_storage_in_the_background_is_raised_at_the_next_call_and_at_exit(home, tiny_checkpoints):
    with pytest.raises(BackgroundSaveError, match="steps_completed=3") as at_exit:
        with unbroken.init("exp", home=home, keep=unbroken.keep_all()) as run:
            state = big_state()
            run.save(state, 1, wait=True)
            remount_read_only(tiny_checkpoints)
            run.save(state, 2)
            wait_until_done(run)
            with pytest.raises(BackgroundSaveError, match="steps_completed=2") as at_call:
                run.maybe_save(state, 3)
            assert at_call.value.__cause__.errno == errno.EROFS
            run.save(state, 3)  # the error was reported: saving is allowed again, and fails again
    assert at_exit.value.__cause__.errno == errno.EROFS
    assert_first_checkpoint_intact(home)
