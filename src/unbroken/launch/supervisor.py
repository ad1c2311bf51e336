"""`unbroken run`: start a training command, stream and log its output, restart it on failure.

The supervisor joins (or creates) the trial, holds the trial's one-writer lease for its whole
life, records each child process as an attempt (and alone ends it), passes the trial identity
to the child through :class:`~unbroken.envvars.LaunchEnv` (``unbroken.init()`` inside needs no
arguments), forwards stop signals, and restarts crashed children. What to do after each attempt
is decided by the pure :func:`~unbroken.launch.decide.decide`; this module only does the I/O.

Exit status of the supervisor (for schedulers and scripts):
  0   the command completed
  75  stopped by a preemption or time limit after the child saved (resume by running again)
  1   gave up: out of restarts, or the command could not be started
  130 cancelled (a second Ctrl-C)

  3   gave up requeueing: --max-requeues-without-progress allocations in a row committed nothing new

Spot notices (``--spot``): a :class:`~unbroken.launch.spotwatch.SpotWatcher` polls the cloud's
metadata service; a notice is a stop request like a signal (the child gets the preempt signal,
children started later get the notice's time as their deadline).

Threads: everything runs on the main thread (signal handlers too); the other threads are the
log pumps of :class:`~unbroken.launch.streams.LogTee` and the spot watcher, whose callback only
stores the notice (the main thread acts on it within ``POLL_SECONDS``).
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import socket
import sys
from pathlib import Path
from typing import Callable

from ..checkpoint.store.trialstore import location_of, trial_store
from ..config import check_name, resolve_home, resolve_storage_root
from ..envvars import LaunchEnv
from ..errors import LaunchError, TrackingError
from ..paths import TrialPaths
from ..storage.locks import WriterLease
from ..tracking import Tracker, resolve_db_url
from ..tracking.guarded import GuardedWrites
from ..tracking.trials import join_trial
from .child import Child, spawn
from .clock import SYSTEM_CLOCK, Clock
from .decide import EXIT_CANCELLED, Decision, Facts, Policies, classify, decide, describe, made_progress
from .environment import Environment
from .progress import Ledger, load_ledger, save_ledger
from .spot import SpotNotice
from .spotwatch import SpotWatcher, spot_watcher
from .restart import Outcome
from .slurmtasks import is_srun
from .runconfig import RunConfig, derive_name
from .streams import LogTee

__all__ = ["Environment", "RunConfig", "Supervisor", "derive_name"]

#: How often the supervisor looks at its child and the grace deadline while waiting (seconds).
POLL_SECONDS = 0.2

Spawner = Callable[[list, dict, LogTee], Child]


class Supervisor:
    """Runs one trial's command until it completes, is preempted, or runs out of restarts.

    ``clock`` (time, monotonic, sleep) and ``spawn`` (``spawn(argv, env, tee) -> Child``) are
    injectable: tests drive the policies with a fake clock and a fake child. The constructor
    joins the trial; :meth:`run` takes the writer lease (raising
    :class:`~unbroken.errors.TrialBusy` when another live process holds it) and runs attempts.
    """

    def __init__(self, config: RunConfig, environment: Environment | None = None, *,
                 clock: Clock = SYSTEM_CLOCK, spawn: Spawner = spawn):
        self.config = config
        self.env = environment or Environment()
        self.clock, self._spawn = clock, spawn
        self.home = resolve_home(config.home)
        self.name = check_name(config.name or derive_name(config.command))
        self.db_url = resolve_db_url(config.db, self.home)
        self.tracker = Tracker(self.db_url)
        self.storage_root = resolve_storage_root(config.storage)
        self.trial = join_trial(self.tracker, self.name, fresh=config.fresh, number=config.trial,
                                command=shlex.join(config.command),
                                storage_of=location_of(self.home, self.name, self.storage_root))
        self.paths = TrialPaths(self.home, self.name, self.trial.number)
        self.store = trial_store(self.home, self.trial, self.storage_root)
        self.policies = Policies(config.stop, config.wait, config.margin, self.env.max_requeues, config.max_stalled)
        self.history: list[Outcome] = []
        self._index = GuardedWrites()  # index writes never decide an outcome
        self.lease = WriterLease(self.paths.writer_lock, f"trial {self.trial.ref}")
        self._stop_reason: str | None = None
        self._stop_signal = signal.Signals[config.preempt_signal]  # what a stop is passed on as
        self._interrupts = 0
        self._signals = 0
        self._child: Child | None = None
        self._kill_at: float | None = None
        self._tee: LogTee | None = None
        self._log_path: Path | None = None
        self._started_wall = clock.time()
        self._notice: SpotNotice | None = None  # set by the spot watcher's thread, acted on here
        self._notice_seen = False
        self._ledger = Ledger()

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> int:
        """Take the trial's lease, run attempts until done, return the supervisor's exit status.

        Blocks up to ``config.wait_for_trial`` seconds for the lease, then for the whole run.
        """
        try:
            wait = None if math.isinf(self.config.wait_for_trial) else self.config.wait_for_trial
            self.lease.acquire(wait, sleep=self.clock.sleep, clock=self.clock.monotonic)
            previous = self._install_handlers()
            watcher = self._start_spot_watcher()
            try:
                self._index("close lost attempts", self.tracker.close_lost_attempts, self.trial.id)
                return self._loop()
            finally:
                if watcher is not None:
                    watcher.stop()
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                self.lease.release()
        finally:
            self.tracker.close()

    def _loop(self) -> int:
        self._say(f"unbroken: trial {self.trial.ref} (home {self.home})")
        while True:
            decision = self._attempt()
            if decision.finished:
                return self._finish(decision)
            self._say(f"unbroken: {decision.message} [log: {self._log_path}]")
            if self._sleep_unless_stopped(decision.delay):
                self._index("update the trial", self.tracker.update_trial, self.trial.id, status="cancelled",
                            message="stopped while waiting to restart")
                self._say(f"unbroken: trial {self.trial.ref} stopped while waiting to restart [log: {self._log_path}]")
                return EXIT_CANCELLED

    def _attempt(self) -> Decision:
        """Run one attempt; record its end (the supervisor alone ends it); return what comes next."""
        steps_before = self._newest_steps()
        # The row names this process until the child runs: if we die before, the attempt is lost.
        attempt = self._start_attempt()
        self._log_path = self.paths.attempt_log(attempt.number)
        self._index("record the log", self.tracker.update_attempt, attempt.id, log_path=str(self._log_path))
        started = self.clock.monotonic()
        code = self._run_child(attempt.id, attempt.number)
        seconds = self.clock.monotonic() - started
        steps_after = self._newest_steps()
        progressed = made_progress(steps_before, steps_after, seconds, self.config.reset_after)
        outcome = classify(code, progressed=progressed, seconds=seconds, stop_requested=self._stop_reason is not None,
                           interrupts=self._interrupts)
        self.history.append(outcome)
        if outcome.kind == "preempted" and self.env.requeues() is not None:
            self._count_allocation(steps_after)
        decision = decide(outcome, self.history, self.policies, self._facts())
        self._index("end the attempt", self.tracker.end_attempt, attempt.id, decision.end_reason,
                    exit_code=outcome.exit_code, signal=outcome.signal, message=self._message(attempt.id, outcome))
        return decision

    def _start_attempt(self):
        """The attempt's row; the one index write the supervisor cannot do without (the child joins it)."""
        try:
            return self.tracker.start_attempt(self.trial.id, **self.env.attempt_fields())
        except TrackingError as exc:
            raise LaunchError(f"cannot record a new attempt of {self.trial.ref} in the tracking index: {exc}") from exc

    def _run_child(self, attempt_id: int, number: int) -> int:
        """Start the child, wait for it (forwarding stops, killing after the grace), return its status."""
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        self._tee = LogTee(self._log_path)
        self._tee.write_line(f"unbroken: attempt {number} of {self.trial.ref} on {socket.gethostname()}: "
                             f"{shlex.join(self.config.command)}")
        try:
            command = self.config.child_command(self.paths.logs / f"attempt-{number}-ranks")
            self._child = self._spawn(command, self._launch_env(attempt_id).merged_into(os.environ), self._tee)
        except LaunchError as exc:
            self._tee.close()
            self._tee = None
            self._fail_to_start(attempt_id, exc)
            raise
        self._index("record the pid", self.tracker.update_attempt, attempt_id, pid=self._child.pid)  # + its start time
        if self._stop_reason is not None and self._kill_at is None:  # it arrived before there was a child
            self._forward(self._stop_signal)
        try:
            return self._wait_child()
        finally:
            self._child.kill_group()  # no orphans: whatever the command left behind goes too
            self._tee.close()
            self._tee, self._child, self._kill_at = None, None, None

    def _wait_child(self) -> int:
        while True:
            code = self._child.wait(POLL_SECONDS)
            if code is not None:
                return code
            self._act_on_notice()
            if self._kill_at is not None and self.clock.monotonic() >= self._kill_at:
                self._say(f"unbroken: the command did not stop within {self.config.grace:g} s; killing it")
                self._child.kill_group()
                self._kill_at = math.inf  # killed once; wait for it to be reaped

    def _fail_to_start(self, attempt_id: int, exc: LaunchError) -> None:
        self._index("end the attempt", self.tracker.end_attempt, attempt_id, "crashed", message=str(exc))
        self._index("update the trial", self.tracker.update_trial, self.trial.id, status="failed", message=str(exc))

    def _finish(self, decision: Decision) -> int:
        if decision.requeue:
            before = self._signals  # Slurm's signal may come while `scontrol requeue` still runs
            self.env.requeue(decision.message, self._say, lambda timeout: self._wait_for_signal(timeout, since=before))
        self._index("update the trial", self.tracker.update_trial, self.trial.id, status=decision.trial_status,
                    message=_trial_message(decision))
        where = f" [log: {self._log_path}]" if self._log_path else ""
        if decision.trial_status == "preempted":
            self._say(f"unbroken: trial {self.trial.ref} stopped ({decision.message}); run the same command again "
                      f"to resume{where}")
        else:
            self._say(f"unbroken: trial {self.trial.ref} {decision.message}{where}")
        return decision.exit_code

    def _facts(self) -> Facts:
        return Facts(now=self.clock.time(), deadline=self._deadline(), stop_reason=self._stop_reason,
                     requeues=self.env.requeues(), stalled=self._ledger.stalled, best_steps=self._ledger.best_steps)

    def _count_allocation(self, steps_after: int) -> None:
        """This allocation ends (preempted, requeueable): update the trial's progress ledger."""
        path = self.paths.requeue_ledger
        self._ledger = load_ledger(path).after(steps_after)
        try:
            save_ledger(path, self._ledger)
        except OSError as exc:
            self._say(f"unbroken: cannot record progress in {path}: {exc}")

    # -- spot notices --------------------------------------------------------------------------
    def _start_spot_watcher(self) -> SpotWatcher | None:
        if self.config.spot is None:
            return None
        watcher = spot_watcher(self.config.spot, self._on_notice, interval=self.config.spot_interval,
                               clock=self.clock, log=self._say_threadsafe)
        watcher.start()
        return watcher

    def _on_notice(self, notice: SpotNotice) -> None:
        """The watcher's thread: only store the notice; :meth:`_act_on_notice` (main thread) acts."""
        self._notice = notice

    def _act_on_notice(self) -> None:
        """Main thread: a new spot notice becomes a stop request, passed on as the preempt signal."""
        notice = self._notice
        if notice is None or self._notice_seen:
            return
        self._notice_seen = True
        left = notice.deadline - self.clock.time()
        self._say(f"unbroken: {notice.describe()}, {left:.0f} s from now; asking the command to save and stop")
        if self._stop_reason is None:
            self._stop_reason = notice.describe()
        if self._child is not None and self._kill_at is None:
            self._forward(self._stop_signal)

    # -- signals -------------------------------------------------------------------------------
    def _install_handlers(self) -> dict:
        sigs = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.Signals[self.config.preempt_signal]}
        return {sig: signal.signal(sig, self._on_signal) for sig in sigs}

    def _on_signal(self, signum: int, _frame) -> None:
        """Signal handler (main thread): record the stop request and pass it on to the child."""
        self._signals += 1
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts > 1 and self._child is not None:
                self._child.kill_group()  # second Ctrl-C: no more waiting
                return
        if self._stop_reason is None:
            self._stop_reason = f"signal {signal.Signals(signum).name}"
            self._stop_signal = signal.SIGTERM if signum == signal.SIGHUP else signal.Signals(signum)
        if self._child is not None:
            self._forward(signal.SIGTERM if signum == signal.SIGHUP else signum)

    def _forward(self, sig: int) -> None:
        if self.config.is_group or is_srun(self.config.command):
            # torchrun and srun kill their workers on TERM: a group gets the preempt signal
            sig = signal.Signals[self.config.preempt_signal]
        self._child.send_signal(sig)
        if self._kill_at is None:
            self._kill_at = self.clock.monotonic() + self.config.grace

    def _wait_for_signal(self, timeout: float, since: int | None = None) -> bool:
        """Block up to ``timeout`` seconds until the supervisor has received a signal after the
        ``since``-th one (default: from now on); True if one came."""
        seen, end = self._signals if since is None else since, self.clock.monotonic() + timeout
        while self._signals == seen and self.clock.monotonic() < end:
            self.clock.sleep(min(0.1, max(0.0, end - self.clock.monotonic())))
        return self._signals != seen

    def _sleep_unless_stopped(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless a stop (or a spot notice) arrives; True if one did."""
        end = self.clock.monotonic() + seconds
        while self._stop_reason is None and self.clock.monotonic() < end:
            self.clock.sleep(min(0.1, max(0.0, end - self.clock.monotonic())))
            self._act_on_notice()
        return self._stop_reason is not None

    # -- helpers -------------------------------------------------------------------------------
    def _launch_env(self, attempt_id: int) -> LaunchEnv:
        deadline = self._deadline()
        return LaunchEnv(home=self.home, experiment=self.name, trial=self.trial.number, attempt_id=attempt_id,
                         preempt_signal=self.config.preempt_signal, storage=self.storage_root, db=self.db_url,
                         deadline=None if deadline is None else deadline - self.config.margin)

    def _deadline(self) -> float | None:
        """When the job's time runs out: the environment's end (Slurm), else the time limit; a spot
        notice's time when that is earlier."""
        limit = None if self.config.time_limit is None else self._started_wall + self.config.time_limit
        ends = [t for t in (self.env.deadline() or limit, self._notice and self._notice.deadline) if t]
        return min(ends, default=None)

    def _message(self, attempt_id: int, outcome: Outcome) -> str:
        """How the attempt ended; for a group, after what its launcher recorded (which rank failed, why)."""
        text = describe(outcome)
        if not self.config.is_group or outcome.kind != "crashed":
            return text
        attempt = self._index("read the attempt", self.tracker.attempt, attempt_id)
        return f"{attempt.message} ({text})" if attempt is not None and attempt.message else text

    def _newest_steps(self) -> int:
        return max((m.steps_completed for m in self.store.list()), default=-1)

    def _say_threadsafe(self, text: str) -> None:
        """A message from another thread: to stderr only (the log tee belongs to the main thread)."""
        print(text, file=sys.stderr, flush=True)

    def _say(self, text: str) -> None:
        """A supervisor message: to stderr and the current (or last) attempt log."""
        if self._tee is not None:
            self._tee.write_line(text)
            return
        print(text, file=sys.stderr, flush=True)
        if self._log_path is not None and self._log_path.parent.exists():
            with open(self._log_path, "a") as log:
                log.write(text + "\n")


def _trial_message(decision: Decision) -> str:
    return f"stopped: {decision.message}" if decision.trial_status == "preempted" else decision.message
