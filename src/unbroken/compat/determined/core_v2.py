"""Determined's singleton-style ``core_v2``, for detached (unmanaged) training scripts.

::

    from unbroken.compat.determined.experimental import core_v2   # was: from determined.experimental import core_v2
    core_v2.init(defaults=core_v2.DefaultConfig(name="mnist", hparams={"lr": 0.1}),
                 unmanaged=core_v2.UnmanagedConfig(external_experiment_id="mnist", external_trial_id="1"))
    ... core_v2.checkpoint / core_v2.train / core_v2.preempt / core_v2.info ...
    core_v2.close()

Which trial: the unbroken experiment is named by ``external_experiment_id`` (followed by
``.external_trial_id`` when that differs), so a rerun with the same ids resumes the same trial.
Without external ids every run starts a new trial, as in Determined. Under `unbroken run` the
supervisor's trial is joined whatever the ids say.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ...errors import ConfigError
from ._contexts import CheckpointContext, DistributedContext, PreemptContext, PreemptMode, TrainContext
from ._info import ClusterInfo
from ._searcher import SearcherContext
from .core import Context, open_run
from .expconf import storage_location

train: TrainContext | None = None
checkpoint: CheckpointContext | None = None
preempt: PreemptContext | None = None
distributed: DistributedContext | None = None
searcher: SearcherContext | None = None
info: ClusterInfo | None = None
_context: Context | None = None


@dataclasses.dataclass
class Config:
    """The settings of a detached trial (``data``, ``description``, ``labels``, ``workspace``,
    ``project`` and ``searcher`` are accepted and kept out of the way)."""

    name: str | None = None
    hparams: dict[str, Any] | None = None
    data: dict | None = None
    description: str | None = None
    labels: list[str] | None = None
    workspace: str | None = None
    project: str | None = None
    checkpoint_storage: str | dict[str, Any] | None = None
    searcher: dict[str, Any] | None = None
    external_experiment_id: str | None = None
    external_trial_id: str | None = None


@dataclasses.dataclass
class DefaultConfig(Config):
    """Determined's older name for the defaults of :class:`Config`."""


@dataclasses.dataclass
class UnmanagedConfig(Config):
    """Determined's older name for the unmanaged part (external ids) of :class:`Config`."""


def init(*, config: Config | None = None, defaults: Config | None = None, unmanaged: Config | None = None,
         client: Any = None, distributed: Any = None, checkpoint_storage: str | dict | None = None,
         preempt_mode: PreemptMode | str = PreemptMode.WorkersAskChief, tensorboard_mode: Any = None) -> None:
    """Open the trial and set the module's ``train``, ``checkpoint``, ``preempt``, ``distributed``,
    ``searcher`` and ``info``. A second call closes the first trial. ``client`` is ignored."""
    global _context
    merged = _merge(config, defaults, unmanaged)
    if _context is not None:
        close()
    name = experiment_name(merged)
    run = open_run(distributed, name=name, hparams=merged.hparams,
                   storage=storage_location(checkpoint_storage or merged.checkpoint_storage),
                   fresh=merged.external_experiment_id is None)
    searcher_cfg = merged.searcher or {}
    _context = Context(run, preempt_mode=preempt_mode, searcher_length=searcher_cfg.get("max_length"))
    _publish(_context)


def close() -> None:
    """Close the trial (see :meth:`Context.close`: exits 75 after a stop request)."""
    global _context
    context, _context = _context, None
    _publish(None)
    if context is not None:
        context.close()


def experiment_name(config: Config) -> str:
    """The unbroken experiment of a detached trial: the external ids, else the config's name."""
    ids = [config.external_experiment_id]
    if config.external_trial_id is not None and config.external_trial_id != config.external_experiment_id:
        if config.external_experiment_id is None:
            raise ConfigError("external_trial_id needs external_experiment_id as well")
        ids.append(config.external_trial_id)
    if ids[0] is None:
        return _clean(config.name or "unmanaged")
    return ".".join(_clean(str(i)) for i in ids)


def _clean(text: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:120]
    if not clean:
        raise ConfigError(f"{text!r} cannot name an experiment: use letters or digits")
    return clean


def _merge(config: Config | None, defaults: Config | None, unmanaged: Config | None) -> Config:
    if config is not None:
        return config
    if defaults is None and unmanaged is None:
        raise ConfigError("core_v2.init() needs config=Config(...) (or defaults=/unmanaged=)")
    merged = dataclasses.replace(defaults) if defaults is not None else Config()
    if unmanaged is not None:
        for field in dataclasses.fields(Config):
            if getattr(merged, field.name) is None:
                setattr(merged, field.name, getattr(unmanaged, field.name))
    return merged


def _publish(context: Context | None) -> None:
    global train, checkpoint, preempt, distributed, searcher, info
    if context is None:
        train = checkpoint = preempt = distributed = searcher = info = None
        return
    train, checkpoint, preempt = context.train, context.checkpoint, context.preempt
    distributed, searcher, info = context.distributed, context.searcher, context.info
