"""Bytes of tensors and arrays, and tensors and arrays from bytes, for torch and numpy alike.

torch is imported only when a torch tensor is actually seen, so numpy-only users never pay for it.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ...errors import TensorFileError, UnsupportedValue

_NUMPY_TO_ST = {
    "float64": "F64", "float32": "F32", "float16": "F16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL",
}
_ST_TO_NUMPY = {v: k for k, v in _NUMPY_TO_ST.items()}
_TORCH_NAMES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL",
}


def describe(value: Any, key: str) -> tuple[str, tuple[int, ...]]:
    """Return the safetensors ``(dtype, shape)`` of a tensor or array, or raise UnsupportedValue naming ``key``."""
    if isinstance(value, np.ndarray):
        dtype = _NUMPY_TO_ST.get(value.dtype.name)
    else:
        if value.is_sparse or value.layout.__repr__() != "torch.strided":
            raise UnsupportedValue(f"cannot save tensor {key!r}: only dense (strided) tensors are supported")
        dtype = _TORCH_NAMES.get(str(value.dtype).removeprefix("torch."))
    if dtype is None:
        raise UnsupportedValue(f"cannot save tensor {key!r}: dtype {value.dtype} has no safetensors equivalent")
    return dtype, tuple(int(d) for d in value.shape)


def host_bytes(value: Any) -> memoryview:
    """A C-contiguous byte view of a tensor's data on the host (copies only if it must)."""
    if isinstance(value, np.ndarray):
        # safetensors is little-endian: byte-swap big-endian arrays instead of writing them raw.
        array = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
        return memoryview(array.reshape(-1).view(np.uint8))
    torch = sys.modules["torch"]
    tensor = value.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    tensor = tensor.contiguous().reshape(-1)
    return memoryview(tensor.view(torch.uint8).numpy())


def copy_into(value: Any, dst: Any) -> bool:
    """Copy a tensor's or array's bytes (C order, little-endian) into ``dst``, a uint8 region.

    ``dst`` is a numpy uint8 array, or a torch uint8 tensor (a pinned buffer, for device
    copies). Returns True when the copy was started asynchronously from a CUDA device into
    pinned memory: the caller must synchronize that device before reading ``dst``.
    """
    if isinstance(value, np.ndarray):
        target = dst if isinstance(dst, np.ndarray) else dst.numpy()
        little = value.dtype.newbyteorder("<")
        np.copyto(target.view(little).reshape(value.shape), value)
        return False
    torch = sys.modules["torch"]
    src = value.detach()
    out = dst if isinstance(dst, torch.Tensor) else torch.from_numpy(dst)
    out = out.view(src.dtype).view(src.shape)
    asynchronous = src.device.type == "cuda" and out.is_pinned()
    out.copy_(src, non_blocking=asynchronous)
    return asynchronous


def writable_bytes(value: Any) -> np.ndarray | None:
    """The memory of a host tensor or array as a writable uint8 array, or None if it is not
    a plain, C-contiguous, little-endian, writable block that bytes can be read into."""
    return _plain_bytes(value, writable=True)


def readable_bytes(value: Any) -> np.ndarray | None:
    """The memory of a host tensor or array as a uint8 array (no copy), or None if it is not a
    plain, C-contiguous, little-endian block (then its bytes need a conversion or a device copy)."""
    return _plain_bytes(value, writable=False)


def _plain_bytes(value: Any, writable: bool) -> np.ndarray | None:
    if sys.byteorder != "little":
        return None
    if isinstance(value, np.ndarray):
        if (value.dtype.name not in _NUMPY_TO_ST or not value.dtype.isnative or not value.flags.c_contiguous
                or (writable and not value.flags.writeable) or type(value) is not np.ndarray):
            return None
        return value.reshape(-1).view(np.uint8)
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(value, torch.Tensor):
        return None
    try:
        if (value.device.type != "cpu" or value.layout != torch.strided or not value.is_contiguous()
                or value.is_quantized or value.is_neg() or value.is_conj()
                or str(value.dtype).removeprefix("torch.") not in _TORCH_NAMES):
            return None
        memory = value.detach().reshape(-1).view(torch.uint8).numpy()
    except (RuntimeError, TypeError, ValueError, AttributeError):  # subclasses, functional wrappers
        return None
    if memory.__array_interface__["data"][0] != value.data_ptr():
        return None
    return memory


def same_bytes(a: np.ndarray, b: np.ndarray, chunk: int = 1 << 20) -> bool:
    """Whether two uint8 arrays hold the same bytes; stops at the first differing chunk.

    Compares 8-byte words where both are aligned (memory speed: about the cost of a copy of
    equal bytes, next to nothing for bytes that differ early). Bitwise: -0.0 and 0.0 differ,
    NaNs with equal bits are equal.
    """
    if a.nbytes != b.nbytes:
        return False
    if a.nbytes % 8 == 0 and a.__array_interface__["data"][0] % 8 == 0 and b.__array_interface__["data"][0] % 8 == 0:
        a, b, chunk = a.view(np.uint64), b.view(np.uint64), chunk // 8
    for start in range(0, len(a), chunk):
        if not np.array_equal(a[start:start + chunk], b[start:start + chunk]):
            return False
    return True


def loadable(dtype: str, kind: str) -> bool:
    """Whether a tensor of safetensors ``dtype`` can be loaded as ``kind`` ("numpy" or "torch")."""
    if kind == "torch":
        return dtype in _TORCH_NAMES.values()
    return kind == "numpy" and dtype in _ST_TO_NUMPY


def from_bytes(buffer: Any, dtype: str, shape: tuple[int, ...], kind: str) -> Any:
    """Build an array (``kind="numpy"``) or tensor (``"torch"``) viewing ``buffer`` without a copy."""
    if kind == "torch":
        import torch  # noqa: PLC0415 - torch only when the checkpoint holds torch tensors
        raw = torch.frombuffer(buffer, dtype=torch.uint8) if len(buffer) else torch.empty(0, dtype=torch.uint8)
        torch_dtype = getattr(torch, _torch_name(dtype))
        return raw.view(torch_dtype).reshape(shape)
    numpy_name = _ST_TO_NUMPY.get(dtype)
    if numpy_name is None:
        raise TensorFileError(f"dtype {dtype} cannot be loaded as a numpy array; load it with torch")
    return np.frombuffer(buffer, dtype=np.dtype(numpy_name)).reshape(shape)


def _torch_name(dtype: str) -> str:
    for name, st in _TORCH_NAMES.items():
        if st == dtype:
            return name
    raise TensorFileError(f"unknown dtype {dtype}")
