"""Flattening incremental checkpoints: one complete tensor file (byte for byte what a complete save
writes) or a complete checkpoint folder, every source byte checked; damaged sources refused by name."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from ckpt_helpers import flip_byte, fresh_store
from dtypes import TORCH_DTYPES
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file as load_torch

from unbroken.checkpoint import CheckpointStore, State
from unbroken.checkpoint.files import load
from unbroken.checkpoint.format import checksum, tensorfile
from unbroken.checkpoint.saving import flatten, incremental, statefile
from unbroken.checkpoint.saving.saver import Saver
from unbroken.config import MANIFEST_NAME
from unbroken.errors import CorruptCheckpoint, TensorFileError
from unbroken.storage import LocalStorage

N = 4096  # float64 elements per layer: 32 KiB


def layers(seed: int, n: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"layer{i}": rng.standard_normal(N) for i in range(n)}


def saves(store: CheckpointStore, weights: dict, changes: list[set[str]], **extra):
    """Save once, then once after each change (the named layers +1 in place); return manifests and
    the bytes of every tensor at each save."""
    saver = Saver(store, incremental=True)
    state = State(weights=weights, rng=False, **extra)
    manifests, copies = [saver.save(state, 1).wait()], [{k: v.copy() for k, v in weights.items()}]
    for step, changed in enumerate(changes, start=2):
        for name in changed:
            weights[name] += 1.0
        manifests.append(saver.save(state, step).wait())
        copies.append({k: v.copy() for k, v in weights.items()})
    return manifests, copies


def complete_file(tmp_path: Path, weights: dict, **extra) -> bytes:
    """The tensor file a complete (not incremental) save of the same State writes."""
    store = CheckpointStore(LocalStorage(tmp_path / "complete"))
    m = Saver(store, incremental=False).save(State(weights=weights, rng=False, **extra), 1, wait=True).wait()
    return (tmp_path / "complete" / m.uuid / statefile.TENSORS_FILE).read_bytes()


def test_own_and_referenced_tensors_make_the_file_a_complete_save_writes(store, root, tmp_path):
    weights = layers(0)
    manifests, copies = saves(store, weights, [{"layer5", "layer6", "layer7"}])
    newest = manifests[-1]
    assert newest.refs and statefile.TENSORS_FILE in {f.path for f in newest.files}
    dest = tmp_path / "flat.safetensors"
    read: list[int] = []
    entry = flatten.flatten_tensors(root / newest.uuid, newest, dest, progress=read.append)
    assert dest.read_bytes() == complete_file(tmp_path, weights)
    assert (entry.size, entry.crc32c) == (dest.stat().st_size, checksum.of_file(dest)[1])
    assert sum(read) == flatten.sources_size(newest)
    loaded = load_numpy(dest)
    assert set(loaded) == {f"weights/{k}" for k in weights}
    for name, value in copies[-1].items():
        assert loaded[f"weights/{name}"].tobytes() == value.tobytes(), name


def test_a_chain_of_references_after_compaction(store, root, tmp_path):
    weights = layers(1)
    # step 2 refers to step 1 for layers 0-3; step 3 to steps 1 (1-3) and 2 (4, 5); at step 4 the
    # first file would serve only layer3 (1/8 < MIN_LIVE_FRACTION): it is written again (compaction),
    # while layers 0 and 7 come from step 3's file and 4, 5 still from step 2's.
    changes = [{"layer4", "layer5", "layer6", "layer7"}, {"layer0", "layer6", "layer7"}, {"layer1", "layer2", "layer6"}]
    manifests, copies = saves(store, weights, changes)
    first, second, third, fourth = manifests
    assert {r.uuid for r in third.refs} == {first.uuid, second.uuid}
    assert incremental.MIN_LIVE_FRACTION > 1 / 8 and {r.uuid for r in fourth.refs} == {second.uuid, third.uuid}
    for m, expected in zip(manifests, copies):
        dest = tmp_path / f"{m.steps_completed}.safetensors"
        flatten.flatten_tensors(root / m.uuid, m, dest)
        assert dest.read_bytes() == complete_file(tmp_path / str(m.steps_completed), expected)


def test_a_flattened_folder_is_a_complete_checkpoint(store, root, tmp_path):
    weights = layers(2)
    manifests, copies = saves(store, weights, [set(), {"layer0"}])  # the second save writes no tensor file
    assert [f.path for f in manifests[1].files] == [statefile.STATE_JSON]
    for m, expected in zip(manifests[1:], copies[1:]):
        dest = tmp_path / "out" / m.uuid
        flat = flatten.flatten_checkpoint(root / m.uuid, m, dest)
        assert not flat.refs and flat.format_version == 1
        assert (flat.uuid, flat.steps_completed, flat.created_at, flat.metadata) == \
               (m.uuid, m.steps_completed, m.created_at, m.metadata)
        assert sorted(p.name for p in dest.iterdir()) == [MANIFEST_NAME, statefile.STATE_JSON, statefile.TENSORS_FILE]
        assert fresh_store(dest.parent).verify(m.uuid, force=True) == flat
        assert (dest / statefile.STATE_JSON).read_bytes() == (root / m.uuid / statefile.STATE_JSON).read_bytes()
        target = {"weights": {k: np.zeros(N) for k in weights}}
        load(dest, into=target)
        assert all(target["weights"][k].tobytes() == v.tobytes() for k, v in expected.items())


def test_every_dtype_survives_bit_for_bit(store, root, tmp_path):
    tensors = {str(d).removeprefix("torch."): (torch.arange(24) % 7).reshape(2, 3, 4).to(d) for d in TORCH_DTYPES}
    tensors["float32"] = torch.randn(2, 3, 4)
    tensors["bfloat16"] = torch.randn(2, 3, 4, dtype=torch.bfloat16)
    tensors["scalar"] = torch.tensor(3.5, dtype=torch.bfloat16)
    tensors["empty"] = torch.zeros(0, 5, dtype=torch.float16)
    big = {"frozen": torch.randn(N, dtype=torch.float64)}  # keeps the first file worth referring to
    saver = Saver(store, incremental=True)
    state = State(t=tensors, big=big, rng=False)
    saver.save(state, 1).wait()
    tensors["float32"] += 1
    m = saver.save(state, 2).wait()
    assert m.refs and "t/float32" not in m.refs[0].tensors and "t/bfloat16" in m.refs[0].tensors
    dest = tmp_path / "flat.safetensors"
    flatten.flatten_tensors(root / m.uuid, m, dest)
    loaded = load_torch(dest)
    for name, value in tensors.items():
        got = loaded[f"t/{name}"]
        assert (got.dtype, got.shape) == (value.dtype, value.shape), name
        assert got.reshape(-1).view(torch.uint8).equal(value.reshape(-1).view(torch.uint8)), name
    full = tmp_path / "full"
    fm = Saver(CheckpointStore(LocalStorage(full)), incremental=False).save(
        State(t=tensors, big=big, rng=False), 1, wait=True).wait()
    assert dest.read_bytes() == (full / fm.uuid / statefile.TENSORS_FILE).read_bytes()


@pytest.mark.parametrize("where", ["in-a-tensor-taken", "in-a-tensor-not-taken"])
def test_a_corrupt_referenced_file_is_refused_naming_it(store, root, tmp_path, where):
    manifests, _ = saves(store, layers(3), [{"layer6", "layer7"}])
    first, second = manifests
    held = root / first.uuid / statefile.TENSORS_FILE
    with open(held, "rb") as f:
        data_start = tensorfile.read_header(f).data_start
    # Same item sizes, so in State order: layer0's bytes come first (taken by step 2), layer7's
    # last (rewritten by step 2, not taken: the whole file is checked all the same).
    flip_byte(held, data_start + 100 if where == "in-a-tensor-taken" else -100)
    for flat in (lambda d: flatten.flatten_tensors(root / second.uuid, second, d / "t.safetensors"),
                 lambda d: flatten.flatten_checkpoint(root / second.uuid, second, d / "dir")):
        with pytest.raises(CorruptCheckpoint) as caught:
            flat(tmp_path)
        message = str(caught.value)
        assert first.uuid in message and second.uuid in message and statefile.TENSORS_FILE in message
        assert "checksum" in message
        assert not (tmp_path / "t.safetensors").exists() and not (tmp_path / "dir").exists()


def test_a_referenced_file_replaced_by_a_link_or_delisted_is_refused(store, root, tmp_path):
    manifests, _ = saves(store, layers(4), [{"layer7"}])
    first, second = manifests
    held = root / first.uuid / statefile.TENSORS_FILE
    outside = tmp_path / "outside.safetensors"
    os.replace(held, outside)
    held.symlink_to(outside)  # the same bytes, but through a link: never followed
    with pytest.raises(CorruptCheckpoint, match="symbolic link") as caught:
        flatten.flatten_tensors(root / second.uuid, second, tmp_path / "t.safetensors")
    assert first.uuid in str(caught.value)
    held.unlink()
    os.replace(outside, held)
    (root / first.uuid / MANIFEST_NAME).unlink()  # the holder is gone, its user is not
    with pytest.raises(CorruptCheckpoint, match="deleted"):
        flatten.flatten_tensors(root / second.uuid, second, tmp_path / "t.safetensors")


def test_a_corrupt_own_file_is_refused_and_a_bad_header_named(store, root, tmp_path):
    manifests, _ = saves(store, layers(5), [{"layer6", "layer7"}])
    second = manifests[1]
    own = root / second.uuid / statefile.TENSORS_FILE
    flip_byte(own, 20)  # inside the JSON header
    with pytest.raises(CorruptCheckpoint, match=f"checkpoint {second.uuid}: file tensors.safetensors fails"):
        flatten.flatten_tensors(root / second.uuid, second, tmp_path / "t.safetensors")
    with pytest.raises(TensorFileError):  # a header that is malformed yet matches its checksum
        flatten.flatten_tensors(root / second.uuid, _bless(second, own, b"\xff" * 8), tmp_path / "t.safetensors")


def _bless(manifest, path: Path, prefix: bytes):
    """``manifest`` with the entry of ``path`` matching ``path`` once its first bytes are ``prefix``."""
    data = prefix + path.read_bytes()[len(prefix):]
    path.write_bytes(data)
    size, crc = checksum.of_file(path)
    files = tuple(dataclasses.replace(f, size=size, crc32c=crc) if f.path == path.name else f for f in manifest.files)
    return dataclasses.replace(manifest, files=files)
