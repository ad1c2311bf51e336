"""Multi-task Slurm jobs (unbroken.launch.slurmtasks): rank environment, node lists, srun's command line,
and one supervisor driving a fake `srun` and a fake `scontrol` (no Slurm needed).

The real srun is exercised in tests/launch/test_slurm.py (test_two_tasks_...), which needs the
test cluster of scripts/slurm-up.sh.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from procs import child_env

from unbroken.errors import ConfigError, LaunchError
from unbroken.launch.slurm import SubmitOptions, render_script
from unbroken.launch.slurmtasks import (MASTER_PORT_BASE, MASTER_PORT_SPAN, check_preempt_signal, expand_hostlist,
                                        is_srun, master_port, srun_command, task_count, task_env, tasks_on_node)


@pytest.mark.parametrize("text,hosts", [
    ("vm", ["vm"]),
    ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
    ("a1,b[2-3],c", ["a1", "b2", "b3", "c"]),
    ("gpu-[9-11]-ib", ["gpu-9-ib", "gpu-10-ib", "gpu-11-ib"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("n[098-101]", ["n098", "n099", "n100", "n101"]),
])
def test_compressed_node_lists_expand_in_order(text, hosts):
    assert expand_hostlist(text) == hosts


@pytest.mark.parametrize("text", ["n[1-", "n]1", "n[3-1]", "a,,b", "n[[1]]", "n[a-b]", ""])
def test_unreadable_node_lists_are_named(text):
    with pytest.raises(LaunchError, match="Slurm node list"):
        expand_hostlist(text)


def test_tasks_per_node():
    assert [tasks_on_node("2(x3),1", i) for i in range(4)] == [2, 2, 2, 1]
    with pytest.raises(LaunchError, match="node 4"):
        tasks_on_node("2(x3),1", 4)
    with pytest.raises(LaunchError, match="tasks per node"):
        tasks_on_node("two", 0)


TASK = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "2", "SLURM_JOB_ID": "4711",
        "SLURM_JOB_NODELIST": "big[1-9]", "SLURM_STEP_NODELIST": "node[07-09,12]",
        "SLURM_STEP_TASKS_PER_NODE": "2(x3),2"}


def test_each_task_gets_its_rank_and_the_shared_rendezvous():
    env = task_env(TASK)
    assert env == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                   "MASTER_ADDR": "node07", "MASTER_PORT": str(MASTER_PORT_BASE + 4711)}
    # every task and every allocation of the job (requeues keep the id) meets at the same port
    assert task_env({**TASK, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"})["MASTER_PORT"] == env["MASTER_PORT"]
    assert master_port("4711") != master_port("4712")
    assert all(MASTER_PORT_BASE <= master_port(str(j)) < MASTER_PORT_BASE + MASTER_PORT_SPAN
               for j in (0, 1, 11999, 12000, 10**9 + 7))
    # the job's own choice wins; without a step node list the job's is used
    kept = task_env({**TASK, "MASTER_ADDR": "head", "MASTER_PORT": "1234", "SLURM_STEP_NODELIST": ""})
    assert kept["MASTER_ADDR"] == "head" and kept["MASTER_PORT"] == "1234"
    assert task_env({**TASK, "SLURM_STEP_NODELIST": ""})["MASTER_ADDR"] == "big1"


def test_outside_an_srun_task_the_missing_variable_is_named():
    with pytest.raises(LaunchError, match=r"\$SLURM_PROCID is not set.*srun python -m unbroken.launch.slurmtasks"):
        task_env({"SLURM_JOB_ID": "3"})


def test_the_task_wrapper_refuses_to_run_outside_srun(tmp_path):
    env = {k: v for k, v in child_env(tmp_path).items() if not k.startswith("SLURM_")}
    wrapper = [sys.executable, "-m", "unbroken.launch.slurmtasks"]
    outside = subprocess.run([*wrapper, "--", "true"], env=env, capture_output=True, text=True, timeout=60)
    assert outside.returncode == 1 and "$SLURM_PROCID is not set" in outside.stderr
    inside = subprocess.run([*wrapper, "--", "no-such-program-here"], env={**env, **TASK}, capture_output=True,
                            text=True, timeout=60)
    assert inside.returncode == 127 and "cannot start 'no-such-program-here' in Slurm task 5" in inside.stderr


def test_srun_command_keeps_the_group_alive_through_a_stop():
    argv = srun_command(["python", "train.py", "--lr", "1"], python="/py")
    assert argv[0] == "srun" and is_srun(argv) and is_srun(["/usr/bin/srun", "x"]) and not is_srun(["python"])
    # exit 75 of one stopping rank must not make srun kill the others while they stop
    assert "--kill-on-bad-exit=0" in argv and "--kill-on-bad-exit=1" not in argv
    assert any(a.startswith("--wait=") for a in argv)
    assert argv[argv.index("/py"):] == ["/py", "-m", "unbroken.launch.slurmtasks", "--", "python", "train.py", "--lr", "1"]


def test_only_signals_srun_passes_on_can_stop_a_group(tmp_path):
    for name in ("USR1", "USR2"):
        check_preempt_signal(name)
    for name in ("TERM", "HUP", "INT", "QUIT"):
        with pytest.raises(ConfigError, match=f"--signal {name}.*USR2"):
            check_preempt_signal(name)
    base = dict(command=["python", "t.py"], name="t", home=tmp_path, logs=tmp_path)
    with pytest.raises(ConfigError, match="srun"):
        SubmitOptions(**base, nodes=2, signal="TERM")
    SubmitOptions(**base, nodes=1, ntasks_per_node=1, signal="TERM")  # one task: no srun involved
    assert (task_count(None, None), task_count(2, None), task_count(3, 4)) == (1, 2, 12)


def test_script_of_n_by_m_tasks_runs_one_supervisor_over_srun(tmp_path):
    opts = SubmitOptions(command=["python", "train.py", "--msg", "it's"], name="big", home=tmp_path, logs=tmp_path,
                         trial=1, nodes=2, ntasks_per_node=4, python="/py")
    script = render_script(opts)
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=4" in script
    (run_line,) = [line for line in script.splitlines() if line.startswith("exec ")]
    assert run_line.count(" unbroken run ") == 1 and run_line.count("srun") == 1
    assert run_line.index(" unbroken run ") < run_line.index(" -- srun ") < run_line.index("unbroken.launch.slurmtasks")
    assert run_line.endswith("-- python train.py --msg 'it'\"'\"'s'")
    assert "requeue" not in run_line.split(" -- srun ")[1]  # the ranks never requeue
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    single = render_script(SubmitOptions(command=["python", "train.py"], name="one", home=tmp_path, logs=tmp_path,
                                         trial=1, nodes=1, ntasks_per_node=1))
    assert "srun" not in single and single.rstrip().endswith("-- python train.py")


# -- one supervisor, a fake srun and scontrol ---------------------------------------------------------
FAKE_SRUN = textwrap.dedent("""\
    #!{python}
    # Like Slurm 22.05's srun: starts SLURM_NTASKS tasks with their Slurm variables, passes USR1, USR2
    # and CONT on to every task, kills them on TERM, exits with the largest exit status.
    import os, signal, subprocess, sys
    args = sys.argv[1:]
    while args[0].startswith("-"):
        args.pop(0)
    n = int(os.environ["SLURM_NTASKS"])
    tasks = [subprocess.Popen(args, env={{**os.environ, "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i),
                                         "SLURM_NODEID": "0", "SLURM_STEP_ID": "0"}}) for i in range(n)]
    def forward(signum, _frame):
        for task in tasks:
            task.send_signal(signum)
    def abort(signum, _frame):
        for task in tasks:
            task.kill()
    for name in ("SIGUSR1", "SIGUSR2", "SIGCONT"):
        signal.signal(getattr(signal, name), forward)
    for name in ("SIGTERM", "SIGHUP", "SIGQUIT"):
        signal.signal(getattr(signal, name), abort)
    codes = [task.wait() for task in tasks]
    sys.exit(max(c if c >= 0 else 128 - c for c in codes))
