"""The trainer's state file in the experiment folder: what a worker runs and what ``restore`` rebuilds.

``<storage_path>/<name>/unbroken-trainer.json`` holds the reference of ``train_loop_per_worker``
(see :mod:`unbroken.sweep.loader`), ``train_loop_config`` as JSON, the worker count and the
failure and checkpoint settings. The experiment folder is also the unbroken home of the run
(index, trials, checkpoints). Written atomically by the driver before it starts the workers;
read by every worker and by ``TorchTrainer.restore``/``can_restore``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ...errors import ConfigError

STATE_FILE = "unbroken-trainer.json"
VERSION = 1


@dataclasses.dataclass(frozen=True)
class TrainerState:
    """Everything a worker or a restored trainer needs; JSON only."""

    name: str
    train_loop: str
    train_loop_config: Any
    num_workers: int
    use_gpu: bool
    max_failures: int
    num_to_keep: int | None
    score_attribute: str | None
    score_order: str


def config_json(config: Any) -> Any:
    """``train_loop_config`` as plain JSON values; ConfigError naming what is not JSON-serialisable."""
    try:
        return json.loads(json.dumps(config, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"train_loop_config must be JSON-serialisable (dicts, lists, str, numbers, bools, None): "
                          f"{exc}. It travels to the worker processes as JSON; pass paths or names instead of "
                          "objects and build the objects inside train_loop_per_worker") from None


def write_state(folder: Path, state: TrainerState) -> Path:
    """Write the state file durably and atomically (temp file, fsync, rename); return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STATE_FILE
    part = path.with_suffix(".part")
    with open(part, "w") as out:
        json.dump({"version": VERSION, **dataclasses.asdict(state)}, out, indent=1)
        out.flush()
        os.fsync(out.fileno())
    os.replace(part, path)
    return path


def read_state(folder: Path) -> TrainerState:
    """The state of the experiment in ``folder``; ConfigError when there is none or it is unreadable."""
    path = Path(folder) / STATE_FILE
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{folder} holds no TorchTrainer experiment ({STATE_FILE} is missing): pass the folder "
                          "storage_path/name of a run started by TorchTrainer.fit()") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(body, dict) or body.get("version") != VERSION:
        raise ConfigError(f"{path} is not a TorchTrainer state file of version {VERSION}")
    fields = {f.name for f in dataclasses.fields(TrainerState)}
    try:
        return TrainerState(**{k: body[k] for k in fields})
    except KeyError as exc:
        raise ConfigError(f"{path} lacks {exc}") from None


def has_state(folder: Path) -> bool:
    """True when ``folder`` holds a readable trainer state file."""
    try:
        read_state(folder)
    except ConfigError:
        return False
    return True
