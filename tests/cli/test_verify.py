"""`unbroken verify` / `unbroken export` against a live trial and hostile folders.

A checkpoint deleted (by retention) while it is verified is "gone", not corrupt: no failure,
no mark in the index. A FIFO in place of a file or of MANIFEST.json is corrupt, never a hang.
A checkpoint written by a newer unbroken cannot be verified here, but is never marked corrupt.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil

import pytest

from unbroken.checkpoint import CheckpointStore
from unbroken.cli import _output
from unbroken.config import FORMAT_VERSION, MANIFEST_NAME
from unbroken.errors import NotFound
from unbroken.storage import LocalStorage

VERIFY_KEYS = {"uuid", "steps_completed", "size_bytes", "status", "reason"}


def delete_during_progress(monkeypatch, folder, uuid: str, at_call: int) -> list[int]:
    """Make the progress callback delete checkpoint ``uuid`` (as retention does) on its ``at_call``-th call."""
    calls: list[int] = []

    @contextlib.contextmanager
    def progress(_total, _description):
        def advance(n):
            calls.append(n)
            if len(calls) == at_call:
                CheckpointStore(LocalStorage(folder)).delete(uuid)
        yield advance
    monkeypatch.setattr(_output, "byte_progress", progress)
    return calls


def mark_of(trained, uuid: str) -> str | None:
    try:
        return trained.tracker().checkpoint(uuid).state
    except NotFound:
        return None


@pytest.mark.parametrize("at_call", [1, 3], ids=["deleted-before-its-turn", "deleted-between-its-files"])
def test_a_checkpoint_deleted_while_verifying_is_gone_not_corrupt(cli, trained, monkeypatch, at_call):
    # Oldest first, two files each: call 3 is the first file (state.json) of the checkpoint at step 4.
    victim = trained.uuids[4]
    calls = delete_during_progress(monkeypatch, trained.folder, victim, at_call)
    data = cli.json("verify", "exp")  # exit status 0
    assert len(calls) >= at_call
    rows = {r["uuid"]: r for r in data["checkpoints"]}
    assert all(set(r) == VERIFY_KEYS for r in rows.values())
    assert rows[victim]["status"] == "gone" and rows[victim]["reason"] == "deleted while verifying"
    assert data["ok"] is True and all(r["status"] == "ok" for u, r in rows.items() if u != victim)
    assert mark_of(trained, victim) != "corrupt"


def test_verify_prints_a_gone_checkpoint_and_exits_0(cli, trained, monkeypatch):
    delete_during_progress(monkeypatch, trained.folder, trained.uuids[8], 1)
    result = cli("verify", "exp")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("GONE"))
    assert trained.uuids[8] in line and "deleted while verifying" in line
    assert "CORRUPT" not in result.stdout and "all 5 checkpoint(s) of exp/1 verify (1 gone meanwhile)" in result.stdout


@pytest.mark.timeout(60)
@pytest.mark.parametrize("rel", ["tensors.safetensors", "state.json"])
def test_a_fifo_in_place_of_a_file_is_corrupt_not_a_hang(cli, trained, tmp_path, rel):
    path = trained.checkpoint(9) / rel
    path.unlink()
    os.mkfifo(path)
    data = cli.json("verify", "exp", code=1)
    bad = [r for r in data["checkpoints"] if r["status"] == "corrupt"]
    assert [r["uuid"] for r in bad] == [trained.uuids[9]] and bad[0]["reason"] == f"file {rel} is not a regular file"
    assert mark_of(trained, trained.uuids[9]) == "corrupt"
    # export skips it (already marked) and takes the one before; naming it fails at once
    exported = cli.json("export", "exp", "--to", tmp_path / "out")
    assert exported["uuid"] == trained.uuids[8]
    result = cli("export", "exp", "--uuid", trained.uuids[9], "--to", tmp_path / "again")
    assert result.exit_code == 1 and "not a regular file" in result.stderr
    assert not (tmp_path / "again").exists()


@pytest.mark.timeout(60)
def test_a_fifo_in_place_of_the_manifest_of_a_folder_is_corrupt_not_a_hang(cli, trained, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(trained.checkpoint(9), folder)
    (folder / MANIFEST_NAME).unlink()
    os.mkfifo(folder / MANIFEST_NAME)
    data = cli.json("verify", folder, code=1)
    assert data["checkpoints"][0]["status"] == "corrupt"
    assert "not a regular file" in data["checkpoints"][0]["reason"]
    result = cli("export", folder, "--to", tmp_path / "out")
    assert result.exit_code == 1 and "not a regular file" in result.stderr


def write_newer_manifest(folder) -> None:
    body = json.loads((folder / MANIFEST_NAME).read_text())
    body["format_version"] = FORMAT_VERSION + 1
    (folder / MANIFEST_NAME).write_text(json.dumps(body))  # its checksum no longer matters: newer format


def test_a_checkpoint_of_a_newer_format_is_not_verified_and_not_marked_corrupt(cli, trained, tmp_path):
    uuid = trained.uuids[9]
    write_newer_manifest(trained.checkpoint(9))
    data = cli.json("verify", "exp", "--uuid", uuid, code=1)
    row = data["checkpoints"][0]
    assert row["status"] == "corrupt" and "newer unbroken" in row["reason"] and "upgrade unbroken" in row["reason"]
    assert mark_of(trained, uuid) != "corrupt"
    result = cli("export", "exp", "--uuid", uuid, "--to", tmp_path / "out")
    assert result.exit_code == 1 and "upgrade unbroken to read it" in result.stderr
    assert mark_of(trained, uuid) != "corrupt"
    single = cli.json("verify", trained.checkpoint(9), code=1)
    assert "upgrade unbroken" in single["checkpoints"][0]["reason"]


def test_export_skips_a_checkpoint_deleted_while_exporting(cli, trained, tmp_path, monkeypatch):
    delete_during_progress(monkeypatch, trained.folder, trained.uuids[9], 1)
    data = cli.json("export", "exp", "--to", tmp_path / "out")
    assert data["uuid"] == trained.uuids[8]
    assert mark_of(trained, trained.uuids[9]) != "corrupt"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST_NAME, "state.json",
                                                                    "tensors.safetensors"]

