"""Locks and semaphores taken at once when free, for py-libp2p's per-stream bookkeeping.

trio's lock and semaphore yield to every other runnable task on each acquire, free or not (a
checkpoint). py-libp2p takes several per frame and per stream, and Kubo and Helia open a
stream per message: each such yield is a whole round of the scheduler. These wait in line as
trio's do when they must, and skip the yield when they need not.
"""

from __future__ import annotations

from typing import Any

import trio


class PromptLock:
    """A lock taken at once when free; when held, acquirers wait in line and the releaser
    hands it to the first. Its parking lot is made only once someone waits (three of these
    come with every stream)."""

    __slots__ = ("_owner", "_waiting")

    def __init__(self) -> None:
        self._owner: Any = None
        self._waiting: trio.lowlevel.ParkingLot | None = None

    async def acquire(self) -> None:
        task = trio.lowlevel.current_task()
        if self._owner is None:
            self._owner = task
            return
        if self._owner is task:
            raise RuntimeError("attempt to re-acquire an already held PromptLock")
        if self._waiting is None:
            self._waiting = trio.lowlevel.ParkingLot()
        await self._waiting.park()  # woken by `release`, the lock already ours

    def release(self) -> None:
        if self._owner is not trio.lowlevel.current_task():
            raise RuntimeError("can't release a PromptLock you don't own")
        if self._waiting:
            (self._owner,) = self._waiting.unpark()
        else:
            self._owner = None

    def locked(self) -> bool:
        return self._owner is not None

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class PromptSemaphore:
    """trio.Semaphore, taken without a checkpoint while it has a token to give."""

    def __init__(self, tokens: int) -> None:
        self._semaphore = trio.Semaphore(tokens)

    @property
    def value(self) -> int:
        return self._semaphore.value

    async def acquire(self) -> None:
        try:
            self._semaphore.acquire_nowait()
        except trio.WouldBlock:
            await self._semaphore.acquire()

    def release(self) -> None:
        self._semaphore.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()
