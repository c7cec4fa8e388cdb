"""A string that never shows itself: not in repr, str, format, logs, tracebacks or pickles."""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["MASK", "Secret", "reveal"]

MASK = "**********"  # what a masked secret shows: here, in logs and in config output


class Secret:
    """Holds a secret value (token, password). Only :meth:`get_secret_value` returns it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The secret itself: call this only where it leaves the process (a header, a URL)."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret('{MASK}')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return MASK if self._value else ""

    def __format__(self, spec: str) -> str:
        return str(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")

    def __getstate__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


def reveal(value: Secret | str | None) -> str | None:
    """The plain value of a Secret or a str (``None`` stays ``None``)."""
    if value is None or isinstance(value, str):
        return value
    return value.get_secret_value()
