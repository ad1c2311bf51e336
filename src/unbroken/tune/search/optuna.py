"""``ray.tune.search.optuna.OptunaSearch`` on unbroken's Optuna searcher (needs ``unbroken[sweep]``)."""

from __future__ import annotations

from typing import Any

from ...sweep.optuna_search import OptunaSearcher


class OptunaSearch(OptunaSearcher):
    """Optuna's ask/tell search; ``metric``/``mode`` may be given here or to ``tune.run``."""

    def __init__(self, space: Any = None, metric: str | None = None, mode: str | None = None, sampler: Any = "tpe",
                 seed: int | None = 0, storage: str | None = None, **_ignored: Any):
        super().__init__(sampler=sampler, seed=seed, storage=storage)
        self.own_metric, self.own_mode = metric, mode

    def bind(self, space, num_samples, metric, mode) -> None:
        super().bind(space, num_samples, self.own_metric or metric, self.own_mode or mode)
