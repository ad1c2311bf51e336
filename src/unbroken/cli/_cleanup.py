"""Commands that delete: `unbroken rm`, `unbroken rm-experiment`, `unbroken gc`."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import click

from ..checkpoint import CheckpointStore
from ..config import check_name
from ..errors import CheckpointNotFound, NotFound
from ..storage import LocalStorage
from ..storage.locks import WriterLease
from ..tracking import Tracker, Trial
from . import _checks
from . import _output as out
from ._checks import Entry
from ._output import CliError, json_command
from ._resolve import Target, checkpoints_dir, find_trial, home_of, open_index, trial_store, trials_on_disk
from ._verify import record_outcome

# -- rm ------------------------------------------------------------------------------------------
@click.command("rm")
@click.argument("trial")
@click.option("--uuid", "uuids", multiple=True, help="A checkpoint to delete (repeatable).")
@click.option("--all-checkpoints", "everything", is_flag=True, help="Delete every checkpoint of TRIAL.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (--all-checkpoints).")
@json_command
def rm(ctx: click.Context, trial: str, uuids: tuple[str, ...], everything: bool, yes: bool, as_json: bool) -> None:
    """Delete checkpoints of TRIAL from storage (and mark them deleted in the index).

    \b
    --json prints:  {"trial": "exp/1", "deleted": [uuid, ...]}
    """
    if bool(uuids) == everything:
        raise CliError("say what to delete: --uuid UUID (repeatable) or --all-checkpoints")
    home = home_of(ctx)
    tracker = open_index(ctx, home)
    found = find_trial(tracker, trial)
    store = trial_store(home, found)
    present = set(store.storage.names())
    newest_first = [m.uuid for m in reversed(store.list())]  # an incremental checkpoint before what it refers to
    doomed = ([u for u in newest_first if u in present] + sorted(present - set(newest_first))) if everything \
        else list(dict.fromkeys(uuids))
    for uuid in doomed:
        if uuid not in present:
            raise CheckpointNotFound(f"no checkpoint {uuid} in {store.storage.location} "
                                     f"(list them with `unbroken checkpoints {found.ref}`)")
    if everything and doomed and not yes:
        running = " The trial is running." if found.status == "running" else ""
        click.confirm(f"Delete all {len(doomed)} checkpoint(s) of trial {found.ref}?{running}", abort=True, err=True)
    for uuid in doomed:
        store.delete(uuid)
        tracker.mark_checkpoint(uuid, "deleted")
    if as_json:
        out.emit_json({"trial": found.ref, "deleted": doomed})
    else:
        click.echo(f"deleted {len(doomed)} checkpoint(s) of trial {found.ref}" + "".join(f"\n  {u}" for u in doomed))


# -- rm-experiment -------------------------------------------------------------------------------
@click.command("rm-experiment")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_command
def rm_experiment(ctx: click.Context, name: str, yes: bool, as_json: bool) -> None:
    """Delete experiment NAME: its trials, attempts, checkpoints and metrics in the index, and its
    folder HOME/experiments/NAME (checkpoints and logs). Asks first unless --yes.

    \b
    --json prints:  {"experiment": str, "trials": int, "folder": str|null}
    folder is the path removed, null when there was none.
    """
    check_name(name)
    home = home_of(ctx)
    tracker = open_index(ctx, home, required=False)
    folder = home / "experiments" / name
    trials = _trials_of(tracker, name)
    on_disk = folder.exists() or folder.is_symlink()
    if trials is None and not on_disk:
        if tracker is None:
            raise CliError(f"no runs yet in {home}")
        tracker.experiment(name)  # raises NotFound with the usual message
    if not yes:
        click.confirm(_rm_question(name, trials or [], folder if on_disk else None), abort=True, err=True)
    with _writing_every_trial(home, name):  # TrialBusy while any trial has a live writer
        if on_disk and not folder.is_symlink():
            _delete_checkpoints(home, name)  # CheckpointError while a reader holds one
        if trials is not None:
            tracker.delete_experiment(name)
        if on_disk:
            folder.unlink() if folder.is_symlink() else shutil.rmtree(folder)
    if as_json:
        out.emit_json({"experiment": name, "trials": len(trials or []), "folder": str(folder) if on_disk else None})
    else:
        where = f", folder {folder}" if on_disk else ""
        click.echo(f"deleted experiment {name}: {len(trials or [])} trial(s){where}")


@contextlib.contextmanager
def _writing_every_trial(home: Path, name: str):
    """Hold the writer lease of every trial folder of experiment ``name`` for the block (no waiting)."""
    with contextlib.ExitStack() as stack:
        for paths in trials_on_disk(home):
            if paths.experiment == name:
                stack.enter_context(WriterLease(paths.writer_lock, f"trial {name}/{paths.number}").acquire())
        yield


def _delete_checkpoints(home: Path, name: str) -> None:
    """Delete every checkpoint of the experiment's trials through their stores (read leases respected)."""
    for paths in trials_on_disk(home):
        if paths.experiment == name:
            store = CheckpointStore(LocalStorage(paths.checkpoints))
            for manifest in reversed(store.list()):  # newest first: referring checkpoints go before their sources
                store.delete(manifest.uuid)


