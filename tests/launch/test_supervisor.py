"""`unbroken run` with real processes: restarts, signals, logs, attempt history."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from safetensors.numpy import load_file

from procs import EXAMPLES, child_env

from unbroken import EXIT_PREEMPTED
from unbroken.checkpoint import CheckpointStore
from unbroken.launch.supervisor import RunConfig, derive_name
from unbroken.errors import ConfigError
from unbroken.storage import LocalStorage
from unbroken.tracking import Tracker

pytestmark = pytest.mark.slow
TRAIN = [sys.executable, "-u", str(EXAMPLES / "torch_train.py"), "--steps", "150", "--save-every", "5",
         "--step-time", "0.01"]


def unbroken_run(home: Path, *args: str, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "unbroken", "run", *args]
    return subprocess.Popen(cmd, env=child_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


def attempts_of(home: Path, name: str):
    tracker = Tracker(home / "unbroken.db")
    return tracker.trial(name), tracker.attempts(tracker.trial(name).id)


def newest(home: Path, name: str, number: int = 1):
    store = CheckpointStore(LocalStorage(home / "experiments" / name / f"trial-{number}" / "checkpoints"))
    manifest = store.newest_good()
    return manifest, store.local_path(manifest.uuid)


def wait_for_line(proc: subprocess.Popen, prefix: str) -> str:
    for line in proc.stdout:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting with {prefix!r}; stderr: {proc.stderr.read()}")


def test_chaos_ten_kills_end_bitwise_equal_with_eleven_attempts(tmp_path):
    ref = subprocess.run([*TRAIN, "--name", "ref"], env=child_env(tmp_path / "ref"), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    home, rng = tmp_path / "chaos", random.Random(7)
    sup = unbroken_run(home, "--name", "chaos", "--max-restarts", "20", "--backoff", "0", "--", *TRAIN)
    supervisor = psutil.Process(sup.pid)
    for _ in range(10):
        for _ in range(rng.randint(1, 10)):  # kill at a random step: a condition, not a sleep
            wait_for_line(sup, "step ")
        children = supervisor.children()
        assert len(children) == 1
        children[0].send_signal(signal.SIGKILL)
        children[0].wait(10)
    sup.stdout.read()
    assert sup.wait(timeout=180) == 0, sup.stderr.read()

    trial, attempts = attempts_of(home, "chaos")
    assert trial.status == "completed" and len(attempts) == 11
    assert [a.end_reason for a in attempts] == ["crashed"] * 10 + ["completed"]
    assert all(a.signal == signal.SIGKILL for a in attempts[:10])
    (_, a), (_, b) = newest(tmp_path / "ref", "ref"), newest(home, "chaos")
    ta, tb = load_file(str(a / "tensors.safetensors")), load_file(str(b / "tensors.safetensors"))
    assert ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)
    assert json.loads((a / "state.json").read_text()) == json.loads((b / "state.json").read_text())
    assert all(Path(x.log_path).exists() for x in attempts)


def test_max_total_failures_ignores_progress(tmp_path):
    script = tmp_path / "flaky.py"
    script.write_text(FLAKY)
    sup = unbroken_run(tmp_path, "--name", "capped", "--max-restarts", "5", "--max-total-failures", "1",
                       "--backoff", "0", "--", sys.executable, str(script), "progress-crash,progress-crash,finish")
    _, err = sup.communicate(timeout=60)
    assert sup.returncode == 1 and "max_total_failures(1)" in err
    _, attempts = attempts_of(tmp_path, "capped")
    assert [a.end_reason for a in attempts] == ["crashed", "crashed"]


def test_always_failing_command_stops_after_exactly_n_restarts(tmp_path):
    sup = unbroken_run(tmp_path, "--name", "fails", "--max-restarts", "2", "--backoff", "0", "--",
                       sys.executable, "-c", "import sys; print('boom', flush=True); sys.exit(3)")
    out, err = sup.communicate(timeout=60)
    assert sup.returncode == 1
    assert out.count("boom") == 3
    assert "out of restarts" in err and "exit status 3" in err and "attempt-3.log" in err
    trial, attempts = attempts_of(tmp_path, "fails")
    assert trial.status == "failed" and [a.exit_code for a in attempts] == [3, 3, 3]
    assert Path(attempts[0].log_path).read_text().splitlines().count("boom") == 1


FLAKY = textwrap.dedent("""
    import sys, unbroken
    plan = sys.argv[1].split(",")           # what each attempt does: crash / progress-crash / finish
    with unbroken.init(exit_on_preempt=False) as run:
        state = unbroken.State(n=0, rng=False)
        start = run.restore(state)
        what = plan[run.info.attempt - 1]
        if what == "progress-crash":
            run.save(state, start + 1)
        if what != "finish":
            sys.exit(1)
