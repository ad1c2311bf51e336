"""Fixtures of the CLI tests: a CliRunner on `unbroken`, and a home with real runs in it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

import unbroken
from unbroken.cli.main import main
from unbroken.tracking import Tracker


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
