"""Name -> class registries for learners, strategies, SSL methods and evaluation protocols.

A registry maps the names a config file uses to the classes that implement them, so adding a
strategy (or learner, ...) is its own module plus one :meth:`Registry.register` line, and an unknown
name is one :class:`~jaxcssl.errors.ConfigError` line that lists the known ones.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from jaxcssl.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Ordered ``name -> entry``; ``key`` is the config key the name comes from (for error messages)."""

    def __init__(self, key: str):
        self.key = key
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; a name registered twice is a programming error."""
        if not name or not name.isidentifier():
            raise ValueError(f"{self.key}: {name!r} is not a valid registry name (a Python identifier)")
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.key}: {name!r} is already registered to {self._entries[name]!r}")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register a toy entry clean up with this)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(f"{self.key}={name!r} is not one of: {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries
