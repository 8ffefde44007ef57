"""One small generic registry: register / get / names(). Unknown names fail with the list of names."""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # "backbone", "dataset", "method": used in error messages
        self._entries: dict[str, tuple[Callable[..., T], str]] = {}

    def register(self, name: str, help: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            doc_lines = (factory.__doc__ or "").strip().splitlines()
            self._entries[name] = (factory, help or (doc_lines[0] if doc_lines else ""))
            return factory

        return decorator

    def unregister(self, name: str) -> None:
        """Remove an entry (tests register throwaway entries and take them back)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return list(self._entries)

    def help(self, name: str) -> str:
        return self._entries[name][1]

    def factory(self, name: str) -> Callable[..., T]:
        if name not in self._entries:
            raise UserError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}"
            )
        return self._entries[name][0]

    def create(self, name: str, *args, **kwargs) -> T:
        return self.factory(name)(*args, **kwargs)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
