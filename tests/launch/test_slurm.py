"""Slurm: script rendering and job control in unit tests; save-requeue-resume against a real Slurm.

The real-Slurm tests start a single-node cluster with scripts/slurm-up.sh (root). Without root
they skip with a loud reason - except in CI (CI=true), where they fail instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from procs import EXAMPLES, REPO, child_env

from unbroken.checkpoint import CheckpointStore
from unbroken.errors import ConfigError, LaunchError
from unbroken.launch.chain import start_link
from unbroken.launch.slurm import (JobInfo, SlurmEnvironment, SubmitOptions, check_user_script, job_end_time,
                                   parse_slurm_time, render_script, requeue)
from unbroken.storage import LocalStorage
from unbroken.tracking import Tracker


class FakeTool:
    """Records Slurm client calls and answers them."""

    def __init__(self, returncode=0, stdout="", stderr=""):
        self.calls, self.answer = [], subprocess.CompletedProcess([], returncode, stdout, stderr)

    def __call__(self, args):
        self.calls.append(args)
        return self.answer


@pytest.mark.parametrize("text,seconds", [("1", 60), ("90", 5400), ("1:30", 90), ("12:00:00", 43200),
                                          ("1-00", 86400), ("1-2:03", 93780), ("2-00:00:10", 172810)])
def test_parse_slurm_time(text, seconds):
    assert parse_slurm_time(text) == seconds


def test_bad_time_and_margin():
    with pytest.raises(ConfigError, match="not a Slurm time"):
        parse_slurm_time("soon")
    with pytest.raises(ConfigError, match="save margin"):
        SubmitOptions(command=["python", "t.py"], name="t", home=Path("/h"), logs=Path("/l"), time="2", margin=120)


def test_array_tasks_requeue_alone():
    env = {"SLURM_JOB_ID": "107", "SLURM_ARRAY_JOB_ID": "105", "SLURM_ARRAY_TASK_ID": "2",
           "SLURM_RESTART_COUNT": "3", "SLURM_JOB_NODELIST": "n[1-2]"}
    job = JobInfo.from_env(env)
    assert job.requeue_id == "105_2" and job.restart_count == 3
    tool = FakeTool()
    requeue(job, tool)
    assert tool.calls == [["scontrol", "requeue", "105_2"]]
    assert JobInfo.from_env({}) is None


def test_end_time_is_read_from_scontrol():
    tool = FakeTool(stdout="JobId=5 JobName=x TimeLimit=00:01:00 StartTime=2026-11-21T10:00:00 EndTime=2026-11-21T10:01:00 X=1")
    import datetime as dt
    assert job_end_time("5", tool) == dt.datetime(2026, 11, 21, 10, 1).timestamp()
    assert job_end_time("5", FakeTool(stdout="JobId=5 TimeLimit=UNLIMITED EndTime=Unknown")) is None


def test_requeue_disabled_is_explained():
    tool = FakeTool(returncode=1, stderr="Requested operation is presently disabled for job 5")
    with pytest.raises(LaunchError, match="--no-requeue or the cluster has JobRequeue=0"):
        requeue(JobInfo("5", None, None, None, 0), tool)


def test_missing_scontrol_is_explained(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LaunchError, match="scontrol` was not found"):
        job_end_time("5")


def test_slurm_environment_gives_decide_its_requeue_facts():
    env = SlurmEnvironment(JobInfo("5", None, None, None, 2), max_requeues=2, runner=FakeTool())
    assert env.requeues() == 2 and env.max_requeues == 2
    assert env.attempt_fields()["slurm_restarts"] == 2 and env.attempt_fields()["launcher"] == "slurm"


def test_rendered_script_is_requeueable_and_quotes_arguments(tmp_path):
    opts = SubmitOptions(command=["python", "my train.py", "--msg", "it's"], name="big", home=tmp_path / "h o",
                         logs=tmp_path / "logs", trial=2, time="12:00:00", gres="gpu:1", margin=300,
                         sbatch_args=["--exclusive"], max_requeues=5)
    script = render_script(opts)
    for line in ["#SBATCH --requeue", "#SBATCH --open-mode=append", "#SBATCH --signal=B:USR2@300",
                 "#SBATCH --time=12:00:00", "#SBATCH --gres=gpu:1", "#SBATCH --exclusive", "--trial 2",
                 "--max-requeues 5"]:
        assert line in script
    assert "exec " in script and "-- python 'my train.py' --msg 'it'\"'\"'s'" in script
    result = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr


def test_user_script_needs_the_unbroken_line(tmp_path):
    plain = tmp_path / "job.sh"
    plain.write_text("#!/bin/bash\n#SBATCH --time=1\npython train.py\n")
    with pytest.raises(ConfigError, match="exec unbroken run -- python train.py"):
        check_user_script(plain)
    plain.write_text("#!/bin/bash\nexec unbroken run -- python train.py\n")
    check_user_script(plain)


# -- against a real Slurm ------------------------------------------------------------------------------

SUBMITTED: list[str] = []
CHAINS: list[str] = []


@pytest.fixture
def slurm(slurm_cluster):
    """A running Slurm; every job a test submitted is cancelled when it ends (pass or fail)."""
    yield
    if SUBMITTED:
        subprocess.run(["scancel", *SUBMITTED], capture_output=True)
        SUBMITTED.clear()
    for name in CHAINS:  # follow-up jobs a chain submitted itself
        subprocess.run(["scancel", "--name", name], capture_output=True)
    CHAINS.clear()


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node Slurm (scripts/slurm-up.sh)."""
    reason = None
    if os.geteuid() != 0:
        reason = "not root: scripts/slurm-up.sh cannot install and start Slurm"
    else:
        up = subprocess.run(["bash", str(REPO / "scripts" / "slurm-up.sh")], capture_output=True, text=True, timeout=900)
        if up.returncode != 0:
            reason = f"scripts/slurm-up.sh failed: {up.stderr[-2000:]}"
    if reason:
        message = f"!!! SLURM TESTS NOT RUN: {reason}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    yield


def submit(home: Path, *args: str, **env: str) -> str:
    cmd = [sys.executable, "-m", "unbroken", "slurm", "submit", *args]
    out = subprocess.run(cmd, env=child_env(home, **env), capture_output=True, text=True, timeout=60, cwd=home.parent)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split("Slurm job ")[1].split()[0]
    SUBMITTED.append(job_id)
    return job_id


def job_state(job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return out.split("JobState=")[1].split()[0] if "JobState=" in out else "GONE"


def wait_state(job_id: str, states: set[str], timeout: float) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = job_state(job_id)
        if state in states:
            return state
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {job_state(job_id)} after {timeout} s (wanted {states})")


def wait_steps(home: Path, name: str, at_least: int, timeout: float = 120) -> None:
    db = home / "unbroken.db"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if db.exists():
            tracker = Tracker(db)
            try:
                trial = tracker.trial(name)
                if any(m.steps_completed >= at_least for m in Tracker(db).metrics(trial.id, name="loss")):
                    return
            except LookupError:
                pass
            finally:
                tracker.close()
        time.sleep(0.5)
    raise AssertionError(f"{name} did not reach step {at_least} in {timeout} s")


def final_files(home: Path, name: str, number: int = 1):
    store = CheckpointStore(LocalStorage(home / "experiments" / name / f"trial-{number}" / "checkpoints"))
    newest = store.newest_good()
    folder = store.local_path(newest.uuid)
    return newest, load_file(str(folder / "tensors.safetensors")), json.loads((folder / "state.json").read_text())


def train_args(steps: int, step_time: float) -> list[str]:
    return [sys.executable, "-u", str(EXAMPLES / "torch_train.py"), "--steps", str(steps), "--save-every", "50",
            "--hidden", "64", "--step-time", str(step_time)]


def assert_same_as_uninterrupted(tmp_path: Path, home: Path, name: str, steps: int) -> None:
    ref_home = tmp_path / "ref"
    done = subprocess.run([*train_args(steps, 0), "--name", "ref"], env=child_env(ref_home), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    _, ref_t, ref_s = final_files(ref_home, "ref")
    manifest, got_t, got_s = final_files(home, name)
    assert manifest.steps_completed == steps
    assert ref_t.keys() == got_t.keys() and all(np.array_equal(ref_t[k], got_t[k]) for k in ref_t)
    assert ref_s == got_s


def assert_commit_before_requeue(home: Path, name: str) -> None:
    """Each requeued attempt saved before requeueing, and the next restored that very step."""
    tracker = Tracker(home / "unbroken.db")
    trial = tracker.trial(name)
    attempts = tracker.attempts(trial.id)
    saved = {}
    for record in tracker.checkpoints(trial.id):
        saved[record.attempt_id] = max(saved.get(record.attempt_id, -1), record.steps_completed)
    for before, after in zip(attempts, attempts[1:]):
        if before.end_reason in ("timed_out", "preempted"):
            assert after.restored_steps == saved[before.id], (before, after)
            log = Path(before.log_path).read_text()
            assert "requeueing Slurm job" in log
            assert log.index("stopping at step") < log.index("requeueing Slurm job")


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_time_limit_requeues_until_done_bitwise_equal(slurm, tmp_path):
    home = tmp_path / "home"
    # ~50 s of training at ~0.06 s a step; each 60 s allocation stops 40 s before its end, so it
    # trains ~15 s. No --signal: Slurm may send it up to 60 s early, which on a 1-minute job is at
    # once; the deadline from the job's EndTime alone must do the work.
    steps = 800
    job = submit(home, "--name", "limited", "--time", "1", "--margin", "40", "--signal", "none", "--",
                 *train_args(steps, 0.05))
    wait_state(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=780)
    assert job_state(job) == "COMPLETED"
    tracker = Tracker(home / "unbroken.db")
    trial = tracker.trial("limited")
    attempts = tracker.attempts(trial.id)
    assert trial.status == "completed"
    assert len(attempts) >= 3, attempts
    assert all(a.end_reason == "timed_out" for a in attempts[:-1]) and attempts[-1].end_reason == "completed"
    assert [a.slurm_restarts for a in attempts] == list(range(len(attempts)))
    assert {a.slurm_job_id for a in attempts} == {job} and all(a.launcher == "slurm" for a in attempts)
    assert_commit_before_requeue(home, "limited")
    assert_same_as_uninterrupted(tmp_path, home, "limited", steps)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_usr2_signal_saves_requeues_and_completes(slurm, tmp_path):
    home = tmp_path / "home"
    job = submit(home, "--name", "signalled", "--", *train_args(600, 0.02))
    wait_steps(home, "signalled", 100)
    subprocess.run(["scancel", "--batch", "--signal=USR2", job], check=True)
    wait_state(job, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=300)
    assert job_state(job) == "COMPLETED"
    tracker = Tracker(home / "unbroken.db")
    attempts = tracker.attempts(tracker.trial("signalled").id)
    assert [a.end_reason for a in attempts] == ["preempted", "completed"]
    assert_commit_before_requeue(home, "signalled")


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_array_task_is_requeued_alone(slurm, tmp_path):
    home = tmp_path / "home"
    job = submit(home, "--name", "sweep", "--array", "0-1", "--cpus-per-task", "1", "--", *train_args(600, 0.03))
    wait_steps(home, "sweep-0", 50)
    wait_steps(home, "sweep-1", 50)
    subprocess.run(["scancel", "--batch", "--signal=USR2", f"{job}_0"], check=True)
    for task in ("0", "1"):
        wait_state(f"{job}_{task}", {"COMPLETED", "FAILED", "CANCELLED"}, timeout=300)
    tracker = Tracker(home / "unbroken.db")
    first = tracker.attempts(tracker.trial("sweep-0").id)
    second = tracker.attempts(tracker.trial("sweep-1").id)
    assert [a.end_reason for a in first] == ["preempted", "completed"]
    assert [a.end_reason for a in second] == ["completed"]  # never requeued
    assert {a.slurm_job_id for a in first} == {f"{job}_0"} and first[1].slurm_restarts == 1


CRASH_ONCE = textwrap.dedent("""
    import os, sys, unbroken
    with unbroken.init(exit_on_preempt=False) as run:
        state = unbroken.State(n=0, rng=False)
        start = run.restore(state)
        if run.info.attempt == 1:
            run.save(state, 1)
            sys.exit(1)
        print("restart count", os.environ.get("SLURM_RESTART_COUNT", "0"), flush=True)
""")


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_crash_in_allocation_restarts_in_place_and_max_requeues_is_honoured(slurm, tmp_path):
    home = tmp_path / "home"
    script = tmp_path / "crash_once.py"
    script.write_text(CRASH_ONCE)
    job = submit(home, "--name", "crashy", "--", sys.executable, str(script))
    wait_state(job, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=120)
    attempts = Tracker(home / "unbroken.db").attempts(Tracker(home / "unbroken.db").trial("crashy").id)
    assert [a.end_reason for a in attempts] == ["crashed", "completed"]
    assert [a.slurm_restarts for a in attempts] == [0, 0]  # same allocation

    job = submit(home, "--name", "capped", "--max-requeues", "0", "--", *train_args(600, 0.02))
    wait_steps(home, "capped", 50)
    subprocess.run(["scancel", "--batch", "--signal=USR2", job], check=True)
    wait_state(job, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=120)
    tracker = Tracker(home / "unbroken.db")
    attempts = tracker.attempts(tracker.trial("capped").id)
    assert [a.end_reason for a in attempts] == ["preempted"]
    assert "--max-requeues 0" in Path(attempts[0].log_path).read_text()


# -- chains instead of requeues; no endless requeues ---------------------------------------------------
def test_chained_script_submits_its_follow_up_first_and_runs_without_requeue(tmp_path):
    opts = SubmitOptions(command=["python", "t.py"], name="c", home=tmp_path, logs=tmp_path / "logs", trial=3,
                         time="1", margin=40, chain=True, script_path=tmp_path / "logs" / "job.sbatch",
                         max_requeues=4, max_stalled=2)
    script = render_script(opts)
    assert "#SBATCH --no-requeue" in script and "#SBATCH --requeue" not in script
    chain_line = next(line for line in script.splitlines() if "chain-next" in line)
    assert "--trial 3" in chain_line and "--max-requeues 4" in chain_line and str(opts.script_path) in chain_line
    run_line = script.splitlines()[-1]
    assert script.index("chain-next") < script.index("exec ")
    assert "--chain" in run_line and "--time-limit 55s" in run_line and "--max-requeues-without-progress 2" in run_line
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    with pytest.raises(ConfigError, match="--chain"):
        SubmitOptions(command=["t"], name="c", home=tmp_path, logs=tmp_path, array="0-1", chain=True)


def test_a_link_submits_its_follow_up_unless_the_trial_is_finished(tmp_path):
    job = JobInfo("41", None, None, None, 0, chain_link=2)
    tool = FakeTool(stdout="42\n")
    link = start_link("preempted", job, tmp_path / "s.sbatch", None, tool)
    assert link.go and link.follow_up == "42"
    assert tool.calls == [["sbatch", "--parsable", "--dependency=afterany:41", "--export=ALL,UNBROKEN_CHAIN_LINK=3",
                           str(tmp_path / "s.sbatch")]]
    for status in ("completed", "failed", "cancelled"):
        assert not start_link(status, job, tmp_path / "s.sbatch", None, tool).go
    capped = start_link("running", job, tmp_path / "s.sbatch", 1, tool)  # link 2 > 1 follow-up allowed
    assert capped.go and capped.follow_up is None and len(tool.calls) == 1
    env = SlurmEnvironment(job, chain=True, runner=FakeTool())
    assert env.requeues() == 1 and env.attempt_fields()["slurm_restarts"] == 1
    said = []
    env.requeue("time limit", said.append, lambda t: pytest.fail("a chain does not wait for a requeue kill"))
    assert "follow-up job" in said[0]


def test_requeue_unavailable_suggests_chain(monkeypatch):
    with pytest.raises(LaunchError, match="--chain"):
        requeue(JobInfo("5", None, None, None, 0), FakeTool(returncode=1, stderr="Requested operation is presently disabled"))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LaunchError, match="--chain"):
        requeue(JobInfo("5", None, None, None, 0))
    env = SlurmEnvironment(JobInfo("5", None, None, None, 0))
    assert env.deadline() is None  # no scontrol: the end is unknown here (time limit and signal remain)


def wait_trial(home: Path, name: str, statuses: set[str], timeout: float) -> str:
    def status():
        if not (home / "unbroken.db").exists():
            return None
        tracker = Tracker(home / "unbroken.db")
        try:
            found = tracker.trial(name).status
        except LookupError:
            return None
        finally:
            tracker.close()
        return found if found in statuses else None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = status()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"trial {name} not {statuses} after {timeout} s")


