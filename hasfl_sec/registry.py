"""A small name -> object registry, the project's replacement for if/elif factories.

Modelled on Opacus' accountant registry: components register themselves with a decorator, and
an unknown name is an error that lists every registered name.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to components of one kind (models, datasets, fleets, ...).

    Args:
        kind: what is registered; used in error messages (``"model"``).
        field: the config field that selects from this registry (``"model.name"``).
    """

    def __init__(self, kind: str, field: str) -> None:
        self.kind = kind
        self.field = field
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, *, help: str = "", force: bool = False) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``; a duplicate name is refused."""

        def decorate(obj: T) -> T:
            if name in self._items and not force:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            doc = help or (getattr(obj, "__doc__", None) or "").strip().splitlines()[0:1]
            self._help[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")
            return obj

        return decorate

    def get(self, name: str) -> T:
        """The component registered as ``name``; :class:`ConfigError` listing valid names otherwise."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ConfigError(self.field, name, sorted(self._items)) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def describe(self, name: str) -> str:
        """One line of help for ``name``."""
        return self._help.get(name, "")

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
