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
        self._tags: dict[str, frozenset[str]] = {}

    def register(self, name: str, help: str = "",
                 tags: tuple[str, ...] = ()) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """`tags` name groups an entry belongs to (datasets: "coop" for the suite, "shift" for test-only shift
        sets), so that a group is the entries that say so, not a list kept elsewhere."""
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            doc_lines = (factory.__doc__ or "").strip().splitlines()
            self._entries[name] = (factory, help or (doc_lines[0] if doc_lines else ""))
            self._tags[name] = frozenset(tags)
            return factory

        return decorator

    def unregister(self, name: str) -> None:
        """Remove an entry (tests register throwaway entries and take them back)."""
        self._entries.pop(name, None)
        self._tags.pop(name, None)

    def names(self, tag: str | None = None) -> list[str]:
        """Every name in registration order, or those with `tag`."""
        return [n for n in self._entries if tag is None or tag in self._tags[n]]

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