""")


def test_progress_resets_failure_counter(tmp_path):
    script = tmp_path / "flaky.py"
    script.write_text(FLAKY)
    plan = "crash,progress-crash,crash,finish"
    sup = unbroken_run(tmp_path, "--name", "flaky", "--max-restarts", "2", "--backoff", "0", "--",
                       sys.executable, str(script), plan)
    _, err = sup.communicate(timeout=60)
    assert sup.returncode == 0, err
    _, attempts = attempts_of(tmp_path, "flaky")
    assert [a.end_reason for a in attempts] == ["crashed", "crashed", "crashed", "completed"]


def test_sigterm_saves_exits_75_leaves_no_orphans_and_resumes(tmp_path, wait_until):
    spawner = tmp_path / "spawn_and_train.py"
    spawner.write_text(textwrap.dedent(f"""
        import subprocess, sys, runpy
        subprocess.Popen(["sleep", "300"])          # a helper process the command leaves behind
        sys.argv = {[str(EXAMPLES / "torch_train.py")]!r} + sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
    """))
    args = ["--name", "pre", "--", sys.executable, "-u", str(spawner), "--steps", "400", "--save-every", "1000",
            "--step-time", "0.02"]
    sup = unbroken_run(tmp_path, *args)
    wait_for_line(sup, "step 20 ")
    child = psutil.Process(sup.pid).children()[0]
    group = os.getpgid(child.pid)
    sup.send_signal(signal.SIGTERM)
    out = sup.stdout.read()
    assert sup.wait(timeout=60) == EXIT_PREEMPTED
    last_step = int(["step 20 ", *[l for l in out.splitlines() if l.startswith("step ")]][-1].split()[1])
    wait_until(lambda: not [p for p in psutil.process_iter(["pid", "status"])
                            if _pgid(p.pid) == group and p.info["status"] != psutil.STATUS_ZOMBIE],
               timeout=10, what="no orphans in the child's group")

    manifest, _ = newest(tmp_path, "pre")
    assert manifest.steps_completed == last_step
    trial, attempts = attempts_of(tmp_path, "pre")
    assert trial.status == "preempted" and attempts[-1].end_reason == "preempted"

    again = unbroken_run(tmp_path, *args)
    first = wait_for_line(again, "step ")
    assert first.startswith(f"step {last_step + 1} ")
    again.send_signal(signal.SIGTERM)
    again.communicate(timeout=60)


def test_second_ctrl_c_kills_at_once(tmp_path):
    sup = unbroken_run(tmp_path, "--name", "stubborn", "--grace", "600", "--", sys.executable, "-u", "-c",
                       "import signal, time; signal.signal(signal.SIGINT, lambda *a: print('saving', flush=True)); "
                       "print('up', flush=True); time.sleep(600)")
    wait_for_line(sup, "up")
    sup.send_signal(signal.SIGINT)
    wait_for_line(sup, "saving")  # the first Ctrl-C reached the command...
    assert sup.poll() is None  # ...and the supervisor waits for it to save
    sup.send_signal(signal.SIGINT)
    assert sup.wait(timeout=10) == 130
    _, attempts = attempts_of(tmp_path, "stubborn")
    assert attempts[-1].end_reason == "cancelled"


def test_grace_period_kills_a_command_that_ignores_the_stop(tmp_path):
    sup = unbroken_run(tmp_path, "--name", "deaf", "--grace", "1", "--", sys.executable, "-u", "-c",
                       "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
                       "time.sleep(600)")
    wait_for_line(sup, "up")
    t0 = time.monotonic()
    sup.send_signal(signal.SIGTERM)
    _, err = sup.communicate(timeout=20)
    assert sup.returncode == EXIT_PREEMPTED and time.monotonic() - t0 < 10
    assert "did not stop within 1 s" in err and "without a final save" in err
    _, attempts = attempts_of(tmp_path, "deaf")
    assert attempts[-1].end_reason == "preempted" and attempts[-1].signal == signal.SIGKILL


def test_own_checkpointing_command_survives_kills(tmp_path):
    out_dir = tmp_path / "pickle"
    sup = unbroken_run(tmp_path, "--name", "pickled", "--max-restarts", "10", "--reset-after", "1s", "--backoff", "0",
                       "--", sys.executable, "-u", str(EXAMPLES / "pickle_loop.py"), "--out", str(out_dir),
                       "--steps", "150")
    for _ in range(4):
        wait_for_line(sup, "step ")
        wait_for_line(sup, "step ")  # a second save: the attempt made progress
        psutil.Process(sup.pid).children()[0].send_signal(signal.SIGKILL)
    sup.stdout.read()
    assert sup.wait(timeout=120) == 0
    assert (out_dir / "result.txt").read_text() == str(sum(range(151)))
    _, attempts = attempts_of(tmp_path, "pickled")
    assert [a.end_reason for a in attempts] == ["crashed"] * 4 + ["completed"]


def test_time_limit_stops_after_saving(tmp_path):
    # Python + torch take 2-5 s to start on a loaded machine: the child's deadline is 10 s after the start.
    sup = unbroken_run(tmp_path, "--name", "limited", "--time-limit", "14s", "--margin", "4s", "--",
                       *TRAIN[:3], "--steps", "100000", "--step-time", "0.01")
    out, err = sup.communicate(timeout=60)
    assert sup.returncode == EXIT_PREEMPTED, err
    trial, attempts = attempts_of(tmp_path, "limited")
    assert attempts[-1].end_reason == "timed_out"
    steps = [int(l.split()[1]) for l in out.splitlines() if l.startswith("step ")]
    assert steps, "the command made no step before its deadline"
    assert newest(tmp_path, "limited")[0].steps_completed == steps[-1]


def test_unstartable_command_is_a_clear_error(tmp_path):
    sup = unbroken_run(tmp_path, "--", "/no/such/program")
    _, err = sup.communicate(timeout=30)
    assert sup.returncode == 1 and "cannot start '/no/such/program'" in err


def test_config_errors():
    with pytest.raises(ConfigError, match="needs a command"):
        RunConfig(command=[])
    with pytest.raises(ConfigError, match="longer than the save margin"):
        RunConfig(command=["x"], time_limit=30, margin=60)


@pytest.mark.parametrize("cmd,name", [
    (["python", "train.py", "--lr", "3"], "train"),
    (["torchrun", "--nproc-per-node=2", "/a/b/my model.py"], "my-model"),
    (["./run.sh"], "run.sh"),
])
def test_derive_name(cmd, name):
    assert derive_name(cmd) == name


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


# -- one writer per trial; no orphans when the supervisor itself is killed ----------------------------

WRITER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from unbroken.envvars import LaunchEnv
    from unbroken.paths import TrialPaths
    env = LaunchEnv.from_env()
    folder = TrialPaths(env.home, env.experiment, env.trial).checkpoints
    folder.mkdir(parents=True, exist_ok=True)
    (folder.parent / f"pid-{env.attempt_id}").write_text(str(os.getpid()))
    latest = folder / "latest.json"
    step = json.loads(latest.read_text())["step"] if latest.exists() else 0
    if sys.argv[1] == "once":
        sys.exit(0 if step > 0 else 3)
    while True:                      # a writer that never prints: only files show it is alive
        step += 1
        (folder / "tmp.json").write_text(json.dumps({"step": step}))
        os.replace(folder / "tmp.json", latest)
        time.sleep(0.01)
""")


