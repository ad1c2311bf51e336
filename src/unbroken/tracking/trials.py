"""Joining a trial: the one place that decides which trial a run, a supervisor or a Slurm job
writes to, creating it when needed.

:func:`join_trial` runs in the caller's thread as one write transaction of the index (it blocks
on other writers for up to the busy timeout), so processes joining at once never create two
trials for one intent nor pick the same number.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Callable

from ..config import check_name
from ..errors import ConfigError, TrialNotFound
from ._lazy import lazy_module
from .index import Tracker
from .records import Trial, to_json
from .rows import insert_trial, next_trial_number
from .values import check_steps

if TYPE_CHECKING:
    import sqlalchemy

sa = lazy_module("sqlalchemy")
tables = lazy_module("unbroken.tracking.tables")


def join_trial(tracker: Tracker, experiment: str, *, hparams: dict[str, Any] | None = None, fresh: bool = False,
               number: int | None = None, command: str | None = None,
               storage_of: Callable[[int], Any] | None = None) -> Trial:
    """Find or create the trial of ``experiment`` to write to.

    * ``number`` given: that trial; created if it is exactly the next number, else
      :class:`TrialNotFound` naming the next new one.
    * ``fresh``: a new trial (one past the last).
    * otherwise: the newest trial of the experiment, or trial 1 if it has none.

    ``hparams`` (when given) must equal the stored ones of an existing trial, else ConfigError
    saying how to resume or start fresh; a trial stored with empty hparams (made by a supervisor
    that did not know them) adopts them. ``command`` is stored on the trial when given.
    ``storage_of(number)`` names the storage of a trial created here. ``fresh`` and ``number``
    together are a ConfigError.
    """
    check_name(experiment)
    if fresh and number is not None:
        raise ConfigError(f"pass either number={number!r} (resume that trial) or fresh=True (a new one), not both")
    wanted = None if number is None else _check_number(number)
    given = None if hparams is None else to_json(hparams, "hparams")
    exp = tracker.experiment(experiment, create=True)

    def find_or_create(conn: "sqlalchemy.Connection") -> int:
        following = next_trial_number(conn, exp.id)  # locks the experiment: joiners take turns
        target = wanted or (following if fresh else max(following - 1, 1))
        if target == following:
            return insert_trial(conn, exp.id, target, given or "{}", storage_of, command)
        t = tables.trials
        row = conn.execute(sa.select(t.c.id, t.c.hparams, t.c.command)
                           .where(t.c.experiment_id == exp.id, t.c.number == target)).first()
        if row is None:
            raise TrialNotFound(f"trial {experiment}/{target} does not exist (the next new one is "
                                f"{experiment}/{following}); name an existing trial (see `unbroken ls`) or "
                                "none to resume the newest")
        _adopt(conn, f"{experiment}/{target}", row, given, command)
        return row[0]

    return tracker.trial_by_id(tracker._write(find_or_create))


def _adopt(conn: "sqlalchemy.Connection", ref: str, row: tuple, given: str | None, command: str | None) -> None:
    """Check ``given`` hparams against an existing trial's; store adopted hparams and a new command."""
    trial_id, stored, stored_command = row
    sets: dict[str, Any] = {}
    if given is not None and to_json(json.loads(stored), "hparams") != given:
        if json.loads(stored):
            raise ConfigError(
                f"trial {ref} was started with hparams {json.loads(stored)}, not {json.loads(given)}: pass the "
                "same hparams to resume it, or fresh=True (`unbroken run --fresh`) to start a new trial")
        sets["hparams"] = given
    if command is not None and command != stored_command:
        sets["command"] = command
    if sets:
        t = tables.trials
        conn.execute(t.update().where(t.c.id == trial_id).values(**sets, updated_at=time.time()))


def _check_number(number: Any) -> int:
    value = check_steps(number, "trial number")
    if value < 1:
        raise ConfigError(f"trial numbers start at 1, not {value}")
    return value
