"""State: the things a training loop must get back after a restart.

``State(model=model, optimizer=opt, scheduler=sched, epoch=0)`` holds

* objects with ``state_dict()`` / ``load_state_dict()`` (torch modules, optimizers, LR
  schedulers, GradScaler, your own classes): restored in place;
* random generators (``random.Random``, ``numpy.random.Generator`` / ``RandomState``,
  ``torch.Generator``): restored in place;
* plain values (numbers, strings, lists, dicts, arrays, tensors): replaced on restore; read
  and write them as attributes or items (``state.epoch += 1``, ``state["epoch"]``).

With ``rng=True`` (the default) the global random states of Python, numpy and torch (CPU, and
CUDA when initialized) are captured too, so a resumed run draws the same numbers.
"""

from __future__ import annotations

import random
import sys
from typing import Any, Iterable, Iterator

import numpy as np

from ...errors import ConfigError, StateMismatch
from ..format import codec

_RESERVED = frozenset({"rng", "allow_pickle", "replicated"})


class State:
    """A named collection of checkpointable objects and values (see the module docstring)."""

    def __init__(self, *, rng: bool = True, allow_pickle: bool = False, replicated: Iterable[str] = (),
                 **entries: Any):
        object.__setattr__(self, "_entries", {})
        object.__setattr__(self, "rng", bool(rng))
        object.__setattr__(self, "allow_pickle", bool(allow_pickle))
        if isinstance(replicated, str):
            replicated = (replicated,)
        #: Entries identical on every rank of a torch.distributed run (DDP model and optimizer):
        #: written once, by rank 0, and read by every rank. Ignored in a single process.
        object.__setattr__(self, "replicated", frozenset(replicated))
        for name, value in entries.items():
            self[name] = value

    # -- mapping-like access ----------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        return self._entries[name]

    def __setitem__(self, name: str, value: Any) -> None:
        if not isinstance(name, str) or not name or name.startswith("_") or name in _RESERVED:
            raise ConfigError(f"invalid State entry name {name!r}: use a non-empty name not starting with '_'")
        self._entries[name] = value

    def __getattr__(self, name: str) -> Any:
        try:
            return self._entries[name]
        except KeyError:
            raise AttributeError(f"State has no entry {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        kinds = ", ".join(f"{k}={_kind(v)}" for k, v in self._entries.items())
        return f"State({kinds}, rng={self.rng})"

    # -- capture / apply --------------------------------------------------------------------
    def capture(self, encoder: codec.Encoder) -> dict[str, Any]:
        """Encode every entry (and the global RNGs) into a JSON tree; tensors go to ``encoder``."""
        entries = {}
        for name, value in self._entries.items():
            kind = _kind(value)
            entries[name] = {"kind": kind, "data": encoder.encode(_CAPTURE[kind](value), name)}
        rng = encoder.encode(capture_global_rng(), "__rng__") if self.rng else None
        return {"entries": entries, "rng": rng}

    def apply(self, tree: dict[str, Any], *, strict: bool = True) -> None:
        """Load a decoded tree (from :meth:`capture`) into the entries, in place where possible."""
        saved = tree.get("entries", {})
        missing = [n for n in self._entries if n not in saved]
        unexpected = [n for n in saved if n not in self._entries]
        if strict and (missing or unexpected):
            raise StateMismatch(
                f"checkpoint does not fit this State: missing entries {missing}, unexpected entries "
                f"{unexpected}; restore with strict=False to load only the common entries"
            )
        for name, item in saved.items():
            if name in self._entries:
                self._apply_entry(name, item)
        if self.rng and tree.get("rng") is not None:
            restore_global_rng(tree["rng"])

    def _apply_entry(self, name: str, item: dict[str, Any]) -> None:
        kind, data = item.get("kind"), item.get("data")
        current = self._entries[name]
        if kind != "value" and kind != _kind(current):
            raise StateMismatch(f"State entry {name!r} was saved as {kind}, but is now {_kind(current)}")
        try:
            if kind == "value":
                self._entries[name] = data
            else:
                _RESTORE[kind](current, data)
        except StateMismatch:
            raise
        except Exception as exc:  # torch raises RuntimeError/KeyError/ValueError for misfits
            raise StateMismatch(f"cannot load State entry {name!r}: {exc}") from exc


def _kind(value: Any) -> str:
    if isinstance(value, random.Random):
        return "python_random"
    if isinstance(value, np.random.Generator):
        return "numpy_generator"
    if isinstance(value, np.random.RandomState):
        return "numpy_randomstate"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Generator):
        return "torch_generator"
    if callable(getattr(value, "state_dict", None)) and callable(getattr(value, "load_state_dict", None)):
        return "state_dict"
    return "value"


def _set_numpy_generator(gen: np.random.Generator, state: dict) -> None:
    gen.bit_generator.state = state


_CAPTURE = {
    "value": lambda v: v,
    "state_dict": lambda v: v.state_dict(),
    "python_random": lambda v: v.getstate(),
    "numpy_generator": lambda v: v.bit_generator.state,
    "numpy_randomstate": lambda v: v.get_state(),
    "torch_generator": lambda v: v.get_state(),
}
_RESTORE = {
    "state_dict": lambda obj, data: obj.load_state_dict(data),
    "python_random": lambda obj, data: obj.setstate(_tuples(data)),
    "numpy_generator": _set_numpy_generator,
    "numpy_randomstate": lambda obj, data: obj.set_state(data),
    "torch_generator": lambda obj, data: obj.set_state(data),
}


#: The kinds of State entries a checkpoint may hold.
KINDS = frozenset(_CAPTURE)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def capture_global_rng() -> dict[str, Any]:
    """The global random states of Python, numpy and (when imported) torch and CUDA."""
    states: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state()}
    torch = sys.modules.get("torch")
    if torch is not None:
        states["torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_global_rng(states: dict[str, Any]) -> None:
    """Set the global random states captured by :func:`capture_global_rng`."""
    if "python" in states:
        random.setstate(_tuples(states["python"]))
    if "numpy" in states:
        np.random.set_state(states["numpy"])
    torch = sys.modules.get("torch")
    if torch is not None and "torch" in states:
        torch.set_rng_state(states["torch"].clone())
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.clone() for s in states["cuda"]])
