"""`unbroken run`: start a training command, stream and log its output, restart it on failure.

The supervisor creates or joins the trial, records each child process as an attempt, passes
the trial identity through environment variables (``unbroken.init()`` inside needs no
arguments), forwards stop signals, and restarts crashed children under a restart policy.

Exit status of the supervisor (for schedulers and scripts):
  0   the command completed
  75  stopped by a preemption or time limit after the child saved (resume by running again)
  1   gave up: out of restarts, or the command could not be started
  130 cancelled (a second Ctrl-C)
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from ..checkpoint import CheckpointStore
from ..config import (ENV_ATTEMPT, ENV_DEADLINE, ENV_EXPERIMENT, ENV_HOME, ENV_PREEMPT_SIGNAL, ENV_TRIAL,
                      EXIT_PREEMPTED, check_name, resolve_home, trial_dir)
from ..errors import ConfigError, LaunchError
from ..runtime.preempt import parse_signal
from ..storage import LocalStorage
from ..tracking import Tracker, Trial
from .restart import Outcome, StopPolicy, WaitPolicy, exponential_backoff, max_failures
from .streams import LogTee

EXIT_COMPLETED, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 130


@dataclasses.dataclass
class RunConfig:
    """Everything `unbroken run` needs; see the CLI for the meaning of each option."""

    command: Sequence[str]
    name: str | None = None
    home: str | os.PathLike | None = None
    fresh: bool = False
    trial: int | None = None  # join this trial number of the experiment (created if missing)
    stop: StopPolicy = dataclasses.field(default_factory=lambda: max_failures(3))
    wait: WaitPolicy = dataclasses.field(default_factory=exponential_backoff)
    grace: float = 60.0
    preempt_signal: str = "USR2"
    time_limit: float | None = None  # seconds from start; the child is asked to stop `margin` before
    margin: float = 60.0
    reset_after: float | None = None  # an attempt this long counts as progress (own checkpointing)

    def __post_init__(self):
        if not self.command:
            raise ConfigError("unbroken run needs a command: unbroken run -- python train.py")
        if self.grace < 0 or self.margin < 0:
            raise ConfigError("--grace and --margin must not be negative")
        if self.time_limit is not None and self.time_limit <= self.margin:
            raise ConfigError(f"--time-limit ({self.time_limit:g} s) must be longer than the save margin "
                              f"({self.margin:g} s), or the job would stop before it starts")
        self.preempt_signal = parse_signal(self.preempt_signal).name


@dataclasses.dataclass
class Environment:
    """What the place the supervisor runs in adds: a deadline, attempt fields, an action on stop.

    The base class is a plain machine; the Slurm one (launch.slurm) reads the job's end time,
    records job ids and requeues the job after a preemption.
    """

    def deadline(self) -> float | None:
        return None

    def attempt_fields(self) -> dict:
        return {"launcher": "unbroken-run"}

    def on_preempted(self, reason: str, log: Callable[[str], None]) -> int:
        """Called after the child saved and stopped; returns the supervisor's exit status."""
        return EXIT_PREEMPTED


def derive_name(command: Sequence[str]) -> str:
    """An experiment name from a command: the first ``*.py`` argument's stem, else the program's name."""
    words = [Path(w).name for w in command]
    pick = next((w[:-3] for w in words if w.endswith(".py")), None) or words[0]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", pick).strip("-._") or "run"
    return name[:128]


