"""What every small policy shares: combination with ``|`` and one whole-number parameter.

Save, retention and restart policies are small pure objects, combined as tenacity's are
(``keep_latest(3) | keep_every(1000)``). Each family is a base class declared with
``family=True`` that names its :class:`Union` subclass; ``a | b`` of two members of a family is
that union, flattened.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .errors import ConfigError


class Combinable:
    """Base of a policy family; see the module docstring."""

    _family: ClassVar[type]
    Union: ClassVar[type]

    def __init_subclass__(cls, family: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if family:
            cls._family = cls

    def __or__(self, other: Any) -> Any:
        if not isinstance(other, self._family):
            return NotImplemented
        return self._family.Union((*_members(self), *_members(other)))


class Union:
    """Several policies of one family; the family's subclass says what their union decides."""

    def __init__(self, policies: tuple) -> None:
        self.policies = tuple(policies)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.policies))


class Counted:
    """A policy with one whole-number parameter ``n`` (at least ``minimum``), shown as ``name(n)``."""

    minimum: ClassVar[int] = 1

    def __init__(self, n: int) -> None:
        self.n = whole_number(n, f"{type(self).__name__}(n)", self.minimum)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.n})"


def whole_number(n: Any, what: str, minimum: int = 1) -> int:
    """``n`` if it is an int (not a bool) of at least ``minimum``, else ConfigError naming ``what``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{what} needs {kind}, not {n!r}")
    return n


def _members(policy: Any) -> tuple:
    return policy.policies if isinstance(policy, Union) else (policy,)
