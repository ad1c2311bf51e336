"""statefile: state.json + tensors.safetensors, written checksummed and read back verified."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import crc32c
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from ckpt_helpers import flip_byte, fresh_store, restore, save, truncate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from unbroken.checkpoint.saving import statefile
from unbroken.checkpoint import CheckpointStore, State
from unbroken.errors import ConfigError, CorruptCheckpoint, PickleNotAllowed, TensorFileError, UnsupportedValue
from unbroken.storage import LocalStorage
from dtypes import NUMPY_DTYPES, TORCH_DTYPES

ROUND_TRIP = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def tensor_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def test_write_produces_two_checksummed_files(tmp_path):
    state = State(w=np.arange(4, dtype=np.float32), t=torch.ones(2, dtype=torch.bfloat16), n=3, rng=False)
    tree, tensors, used_pickle = statefile.capture(state)
    assert set(tensors) == {"w", "t"} and not used_pickle
    written = statefile.write(tmp_path, tree, tensors, used_pickle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "tensors.safetensors"]
    for name, entry in written.entries.items():
        data = (tmp_path / name).read_bytes()
        assert entry.path == name and entry.size == len(data) and entry.crc32c == f"{crc32c.crc32c(data):08x}"
    doc = json.loads((tmp_path / "state.json").read_text())
    assert doc["format"] == "unbroken-state" and doc["rng"] is None
    assert doc["entries"]["n"] == {"kind": "value", "data": 3}
    assert doc["entries"]["w"]["data"] == {"__tensor__": "w", "kind": "numpy"}
    loaded = safetensors.torch.load_file(tmp_path / "tensors.safetensors")
    assert torch.equal(loaded["t"], torch.ones(2, dtype=torch.bfloat16))
    assert loaded["w"].numpy().tobytes() == state.w.tobytes()


def test_read_returns_the_decoded_tree(store):
    state = State(w=np.arange(4, dtype=np.int8), model=torch.nn.Linear(2, 1), note=("a", 1), rng=False)
    uuid = save(store, state, 1)
    tree = statefile.read(store.local_path(uuid), store.manifest(uuid))
    assert tree["entries"]["note"] == {"kind": "value", "data": ("a", 1)}
    assert tree["entries"]["w"]["data"].tobytes() == state.w.tobytes()
    assert torch.equal(tree["entries"]["model"]["data"]["weight"], state.model.weight.detach())


def snapshot(state: State) -> dict:
    return {
        "weight": state.model.weight.detach().clone(),
        "arr": state.arr.copy(),
        "gen": state.gen.bit_generator.state,
        "py": state.py.getstate(),
        "count": state.count,
    }


def assert_unchanged(state: State, before: dict) -> None:
    assert torch.equal(state.model.weight, before["weight"])
    assert state.arr.tobytes() == before["arr"].tobytes()
    assert state.gen.bit_generator.state == before["gen"]
    assert state.py.getstate() == before["py"]
    assert state.count == before["count"]


def target_state() -> State:
    torch.manual_seed(123)
    return State(model=torch.nn.Linear(3, 3), arr=np.full(5, -1.0), gen=np.random.default_rng(7),
                 py=random.Random(7), count=-1, rng=False)


@pytest.mark.parametrize("damage", [
    pytest.param(lambda p: flip_byte(p, -1), id="flip-last-data-byte"),
    pytest.param(lambda p: flip_byte(p, 20), id="flip-header-byte"),
    pytest.param(lambda p: flip_byte(p, 0), id="flip-header-length"),
    pytest.param(lambda p: truncate(p), id="truncate-half"),
    pytest.param(lambda p: truncate(p, 0), id="truncate-empty"),
    pytest.param(lambda p: p.write_bytes(p.read_bytes() + b"\0"), id="append"),
    pytest.param(lambda p: p.unlink(), id="delete"),
])
def test_a_corrupt_tensor_file_raises_and_leaves_the_target_untouched(store, root, damage):
    source = State(model=torch.nn.Linear(3, 3), arr=np.arange(5.0), gen=np.random.default_rng(1),
                   py=random.Random(1), count=10, rng=False)
    uuid = save(store, source, 10)
    damage(root / uuid / "tensors.safetensors")
    reader = fresh_store(root)
    with pytest.raises(CorruptCheckpoint, match=f"{uuid}.*tensors.safetensors"):
        statefile.read(root / uuid, reader.manifest(uuid))
    target = target_state()
    before = snapshot(target)
    with pytest.raises(CorruptCheckpoint) as info:
        restore(reader, target, uuid)
    assert uuid in str(info.value) and "tensors.safetensors" in str(info.value)
    assert_unchanged(target, before)


def test_a_corrupt_state_json_raises_and_leaves_the_target_untouched(store, root):
    uuid = save(store, State(model=torch.nn.Linear(3, 3), arr=np.arange(5.0), gen=np.random.default_rng(1),
                             py=random.Random(1), count=10, rng=False), 10)
    flip_byte(root / uuid / "state.json", 5)
    target = target_state()
    before = snapshot(target)
    with pytest.raises(CorruptCheckpoint, match=f"{uuid}.*state.json"):
        restore(fresh_store(root), target, uuid)
    assert_unchanged(target, before)


def test_a_consistent_but_invalid_tensor_file_raises_tensor_file_error(store, root):
    """A tensor file that matches its manifest entry but is not safetensors (a buggy writer)."""
    uuid = save(store, State(a=np.arange(3), rng=False), 1)
    manifest = store.manifest(uuid)
    bad = b"\xff" * 16
    (root / uuid / "tensors.safetensors").write_bytes(bad)
    entries = [f if f.path != "tensors.safetensors" else
               type(f)(f.path, len(bad), f"{crc32c.crc32c(bad):08x}") for f in manifest.files]
    forged = type(manifest)(**{**manifest.__dict__, "files": tuple(entries)})
    with pytest.raises(TensorFileError, match=uuid):
        statefile.read(root / uuid, forged)


def test_a_checkpoint_without_state_json_is_refused(store, root):
    pending = store.begin(1)
    (pending.path / "model.bin").write_bytes(b"raw")
    m = store.commit(pending)
    with pytest.raises(CorruptCheckpoint, match="no state.json"):
        statefile.read(root / m.uuid, m)


def test_pickled_state_needs_the_opt_in(store, root):
    state = State(allow_pickle=True, things={1, 2, 3}, rng=False)
    uuid = save(store, state, 1)
    assert store.manifest(uuid).needs_pickle
    target = State(things=None, rng=False)
    with pytest.raises(PickleNotAllowed, match=uuid):
        restore(fresh_store(root), target, uuid)
    assert target.things is None
    restore(fresh_store(root), target, uuid, allow_pickle=True)
    assert target.things == {1, 2, 3}


def test_state_without_tensors_round_trips(store):
    uuid = save(store, State(a=1, b="x", rng=False), 1)
    target = State(a=0, b="", rng=False)
    restore(store, target, uuid)
    assert (target.a, target.b) == (1, "x")


# -- property: every dtype and shape round-trips bitwise, and loads with safetensors ----------

numpy_arrays = st.sampled_from(NUMPY_DTYPES).flatmap(
    lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
entry_names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(lambda n: n not in ("rng",))


@ROUND_TRIP
@given(st.dictionaries(entry_names, numpy_arrays, min_size=1, max_size=5), st.booleans())
def test_random_numpy_state_round_trips_bitwise(values, nested):
    with tempfile.TemporaryDirectory() as d:
        store = CheckpointStore(LocalStorage(Path(d)))
        state = State(rng=False, **({"tree": {"arrays": list(values.values()), "by": values}} if nested else values))
        uuid = save(store, state, 1)
        target = State(rng=False, **{k: None for k in state})
        restore(fresh_store(Path(d)), target, uuid)
        reference = safetensors.numpy.load_file(Path(d) / uuid / "tensors.safetensors")
        via_torch = safetensors.torch.load_file(Path(d) / uuid / "tensors.safetensors")
    got = target.tree["by"] if nested else {k: target[k] for k in values}
    for name, value in values.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape
        assert got[name].tobytes() == value.tobytes()
    if nested:
        expected = {f"tree/by/{k}": v for k, v in values.items()}
        expected.update({f"tree/arrays/{i}": v for i, v in enumerate(values.values())})
    else:
        expected = values
    assert set(reference) == set(expected)
    for key, array in reference.items():
        assert array.dtype == expected[key].dtype and array.shape == expected[key].shape
        assert array.tobytes() == expected[key].tobytes()
        assert tensor_bytes(via_torch[key]) == array.tobytes()


@st.composite
def torch_tensors(draw) -> torch.Tensor:
    dtype = draw(st.sampled_from(TORCH_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    count = int(np.prod(shape)) * dtype.itemsize
    raw = draw(st.binary(min_size=count, max_size=count))
    t = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if count else torch.empty(0, dtype=torch.uint8)
    if dtype == torch.bool:
        t = t % 2
    return t.view(dtype).reshape(shape).clone()


@ROUND_TRIP
@given(st.dictionaries(entry_names, torch_tensors(), min_size=1, max_size=5))
def test_random_torch_state_round_trips_bitwise(values):
    with tempfile.TemporaryDirectory() as d:
        store = CheckpointStore(LocalStorage(Path(d)))
        uuid = save(store, State(rng=False, **values), 1)
        target = State(rng=False, **{k: None for k in values})
        restore(fresh_store(Path(d)), target, uuid)
        reference = safetensors.torch.load_file(Path(d) / uuid / "tensors.safetensors")
    assert set(reference) == set(values)
    for name, value in values.items():
        for got in (target[name], reference[name]):
            assert got.dtype == value.dtype and tuple(got.shape) == tuple(value.shape)
            assert tensor_bytes(got) == tensor_bytes(value)


def test_big_endian_and_non_contiguous_arrays_round_trip(store):
    values = {"be": np.arange(6, dtype=">f4").reshape(2, 3) / 3, "t": np.arange(12.0).reshape(3, 4).T,
              "s": np.arange(20, dtype=np.int64)[::3], "tt": torch.arange(6.0).reshape(2, 3).T}
    uuid = save(store, State(rng=False, **values), 1)
    target = State(rng=False, **{k: None for k in values})
    restore(store, target, uuid)
    assert target.be.dtype == np.dtype("<f4")  # values, not raw big-endian bytes (regression)
    np.testing.assert_array_equal(target.be, values["be"])
    assert target.be[0, 1] == np.float32(1) / np.float32(3)
    np.testing.assert_array_equal(target.t, values["t"])
    np.testing.assert_array_equal(target.s, values["s"])
    assert torch.equal(target.tt, values["tt"])


def test_numpy_scalars_are_restored_by_value_not_left_as_the_old_target(store, root):
    """Scalars are decoded before in-place targets are filled: they must never be targets."""
    uuid = save(store, State(s=np.float32(3.5), d={"n": np.int64(-7)}, rng=False), 1)
    target = State(s=np.float32(0), d={"n": np.int64(0)}, rng=False)
    restore(fresh_store(root), target, uuid)
    assert type(target.s) is np.float32 and target.s == 3.5
    assert type(target.d["n"]) is np.int64 and target.d["n"] == -7


def test_a_tree_that_does_not_decode_leaves_in_place_targets_untouched(store, root):
    uuid = save(store, State(w=np.arange(4.0), b=b"abc", rng=False), 1)
    doc = json.loads((root / uuid / "state.json").read_bytes())
    doc["entries"]["b"]["data"]["__bytes__"] = "*not base64*"
    data = json.dumps(doc).encode()
    (root / uuid / "state.json").write_bytes(data)
    m = store.manifest(uuid)
    entries = [f if f.path != "state.json" else type(f)(f.path, len(data), f"{crc32c.crc32c(data):08x}")
               for f in m.files]
    forged = type(m)(**{**m.__dict__, "files": tuple(entries)})
    target = State(w=np.full(4, -1.0), b=b"", rng=False)
    with pytest.raises(CorruptCheckpoint, match="__bytes__"):
        statefile.restore(target, root / uuid, forged)
    assert (target.w == -1).all() and target.b == b""


@pytest.mark.parametrize("value, where", [
    pytest.param({"opt": object()}, "'entry/opt'", id="object-without-state-dict"),
    pytest.param({"s": torch.eye(2).to_sparse()}, "'entry/s'", id="sparse-tensor"),
    pytest.param({"x": np.array(["a"])}, "'entry/x'", id="string-array"),
    pytest.param({"c": torch.zeros(1, dtype=torch.complex64)}, "'entry/c'", id="complex-dtype"),
    pytest.param({"k": {float("nan"): 1}}, "'entry/k'", id="nan-key"),
    pytest.param([2 ** 9000], "'entry/0'", id="int-beyond-json"),
])
def test_values_a_state_cannot_save_raise_unsupported_value_naming_the_entry(tmp_path, value, where):
    with pytest.raises(UnsupportedValue, match=where) as info:
        tree, tensors, used_pickle = statefile.capture(State(entry=value, rng=False))
        statefile.write(tmp_path, tree, tensors, used_pickle)
    assert isinstance(info.value, ValueError) and not isinstance(info.value, ConfigError)
