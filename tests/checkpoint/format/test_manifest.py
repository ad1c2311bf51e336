"""MANIFEST.json: building, parsing, self-checksum, path safety, and fuzzing of the parser."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unbroken.checkpoint.format import checksum
from unbroken.checkpoint.format import manifest
from unbroken.checkpoint.format.manifest import FileEntry, Manifest
from unbroken.checkpoint.format.manifest import PLAIN_FORMAT_VERSION, READABLE_VERSION
from unbroken.errors import CorruptCheckpoint, UnsafePathError, UnsupportedFormatVersion

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

UNSAFE_PATHS = [
    "../x", "/etc/passwd", "a/../../b", "a\\b", "..\\x", "C:\\x", "c:x", "..", ".", "./a", "a/./b",
    "a//b", "a/", "", "a\x00b", "MANIFEST.json",
]
SAFE_PATHS = ["a", "a/b/c.bin", "with space.txt", "..a", "a..b", "a/..b", ".hidden", "ünï/cödé"]


def sample(**overrides) -> Manifest:
    args = dict(steps_completed=42,
                files=[FileEntry("z.bin", 10, "0000000a"), FileEntry("a/b.json", 0, "ffffffff")],
                metadata={"metrics": {"loss": 0.5}, "note": "hi"}, trial={"experiment": "e", "number": 1})
    args.update(overrides)
    return manifest.build(args.pop("steps_completed"), args.pop("files"), args.pop("metadata"), **args)


def body_of(m: Manifest) -> dict:
    return json.loads(m.to_bytes())


def seal(body: dict) -> bytes:
    """Re-encode a (hand-edited) body with a correct self-checksum, NaN allowed (like a forger would)."""
    body = {k: v for k, v in body.items() if k != "manifest_crc32c"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()
    body["manifest_crc32c"] = checksum.to_hex(checksum.update(0, canonical))
    return json.dumps(body, allow_nan=True).encode()


# -- building and parsing ---------------------------------------------------------------------

def test_round_trip_keeps_every_field():
    m = sample(uuid="u-1", needs_pickle=True)
    parsed = manifest.parse(m.to_bytes(), expected_uuid="u-1")
    assert parsed == m
    assert parsed.uuid == "u-1" and parsed.steps_completed == 42 and parsed.needs_pickle is True
    assert parsed.trial == {"experiment": "e", "number": 1}
    assert parsed.metadata == {"metrics": {"loss": 0.5}, "note": "hi"}
    assert parsed.format_version == PLAIN_FORMAT_VERSION
    assert [f.path for f in parsed.files] == ["a/b.json", "z.bin"]  # sorted by path
    assert parsed.size == 10


def test_serialized_form_has_size_and_crc_per_file_and_a_self_checksum():
    body = body_of(sample())
    assert body["format"] == "unbroken-checkpoint"
    assert body["files"] == [{"path": "a/b.json", "size": 0, "crc32c": "ffffffff"},
                             {"path": "z.bin", "size": 10, "crc32c": "0000000a"}]
    stored = body.pop("manifest_crc32c")
    assert stored == manifest._body_crc(body)


def test_new_uuids_are_unique():
    assert sample().uuid != sample().uuid


def test_checksum_vector():
    # CRC-32C (Castagnoli) check value of "123456789".
    assert checksum.to_hex(checksum.update(0, b"123456789")) == "e3069283"


@pytest.mark.parametrize("path", UNSAFE_PATHS)
def test_check_relpath_refuses_unsafe_paths(path):
    with pytest.raises(UnsafePathError):
        manifest.check_relpath(path)


@pytest.mark.parametrize("path", [None, 3, ["a"]])
def test_check_relpath_refuses_non_strings(path):
    with pytest.raises(UnsafePathError):
        manifest.check_relpath(path)


@pytest.mark.parametrize("path", SAFE_PATHS)
def test_check_relpath_accepts_safe_paths(path):
    assert manifest.check_relpath(path) == path


@pytest.mark.parametrize("path", UNSAFE_PATHS)
def test_build_refuses_unsafe_paths(path):
    with pytest.raises(UnsafePathError):
        sample(files=[FileEntry(path, 1, "00000000")])


@pytest.mark.parametrize("path", UNSAFE_PATHS)
def test_parse_refuses_a_hand_edited_unsafe_path_with_a_valid_checksum(path):
    body = body_of(sample())
    body["files"][0]["path"] = path
    data = seal(body)
    # The forged manifest has a correct self-checksum: only the path check can refuse it.
    reparsed = json.loads(data)
    stored = reparsed.pop("manifest_crc32c")
    assert stored == manifest._body_crc(reparsed)
    with pytest.raises(UnsafePathError):
        manifest.parse(data)


def test_any_edit_without_a_new_checksum_is_caught():
    body = body_of(sample())
    body["steps_completed"] = 43
    with pytest.raises(CorruptCheckpoint, match="checksum"):
        manifest.parse(json.dumps(body).encode())
    body = body_of(sample())
    del body["manifest_crc32c"]
    with pytest.raises(CorruptCheckpoint, match="checksum"):
        manifest.parse(json.dumps(body).encode())


def test_every_single_byte_flip_is_caught():
    data = bytearray(sample().to_bytes())
    for i in range(len(data)):
        mutated = bytearray(data)
        mutated[i] ^= 0x01
        try:
            parsed = manifest.parse(bytes(mutated))
        except CorruptCheckpoint:
            continue
        # A flip in insignificant whitespace may still parse: then nothing may have changed.
        assert parsed == manifest.parse(bytes(data)), f"byte {i} flipped and the manifest changed silently"


def test_a_newer_format_is_unsupported_not_corrupt():
    body = body_of(sample())
    body["format_version"] = READABLE_VERSION + 1
    with pytest.raises(UnsupportedFormatVersion) as info:
        manifest.parse(seal(body))
    assert not isinstance(info.value, CorruptCheckpoint)
    assert str(info.value) == (f"checkpoint {body['uuid']} was written by a newer unbroken "
                               f"(format {READABLE_VERSION + 1} > {READABLE_VERSION}): upgrade unbroken to read it")
    # Its checksum scheme may differ: the version is judged before the checksum.
    body["manifest_crc32c"] = "00000000"
    with pytest.raises(UnsupportedFormatVersion, match="upgrade unbroken"):
        manifest.parse(json.dumps(body).encode(), expected_uuid=body["uuid"])


@pytest.mark.parametrize("edit, message", [
    (lambda b: b.update(format="other"), "format"),
    (lambda b: b.update(format_version="1"), "format_version"),
    (lambda b: b.update(steps_completed=-1), "negative"),
    (lambda b: b.update(steps_completed=True), "steps_completed"),
    (lambda b: b.update(steps_completed=1.0), "steps_completed"),
    (lambda b: b.update(uuid=7), "uuid"),
    (lambda b: b.update(metadata=[]), "metadata"),
    (lambda b: b.update(created_at="now"), "created_at"),
    (lambda b: b.update(created_at=10 ** 400), "created_at"),
    (lambda b: b.update(files={}), "files"),
    (lambda b: b["files"].append(dict(b["files"][0])), "twice"),
    (lambda b: b["files"].__setitem__(0, "x"), "not an object"),
    (lambda b: b["files"][0].update(size=-1), "negative size"),
    (lambda b: b["files"][0].update(size=1.5), "size"),
    (lambda b: b["files"][0].update(crc32c="XYZ"), "crc32c"),
    (lambda b: b["files"][0].update(crc32c="0000000G"), "crc32c"),
    (lambda b: b["files"][0].update(crc32c=12), "crc32c"),
])
def test_invalid_fields_are_corrupt(edit, message):
    body = body_of(sample())
    edit(body)
    with pytest.raises(CorruptCheckpoint, match=message):
        manifest.parse(seal(body))


def test_expected_uuid_must_match():
    m = sample(uuid="abc")
    with pytest.raises(CorruptCheckpoint, match="directory is other"):
        manifest.parse(m.to_bytes(), expected_uuid="other")


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]", b"null", b"\xff\xfe\x00", b'"str"', b"{}"])
def test_garbage_is_corrupt(data):
    with pytest.raises(CorruptCheckpoint):
        manifest.parse(data)


def test_oversized_manifest_is_refused_without_parsing():
    with pytest.raises(CorruptCheckpoint, match="larger than any valid one"):
        manifest.parse(b" " * ((64 << 20) + 1))


# Regressions: these raised RecursionError, ValueError and OverflowError instead of CorruptCheckpoint.
def test_deeply_nested_json_is_corrupt():
    with pytest.raises(CorruptCheckpoint):
        manifest.parse(b"[" * 100_000)
    with pytest.raises(CorruptCheckpoint):
        manifest.parse(b'{"format": "unbroken-checkpoint", "format_version": 1, "x": ' + b"[" * 100_000)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_corrupt(constant):
    with pytest.raises(CorruptCheckpoint):
        manifest.parse(b'{"format": "unbroken-checkpoint", "format_version": 1, "x": ' + constant + b"}")
    body = body_of(sample())
    body["metadata"]["loss"] = math.nan if constant == b"NaN" else math.inf
    with pytest.raises(CorruptCheckpoint):
        manifest.parse(seal(body))


def test_huge_created_at_is_corrupt():
    body = body_of(sample())
    body["created_at"] = 10 ** 400
    with pytest.raises(CorruptCheckpoint, match="created_at"):
        manifest.parse(seal(body))


# -- property tests ---------------------------------------------------------------------------

def only_corrupt(data: bytes) -> Manifest | None:
    """Parse; anything but a Manifest or CorruptCheckpoint fails the test."""
    try:
        return manifest.parse(data)
    except CorruptCheckpoint:
        return None


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_corrupt_checkpoint(data):
    assert only_corrupt(data) is None  # random bytes never carry a valid self-checksum


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10 ** 400), max_value=10 ** 400)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_FIELDS = ["format", "format_version", "uuid", "steps_completed", "created_at", "trial", "needs_pickle",
           "metadata", "files", "manifest_crc32c"]


#: Built once, so that every example mutates the same bytes (hypothesis needs determinism).
VALID = sample(uuid="0b5d4a0e-54a4-4a9c-9d4e-1f2a3b4c5d6e").to_bytes()


@st.composite
def mutated_manifests(draw) -> bytes:
    data = VALID
    how = draw(st.sampled_from(["flip", "truncate", "insert", "field", "file_field", "metadata", "drop"]))
    if how == "flip":
        buf = bytearray(data)
        for i in draw(st.lists(st.integers(0, len(buf) - 1), min_size=1, max_size=4)):
            buf[i] ^= draw(st.integers(1, 255))
        return bytes(buf)
    if how == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    if how == "insert":
        i = draw(st.integers(0, len(data)))
        return data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]
    body = json.loads(data)
    if how == "field":
        body[draw(st.sampled_from(_FIELDS))] = draw(json_values)
    elif how == "file_field":
        entry = body["files"][draw(st.integers(0, len(body["files"]) - 1))]
        entry[draw(st.sampled_from(["path", "size", "crc32c", "extra"]))] = draw(json_values)
    elif how == "metadata":
        body["metadata"][draw(st.text(max_size=5))] = draw(json_values)
    else:
        body.pop(draw(st.sampled_from(_FIELDS)))
    # Re-seal so that the validation after the checksum is exercised, not just the checksum.
    return seal(body) if draw(st.booleans()) else json.dumps(body, allow_nan=True).encode()


@FUZZ
@given(mutated_manifests())
def test_mutated_manifests_raise_only_corrupt_checkpoint(data):
    parsed = only_corrupt(data)
    if parsed is not None:  # a mutation that kept it valid must still describe safe files
        for f in parsed.files:
            assert manifest.check_relpath(f.path) == f.path
            assert f.size >= 0 and len(f.crc32c) == 8
        assert parsed.steps_completed >= 0 and math.isfinite(parsed.created_at)


@settings(FUZZ, max_examples=100)
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_arbitrary_json_objects_raise_only_corrupt_checkpoint(obj):
    obj.setdefault("format", "unbroken-checkpoint")
    obj.setdefault("format_version", PLAIN_FORMAT_VERSION)
    for data in (json.dumps(obj, allow_nan=True).encode(), seal(obj)):
        only_corrupt(data)


safe_segments = st.text(st.characters(blacklist_characters="/\\\x00", blacklist_categories=("Cs",)),
                        min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))
safe_paths = st.lists(safe_segments, min_size=1, max_size=3).map("/".join).filter(
    lambda p: p != "MANIFEST.json" and not (len(p) > 1 and p[1] == ":"))
finite_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=10)


@settings(FUZZ, max_examples=100)
@given(
    steps=st.integers(0, 2 ** 63),
    files=st.dictionaries(safe_paths, st.tuples(st.integers(0, 2 ** 50), st.integers(0, 2 ** 32 - 1)), max_size=5),
    metadata=st.dictionaries(st.text(max_size=8), finite_json, max_size=4),
)
def test_build_parse_round_trip(steps, files, metadata):
    entries = [FileEntry(p, size, checksum.to_hex(crc)) for p, (size, crc) in files.items()]
    m = manifest.build(steps, entries, metadata)
    parsed = manifest.parse(m.to_bytes(), expected_uuid=m.uuid)
    assert parsed == m
    assert {f.path for f in parsed.files} == set(files)


# -- references (incremental checkpoints, format 2) ------------------------------------------------
def _ref(**kw):
    from unbroken.checkpoint.format.manifest import FileRef
    return FileRef(**{"uuid": "base", "path": "tensors.safetensors", "size": 10, "crc32c": "0000abcd",
                      "tensors": ("a", "b"), **kw})


def test_a_manifest_with_references_is_format_2_and_round_trips():
    built = manifest.build(3, [FileEntry("state.json", 2, "00000001")], {}, refs=[_ref()])
    assert built.format_version == manifest.REFS_FORMAT_VERSION
    parsed = manifest.parse(built.to_bytes())
    assert parsed == built and parsed.ref_uuids == {"base"} and parsed.referenced_size == 10
    plain = manifest.build(3, [FileEntry("state.json", 2, "00000001")], {})
    assert plain.format_version == PLAIN_FORMAT_VERSION and b"refs" not in plain.to_bytes()


@pytest.mark.parametrize("bad", [
    {"uuid": "../x"}, {"uuid": ""}, {"path": "/etc/passwd"}, {"crc32c": "xyz"}, {"size": -1},
    {"tensors": ("a", "a")},
])
def test_invalid_references_are_refused(bad):
    built = manifest.build(3, [], {}, refs=[_ref()])
    body = body_of(built)
    body["refs"][0].update({k: list(v) if isinstance(v, tuple) else v for k, v in bad.items()})
    with pytest.raises(CorruptCheckpoint):
        manifest.parse(seal(body))


def test_references_in_a_format_1_manifest_or_to_itself_are_refused():
    built = manifest.build(3, [], {}, refs=[_ref()])
    body = body_of(built)
    body["format_version"] = PLAIN_FORMAT_VERSION
    with pytest.raises(CorruptCheckpoint, match="refs"):
        manifest.parse(seal(body))
    body = body_of(built)
    body["refs"][0]["uuid"] = body["uuid"]
    with pytest.raises(CorruptCheckpoint, match="its own"):
        manifest.parse(seal(body))
