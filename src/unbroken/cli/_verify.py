"""`unbroken verify` and `unbroken export`: re-checksum checkpoints, copy them out verified."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

import click

from ..checkpoint.saving import flatten
from ..checkpoint.saving.statefile import STATE_JSON, TENSORS_FILE
from ..errors import CheckpointGone, CorruptCheckpoint, NotFound, UnsupportedFormatVersion
from . import _checks
from . import _output as out
from ._checks import Entry, entries
from ._output import CliError, handle_errors, json_option
from ._resolve import Target, resolve_target


def run_checks(target: Target, items: list[Entry]) -> dict[str, str | None]:
    """Re-checksum ``items`` (see :func:`check_all`); ``{uuid: reason}``, None for a good or gone checkpoint."""
    return {uuid: o.reason if o.status == "corrupt" else None for uuid, o in check_all(target, items).items()}


def check_all(target: Target, items: list[Entry]) -> dict[str, _checks.Outcome]:
    """Re-checksum ``items`` under one progress bar; record damage (only) in the index of a trial.

    A checkpoint gone meanwhile, or written by a newer unbroken, is never marked corrupt.
    """
    results: dict[str, _checks.Outcome] = {}
    with out.byte_progress(sum(e.verify_size for e in items), f"verifying {target.label}") as advance:
        for entry in items:
            results[entry.uuid] = _checks.check(entry, advance)
    if target.tracker is not None:
        for entry in items:
            outcome = results[entry.uuid]
            if outcome.status == "ok" or outcome.damaged:
                record_outcome(target, entry, outcome.reason if outcome.damaged else None)
    return results


def record_outcome(target: Target, entry: Entry, reason: str | None) -> None:
    """Mark a checkpoint corrupt in the index (adding it if needed), or clear a mark that no longer holds."""
    tracker, trial = target.tracker, target.trial
    try:
        record = tracker.checkpoint(entry.uuid)
    except NotFound:
        record = None
    if record is not None and record.trial_id != trial.id:
        return  # a copy of another trial's checkpoint: its row belongs to that trial
    if reason is None:
        if record is not None and record.state == "corrupt":
            tracker.mark_checkpoint(entry.uuid, "committed")
        return
    if record is None:
        m = entry.manifest
        if m is None:
            return  # no manifest, no steps: nothing the index could list
        tracker.record_checkpoint(trial.id, m.uuid, m.steps_completed, created_at=m.created_at, size_bytes=m.size,
                                  metadata=m.metadata, state="corrupt")
    tracker.mark_checkpoint(entry.uuid, "corrupt", reason)


# -- verify --------------------------------------------------------------------------------------
@click.command("verify")
@click.argument("target")
@click.option("--uuid", help="Only this checkpoint.")
@json_option
@click.pass_context
@handle_errors
def verify(ctx: click.Context, target: str, uuid: str | None, as_json: bool) -> None:
    """Re-checksum every checkpoint of TARGET (or one, --uuid); exit status 1 if any is corrupt.

    TARGET is a trial (EXPERIMENT or EXPERIMENT/NUMBER; corrupt checkpoints are then marked in
    the index) or a PATH needing no database: a checkpoints folder, a trial folder, or a single
    checkpoint folder (one holding MANIFEST.json).

    \b
    --json prints:
      {"target": str, "location": str, "ok": bool,
       "checkpoints": [{"uuid": str, "steps_completed": int|null, "size_bytes": int,
                        "status": "ok"|"corrupt"|"gone", "reason": str|null}]}
    "gone": deleted (by retention, gc) while being verified; not a failure.
    """
    resolved = resolve_target(ctx, target)
    items = entries(resolved, uuid)
    if not items and resolved.trial is None:
        raise CliError(f"no checkpoints in {resolved.location}")
    results = check_all(resolved, items)
    rows = [_verify_row(e, results[e.uuid]) for e in items]
    bad = [r for r in rows if r["status"] == "corrupt"]
    if as_json:
        out.emit_json({"target": resolved.label, "location": str(resolved.location), "ok": not bad,
                       "checkpoints": rows})
    else:
        _print_verify(resolved, rows)
    if bad:
        raise CliError(f"{len(bad)} of {len(rows)} checkpoint(s) in {resolved.label} corrupt")


def _verify_row(entry: Entry, outcome: _checks.Outcome) -> dict[str, Any]:
    return {"uuid": entry.uuid, "steps_completed": entry.manifest.steps_completed if entry.manifest else None,
            "size_bytes": entry.size, "status": outcome.status, "reason": outcome.reason}


def _print_verify(target: Target, rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo(f"{target.label}: no checkpoints in {target.location}")
        return
    for r in rows:
        step = "-" if r["steps_completed"] is None else r["steps_completed"]
        if r["status"] == "ok":
            click.echo(f"OK       {r['uuid']}  step {step}  {out.size(r['size_bytes'])}")
        elif r["status"] == "gone":
            click.echo(f"GONE     {r['uuid']}  step {step}  gone ({r['reason']})")
        else:
            click.echo(f"CORRUPT  {r['uuid']}  step {step}  {r['reason']}")
    ok = sum(r["status"] == "ok" for r in rows)
    gone = len(rows) - ok - sum(r["status"] == "corrupt" for r in rows)
    if ok + gone == len(rows):
        click.echo(f"all {ok} checkpoint(s) of {target.label} verify" + (f" ({gone} gone meanwhile)" if gone else ""))


# -- export --------------------------------------------------------------------------------------
@click.command("export")
@click.argument("source")
@click.option("--uuid", help="The checkpoint to export (default: the newest that verifies).")
@click.option("--to", "dest", required=True, type=click.Path(path_type=Path),
              help="A new folder, or a FILE.safetensors for the tensors of a State checkpoint.")
@json_option
@click.pass_context
@handle_errors
def export(ctx: click.Context, source: str, uuid: str | None, dest: Path, as_json: bool) -> None:
    """Copy a checkpoint of SOURCE out, verifying every byte copied.

    SOURCE is a trial, or a checkpoint / checkpoints / trial folder. --to DIR writes the files
    and MANIFEST.json into DIR (new or empty); --to FILE.safetensors writes the tensors of a
    checkpoint saved from unbroken.State (readable by the safetensors library). Without --uuid
    the newest checkpoint that verifies is taken; corrupt ones are skipped and reported.
    An incremental checkpoint is written out complete: one tensor file with every tensor (its
    own and those of the earlier checkpoints it refers to, each checked against its checksum)
    and, for a folder, a MANIFEST.json without references (same uuid and steps).

    \b
    --json prints:
      {"uuid": str, "steps_completed": int, "source": str, "to": str,
       "format": "directory"|"safetensors", "files": [str], "size_bytes": int}
    """
    resolved = resolve_target(ctx, source)
    dest = dest.expanduser().absolute()
    tensors_only = dest.suffix == ".safetensors"
    _check_dest(dest, tensors_only)
    for entry in _export_candidates(resolved, uuid):
        try:
            files = _export_tensors(entry, dest) if tensors_only else _export_dir(entry, dest)
        except CheckpointGone:
            if uuid or resolved.single:
                raise
            out.note(f"skipping checkpoint {entry.uuid}: it was deleted while being exported")
            continue
        except CorruptCheckpoint as exc:
            why = _checks.reason(entry.uuid, str(exc))
            if resolved.tracker is not None and not entry.newer:
                record_outcome(resolved, entry, why)
            if uuid or resolved.single:
                raise
            out.note(f"skipping corrupt checkpoint {entry.uuid}: {why}")
            continue
        _report_export(entry, resolved, dest, files, tensors_only, as_json)
        return
    raise CliError(f"no checkpoint of {resolved.label} verifies: nothing to export")


def _export_candidates(target: Target, uuid: str | None) -> list[Entry]:
    items = entries(target, uuid)
    if uuid or target.single:
        return items
    marked = set()
    if target.tracker is not None:
        marked = {r.uuid for r in target.tracker.checkpoints(target.trial.id) if r.state == "corrupt"}
    return [e for e in reversed(items) if e.manifest is not None and e.uuid not in marked]


def _check_dest(dest: Path, tensors_only: bool) -> None:
    if tensors_only and (dest.exists() or dest.is_symlink()):
        raise CliError(f"{dest} exists already: choose a new file name")
    if not tensors_only and (dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir())))):
        raise CliError(f"{dest} exists and is not an empty folder: choose a new one")


def _export_dir(entry: Entry, dest: Path) -> list[str]:
    """Copy checkpoint ``entry`` into the new or empty folder ``dest``; return the files written.

    An incremental checkpoint is flattened (:func:`~unbroken.checkpoint.saving.flatten.flatten_checkpoint`):
    one complete tensor file and a manifest without references, same uuid and steps.
    """
    manifest = _manifest_of(entry)
    staging = _staging(dest)
    try:
        if manifest.refs:
            with out.byte_progress(flatten.sources_size(manifest), f"exporting {entry.uuid}") as advance:
                written = flatten.flatten_checkpoint(entry.local_directory(), manifest, staging,
                                                     resolve=_resolver(entry), progress=advance)
            files = [f.path for f in written.files]
        else:
            staging.mkdir(parents=True)
            with out.byte_progress(manifest.size, f"exporting {entry.uuid}") as advance:
                for file in manifest.files:
                    _checks.copy_file(entry, file, staging / file.path, advance)
            _checks.copy_manifest(entry, staging / "MANIFEST.json")
            files = [f.path for f in manifest.files]
        os.replace(staging, dest)  # dest is absent or an empty folder
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return files + ["MANIFEST.json"]


def _export_tensors(entry: Entry, dest: Path) -> list[str]:
    manifest = _manifest_of(entry)
    files = {f.path: f for f in manifest.files}
    if STATE_JSON not in files:
        raise CliError(f"checkpoint {entry.uuid} holds no State tensors: it was not saved from unbroken.State "
                       f"(no {STATE_JSON}); export it to a folder instead (--to DIR)")
    if TENSORS_FILE not in files and not manifest.refs:
        raise CliError(f"checkpoint {entry.uuid} holds no {TENSORS_FILE}: its State has no tensors")
    staging = _staging(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        if manifest.refs:  # incremental: every tensor, own and referenced, into one complete file
            with out.byte_progress(flatten.sources_size(manifest), f"exporting {entry.uuid}") as advance:
                flatten.flatten_tensors(entry.local_directory(), manifest, staging, resolve=_resolver(entry),
                                        progress=advance)
        else:
            with out.byte_progress(files[TENSORS_FILE].size, f"exporting {entry.uuid}") as advance:
                _checks.copy_file(entry, files[TENSORS_FILE], staging, advance)
        os.replace(staging, dest)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return [TENSORS_FILE]


def _resolver(entry: Entry) -> Callable[[str], Path] | None:
    """Where the checkpoints an incremental one refers to are: beside it (None), or for an object
    store a fresh download of each (what is checked is the storage, not an older cached copy)."""
    store = entry.store
    if store is None or store.storage.is_local:
        return None

    def resolve(uuid: str) -> Path:
        store.storage.forget_copy(uuid)
        return store.local_copy(uuid)
    return resolve


def _manifest_of(entry: Entry):
    if entry.newer:
        raise UnsupportedFormatVersion(entry.problem)
    if entry.manifest is None:
        raise CorruptCheckpoint(entry.problem or f"checkpoint {entry.uuid} has no valid manifest")
    return entry.manifest


def _staging(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.partial-{os.getpid()}"


def _report_export(entry: Entry, target: Target, dest: Path, files: list[str], tensors_only: bool,
                   as_json: bool) -> None:
    m = entry.manifest
    size = sum((dest / f).stat().st_size for f in files if f != "MANIFEST.json") if not tensors_only \
        else dest.stat().st_size
    if as_json:
        out.emit_json({"uuid": m.uuid, "steps_completed": m.steps_completed, "source": str(entry.directory),
                       "to": str(dest), "format": "safetensors" if tensors_only else "directory",
                       "files": files, "size_bytes": size})
    else:
        what = "tensors of checkpoint" if tensors_only else "checkpoint"
        click.echo(f"exported {what} {m.uuid} (step {m.steps_completed}, {out.size(size)}) of {target.label} "
                   f"to {dest}, verified")
