"""Slurm: submit a trial as a requeueable job, and inside the job save-then-requeue before the limit.

In the job, ``unbroken run`` detects Slurm (``$SLURM_JOB_ID``) and uses :class:`SlurmEnvironment`:

* the deadline is the job's ``EndTime`` (from ``scontrol show job``) minus the save margin, so
  the training stops in time even when no ``--signal`` was configured;
* each allocation is an attempt with job id, array task, node list and restart count;
* after the training saved and stopped (exit 75), the supervisor requeues the job itself with
  ``scontrol requeue`` (``ARRAYJOBID_TASKID`` for array tasks) - only then, because a requeue
  kills the job at once - unless ``--max-requeues`` is spent;
* with ``chain=True`` (``unbroken run --chain``, from ``slurm submit --chain``) it does not requeue:
  the follow-up job of :mod:`unbroken.launch.chain` is already pending;
* without ``scontrol`` (a container) the end time is unknown here: the deadline then comes from
  ``--time-limit`` (the chained script passes one) and Slurm's ``--signal``;
* a job of several tasks (``--nodes N --ntasks-per-node M``, N*M > 1) still has ONE supervisor,
  in the batch shell: it runs the ranks through ``srun`` and alone requeues
  (:mod:`unbroken.launch.slurmtasks`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

from ..envvars import ENV_CHAIN_LINK
from ..errors import ConfigError, LaunchError
from .environment import Environment, WaitForKill
from .slurmtasks import check_preempt_signal, srun_command, task_count

#: Longest wait for Slurm's signal after `scontrol requeue` (its KillWait is 30 s by default).
KILL_WAIT_SECONDS = 60.0

SCONTROL_MISSING = ("`{tool}` was not found: Slurm's client commands are needed inside the job "
                    "(inside a container, bind-mount them, run unbroken outside it, or submit with "
                    "`unbroken slurm submit --chain`, which continues the trial in follow-up jobs instead of requeueing)")


@dataclasses.dataclass(frozen=True)
class JobInfo:
    """The Slurm identity of the current allocation, from the environment."""

    job_id: str
    array_job_id: str | None
    array_task_id: str | None
    nodes: str | None
    restart_count: int
    chain_link: int = 0  # which link of a `submit --chain` chain (1, 2, ...); 0: not chained

    @property
    def requeue_id(self) -> str:
        """What `scontrol requeue` needs: ``ARRAYJOBID_TASKID`` for an array task, else the job id."""
        if self.array_job_id and self.array_task_id:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.job_id

    @classmethod
    def from_env(cls, environ=os.environ) -> "JobInfo | None":
        job_id = environ.get("SLURM_JOB_ID")
        if not job_id:
            return None
        return cls(job_id, environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID"),
                   environ.get("SLURM_JOB_NODELIST"), int(environ.get("SLURM_RESTART_COUNT") or 0),
                   int(environ.get(ENV_CHAIN_LINK) or 0))


def run_tool(args: Sequence[str]) -> subprocess.CompletedProcess:
    """Run a Slurm client command; LaunchError if it is not installed."""
    if shutil.which(args[0]) is None:
        raise LaunchError(SCONTROL_MISSING.format(tool=args[0]))
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


def job_end_time(job_id: str, runner: Callable = run_tool) -> float | None:
    """The Unix time at which Slurm ends the job, or None if it has no limit."""
    result = runner(["scontrol", "show", "job", "-o", job_id])
    if result.returncode != 0:
        raise LaunchError(f"scontrol show job {job_id} failed: {result.stderr.strip()}")
    match = re.search(r"\bEndTime=(\S+)", result.stdout)
    if not match or match.group(1) in ("Unknown", "None") or "TimeLimit=UNLIMITED" in result.stdout:
        return None
    return dt.datetime.fromisoformat(match.group(1)).timestamp()  # local time, as Slurm prints it


def requeue(job: JobInfo, runner: Callable = run_tool) -> None:
    """Ask Slurm to requeue this job (it is killed at once and starts again later)."""
    result = runner(["scontrol", "requeue", job.requeue_id])
    if result.returncode != 0:
        message = result.stderr.strip() or result.stdout.strip()
        if "disabled" in message.lower():
            raise LaunchError(
                f"Slurm refused to requeue job {job.requeue_id}: {message}. The job was submitted with "
                "--no-requeue or the cluster has JobRequeue=0; submit with --requeue (unbroken slurm submit "
                "does), ask the admins, or submit with `unbroken slurm submit --chain` (follow-up jobs instead "
                "of requeues). The checkpoint is saved: resubmit the same command to resume"
            )
        raise LaunchError(f"scontrol requeue {job.requeue_id} failed: {message}. Where requeueing cannot work, "
                          "submit with `unbroken slurm submit --chain` (follow-up jobs instead of requeues)")


class SlurmEnvironment(Environment):
    """The supervisor's view of a Slurm allocation (see the module docstring).

    ``kill_wait`` bounds how long :meth:`requeue` waits for Slurm's kill after ``scontrol requeue``.
    """

    def __init__(self, job: JobInfo, max_requeues: int | None = None, runner: Callable = run_tool,
                 kill_wait: float = KILL_WAIT_SECONDS, chain: bool = False):
        self.job, self.max_requeues, self.runner, self.kill_wait = job, max_requeues, runner, kill_wait
        self.chain = chain
        self._end_time: float | None | bool = False

    def deadline(self) -> float | None:
        """The job's EndTime (read once); None when unlimited or when scontrol cannot tell (reported once)."""
        if self._end_time is False:
            try:
                self._end_time = job_end_time(self.job.job_id, self.runner)
            except LaunchError as exc:
                print(f"unbroken: the job's end time is unknown ({exc}); relying on --time-limit and Slurm's "
                      "--signal", file=sys.stderr, flush=True)
                self._end_time = None
        return self._end_time

    def attempt_fields(self) -> dict:
        return {"launcher": "slurm", "slurm_job_id": self.job.requeue_id, "slurm_array_task": self.job.array_task_id,
                "slurm_nodes": self.job.nodes, "slurm_restarts": self.requeues()}

    def requeues(self) -> int:
        """Requeues so far: Slurm's restart count, plus the links before this one in a chain."""
        return self.job.restart_count + max(0, self.job.chain_link - 1)

    def requeue(self, reason: str, log: Callable[[str], None], wait_for_kill: WaitForKill) -> None:
        """Requeue the job (called after the checkpoint is committed), then wait for Slurm's kill.

        The requeue makes Slurm signal this job (TERM, then KILL after its KillWait); returning
        early would let the job end on its own first. Waits at most ``kill_wait`` seconds.
        """
        if self.chain:
            log(f"unbroken: checkpoint committed; the follow-up job of this chain continues the trial ({reason})")
            return
        log(f"unbroken: checkpoint committed; requeueing Slurm job {self.job.requeue_id} ({reason})")
        sys.stdout.flush()
        try:
            requeue(self.job, self.runner)
        except LaunchError as exc:
            log(f"unbroken: {exc}")
            return
        if not wait_for_kill(self.kill_wait):
            log(f"unbroken: Slurm did not stop job {self.job.requeue_id} within {self.kill_wait:g} s of the requeue; "
                "exiting (the requeue stands)")


