"""rm, rm-experiment and gc respect the trial's one writer and the readers of a checkpoint."""

from __future__ import annotations

import numpy as np

import unbroken
from unbroken.checkpoint import CheckpointStore
from unbroken.paths import TrialPaths
from unbroken.storage import LocalStorage


def _trained(home, name="exp", steps=3):
    with unbroken.init(name, home=home, save=unbroken.every_steps(1), keep=unbroken.keep_all()) as run:
        state = unbroken.State(w=np.zeros(3), rng=False)
        for _ in run.steps(run.restore(state), steps):
            state.w += 1
    return run


def test_rm_experiment_refuses_while_a_writer_holds_a_trial(cli, home):
    _trained(home)
    with unbroken.init("exp", home=home):
        result = cli("rm-experiment", "exp", "--yes")
        assert result.exit_code == 1 and "is being written by pid" in result.output
    assert (home / "experiments" / "exp").is_dir()
    assert cli("rm-experiment", "exp", "--yes").exit_code == 0
    assert not (home / "experiments" / "exp").exists()


def test_rm_experiment_refuses_while_a_reader_holds_a_checkpoint(cli, home):
    _trained(home)
    store = CheckpointStore(LocalStorage(TrialPaths(home, "exp", 1).checkpoints))
    oldest = store.list()[0].uuid
    with store.reading(oldest):
        result = cli("rm-experiment", "exp", "--yes")
        assert result.exit_code == 1 and "being read" in result.output
        assert (TrialPaths(home, "exp", 1).checkpoints / oldest / "MANIFEST.json").is_file()


def test_rm_of_a_checkpoint_being_read_is_refused(cli, home):
    _trained(home)
    store = CheckpointStore(LocalStorage(TrialPaths(home, "exp", 1).checkpoints))
    oldest = store.list()[0].uuid
    with store.reading(oldest):
        result = cli("rm", "exp", "--uuid", oldest)
        assert result.exit_code == 1 and "being read" in result.output
    assert cli("rm", "exp", "--uuid", oldest).exit_code == 0


def test_incremental_checkpoints_verify_through_references_and_rm_all_deletes_newest_first(cli, home):
    with unbroken.init("inc", home=home, incremental=True, keep=unbroken.keep_all()) as run:
        state = unbroken.State(frozen=np.arange(4096, dtype=np.float32), live=np.zeros(4096, dtype=np.float32),
                               rng=False)
        for step in (1, 2, 3):
            state.live += 1
            run.save(state, step)
        run.wait_for_saves()
    report = cli.json("verify", "inc")
    assert report["ok"] and [c["status"] for c in report["checkpoints"]] == ["ok"] * 3
    exported = cli("export", "inc", "--to", str(home / "out"))
    assert exported.exit_code == 0, exported.output  # flattened: a complete copy
    assert cli.json("verify", str(home / "out"))["ok"]
    assert cli.json("rm", "inc", "--all-checkpoints", "--yes")["deleted"]
    assert not [p for p in TrialPaths(home, "inc", 1).checkpoints.iterdir() if not p.name.startswith(".")]
