"""Page-aligned host memory for snapshots and restores, cheap to fault in, optionally pinned.

A snapshot or a restore touches every byte of a large buffer once. With 4 KiB pages the
first touch costs a page fault per page (1 GiB: 262,144 faults, 0.39 s on the machine
measured); anonymous mappings advised for transparent huge pages fault 2 MiB at a time (0.07 s
per GiB there) -- except when free memory is fragmented (right after the page cache was dropped,
or on a node whose memory is full of cache): with the kernel's default ``defrag=madvise`` the
fault then compacts memory first (1 GiB once took 2.3 s right after ``drop_caches``, 0.07 s a
moment later). That is why state-sized buffers are faulted in ahead, off the training thread,
wherever a save needs one. Buffers are page-aligned, so they can be written with ``O_DIRECT``.

``pinned=True`` allocates page-locked memory through torch (``cudaHostAlloc``: also
page-aligned) so that device-to-host copies run at full speed and asynchronously.
"""

from __future__ import annotations

import mmap
import sys
from typing import Any

import numpy as np

PAGE = mmap.PAGESIZE
#: Direct I/O needs offsets, lengths and addresses aligned to the logical block size of the
#: device; a page covers every common device.
ALIGN = max(PAGE, 4096)


def round_up(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


class HostBuffer:
    """``nbytes`` (rounded up to :data:`ALIGN`) of page-aligned host memory.

    ``array`` is a writable ``numpy.uint8`` view of all of it. The memory lives as long as
    any view of it does (views keep the buffer object alive), so a restore can hand out
    tensors that view it.
    """

    __slots__ = ("capacity", "pinned", "array", "_owner", "_tensor", "__weakref__")

    def __init__(self, nbytes: int, *, pinned: bool = False):
        self.capacity = round_up(max(int(nbytes), 1))
        self.pinned = pinned
        if pinned:
            torch = sys.modules["torch"]
            tensor = torch.empty(self.capacity, dtype=torch.uint8, pin_memory=True)
            self._owner: Any = tensor
            self.array = tensor.numpy()
        else:
            mapping = mmap.mmap(-1, self.capacity, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if hasattr(mmap, "MADV_HUGEPAGE"):
                try:
                    mapping.madvise(mmap.MADV_HUGEPAGE)
                except OSError:  # THP disabled or not supported: 4 KiB pages, still correct
                    pass
            self._owner = mapping
            self.array = np.frombuffer(mapping, dtype=np.uint8)
        self._tensor: Any = None

    def region(self, begin: int, end: int) -> np.ndarray:
        """A writable uint8 view of bytes ``[begin, end)``."""
        return self.array[begin:end]

    def tensor(self) -> Any:
        """A torch uint8 tensor viewing all of it (the pinned tensor itself when pinned)."""
        if self._tensor is None:
            self._tensor = self._owner if self.pinned else sys.modules["torch"].from_numpy(self.array)
        return self._tensor

    def address(self) -> int:
        return self.array.__array_interface__["data"][0]
