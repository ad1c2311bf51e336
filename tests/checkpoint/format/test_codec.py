"""The state-tree codec: JSON plus a table of tensors, exact Python types, pickle only on request."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unbroken.checkpoint.format import codec
from unbroken.errors import CorruptCheckpoint, PickleNotAllowed, StateMismatch, UnsupportedValue

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NUMPY_SCALARS = [np.float64(1.25), np.float32(-2.5), np.float16(0.1), np.int64(-(2 ** 62)), np.int32(7),
                 np.int16(-3), np.int8(-128), np.uint64(2 ** 64 - 1), np.uint32(4_000_000_000), np.uint16(65535),
                 np.uint8(255), np.bool_(True), np.bool_(False), np.float64("nan"), np.float32("-inf"),
                 np.float64(-0.0)]


def round_trip(value, *, allow_pickle_save=False, allow_pickle_load=False):
    encoder = codec.Encoder(allow_pickle=allow_pickle_save)
    tree = encoder.encode(value, "root")
    # The tree must be plain, strict JSON (what state.json holds).
    text = json.dumps(tree, allow_nan=False)
    loaded = json.loads(text)
    out = codec.decode(loaded, lambda key, kind: encoder.tensors[key], allow_pickle=allow_pickle_load)
    return out, encoder


def assert_identical(a, b, where="value"):
    """Equal with exactly the same types all the way down (NaN equals NaN, arrays bitwise)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys differ"
        for k in a:
            assert_identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), where
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), where
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    elif isinstance(a, float):
        assert a == b and math.copysign(1, a) == math.copysign(1, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("value", [
    None, True, False, 0, -1, 2 ** 100, -(2 ** 80), 1.5, -0.0, "", "text", "ünïcödé ☃",
    [], {}, (), (1,), (1, (2, (3,))), [1, (2, 3), [4]],
    {"a": (1, 2)}, {1: "one", 2: "two"}, {(1, 2): "tuple key", None: 0, True: 1, 2.5: "float key"},
    {"__tuple__": 1, "__tensor__": "not a tensor", "__pickle__": "x", "ok": 2},
    {"nested": {3: [b"\x00\xff", (None,)]}},
    b"", b"\x00\x01\xfe\xff", math.nan, math.inf, -math.inf, [math.nan, (math.inf,)], {"v": -math.inf},
])
def test_values_round_trip_with_exact_types(value):
    out, encoder = round_trip(value)
    assert_identical(out, value)
    assert not encoder.used_pickle and encoder.tensors == {}


def test_bytearray_comes_back_as_bytes():
    out, _ = round_trip(bytearray(b"abc"))
    assert out == b"abc" and type(out) is bytes


@pytest.mark.parametrize("scalar", NUMPY_SCALARS, ids=lambda s: f"{type(s).__name__}({s})")
def test_numpy_scalars_round_trip_with_exact_types(scalar):
    # np.float64 subclasses float: it used to come back as a plain float (regression).
    out, _ = round_trip({"s": scalar, "in_list": [scalar], "in_tuple": (scalar,)})
    for got in (out["s"], out["in_list"][0], out["in_tuple"][0]):
        assert type(got) is type(scalar)
        assert got.tobytes() == scalar.tobytes()


def test_tensors_are_replaced_by_placeholders_with_their_path():
    a, b = np.arange(3), torch.ones(2)
    encoder = codec.Encoder()
    tree = encoder.encode({"x": a, "y": [b], "t": (a,)}, "model")
    assert tree["x"] == {"__tensor__": "model/x", "kind": "numpy"}
    assert tree["y"] == [{"__tensor__": "model/y/0", "kind": "torch"}]
    assert tree["t"] == {"__tuple__": [{"__tensor__": "model/t/0", "kind": "numpy"}]}
    assert encoder.tensors["model/x"] is a and encoder.tensors["model/y/0"] is b
    out = codec.decode(tree, lambda key, kind: encoder.tensors[key])
    assert out["x"] is a and out["y"][0] is b and out["t"][0] is a


def test_colliding_tensor_keys_get_a_suffix():
    encoder = codec.Encoder()
    # "a/b" as a nested path and as a literal key with a slash produce the same key.
    tree = encoder.encode({"a": {"b": np.zeros(1)}, "a/b": np.ones(1)}, "")
    keys = sorted(encoder.tensors)
    assert keys == ["a/b", "a/b#1"]
    out = codec.decode(tree, lambda key, kind: encoder.tensors[key])
    assert out["a"]["b"][0] == 0 and out["a/b"][0] == 1


class Opaque:
    def __init__(self, x=1):
        self.x = x

    def __eq__(self, other):
        return type(other) is Opaque and other.x == self.x


@pytest.mark.parametrize("value, path", [
    ({"a": [1, Opaque()]}, "root/a/1"),
    ({"s": {1, 2}}, "root/s"),
    ({"c": 1 + 2j}, "root/c"),
    ({"f": lambda: 0}, "root/f"),
    ((Opaque(),), "root/0"),
])
def test_unsupported_objects_raise_unsupported_value_naming_the_path(value, path):
    with pytest.raises(UnsupportedValue, match="allow_pickle=True") as info:
        codec.Encoder().encode(value, "root")
    assert repr(path) in str(info.value)


def test_pickle_is_used_only_on_request_and_needs_opt_in_to_load():
    value = {"obj": Opaque(5), "s": {1, 2}, "plain": 3}
    out, encoder = round_trip(value, allow_pickle_save=True, allow_pickle_load=True)
    assert encoder.used_pickle
    assert out == value and type(out["s"]) is set
    with pytest.raises(PickleNotAllowed, match="allow_pickle=True"):
        round_trip(value, allow_pickle_save=True, allow_pickle_load=False)


def test_a_tree_without_pickle_does_not_need_the_opt_in():
    _, encoder = round_trip({"a": 1}, allow_pickle_save=True)
    assert not encoder.used_pickle


def test_decode_never_unpickles_without_opt_in(monkeypatch):
    import pickle

    def boom(*_a, **_k):
        raise AssertionError("pickle.loads called")
    monkeypatch.setattr(pickle, "loads", boom)
    tree = {"x": [{"__pickle__": "gARLAS4="}]}
    with pytest.raises(PickleNotAllowed):
        codec.decode(tree, lambda k, kind: None)


@pytest.mark.parametrize("tree", [
    {"__tuple__": 5},
    {"__dict__": "x"},
    {"__dict__": [[1]]},
    {"__dict__": [[[1, 2], "unhashable list key"]]},
])
def test_malformed_trees_are_corrupt(tree):
    with pytest.raises(CorruptCheckpoint):
        codec.decode(tree, lambda k, kind: None)


# -- property: random trees round-trip with exact types ---------------------------------------

numpy_scalars = st.sampled_from(NUMPY_SCALARS) | st.integers(-(2 ** 63), 2 ** 63 - 1).map(np.int64) | \
    st.floats(width=32).map(np.float32)
leaves = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.binary(max_size=8)
          | numpy_scalars)
