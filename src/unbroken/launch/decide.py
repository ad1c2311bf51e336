"""What the supervisor does after an attempt ends: a pure function of the outcome, history and clock.

:func:`classify` turns a child's exit into an :class:`~unbroken.launch.restart.Outcome`;
:func:`decide` turns the outcome into a :class:`Decision`: finish (completed, preempted with or
without a requeue, timed out, cancelled, given up) or restart after a delay. Neither reads a
clock, the disk or the tracking index: what they need from the world arrives in :class:`Facts`,
so every policy is testable without processes or sleeps.
"""

from __future__ import annotations

import dataclasses
import signal
from typing import Sequence

from ..config import EXIT_PREEMPTED
from ..tracking.status import trial_status_for
from .restart import Outcome, StopPolicy, WaitPolicy

EXIT_COMPLETED, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 130
#: Gave up requeueing: K allocations in a row committed no checkpoint past the best one.
EXIT_NO_PROGRESS = 3
#: The default of ``--max-requeues-without-progress``.
MAX_STALLED_ALLOCATIONS = 3


@dataclasses.dataclass(frozen=True)
class Policies:
    """The supervisor's rules: restarts, the save margin before a deadline, Slurm requeues."""

    stop: StopPolicy
    wait: WaitPolicy
    margin: float = 60.0
    max_requeues: int | None = None  # None: requeue without limit (where requeueing is possible)
    max_stalled: int | None = MAX_STALLED_ALLOCATIONS  # allocations in a row without progress; None: no limit


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the supervisor knew when the attempt ended (all read by the caller, none by decide)."""

    now: float  # wall clock (Unix seconds)
    deadline: float | None = None  # when the job's time runs out: time limit or Slurm end time
    stop_reason: str | None = None  # a stop signal the supervisor received ("signal SIGTERM")
    requeues: int | None = None  # None: cannot requeue here; else how often this job was requeued
    stalled: int = 0  # allocations in a row, this one included, that committed nothing past the best step
    best_steps: int = -1  # the newest committed step any allocation of the trial ended with


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do next. ``action`` is ``"finish"`` (exit with ``exit_code``) or ``"restart"`` (after ``delay``).

    ``end_reason`` is the ended attempt's; ``trial_status`` the trial's when finishing (None when
    restarting: the next attempt makes it running), from tracking's one table of end reasons,
    except "failed" when the supervisor gives up; ``requeue`` asks the environment to requeue the
    job before exiting.
    """

    action: str
    end_reason: str
    exit_code: int | None = None
    trial_status: str | None = None
    delay: float = 0.0
    requeue: bool = False
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.action == "finish"


def classify(code: int, *, progressed: bool, seconds: float, stop_requested: bool, interrupts: int) -> Outcome:
    """The outcome of an attempt whose child exited with ``code`` (negative: killed by ``-code``)."""
    signum = -code if code < 0 else None
    exit_code = code if code >= 0 else None
    if code == 0:
        kind = "completed"
    elif interrupts > 1:
        kind = "cancelled"  # a second Ctrl-C: the user wants it gone, not resumed
    elif code == EXIT_PREEMPTED or stop_requested:
        # Asked to stop: whether it saved (75) or died first (e.g. still starting up), the trial
        # resumes from its newest committed checkpoint, so this is a preemption.
        kind = "preempted"
    else:
        kind = "crashed"
    return Outcome(kind, progressed, exit_code, signum, seconds)


def made_progress(steps_before: int, steps_after: int, seconds: float, reset_after: float | None) -> bool:
    """An attempt progressed if it committed a newer checkpoint, or ran ``reset_after`` seconds."""
    return steps_after > steps_before or (reset_after is not None and seconds >= reset_after)


def decide(outcome: Outcome, history: Sequence[Outcome], policies: Policies, facts: Facts) -> Decision:
    """The next step after ``outcome`` (already the last entry of ``history``)."""
    attempts = len(history)
    if outcome.kind == "completed":
        return _finish("completed", EXIT_COMPLETED, f"completed after {attempts} attempt(s)")
    if outcome.kind == "cancelled":
        return _finish("cancelled", EXIT_CANCELLED, "cancelled")
    if outcome.kind == "preempted":
        return _preempted(outcome, policies, facts)
    if policies.stop.should_stop(history):
        return Decision("finish", "crashed", EXIT_FAILED, "failed",
                        message=f"out of restarts ({policies.stop!r}): last exit {describe(outcome)}")
    delay = policies.wait.delay(history)
    return Decision("restart", "crashed", delay=delay,
                    message=f"attempt {attempts} crashed ({describe(outcome)}); restarting in {delay:g} s")


def _preempted(outcome: Outcome, policies: Policies, facts: Facts) -> Decision:
    # Timeout vs preemption is decided from the clock, not from which signal came: the child was
    # asked to stop `margin` seconds before the deadline, so a stop near it is the time limit.
    timed_out = (facts.stop_reason is None and facts.deadline is not None
                 and facts.now >= facts.deadline - policies.margin - 1)
    reason = "time limit" if timed_out else (facts.stop_reason or "the command's own stop request")
    if outcome.exit_code != EXIT_PREEMPTED:
        reason += f"; it ended ({describe(outcome)}) without a final save: it resumes from its newest checkpoint"
    if facts.requeues is not None and policies.max_stalled is not None and facts.stalled >= policies.max_stalled:
        return _no_progress(timed_out, policies, facts)
    requeue = facts.requeues is not None and (policies.max_requeues is None or facts.requeues < policies.max_requeues)
    if facts.requeues is not None and not requeue:
        reason += (f"; the job was requeued {facts.requeues} times (--max-requeues {policies.max_requeues}): "
                   "not requeueing again; resubmit to go on")
    return _finish("timed_out" if timed_out else "preempted", EXIT_PREEMPTED, reason, requeue=requeue)


def _no_progress(timed_out: bool, policies: Policies, facts: Facts) -> Decision:
    """Requeueing again would repeat the same work: stop with status "failed" and EXIT_NO_PROGRESS."""
    best = f" past step {facts.best_steps}" if facts.best_steps >= 0 else ""
    message = (f"no progress: {facts.stalled} allocations in a row committed no checkpoint{best} "
               f"(--max-requeues-without-progress {policies.max_stalled}); not requeueing again. Check that "
               "checkpoints are kept between allocations and that a save fits in the margin, then resubmit")
    return Decision("finish", "timed_out" if timed_out else "preempted", EXIT_NO_PROGRESS, "failed", message=message)


def _finish(end_reason: str, exit_code: int, message: str, requeue: bool = False) -> Decision:
    return Decision("finish", end_reason, exit_code, trial_status_for(end_reason), requeue=requeue, message=message)


def describe(outcome: Outcome) -> str:
    """``"exit status 3"`` or ``"killed by SIGKILL"``."""
    if outcome.signal is not None:
        try:
            return f"killed by {signal.Signals(outcome.signal).name}"
        except ValueError:
            return f"killed by signal {outcome.signal}"
    return f"exit status {outcome.exit_code}"
