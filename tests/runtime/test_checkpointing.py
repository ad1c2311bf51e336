"""run.checkpoint: Determined-style API, retention from the commit hook, read leases, resume points."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import unbroken
from unbroken.checkpoint import CheckpointStore, keep_latest
from unbroken.errors import CheckpointError, CheckpointNotFound, ConfigError
from unbroken.storage import LocalStorage
from unbroken.tracking import Tracker


def store_files(run, steps: int) -> str:
    with run.checkpoint.store_path({"steps_completed": steps}) as (path, uuid):
        (path / "weights.bin").write_bytes(bytes([steps % 256]) * 4096)
    return uuid


def test_restore_path_keeps_an_old_checkpoint_readable_while_retention_runs_in_another_thread(home):
    with unbroken.init("lease", home=home, keep=keep_latest(1)) as run:
        old = store_files(run, 1)
        entered, release = threading.Event(), threading.Event()
        seen = {}

        def reader():
            with run.checkpoint.restore_path(old) as path:
                entered.set()
                release.wait(30)
                seen["bytes"] = (path / "weights.bin").read_bytes()

        thread = threading.Thread(target=reader)
        thread.start()
        assert entered.wait(30)
        newer = [store_files(run, s) for s in (2, 3)]  # each commit applies keep_latest(1)
        assert old in {m.uuid for m in run.checkpoint.list()}, "a leased checkpoint was deleted"
        release.set()
        thread.join(30)
        assert seen["bytes"] == bytes([1]) * 4096
        run.checkpoint.apply_retention()
        assert [m.uuid for m in run.checkpoint.list()] == [newer[-1]]


def test_gc_in_another_process_cannot_delete_what_restore_path_reads(home):
    with unbroken.init("lease", home=home, keep=unbroken.keep_all()) as run:
        old = store_files(run, 1)
        store_files(run, 2)
        root = run.info.trial_dir / "checkpoints"
        other = ("import sys; from unbroken.checkpoint import CheckpointStore, keep_latest\n"
                 "from unbroken.storage import LocalStorage\n"
                 f"s = CheckpointStore(LocalStorage({str(root)!r}))\n"
                 "print(sorted(s.apply_retention(keep_latest(1))))\n")
        with run.checkpoint.restore_path(old) as path:
            out = subprocess.run([sys.executable, "-c", other], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert out.stdout.strip() == "[]"  # the only candidate was leased
            assert (path / "weights.bin").read_bytes() == bytes([1]) * 4096
        out = subprocess.run([sys.executable, "-c", other], capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == repr([old])  # released with the block


def test_an_explicit_delete_of_a_checkpoint_being_read_is_refused(home):
    with unbroken.init("lease", home=home, keep=unbroken.keep_all()) as run:
        old = store_files(run, 1)
        store_files(run, 2)
        with run.checkpoint.restore_path(old):
            with pytest.raises(CheckpointError, match="being read"):
                CheckpointStore(LocalStorage(run.info.trial_dir / "checkpoints")).delete(old)
        run.checkpoint.delete(old)
        assert old not in {m.uuid for m in run.checkpoint.list()}


def test_restore_path_records_the_resume_point_once(home, caplog):
    with unbroken.init("det", home=home) as run:
        first = store_files(run, 7)
    with caplog.at_level(logging.INFO, logger="unbroken"):
        with unbroken.init("det", home=home) as run:
            latest = run.checkpoint.latest_checkpoint
            assert latest == first
            with run.checkpoint.restore_path(latest):
                pass
            with run.checkpoint.restore_path(latest):
                pass
            attempt_id = run.info.attempt_id
    attempt = Tracker(home / "unbroken.db").attempt(attempt_id)
    assert (attempt.restored_uuid, attempt.restored_steps) == (first, 7)
    assert caplog.text.count(f"resumed from checkpoint {first} at step 7") == 1


def test_restore_path_on_a_fresh_trial_says_how_to_guard(home):
    with unbroken.init("det", home=home) as run:
        with pytest.raises(CheckpointNotFound, match="if latest is not None"):
            with run.checkpoint.restore_path(run.checkpoint.latest_checkpoint):
                pass


@pytest.mark.parametrize("steps", [2**63, -1, 1.5, "3"])
def test_a_step_count_the_index_cannot_hold_is_refused_before_anything_is_written(home, steps):
    with unbroken.init("big", home=home) as run:
        with pytest.raises(ConfigError, match="steps_completed"):
            with run.checkpoint.store_path({"steps_completed": steps}):
                pytest.fail("the block must not run")
        with pytest.raises(ConfigError, match="steps_completed"):
            run.save(unbroken.State(w=np.zeros(2), rng=False), steps)
        root = run.info.trial_dir / "checkpoints"
        assert not root.exists() or [p.name for p in root.iterdir() if p.name != ".leases"] == []
    with unbroken.init("big", home=home) as run:
        assert run.restore(unbroken.State(w=np.zeros(2), rng=False)) == 0


def test_a_checkpoint_the_index_cannot_hold_never_makes_the_trial_unrestorable(home):
    """Written by hand (another tool, an old version): steps beyond SQLite's range."""
    with unbroken.init("big", home=home) as run:
        run.save(unbroken.State(w=np.ones(2), rng=False), 3, wait=True)
        store = run.checkpoint.store
        pending = store.begin(5)
        (pending.path / "x").write_bytes(b"x")
        huge = store.commit(pending)
    manifest_path = run.info.trial_dir / "checkpoints" / huge.uuid / "MANIFEST.json"
    _rewrite_steps(manifest_path, 2**64)
    with pytest.warns(unbroken.UnbrokenWarning):
        with unbroken.init("big", home=home) as run:
            state = unbroken.State(w=np.zeros(2), rng=False)
            assert run.restore(state) == 3  # the huge one is not a State checkpoint: skipped as corrupt
            assert np.array_equal(state.w, np.ones(2))


