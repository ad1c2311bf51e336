"""`unbroken checkpoints TRIAL [--verify]`: a trial's checkpoints as storage holds them."""

from __future__ import annotations

from typing import Any

import click

from ..tracking import CheckpointRecord
from . import _output as out
from ._checks import Entry, entries, reason
from ._output import json_command
from ._resolve import find_trial, home_of, open_index, trial_target
from ._verify import run_checks


# -- checkpoints ---------------------------------------------------------------------------------
@click.command("checkpoints")
@click.argument("trial")
@click.option("--verify", "check", is_flag=True, help="Re-checksum every file (and record corrupt ones).")
@json_command
def checkpoints(ctx: click.Context, trial: str, check: bool, as_json: bool) -> None:
    """List the checkpoints of TRIAL as storage holds them, with the index's corrupt marks.

    STATE is "committed" (valid manifest, recorded as committed, or verified now), "corrupt"
    (unreadable manifest, marked corrupt in the index, or failing --verify) or "unverified"
    (valid manifest, but not in the index: its files were never checked by this database).

    \b
    --json prints:
      {"trial": "exp/1", "location": str, "verified": bool,
       "checkpoints": [{"uuid": str, "steps_completed": int|null, "size_bytes": int|null,
                        "created_at": float|null, "state": "committed"|"corrupt"|"unverified",
                        "reason": str|null, "files": int|null, "metadata": {}}]}
    oldest first; folders without a valid manifest come last (their numbers from the index).
    """
    home = home_of(ctx)
    tracker = open_index(ctx, home, readonly=not check)  # --verify records corrupt marks
    found = find_trial(tracker, trial)
    target = trial_target(home, tracker, found)
    items = entries(target)
    results = run_checks(target, items) if check else None
    records = {r.uuid: r for r in tracker.checkpoints(found.id)}
    rows = [_checkpoint_json(e, records.get(e.uuid), results) for e in items]
    if as_json:
        out.emit_json({"trial": found.ref, "location": str(target.location), "verified": check, "checkpoints": rows})
    elif not rows:
        click.echo(f"trial {found.ref} has no checkpoints in {target.location}")
    else:
        out.console().print(_checkpoints_table(rows))


def _checkpoint_json(entry: Entry, record: CheckpointRecord | None, results: dict[str, str | None] | None
                     ) -> dict[str, Any]:
    m = entry.manifest
    state, reason = _state_of(entry, record, results)
    return {
        "uuid": entry.uuid,
        "steps_completed": m.steps_completed if m else record and record.steps_completed,
        "size_bytes": m.size if m else record and record.size_bytes,
        "created_at": m.created_at if m else record and record.created_at,
        "state": state, "reason": reason,
        "files": len(m.files) if m else None,
        "metadata": m.metadata if m else (record.metadata if record else {}),
    }


def _state_of(entry: Entry, record: CheckpointRecord | None, results: dict[str, str | None] | None
              ) -> tuple[str, str | None]:
    if results is not None:
        why = results[entry.uuid]
        return ("corrupt", why) if why else ("committed", None)
    if entry.problem:
        return "corrupt", reason(entry.uuid, entry.problem)
    if record is not None and record.state == "corrupt":
        return "corrupt", reason(entry.uuid, record.message)
    if record is not None and record.state == "committed":
        return "committed", None
    return "unverified", None


def _checkpoints_table(rows: list[dict[str, Any]]):
    table = out.table("UUID", "STEP", "SIZE", "AGE", "STATE", "METADATA")
    for r in rows:
        state = r["state"] + (f": {out.short(r['reason'], 70)}" if r["reason"] else "")
        step = "-" if r["steps_completed"] is None else str(r["steps_completed"])
        table.add_row(r["uuid"], step, out.size(r["size_bytes"]), out.age(r["created_at"]), state,
                      out.summary(r["metadata"]))
    return table
