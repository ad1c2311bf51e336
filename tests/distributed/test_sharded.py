"""Two ranks, one checkpoint: sharded saves, group restore, a corrupt shard skipped as a whole."""

from __future__ import annotations

import json

from ranks import final_params, same, torchrun



def _checkpoints(home):
    root = home / "experiments" / "ddp" / "trial-1" / "checkpoints"
    found = [json.loads((d / "MANIFEST.json").read_text()) for d in root.iterdir() if (d / "MANIFEST.json").exists()]
    return root, sorted(found, key=lambda m: m["steps_completed"])


def test_two_ranks_write_one_manifest_and_resume_bitwise_equal(tmp_path):
    ref = torchrun(tmp_path / "ref", STEPS="12", OUT=str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    first = torchrun(tmp_path / "home", STEPS="7", OUT=str(tmp_path / "part"))
    assert first.returncode == 0, first.stderr[-3000:]
    _root, manifests = _checkpoints(tmp_path / "home")
    newest = manifests[-1]
    assert newest["steps_completed"] == 7
    assert sorted(f["path"] for f in newest["files"]) == [
        "rank-0/state.json", "rank-0/tensors.safetensors", "rank-1/state.json", "rank-1/tensors.safetensors",
        "replicated/state.json", "replicated/tensors.safetensors"]
    resumed = torchrun(tmp_path / "home", STEPS="12", OUT=str(tmp_path / "out"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from checkpoint" in resumed.stderr and "at step 7" in resumed.stderr
    assert same(final_params(tmp_path / "out"), final_params(tmp_path / "ref"))


def test_a_checkpoint_with_one_corrupt_shard_is_skipped_by_every_rank(tmp_path):
    home = tmp_path / "home"
    assert torchrun(home, STEPS="6").returncode == 0
    root, manifests = _checkpoints(home)
    newest = root / manifests[-1]["uuid"]
    data = bytearray((newest / "rank-1" / "tensors.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (newest / "rank-1" / "tensors.safetensors").write_bytes(bytes(data))
    resumed = torchrun(home, STEPS="6")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "skipping corrupt checkpoint" in resumed.stderr and "rank 1" in resumed.stderr
    assert "at step 5" in resumed.stderr  # both ranks took the previous one
    assert "rank 1 starts from scratch" not in resumed.stderr
