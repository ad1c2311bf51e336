"""A sweep's definition: what to run, over which space, how to search and schedule, where.

:class:`SweepSpec` is built in Python or read from a YAML/JSON file (:func:`load_spec`)::

    name: lr-sweep
    space:
      lr: {loguniform: [0.0001, 0.1]}
      model: {width: {grid: [16, 32]}, act: {choice: [relu, tanh]}}
    search: {algorithm: random, seed: 0}     # or grid, or {algorithm: optuna, sampler: tpe}
    num_samples: 8
    max_concurrent: 2
    metric: loss
    mode: min
    stop: {training_iteration: 20}
    scheduler: {type: asha, max_t: 20, grace_period: 2, reduction_factor: 2}
    max_failures: 3                          # restarts of a crashed trial (unbroken run --max-restarts)
    checkpoint_freq: 1
    checkpoint_at_end: true
    keep_checkpoints: 2                      # retention per trial: the latest N
    executor: {type: local}                  # or {type: slurm, partition: ...}, {type: ray, address: ...}
    command: [python, train.py]              # or trainable: my_module:MyTrainable

Everything is checked by :meth:`SweepSpec.check` before any trial starts; problems are
ConfigError naming the field. :meth:`definition` is what a resumed sweep must match (the
executor and ``max_concurrent`` may change between runs).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import check_name
from ..errors import ConfigError
from . import space as space_mod
from .loader import import_file, load, reference_of
from .schedulers import Scheduler, make_scheduler
from .searchers import Searcher, make_searcher
from .trainable import Trainable, saves

FIELDS = ("name", "space", "command", "trainable", "search", "num_samples", "max_concurrent", "metric", "mode",
          "stop", "scheduler", "max_failures", "checkpoint_freq", "checkpoint_at_end", "keep_checkpoints",
          "executor", "restart_backoff")


@dataclasses.dataclass
class SweepSpec:
    """See the module docstring. ``trainable``: a Trainable class, a function, or a reference to one."""

    name: str
    space: Mapping[str, Any]
    command: Sequence[str] | None = None
    trainable: Any = None
    search: Any = None
    num_samples: int = 1
    max_concurrent: int = 1
    metric: str | None = None
    mode: str | None = None
    stop: Mapping[str, Any] | None = None
    scheduler: Any = None
    max_failures: int = 3
    checkpoint_freq: int = 0
    checkpoint_at_end: bool = False
    keep_checkpoints: int = 2
    executor: Any = None
    restart_backoff: float = 1.0

    def __post_init__(self):
        self.name = check_name(self.name)
        self.space = space_mod.parse_space(self.space)
        self.searcher: Searcher = make_searcher(self.search)
        self.sched: Scheduler = make_scheduler(self.scheduler)
        if self.command is not None:
            self.command = [str(c) for c in ([self.command] if isinstance(self.command, str) else self.command)]

    # -- checks ---------------------------------------------------------------------------------
    def check(self) -> None:
        """Every check that can be made before a trial starts (ConfigError naming the problem)."""
        if (self.command is None) == (self.trainable is None):
            raise ConfigError("a sweep runs either a command (command: [python, train.py]) or a Python trainable "
                              "(trainable: module:Class), exactly one of them")
        if self.command is not None and not self.command:
            raise ConfigError("the sweep's command is empty")
        for field in ("num_samples", "max_concurrent", "keep_checkpoints"):
            _whole(getattr(self, field), field, 1)
        for field in ("max_failures", "checkpoint_freq"):
            _whole(getattr(self, field), field, 0)
        if self.mode not in (None, "min", "max"):
            raise ConfigError(f"mode must be 'min' or 'max', not {self.mode!r}")
        if self.metric is not None and self.mode is None:
            raise ConfigError(f"metric {self.metric!r} needs a mode: 'min' or 'max'")
        if self.stop is not None and (not isinstance(self.stop, Mapping) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.stop.values())):
            raise ConfigError(f"stop must map result keys to numbers (stop when result[key] >= value), "
                              f"not {self.stop!r}")
        self.searcher.bind(self.space, self.num_samples, self.metric, self.mode)
        self.sched.bind(self.metric, self.mode, self.searcher.total())
        if self.sched.needs_checkpoints and self.trainable is not None and not trainable_saves(self.trainable):
            raise ConfigError(f"scheduler {self.sched.name} pauses, resumes or copies trials through checkpoints, "
                              f"but the trainable {reference_of(self.trainable)} never saves one: define "
                              "save_checkpoint/load_checkpoint (or report(..., checkpoint=...)), or use asha/fifo")

    def trainable_reference(self) -> str | None:
        return None if self.trainable is None else reference_of(self.trainable)

    def definition(self) -> dict[str, Any]:
        """What identifies the sweep: a resumed run must give the same (executor and concurrency may differ)."""
        return json.loads(json.dumps({
            "space": space_mod.to_json(self.space), "command": self.command, "trainable": self.trainable_reference(),
            "search": self.searcher.describe(), "num_samples": self.num_samples, "metric": self.metric,
            "mode": self.mode, "stop": dict(self.stop or {}), "scheduler": self.sched.describe(),
            "checkpoint_freq": self.checkpoint_freq, "checkpoint_at_end": self.checkpoint_at_end,
        }, default=repr))


def _whole(value: Any, field: str, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{field} must be a whole number >= {least}, not {value!r}")


def trainable_saves(trainable: Any) -> bool:
    """Whether a trainable ever saves: a Trainable class that defines saving, or a function that
    mentions checkpoints (``report(..., checkpoint=...)``) anywhere in its code."""
    target = load(trainable) if isinstance(trainable, str) else trainable
    if inspect.isclass(target):
        return issubclass(target, Trainable) and saves(target)
    code = getattr(target, "__code__", None)
    return code is None or _mentions_checkpoint(code)


def _mentions_checkpoint(code) -> bool:
    if any("checkpoint" in name.lower() for name in (*code.co_names, *code.co_varnames)):
        return True
    return any(_mentions_checkpoint(c) for c in code.co_consts if hasattr(c, "co_names"))


# -- files and modules ------------------------------------------------------------------------------
def load_spec(source: str | Path, **overrides: Any) -> SweepSpec:
    """A spec from a YAML/JSON file, a ``.py`` file or a module (its ``sweep`` attribute, or
    ``module:attr``), with ``overrides`` (e.g. ``command=...``) applied."""
    text = str(source)
    if text.endswith((".yaml", ".yml", ".json")):
        raw = _read_file(Path(text))
    else:
        raw = _from_python(text)
    if isinstance(raw, SweepSpec):
        raw = {f: getattr(raw, f) for f in FIELDS}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source} must define a sweep as a mapping (name, space, ...), not {type(raw).__name__}")
    unknown = set(raw) - set(FIELDS)
    if unknown:
        raise ConfigError(f"{source}: unknown sweep fields {sorted(unknown)}; known: {', '.join(FIELDS)}")
    merged = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    if "name" not in merged:
        raise ConfigError(f"{source}: the sweep needs a name")
    return SweepSpec(**merged)


def _read_file(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the sweep file {path}: {exc.strerror or exc}") from None
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    try:
        import yaml  # noqa: PLC0415 - optional extra
    except ImportError:
        raise ConfigError("YAML sweep files need PyYAML: pip install 'unbroken[sweep]'") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None


def _from_python(text: str) -> Any:
    where, _, attr = text.partition(":") if not text.endswith(".py") else (text, "", "")
    if where.endswith(".py"):
        module = import_file(Path(where).resolve())
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise ConfigError(f"cannot import the sweep module {where!r}: {exc}") from None
    try:
        return getattr(module, attr or "sweep")
    except AttributeError:
        raise ConfigError(f"{where} has no attribute {attr or 'sweep'!r} (define `sweep = {{...}}` or a SweepSpec "
                          "there)") from None