def test_killed_supervisor_takes_its_child_along_and_the_next_one_resumes(tmp_path, wait_until):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    trial = tmp_path / "experiments" / "writer" / "trial-1"
    first = unbroken_run(tmp_path, "--name", "writer", "--", sys.executable, str(script), "loop")
    pid = int(wait_until(lambda: (trial / "pid-1").exists() and (trial / "pid-1").read_text(), what="child pid"))
    child = psutil.Process(pid)
    wait_until(lambda: (trial / "checkpoints" / "latest.json").exists(), what="a first checkpoint")
    first.kill()  # SIGKILL: the supervisor cannot clean up
    first.wait(10)
    wait_until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, timeout=10,
               what="the orphaned child to die")
    second = unbroken_run(tmp_path, "--name", "writer", "--", sys.executable, str(script), "once")
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err  # it resumed: "once" exits 0 only after a step was saved
    trial_row, attempts = attempts_of(tmp_path, "writer")
    assert [a.end_reason for a in attempts] == ["lost", "completed"] and trial_row.status == "completed"
    assert attempts[0].pid == pid


def test_second_supervisor_on_a_live_trial_refuses_naming_the_holder(tmp_path, wait_until):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    first = unbroken_run(tmp_path, "--name", "busy", "--", sys.executable, str(script), "loop")
    try:
        wait_until(lambda: (tmp_path / "experiments" / "busy" / "trial-1" / "pid-1").exists(), what="the first child")
        second = unbroken_run(tmp_path, "--name", "busy", "--", sys.executable, str(script), "loop")
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"trial busy/1 is being written by pid {first.pid}" in err and "--wait" in err
        waited = unbroken_run(tmp_path, "--name", "busy", "--wait", "0.5", "--", sys.executable, str(script), "loop")
        _, err = waited.communicate(timeout=60)
        assert waited.returncode == 1 and "(waited 0.5 s)" in err
        _, attempts = attempts_of(tmp_path, "busy")
        assert len(attempts) == 1 and attempts[0].end_reason is None  # the refused ones recorded nothing
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
