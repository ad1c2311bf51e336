"""The worker's session: ``report()``, ``get_checkpoint()`` and ``get_context()`` over one unbroken Run.

One :class:`Session` per worker process, made by :mod:`._worker` around the training function.
All on the training thread; every rank must make the same calls in the same order:

* :meth:`Session.start` (before the training function): rank 0 picks the newest checkpoint whose
  files verify and tells every rank (one broadcast); ``get_checkpoint()`` returns it;
* :meth:`Session.report` is a collective: one allgather of (has a checkpoint, stop requested). If
  any rank passed a checkpoint, every rank enters one sharded ``store_path`` block, those with a
  checkpoint copy their files into the one staged folder (a name written by two ranks: one of
  them wins whole), and the checkpoint is committed once every rank left the block: for all
  ranks or for none. Rank 0's metrics are the checkpoint's and the result's. A stop request
  (the supervisor's signal, a deadline) on any rank ends the training function on every rank at
  the same report, after that report's checkpoint is committed; the worker then exits 75.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ._checkpoint import Checkpoint, StoredRef
from ._context import TrainContext

RESULT_FILE = "ray_train_result.json"


class StopTraining(BaseException):
    """Raised by ``report()`` to end the training function when the group agreed to stop."""


class Session:
    """See the module docstring. ``run`` is the worker's ``unbroken.init()`` run; ``use_gpu`` is
    ScalingConfig's (read by ``get_device``)."""

    def __init__(self, run: Any, use_gpu: bool = False):
        self.run, self.use_gpu = run, use_gpu
        self.group = run.distributed
        self.iteration = 0
        self.latest: Checkpoint | None = None
        self.context = TrainContext(run)

    def start(self) -> None:
        """Agree on the checkpoint to resume from (a collective)."""
        uuid = self.run.checkpoint.latest_checkpoint if self.group.is_chief else None
        uuid = self.group.broadcast(uuid) if self.group.size > 1 else uuid
        if uuid is not None:
            meta = self.run.checkpoint.get_metadata(uuid)
            self.iteration = int(meta.get("training_iteration", meta["steps_completed"]))
            self.latest = self._stored(uuid)

    def report(self, metrics: dict[str, Any], checkpoint: Checkpoint | None = None) -> None:
        """Ray's ``report``; see the module docstring. Raises ConfigError for bad arguments
        (before any collective), CheckpointError when the checkpoint could not be committed."""
        metrics = metrics_json(metrics)
        if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
            raise ConfigError(f"report(checkpoint=...) takes a Checkpoint (Checkpoint.from_directory(folder)), "
                              f"not {type(checkpoint).__name__}")
        votes = self._gather((checkpoint is not None, self.run.preempt.own_request()))
        self.iteration += 1
        uuid = self._store(metrics, checkpoint) if any(has for has, _stop in votes) else None
        if self.group.is_chief:
            self._record(metrics, uuid)
        if self.run.preempt.settle([stop for _has, stop in votes]) is not None:
            raise StopTraining()

    def _gather(self, value: Any) -> list[Any]:
        return self.group.allgather(value) if self.group.size > 1 else [value]

    def _store(self, metrics: dict[str, Any], checkpoint: Checkpoint | None) -> str:
        meta = {"steps_completed": self.iteration, "training_iteration": self.iteration, "metrics": metrics}
        with self.run.checkpoint.store_path(meta, shard=True) as (path, uuid):
            if checkpoint is not None:
                copy_files(Path(checkpoint.path), Path(path), self.group.rank)
        self.latest = self._stored(uuid)
        return uuid

    def _record(self, metrics: dict[str, Any], uuid: str | None) -> None:
        """Rank 0: the numbers go to the index; the whole report to the trial's result file."""
        numbers = {k: v for k, v in metrics.items() if _is_number(v)}
        if numbers:
            self.run.report(self.iteration, **numbers)
        result = {"metrics": {**metrics, "training_iteration": self.iteration},
                  "checkpoint": uuid or (self.latest.uuid if self.latest else None)}
        write_json(Path(self.run.info.trial_dir) / RESULT_FILE, result)


    def _stored(self, uuid: str) -> Checkpoint:
        info = self.run.info
        ref = StoredRef(str(info.home), info.experiment, info.trial, uuid)
        local = self.run.checkpoint.store.local_path(uuid)
        return Checkpoint(local or uuid, stored=ref, opener=self._open)

    def _open(self, ref: StoredRef):
        return _ThroughRun(self.run, ref.uuid)


class _ThroughRun:
    """Context manager: the run's verified, leased folder of ``uuid`` and its files (records the resume point)."""

    def __init__(self, run: Any, uuid: str):
        self._block = run.checkpoint.restore_path(uuid)
        self._files = [f.path for f in run.checkpoint.store.manifest(uuid).files]

    def __enter__(self) -> tuple[Path, list[str]]:
        return Path(self._block.__enter__()), self._files

    def __exit__(self, *exc: Any) -> Any:
        return self._block.__exit__(*exc)


def metrics_json(metrics: Any) -> dict[str, Any]:
    """``metrics`` as a JSON dict with str keys; ConfigError naming the problem."""
    if not isinstance(metrics, dict) or not all(isinstance(k, str) for k in metrics):
        raise ConfigError(f"report(metrics) takes a dict with str keys, not {type(metrics).__name__}")
    try:
        return json.loads(json.dumps(metrics, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"report(metrics) must be JSON-serialisable (numbers, str, lists, dicts; no NaN): {exc}. "
                          "Convert tensors with .item()") from None


def copy_files(src: Path, dest: Path, rank: int) -> None:
    """Copy the files under ``src`` into ``dest`` (same relative paths). Each file lands whole
    (written aside, then renamed), so two ranks writing one name leave one complete copy."""
    if not src.is_dir():
        raise ConfigError(f"the reported checkpoint's folder {src} is gone: report() inside the block that "
                          "owns the folder (e.g. inside `with tempfile.TemporaryDirectory()`)")
    for root, _dirs, files in os.walk(src):
        for name in files:
            rel = Path(root, name).relative_to(src)
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            aside = target.with_name(f".{target.name}.rank{rank}.part")
            shutil.copyfile(src / rel, aside)
            os.replace(aside, target)


def write_json(path: Path, body: Any) -> None:
    """Write ``body`` as JSON atomically (temp file, then rename)."""
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(body))
    os.replace(part, path)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
