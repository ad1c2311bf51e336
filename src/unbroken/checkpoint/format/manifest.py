"""MANIFEST.json: what a checkpoint is, written last, read first.

A manifest lists every file of its checkpoint with size and CRC32C, names the checkpoint
(uuid, ``steps_completed``, trial) and carries the user's metadata. It also carries a
checksum of its own canonical JSON, so a flipped byte anywhere in it is caught. Paths are
relative POSIX paths that stay inside the checkpoint directory; anything else is refused.

Incremental checkpoints (format 2): ``refs`` lists files of *earlier* checkpoints that this one
uses instead of writing the same bytes again, each by the uuid of the checkpoint that holds the
file, its path there, and its size and CRC32C (what the reader checks, whatever the other
manifest says), plus the tensors used from it. A reference always names the checkpoint that
holds the bytes in its own ``files``, never another reference. Manifests without references
are written as format 1, so every reader keeps reading them; a format-1 reader refuses a
format-2 manifest (:class:`UnsupportedFormatVersion`) instead of restoring half a state.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid as uuid_mod
from typing import Any

from ...config import FORMAT_VERSION, MANIFEST_NAME
from ...errors import CorruptCheckpoint, UnsafePathError, UnsupportedFormatVersion
from . import checksum

FORMAT_NAME = "unbroken-checkpoint"
#: The format of manifests without ``refs``: every unbroken reads them.
PLAIN_FORMAT_VERSION = 1
#: The format of manifests with ``refs`` (incremental checkpoints).
REFS_FORMAT_VERSION = 2
#: The newest format this unbroken reads (``config.FORMAT_VERSION`` should say the same).
READABLE_VERSION = max(FORMAT_VERSION, REFS_FORMAT_VERSION)
#: Largest MANIFEST.json accepted (read it with ``store.verify.read_small_file(path, MAX_MANIFEST_BYTES)``).
MAX_MANIFEST_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One file of a checkpoint: relative path, size in bytes, CRC32C as 8 hex digits."""

    path: str
    size: int
    crc32c: str


@dataclasses.dataclass(frozen=True)
class FileRef:
    """A file of an earlier checkpoint that this one uses: held by checkpoint ``uuid`` at ``path``,
    ``size`` bytes with CRC32C ``crc32c`` (checked on every read); ``tensors``: the names used from it."""

    uuid: str
    path: str
    size: int
    crc32c: str
    tensors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"uuid": self.uuid, "path": self.path, "size": self.size, "crc32c": self.crc32c,
                "tensors": list(self.tensors)}

    @property
    def entry(self) -> FileEntry:
        """The file as an entry of the checkpoint that holds it (for verify.open_entry)."""
        return FileEntry(self.path, self.size, self.crc32c)


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The self-description of one committed checkpoint."""

    uuid: str
    steps_completed: int
    files: tuple[FileEntry, ...]
    metadata: dict[str, Any]
    created_at: float
    trial: dict[str, Any] | None = None
    needs_pickle: bool = False
    format_version: int = PLAIN_FORMAT_VERSION
    refs: tuple[FileRef, ...] = ()

    @property
    def size(self) -> int:
        """Total size of the checkpoint's own files (the manifest and referenced files excluded)."""
        return sum(f.size for f in self.files)

    @property
    def referenced_size(self) -> int:
        """Total size of the earlier checkpoints' files this one uses."""
        return sum(r.size for r in self.refs)

    @property
    def ref_uuids(self) -> frozenset[str]:
        """The checkpoints this one needs besides itself."""
        return frozenset(r.uuid for r in self.refs)

    def to_bytes(self) -> bytes:
        body = self._body()
        body["manifest_crc32c"] = _body_crc(body)
        return json.dumps(body, indent=1, sort_keys=True, allow_nan=False).encode()

    def _body(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "uuid": self.uuid,
            "steps_completed": self.steps_completed,
            "created_at": self.created_at,
            "trial": self.trial,
            "needs_pickle": self.needs_pickle,
            "metadata": self.metadata,
            "files": [dataclasses.asdict(f) for f in self.files],
            **({"refs": [r.to_json() for r in self.refs]} if self.refs else {}),
        }


def new_uuid() -> str:
    return str(uuid_mod.uuid4())


def build(steps_completed: int, files: list[FileEntry], metadata: dict[str, Any], *,
          uuid: str | None = None, trial: dict | None = None, needs_pickle: bool = False,
          refs: list[FileRef] | tuple[FileRef, ...] = ()) -> Manifest:
    """Make a manifest, checking every argument (raises CorruptCheckpoint/UnsafePathError).

    With ``refs`` the manifest is format 2 (readers older than incremental checkpoints refuse it).
    """
    manifest = Manifest(
        uuid=uuid or new_uuid(),
        steps_completed=steps_completed,
        files=tuple(sorted(files, key=lambda f: f.path)),
        metadata=metadata,
        created_at=time.time(),
        trial=trial,
        needs_pickle=needs_pickle,
        format_version=REFS_FORMAT_VERSION if refs else PLAIN_FORMAT_VERSION,
        refs=tuple(sorted(refs, key=lambda r: (r.uuid, r.path))),
    )
    # A round trip through the parser applies exactly the checks readers will apply.
    parse(manifest.to_bytes())
    return manifest


