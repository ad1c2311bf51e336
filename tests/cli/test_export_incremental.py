"""`unbroken export` of incremental checkpoints: a complete safetensors file or a complete checkpoint
folder (verifiable, loadable, no references), every byte checked against the files it comes from;
`verify` and `gc` keep their contracts around references."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file as load_torch

import unbroken
from unbroken.checkpoint.files import load
from unbroken.checkpoint.format import manifest as manifest_mod
from unbroken.checkpoint.saving.statefile import STATE_JSON, TENSORS_FILE
from unbroken.config import MANIFEST_NAME
from unbroken.paths import TrialPaths

N = 8192


@dataclasses.dataclass
class Saved:
    folder: Path                       # checkpoints folder of inc/1
    manifests: list                    # oldest first
    copies: list[dict[str, bytes]]     # tensor key -> bytes, at each save

    @property
    def newest(self):
        return self.manifests[-1]


@pytest.fixture
def saved(home) -> Saved:
    """inc/1: three asynchronous incremental saves; ``frozen`` (and the bf16 ``emb``) never change."""
    arrays = {"frozen": np.arange(N, dtype=np.float64), "live": np.zeros(N, dtype=np.float32),
              "count": np.array([0], dtype=np.int64)}
    emb = torch.linspace(-1, 1, 64, dtype=torch.bfloat16)
    copies = []
    with unbroken.init("inc", home=home, incremental=True, keep=unbroken.keep_all(), exit_on_preempt=False) as run:
        state = unbroken.State(arrays=arrays, emb=emb, rng=False)
        for step in (1, 2, 3):
            arrays["live"] += step
            arrays["count"] += 1
            run.save(state, step)
            copies.append({**{f"arrays/{k}": v.tobytes() for k, v in arrays.items()},
                           "emb": emb.view(torch.int16).numpy().tobytes()})
        run.wait_for_saves()
    folder = TrialPaths(home, "inc", 1).checkpoints
    manifests = run.checkpoint.store.list()
    assert [bool(m.refs) for m in manifests] == [False, True, True]
    return Saved(folder, manifests, copies)


def tensor_bytes(path: Path) -> dict[str, bytes]:
    """Every tensor of a safetensors file as raw bytes, read by the safetensors library (its numpy
    loader has no bfloat16: torch's reads them all)."""
    loaded = load_torch(path)
    assert loaded["emb"].dtype == torch.bfloat16 and loaded["emb"].shape == (64,)
    assert loaded["arrays/frozen"].dtype == torch.float64 and loaded["arrays/live"].shape == (N,)
    return {k: v.reshape(-1).view(torch.uint8).numpy().tobytes() for k, v in loaded.items()}


def test_export_to_safetensors_holds_own_and_referenced_tensors(cli, saved, tmp_path):
    dest = tmp_path / "model.safetensors"
    data = cli.json("export", "inc", "--to", dest)
    assert (data["uuid"], data["steps_completed"], data["format"]) == (saved.newest.uuid, 3, "safetensors")
    assert data["size_bytes"] == dest.stat().st_size
    assert tensor_bytes(dest) == saved.copies[2]
    middle = saved.manifests[1]
    assert cli("export", "inc/1", "--uuid", middle.uuid, "--to", tmp_path / "m.safetensors").exit_code == 0
    assert tensor_bytes(tmp_path / "m.safetensors") == saved.copies[1]


def test_export_to_a_folder_is_a_complete_checkpoint_that_verifies_and_loads(cli, saved, tmp_path):
    newest = saved.newest
    dest = tmp_path / newest.uuid
    data = cli.json("export", "inc", "--to", dest)
    assert sorted(data["files"]) == sorted([STATE_JSON, TENSORS_FILE, MANIFEST_NAME])
    manifest = manifest_mod.parse((dest / MANIFEST_NAME).read_bytes())
    assert not manifest.refs and manifest.format_version == manifest_mod.PLAIN_FORMAT_VERSION
    assert (manifest.uuid, manifest.steps_completed, manifest.created_at) == \
           (newest.uuid, newest.steps_completed, newest.created_at)
    assert data["size_bytes"] == manifest.size == sum((dest / f.path).stat().st_size for f in manifest.files)
    report = cli.json("verify", dest)
    assert report["ok"] and [c["uuid"] for c in report["checkpoints"]] == [newest.uuid]
    assert tensor_bytes(dest / TENSORS_FILE) == saved.copies[2]
    into = {"arrays": {"frozen": np.zeros(N), "live": np.zeros(N, dtype=np.float32),
                       "count": np.zeros(1, dtype=np.int64)}, "emb": torch.zeros(64, dtype=torch.bfloat16)}
    load(dest, into=into)
    assert {**{f"arrays/{k}": v.tobytes() for k, v in into["arrays"].items()},
            "emb": into["emb"].view(torch.int16).numpy().tobytes()} == saved.copies[2]


def test_export_of_an_incremental_checkpoint_folder_finds_its_references_beside_it(cli, saved, tmp_path):
    dest = tmp_path / "copy"
    assert cli("export", saved.folder / saved.newest.uuid, "--to", dest).exit_code == 0
    assert cli.json("verify", dest)["ok"]


def test_a_corrupt_referenced_file_is_refused_by_name_and_nothing_is_left(cli, saved, tmp_path):
    base, newest = saved.manifests[0], saved.newest
    held = saved.folder / base.uuid / TENSORS_FILE
    data = bytearray(held.read_bytes())
    data[-4] ^= 0xFF  # in ``live``, which the later checkpoints wrote again: the whole file is checked
    held.write_bytes(bytes(data))
    for dest in (tmp_path / "out", tmp_path / "t.safetensors"):
        result = cli("export", "inc", "--uuid", newest.uuid, "--to", dest)
        assert result.exit_code == 1
        assert base.uuid in result.output and TENSORS_FILE in result.output and "checksum" in result.output
        assert not dest.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    result = cli("export", "inc", "--to", tmp_path / "out")  # every checkpoint needs the damaged file
    assert result.exit_code == 1 and "nothing to export" in result.output


def test_verify_follows_references_and_gc_removes_users_before_the_damaged_file(cli, saved):
    base = saved.manifests[0]
    held = saved.folder / base.uuid / TENSORS_FILE
    data = bytearray(held.read_bytes())
    data[100] ^= 0xFF
    held.write_bytes(bytes(data))
    report = cli.json("verify", "inc", code=1)
    status = {c["uuid"]: (c["status"], c["reason"]) for c in report["checkpoints"]}
    assert status[base.uuid][0] == "corrupt"
    for user in saved.manifests[1:]:  # they use the damaged file: as unusable as restore and export find them
        assert status[user.uuid][0] == "corrupt" and f"of checkpoint {base.uuid}" in status[user.uuid][1]
    removed = cli.json("gc", "inc", "--corrupt")
    assert {m.uuid for m in saved.manifests} <= {item["name"] for item in removed["removed"]}
    assert not [p for p in saved.folder.iterdir() if not p.name.startswith(".")]
