"""Reading DCP's ``.metadata`` file without running arbitrary pickle.

torch 2.13's ``FileSystemReader.read_metadata`` loads ``.metadata`` with a plain
``pickle.load``: a crafted file runs any code. unbroken reads it instead with an unpickler that
only builds the few classes DCP's metadata is made of (its dataclasses, ``torch.Size``, dtypes,
layouts, memory-format codes, paths); anything else raises :class:`PickleNotAllowed` unless the
caller opted in with ``allow_pickle=True``. The bytes given here have already been checked
against the checkpoint's manifest (see :mod:`.reader`).
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from ...errors import CorruptCheckpoint, PickleNotAllowed

_DCP_METADATA = "torch.distributed.checkpoint.metadata"
_ALLOWED = {
    (_DCP_METADATA, "Metadata"), (_DCP_METADATA, "MetadataIndex"), (_DCP_METADATA, "StorageMeta"),
    (_DCP_METADATA, "TensorProperties"), (_DCP_METADATA, "TensorStorageMetadata"),
    (_DCP_METADATA, "BytesStorageMetadata"), (_DCP_METADATA, "ChunkStorageMetadata"),
    (_DCP_METADATA, "_MEM_FORMAT_ENCODING"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"), ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"),
    ("pathlib", "PureWindowsPath"),
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Builds only the allow-listed globals (and torch dtypes); refuses everything else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch":
            import torch  # noqa: PLC0415 - only DCP users get here

            value = getattr(torch, name, None)
            if isinstance(value, torch.dtype):
                return value
        raise PickleNotAllowed(
            f"the checkpoint's DCP metadata (.metadata) refers to {module}.{name}, which is not part of "
            "torch.distributed.checkpoint's metadata format; loading it would run arbitrary pickle. "
            "Pass allow_pickle=True only if you trust whoever wrote this checkpoint")


def load_metadata(data: bytes, *, allow_pickle: bool = False) -> Any:
    """Unpickle DCP metadata from ``data`` (verified bytes of ``.metadata``); return the Metadata.

    Without ``allow_pickle`` only DCP's own metadata classes are built (PickleNotAllowed
    otherwise). A file that does not unpickle, or holds something other than a DCP Metadata,
    raises CorruptCheckpoint.
    """
    from torch.distributed.checkpoint.metadata import Metadata  # noqa: PLC0415

    try:
        if allow_pickle:
            value = pickle.loads(data)  # noqa: S301 - the caller opted in
        else:
            value = _MetadataUnpickler(io.BytesIO(data)).load()
    except PickleNotAllowed:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise CorruptCheckpoint(f"the DCP metadata (.metadata) cannot be read: {type(exc).__name__}: {exc}") from None
    if not isinstance(value, Metadata):
        raise CorruptCheckpoint(f"the DCP metadata (.metadata) holds a {type(value).__name__}, not a DCP Metadata")
    return value