# -- submitting -------------------------------------------------------------------------------------
_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_slurm_time(text: str) -> int:
    """Slurm's --time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> seconds."""
    match = _TIME_RE.match(text.strip())
    if not match:
        raise ConfigError(f"--time {text!r} is not a Slurm time (e.g. 60, 12:00:00, 1-00:00:00)")
    days, a, b, c = match.groups()
    if days is None:
        if b is None:
            return int(a) * 60  # minutes
        if c is None:
            return int(a) * 60 + int(b)  # minutes:seconds
        return int(a) * 3600 + int(b) * 60 + int(c)
    return int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)


@dataclasses.dataclass
class SubmitOptions:
    """What `unbroken slurm submit` puts into the sbatch script."""

    command: Sequence[str]
    name: str
    home: Path
    logs: Path
    trial: int | None = None
    storage: str | None = None  # resolved storage root (folder or URL); None: the home
    db: str | None = None  # tracking index URL; None: SQLite in the home
    time: str | None = None
    partition: str | None = None
    gres: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    nodes: int | None = None
    ntasks_per_node: int | None = None
    array: str | None = None
    account: str | None = None
    qos: str | None = None
    sbatch_args: Sequence[str] = ()
    signal: str | None = "USR2"  # None: no --signal; the deadline from the job's EndTime still applies
    margin: int = 120
    max_requeues: int | None = None
    max_restarts: int = 3
    max_stalled: int | None = None  # --max-requeues-without-progress (None: the run's default)
    chain: bool = False  # follow-up jobs instead of requeues (see unbroken.launch.chain)
    script_path: Path | None = None  # where the script is written (a chain resubmits it)
    python: str = sys.executable

    @property
    def tasks(self) -> int:
        """How many ranks the job runs (more than one: through srun, see :mod:`unbroken.launch.slurmtasks`)."""
        return task_count(self.nodes, self.ntasks_per_node)

    def __post_init__(self):
        if not self.command:
            raise ConfigError("unbroken slurm submit needs a command: unbroken slurm submit --time 12:00:00 -- python train.py")
        if self.time is not None and parse_slurm_time(self.time) <= self.margin:
            raise ConfigError(f"--time {self.time} is not longer than the save margin ({self.margin} s): the job "
                              "would be asked to stop before it starts; raise --time or lower --margin")
        if self.tasks > 1:
            check_preempt_signal(self.signal or "USR2")
        if self.chain and (self.array or self.trial is None or self.script_path is None):
            raise ConfigError("--chain continues one trial through follow-up jobs: it needs a trial and a script "
                              "path, and does not work with --array")


