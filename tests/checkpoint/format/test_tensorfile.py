"""Tensor files: safetensors layout, compatibility with the safetensors library, a reader that trusts nothing."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import crc32c
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from unbroken.checkpoint.format import arrays
from unbroken.checkpoint.format import tensorfile
from unbroken.errors import TensorFileError, UnsupportedValue
from dtypes import NUMPY_DTYPES, TORCH_DTYPES

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])



def write_file(path: Path, tensors: dict, metadata: dict | None = None):
    plan = [(key, *arrays.describe(value, key)) for key, value in tensors.items()]
    header_bytes, header = tensorfile.layout(plan, metadata)
    crc = tensorfile.write(path, header_bytes, header, {k: arrays.host_bytes(v) for k, v in tensors.items()})
    return header, crc


def read_file(path: Path, kind: str) -> dict:
    data = bytearray(Path(path).read_bytes())
    header = tensorfile.parse_header(data, len(data))
    view = memoryview(data)
    return {e.name: arrays.from_bytes(view[header.data_start + e.begin:header.data_start + e.end], e.dtype, e.shape,
                                      kind)
            for e in header.entries}


def torch_bytes(t: torch.Tensor) -> bytes:
    return bytes(arrays.host_bytes(t))


def assert_same_array(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def assert_same_tensor(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape)
    assert torch_bytes(a) == torch_bytes(b)


def file_of(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


# -- writing ----------------------------------------------------------------------------------

def test_layout_aligns_every_tensor_and_the_data_section(tmp_path):
    tensors = {"u8": np.arange(3, dtype=np.uint8), "f64": np.arange(5, dtype=np.float64),
               "f16": np.ones(3, np.float16), "i32": np.arange(7, dtype=np.int32), "b": np.array(True)}
    header, crc = write_file(tmp_path / "t.safetensors", tensors, {"k": "v"})
    data = (tmp_path / "t.safetensors").read_bytes()
    assert header.data_start % 8 == 0
    for e in header.entries:
        assert e.begin % tensorfile.ITEM_SIZES[e.dtype] == 0
    assert [e.dtype for e in header.entries] == ["F64", "I32", "F16", "U8", "BOOL"]  # largest item first
    assert header.file_size == len(data)
    assert crc == f"{crc32c.crc32c(data):08x}"
    parsed = tensorfile.parse_header(data, len(data))
    assert parsed == header and parsed.metadata == {"k": "v"}
    with open(tmp_path / "t.safetensors", "rb") as f:
        assert tensorfile.read_header(f) == header


def test_every_numpy_dtype_round_trips_and_loads_with_safetensors(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {}
    for name in NUMPY_DTYPES:
        raw = rng.integers(0, 256, size=64, dtype=np.uint8)
        if name == "bool":
            raw = raw % 2
        tensors[name] = raw.view(name).reshape(2, -1)
        tensors[name + "-0d"] = raw[: np.dtype(name).itemsize].view(name).reshape(())
        tensors[name + "-empty"] = np.zeros((0, 3), dtype=name)
    path = tmp_path / "t.safetensors"
    write_file(path, tensors)
    ours = read_file(path, "numpy")
    reference = safetensors.numpy.load_file(path)
    assert set(ours) == set(reference) == set(tensors)
    for key, value in tensors.items():
        assert_same_array(ours[key], value)
        assert_same_array(reference[key], value)


def test_every_torch_dtype_round_trips_and_loads_with_safetensors(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for dtype in TORCH_DTYPES:
        name = str(dtype).removeprefix("torch.")
        raw = torch.randint(0, 256, (96,), dtype=torch.uint8, generator=gen)
        if dtype == torch.bool:
            raw = raw % 2
        tensors[name] = raw.view(dtype).reshape(2, 2, -1)
        tensors[name + "-0d"] = raw[: dtype.itemsize].view(dtype).reshape(())
        tensors[name + "-empty"] = torch.zeros((3, 0), dtype=dtype)
    path = tmp_path / "t.safetensors"
    write_file(path, tensors)
    ours = read_file(path, "torch")
    reference = safetensors.torch.load_file(path)
    assert set(ours) == set(reference) == set(tensors)
    for key, value in tensors.items():
        assert_same_tensor(ours[key], value)
        assert_same_tensor(reference[key], value)


def test_files_written_by_safetensors_parse_and_read(tmp_path):
    tensors = {"w": torch.randn(3, 4).to(torch.bfloat16), "b": torch.arange(5), "s": torch.tensor(1.5)}
    safetensors.torch.save_file(tensors, tmp_path / "ref.safetensors", metadata={"format": "pt"})
    ours = read_file(tmp_path / "ref.safetensors", "torch")
    for key, value in tensors.items():
        assert_same_tensor(ours[key], value)
    arrays_ = {"a": np.arange(6, dtype=np.int16).reshape(2, 3), "z": np.zeros(0, np.float32)}
    safetensors.numpy.save_file(arrays_, tmp_path / "ref2.safetensors")
    for key, value in read_file(tmp_path / "ref2.safetensors", "numpy").items():
        assert_same_array(value, arrays_[key])


def test_non_contiguous_and_big_endian_inputs_are_written_correctly(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    tensors = {
        "transposed": base.T,
        "strided": base[::2, 1::3],
        "big_endian": np.arange(5, dtype=">f8") * 1.25,  # regression: was written byte-swapped
        "big_endian_int": np.arange(-3, 3, dtype=">i4"),
        "torch_t": torch.arange(12.0).reshape(3, 4).T,
        "torch_grad": torch.ones(2, requires_grad=True),
    }
    path = tmp_path / "t.safetensors"
    write_file(path, tensors)
    numpy_side = safetensors.numpy.load_file(path)
    np.testing.assert_array_equal(numpy_side["transposed"], base.T)
    np.testing.assert_array_equal(numpy_side["strided"], base[::2, 1::3])
    np.testing.assert_array_equal(numpy_side["big_endian"], np.arange(5) * 1.25)
    np.testing.assert_array_equal(numpy_side["big_endian_int"], np.arange(-3, 3))
    torch_side = read_file(path, "torch")
    assert torch.equal(torch_side["torch_t"], torch.arange(12.0).reshape(3, 4).T)
    assert torch.equal(torch_side["torch_grad"], torch.ones(2))


@pytest.mark.parametrize("value", [np.array(["a", "b"]), np.array([1 + 2j]), np.array([None], dtype=object),
                                   np.array(["2020-01-01"], dtype="datetime64[D]"), torch.zeros(2, dtype=torch.complex64)])
def test_unsupported_dtypes_raise_unsupported_value_naming_the_key(value):
    with pytest.raises(UnsupportedValue, match="my/key"):
        arrays.describe(value, "my/key")


def test_sparse_tensors_are_refused():
    with pytest.raises(UnsupportedValue, match="dense"):
        arrays.describe(torch.eye(3).to_sparse(), "sp")


def test_torch_only_dtypes_cannot_be_read_as_numpy(tmp_path):
    path = tmp_path / "t.safetensors"
    write_file(path, {"bf": torch.ones(2, dtype=torch.bfloat16)})
    with pytest.raises(TensorFileError, match="load it with torch"):
        read_file(path, "numpy")


def test_write_refuses_a_buffer_of_the_wrong_size(tmp_path):
    header_bytes, header = tensorfile.layout([("a", "F32", (4,))])
    with pytest.raises(ValueError, match="header says 16"):
        tensorfile.write(tmp_path / "t", header_bytes, header, {"a": memoryview(b"12345678")})


# -- the reader trusts nothing ----------------------------------------------------------------

GOOD_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("data, message", [
    (b"", "shorter than its 8-byte"),
    (b"\x01\x00", "shorter than its 8-byte"),
    (struct.pack("<Q", 100) + b"{}", "does not fit the file"),
    (struct.pack("<Q", 2 ** 64 - 1) + b"{}", "does not fit the file"),
    (struct.pack("<Q", 4) + b"nope", "not valid JSON"),
    (struct.pack("<Q", 4) + b"\xff\xfe\xfd\xfc", "not valid JSON"),
    (file_of([]), "not a JSON object"),
    (file_of({"__metadata__": {"a": 1}}), "__metadata__"),
    (file_of({"__metadata__": "x"}), "__metadata__"),
    (file_of({"t": 5}), "not an object"),
    (file_of({"t": {**GOOD_ENTRY, "dtype": "F128"}}, b"\0" * 8), "unknown dtype"),
    (file_of({"t": {**GOOD_ENTRY, "dtype": None}}, b"\0" * 8), "unknown dtype"),
    (file_of({"t": {**GOOD_ENTRY, "dtype": ["F32"]}}, b"\0" * 8), "unknown dtype"),  # regression: TypeError
    (file_of({"t": {**GOOD_ENTRY, "dtype": {"a": 1}}}, b"\0" * 8), "unknown dtype"),  # regression: TypeError
    (file_of({"t": {**GOOD_ENTRY, "shape": [-2]}}, b"\0" * 8), "shape"),
    (file_of({"t": {**GOOD_ENTRY, "shape": [2.0]}}, b"\0" * 8), "shape"),
    (file_of({"t": {**GOOD_ENTRY, "shape": [True, 2]}}, b"\0" * 8), "shape"),
    (file_of({"t": {**GOOD_ENTRY, "shape": "2"}}, b"\0" * 8), "shape"),
    (file_of({"t": {**GOOD_ENTRY, "data_offsets": [0]}}, b"\0" * 8), "data_offsets"),
    (file_of({"t": {**GOOD_ENTRY, "data_offsets": [0, -8]}}, b"\0" * 8), "data_offsets"),
    (file_of({"t": {**GOOD_ENTRY, "data_offsets": [0, 12]}}, b"\0" * 12), "do not match"),
    (file_of({"t": {**GOOD_ENTRY, "data_offsets": [4, 12]}}, b"\0" * 12), "hole"),
    (file_of({"t": GOOD_ENTRY, "u": {**GOOD_ENTRY, "data_offsets": [4, 12]}}, b"\0" * 12), "overlap"),
    (file_of({"t": GOOD_ENTRY}, b"\0" * 9), "covers 8 bytes but the file has 9"),
    (file_of({"t": GOOD_ENTRY}, b"\0" * 7), "covers 8 bytes but the file has 7"),
    (struct.pack("<Q", 100_000) + b"[" * 100_000, "not valid JSON"),  # regression: RecursionError
])
def test_malformed_files_raise_tensor_file_error(data, message):
    with pytest.raises(TensorFileError, match=message):
        tensorfile.parse_header(data, len(data))


def test_a_prefix_shorter_than_the_header_is_refused():
    data = file_of({"t": GOOD_ENTRY}, b"\0" * 8)
    with pytest.raises(TensorFileError, match="truncated"):
        tensorfile.parse_header(data[:12], len(data))


def test_read_header_refuses_a_short_file(tmp_path):
    (tmp_path / "short").write_bytes(b"\x05\x00")
    with open(tmp_path / "short", "rb") as f, pytest.raises(TensorFileError):
        tensorfile.read_header(f)
    (tmp_path / "long-header").write_bytes(struct.pack("<Q", 10 ** 6) + b"{}")
    with open(tmp_path / "long-header", "rb") as f, pytest.raises(TensorFileError, match="does not fit"):
        tensorfile.read_header(f)


def test_empty_file_with_only_a_header_is_valid():
    header = tensorfile.parse_header(file_of({}), len(file_of({})))
    assert header.entries == () and header.file_size == header.data_start


# -- property tests ---------------------------------------------------------------------------

def only_tensor_file_error(data: bytes):
    try:
        header = tensorfile.parse_header(data, len(data))
    except TensorFileError:
        return None
    # Whatever it accepted must describe exactly this file.
    assert header.file_size == len(data)
    position = 0
    for entry in header.entries:
        assert entry.begin == position and entry.nbytes == tensorfile.ITEM_SIZES[entry.dtype] * int(np.prod(entry.shape))
        position = entry.end
    return header


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_tensor_file_error(data):
    only_tensor_file_error(data)


@FUZZ
@given(st.binary(max_size=512), st.integers(-16, 16))
def test_arbitrary_headers_raise_only_tensor_file_error(body, skew):
    only_tensor_file_error(struct.pack("<Q", max(0, len(body) + skew)) + body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats() | st.text(max_size=6)
    | st.sampled_from(sorted(tensorfile.ITEM_SIZES)),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=12)
entry_specs = st.fixed_dictionaries(
    {},
    optional={"dtype": st.sampled_from(sorted(tensorfile.ITEM_SIZES)) | json_values,
              "shape": st.lists(st.integers(-1, 4), max_size=3) | json_values,
              "data_offsets": st.lists(st.integers(-1, 64), min_size=2, max_size=2) | json_values},
)


@FUZZ
@given(st.dictionaries(st.text(max_size=8), entry_specs | json_values, max_size=4), st.binary(max_size=64))
def test_arbitrary_json_headers_raise_only_tensor_file_error(header, data):
    raw = json.dumps(header, allow_nan=True).encode()
    only_tensor_file_error(struct.pack("<Q", len(raw)) + raw + data)


def _valid_file() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.safetensors"
        write_file(path, {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(3, dtype=np.int8),
                          "c": np.array(2.5), "d": np.zeros((0, 2), np.uint16)}, {"m": "x"})
        return path.read_bytes()


VALID = _valid_file()


@st.composite
def mutated_files(draw) -> bytes:
    data = VALID
    how = draw(st.sampled_from(["flip", "truncate", "header_length", "extend", "insert"]))
    if how == "flip":
        buf = bytearray(data)
        for i in draw(st.lists(st.integers(0, len(buf) - 1), min_size=1, max_size=4)):
            buf[i] ^= draw(st.integers(1, 255))
        return bytes(buf)
    if how == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    if how == "header_length":
        (n,) = struct.unpack("<Q", data[:8])
        new = draw(st.integers(0, 2 ** 64 - 1) | st.integers(max(0, n - 16), n + 16))
        return struct.pack("<Q", new) + data[8:]
    if how == "extend":
        return data + draw(st.binary(min_size=1, max_size=16))
    i = draw(st.integers(0, len(data)))
    return data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]


@FUZZ
@given(mutated_files())
def test_mutated_files_raise_only_tensor_file_error(data):
    only_tensor_file_error(data)


def test_valid_file_parses():
    assert only_tensor_file_error(VALID) is not None


names = st.text(min_size=1, max_size=12).filter(lambda s: s != "__metadata__")
numpy_arrays = st.sampled_from(NUMPY_DTYPES).flatmap(
    lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))


@ROUND_TRIP
@given(st.dictionaries(names, numpy_arrays, min_size=0, max_size=6))
def test_random_numpy_arrays_round_trip_bitwise(tensors):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.safetensors"
        _, crc = write_file(path, tensors)
        assert crc == f"{crc32c.crc32c(path.read_bytes()):08x}"
        ours = read_file(path, "numpy")
        reference = safetensors.numpy.load_file(path) if tensors else {}
        torch_side = safetensors.torch.load_file(path) if tensors else {}
    assert set(ours) == set(tensors) == set(reference)
    for key, value in tensors.items():
        assert_same_array(ours[key], value)
        assert_same_array(reference[key], value)
        assert torch_side[key].numpy().tobytes() == value.tobytes()


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
@given(st.dictionaries(names, torch_tensors(), min_size=1, max_size=6))
def test_random_torch_tensors_round_trip_bitwise(tensors):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.safetensors"
        write_file(path, tensors)
        ours = read_file(path, "torch")
        reference = safetensors.torch.load_file(path)
    assert set(ours) == set(tensors) == set(reference)
    for key, value in tensors.items():
        assert_same_tensor(ours[key], value)
        assert_same_tensor(reference[key], value)


def test_write_is_exclusive(tmp_path):
    path = tmp_path / "t"
    path.write_bytes(b"existing")
    header_bytes, header = tensorfile.layout([])
    with pytest.raises(FileExistsError):
        tensorfile.write(path, header_bytes, header, {})
    assert path.read_bytes() == b"existing"
    assert os.path.getsize(path) == 8
