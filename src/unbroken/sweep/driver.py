"""The sweep driver: creates trials, runs their segments on an executor, applies the scheduler.

One driver per sweep (a lock file in ``<home>/sweeps/<name>/``; a second one gets TrialBusy).
Its loop, in the main thread:

1. *collect*: segments that ended; their results (``segment-<k>.json``) are written into the
   sweep's rows at once; a trial pauses, ends (done), or fails (out of restarts);
2. *decide*: each paused trial, in order of trial number, asks the scheduler: continue (maybe
   from a donor's checkpoint with a new config), stop, or wait;
3. *create*: new trials from the searcher while there is a free slot; each is an ordinary
   unbroken trial of the experiment named like the sweep, with its config as hparams;
4. *launch*: first every pending exploit copy (so no donor runs on before it is copied), then
   ready segments, lowest trial number first, up to ``max_concurrent``.

Every decision is stored before it is acted on, so the driver may be killed at any moment: the
next one reads the rows, relaunches segments whose processes are gone (the trials resume from
their checkpoints), and makes the same decisions again (schedulers are pure). A SIGINT or
SIGTERM asks every running trial to save and stop; the driver then exits with status 75.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from ..checkpoint.store.trialstore import location_of, trial_store
from ..config import EXIT_PREEMPTED, resolve_home, resolve_storage_root
from ..errors import ConfigError, LaunchError
from ..paths import TrialPaths
from ..storage.locks import WriterLease
from ..tracking import Tracker, join_trial, resolve_db_url
from ..tracking.guarded import GuardedWrites
from . import state as st
from .executors import make_executor
from .executors.base import LOST, Executor, SegmentJob
from .exploit import copy_checkpoint
from .protocol import Directive, SegmentResult, segment_result_path
from .results import SweepAnalysis, analysis_of
from .schedulers.base import TrialView
from .spec import SweepSpec

POLL_SECONDS = 0.1
_VIEW_STATE = {st.READY: "running", st.RUNNING: "running", st.PAUSED: "paused", st.TERMINATED: "terminated",
               st.ERROR: "error"}


def sweep_folder(home: Path, name: str) -> Path:
    """Where a sweep keeps its driver lock and Optuna study: ``<home>/sweeps/<name>``."""
    return Path(home) / "sweeps" / name


class SweepStopped(Exception):
    """The driver stopped on a signal after its trials saved; run it again to resume."""

    exit_code = EXIT_PREEMPTED


class Driver:
    """Runs one sweep to its end (see the module docstring). ``say`` prints progress lines."""

    def __init__(self, spec: SweepSpec, executor: Executor | None = None, *, home=None, storage=None, db=None,
                 say: Callable[[str], None] | None = None, cwd: str | None = None):
        spec.check()
        self.spec, self.name = spec, spec.name
        self.home = resolve_home(home)
        self.storage = resolve_storage_root(storage)
        self.db = resolve_db_url(db, self.home)
        self.executor = executor or make_executor(spec.executor)
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self.cwd = cwd or os.getcwd()
        self.total = spec.searcher.total()
        self.rows: dict[int, st.TrialRow] = {}
        self._guard = GuardedWrites()
        self._stopping = False

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> SweepAnalysis:
        """Run (or resume) the sweep to its end; return its analysis. SweepStopped after a signal."""
        folder = sweep_folder(self.home, self.name)
        folder.mkdir(parents=True, exist_ok=True)
        lock = WriterLease(folder / "driver.lock", f"sweep {self.name}").acquire(0)
        self.tracker, self.store = Tracker(self.db), st.SweepStore(self.db)
        try:
            self.sweep = self.store.open_sweep(self.name, self.spec.definition())
            if hasattr(self.spec.searcher, "open"):
                self.spec.searcher.open(folder, self.name)
            self.rows = self.store.trials(self.sweep.id)
            self.executor.start()
            with self._signals():
                self._loop()
            return analysis_of(self.name, self.spec.metric, self.spec.mode, self.rows)
        finally:
            self.executor.close()
            self.spec.searcher.close()
            self.store.close()
            self.tracker.close()
            lock.release()

    def _loop(self) -> None:
        self.say(f"unbroken sweep {self.name}: {self.total} trials, {len(self.rows)} known "
                 f"(home {self.home}, executor {self.executor.name})")
        while True:
            changed = self._collect()
            if self._stopping:
                if not self._running():
                    self.say(f"unbroken sweep {self.name}: stopped; run the same command again to resume")
                    raise SweepStopped(f"sweep {self.name} stopped by a signal; run it again to resume")
            else:
                changed = self._decide() | self._create() | self._launch() | changed
            if not self._stopping and self._finished():
                self.store.set_status(self.sweep.id, "completed")
                self.say(f"unbroken sweep {self.name}: completed ({self._summary()})")
                return
            if not changed and not self._running() and not self._stopping:
                raise LaunchError(f"sweep {self.name} cannot go on: no trial runs and the scheduler waits for "
                                  f"results ({self._summary()})")
            self.executor.wait(POLL_SECONDS)

    def _running(self) -> list[st.TrialRow]:
        return [r for r in self.rows.values() if r.state == st.RUNNING]

    def _finished(self) -> bool:
        return len(self.rows) >= self.total and all(r.state not in st.LIVE for r in self.rows.values())

    def _summary(self) -> str:
        counts: dict[str, int] = {}
        for row in self.rows.values():
            counts[row.state] = counts.get(row.state, 0) + 1
        return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no trials"

    # -- 1. collect ------------------------------------------------------------------------------
    def _collect(self) -> bool:
        changed = False
        for row in self._running():
            status = self.executor.poll(row.handle or {})
            if status is None:
                continue
            changed = True
            result = SegmentResult.read(segment_result_path(self._result_dir(row.number), row.segment))
            if result is not None:
                self._record(row, result)
            elif status == LOST or status == EXIT_PREEMPTED:
                row.relaunches += status == LOST
                self._save(row, state=st.READY, handle=None)
            else:
                why = "ended without reporting a result" if status == 0 else f"failed (unbroken run exited {status})"
                self._end(row, f"segment {row.segment} {why}; see `unbroken logs {self.name}/{row.number}`", error=True)
        return changed

    def _record(self, row: st.TrialRow, result: SegmentResult) -> None:
        metric = self.spec.metric
        if metric is not None and (result.result is None or metric not in result.result):
            keys = sorted(k for k in (result.result or {}) if k not in ("config", "trial_id", "done"))
            self._fail(f"trial {self.name}/{row.number} never reported the sweep's metric {metric!r} "
                       f"(it reported {keys or 'no result'}); report it, or set `metric` to one of those")
        row.results[result.iteration] = result.result
        row.last_result, row.iteration = result.result, result.iteration
        if result.done:
            self._end(row, f"done at iteration {result.iteration}")
        else:
            self._save(row, state=st.PAUSED, handle=None)
            self._trial_status(row.number, "preempted", f"paused by sweep {self.name} at iteration {result.iteration}")

    def _fail(self, message: str) -> None:
        for row in self._running():
            self.executor.stop(row.handle or {})
        self.store.set_status(self.sweep.id, "failed", message)
        raise ConfigError(message)

    # -- 2. decide -------------------------------------------------------------------------------
    def _decide(self) -> bool:
        views = {n: _view(r) for n, r in self.rows.items()}
        changed = False
        for number in sorted(n for n, r in self.rows.items() if r.state == st.PAUSED):
            row = self.rows[number]
            decision = self.spec.sched.decide(number, views)
            if decision.action == "wait":
                continue
            changed = True
            if decision.action == "stop":
                self._end(row, decision.reason)
            else:
                self._continue(row, decision)
            views[number] = _view(row)
        return changed

    def _continue(self, row: st.TrialRow, decision) -> None:
        row.segment += 1
        row.stop_at = decision.stop_at
        row.exploit = {**decision.exploit, "segment": row.segment, "recipient": row.number} if decision.exploit else None
        if decision.config is not None:
            row.config = dict(decision.config)
            trial = self.tracker.trial(self.name, row.number)
            self._guard("update the trial's hparams", self.tracker.update_trial, trial.id, hparams=row.config)
        if decision.reason:
            self.say(f"unbroken sweep {self.name}: trial {row.number} {decision.reason}")
        self._save(row, state=st.READY)

    def _end(self, row: st.TrialRow, message: str, *, error: bool = False) -> None:
        self._save(row, state=st.ERROR if error else st.TERMINATED, handle=None, message=message)
        self.spec.searcher.on_complete(row.number, row.last_result, error)
        self._trial_status(row.number, "failed" if error else "completed", message)
        self.say(f"unbroken sweep {self.name}: trial {row.number} {message}")

    # -- 3. create -------------------------------------------------------------------------------
    def _create(self) -> bool:
        changed = False
        while len(self.rows) < self.total and self._busy() < self.spec.max_concurrent:
            number = len(self.rows) + 1
            config = self.spec.searcher.suggest(number)
            if config is None:
                break
            command = " ".join(self._command())
            join_trial(self.tracker, self.name, hparams=config, number=number, command=command,
                       storage_of=location_of(self.home, self.name, self.storage))
            row = st.TrialRow(number, st.READY, config, segment=1, stop_at=self.spec.sched.first_stop(number))
            self.rows[number] = row
            self._save(row)
            changed = True
        return changed

    def _busy(self) -> int:
        return sum(r.state in (st.READY, st.RUNNING) for r in self.rows.values())

    # -- 4. launch -------------------------------------------------------------------------------
    def _launch(self) -> bool:
        ready = sorted((r for r in self.rows.values() if r.state == st.READY), key=lambda r: r.number)
        for row in ready:
            if row.exploit and not row.exploit.get("copy"):
                self._copy(row)
        free = self.spec.max_concurrent - len(self._running())
        for row in ready[:max(0, free)]:
            self._start(row)
        return bool(ready[:max(0, free)])

    def _copy(self, row: st.TrialRow) -> None:
        donor = self.tracker.trial(self.name, row.exploit["donor"])
        recipient = self.tracker.trial(self.name, row.number)
        marker = {k: row.exploit[k] for k in ("donor", "iteration", "segment", "recipient")}
        manifest = copy_checkpoint(trial_store(self.home, donor, self.storage), row.exploit["iteration"],
                                   trial_store(self.home, recipient, self.storage),
                                   TrialPaths(self.home, self.name, row.number).writer_lock, marker, row.config)
        self._guard("index the copied checkpoint", self.tracker.record_checkpoint, recipient.id, manifest.uuid,
                    manifest.steps_completed, created_at=manifest.created_at, size_bytes=manifest.size,
                    metadata=manifest.metadata)
        row.exploit = {**row.exploit, "copy": manifest.uuid}
        self._save(row)

    def _start(self, row: st.TrialRow) -> None:
        spec = self.spec
        directive = Directive(
            sweep=self.name, trial=row.number, segment=row.segment, config=row.config,
            result_dir=str(self._result_dir(row.number)), stop_at=row.stop_at, stop=dict(spec.stop or {}) or None,
            metric=spec.metric, checkpoint_freq=spec.checkpoint_freq, checkpoint_at_end=spec.checkpoint_at_end,
            keep=spec.keep_checkpoints, trainable=spec.trainable_reference(),
            restore=(row.exploit or {}).get("copy"))
        env = {**directive.to_env(), "UNBROKEN_HOME": str(self.home), "UNBROKEN_DB": self.db,
               **({"UNBROKEN_STORAGE": self.storage} if self.storage else {})}
        job = SegmentJob(self.name, row.number, row.segment, tuple(self._command()), env, self.home,
                         self._result_dir(row.number), spec.max_failures, spec.restart_backoff, self.cwd)
        handle = self.executor.launch(job)
        self._save(row, state=st.RUNNING, handle=handle)

    def _command(self) -> list[str]:
        return list(self.spec.command or [sys.executable, "-m", "unbroken.sweep.worker"])

    # -- helpers ---------------------------------------------------------------------------------
    def _result_dir(self, number: int) -> Path:
        return TrialPaths(self.home, self.name, number).root / "sweep"

    def _save(self, row: st.TrialRow, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(row, key, value)
        self.store.save(self.sweep.id, row)

    def _trial_status(self, number: int, status: str, message: str) -> None:
        def update():
            self.tracker.update_trial(self.tracker.trial(self.name, number).id, status=status, message=message)
        self._guard("update the trial", update)

    @contextlib.contextmanager
    def _signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum, _frame) -> None:
        if not self._stopping:
            self._stopping = True
            self.say(f"unbroken sweep {self.name}: {signal.Signals(signum).name}: asking the trials to save and stop")
            for row in self._running():
                self.executor.stop(row.handle or {})


def _view(row: st.TrialRow) -> TrialView:
    return TrialView(row.number, row.config, row.results, _VIEW_STATE[row.state], row.iteration)


def run_sweep(spec: SweepSpec, executor: Executor | None = None, **places: Any) -> SweepAnalysis:
    """Run (or resume) ``spec`` to its end on ``executor`` (default: the spec's, else local)."""
    return Driver(spec, executor, **places).run()