def render_script(opts: SubmitOptions) -> str:
    """A readable sbatch script that runs the command under `unbroken run` and requeues itself
    (or, with ``chain``, submits its follow-up job first: :mod:`unbroken.launch.chain`)."""
    out_pattern = "slurm-%A_%a.out" if opts.array else "slurm-%j.out"
    directives = [
        ("job-name", opts.name), ("no-requeue" if opts.chain else "requeue", None), ("open-mode", "append"),
        ("signal", f"B:{opts.signal}@{opts.margin}" if opts.signal else None),
        ("output", str(opts.logs / out_pattern)),
        ("time", opts.time), ("partition", opts.partition), ("gres", opts.gres),
        ("cpus-per-task", opts.cpus_per_task), ("mem", opts.mem), ("nodes", opts.nodes),
        ("ntasks-per-node", opts.ntasks_per_node), ("array", opts.array), ("account", opts.account),
        ("qos", opts.qos),
    ]
    flags = ("requeue", "no-requeue")
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH --{k}" + ("" if k in flags else f"={v}") for k, v in directives if v is not None or k in flags]
    lines += [f"#SBATCH {arg}" for arg in opts.sbatch_args]
    lines += [
        "",
        f"# Written by `unbroken slurm submit` on {dt.datetime.now().isoformat(timespec='seconds')}.",
        *(_CHAIN_COMMENT if opts.chain else _REQUEUE_COMMENT),
        f"export UNBROKEN_HOME={shlex.quote(str(opts.home))}",
        *(f"export {var}={shlex.quote(value)}" for var, value in
          (("UNBROKEN_STORAGE", opts.storage), ("UNBROKEN_DB", opts.db)) if value),
        *(_chain_lines(opts) if opts.chain else []),
        *(_TASKS_COMMENT if opts.tasks > 1 else ()),
        "exec " + " ".join(_run_words(opts)) + " -- " + shlex.join(_job_command(opts)),
        "",
    ]
    return "\n".join(lines)