def parse(data: bytes, *, expected_uuid: str | None = None) -> Manifest:
    """Parse and validate a manifest. Raises :class:`CorruptCheckpoint` (or UnsafePathError), or
    :class:`UnsupportedFormatVersion` when a newer unbroken wrote it (not corrupt: never skip
    or mark it as such)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise CorruptCheckpoint(f"manifest is {len(data)} bytes, larger than any valid one")
    try:
        body = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptCheckpoint(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CorruptCheckpoint("manifest is not a JSON object")
    stored_crc = body.pop("manifest_crc32c", None)
    if body.get("format") != FORMAT_NAME:
        raise CorruptCheckpoint(f"manifest format is {body.get('format')!r}, expected {FORMAT_NAME!r}")
    version = _field(body, "format_version", int)
    if version > READABLE_VERSION:
        # Checked before the checksum: a newer format may checksum itself differently.
        name = body.get("uuid") if isinstance(body.get("uuid"), str) else expected_uuid
        raise UnsupportedFormatVersion(
            f"checkpoint {name or '(unnamed)'} was written by a newer unbroken "
            f"(format {version} > {READABLE_VERSION}): upgrade unbroken to read it"
        )
    if stored_crc != _body_crc(body):
        raise CorruptCheckpoint("manifest checksum does not match its content")
    manifest = Manifest(
        uuid=_field(body, "uuid", str),
        steps_completed=_field(body, "steps_completed", int),
        files=tuple(_parse_file(f) for f in _field(body, "files", list)),
        metadata=_field(body, "metadata", dict),
        created_at=_finite_float(_field(body, "created_at", (int, float)), "created_at"),
        trial=body.get("trial") if isinstance(body.get("trial"), dict) else None,
        needs_pickle=bool(body.get("needs_pickle", False)),
        format_version=version,
        refs=_parse_refs(body.get("refs"), version),
    )
    if manifest.steps_completed < 0:
        raise CorruptCheckpoint("manifest has a negative steps_completed")
    if len({f.path for f in manifest.files}) != len(manifest.files):
        raise CorruptCheckpoint("manifest lists a file twice")
    if manifest.uuid in manifest.ref_uuids:
        raise CorruptCheckpoint("manifest refers to a file of its own checkpoint")
    if expected_uuid is not None and manifest.uuid != expected_uuid:
        raise CorruptCheckpoint(f"manifest names uuid {manifest.uuid}, but its directory is {expected_uuid}")
    return manifest


def check_relpath(path: Any) -> str:
    """Return ``path`` if it is a safe relative POSIX path inside a checkpoint, else raise."""
    if not isinstance(path, str) or not path:
        raise UnsafePathError(f"manifest path {path!r} is not a non-empty string")
    parts = path.split("/")
    if (path.startswith("/") or "\\" in path or "\x00" in path or (len(path) > 1 and path[1] == ":")
            or any(p in ("", ".", "..") for p in parts)):
        raise UnsafePathError(
            f"manifest path {path!r} is absolute or leaves the checkpoint directory; refusing it"
        )
    if path == MANIFEST_NAME:
        raise UnsafePathError(f"manifest lists {MANIFEST_NAME} as a data file")
    return path


def _parse_file(raw: Any) -> FileEntry:
    if not isinstance(raw, dict):
        raise CorruptCheckpoint("manifest file entry is not an object")
    crc = _field(raw, "crc32c", str)
    if len(crc) != 8 or any(c not in "0123456789abcdef" for c in crc):
        raise CorruptCheckpoint(f"manifest file entry has an invalid crc32c {crc!r}")
    size = _field(raw, "size", int)
    if size < 0:
        raise CorruptCheckpoint("manifest file entry has a negative size")
    return FileEntry(path=check_relpath(raw.get("path")), size=size, crc32c=crc)


def _parse_refs(raw: Any, version: int) -> tuple[FileRef, ...]:
    if raw is None:
        return ()
    if version < REFS_FORMAT_VERSION or not isinstance(raw, list) or not raw:
        raise CorruptCheckpoint(f"manifest field 'refs' is invalid for format {version}")
    refs = []
    for item in raw:
        entry = _parse_file(item)
        uuid, tensors = _field(item, "uuid", str), _field(item, "tensors", list)
        if not uuid or "/" in uuid or "\\" in uuid or uuid.startswith("."):
            raise CorruptCheckpoint(f"manifest refers to an invalid checkpoint id {uuid!r}")
        if not all(isinstance(t, str) for t in tensors) or len(set(tensors)) != len(tensors):
            raise CorruptCheckpoint("manifest reference lists tensors that are not distinct strings")
        refs.append(FileRef(uuid, entry.path, entry.size, entry.crc32c, tuple(tensors)))
    if len({(r.uuid, r.path) for r in refs}) != len(refs):
        raise CorruptCheckpoint("manifest refers to a file twice")
    return tuple(refs)


def _field(body: dict, key: str, kind):
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise CorruptCheckpoint(f"manifest field {key!r} is missing or has the wrong type")
    if isinstance(value, float) and not math.isfinite(value):
        raise CorruptCheckpoint(f"manifest field {key!r} is not finite")
    return value


def _reject_constant(name: str):
    # json.loads accepts NaN and Infinity, which no valid manifest holds (and which would make
    # the canonical re-encoding in _body_crc raise ValueError instead of CorruptCheckpoint).
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(value: int | float, key: str) -> float:
    try:
        return float(value)
    except OverflowError:
        raise CorruptCheckpoint(f"manifest field {key!r} is out of range") from None


def _body_crc(body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return checksum.to_hex(checksum.update(0, canonical))
