"""Turn nested state (dicts, lists, tensors, numbers) into JSON plus a flat table of tensors.

``encode(tree)`` returns a JSON-safe tree in which every tensor or array is replaced by
``{"__tensor__": key, "kind": "torch" | "numpy"}`` and the tensors by key. ``decode`` does the
reverse. Python types that JSON lacks are tagged: tuples, dicts with non-string keys, bytes,
numpy scalars. Anything else is refused unless pickle was allowed when saving; a tree that holds
pickled values can only be decoded with ``allow_pickle=True``.
"""

from __future__ import annotations

import base64
import binascii
import math
import pickle
from typing import Any, Callable

import numpy as np

from ...errors import CorruptCheckpoint, PickleNotAllowed, StateMismatch, UnsupportedValue

_TAGS = ("__tensor__", "__tuple__", "__dict__", "__bytes__", "__npscalar__", "__pickle__", "__float__")
TENSOR_KINDS = ("numpy", "torch")
#: Deepest nesting of containers a saved value may have (tagged JSON is at most twice as deep).
MAX_DEPTH = 100
#: Largest int saved (json refuses to print or parse ints of more than 4300 digits).
MAX_INT_BITS = 8192


def _isinstance_torch(value: Any) -> bool:
    torch = _torch_if_loaded()
    return torch is not None and isinstance(value, torch.Tensor)


def _torch_if_loaded():
    import sys
    return sys.modules.get("torch")


class Encoder:
    """Encodes one tree; collects tensors in ``self.tensors`` (key -> tensor or array).

    A value that cannot be saved raises :class:`UnsupportedValue` naming its path (the State
    entry, then the keys and indices down to it).
    """

    def __init__(self, allow_pickle: bool = False):
        self.allow_pickle = allow_pickle
        self.tensors: dict[str, Any] = {}
        self.used_pickle = False
        self._depth = 0

    def encode(self, value: Any, path: str) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        # numpy scalars before int/float: np.float64 subclasses float and would lose its type.
        if isinstance(value, np.generic):
            return {"__npscalar__": value.dtype.str, "value": self._tensor(np.asarray(value), path)}
        if isinstance(value, int):
            if value.bit_length() > MAX_INT_BITS:
                raise UnsupportedValue(f"cannot save {path or 'value'!r}: an int of {value.bit_length()} bits "
                                       f"(at most {MAX_INT_BITS}); store it as a string or bytes")
            return int(value)
        if isinstance(value, float):
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, np.ndarray) or _isinstance_torch(value):
            return self._tensor(value, path)
        if isinstance(value, (dict, list, tuple)):
            return self._container(value, path)
        if isinstance(value, (bytes, bytearray)):
            return {"__bytes__": base64.b64encode(bytes(value)).decode()}
        return self._pickle(value, path)

    def _container(self, value: dict | list | tuple, path: str) -> Any:
        if self._depth >= MAX_DEPTH:
            raise UnsupportedValue(f"cannot save {path or 'value'!r}: nested more than {MAX_DEPTH} levels deep")
        self._depth += 1
        try:
            if isinstance(value, dict):
                return self._dict(value, path)
            items = [self.encode(v, f"{path}/{i}") for i, v in enumerate(value)]
            return items if isinstance(value, list) else {"__tuple__": items}
        finally:
            self._depth -= 1

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
        for k in value:
            if isinstance(k, float) and math.isnan(k):
                raise UnsupportedValue(f"cannot save {path or 'value'!r}: a dict key is NaN (it could never be "
                                       "looked up again)")
        return {"__dict__": [[self.encode(k, f"{path}/key{i}"), self.encode(v, f"{path}/{k}")]
                             for i, (k, v) in enumerate(value.items())]}

    def _pickle(self, value: Any, path: str) -> dict:
        if not self.allow_pickle:
            raise UnsupportedValue(
                f"cannot save {path or 'value'!r}: {type(value).__qualname__} is not a tensor, array, "
                "number, string, list or dict. Give the object state_dict()/load_state_dict(), "
                "or pass allow_pickle=True to State to store it with pickle (restoring it will "
                "then need allow_pickle=True too)"
            )
        try:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - pickle raises many kinds
            raise UnsupportedValue(f"cannot save {path or 'value'!r} with pickle: {exc}") from exc
        self.used_pickle = True
        return {"__pickle__": base64.b64encode(data).decode()}


