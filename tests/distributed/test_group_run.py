"""`unbroken run --nproc-per-node 2`: the group stops, fails and resumes as one (torchrun inside)."""

from __future__ import annotations

import signal
import subprocess
import sys

from ranks import JOB, final_params, job_env, kill_at_random_moments, kill_seed, same, torchrun
from waiting import wait_until

from unbroken.checkpoint import CheckpointStore
from unbroken.storage import LocalStorage
from unbroken.tracking import Tracker


def _supervised(home, *args: str, **extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "unbroken", "run", "--name", "ddp", "--backoff", "0", *args,
           "--nproc-per-node", "2", "--", sys.executable, str(JOB)]
    return subprocess.Popen(cmd, env=job_env(home, **extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _steps(path, rank):
    try:
        return [int(x) for x in open(f"{path}.rank{rank}").read().split()]
    except FileNotFoundError:
        return []


def _newest(home) -> int:
    tracker = Tracker(f"sqlite:///{home}/unbroken.db")
    try:
        rows = tracker.checkpoints(tracker.trial("ddp", 1).id)
        return max(r.steps_completed for r in rows if r.state == "committed")
    finally:
        tracker.close()


def test_sigterm_stops_both_ranks_at_one_step_after_one_commit_and_exits_75(tmp_path):
    home, steps = tmp_path / "home", tmp_path / "steps"
    proc = _supervised(home, STEPS="1000", SLOW="0.05", EVERY="1000", STEP_FILE=str(steps))
    wait_until(lambda: len(_steps(steps, 0)) >= 5 and len(_steps(steps, 1)) >= 5, timeout=60, what="training")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 75, out[-3000:]
    last0, last1 = _steps(steps, 0)[-1], _steps(steps, 1)[-1]
    assert last0 == last1
    assert _newest(home) == last0
    assert "stopping at step" in out


def test_a_users_torchrun_command_is_stopped_as_a_group_and_resumes(tmp_path):
    home, steps = tmp_path / "home", tmp_path / "steps"
    cmd = [sys.executable, "-m", "unbroken", "run", "--name", "ddp", "--backoff", "0", "--", sys.executable, "-m",
           "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--max-restarts=2", str(JOB)]
    env = job_env(home, STEPS="1000", SLOW="0.05", EVERY="1000", STEP_FILE=str(steps))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_until(lambda: len(_steps(steps, 0)) >= 5 and len(_steps(steps, 1)) >= 5, timeout=60, what="training")
    proc.send_signal(signal.SIGTERM)  # torchrun would kill its ranks on TERM: they must get the preempt signal
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 75, out[-3000:]
    assert "--max-restarts=2 is set to 0" in out
    assert _steps(steps, 0)[-1] == _steps(steps, 1)[-1] == _newest(home)
    attempts, _ = _history(home)
    assert [a.end_reason for a in attempts] == ["preempted"]
    assert (home / "experiments" / "ddp" / "trial-1" / "logs" / "attempt-1-ranks").is_dir()


#: SIGKILLs per run: each at a random moment (seeded; the seed is in every failure message).
KILLS = 3


def test_ranks_killed_at_random_moments_restart_the_group_and_it_ends_bitwise_equal(tmp_path):
    seed = kill_seed()
    job = dict(STEPS="40", OWN_MB="8")  # 8 MiB per rank, written every step: many kills land in a save
    ref = torchrun(tmp_path / "ref", OUT=str(tmp_path / "ref"), **job)
    assert ref.returncode == 0, ref.stderr[-3000:]
    home, steps = tmp_path / "home", tmp_path / "steps"
    proc = _supervised(home, "--max-restarts", str(KILLS + 2), SLOW="0.05", STEP_FILE=str(steps),
                       OUT=str(tmp_path / "out"), **job)
    killed = kill_at_random_moments(proc, home, lambda: len(_steps(steps, 0)), seed, KILLS)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, f"seed {seed}: {out[-4000:]}"
    assert same(final_params(tmp_path / "out"), final_params(tmp_path / "ref")), f"seed {seed}, killed {killed}"
    attempts, manifests = _history(home)
    assert len(attempts) == len(killed) + 1, f"seed {seed}: one attempt per group run, not per rank"
    for attempt, victim in zip(attempts, killed):
        assert f"rank {victim}" in attempt.message and "SIGKILL" in attempt.message, (seed, attempt.message)
    for manifest in manifests:  # no committed checkpoint lacks a rank's shard
        folders = {f.path.split("/")[0] for f in manifest.files}
        assert {"rank-0", "rank-1", "replicated"} <= folders, (seed, manifest.uuid, folders)


def _history(home):
    """The attempts of trial ddp/1 and the manifests of its committed checkpoints."""
    tracker = Tracker(f"sqlite:///{home}/unbroken.db")
    try:
        attempts = tracker.attempts(tracker.trial("ddp", 1).id)
    finally:
        tracker.close()
    folder = home / "experiments" / "ddp" / "trial-1" / "checkpoints"
    return attempts, CheckpointStore(LocalStorage(folder)).list()
