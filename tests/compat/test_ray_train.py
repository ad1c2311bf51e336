"""unbroken.compat.ray_train: Ray Train's API with no Ray.

Fast tests of the pieces (Checkpoint, the worker session over an in-process run, context, config
errors) and end-to-end programs: a one-worker run crashing within and beyond FailureConfig's
budget, and Ray's guide pattern (2 DDP workers, a checkpoint per epoch, auto-resume in the driver)
with a SIGKILLed worker and a SIGKILLed driver, ending with the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import types
from pathlib import Path

import psutil
import pytest

import unbroken
from unbroken.compat import ray_train as train
from unbroken.compat.ray_train import (Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig,
                                       TrainContext)
from unbroken.compat.ray_train._launch import UNLIMITED, run_supervisor, supervisor_argv
from unbroken.compat.ray_train._session import Session, StopTraining, copy_files
from unbroken.compat.ray_train._state import has_state
from unbroken.compat.ray_train._stored import open_from_store
from unbroken.errors import CheckpointError, ConfigError, CorruptCheckpoint
from unbroken.tracking import Tracker

from compat.compathelp import PROGRAMS, committed
from procs import child_env
from waiting import wait_until


# -- Checkpoint ---------------------------------------------------------------------------------
def test_a_local_checkpoint_is_its_folder_and_copies_with_its_metadata(tmp_path):
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "sub" / "w.bin").write_bytes(b"weights")
    checkpoint = Checkpoint.from_directory(tmp_path / "src")
    checkpoint.set_metadata({"epoch": 1})
    checkpoint.update_metadata({"loss": 0.5})
    with checkpoint.as_directory() as folder:
        assert Path(folder) == (tmp_path / "src").resolve()
    copied = Path(checkpoint.to_directory(tmp_path / "copy"))
    assert (copied / "sub" / "w.bin").read_bytes() == b"weights"
    assert Checkpoint.from_directory(copied).get_metadata() == {"epoch": 1, "loss": 0.5}


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        Checkpoint.from_directory(tmp_path / "missing")
    with pytest.raises(ConfigError, match="JSON"):
        Checkpoint.from_directory(tmp_path).set_metadata({"x": object()})


def _run(tmp_path, name="unit"):
    return unbroken.init(name, home=tmp_path / "home", save=unbroken.never(), keep=unbroken.keep_all())


def _folder(tmp_path, name: str, files: dict[str, bytes]) -> Path:
    folder = tmp_path / name
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def test_report_commits_a_verified_checkpoint_that_get_checkpoint_and_a_new_session_find(tmp_path):
    with _run(tmp_path) as run:
        session = Session(run)
        session.start()
        assert session.latest is None
        session.report({"loss": 1.0}, Checkpoint.from_directory(_folder(tmp_path, "c1", {"a/m.pt": b"one"})))
        session.report({"loss": 0.5, "tag": "x"}, Checkpoint.from_directory(_folder(tmp_path, "c2", {"m.pt": b"two"})))
        session.report({"loss": 0.25})  # metrics only: no checkpoint
        assert session.iteration == 3
        uuid = session.latest.uuid
        assert run.checkpoint.get_metadata(uuid)["metrics"] == {"loss": 0.5, "tag": "x"}
        result = json.loads((Path(run.info.trial_dir) / "ray_train_result.json").read_text())
        assert result == {"metrics": {"loss": 0.25, "training_iteration": 3}, "checkpoint": uuid}
    with _run(tmp_path) as run:  # the next attempt resumes from the newest checkpoint, counting on
        session = Session(run)
        session.start()
        assert session.iteration == 2 and session.latest.uuid == uuid
        with session.latest.as_directory() as folder:
            assert (Path(folder) / "m.pt").read_bytes() == b"two"
        out = Path(session.latest.to_directory(tmp_path / "out"))
        assert sorted(p.name for p in out.iterdir()) == ["m.pt"]  # the files, not the manifest


def test_get_checkpoint_skips_a_corrupt_newest_checkpoint_with_a_warning(tmp_path):
    with _run(tmp_path) as run:
        session = Session(run)
        for it in (b"1", b"2"):
            session.report({}, Checkpoint.from_directory(_folder(tmp_path, f"c{it.decode()}", {"m": it})))
        (Path(session.latest.path) / "m").write_bytes(b"X")  # the newest one rots on disk
    with _run(tmp_path) as run, pytest.warns(unbroken.CorruptCheckpointWarning):
        session = Session(run)
        session.start()
        assert session.iteration == 1
        with session.latest.as_directory() as folder:
            assert (Path(folder) / "m").read_bytes() == b"1"


def test_a_stored_checkpoint_read_outside_the_run_is_verified(tmp_path):
    with _run(tmp_path) as run:
        session = Session(run)
        session.report({}, Checkpoint.from_directory(_folder(tmp_path, "c", {"m.pt": b"payload"})))
        checkpoint = session.latest
    ref = checkpoint._stored
    with open_from_store(ref) as (folder, files):
        assert files == ["m.pt"] and (folder / "m.pt").read_bytes() == b"payload"
    (Path(checkpoint.path) / "m.pt").write_bytes(b"paylOad")
    fresh = Checkpoint(checkpoint.path, stored=ref)
    with pytest.raises(CorruptCheckpoint):
        with fresh.as_directory():
            pass
    with pytest.raises(CheckpointError, match="cannot change"):
        fresh.set_metadata({"x": 1})


def test_a_stop_request_ends_the_function_at_the_report_after_its_checkpoint_and_the_run_exits_75(tmp_path):
    with pytest.raises(SystemExit) as stopped:
        with _run(tmp_path) as run:
            session = Session(run)
            session.report({"i": 1})
            run.preempt.request("test")
            with pytest.raises(StopTraining):
                session.report({"i": 2}, Checkpoint.from_directory(_folder(tmp_path, "c", {"m": b"2"})))
            assert run.checkpoint.get_metadata(run.checkpoint.latest_checkpoint)["steps_completed"] == 2
    assert stopped.value.code == unbroken.EXIT_PREEMPTED


def test_report_refuses_bad_arguments_before_any_collective(tmp_path):
    with _run(tmp_path) as run:
        session = Session(run)
        with pytest.raises(ConfigError, match="JSON-serialisable"):
            session.report({"loss": object()})
        with pytest.raises(ConfigError, match="str keys"):
            session.report({1: 2})
        with pytest.raises(ConfigError, match="takes a Checkpoint"):
            session.report({}, checkpoint=str(tmp_path))
        assert session.iteration == 0


def test_the_worker_functions_outside_a_training_function_say_where_they_work():
    for call in (lambda: train.report({}), train.get_checkpoint, train.get_context):
        with pytest.raises(ConfigError, match="inside train_loop_per_worker"):
            call()


def test_copy_files_lands_every_file_whole(tmp_path):
    src = _folder(tmp_path, "src", {"x/a.bin": b"a" * 1000, "b.bin": b"b"})
    dest = tmp_path / "dest"
    dest.mkdir()
    copy_files(src, dest, rank=1)
    copy_files(src, dest, rank=0)  # the same names again: replaced whole
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == ["b.bin", "x/a.bin"]


def test_the_context_reads_the_run_and_torchruns_environment():
    run = types.SimpleNamespace(distributed=types.SimpleNamespace(rank=3, size=4, local_rank=1),
                                info=types.SimpleNamespace(experiment="exp", trial=2, trial_id=9, trial_dir="/t"))
    ctx = TrainContext(run, environ={"LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1"})
    assert (ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank()) == (3, 4, 1)
    assert (ctx.get_local_world_size(), ctx.get_node_rank()) == (2, 1)
    assert (ctx.get_experiment_name(), ctx.get_trial_name(), ctx.get_trial_id()) == ("exp", "exp/2", "9")


def test_prepare_data_loader_gives_each_worker_its_share_and_one_worker_everything():
    torch = pytest.importorskip("torch")
    from unbroken.compat.ray_train import _api
    from unbroken.compat.ray_train.torch import prepare_data_loader, prepare_model

    data = torch.utils.data.DataLoader(list(range(10)), batch_size=2)
    _api.set_session(types.SimpleNamespace(group=types.SimpleNamespace(rank=1, size=2, local_rank=1)))
    try:
        assert [int(x) for batch in prepare_data_loader(data) for x in batch] == [1, 3, 5, 7, 9]
    finally:
        _api.set_session(None)
    assert prepare_data_loader(data) is data
    model = torch.nn.Linear(2, 2)
    assert prepare_model(model) is model  # one worker: no DDP wrapper


def test_get_device_follows_use_gpu():
    torch = pytest.importorskip("torch")
    from unbroken.compat.ray_train import _api
    from unbroken.compat.ray_train.torch import get_device

    group = types.SimpleNamespace(rank=0, size=1, local_rank=0)
    try:
        _api.set_session(types.SimpleNamespace(group=group, use_gpu=False))
        assert get_device() == torch.device("cpu")
        _api.set_session(types.SimpleNamespace(group=group, use_gpu=True))
        if torch.cuda.is_available():
            assert get_device().type == "cuda"
        else:
            with pytest.raises(ConfigError, match="use_gpu=True"):
                get_device()
    finally:
        _api.set_session(None)


def test_the_driver_passes_sigterm_to_the_supervisor_and_returns_its_exit_status(tmp_path):
    ready = tmp_path / "ready"
    fake_supervisor = ("import pathlib, signal, sys, time\n"
                       "signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))\n"
                       f"pathlib.Path({str(ready)!r}).touch()\n"
                       "time.sleep(60)\n")

    def stop_when_ready():
        wait_until(ready.exists, timeout=30, what="the fake supervisor")
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=stop_when_ready, daemon=True).start()
    assert run_supervisor([sys.executable, "-c", fake_supervisor], dict(os.environ)) == 75
    assert signal.getsignal(signal.SIGTERM) is before


# -- configuration ----------------------------------------------------------------------------------
@pytest.mark.parametrize("build, message", [
    (lambda: ScalingConfig(num_workers=0), "num_workers"),
    (lambda: ScalingConfig(use_gpu="yes"), "use_gpu"),
    (lambda: FailureConfig(max_failures=-2), "max_failures"),
    (lambda: FailureConfig(max_failures=2, fail_fast=True), "fail_fast"),
    (lambda: CheckpointConfig(num_to_keep=0), "num_to_keep"),
    (lambda: CheckpointConfig(checkpoint_score_order="best"), "checkpoint_score_order"),
    (lambda: RunConfig(storage_path="s3://bucket/runs"), "local or shared folder"),
    (lambda: RunConfig(name="bad name"), "RunConfig\\(name"),
    (lambda: RunConfig(failure_config=3), "failure_config"),
])
def test_config_errors_name_the_field(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def _loop(config):
    pass


def test_trainer_arguments_are_checked_before_anything_starts(tmp_path):
    from unbroken.compat.ray_train.torch import TorchTrainer

    run_config = RunConfig(name="x", storage_path=str(tmp_path))
    with pytest.raises(ConfigError, match="top level"):
        TorchTrainer(lambda config: None, run_config=run_config)
    with pytest.raises(ConfigError, match="JSON-serialisable"):
        TorchTrainer(_loop, train_loop_config={"model": object()}, run_config=run_config)
    with pytest.raises(ConfigError, match="datasets"):
        TorchTrainer(_loop, datasets={"train": [1]}, run_config=run_config)
    with pytest.raises(ConfigError, match="ScalingConfig"):
        TorchTrainer(_loop, scaling_config={"num_workers": 2}, run_config=run_config)
    assert not TorchTrainer.can_restore(tmp_path / "x") and not has_state(tmp_path)
    with pytest.raises(ConfigError, match="no TorchTrainer experiment"):
        TorchTrainer.restore(tmp_path / "x")


def test_max_failures_is_the_groups_restart_budget(tmp_path):
    three = supervisor_argv(tmp_path, "e", 2, 3, fresh=True)
    assert three[three.index("--max-restarts") + 1] == "3" and three[three.index("--max-total-failures") + 1] == "3"
    assert three[three.index("--nproc-per-node") + 1] == "2" and "--fresh" in three
    unlimited = supervisor_argv(tmp_path, "e", 1, -1, fresh=False)
    assert unlimited[unlimited.index("--max-restarts") + 1] == str(UNLIMITED)
    assert "--max-total-failures" not in unlimited and "--nproc-per-node" not in unlimited and "--fresh" not in unlimited


# -- end to end --------------------------------------------------------------------------------------
def _driver(program: str, *args: str) -> list[str]:
    return [sys.executable, "-u", str(PROGRAMS / program), *args]


def _result(stdout: str) -> dict:
    return json.loads(next(line[len("RESULT "):] for line in stdout.splitlines() if line.startswith("RESULT ")))


@pytest.mark.slow
def test_one_worker_crashing_within_the_budget_resumes_and_beyond_it_fails(tmp_path):
    ok, over = tmp_path / "ok", tmp_path / "over"
    ok.mkdir(), over.mkdir()
    runs = [subprocess.Popen(_driver("ray_train_basic.py", "--storage", str(folder), "--crashes", "1",
                                     "--max-failures", budget),
                             env=child_env(tmp_path / "unused"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for folder, budget in ((ok, "1"), (over, "0"))]  # side by side
    (done, done_err), (failed, failed_err) = (run.communicate(timeout=120) for run in runs)
    assert runs[0].returncode == 0, done[-3000:] + done_err[-3000:]
    result = _result(done)
    assert result["metrics"] == {"it": 3, "note": "text is kept", "training_iteration": 3} and result["final"] == {"it": 3}
    assert result["kept"] == 3 and result["path"].startswith(str(ok / "basic"))
    seen = [json.loads(line) for line in (ok / "log.jsonl").read_text().splitlines()]
    assert [(s["attempt"], s["resumed"]) for s in seen] == [(1, None), (2, 1)]
    assert seen[0]["rank"] == 0 and seen[0]["size"] == 1 and seen[0]["experiment"] == "basic"
    assert runs[1].returncode == 1, failed[-3000:] + failed_err[-3000:]
    assert "FAILED trial basic/1 failed" in failed and "crash in attempt 1" in failed_err
    assert (over / "attempts").read_text() == "x"  # max_failures=0: no restart


def _epochs(path: Path, rank: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"{path}.rank{rank}").read_text().split()]
    except FileNotFoundError:
        return []


def _processes_of(folder: Path) -> list[psutil.Process]:
    """Live processes (driver excluded) whose command line names the experiment folder: supervisor, workers."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if str(folder) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def _worker_pid(folder: Path, rank: int) -> int:
    def find():
        for proc in _processes_of(folder):
            try:
                if "unbroken.compat.ray_train._worker" in proc.cmdline() and proc.environ().get("RANK") == str(rank):
                    return proc.pid
            except psutil.Error:
                continue
        return None
    return wait_until(find, timeout=60, what=f"worker {rank}")


