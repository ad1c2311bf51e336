"""The class API of a trial (Ray Tune's ``Trainable``), and saving/loading one into checkpoints.

Subclass :class:`Trainable` and define ``setup(config)``, ``step() -> dict``,
``save_checkpoint(checkpoint_dir)`` and ``load_checkpoint(checkpoint)``; the older names
``_setup``, ``_train``, ``_save``, ``_restore`` and ``_stop`` work too. ``save_checkpoint`` writes
files into the folder and returns None, or returns a dict (kept as JSON, or pickled when it is
not JSON), or the path of a file it wrote inside the folder; ``load_checkpoint`` then receives
the folder (as a string), the dict, or that file's path, as in Ray Tune.
"""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

from ..errors import ConfigError

#: The file in a checkpoint that says how the Trainable's save returned.
TUNE_FILE = "_tune_checkpoint.json"


class Trainable:
    """Base class of class trainables (see the module docstring)."""

    def __init__(self, config: dict[str, Any] | None = None, *, trial_id: str = "", trial_name: str = "",
                 logdir: str = ""):
        self.config = dict(config or {})
        self._iteration = 0
        self.trial_id, self.trial_name, self.logdir = trial_id, trial_name, logdir
        self.setup(copy.deepcopy(self.config))

    @property
    def iteration(self) -> int:
        """Results reported so far (``training_iteration``), counted across restores."""
        return self._iteration

    training_iteration = iteration

    # -- Ray Tune's current names (delegating to the older ones where a subclass defines those) --
    def setup(self, config: dict[str, Any]) -> None:
        if _overrides(self, "_setup"):
            self._setup(config)

    def step(self) -> dict[str, Any]:
        if _overrides(self, "_train"):
            return self._train()
        raise NotImplementedError(f"{type(self).__name__} must define step() (or _train())")

    def save_checkpoint(self, checkpoint_dir: str) -> Any:
        if _overrides(self, "_save"):
            return self._save(checkpoint_dir)
        raise NotImplementedError

    def load_checkpoint(self, checkpoint: Any) -> None:
        if _overrides(self, "_restore"):
            self._restore(checkpoint)

    def cleanup(self) -> None:
        if _overrides(self, "_stop"):
            self._stop()

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        return False

    # -- the older names (a subclass overrides these instead) ------------------------------------
    def _setup(self, config):
        pass

    def _train(self):
        raise NotImplementedError

    def _save(self, checkpoint_dir):
        raise NotImplementedError

    def _restore(self, checkpoint):
        pass

    def _stop(self):
        pass


def _overrides(obj: Any, name: str) -> bool:
    return getattr(type(obj), name) is not getattr(Trainable, name)


def saves(cls: type) -> bool:
    """Whether a Trainable class saves checkpoints (defines save_checkpoint or _save)."""
    return any(getattr(cls, name) is not getattr(Trainable, name) for name in ("save_checkpoint", "_save"))


def save_into(trainable: Trainable, folder: Path) -> None:
    """Let ``trainable`` save into ``folder`` and record how it returned (see the module docstring)."""
    returned = trainable.save_checkpoint(str(folder))
    if returned is None or (isinstance(returned, str) and Path(returned).resolve() == folder.resolve()):
        record = {"kind": "dir"}
    elif isinstance(returned, dict):
        record = _save_dict(returned, folder)
    elif isinstance(returned, (str, Path)):
        path = Path(returned).resolve()
        if folder.resolve() not in path.parents:
            raise ConfigError(f"save_checkpoint returned {returned}, which is not inside the checkpoint folder {folder}")
        record = {"kind": "path", "path": str(path.relative_to(folder.resolve()))}
    else:
        raise ConfigError(f"save_checkpoint must return None, a dict or a path, not {type(returned).__name__}")
    (folder / TUNE_FILE).write_text(json.dumps(record))


def _save_dict(data: dict, folder: Path) -> dict[str, str]:
    try:
        (folder / "_tune_state.json").write_text(json.dumps(data, allow_nan=False))
        return {"kind": "json"}
    except (TypeError, ValueError):
        (folder / "_tune_state.pkl").write_bytes(pickle.dumps(data))
        return {"kind": "pickle"}


def load_from(trainable: Trainable, folder: Path) -> None:
    """Give ``trainable`` the checkpoint in ``folder`` as it saved it."""
    try:
        record = json.loads((folder / TUNE_FILE).read_text())
    except FileNotFoundError:
        record = {"kind": "dir"}
    kind = record.get("kind")
    if kind == "json":
        trainable.load_checkpoint(json.loads((folder / "_tune_state.json").read_text()))
    elif kind == "pickle":  # written by this trial's own save_checkpoint (as Ray Tune does)
        trainable.load_checkpoint(pickle.loads((folder / "_tune_state.pkl").read_bytes()))
    elif kind == "path":
        trainable.load_checkpoint(str(folder / record["path"]))
    else:
        trainable.load_checkpoint(str(folder))
