"""Fixtures of the CLI tests: a CliRunner on `unbroken`, and a home with real runs in it."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

import unbroken
from unbroken.checkpoint import CheckpointStore
from unbroken.cli.main import main
from unbroken.paths import TrialPaths
from unbroken.storage import LocalStorage
from unbroken.tracking import Tracker, Trial, join_trial


@dataclasses.dataclass
class Invoke:
    runner: CliRunner

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(main, [str(a) for a in args], input=input, catch_exceptions=True)

    def json(self, *args: str, code: int = 0):
        result = self(*args, "--json")
        assert result.exit_code == code, result.output
        return json.loads(result.stdout)


@pytest.fixture
def cli(home) -> Invoke:
    """Run `unbroken ARGS...` in-process against the test home ($UNBROKEN_HOME)."""
    return Invoke(CliRunner())


def train(home: Path, name: str, total: int, **init_kw) -> unbroken.Run:
    """A tiny numpy training to ``total`` steps, a checkpoint every 2 steps (and at the end)."""
    with unbroken.init(name, home=home, save=unbroken.every_steps(2), keep=unbroken.keep_all(),
                       exit_on_preempt=False, **init_kw) as run:
        state = unbroken.State(w=np.zeros(4, dtype=np.float32), n=0)
        start = run.restore(state)
        for step in run.steps(start, total):
            state.w = state.w + 1.0
            state.n += 1
            run.report(step + 1, loss=1.0 / (step + 1))
        run.report(total, group="validation", acc=0.75)
    return run


@dataclasses.dataclass
class Trained:
    home: Path
    trial_id: int
    folder: Path              # checkpoints folder of exp/1
    uuids: dict[int, str]     # steps_completed -> uuid
    logs: list[Path]          # attempt logs of exp/1

    def tracker(self) -> Tracker:
        return Tracker(self.home / "unbroken.db")

    def checkpoint(self, steps: int) -> Path:
        return self.folder / self.uuids[steps]


@pytest.fixture
def trained(home) -> Trained:
    """exp/1: two attempts (5 steps, then resumed to 9), checkpoints at 2 4 5 6 8 9, logs,
    Slurm fields on attempt 2; raw/1: one non-State checkpoint written with store_path."""
    train(home, "exp", 5, hparams={"lr": 0.1, "opt": {"name": "sgd"}})
    run = train(home, "exp", 9, hparams={"lr": 0.1, "opt": {"name": "sgd"}})
    with unbroken.init("raw", home=home, exit_on_preempt=False) as raw:
        with raw.checkpoint.store_path({"steps_completed": 3, "note": "files"}) as (path, _uuid):
            (path / "weights.bin").write_bytes(b"\x01" * 5000)
    tracker = Tracker(home / "unbroken.db")
    logs = []
    for attempt in tracker.attempts(run.info.trial_id):
        log = run.info.trial_dir / "logs" / f"attempt-{attempt.number}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"hello from attempt {attempt.number}\nline two\n")
        tracker.update_attempt(attempt.id, log_path=str(log))
        logs.append(log)
    tracker.update_attempt(tracker.attempts(run.info.trial_id)[1].id, slurm_job_id="4242", slurm_array_task="3",
                           slurm_nodes="node[01-02]")
    tracker.close()
    manifests = run.checkpoint.store.list()
    return Trained(home, run.info.trial_id, run.info.trial_dir / "checkpoints",
                   {m.steps_completed: m.uuid for m in manifests}, logs)


# -- a home built with the index and the store directly (no training loop) --------------------------
def commit(folder: Path, steps: int, payload: bytes = b"\x07" * 100, metadata: dict | None = None):
    """Commit a checkpoint of one file into the checkpoints folder ``folder``; return its manifest."""
    store = CheckpointStore(LocalStorage(folder))
    pending = store.begin(steps, metadata or {"note": f"step {steps}"})
    (pending.path / "data.bin").write_bytes(payload)
    return store.commit(pending)


def dead_identity() -> int:
    """The pid of a process that ran and was reaped (gone for good)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@dataclasses.dataclass
class Indexed:
    home: Path
    trial: Trial
    paths: TrialPaths
    manifests: list          # committed checkpoints in storage, oldest first
    attempt_ids: list[int]

    def tracker(self) -> Tracker:
        return Tracker(self.home / "unbroken.db")


@pytest.fixture
def indexed(home) -> Indexed:
    """exp/1, completed: attempt 1 (steps 1-4, crashed), attempt 2 (restored step 4, steps 5-8,
    completed); loss 1/step for steps 1-8 (steps 4 reported twice), validation acc at 4 and 8;
    committed checkpoints at steps 2, 4, 8 (in storage and in the index); a log per attempt."""
    paths = TrialPaths(home, "exp", 1)
    with Tracker(home / "unbroken.db") as tracker:
        trial = join_trial(tracker, "exp", hparams={"lr": 0.5})
        manifests, ids = [], []
        for number, steps, end in ((1, range(1, 5), "crashed"), (2, range(4, 9), "completed")):
            attempt = tracker.start_attempt(trial.id, pid=os.getpid(), log_path=str(paths.attempt_log(number)))
            ids.append(attempt.id)
            tracker.add_metrics(trial.id, attempt.id, [("training", s, "loss", 1.0 / s, 1000.0 + s) for s in steps])
            tracker.add_metrics(trial.id, attempt.id, [("validation", steps[-1], "acc", 0.25 * number, 2000.0)])
            for s in steps:
                if s in (2, 4, 8) and s not in [m.steps_completed for m in manifests]:
                    m = commit(paths.checkpoints, s)
                    manifests.append(m)
                    tracker.record_checkpoint(trial.id, m.uuid, s, created_at=m.created_at, size_bytes=m.size,
                                              metadata=m.metadata, attempt_id=attempt.id)
            tracker.end_attempt(attempt.id, end, exit_code=0 if end == "completed" else 1)
            paths.logs.mkdir(parents=True, exist_ok=True)
            paths.attempt_log(number).write_text(f"attempt {number} says hello\n")
        tracker.update_attempt(ids[1], restored_uuid=manifests[1].uuid, restored_steps=4)
        tracker.update_trial(trial.id, status="completed")
        trial = tracker.trial_by_id(trial.id)
    return Indexed(home, trial, paths, manifests, ids)


@pytest.fixture
def checkpoint_into():
    """``checkpoint_into(folder, steps)``: commit a small checkpoint into a checkpoints folder (see commit)."""
    return commit
