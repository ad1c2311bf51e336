"""`slurm submit --chain`: continue a trial through a chain of jobs where `scontrol requeue` cannot be used.

Inside a container without Slurm's client commands, or on a cluster that refuses requeues, a
job cannot requeue itself. A chained job instead submits its follow-up *at its start*, with
``--dependency=afterany:<this job>``, running the same sbatch script: the follow-up starts when
this job ends, however it ends, and submits the next link before it trains. The chain is driven
from inside the jobs, so ``sbatch`` must be reachable there (``scontrol`` need not be); the link
number travels as ``$UNBROKEN_CHAIN_LINK``.

A link whose trial is finished (completed, failed - out of restarts or out of progress -, or
cancelled) submits nothing and exits at once, which ends the chain. ``--max-requeues M`` allows
M follow-ups. Called from the job script's main thread; blocks on ``sbatch`` (60 s at most).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from ..envvars import ENV_CHAIN_LINK
from .slurm import JobInfo, run_tool, submit

#: Trial statuses after which a chain does not go on.
FINISHED = ("completed", "failed", "cancelled")


@dataclasses.dataclass(frozen=True)
class LinkDecision:
    """What a link does at its start: ``go`` (train; ``follow_up`` is the job id submitted, if any)."""

    go: bool
    message: str
    follow_up: str | None = None


def plan_link(status: str | None, link: int, max_requeues: int | None) -> LinkDecision | None:
    """Pure: stop the chain (a LinkDecision with ``go=False``), train without a follow-up, or None: submit one."""
    if status in FINISHED:
        return LinkDecision(False, f"the trial is {status}; the chain ends here")
    if max_requeues is not None and link > max_requeues:
        return LinkDecision(True, f"link {link}: --max-requeues {max_requeues} spent; no follow-up job")
    return None


def start_link(status: str | None, job: JobInfo, script: Path, max_requeues: int | None,
               runner: Callable = run_tool) -> LinkDecision:
    """At a link's start: decide (:func:`plan_link`) and submit the follow-up job when the chain goes on.

    Raises :class:`~unbroken.errors.LaunchError` when sbatch fails (the caller trains anyway).
    """
    link = max(job.chain_link, 1)
    planned = plan_link(status, link, max_requeues)
    if planned is not None:
        return planned
    follow_up = submit(script, [f"--dependency=afterany:{job.job_id}", f"--export=ALL,{ENV_CHAIN_LINK}={link + 1}"],
                       runner)
    return LinkDecision(True, f"link {link} (job {job.job_id}): follow-up job {follow_up} continues the trial "
                              "when this one ends", follow_up)