def queued(name: str) -> list[str]:
    out = subprocess.run(["squeue", "--noheader", "--name", name, "--format=%i"], capture_output=True, text=True)
    return out.stdout.split()


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_chain_without_scontrol_continues_to_completion_bitwise_equal(slurm, tmp_path):
    home = tmp_path / "home"
    tools = tmp_path / "bin"  # the job's PATH: sbatch (for the chain), no scontrol (a container)
    tools.mkdir()
    (tools / "sbatch").symlink_to(subprocess.run(["which", "sbatch"], capture_output=True, text=True).stdout.strip())
    CHAINS.append("chained")
    steps = 400  # ~20 s of training; each 60 s link trains ~15 s (its end is known only from --time)
    submit(home, "--name", "chained", "--time", "1", "--margin", "40", "--signal", "none", "--chain", "--",
           *train_args(steps, 0.05), PATH=str(tools))
    assert wait_trial(home, "chained", {"completed", "failed", "cancelled"}, timeout=480) == "completed"
    deadline = time.monotonic() + 120
    while queued("chained") and time.monotonic() < deadline:  # the last follow-up exits at once
        time.sleep(1)
    assert queued("chained") == []
    tracker = Tracker(home / "unbroken.db")
    attempts = tracker.attempts(tracker.trial("chained").id)
    assert len(attempts) >= 2, attempts
    assert all(a.end_reason == "timed_out" for a in attempts[:-1]) and attempts[-1].end_reason == "completed"
    assert len({a.slurm_job_id for a in attempts}) == len(attempts)  # one job per link, no requeues
    assert [a.slurm_restarts for a in attempts] == list(range(len(attempts)))
    for before in attempts[:-1]:
        log = Path(before.log_path).read_text()
        assert "follow-up job of this chain continues" in log and "requeueing Slurm job" not in log
    assert_same_as_uninterrupted(tmp_path, home, "chained", steps)