class Supervisor:
    """Runs one trial's command until it completes, is preempted, or runs out of restarts."""

    def __init__(self, config: RunConfig, environment: Environment | None = None):
        self.config = config
        self.env = environment or Environment()
        self.home = resolve_home(config.home)
        self.tracker = Tracker.in_home(self.home)
        self.name = check_name(config.name or derive_name(config.command))
        self.trial = self._trial()
        self.trial_dir = trial_dir(self.home, self.name, self.trial.number)
        self.store = CheckpointStore(LocalStorage(self.trial_dir / "checkpoints"))
        self.history: list[Outcome] = []
        self._stop_reason: str | None = None
        self._interrupts = 0
        self._child: subprocess.Popen | None = None
        self._kill_at: float | None = None
        self._tee: LogTee | None = None
        self._log_path: Path | None = None
        self._started_wall = time.time()

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> int:
        """Run attempts until done; return the supervisor's exit status."""
        previous = self._install_handlers()
        try:
            return self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.tracker.close()

    def _loop(self) -> int:
        self._say(f"unbroken: trial {self.trial.ref} (home {self.home})")
        while True:
            outcome, log_path = self._attempt()
            self.history.append(outcome)
            if outcome.kind == "completed":
                return self._finish("completed", EXIT_COMPLETED, f"completed after {len(self.history)} attempt(s)")
            if outcome.kind == "preempted":
                return self._preempted(log_path)
            if outcome.kind == "cancelled":
                return self._finish("cancelled", EXIT_CANCELLED, "cancelled", log_path)
            if self.config.stop.should_stop(self.history):
                return self._finish("failed", EXIT_FAILED,
                                    f"out of restarts ({self.config.stop!r}): last exit {_describe(outcome)}", log_path)
            delay = self.config.wait.delay(self.history)
            self._say(f"unbroken: attempt {len(self.history)} crashed ({_describe(outcome)}); "
                      f"restarting in {delay:g} s [log: {log_path}]")
            if self._sleep(delay):
                return self._finish("cancelled", EXIT_CANCELLED, "stopped while waiting to restart", log_path)

    def _attempt(self) -> tuple[Outcome, Path]:
        steps_before = self._newest_steps()
        logs = self.trial_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        fields = self.env.attempt_fields()
        attempt = self.tracker.start_attempt(self.trial.id, pid=None, **fields)
        log_path = logs / f"attempt-{attempt.number}.log"
        self.tracker.update_attempt(attempt.id, log_path=str(log_path), launcher=fields.get("launcher", "unbroken-run"))
        started = time.monotonic()
        code = self._run_child(attempt.id, attempt.number, log_path)
        seconds = time.monotonic() - started
        progressed = self._newest_steps() > steps_before or (
            self.config.reset_after is not None and seconds >= self.config.reset_after)
        outcome = self._classify(code, progressed, seconds)
        self.tracker.end_attempt(attempt.id, _END_REASON[outcome.kind], exit_code=outcome.exit_code,
                                 signal=outcome.signal, message=_describe(outcome))
        return outcome, log_path

    def _run_child(self, attempt_id: int, number: int, log_path: Path) -> int:
        env = self._child_env(attempt_id)
        self._log_path = log_path
        self._tee = LogTee(log_path)
        self._tee.write_line(f"unbroken: attempt {number} of {self.trial.ref} on {socket.gethostname()}: "
                             f"{shlex.join(self.config.command)}")
        try:
            self._child = subprocess.Popen(list(self.config.command), env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            self._tee.close()
            raise LaunchError(f"cannot start {self.config.command[0]!r}: {exc.strerror or exc}") from exc
        self.tracker.update_attempt(attempt_id, pid=self._child.pid)
        self._tee.pump(self._child.stdout, 1)
        self._tee.pump(self._child.stderr, 2)
        if self._stop_reason:  # a stop arrived while we were starting it
            self._forward(parse_signal(self.config.preempt_signal))
        code = self._wait_child()
        _kill_group(self._child.pid)  # no orphans: whatever the command left behind goes too
        self._tee.close()
        self._tee = None
        self._child = None
        return code

    def _wait_child(self) -> int:
        while True:
            try:
                return self._child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if self._kill_at is not None and time.monotonic() >= self._kill_at:
                    self._say(f"unbroken: the command did not stop within {self.config.grace:g} s; killing it")
                    _kill_group(self._child.pid)
                    self._kill_at = None

    def _classify(self, code: int, progressed: bool, seconds: float) -> Outcome:
        signum = -code if code < 0 else None
        exit_code = code if code >= 0 else None
        if code == 0:
            kind = "completed"
        elif self._interrupts > 1:
            kind = "cancelled"  # a second Ctrl-C: the user wants it gone, not resumed
        elif code == EXIT_PREEMPTED or self._stop_reason is not None:
            # Asked to stop: whether it saved (75) or died first (e.g. still starting up), the
            # trial resumes from its newest committed checkpoint, so this is a preemption.
            kind = "preempted"
        else:
            kind = "crashed"
        return Outcome(kind, progressed, exit_code, signum, seconds)

    def _preempted(self, log_path: Path) -> int:
        deadline = self.env.deadline() or self._time_limit_deadline()
        # Timeout vs preemption is decided from the clock, not from which signal came: the child
        # was asked to stop `margin` seconds before the limit.
        timed_out = (self._stop_reason is None and deadline is not None
                     and time.time() >= deadline - self.config.margin - 1)
        reason = "time limit" if timed_out else (self._stop_reason or "the command's own stop request")
        last = self.history[-1]
        if last.exit_code != EXIT_PREEMPTED:
            reason += f"; it ended ({_describe(last)}) without a final save: it resumes from its newest checkpoint"
        self.tracker.update_trial(self.trial.id, status="preempted", message=f"stopped: {reason}")
        if timed_out:
            attempt = self.tracker.attempts(self.trial.id)[-1]
            self.tracker.end_attempt(attempt.id, "timed_out", exit_code=EXIT_PREEMPTED, message="saved at the time limit")
        status = self.env.on_preempted(reason, self._say)
        self._say(f"unbroken: trial {self.trial.ref} stopped ({reason}); run the same command again to "
                  f"resume [log: {log_path}]")
        return status

    def _finish(self, status: str, code: int, message: str, log_path: Path | None = None) -> int:
        self.tracker.update_trial(self.trial.id, status=status, message=message)
        where = f" [log: {log_path}]" if log_path else ""
        self._say(f"unbroken: trial {self.trial.ref} {message}{where}")
        return code

    # -- signals -------------------------------------------------------------------------------
    def _install_handlers(self) -> dict:
        sigs = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, parse_signal(self.config.preempt_signal)}
        return {sig: signal.signal(sig, self._on_signal) for sig in sigs}

    def _on_signal(self, signum: int, _frame) -> None:
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts > 1 and self._child is not None:
                _kill_group(self._child.pid)  # second Ctrl-C: no more waiting
                return
        if self._stop_reason is None:
            self._stop_reason = f"signal {signal.Signals(signum).name}"
        forward = signal.SIGTERM if signum == signal.SIGHUP else signum
        if self._child is not None:
            self._forward(signal.Signals(forward))

    def _forward(self, sig: signal.Signals) -> None:
        try:
            os.kill(self._child.pid, sig)
        except ProcessLookupError:
            return
        if self._kill_at is None:
            self._kill_at = time.monotonic() + self.config.grace

    # -- helpers -------------------------------------------------------------------------------
    def _trial(self) -> Trial:
        command = shlex.join(self.config.command)
        if self.config.trial is not None:
            return self._pinned_trial(command)
        if not self.config.fresh:
            try:
                trial = self.tracker.trial(self.name)
                if trial.command != command:
                    self.tracker.update_trial(trial.id, command=command)
                return trial
            except LookupError:
                pass
        return self.tracker.create_trial(self.name, command=command,
                                         storage_of=lambda n: trial_dir(self.home, self.name, n) / "checkpoints")

    def _pinned_trial(self, command: str) -> Trial:
        try:
            return self.tracker.trial(self.name, self.config.trial)
        except LookupError:
            trial = self.tracker.create_trial(self.name, command=command,
                                              storage_of=lambda n: trial_dir(self.home, self.name, n) / "checkpoints")
            if trial.number != self.config.trial:
                raise ConfigError(f"trial {self.name}/{self.config.trial} does not exist (the next new one is "
                                  f"{trial.ref}); drop --trial to resume the newest") from None
            return trial

    def _child_env(self, attempt_id: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update({ENV_HOME: str(self.home), ENV_EXPERIMENT: self.name, ENV_TRIAL: str(self.trial.number),
                    ENV_ATTEMPT: str(attempt_id), ENV_PREEMPT_SIGNAL: self.config.preempt_signal})
        deadline = self.env.deadline() or self._time_limit_deadline()
        if deadline is not None:
            env[ENV_DEADLINE] = f"{deadline - self.config.margin:.3f}"
        else:
            env.pop(ENV_DEADLINE, None)
        return env

    def _time_limit_deadline(self) -> float | None:
        return None if self.config.time_limit is None else self._started_wall + self.config.time_limit

    def _newest_steps(self) -> int:
        return max((m.steps_completed for m in self.store.list()), default=-1)

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless a stop arrives; True if it did."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self._stop_reason is not None:
                return True
            time.sleep(min(0.1, end - time.monotonic()) if end > time.monotonic() else 0)
        return self._stop_reason is not None

    def _say(self, text: str) -> None:
        """A supervisor message: to stderr and the current (or last) attempt log."""
        if self._tee is not None:
            self._tee.write_line(text)
            return
        print(text, file=sys.stderr, flush=True)
        if self._log_path is not None:
            with open(self._log_path, "a") as log:
                log.write(text + "\n")


_END_REASON = {"completed": "completed", "crashed": "crashed", "preempted": "preempted", "cancelled": "cancelled"}


def _describe(outcome: Outcome) -> str:
    if outcome.signal is not None:
        try:
            return f"killed by {signal.Signals(outcome.signal).name}"
        except ValueError:
            return f"killed by signal {outcome.signal}"
    return f"exit status {outcome.exit_code}"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
