"""The Slurm executor: each segment is one job, rendered by ``unbroken slurm submit``'s own
:func:`~unbroken.launch.slurm.render_script` (``--requeue``, the stop signal, ``exec unbroken run
--trial K``), so a job that reaches its time limit or is preempted saves and requeues itself as
a single trial does. The segment's directive is exported in the script.

The handle is the job id; ``poll`` asks ``scontrol show job``. Jobs outlive the driver: a
restarted driver polls the same job ids again. A job Slurm no longer knows counts as finished
when its segment wrote a result, else as lost (the driver starts the segment again).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Callable

from ...launch.slurm import SubmitOptions, render_script, run_tool, submit
from ..protocol import segment_result_path
from .base import LOST, Executor, SegmentJob

_RUNNING = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
            "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED"}


class SlurmExecutor(Executor):
    """Options are ``unbroken slurm submit``'s: time, partition, gres, cpus_per_task, mem, account, qos,
    sbatch_args, margin (seconds), signal, max_requeues."""

    name = "slurm"

    def __init__(self, runner: Callable = run_tool, **options: Any):
        allowed = {"time", "partition", "gres", "cpus_per_task", "mem", "account", "qos", "sbatch_args", "margin",
                   "signal", "max_requeues"}
        unknown = set(options) - allowed
        if unknown:
            raise TypeError(f"unknown options {sorted(unknown)}; known: {sorted(allowed)}")
        self.options, self.runner = options, runner

    def launch(self, job: SegmentJob) -> dict[str, Any]:
        job.logs.mkdir(parents=True, exist_ok=True)
        env = dict(job.env)
        opts = SubmitOptions(command=list(job.command), name=job.sweep, home=job.home, logs=job.logs, trial=job.trial,
                             storage=env.pop("UNBROKEN_STORAGE", None), db=env.pop("UNBROKEN_DB", None),
                             max_restarts=job.max_failures, **self.options)
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items() if k != "UNBROKEN_HOME")
        script = render_script(opts).replace("\nexec ", f"\ncd {shlex.quote(job.cwd or '.')}\n{exports}exec ", 1)
        path = job.logs / f"segment-{job.segment}.sbatch"
        path.write_text(script)
        job_id = submit(path, [f"--job-name={job.sweep}-{job.trial}"], self.runner)
        return {"executor": self.name, "job_id": job_id,
                "result": str(segment_result_path(job.logs, job.segment))}

    def poll(self, handle: dict[str, Any]) -> int | str | None:
        result = self.runner(["scontrol", "show", "job", "-o", str(handle.get("job_id"))])
        state = re.search(r"\bJobState=(\S+)", result.stdout or "")
        if result.returncode != 0 or state is None:
            return 0 if handle.get("result") and _exists(handle["result"]) else LOST
        if state.group(1) in _RUNNING:
            return None
        code = re.search(r"\bExitCode=(\d+):(\d+)", result.stdout)
        return 0 if state.group(1) == "COMPLETED" else int(code.group(1)) if code and int(code.group(1)) else 1

    def stop(self, handle: dict[str, Any]) -> None:
        self.runner(["scancel", "--batch", "--signal=TERM", str(handle.get("job_id"))])


def _exists(path: str) -> bool:
    return Path(path).exists()