""")

FAKE_SCONTROL = textwrap.dedent("""\
    #!/bin/bash
    # Records each call; `requeue` has the caller (the supervisor) signalled while the call still runs,
    # as Slurm may: the supervisor must count that signal as the answer to its requeue.
    echo "$*" >> "$SCONTROL_CALLS"
    case $1 in
      show) echo "JobId=$SLURM_JOB_ID TimeLimit=UNLIMITED EndTime=Unknown" ;;
      requeue) kill -TERM $PPID; sleep 0.3 ;;
    esac
""")

RANK = textwrap.dedent("""\
    import json, os, signal, sys, time
    rank = os.environ["RANK"]
    out = sys.argv[1]
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "UNBROKEN_ATTEMPT_ID")
    got = []
    def stop(signum, _frame):
        got.append(signal.Signals(signum).name)
    for sig in (signal.SIGUSR2, signal.SIGTERM):
        signal.signal(sig, stop)
    with open(f"{out}.rank{rank}.json", "w") as f:
        json.dump({n: os.environ.get(n) for n in names}, f)
    while not got:
        time.sleep(0.02)
    with open(f"{out}.rank{rank}.stop", "w") as f:
        f.write(",".join(got))
    sys.exit(75)
""")


def _fake_tools(folder: Path) -> Path:
    folder.mkdir()
    for name, text in (("srun", FAKE_SRUN.format(python=sys.executable)), ("scontrol", FAKE_SCONTROL)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def test_one_supervisor_stops_every_rank_through_srun_and_requeues_once(tmp_path, wait_until):
    home, out, calls = tmp_path / "home", tmp_path / "out", tmp_path / "scontrol.calls"
    (tmp_path / "rank.py").write_text(RANK)
    tools = _fake_tools(tmp_path / "bin")
    env = child_env(home, PATH=f"{tools}:{os.environ['PATH']}", SCONTROL_CALLS=str(calls), SLURM_JOB_ID="4242",
                    SLURM_NTASKS="2", SLURM_JOB_NODELIST="node[07-08]")
    command = srun_command([sys.executable, str(tmp_path / "rank.py"), str(out)])
    proc = subprocess.Popen([sys.executable, "-m", "unbroken", "run", "--name", "tasks", "--", *command], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: all(Path(f"{out}.rank{r}.json").exists() for r in (0, 1)), timeout=60, what="both ranks")
        proc.send_signal(signal.SIGTERM)  # a stop; srun would kill its tasks on TERM: they must get USR2
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 75, output
    ranks = [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in (0, 1)]
    assert [(e["RANK"], e["WORLD_SIZE"], e["LOCAL_RANK"]) for e in ranks] == [("0", "2", "0"), ("1", "2", "1")]
    assert {(e["MASTER_ADDR"], e["MASTER_PORT"]) for e in ranks} == {("node07", str(master_port("4242")))}
    assert ranks[0]["UNBROKEN_ATTEMPT_ID"] == ranks[1]["UNBROKEN_ATTEMPT_ID"] is not None  # one attempt, 2 ranks
    assert [Path(f"{out}.rank{r}.stop").read_text() for r in (0, 1)] == ["SIGUSR2", "SIGUSR2"]
    requeues = [line for line in calls.read_text().splitlines() if line.startswith("requeue")]
    assert requeues == ["requeue 4242"], calls.read_text()
    assert output.count("requeueing Slurm job 4242") == 1, output
