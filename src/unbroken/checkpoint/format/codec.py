"""Turn nested state (dicts, lists, tensors, numbers) into JSON plus a flat table of tensors.

``encode(tree)`` returns a JSON-safe tree in which every tensor or array is replaced by
``{"__tensor__": key, "kind": "torch" | "numpy"}`` and the tensors by key. ``decode`` does the
reverse. Python types that JSON lacks are tagged: tuples, dicts with non-string keys, bytes,
numpy scalars. Anything else is refused unless pickle was allowed when saving; a tree that holds
pickled values can only be decoded with ``allow_pickle=True``.
"""

from __future__ import annotations

import base64
import math
import pickle
from typing import Any, Callable

import numpy as np

from ...errors import ConfigError, PickleNotAllowed, CorruptCheckpoint

_TAGS = ("__tensor__", "__tuple__", "__dict__", "__bytes__", "__npscalar__", "__pickle__", "__float__")


def _isinstance_torch(value: Any) -> bool:
    torch = _torch_if_loaded()
    return torch is not None and isinstance(value, torch.Tensor)


def _torch_if_loaded():
    import sys
    return sys.modules.get("torch")


class Encoder:
    """Encodes one tree; collects tensors in ``self.tensors`` (key -> tensor or array)."""

    def __init__(self, allow_pickle: bool = False):
        self.allow_pickle = allow_pickle
        self.tensors: dict[str, Any] = {}
        self.used_pickle = False

    def encode(self, value: Any, path: str) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        # numpy scalars before int/float: np.float64 subclasses float and would lose its type.
        if isinstance(value, np.generic):
            return {"__npscalar__": value.dtype.str, "value": self._tensor(np.asarray(value), path)}
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, np.ndarray) or _isinstance_torch(value):
            return self._tensor(value, path)
        if isinstance(value, dict):
            return self._dict(value, path)
        if isinstance(value, list):
            return [self.encode(v, f"{path}/{i}") for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return {"__tuple__": [self.encode(v, f"{path}/{i}") for i, v in enumerate(value)]}
        if isinstance(value, (bytes, bytearray)):
            return {"__bytes__": base64.b64encode(bytes(value)).decode()}
        return self._pickle(value, path)

    def _tensor(self, value: Any, path: str) -> dict:
        key = path.lstrip("/") or "tensor"
        if key in self.tensors:
            n = 1
            while f"{key}#{n}" in self.tensors:
                n += 1
            key = f"{key}#{n}"
        self.tensors[key] = value
        return {"__tensor__": key, "kind": "numpy" if isinstance(value, np.ndarray) else "torch"}

    def _dict(self, value: dict, path: str) -> Any:
        if all(isinstance(k, str) and k not in _TAGS for k in value):
            return {k: self.encode(v, f"{path}/{k}") for k, v in value.items()}
        return {"__dict__": [[self.encode(k, f"{path}/key{i}"), self.encode(v, f"{path}/{k}")]
                             for i, (k, v) in enumerate(value.items())]}

    def _pickle(self, value: Any, path: str) -> dict:
        if not self.allow_pickle:
            raise ConfigError(
                f"cannot save {path or 'value'!r}: {type(value).__qualname__} is not a tensor, array, "
                "number, string, list or dict. Give the object state_dict()/load_state_dict(), "
                "or pass allow_pickle=True to State to store it with pickle (restoring it will "
                "then need allow_pickle=True too)"
            )
        try:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - pickle raises many kinds
            raise ConfigError(f"cannot save {path or 'value'!r} with pickle: {exc}") from exc
        self.used_pickle = True
        return {"__pickle__": base64.b64encode(data).decode()}


def decode(node: Any, tensor_of: Callable[[str, str], Any], *, allow_pickle: bool = False) -> Any:
    """Rebuild a tree; ``tensor_of(key, kind)`` returns the tensor or array stored under ``key``."""
    if isinstance(node, list):
        return [decode(v, tensor_of, allow_pickle=allow_pickle) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node:
        return tensor_of(node["__tensor__"], node.get("kind", "numpy"))
    if "__tuple__" in node:
        return tuple(decode(v, tensor_of, allow_pickle=allow_pickle) for v in _list(node["__tuple__"]))
    if "__dict__" in node:
        return {_hashable(decode(k, tensor_of, allow_pickle=allow_pickle)): decode(v, tensor_of, allow_pickle=allow_pickle)
                for k, v in (_pair(p) for p in _list(node["__dict__"]))}
    if "__bytes__" in node:
        return base64.b64decode(node["__bytes__"])
    if "__float__" in node:
        return float(node["__float__"])
    if "__npscalar__" in node:
        array = decode(node["value"], tensor_of, allow_pickle=allow_pickle)
        return np.asarray(array).reshape(()).astype(np.dtype(node["__npscalar__"]))[()]
    if "__pickle__" in node:
        if not allow_pickle:
            raise PickleNotAllowed(
                "this checkpoint holds pickled Python objects; restoring them executes code from the "
                "checkpoint file. Pass allow_pickle=True only if you trust where it came from"
            )
        return pickle.loads(base64.b64decode(node["__pickle__"]))
    return {k: decode(v, tensor_of, allow_pickle=allow_pickle) for k, v in node.items()}


def _list(value: Any) -> list:
    if not isinstance(value, list):
        raise CorruptCheckpoint("state tree: a tagged value is not a list")
    return value


def _pair(value: Any) -> tuple:
    if not (isinstance(value, list) and len(value) == 2):
        raise CorruptCheckpoint("state tree: a dict entry is not a [key, value] pair")
    return value[0], value[1]


def _hashable(key: Any) -> Any:
    try:
        hash(key)
    except TypeError:
        raise CorruptCheckpoint("state tree: a dict key is not hashable") from None
    return key