LOSES_CHECKPOINTS = textwrap.dedent("""
    import shutil, sys, time, unbroken
    from pathlib import Path
    with unbroken.init(exit_on_preempt=False, save=unbroken.every_steps(10)) as run:
        state = unbroken.State(n=0, rng=False)
        for step in run.steps(run.restore(state)):
            time.sleep(0.05)
    for entry in Path(sys.argv[1]).iterdir():  # after the final save: the next allocation finds nothing
        if not entry.name.startswith("."):
            shutil.rmtree(entry)
    sys.exit(75 if run.preempted else 0)
""")


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_requeues_stop_after_k_allocations_without_progress(slurm, tmp_path):
    home = tmp_path / "home"
    script = tmp_path / "loses_checkpoints.py"
    script.write_text(LOSES_CHECKPOINTS)
    checkpoints = home / "experiments" / "stuck" / "trial-1" / "checkpoints"
    job = submit(home, "--name", "stuck", "--time", "1", "--margin", "50", "--signal", "none",
                 "--max-requeues-without-progress", "2", "--", sys.executable, str(script), str(checkpoints))
    assert wait_state(job, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=300) == "FAILED"
    tracker = Tracker(home / "unbroken.db")
    trial = tracker.trial("stuck")
    attempts = tracker.attempts(trial.id)
    assert [a.end_reason for a in attempts] == ["timed_out", "timed_out"] and [a.slurm_restarts for a in attempts] == [0, 1]
    assert trial.status == "failed" and trial.message.startswith("no progress: 2 allocations in a row")
    assert "requeueing Slurm job" in Path(attempts[0].log_path).read_text()
    assert "requeueing Slurm job" not in Path(attempts[1].log_path).read_text()


