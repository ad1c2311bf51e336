"""Retention policies: which committed checkpoints to keep.

A policy is a small pure object: given the committed checkpoints (oldest first) it returns the
uuids it wants kept. Policies combine with ``|``: a checkpoint is kept if any policy keeps it::

    keep = keep_latest(3) | keep_best(2, "val_loss", mode="min") | keep_every(10_000)

The caller (``apply``) never deletes protected checkpoints (the newest good one, the one
being restored) whatever the policy says.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from ..._policy import Combinable, Counted, Union, whole_number
from ...errors import ConfigError
from ..format.manifest import Manifest


class RetentionPolicy(Combinable, family=True):
    """Base class: ``keep(checkpoints)`` returns the set of uuids to keep."""

    def keep(self, checkpoints: Sequence[Manifest]) -> set[str]:
        raise NotImplementedError


class _Union(Union, RetentionPolicy):
    def keep(self, checkpoints: Sequence[Manifest]) -> set[str]:
        kept: set[str] = set()
        for policy in self.policies:
            kept |= policy.keep(checkpoints)
        return kept


RetentionPolicy.Union = _Union


class keep_all(RetentionPolicy):
    """Keep every checkpoint."""

    def keep(self, checkpoints):
        return {c.uuid for c in checkpoints}

    def __repr__(self):
        return "keep_all()"


class keep_latest(Counted, RetentionPolicy):
    """Keep the ``n`` checkpoints with the most steps completed."""

    def keep(self, checkpoints):
        ordered = sorted(checkpoints, key=lambda c: (c.steps_completed, c.created_at))
        return {c.uuid for c in ordered[-self.n:]}


class keep_best(RetentionPolicy):
    """Keep the ``n`` checkpoints with the best value of ``metric`` (``mode`` "min" or "max").

    The value is read from the checkpoint's metadata: ``metadata["metrics"][metric]`` or
    ``metadata[metric]``. Checkpoints without a finite value are not candidates.
    """

    def __init__(self, n: int, metric: str, mode: str = "min"):
        self.n = whole_number(n, "keep_best(n)")
        if mode not in ("min", "max"):
            raise ConfigError(f"keep_best mode must be 'min' or 'max', not {mode!r}")
        self.metric, self.mode = metric, mode

    def keep(self, checkpoints):
        scored = [(v, c) for c in checkpoints if (v := metric_value(c, self.metric)) is not None]
        scored.sort(key=lambda vc: (vc[0] if self.mode == "min" else -vc[0], -vc[1].steps_completed))
        return {c.uuid for _, c in scored[: self.n]}

    def __repr__(self):
        return f"keep_best({self.n}, {self.metric!r}, mode={self.mode!r})"


class keep_every(Counted, RetentionPolicy):
    """Keep every checkpoint whose ``steps_completed`` is a multiple of ``n``."""

    def keep(self, checkpoints):
        return {c.uuid for c in checkpoints if c.steps_completed % self.n == 0}


def metric_value(checkpoint: Manifest, metric: str) -> float | None:
    """The value of ``metric`` recorded with a checkpoint, or None."""
    metrics = checkpoint.metadata.get("metrics")
    value = metrics.get(metric) if isinstance(metrics, dict) else None
    if value is None:
        value = checkpoint.metadata.get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def to_delete(policy: RetentionPolicy, checkpoints: Sequence[Manifest], protected: Iterable[str]) -> list[Manifest]:
    """The checkpoints the policy lets go, never any of ``protected``; oldest first."""
    kept = policy.keep(checkpoints) | set(protected)
    return [c for c in checkpoints if c.uuid not in kept]
