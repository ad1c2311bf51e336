"""Progress across allocations: how many allocations in a row committed no checkpoint past the best one.

A requeued (or chained) Slurm job whose allocations never get past the same step - the
checkpoints are deleted between allocations, every save fails, the margin is too short for a
save - would requeue forever. The supervisor keeps a small ledger per trial (in the trial's log
folder, next to the attempt logs, so it survives the job and deleted checkpoints) and
:func:`~unbroken.launch.decide.decide` stops requeueing after K stalled allocations in a row.

:meth:`Ledger.after` is pure; :func:`load_ledger` / :func:`save_ledger` do the file I/O (main thread).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

@dataclasses.dataclass(frozen=True)
class Ledger:
    """``best_steps``: the newest committed step any allocation ended with (-1: none yet);
    ``stalled``: allocations in a row that ended without passing it."""

    best_steps: int = -1
    stalled: int = 0

    def after(self, steps_now: int) -> "Ledger":
        """The ledger after an allocation that ends with ``steps_now`` as its newest committed step."""
        if steps_now > self.best_steps:
            return Ledger(steps_now, 0)
        return Ledger(self.best_steps, self.stalled + 1)


def load_ledger(path: Path) -> Ledger:
    """The ledger at ``path``; a fresh one if it is missing or unreadable (never an error)."""
    try:
        data = json.loads(path.read_text())
        return Ledger(int(data["best_steps"]), int(data["stalled"]))
    except (OSError, ValueError, KeyError, TypeError):
        return Ledger()


def save_ledger(path: Path, ledger: Ledger) -> None:
    """Write the ledger atomically (temporary file, then rename); an OSError is the caller's to report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(dataclasses.asdict(ledger)))
    os.replace(tmp, path)