def _rewrite_steps(path, steps: int) -> None:
    """Rewrite a manifest's steps_completed and re-seal its own checksum (a hostile but valid manifest)."""
    import json

    from unbroken.checkpoint.format import manifest as manifest_mod

    body = json.loads(path.read_bytes())
    body.pop("manifest_crc32c")
    body["steps_completed"] = steps
    body["manifest_crc32c"] = manifest_mod._body_crc(body)
    os.chmod(path, 0o644)
    path.write_bytes(json.dumps(body, indent=1, sort_keys=True).encode())


def test_reading_back_what_this_attempt_wrote_is_no_resume_point(home):
    with unbroken.init("own", home=home) as run:
        uuid = store_files(run, 2)
        with run.checkpoint.restore_path(uuid):
            pass
        run.checkpoint.download(uuid, home / "copy")
        attempt_id = run.info.attempt_id
    attempt = Tracker(home / "unbroken.db").attempt(attempt_id)
    assert (attempt.restored_uuid, attempt.restored_steps) == (None, None)
    assert (home / "copy" / "weights.bin").read_bytes() == bytes([2]) * 4096


def test_restore_of_a_state_skips_checkpoints_of_plain_files_without_calling_them_corrupt(home, recwarn):
    with unbroken.init("mixed", home=home) as run:
        state = unbroken.State(n=np.arange(3))
        run.save(state, 5, wait=True)
        store_files(run, 9)  # newer, but written with store_path: no state file
    with unbroken.init("mixed", home=home) as run:
        state = unbroken.State(n=np.zeros(3, dtype=np.int64))
        assert run.restore(state) == 5 and state.n.tolist() == [0, 1, 2]
        assert run.checkpoint.latest_checkpoint == run.checkpoint.list()[-1].uuid  # still a good checkpoint
    assert not [w for w in recwarn if "corrupt" in str(w.message)]
