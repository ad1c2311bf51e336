"""Slurm jobs of several tasks: one supervisor per job, the training as N*M ranks through `srun`.

This module is the one place that knows how a multi-task Slurm job runs:

* the batch script (:func:`unbroken.launch.slurm.render_script`) runs ONE ``unbroken run``
  supervisor in the batch shell, whose command is :func:`srun_command`: ``srun`` starts every
  task of the job, each through ``python -m unbroken.launch.slurmtasks -- CMD`` (:func:`main`),
  which sets the torch.distributed variables from the task's Slurm variables
  (:func:`task_env`) and then ``exec``\\ s CMD;
* only the supervisor requeues the job (``scontrol requeue``, once per stop, after the ranks
  committed and exited); the ranks never do;
* stops reach every rank through ``srun``, which passes SIGUSR1, SIGUSR2 and SIGCONT on to all
  of its tasks but answers SIGTERM, SIGHUP and SIGQUIT by killing them, and a single SIGINT by
  printing their status (observed with Slurm 22.05). So a supervisor whose child is ``srun``
  (:func:`is_srun`) passes every stop request on as the preempt signal, and the preempt signal of
  a multi-task job must be one that srun forwards (:func:`check_preempt_signal`);
* the group ends as one: after its first task ended, srun kills the others within
  :data:`RANK_EXIT_WAIT` seconds (a rank that crashed usually takes the others down at once, as
  their collectives fail), and the supervisor restarts the whole group (a new job step). A stop
  ends every rank with 75 after the group's one checkpoint is committed; srun then exits 75.

The rendezvous: ``MASTER_ADDR`` is the first host of the step's node list (Slurm's compressed
form, e.g. ``node[01-03,07]``, expanded by :func:`expand_hostlist`), ``MASTER_PORT`` comes from
the job id (:func:`master_port`); a value the job's environment already has is kept.
Everything here is pure except :func:`main`, which runs in each task.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import ConfigError, LaunchError

#: Signals srun passes on to all of its tasks (others kill the step or only print its status).
SRUN_FORWARDS = ("USR1", "USR2", "CONT")

#: MASTER_PORT is MASTER_PORT_BASE + (job id % MASTER_PORT_SPAN): above the well-known ports and
#: below Linux's default ephemeral range (32768-60999).
MASTER_PORT_BASE, MASTER_PORT_SPAN = 20000, 12000

#: Seconds srun waits, after the first task of a group ended, before it kills the others.
RANK_EXIT_WAIT = 60

#: The srun options of a group. Not --kill-on-bad-exit: a rank that stopped exits 75, which srun
#: counts as bad, and it would kill the other ranks while they finish their own stop (srun then
#: exits 143, not 75). Instead --wait bounds how long the others may outlive the first one (a
#: rank blocked in a collective with a dead peer); each output line names its task.
SRUN_OPTIONS = ("--kill-on-bad-exit=0", f"--wait={RANK_EXIT_WAIT}", "--label")


def task_count(nodes: int | None, ntasks_per_node: int | None) -> int:
    """How many ranks `slurm submit --nodes N --ntasks-per-node M` asks for (N and M default to 1)."""
    return (nodes or 1) * (ntasks_per_node or 1)


def check_preempt_signal(signal_name: str) -> None:
    """ConfigError unless srun passes ``signal_name`` (``USR2``, no ``SIG``) on to its tasks."""
    if signal_name not in SRUN_FORWARDS:
        raise ConfigError(f"--signal {signal_name}: with several tasks the stop request reaches the ranks through "
                          f"srun, which kills its tasks on TERM, HUP and QUIT (and only reports on INT); use "
                          f"one it passes on: {', '.join(SRUN_FORWARDS)} (USR2 is the default)")


def srun_command(command: Sequence[str], python: str = sys.executable) -> list[str]:
    """What the supervisor of a multi-task job runs: srun, one :func:`main` wrapper per task, the command."""
    return ["srun", *SRUN_OPTIONS, python, "-m", "unbroken.launch.slurmtasks", "--", *command]


def is_srun(command: Sequence[str]) -> bool:
    """True if ``command`` starts with srun: such a child gets every stop as the preempt signal."""
    return bool(command) and Path(command[0]).name == "srun"


# -- Slurm's host lists -----------------------------------------------------------------------------
_ITEM_RE = re.compile(r"([^\[\],]*)(?:\[([^\[\]]*)\])?")


def expand_hostlist(text: str) -> list[str]:
    """Slurm's compressed node list -> host names in order: ``n[01-03,07],gpu5`` -> n01 n02 n03 n07 gpu5.

    Several bracket groups in one name multiply (``r[1-2]n[1-2]`` -> r1n1 r1n2 r2n1 r2n2), as in
    Slurm. Raises LaunchError for a list it cannot read (unbalanced brackets, bad ranges).
    """
    hosts: list[str] = []
    for item in _split_top_level(text.strip(), text):
        names = [""]
        pos = 0
        while pos < len(item):
            match = _ITEM_RE.match(item, pos)
            if match is None or match.end() == pos:
                raise LaunchError(f"cannot read the Slurm node list {text!r} (at {item[pos:]!r})")
            prefix, ranges = match.groups()
            parts = [prefix] if ranges is None else [prefix + n for n in _expand_ranges(ranges, text)]
            names = [name + part for name in names for part in parts]
            pos = match.end()
        hosts += names
    return hosts


def _split_top_level(text: str, whole: str) -> list[str]:
    """Split at the commas outside brackets; empty items are an error."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth not in (0, 1):
            raise LaunchError(f"cannot read the Slurm node list {whole!r} (unbalanced brackets)")
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    if depth != 0 or any(not item for item in items):
        raise LaunchError(f"cannot read the Slurm node list {whole!r}")
    return items