def _trials_of(tracker: Tracker | None, name: str) -> list[Trial] | None:
    """The trials of experiment ``name``, or None when the index does not know it."""
    if tracker is None:
        return None
    try:
        tracker.experiment(name)
    except NotFound:
        return None
    return tracker.trials(name)


def _rm_question(name: str, trials: list[Trial], folder: Path | None) -> str:
    running = [t.ref for t in trials if t.status == "running"]
    parts = [f"Delete experiment {name}: {len(trials)} trial(s) in the index"]
    if folder is not None:
        parts.append(f" and the folder {folder} ({out.size(_folder_size(folder))})")
    if running:
        parts.append(f". Still running: {', '.join(running)}")
    return "".join(parts) + "?"


def _folder_size(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


# -- gc ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Site:
    """One trial's checkpoints folder, and the trial in the index when there is one."""

    ref: str
    folder: Path
    trial: Trial | None


@click.command("gc")
@click.argument("trial", required=False)
@click.option("--corrupt", is_flag=True, help="Also delete corrupt checkpoints (re-checked first).")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@json_command
def gc(ctx: click.Context, trial: str | None, corrupt: bool, dry_run: bool, as_json: bool) -> None:
    """Remove staging folders left by writers that died, for TRIAL or every trial folder in HOME.

    With --corrupt, also delete corrupt checkpoints: folders without a valid manifest (except
    those written by a newer unbroken) and checkpoints marked corrupt in the index that still
    fail verification (run `unbroken verify` first to find corrupt ones by their bytes).

    \b
    --json prints:
      {"dry_run": bool, "removed": [{"trial": "exp/1", "kind": "staging"|"corrupt",
                                     "name": str, "path": str, "reason": str|null}]}
    with --dry-run, "removed" lists what would be removed.
    """
    home = home_of(ctx)
    tracker = open_index(ctx, home, required=trial is not None)
    sites = [_site_of(home, find_trial(tracker, trial))] if trial else _all_sites(home, tracker)
    removed: list[dict[str, Any]] = []
    for site in sites:
        removed += _gc_staging(site, dry_run)
        if corrupt:
            removed += _gc_corrupt(site, tracker, dry_run)
    if as_json:
        out.emit_json({"dry_run": dry_run, "removed": removed})
        return
    verb = "would remove" if dry_run else "removed"
    for r in removed:
        click.echo(f"{verb} {r['kind']} {r['path']}" + (f"  ({out.short(r['reason'], 100)})" if r["reason"] else ""))
    click.echo(f"{verb} {len(removed)} item(s)" if removed else "nothing to clean")


def _site_of(home: Path, trial: Trial) -> _Site:
    return _Site(trial.ref, checkpoints_dir(home, trial), trial)


def _all_sites(home: Path, tracker: Tracker | None) -> list[_Site]:
    """Every trial's checkpoints folder on disk (storage is the truth), with its index row if any."""
    return [_Site(f"{p.experiment}/{p.number}", p.checkpoints, _indexed(tracker, p.experiment, p.number))
            for p in trials_on_disk(home)]


def _indexed(tracker: Tracker | None, experiment: str, number: int) -> Trial | None:
    if tracker is None:
        return None
    try:
        return tracker.trial(experiment, number)
    except NotFound:
        return None


def _gc_staging(site: _Site, dry_run: bool) -> list[dict[str, Any]]:
    store = CheckpointStore(LocalStorage(site.folder))
    names = store.stale_staging() if dry_run else store.clean_stale()
    return [_item(site, "staging", name, None) for name in sorted(names)]


def _gc_corrupt(site: _Site, tracker: Tracker | None, dry_run: bool) -> list[dict[str, Any]]:
    target = Target(site.ref, site.folder, CheckpointStore(LocalStorage(site.folder)), site.trial,
                    tracker if site.trial else None)
    marked = set()
    if target.tracker is not None:
        marked = {r.uuid for r in target.tracker.checkpoints(site.trial.id) if r.state == "corrupt"}
    doomed = []
    for entry in reversed(_checks.entries(target)):  # newest first: an incremental checkpoint before what it uses
        why = _why_corrupt(entry, marked)
        if not dry_run and entry.uuid in marked:
            record_outcome(target, entry, why)  # a mark that no longer holds is cleared
        if why is None:
            continue
        if not dry_run and not target.store.try_delete(entry.uuid):
            click.echo(f"skipped {entry.uuid} of {site.ref}: it is being read (a restore holds it), or later "
                       "checkpoints use its files", err=True)
            continue
        doomed.append(_item(site, "corrupt", entry.uuid, why))
        if not dry_run and target.tracker is not None:
            target.tracker.mark_checkpoint(entry.uuid, "deleted", why)
    return doomed


def _why_corrupt(entry: Entry, marked: set[str]) -> str | None:
    """Why ``entry`` should go: no valid manifest, or marked corrupt and still failing verification."""
    if entry.manifest is None:
        return None if entry.newer else _checks.reason(entry.uuid, entry.problem)
    if entry.uuid in marked:
        return _checks.verify(entry, lambda n: None)
    return None


def _item(site: _Site, kind: str, name: str, reason: str | None) -> dict[str, Any]:
    return {"trial": site.ref, "kind": kind, "name": name, "path": str(site.folder / name), "reason": reason}