_TASKS_COMMENT = ("# One supervisor for the whole job; srun starts the ranks (RANK, WORLD_SIZE, LOCAL_RANK,",
                  "# MASTER_ADDR, MASTER_PORT set per task) and passes the stop signal on to every one of them.")


def _job_command(opts: SubmitOptions) -> list[str]:
    """The supervisor's command: the user's, or srun running it as every task of the job."""
    if opts.tasks > 1:
        return srun_command(opts.command, opts.python)
    return list(opts.command)


_REQUEUE_COMMENT = ("# On the signal above (or near the time limit) the training saves, then the job requeues",
                    "# itself and resumes in the next allocation. Resubmitting this file is safe: it resumes too.")
_CHAIN_COMMENT = ("# --chain: this job first submits its follow-up (afterany: it starts when this one ends),",
                  "# then trains until the signal or the time limit and saves; the follow-up resumes. A link",
                  "# whose trial is finished exits at once. Resubmitting this file is safe: it resumes too.")
#: Seconds by which the chained script's --time-limit undercuts --time (the job started a bit earlier).
CHAIN_CLOCK_SLACK = 5


def _run_words(opts: SubmitOptions) -> list[str]:
    name = f"{opts.name}-${{SLURM_ARRAY_TASK_ID}}" if opts.array else opts.name
    run = [shlex.quote(opts.python), "-m", "unbroken", "run", "--name", f'"{name}"',
           "--preempt-signal", opts.signal or "USR2", "--margin", f"{opts.margin}s",
           "--max-restarts", str(opts.max_restarts)]
    if opts.trial is not None and not opts.array:
        run += ["--trial", str(opts.trial)]
    if opts.max_requeues is not None:
        run += ["--max-requeues", str(opts.max_requeues)]
    if opts.max_stalled is not None:
        run += ["--max-requeues-without-progress", str(opts.max_stalled)]
    if opts.chain:
        run += ["--chain"]
        if opts.time is not None:  # without scontrol in the job, its end is known only from here
            seconds = parse_slurm_time(opts.time)
            run += ["--time-limit", f"{seconds - min(CHAIN_CLOCK_SLACK, (seconds - opts.margin) / 2):g}s"]
    return run


def _chain_lines(opts: SubmitOptions) -> list[str]:
    """Submit the follow-up link (exit 3: the trial is finished, so this link ends at once)."""
    words = [shlex.quote(opts.python), "-m", "unbroken", "slurm", "chain-next", "--name", shlex.quote(opts.name),
             "--trial", str(opts.trial), "--script", shlex.quote(str(opts.script_path))]
    if opts.max_requeues is not None:
        words += ["--max-requeues", str(opts.max_requeues)]
    return [" ".join(words),
            'case $? in 0) ;; 3) exit 0 ;; *) echo "unbroken: no follow-up job; the chain ends after this one" >&2 ;; esac']


def submit(script_path: Path, extra: Sequence[str] = (), runner: Callable = run_tool) -> str:
    """Submit a script with sbatch; return the job id."""
    result = runner(["sbatch", "--parsable", *extra, str(script_path)])
    if result.returncode != 0:
        raise LaunchError(f"sbatch failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip().split(";")[0]


def sbatch_flags_for_script(signal: str, margin: int) -> list[str]:
    """The options that make a user's own sbatch script requeueable (given on the sbatch command line)."""
    return ["--requeue", "--open-mode=append", f"--signal=B:{signal}@{margin}"]


def check_user_script(path: Path) -> None:
    """A user's sbatch file must run its training under `unbroken run` (the one line to add)."""
    text = path.read_text()
    if not re.search(r"unbroken\s+run\b|-m\s+unbroken\s+run\b", text):
        raise ConfigError(
            f"{path} does not run its command under `unbroken run`. Change the line that starts the training, "
            "e.g. `python train.py` -> `exec unbroken run -- python train.py`, then submit again"
        )