def _expand_ranges(ranges: str, whole: str) -> list[str]:
    """``01-03,07`` -> 01 02 03 07 (the lower bound's width is kept, as Slurm pads)."""
    out = []
    for part in ranges.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None or (match.group(2) is not None and int(match.group(2)) < int(match.group(1))):
            raise LaunchError(f"cannot read the Slurm node list {whole!r} (range {part!r})")
        low, high = match.group(1), match.group(2) or match.group(1)
        out += [str(n).zfill(len(low)) for n in range(int(low), int(high) + 1)]
    return out


def tasks_on_node(tasks_per_node: str, node_index: int) -> int:
    """Slurm's ``SLURM_STEP_TASKS_PER_NODE`` (``2(x3),1``) -> the task count of node ``node_index``."""
    counts: list[int] = []
    for part in tasks_per_node.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            raise LaunchError(f"cannot read Slurm's tasks per node {tasks_per_node!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    if not 0 <= node_index < len(counts):
        raise LaunchError(f"node {node_index} is not in Slurm's tasks per node {tasks_per_node!r}")
    return counts[node_index]


# -- one task's environment --------------------------------------------------------------------------
def master_port(job_id: str) -> int:
    """The rendezvous port of a job: the same in every task and every allocation of the job."""
    digits = re.match(r"\d+", job_id)
    if digits is None:
        raise LaunchError(f"cannot derive MASTER_PORT from the Slurm job id {job_id!r}")
    return MASTER_PORT_BASE + int(digits.group()) % MASTER_PORT_SPAN


def task_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The torch.distributed variables of the task whose Slurm variables are ``environ``.

    RANK=SLURM_PROCID, WORLD_SIZE=SLURM_NTASKS, LOCAL_RANK=SLURM_LOCALID, LOCAL_WORLD_SIZE from
    the tasks per node, MASTER_ADDR=first host of the step's node list, MASTER_PORT from the job id
    (MASTER_ADDR and MASTER_PORT already in ``environ`` are kept). Raises LaunchError outside an
    srun task, naming the missing variable.
    """
    need = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_ID")
    missing = [name for name in need if not environ.get(name)]
    if missing:
        raise LaunchError(f"unbroken.launch.slurmtasks runs inside an srun task, but ${missing[0]} is not set; "
                          "start it as `srun python -m unbroken.launch.slurmtasks -- CMD`")
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST") or ""
    per_node = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE")
    local_size = tasks_on_node(per_node, int(environ.get("SLURM_NODEID") or 0)) if per_node else None
    env = {"RANK": environ["SLURM_PROCID"], "WORLD_SIZE": environ["SLURM_NTASKS"],
           "LOCAL_RANK": environ["SLURM_LOCALID"],
           "MASTER_ADDR": environ.get("MASTER_ADDR") or (expand_hostlist(nodelist)[0] if nodelist else "127.0.0.1"),
           "MASTER_PORT": environ.get("MASTER_PORT") or str(master_port(environ["SLURM_JOB_ID"]))}
    if local_size is not None:
        env["LOCAL_WORLD_SIZE"] = str(local_size)
    return env


def main(argv: Sequence[str] | None = None) -> int:
    """In one srun task: ``python -m unbroken.launch.slurmtasks -- CMD ...`` sets :func:`task_env`, execs CMD.

    Returns (exit status) only when it cannot start CMD: 2 without a command, 1 outside an srun
    task (:func:`task_env`'s error), 127 when CMD cannot be executed.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[1:] if args[:1] == ["--"] else args
    if not command:
        print("usage: python -m unbroken.launch.slurmtasks -- CMD ...", file=sys.stderr)
        return 2
    try:
        os.environ.update(task_env(os.environ))
    except LaunchError as exc:
        print(f"unbroken: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"unbroken: cannot start {command[0]!r} in Slurm task {os.environ['RANK']}: {exc}", file=sys.stderr,
              flush=True)
        return 127


if __name__ == "__main__":
    sys.exit(main())
