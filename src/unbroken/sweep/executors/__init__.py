"""Executors: where trial segments run (local processes, Slurm jobs, Ray tasks); see :mod:`.base`."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ..forms import kind_and_options
from .base import LOST, Executor, SegmentJob
from .local import LocalExecutor

NAMES = ("local", "slurm", "ray")


def make_executor(raw: Any) -> Executor:
    """An executor from ``{type: local|slurm|ray, ...options}``, a name, None (local) or an Executor."""
    if isinstance(raw, Executor):
        return raw
    kind, options = kind_and_options(raw, "type", "executor", "{type: slurm, partition: debug}", "local")
    try:
        if kind == "local":
            if options:
                raise ConfigError(f"the local executor takes no options, not {sorted(options)}")
            return LocalExecutor()
        if kind == "slurm":
            from .slurm import SlurmExecutor  # noqa: PLC0415

            return SlurmExecutor(**options)
        if kind == "ray":
            from .rayexec import RayExecutor  # noqa: PLC0415

            return RayExecutor(**options)
    except TypeError as exc:
        raise ConfigError(f"executor {kind}: {exc}") from None
    raise ConfigError(f"unknown executor {kind!r}; known: {', '.join(NAMES)}")


__all__ = ["Executor", "LOST", "LocalExecutor", "NAMES", "SegmentJob", "make_executor"]
