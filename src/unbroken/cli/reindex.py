"""`unbroken reindex [TRIAL|EXPERIMENT|--all]`: rebuild the index's checkpoint rows from storage.

Checkpoints are the truth, the index only describes them. For each chosen trial the committed
checkpoints in its folder are listed with the checkpoint store and handed to
:func:`unbroken.tracking.reconcile_checkpoints`, which adds the missing rows, marks rows of
checkpoints gone from storage 'deleted' and sets the trial's steps_completed. Trials whose folder
holds checkpoints but that the index does not know (an index rebuilt after corruption, or
copied from elsewhere) are re-created first, with their numbers; a corrupt index file is moved
aside and a new one started (:meth:`Tracker.open_or_rebuild`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import click

from ..checkpoint.store.trialstore import location_of
from ..config import DB_FILENAME
from ..errors import UnbrokenWarning
from ..tracking import Tracker, join_trial, reconcile_checkpoints
from ..tracking.url import backend_of, sqlite_path
from . import _output as out
from ._output import CliError, json_command
from ._resolve import db_url_of, home_of, parse_trial, trial_store, trials_on_disk

#: The message of a trial that reindex put back into the index.
RECREATED = "re-created by `unbroken reindex` from its folder (hparams and history were not recoverable)"


@click.command("reindex")
@click.argument("target", required=False)
@click.option("--all", "everything", is_flag=True, help="Every trial in the index or on disk (the default).")
@json_command
def reindex(ctx: click.Context, target: str | None, everything: bool, as_json: bool) -> None:
    """Rebuild the index's checkpoints of TARGET from storage: EXPERIMENT/NUMBER (one trial),
    EXPERIMENT (all its trials) or --all (every trial; also without TARGET).

    Trials found on disk but missing from the index are re-created with their numbers.

    \b
    --json prints:
      {"home": str, "rebuilt_index": bool,
       "trials": [{"trial": "exp/1", "recreated": bool, "added": int, "marked_deleted": int,
                   "unchanged": int, "steps_completed": int}]}
    added: checkpoints in storage now indexed as committed; marked_deleted: rows of checkpoints
    gone from storage, now 'deleted'; unchanged: rows kept; rebuilt_index: the index file was
    corrupt and was moved aside (its new name is printed on stderr).
    """
    if target and everything:
        raise CliError("say either TARGET or --all, not both")
    home = home_of(ctx)
    tracker, rebuilt = _open(ctx, home)
    chosen = _chosen(home, tracker, target)
    recreated = _recreate_missing(tracker, home, chosen)
    rows = [_reconcile(tracker, home, experiment, number, (experiment, number) in recreated)
            for experiment, number in _indexed(tracker, chosen)]
    if as_json:
        out.emit_json({"home": str(home), "rebuilt_index": rebuilt, "trials": rows})
    else:
        _print(rows)


def _open(ctx: click.Context, home: Path) -> tuple[Tracker, bool]:
    """The index of ``home`` opened for writing (a corrupt one moved aside); True if it was rebuilt."""
    db = db_url_of(ctx, home)
    if backend_of(db) == "sqlite" and not sqlite_path(db).is_file() and not trials_on_disk(home):
        raise CliError(f"no runs yet in {home} (no {DB_FILENAME} and no trial folders): nothing to reindex")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnbrokenWarning)
        tracker = Tracker.open_or_rebuild(db)
    ctx.call_on_close(tracker.close)
    moved = [w for w in caught if issubclass(w.category, UnbrokenWarning)]
    for warning in moved:
        out.note(f"unbroken: {warning.message}")
    return tracker, bool(moved)


def _chosen(home: Path, tracker: Tracker, target: str | None) -> list[tuple[str, int]]:
    """The (experiment, number) pairs to reindex: in the index or on disk, matching ``target``."""
    known = {(p.experiment, p.number) for p in trials_on_disk(home)}
    known |= {(t.experiment, t.number) for t in tracker.trials()}
    if target is None:
        return sorted(known)
    experiment, number = parse_trial(target)
    chosen = sorted(k for k in known if k[0] == experiment and number in (None, k[1]))
    if not chosen:
        raise CliError(f"nothing to reindex for {target!r}: no such trial in the index or in {home / 'experiments'}")
    return chosen


def _recreate_missing(tracker: Tracker, home: Path, chosen: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """Put trials of ``chosen`` the index lacks back into it, numbers kept; return those created.

    Numbers are given in order, so a missing trial below one to re-create (a folder deleted by
    hand) is re-created as well, with no files.
    """
    created: set[tuple[str, int]] = set()
    for experiment in sorted({e for e, _ in chosen}):
        present = {t.number for t in tracker.trials(experiment)}
        wanted = max((n for e, n in chosen if e == experiment and n not in present), default=0)
        for number in range(max(present, default=0) + 1, wanted + 1):
            trial = join_trial(tracker, experiment, number=number, storage_of=location_of(home, experiment, None))
            tracker.update_trial(trial.id, message=RECREATED)
            created.add((experiment, number))
    return created


def _indexed(tracker: Tracker, chosen: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The pairs of ``chosen`` the index knows; the others (a gap below later trials, which the
    index cannot number any more) are named on stderr and skipped."""
    known = {(t.experiment, t.number) for t in tracker.trials()}
    for experiment, number in chosen:
        if (experiment, number) not in known:
            out.note(f"unbroken: cannot re-create {experiment}/{number} in the index: it already has later "
                     f"trials of {experiment} (its checkpoints stay readable with `unbroken verify PATH`)")
    return [pair for pair in chosen if pair in known]


def _reconcile(tracker: Tracker, home: Path, experiment: str, number: int, recreated: bool) -> dict[str, Any]:
    """Reconcile one trial's rows with the committed checkpoints in its folder."""
    trial = tracker.trial(experiment, number)
    committed = trial_store(home, trial).list()  # where its checkpoints are: the home, or an object store
    report = reconcile_checkpoints(tracker, trial.id, committed)
    return {"trial": trial.ref, "recreated": recreated, "added": report.added,
            "marked_deleted": report.marked_deleted, "unchanged": report.unchanged,
            "steps_completed": report.steps_completed}


def _print(rows: list[dict[str, Any]]) -> None:
    table = out.table("TRIAL", "ADDED", "MARKED DELETED", "UNCHANGED", "STEPS", "NOTE")
    for r in rows:
        table.add_row(r["trial"], str(r["added"]), str(r["marked_deleted"]), str(r["unchanged"]),
                      str(r["steps_completed"]), "re-created in the index" if r["recreated"] else "")
    out.console().print(table)
    changed = sum(r["added"] + r["marked_deleted"] + r["recreated"] for r in rows)
    click.echo(f"reindexed {len(rows)} trial(s): " + (f"{changed} change(s)" if changed else "the index already matched storage"))