def _same_weights(a: Path, b: Path) -> bool:
    import torch

    left, right = torch.load(a), torch.load(b)
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


@pytest.mark.slow
def test_ray_guide_ddp_survives_a_killed_worker_and_a_killed_driver_with_the_weights_of_an_unbroken_run(tmp_path):
    pytest.importorskip("torch")
    epochs = "8"
    ref = subprocess.Popen(_driver("ray_train_ddp.py", "--storage", str(tmp_path / "ref"), "--epochs", epochs,
                                   "--out", str(tmp_path / "ref.pt")),  # uninterrupted, alongside
                           env=child_env(tmp_path / "unused"), stdout=(tmp_path / "ref.log").open("w"),
                           stderr=subprocess.STDOUT)
    try:
        _interrupt_and_resume(tmp_path, epochs)
        assert ref.wait(180) == 0, (tmp_path / "ref.log").read_text()[-3000:]
    finally:
        ref.kill()
    assert _same_weights(tmp_path / "out.pt", tmp_path / "ref.pt")


def _interrupt_and_resume(tmp_path: Path, epochs: str) -> None:
    """SIGKILL worker 1 after 2 epochs, the driver after 4 checkpoints; run the driver again to the end."""
    storage, folder, marks = tmp_path / "store", tmp_path / "store" / "ddp", tmp_path / "epochs"
    cmd = _driver("ray_train_ddp.py", "--storage", str(storage), "--epochs", epochs, "--out", str(tmp_path / "out.pt"),
                  "--slow", "0.3", "--epoch-file", str(marks))
    log = (tmp_path / "driver1.log").open("w")
    driver = subprocess.Popen(cmd, env=child_env(tmp_path / "unused"), stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: len(_epochs(marks, 1)) >= 2 or driver.poll() is not None, timeout=120, what="2 epochs")
    os.kill(_worker_pid(folder, 1), signal.SIGKILL)  # the supervisor restarts the group
    wait_until(lambda: committed(folder, "ddp") >= 4 or driver.poll() is not None, timeout=120, what="4 checkpoints")
    assert driver.poll() is None, (tmp_path / "driver1.log").read_text()[-3000:]
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    wait_until(lambda: not _processes_of(folder), timeout=30, what="no worker or supervisor outliving the driver")
    again = subprocess.run(cmd, env=child_env(tmp_path / "unused"), capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    result = _result(again.stdout)
    assert result["metrics"]["training_iteration"] == int(epochs) and result["metrics"]["epoch"] == int(epochs) - 1
    assert result["files"] == ["MANIFEST.json", "rank-0.json", "rank-1.json", "state.pt"]  # both workers' files
    _assert_each_attempt_resumed_from_the_newest_checkpoint_before_it(folder)
    assert _epochs(marks, 0).count(0) == 1  # never started over from scratch


def _assert_each_attempt_resumed_from_the_newest_checkpoint_before_it(folder: Path) -> None:
    tracker = Tracker.open_readonly(folder / "unbroken.db")
    try:
        trial = tracker.trial("ddp", 1)
        attempts, checkpoints = tracker.attempts(trial.id), tracker.checkpoints(trial.id)
    finally:
        tracker.close()
    assert len(attempts) == 3, [(a.end_reason, a.message) for a in attempts]  # worker killed, driver killed
    for k, attempt in enumerate(attempts[1:], start=1):
        earlier = {a.id for a in attempts[:k]}
        newest = max(c.steps_completed for c in checkpoints if c.attempt_id in earlier)
        assert attempt.restored_steps == newest, (k, attempt.restored_steps, newest)
