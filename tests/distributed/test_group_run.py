"""`unbroken run --nproc-per-node 2`: the group stops, fails and resumes as one (torchrun inside)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from ranks import JOB, final_params, job_env, same, torchrun
from waiting import wait_until

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


def test_a_killed_rank_restarts_the_group_and_it_ends_bitwise_equal(tmp_path):
    ref = torchrun(tmp_path / "ref", STEPS="40", OUT=str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    home, steps = tmp_path / "home", tmp_path / "steps"
    proc = _supervised(home, "--max-restarts", "5", STEPS="40", SLOW="0.05", STEP_FILE=str(steps),
                       OUT=str(tmp_path / "out"))
    for kill_after in (8, 20):
        wait_until(lambda: len(_steps(steps, 1)) >= kill_after, timeout=60, what=f"{kill_after} steps")
        os.kill(_rank_pid(home, 1), signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-4000:]
    assert same(final_params(tmp_path / "out"), final_params(tmp_path / "ref"))
    tracker = Tracker(f"sqlite:///{home}/unbroken.db")
    attempts = tracker.attempts(tracker.trial("ddp", 1).id)
    tracker.close()
    assert len(attempts) == 3  # one per group run, not per rank
    assert all("rank 1" in a.message and "SIGKILL" in a.message for a in attempts[:2]), [a.message for a in attempts]


def _rank_pid(home, rank: int) -> int:
    """The pid of the worker with RANK=rank (found through /proc environ)."""
    def find():
        for entry in os.listdir("/proc"):
            try:
                env = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            if f"UNBROKEN_HOME={home}".encode() in env and f"RANK={rank}".encode() in env \
                    and b"TORCHELASTIC_RUN_ID" in b" ".join(env) and f"LOCAL_RANK={rank}".encode() in env:
                return int(entry)
        return None
    return wait_until(find, timeout=30, what=f"rank {rank}'s process")