keys = st.text(max_size=8) | st.integers() | st.booleans() | st.none() | st.tuples(st.integers(), st.text(max_size=3))
trees = st.recursive(
    leaves,
    lambda c: st.lists(c, max_size=4) | st.lists(c, max_size=3).map(tuple) | st.dictionaries(keys, c, max_size=4),
    max_leaves=25,
)


@PROPERTY
@given(trees)
def test_random_trees_round_trip_with_exact_types(tree):
    out, _ = round_trip(tree)
    assert_identical(out, tree)


# -- values that cannot be saved: UnsupportedValue (a ValueError) naming the path ------------------

@pytest.mark.parametrize("value, path, message", [
    ({"k": {float("nan"): 1}}, "root/k", "NaN"),
    ({"big": [1, 2 ** 9000]}, "root/big/1", "9001 bits"),
    ({"neg": -(2 ** 9000)}, "root/neg", "bits"),
    ({"f": lambda: 0}, "root/f", "allow_pickle"),
])
def test_values_that_cannot_be_saved_raise_unsupported_value(value, path, message):
    with pytest.raises(UnsupportedValue, match=message) as info:
        codec.Encoder().encode(value, "root")
    assert repr(path) in str(info.value)
    assert isinstance(info.value, ValueError)  # code catching ValueError keeps working


