"""Listener lists that can be left: `add` returns the call that removes the listener."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

F = TypeVar("F", bound=Callable)


class Listeners(Generic[F]):
    def __init__(self) -> None:
        self._callbacks: list[F] = []

    def add(self, callback: F) -> Callable[[], None]:
        """Listen; call what this returns to stop."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def __iter__(self) -> Iterator[F]:
        return iter(list(self._callbacks))  # a copy: a listener may leave while being told

    def __len__(self) -> int:
        return len(self._callbacks)
