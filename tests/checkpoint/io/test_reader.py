"""The reader against hostile checkpoints: files whose manifest was rewritten to match them.

An attacker (or a buggy writer) who rewrites the manifest too defeats the checksums; the
reader must still refuse every malformed file with CorruptCheckpoint -- so that a restore falls
back to the previous checkpoint -- and never spend more memory than the state it claims to
hold, never hang on a FIFO, never call a deleted checkpoint corrupt.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import crc32c
import numpy as np
import pytest
from ckpt_helpers import save

from unbroken.checkpoint import CheckpointStore, State
from unbroken.checkpoint.format.manifest import FileEntry, Manifest
from unbroken.checkpoint.saving import statefile
from unbroken.config import MANIFEST_NAME
from unbroken.errors import CheckpointGone, CorruptCheckpoint, TensorFileError
from unbroken.storage import LocalStorage

W = np.arange(4, dtype=np.float32)


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "ckpts"


@pytest.fixture
def uuid(root) -> str:
    """A committed checkpoint of State(w=W, x=[1, 2]) (no global RNG)."""
    return save(CheckpointStore(LocalStorage(root)), State(w=W.copy(), x=[1, 2], rng=False), 1)


def manifest_of(root: Path, uuid: str) -> Manifest:
    return CheckpointStore(LocalStorage(root)).manifest(uuid)


def reseal(root: Path, uuid: str, **entries: FileEntry) -> Manifest:
    """Rewrite the manifest so that it matches the files as they are now (valid checksums)."""
    m = manifest_of(root, uuid)
    forged = dataclasses.replace(m, files=tuple(entries.get(f.path, f) for f in m.files))
    (root / uuid / MANIFEST_NAME).write_bytes(forged.to_bytes())
    return manifest_of(root, uuid)


def forge(root: Path, uuid: str, rel: str, data: bytes) -> Manifest:
    """Replace one file with ``data`` and reseal the manifest."""
    (root / uuid / rel).write_bytes(data)
    return reseal(root, uuid, **{rel: FileEntry(rel, len(data), f"{crc32c.crc32c(data):08x}")})


def tensor_file(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode() if isinstance(header, dict) else header
    return struct.pack("<Q", len(raw)) + raw + data


def state_json(entries: dict | str) -> bytes:
    body = entries if isinstance(entries, str) else json.dumps(entries)
    return ('{"format": "unbroken-state", "version": 1, "rng": null, "entries": ' + body + "}").encode()


W_REF = {"kind": "value", "data": {"__tensor__": "w", "kind": "numpy"}}
W_ENTRY = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}


def assert_refused(root: Path, uuid: str, m: Manifest, match: str = "") -> None:
    """Both readers raise CorruptCheckpoint naming the checkpoint; a restore leaves the State untouched."""
    with pytest.raises(CorruptCheckpoint, match=match) as info:
        statefile.read(root / uuid, m)
    assert uuid in str(info.value)
    target = State(w=np.full(4, -1, np.float32), x=None, rng=False)
    with pytest.raises(CorruptCheckpoint, match=match):
        statefile.restore(target, root / uuid, m)
    assert (target.w == -1).all() and target.x is None


# -- state.json -------------------------------------------------------------------------------------
@pytest.mark.parametrize("entries, match", [
    pytest.param('{"x": {"kind": "value", "data": ' + "[" * 200_000 + "]" * 200_000 + "}}", "not valid JSON",
                 id="nested-200k-deep"),
    pytest.param({"w": W_REF, "x": {"kind": "value", "data": {"__bytes__": "not base64!"}}}, "__bytes__",
                 id="bad-base64"),
    pytest.param({"w": W_REF, "x": {"kind": "value", "data": {"__bytes__": 5}}}, "__bytes__", id="bytes-not-str"),
    pytest.param({"w": W_REF, "x": {"kind": "value", "data": {"__float__": "pi"}}}, "__float__", id="bad-float"),
    pytest.param({"w": W_REF, "x": {"kind": "value", "data": {"__npscalar__": "U2000000000", "value": 1}}},
                 "__npscalar__", id="npscalar-huge-dtype"),
    pytest.param({"w": W_REF, "x": {"kind": "value", "data": {"__npscalar__": "<f8", "value": [1, 2]}}},
                 "__npscalar__", id="npscalar-not-a-scalar"),
    pytest.param('{"w": ' + json.dumps(W_REF) + ', "x": {"kind": "value", "data": 1}, '
                 '"x": {"kind": "value", "data": 2}}', "twice", id="duplicate-keys"),
    pytest.param({"w": W_REF, "x": {"kind": "bogus", "data": 1}}, "valid entries", id="unknown-entry-kind"),
    pytest.param({"w": W_REF, "x": [1, 2]}, "valid entries", id="entry-not-an-object"),
    pytest.param({"w": {"kind": "value", "data": {"__tensor__": "w", "kind": "jax"}}, "x": {"kind": "value", "data": 1}},
                 "invalid tensor reference", id="unknown-tensor-kind"),
    pytest.param({"w": {"kind": "value", "data": {"__tensor__": ["w"]}}, "x": {"kind": "value", "data": 1}},
                 "invalid tensor reference", id="tensor-key-not-a-string"),
    pytest.param({"w": W_REF, "x": {"kind": "value", "data": {"__tensor__": "nope", "kind": "numpy"}}},
                 "missing: \\['nope'\\]", id="tensor-not-in-the-file"),
])
def test_hostile_state_json_is_corrupt(root, uuid, entries, match):
    m = forge(root, uuid, "state.json", state_json(entries))
    assert_refused(root, uuid, m, match)


def test_a_damaged_pickle_is_corrupt_even_with_the_opt_in(root, uuid):
    m = forge(root, uuid, "state.json", state_json({"w": W_REF, "x": {"kind": "value", "data": {"__pickle__": "AAAA"}}}))
    with pytest.raises(CorruptCheckpoint, match="pickled value"):
        statefile.read(root / uuid, m, allow_pickle=True)
    m = forge(root, uuid, "state.json", state_json({"w": W_REF, "x": {"kind": "value", "data": {"__pickle__": "%%"}}}))
    with pytest.raises(CorruptCheckpoint, match="__pickle__"):
        statefile.read(root / uuid, m, allow_pickle=True)


# -- tensors.safetensors ----------------------------------------------------------------------------
@pytest.mark.parametrize("header, data, match", [
    pytest.param({"w": {"dtype": "U8", "shape": [2 ** 61, 2 ** 61, 0], "data_offsets": [0, 0]}}, b"",
                 "larger than any tensor", id="shape-2^61-2^61-0"),
    pytest.param({"w": {"dtype": "U8", "shape": [2 ** 40, 2 ** 40, 2 ** 40], "data_offsets": [0, 2 ** 61]}}, b"",
                 "larger than any tensor", id="product-overflows-int64"),
    pytest.param({"w": {"dtype": "U8", "shape": [1] * 65, "data_offsets": [0, 1]}}, b"\0",
                 "larger than any tensor", id="65-dimensions"),
    pytest.param({"w": {**W_ENTRY, "data_offsets": [16, 32]}}, W.tobytes(), "hole", id="offsets-beyond-the-file"),
    pytest.param({"w": {**W_ENTRY, "data_offsets": [0, 2 ** 40]}}, W.tobytes(), "do not match", id="end-beyond"),
    pytest.param({"w": {**W_ENTRY, "dtype": "F128"}}, W.tobytes(), "unknown dtype", id="unknown-dtype"),
    pytest.param({"w": {**W_ENTRY, "dtype": "BF16", "shape": [8]}}, W.tobytes(), "cannot be loaded as numpy",
                 id="torch-dtype-as-numpy"),
    pytest.param({"w": {**W_ENTRY, "shape": [-4]}}, W.tobytes(), "shape", id="negative-shape"),
    pytest.param({"w": {**W_ENTRY, "shape": [4.0]}}, W.tobytes(), "shape", id="float-shape"),
    pytest.param({"w": {**W_ENTRY, "shape": "4"}}, W.tobytes(), "shape", id="string-shape"),
    pytest.param(b'{"w":' + json.dumps(W_ENTRY).encode() + b',"w":' + json.dumps(W_ENTRY).encode() + b"}",
                 W.tobytes(), "twice", id="duplicate-keys"),
    pytest.param({"w": W_ENTRY, "v": {"dtype": "U8", "shape": [1], "data_offsets": [16, 17]}}, W.tobytes() + b"\0",
                 "not referred to: \\['v'\\]", id="tensor-the-state-does-not-refer-to"),
    pytest.param({"v": W_ENTRY}, W.tobytes(), "missing: \\['w'\\]", id="referenced-tensor-missing"),
])
def test_hostile_tensor_files_are_corrupt(root, uuid, header, data, match):
    m = forge(root, uuid, "tensors.safetensors", tensor_file(header, data))
    assert_refused(root, uuid, m, match)
    with pytest.raises(TensorFileError):
        statefile.read(root / uuid, m)


def test_a_huge_header_is_refused_before_it_is_read(root, uuid, monkeypatch):
    """A 63 MB header of 10**6 one-byte tensors, for a state that refers to one tensor."""
    count = 10 ** 6
    body = ",".join(f'"t{i:07d}":{{"dtype":"U8","shape":[1],"data_offsets":[{16 + i},{17 + i}]}}'
                    for i in range(count))
    raw = ('{"w":' + json.dumps(W_ENTRY) + "," + body + "}").encode()
    assert len(raw) > 60 << 20
    m = forge(root, uuid, "tensors.safetensors", tensor_file(raw, W.tobytes() + b"\0" * count))
    del raw, body
    import unbroken.checkpoint.format.tensorfile as tensorfile
    parsed = []
    real = tensorfile.parse_header
    monkeypatch.setattr(tensorfile, "parse_header", lambda *a, **k: parsed.append(1) or real(*a, **k))
    with pytest.raises(TensorFileError, match="does not fit"):
        statefile.read(root / uuid, m)
    assert parsed == []  # refused from its length alone, neither read nor parsed


def test_a_sparse_8_gib_tensor_file_costs_no_memory(root, uuid, tmp_path):
    """The header promises an 8 GiB tensor the state does not refer to; the file is a hole."""
    big = 8 << 30
    header = {"w": W_ENTRY, "junk": {"dtype": "U8", "shape": [big], "data_offsets": [16, 16 + big]}}
    prefix = tensor_file(header, W.tobytes())
    path = root / uuid / "tensors.safetensors"
    path.write_bytes(prefix)
    os.truncate(path, len(prefix) + big)
    crc, zeros = crc32c.crc32c(prefix), bytes(64 << 20)
    for _ in range(big // len(zeros)):
        crc = crc32c.crc32c(zeros, crc)
    reseal(root, uuid, **{"tensors.safetensors": FileEntry("tensors.safetensors", len(prefix) + big, f"{crc:08x}")})
    script = textwrap.dedent("""
        import json, resource, sys
        from pathlib import Path
        import numpy as np
        from unbroken.checkpoint import CheckpointStore, State
        from unbroken.checkpoint.saving import statefile
        from unbroken.errors import CorruptCheckpoint
        from unbroken.storage import LocalStorage
        root, uuid = Path(sys.argv[1]), sys.argv[2]
        manifest = CheckpointStore(LocalStorage(root)).manifest(uuid)
        state = State(w=np.zeros(4, np.float32), x=None, rng=False)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            statefile.restore(state, root / uuid, manifest)
            outcome = "restored"
        except CorruptCheckpoint as exc:
            outcome = "corrupt: " + str(exc)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"outcome": outcome, "growth_kib": after - before}))
    """)
    run = subprocess.run([sys.executable, "-c", script, str(root), uuid], capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["outcome"].startswith("corrupt: ") and "'junk'" in result["outcome"], result
    assert result["growth_kib"] < 256 << 10, result  # under 256 MiB for an 8 GiB file


# -- not a regular file, deleted meanwhile ----------------------------------------------------------
@pytest.mark.timeout(20)
@pytest.mark.parametrize("rel", ["tensors.safetensors", "state.json"])
def test_a_fifo_in_place_of_a_file_is_corrupt_not_a_hang(root, uuid, rel):
    m = manifest_of(root, uuid)
    (root / uuid / rel).unlink()
    os.mkfifo(root / uuid / rel)
    assert_refused(root, uuid, m, f"file {rel} is not a regular file")


def test_a_checkpoint_deleted_under_the_reader_is_gone(root, uuid, tmp_path):
    m = manifest_of(root, uuid)
    (root / uuid).rename(tmp_path / "deleted")
    with pytest.raises(CheckpointGone, match=uuid):
        statefile.read(root / uuid, m)