def decode(node: Any, tensor_of: Callable[[str, str], Any], *, allow_pickle: bool = False) -> Any:
    """Rebuild a tree; ``tensor_of(key, kind)`` returns the tensor or array stored under ``key``.

    Trusts nothing: any tree that an :class:`Encoder` cannot have produced raises
    :class:`CorruptCheckpoint` (or :class:`PickleNotAllowed` for pickled values without
    ``allow_pickle``; :class:`StateMismatch` when a pickled class no longer exists).
    """
    try:
        return _Decoder(tensor_of, allow_pickle).node(node, 0)
    except RecursionError:
        raise CorruptCheckpoint("state tree: nested too deeply") from None


def tensor_refs(tree: Any) -> dict[str, str]:
    """The tensors a tree refers to: ``{key: kind}``, in the order the encoder met them (depth first,
    in order; a key first seen wins its place). Raises CorruptCheckpoint for a malformed reference."""
    found: dict[str, str] = {}
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__tensor__" in node:
                key, kind = _tensor_ref(node)
                found.setdefault(key, kind)
            else:
                stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return found


def _tensor_ref(node: dict) -> tuple[str, str]:
    key, kind = node["__tensor__"], node.get("kind", "numpy")
    if not isinstance(key, str) or kind not in TENSOR_KINDS:
        raise CorruptCheckpoint(f"state tree: invalid tensor reference {_short(node)}")
    return key, kind


class _Decoder:
    """One decode: plain loops, one Python frame per level of JSON, depth bounded."""

    def __init__(self, tensor_of: Callable[[str, str], Any], allow_pickle: bool):
        self.tensor_of = tensor_of
        self.allow_pickle = allow_pickle

    def node(self, node: Any, depth: int) -> Any:
        if depth > 2 * MAX_DEPTH + 2:
            raise CorruptCheckpoint(f"state tree: nested more than {2 * MAX_DEPTH} levels deep")
        if isinstance(node, list):
            return [self.node(v, depth + 1) for v in node]
        if not isinstance(node, dict):
            return node
        for tag in _TAGS:
            if tag in node:
                return self._tagged(tag, node, depth + 1)
        return {k: self.node(v, depth + 1) for k, v in node.items()}

    def _tagged(self, tag: str, node: dict, depth: int) -> Any:
        value = node[tag]
        if tag == "__tensor__":
            return self.tensor_of(*_tensor_ref(node))
        if tag == "__tuple__":
            return tuple(self.node(v, depth) for v in _list(value))
        if tag == "__dict__":
            out = {}
            for pair in _list(value):
                k, v = _pair(pair)
                out[_hashable(self.node(k, depth))] = self.node(v, depth)
            return out
        if tag == "__pickle__":
            return self._unpickle(value)
        try:
            if tag == "__bytes__":
                return base64.b64decode(_str(value), validate=True)
            if tag == "__float__":
                return float(_str(value))
            return _scalar(self.node(node.get("value"), depth), _str(value))
        except (TypeError, ValueError, OverflowError, binascii.Error) as exc:
            raise CorruptCheckpoint(f"state tree: invalid {tag} value {_short(node)}: {exc}") from None

    def _unpickle(self, value: Any) -> Any:
        if not self.allow_pickle:
            raise PickleNotAllowed(
                "this checkpoint holds pickled Python objects; restoring them executes code from the "
                "checkpoint file. Pass allow_pickle=True only if you trust where it came from"
            )
        try:
            data = base64.b64decode(_str(value), validate=True)
        except (TypeError, ValueError, binascii.Error) as exc:
            raise CorruptCheckpoint(f"state tree: invalid __pickle__ value: {exc}") from None
        try:
            return pickle.loads(data)
        except (ImportError, AttributeError) as exc:
            raise StateMismatch(f"cannot unpickle a saved object: {exc} (was its class renamed or removed?)") from exc
        except Exception as exc:  # noqa: BLE001 - a damaged pickle raises anything
            raise CorruptCheckpoint(f"state tree: a pickled value cannot be loaded: {exc!r}") from None


def _scalar(value: Any, dtype_str: str) -> Any:
    dtype = np.dtype(dtype_str)
    if dtype.kind not in "biufcmM" or dtype.itemsize > 16:
        raise ValueError(f"{dtype_str!r} is not the dtype of a numpy scalar")
    return np.asarray(value).reshape(()).astype(dtype)[()]


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {type(value).__name__}")
    return value


def _short(node: Any) -> str:
    text = repr(node)
    return text if len(text) <= 80 else text[:77] + "..."


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