def test_a_lambda_that_pickle_refuses_is_unsupported_even_with_pickle_allowed():
    with pytest.raises(UnsupportedValue, match="with pickle"):
        codec.Encoder(allow_pickle=True).encode({"f": lambda: 0}, "root")


def test_nesting_beyond_the_limit_is_unsupported_and_the_limit_round_trips():
    deep: list = []
    node = deep
    for _ in range(codec.MAX_DEPTH - 3):  # MAX_DEPTH - 2 lists, in a tuple in a dict: MAX_DEPTH levels
        node.append([])
        node = node[0]
    out, _ = round_trip({"t": (deep,)})  # tuples add a level of JSON: still decodes
    assert out == {"t": (deep,)}
    with pytest.raises(UnsupportedValue, match="nested more than"):
        codec.Encoder().encode([[[deep]]], "root")


def test_the_largest_int_round_trips():
    value = 2 ** codec.MAX_INT_BITS - 1
    assert round_trip({"x": -value})[0] == {"x": -value}


# -- decoding hostile trees: only CorruptCheckpoint -------------------------------------------------

@pytest.mark.parametrize("tree", [
    {"__bytes__": "not base64!"},
    {"__bytes__": 5},
    {"__float__": "pi"},
    {"__float__": None},
    {"__npscalar__": "U2000000000", "value": 1},
    {"__npscalar__": "not a dtype", "value": 1},
    {"__npscalar__": "<f8", "value": [1, 2]},
    {"__tensor__": ["w"]},
    {"__tensor__": "w", "kind": "jax"},
    "[" * 200_000,
])
def test_hostile_trees_are_corrupt(tree):
    if isinstance(tree, str):  # nesting: a deep list, built without recursion
        tree = []
        for _ in range(200_000):
            tree = [tree]
    with pytest.raises(CorruptCheckpoint):
        codec.decode(tree, lambda k, kind: np.zeros(1))


def test_a_damaged_pickle_is_corrupt_and_a_missing_class_a_mismatch():
    import base64
    import pickle
    with pytest.raises(CorruptCheckpoint, match="pickled value"):
        codec.decode({"__pickle__": base64.b64encode(b"\x80\x05garbage").decode()}, None, allow_pickle=True)
    missing = pickle.dumps(Opaque(2)).replace(b"Opaque", b"Vanish")
    with pytest.raises(StateMismatch, match="renamed or removed"):
        codec.decode({"__pickle__": base64.b64encode(missing).decode()}, None, allow_pickle=True)


TAGS = ["__tensor__", "__tuple__", "__dict__", "__bytes__", "__npscalar__", "__pickle__", "__float__", "kind",
        "value"]
json_leaves = (st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats(allow_nan=False)
               | st.text(max_size=8) | st.sampled_from(["numpy", "torch", "<f8", "|b1", "AAAA", "nan", "w", "O"]))
json_trees = st.recursive(
    json_leaves,
    lambda c: (st.lists(c, max_size=4)
               | st.dictionaries(st.sampled_from(TAGS) | st.text(max_size=4), c, max_size=4)),
    max_leaves=30,
)


@PROPERTY
@given(json_trees, st.booleans())
def test_arbitrary_json_trees_decode_or_raise_only_checkpoint_errors(tree, pickle_allowed):
    def tensor_of(key, kind):
        if key != "w":
            raise CorruptCheckpoint(f"no tensor {key!r}")
        return np.arange(3.0) if kind == "numpy" else torch.arange(3.0)
    try:
        # Pickles drawn here are base64 of a few random bytes: never a meaningful program.
        codec.decode(tree, tensor_of, allow_pickle=pickle_allowed)
    except (CorruptCheckpoint, PickleNotAllowed, StateMismatch):
        pass
