"""Snapshots: every byte of one save, copied at one moment into a reusable host buffer.

The training thread blocks only for :meth:`Snapshotter.take`: the JSON tree is encoded to
bytes (so later changes to plain values cannot change what is saved) and every tensor is
copied into one page-aligned buffer laid out exactly like the tensor file -- the safetensors
header at offset 0, then each tensor at ``data_start + begin`` -- so the writer persists it
with large sequential (direct) writes and no further copy. The buffer is kept and reused by
the next snapshot whenever it is large enough, so only the first save pays for faulting its
memory in. It is page-locked (pinned) when a tensor lives on a GPU, which makes the
device-to-host copies asynchronous and as fast as the bus allows.

Host tensors are copied by numpy, byte for byte, in the training thread alone (GIL released),
not by ``torch.Tensor.copy_``: torch splits every copy among its intra-op threads, and on busy
cores each of those parallel regions waits until all its threads are scheduled. Measured on 2
loaded cores, 1 GiB in 388 tensors: 0.34-1.04 s with torch's 2 threads, 0.07 s with one
(numpy, or torch with 1 thread) -- a single thread already copies at memory speed.

Change detection (incremental saves): with ``compare=True``, when the buffer still holds the
previous snapshot in the same layout (or, before the first snapshot of a process, the bytes a
restored checkpoint holds, put there by a seed: see :meth:`Snapshotter.reserve`), each host
tensor is first compared with its bytes there (8-byte words, stopping at the first differing
chunk) and copied only if it differs. Equal
bytes cost a read of both (about what the copy would have cost), changed ones next to
nothing more than the copy; the comparison is exact (no hash, no collisions). Tensors on a
device, or not a plain contiguous block, are always treated as changed.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from typing import Any, Callable

import numpy as np

from ..format import arrays
from ..format import tensorfile
from .hostmem import HostBuffer, round_up
from ..format.tensorfile import Header

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
    #: Tensors whose bytes equal the previous snapshot's (only with ``take(compare=True)``).
    unchanged: frozenset[str] = frozenset()

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


def plan_subset(items: list[tuple[str, str, tuple[int, ...]]]) -> tuple[bytes, Header]:
    """The tensor file header for ``(name, dtype, shape)`` items (a part of a snapshot)."""
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
        self._reserving: threading.Thread | None = None
        self._reserved: HostBuffer | None = None
        self._layout: bytes | None = None  # header of the complete snapshot in _buffer, if any
        self._reserved_layout: bytes | None = None  # header whose tensors a seed put in _reserved

    @property
    def buffer_bytes(self) -> int:
        """Size of the host buffers held between saves: the one in use and one reserved ahead (0 before either)."""
        return sum(b.capacity for b in (self._buffer, self._reserved) if b is not None)

    def release(self) -> None:
        """Drop the buffer (the next snapshot allocates a new one)."""
        self._collect_reserved()
        self._buffer = self._reserved = None
        self._layout = self._reserved_layout = None

    def reserve(self, tensors: dict[str, Any], seed: Callable[[HostBuffer, Header], bool] | None = None) -> None:
        """Allocate and fault in, on a background thread, the buffer a snapshot of ``tensors`` needs.

        The first snapshot then finds its memory ready instead of paying for the page faults of
        a state-sized allocation while training waits. The next :meth:`take` waits for this.

        ``seed(buffer, header)``, if given, runs on that thread afterwards and may put into the
        buffer, at the places ``header`` gives them, the bytes of tensors as a checkpoint holds
        them (a restore's); if it returns True, the next ``take(compare=True)`` compares with them
        as with a previous snapshot. Tensors a seed did not fill compare with zeros: the caller
        must only trust "unchanged" for the ones it filled. Not used for pinned (CUDA) buffers.
        """
        self._collect_reserved()
        header_bytes, header = plan(tensors)
        pinned = _pinned(tensors)
        if self._fits(self._buffer, header.file_size, pinned):
            return

        def allocate() -> None:
            self._reserved = self._reserved_layout = None
            try:
                buffer = HostBuffer(_capacity_for(header.file_size), pinned=pinned)
                buffer.array.fill(0)  # fault every page in now (numpy releases the GIL)
            except Exception:  # noqa: BLE001 - only an optimisation: take() allocates if this failed
                return
            self._reserved = buffer
            if seed is not None and not pinned and seed(buffer, header):
                self._reserved_layout = header_bytes

        self._reserving = threading.Thread(target=allocate, name="unbroken-reserve", daemon=True)
        self._reserving.start()

    def wait_reserved(self) -> None:
        """Block until the buffer of the last :meth:`reserve` is ready (any thread that owns this snapshotter)."""
        self._collect_reserved()

    def _collect_reserved(self) -> None:
        if self._reserving is not None:
            self._reserving.join()
            self._reserving = None

    def take(self, tree: dict[str, Any], tensors: dict[str, Any], needs_pickle: bool, *,
             compare: bool = False) -> Snapshot:
        """Copy ``tensors`` and encode ``tree`` now; see the module docstring.

        Training thread; blocks for the copies. With ``compare`` the snapshot says which
        tensors equal the previous snapshot's (none unless it is still in the buffer, same layout).
        """
        json_bytes = encode_json(tree)
        header_bytes, header = plan(tensors)
        devices = _cuda_devices(tensors)
        image = self._image(header.file_size, pinned=bool(devices))
        comparable = compare and self._layout == header_bytes
        self._layout = None  # until every tensor is in place
        image.array[:header.data_start] = memoryview(header_bytes)
        unchanged = self._copy(header, image, tensors, comparable)
        for device in devices:  # the device-to-host copies were asynchronous
            sys.modules["torch"].cuda.synchronize(device)
        self._layout = header_bytes
        return Snapshot(header, image, json_bytes, needs_pickle, frozenset(unchanged))

    @staticmethod
    def _copy(header: Header, image: HostBuffer, tensors: dict[str, Any], compare: bool) -> list[str]:
        """Copy every tensor into its place in ``image``; return those skipped as unchanged."""
        torch = sys.modules.get("torch")
        as_tensor = image.tensor() if torch is not None and any(isinstance(v, torch.Tensor) for v in tensors.values()) else None
        unchanged = []
        start = header.data_start
        for entry in header.entries:
            value = tensors[entry.name]
            a, b = start + entry.begin, start + entry.end
            source = arrays.readable_bytes(value)  # a plain host block: its bytes, no copy
            if source is not None:
                if compare and arrays.same_bytes(source, image.array[a:b]):
                    unchanged.append(entry.name)
                else:
                    np.copyto(image.array[a:b], source)  # one thread, GIL released
                continue
            if as_tensor is not None and not isinstance(value, np.ndarray):
                arrays.copy_into(value, as_tensor[a:b])
            else:
                arrays.copy_into(value, image.array[a:b])
        return unchanged

    def _image(self, file_size: int, pinned: bool) -> HostBuffer:
        self._collect_reserved()
        if not self._fits(self._buffer, file_size, pinned):
            self._buffer, self._layout = None, None  # free the old one before allocating the new one
            if self._fits(self._reserved, file_size, pinned):
                self._buffer, self._layout = self._reserved, self._reserved_layout
            else:
                self._buffer = HostBuffer(_capacity_for(file_size), pinned=pinned)
        self._reserved = self._reserved_layout = None
        return self._buffer

    @staticmethod
    def _fits(buffer: HostBuffer | None, file_size: int, pinned: bool) -> bool:
        """Reuse while it fits and is not much larger than needed (a shrunken state frees memory)."""
        need = round_up(max(file_size, 1))
        return buffer is not None and buffer.pinned == pinned and need <= buffer.capacity <= 2 * need + (64 << 20)


def _capacity_for(file_size: int) -> int:
    """Room for the file and some growth (a longer header: renamed or added small tensors), in
    whole huge pages, so that the next snapshots still fit."""
    return round_up(file_size + max(1 << 20, file_size // 64), 2 << 20)


def _cuda_devices(tensors: dict[str, Any]) -> set:
    torch = sys.modules.get("torch")
    if torch is None:
        return set()
    return {v.device for v in tensors.values() if isinstance(v, torch.Tensor) and v.device.type == "cuda"}


def _pinned(tensors: dict[str, Any]) -> bool:
    return bool(_cuda_devices(tensors))
