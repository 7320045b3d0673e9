"""A blocking iterator run ahead on a thread of its own, for a streamed answer: the next
chunks are produced while the current one is sent, rather than in turn with it (Starlette
iterates a sync body one worker-thread hop per chunk, and sends each before asking for the
next)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TypeVar

_DONE = object()
T = TypeVar("T")
# One hand-over per MiB: where Starlette made a worker-thread hop per piece (a block, a
# sealed segment) and sent it before reading the next (Kubo -> us, read over HTTP as it is
# fetched: +4 %)
STREAM_CHUNK = 1 << 20


def streamed(pieces: Iterable[bytes], size: int = STREAM_CHUNK) -> AsyncIterator[bytes]:
    """A streamed answer's body from blocking `pieces`: read ahead on a thread of their own,
    in chunks of `size`, while the chunk before is sent."""
    return produced_ahead(in_chunks(pieces, size))


def in_chunks(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """`pieces` joined into chunks of at least `size` bytes (the last one may be smaller):
    one hand-over to the server per chunk, not one per block."""
    return (b"".join(batch) for batch in batches(pieces, len, size))


def batches(items: Iterable[T], weigh: Callable[[T], int], size: int) -> Iterator[list[T]]:
    """`items` in order, in lists that weigh at least `size` (the last one may weigh less)."""
    batch: list[T] = []
    held = 0
    for item in items:
        batch.append(item)
        held += weigh(item)
        if held >= size:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


async def produced_ahead(chunks: Iterator[bytes], depth: int = 2) -> AsyncIterator[bytes]:
    """`chunks`, at most `depth` of them produced ahead of the consumer. When the consumer
    stops early (the client went away), the producer stops and `chunks` is closed."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue(depth)
    stop = threading.Event()

    def hand_over(item: object) -> None:
        asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

    def produce() -> None:
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                hand_over(chunk)
            hand_over(_DONE)
        except BaseException as exc:  # noqa: BLE001  (re-raised to the consumer)
            if not stop.is_set():
                hand_over(exc)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    threading.Thread(target=produce, name="produce-ahead", daemon=True).start()
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while not queue.empty():  # a producer waiting to hand over sees `stop` next
            queue.get_nowait()