# -- one job of several tasks: one supervisor, the ranks through srun -----------------------------------
DDP_JOB = REPO / "tests" / "distributed" / "ddp_job.py"


def _rank_steps(path: Path, rank: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"{path}.rank{rank}").read_text().split()]
    except FileNotFoundError:
        return []


def _scontrol_field(job_id: str, field: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return out.split(f"{field}=")[1].split()[0]


def _segments(steps: list[int]) -> list[list[int]]:
    """A rank's steps cut where they do not go on by one (a restart from an earlier step)."""
    out: list[list[int]] = []
    for step in steps:
        if out and step == out[-1][-1] + 1:
            out[-1].append(step)
        else:
            out.append([step])
    return out


def _pid_of_rank(home: Path, rank: int) -> int | None:
    """The training process of ``rank`` (the srun task exec'd it with RANK set) of the job using ``home``."""
    want = {f"UNBROKEN_HOME={home}".encode(), f"RANK={rank}".encode()}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = set(Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if want <= env:
            return int(entry)
    return None


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_tasks_restart_as_a_group_stop_at_one_step_requeue_once_and_resume_bitwise_equal(slurm, tmp_path,
                                                                                              wait_until):
    if importlib.util.find_spec("torch") is None:  # the ranks are a torch DDP job
        message = "torch is not installed: pip install -e '.[torch]' (scripts/setup.sh does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(f"SKIPPED LOUDLY: {message}")
    import torch
    home, steps_file, total = tmp_path / "home", tmp_path / "steps", 200
    job = submit(home, "--name", "ddp", "--ntasks-per-node", "2", "--", sys.executable, str(DDP_JOB),
                 OMP_NUM_THREADS="1", STEPS=str(total), SLOW="0.03", EVERY="1000", STEP_FILE=str(steps_file),
                 OUT=str(tmp_path / "out"))
    def restarted_and_trained(rank: int) -> bool:
        runs = _segments(_rank_steps(steps_file, rank))
        return len(runs) == 2 and len(runs[1]) >= 10

    wait_until(lambda: min(len(_rank_steps(steps_file, r)) for r in (0, 1)) >= 5, timeout=120, what="2 ranks training")
    os.kill(wait_until(lambda: _pid_of_rank(home, 1), what="rank 1's pid"), signal.SIGKILL)  # a rank dies
    wait_until(lambda: restarted_and_trained(0) and restarted_and_trained(1), timeout=120, what="the group restarted")
    subprocess.run(["scancel", "--batch", "--signal=USR2", job], check=True)  # Slurm's --signal=B:USR2, now
    # the uninterrupted reference runs while the requeued job waits (cred_expire) for its next allocation
    ref = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                            str(DDP_JOB)], env=child_env(tmp_path / "ref", OMP_NUM_THREADS="1", STEPS=str(total),
                                                         OUT=str(tmp_path / "ref")),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert wait_state(job, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=200) == "COMPLETED"
    assert _scontrol_field(job, "Restarts") == "1"

    tracker = Tracker(home / "unbroken.db")
    trial = tracker.trial("ddp")
    crashed, stopped, resumed = tracker.attempts(trial.id)  # one attempt per group run, not one per rank
    assert [a.end_reason for a in (crashed, stopped, resumed)] == ["crashed", "preempted", "completed"]
    assert [a.slurm_restarts for a in (crashed, stopped, resumed)] == [0, 0, 1] and trial.status == "completed"
    (saved,) = [c for c in tracker.checkpoints(trial.id) if c.state == "committed" and c.attempt_id == stopped.id]
    stop = saved.steps_completed
    assert resumed.restored_steps == stop
    tracker.close()
    log = Path(stopped.log_path).read_text()
    assert f"0: unbroken: trial ddp/1 stopping at step {stop}" in log, log
    assert f"1: unbroken: trial ddp/1 rank 1 stopping at step {stop}" in log, log
    job_log = (home / "experiments" / "ddp" / "trial-1" / "logs" / f"slurm-{job}.out").read_text()
    assert job_log.count("requeueing Slurm job") == 1, job_log
    # after the crash both ranks started over (one cut); neither went past the agreed step before
    # stopping, and the next allocation went on from the step after it (no second cut, no repeat)
    for rank in (0, 1):
        assert _segments(_rank_steps(steps_file, rank))[1:] == [list(range(1, total + 1))]

    _, ref_err = ref.communicate(timeout=120)
    assert ref.returncode == 0, ref_err[-3000:]
    for rank in (0, 1):
        got, want = (torch.load(f"{tmp_path / name}.rank{rank}.pt") for name in ("out", "ref"))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
