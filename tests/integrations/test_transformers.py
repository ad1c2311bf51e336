"""Hugging Face Trainer with UnbrokenTrainerCallback and resume_path.

End to end (tests/integrations/programs/hf_train.py: a 2-layer GPT-2 with dropout, CPU, fixed
seeds): a training SIGKILLed under `unbroken run`, and one stopped by SIGTERM whose newest
checkpoint is then corrupted, end bitwise equal to an uninterrupted training. In process: the
stop logic, the commit of a Trainer folder, the verified resume copy, the metrics split.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from compat.compathelp import committed, kill_child_after, show, supervise
from integrations.inthelp import corrupt_newest, require
from procs import child_env
from waiting import wait_until

from unbroken.runtime.grouploop import GroupPreempt
from unbroken.runtime.preempt import PreemptContext

PROGRAM = Path(__file__).resolve().parent / "programs" / "hf_train.py"
MAX_STEPS = "24"  # saves every 3 steps: 8 checkpoints
THREADS = {"OMP_NUM_THREADS": "1"}  # the machine is shared; every run uses the same


@pytest.fixture(scope="module", autouse=True)
def transformers_installed():
    require("transformers", "transformers")
    require("accelerate", "transformers")


def command(out: Path) -> list[str]:
    return [sys.executable, "-u", str(PROGRAM), str(out), MAX_STEPS]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The folder of one uninterrupted training: its weights ``w.npy``, ``home``, ``hf-out``."""
    tmp = tmp_path_factory.mktemp("hf-ref")
    done = subprocess.run(command(tmp / "w.npy"), env=child_env(tmp / "home", **THREADS), capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return tmp


@pytest.fixture(scope="module")
def reference(uninterrupted) -> np.ndarray:
    return np.load(uninterrupted / "w.npy")


@pytest.mark.slow
def test_checkpoints_follow_keep_and_metrics_are_split(uninterrupted):
    home = uninterrupted / "home"
    assert not list((uninterrupted / "hf-out").glob("checkpoint-*"))  # every Trainer folder went into the store
    assert committed(home, "hf") == 3  # keep_latest(3) of 8
    shown = show(home, "hf")
    assert shown["trial"]["latest_checkpoint_steps"] == int(MAX_STEPS)
    assert {"loss", "learning_rate", "grad_norm"} <= set(shown["metrics"]["training"])
    assert "loss" in shown["metrics"]["validation"] and "eval_loss" not in shown["metrics"]["validation"]


@pytest.mark.slow
def test_sigkilled_training_resumes_to_the_uninterrupted_weights(tmp_path, reference):
    home, log = tmp_path / "home", tmp_path / "out.log"
    sup = supervise(home, ["--name", "hf"], command(tmp_path / "w.npy"), log, **THREADS)
    kill_child_after(sup, home, "hf", 3, log)
    assert sup.wait(timeout=180) == 0, log.read_text()
    _, step = resumed_from(log.read_text())
    assert 9 <= step < int(MAX_STEPS)  # it resumed after the 3rd commit, not from scratch
    assert np.array_equal(np.load(tmp_path / "w.npy"), reference)


@pytest.mark.slow
def test_sigterm_exits_75_and_a_corrupt_newest_checkpoint_is_skipped(tmp_path, reference):
    home, out = tmp_path / "home", tmp_path / "w.npy"
    env = child_env(home, **THREADS)
    proc = subprocess.Popen(command(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: committed(home, "hf") >= 3 or proc.poll() is not None, timeout=120, what="3 checkpoints")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert not out.exists()
    bad = corrupt_newest(home, "hf")
    again = subprocess.run(command(out), env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert f"skipping corrupt checkpoint {bad}" in again.stderr
    uuid, step = resumed_from(again.stderr)
    assert uuid != bad and step >= 9
    assert np.array_equal(np.load(out), reference)


def resumed_from(log: str) -> tuple[str, int]:
    """(uuid, steps) of the checkpoint an attempt's log says it resumed from."""
    found = re.search(r"resumed from checkpoint (\S+) at step (\d+)", log)
    assert found, log
    return found[1], int(found[2])


# -- in process ------------------------------------------------------------------------------------
def fake_run(stop_here=False, others=()):
    """A run whose own stop request is ``stop_here`` and whose group's other ranks ask ``others``."""
    calls = types.SimpleNamespace(train=[], val=[])
    preempt = PreemptContext(signals=[])
    if stop_here:
        preempt.request("signal SIGTERM")
    group = types.SimpleNamespace(size=1 + len(others), rank=0, is_chief=True,
                                  allgather=lambda v: [v, *others], barrier=lambda: None)
    if others:
        preempt = GroupPreempt(preempt, group)
    train = types.SimpleNamespace(report_training_metrics=lambda s, m: calls.train.append((s, m)),
                                  report_validation_metrics=lambda s, m: calls.val.append((s, m)))
    return types.SimpleNamespace(preempt=preempt, distributed=group, train=train), calls


def step_end(run):
    from transformers import TrainerControl, TrainerState
    from unbroken.integrations.transformers import UnbrokenTrainerCallback

    control = TrainerControl()
    return UnbrokenTrainerCallback(run).on_step_end(None, TrainerState(), control)


def test_no_stop_request_leaves_the_control_alone():
    control = step_end(fake_run()[0])
    assert not control.should_save and not control.should_training_stop


def test_a_stop_request_saves_and_stops_at_the_step_end():
    control = step_end(fake_run(stop_here=True)[0])
    assert control.should_save and control.should_training_stop


def test_a_stop_on_another_rank_stops_this_one_too_and_marks_it_preempted():
    run, _calls = fake_run(others=(None, "signal SIGUSR2"))
    control = step_end(run)
    assert control.should_save and control.should_training_stop
    assert run.preempt.reason == "signal SIGUSR2 on rank 2"  # so this rank, too, exits 75


def test_logs_go_to_training_and_validation_metrics():
    from transformers import TrainerControl, TrainerState
    from unbroken.integrations.transformers import UnbrokenTrainerCallback

    run, calls = fake_run()
    logs = {"loss": 2.5, "learning_rate": 1e-3, "eval_loss": 3.0, "eval_runtime": 0.1, "note": "x", "flag": True}
    UnbrokenTrainerCallback(run).on_log(None, TrainerState(global_step=7), TrainerControl(), logs=logs)
    assert calls.train == [(7, {"loss": 2.5, "learning_rate": 1e-3})]
    assert calls.val == [(7, {"loss": 3.0, "runtime": 0.1})]


def test_a_real_run_stopped_at_a_step_end_exits_75(home):
    import unbroken

    with pytest.raises(SystemExit) as exited:
        with unbroken.init(name="hf-stop") as run:
            assert not step_end(run).should_training_stop
            run.preempt.request("test")
            assert step_end(run).should_training_stop
    assert exited.value.code == 75


def trainer_folder(root: Path, step: int) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text('{"global_step": %d}' % step)
    (folder / "optimizer.pt").write_bytes(bytes(range(256)) * 64)
    return folder


def test_a_trainer_folder_is_committed_on_save_and_resumed_from_a_verified_copy(home, tmp_path):
    import unbroken
    from transformers import TrainerControl, TrainerState
    from unbroken.integrations.transformers import UnbrokenTrainerCallback, resume_path

    out = tmp_path / "out"
    args = types.SimpleNamespace(output_dir=str(out))
    with unbroken.init(name="hf-unit") as run:
        assert resume_path(run, out) is None
        trainer_folder(out, 6)
        callback = UnbrokenTrainerCallback(run)
        callback.on_save(args, TrainerState(global_step=6, epoch=1.5), TrainerControl())
        assert not (out / "checkpoint-6").exists()
        assert run.checkpoint.get_metadata(callback.committed[0])["steps_completed"] == 6
    with unbroken.init(name="hf-unit") as run:
        copy = Path(resume_path(run, out))
        assert copy.parent == out / "unbroken-resume"
        assert (copy / "optimizer.pt").read_bytes() == bytes(range(256)) * 64
        assert (copy / "trainer_state.json").read_text() == '{"global_step": 6}'


def test_a_missing_trainer_folder_or_a_foreign_checkpoint_is_a_clear_error(home, tmp_path):
    import torch
    import unbroken
    from transformers import TrainerState
    from unbroken.errors import CheckpointError
    from unbroken.integrations.transformers import commit_folder, resume_path

    with unbroken.init(name="hf-foreign") as run:
        with pytest.raises(CheckpointError, match="checkpoint-4 is missing"):
            commit_folder(run, tmp_path / "checkpoint-4", TrainerState(global_step=4))
        run.save(unbroken.State(w=torch.zeros(2)), 4, wait=True)
        with pytest.raises(CheckpointError, match="not written by UnbrokenTrainerCallback"):
            resume_path(run, tmp_path)


def test_a_corrupt_only_checkpoint_gives_no_resume_path_and_a_warning(home, tmp_path):
    import unbroken
    from transformers import TrainerState
    from unbroken.errors import CorruptCheckpointWarning
    from unbroken.integrations.transformers import commit_folder, resume_path

    with unbroken.init(name="hf-bad") as run:
        commit_folder(run, trainer_folder(tmp_path / "out", 3), TrainerState(global_step=3))
    bad = corrupt_newest(home, "hf-bad")
    with unbroken.init(name="hf-bad") as run:
        with pytest.warns(CorruptCheckpointWarning, match=f"skipping corrupt checkpoint {bad}"):
            assert resume_path(run, tmp_path / "out") is None


@pytest.mark.parametrize("setting", ["save_only_model", "load_best_model_at_end"])
def test_arguments_that_cannot_resume_exactly_are_refused(setting):
    from transformers import TrainerControl, TrainerState
    from unbroken.errors import ConfigError
    from unbroken.integrations.transformers import UnbrokenTrainerCallback

    args = types.SimpleNamespace(save_only_model=False, load_best_model_at_end=False)
    setattr(args, setting, True)
    with pytest.raises(ConfigError, match=setting):
        UnbrokenTrainerCallback(fake_run()[0]).on_train_begin(args, TrainerState(), TrainerControl())
