"""Snapshots: every byte of one save, copied at one moment into a reusable host buffer.

The training thread blocks only for :meth:`Snapshotter.take`: the JSON tree is encoded to
bytes (so later changes to plain values cannot change what is saved) and every tensor is
copied into one page-aligned buffer laid out exactly like the tensor file -- the safetensors
header at offset 0, then each tensor at ``data_start + begin`` -- so the writer persists it
with large sequential (direct) writes and no further copy. The buffer is kept and reused by
the next snapshot whenever it is large enough, so only the first save pays for faulting its
memory in. It is page-locked (pinned) when a tensor lives on a GPU, which makes the
device-to-host copies asynchronous and as fast as the bus allows.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import numpy as np

from . import arrays, tensorfile
from .hostmem import HostBuffer, round_up
from .tensorfile import Header

TENSOR_METADATA = {"format": "pt", "producer": "unbroken"}


@dataclasses.dataclass
class Snapshot:
    """What one save writes, frozen at snapshot time.

    ``image[:file_size]`` is the whole tensor file (header and data); ``json_bytes`` is
    ``state.json``. The image belongs to the :class:`Snapshotter` and is overwritten by its
    next snapshot.
    """

    header: Header
    image: HostBuffer
    json_bytes: bytes
    needs_pickle: bool

    @property
    def file_size(self) -> int:
        return self.header.file_size

    @property
    def nbytes(self) -> int:
        """Bytes this snapshot puts on storage."""
        return self.file_size + len(self.json_bytes)


def plan(tensors: dict[str, Any]) -> tuple[bytes, Header]:
    """The tensor file header for ``tensors`` (key -> tensor or array)."""
    items = [(key, *arrays.describe(value, key)) for key, value in tensors.items()]
    return tensorfile.layout(items, TENSOR_METADATA)


def encode_json(tree: dict[str, Any]) -> bytes:
    return json.dumps(tree, separators=(",", ":")).encode()


class Snapshotter:
    """Takes snapshots into one buffer that it keeps between snapshots.

    Not thread-safe, and a snapshot's image is only valid until the next :meth:`take`: the
    caller must wait until the writer of one snapshot is done before taking the next.
    """

    def __init__(self) -> None:
        self._buffer: HostBuffer | None = None

    @property
    def buffer_bytes(self) -> int:
        """Size of the host buffer held between saves (0 before the first snapshot)."""
        return self._buffer.capacity if self._buffer is not None else 0

    def release(self) -> None:
        """Drop the buffer (the next snapshot allocates a new one)."""
        self._buffer = None

    def take(self, tree: dict[str, Any], tensors: dict[str, Any], needs_pickle: bool) -> Snapshot:
        """Copy ``tensors`` and encode ``tree`` now; see the module docstring."""
        json_bytes = encode_json(tree)
        header_bytes, header = plan(tensors)
        torch = sys.modules.get("torch")
        devices = set()
        if torch is not None:
            devices = {v.device for v in tensors.values() if isinstance(v, torch.Tensor) and v.device.type == "cuda"}
        image = self._image(header.file_size, pinned=bool(devices))
        image.array[:header.data_start] = memoryview(header_bytes)
        as_tensor = image.tensor() if torch is not None and any(isinstance(v, torch.Tensor) for v in tensors.values()) else None
        start = header.data_start
        for entry in header.entries:
            value = tensors[entry.name]
            a, b = start + entry.begin, start + entry.end
            if as_tensor is not None and not isinstance(value, np.ndarray):
                arrays.copy_into(value, as_tensor[a:b])
            else:
                arrays.copy_into(value, image.array[a:b])
        for device in devices:  # the device-to-host copies were asynchronous
            torch.cuda.synchronize(device)
        return Snapshot(header, image, json_bytes, needs_pickle)

    def _image(self, file_size: int, pinned: bool) -> HostBuffer:
        need = round_up(max(file_size, 1))
        buffer = self._buffer
        # Reuse while it fits and is not much larger than needed (a shrunken state frees memory).
        if buffer is None or buffer.pinned != pinned or buffer.capacity < need or buffer.capacity > 2 * need + (64 << 20):
            self._buffer = None  # free the old one before allocating the new one
            buffer = self._buffer = HostBuffer(need, pinned=pinned)
        return buffer
