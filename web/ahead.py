"""Streamed answers' bodies produced ahead of what is sent, two ways.

`RunsAhead`: pieces of known length read in runs on a read pool, several under way while
the loop sends the one before; the runs are planned on a worker thread (planning may read).

`streamed`: a blocking iterator run ahead on a thread of its own: the next chunks are
produced while the current one is sent, rather than in turn with it (Starlette iterates a
sync body one worker-thread hop per chunk, and sends each before asking for the next)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from contextlib import aclosing
from itertools import islice
from typing import Generic, TypeVar

from edgefiles.node.exporter import Pieces, Places
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

log = logging.getLogger("edgefiles.web")

_DONE = object()
T = TypeVar("T")
# One hand-over per MiB: where Starlette made a worker-thread hop per piece (a block, a
# sealed segment) and sent it before reading the next (Kubo -> us, read over HTTP as it is
# fetched: +4 %)
STREAM_CHUNK = 1 << 20
# A run: one task on the read pool reads and verifies about a MiB; eight under way keep
# both threads busy while the loop sends (a 1 GiB CAR: 0.79x one core of hashlib with a thread
# handing 4 MiB chunks to the loop, 0.91x so)
RUN_BYTES = 1 << 20
RUNS_AHEAD = 8
PLANNED_RUNS = 16  # runs planned per trip to a worker thread
R = TypeVar("R")
Chunk = bytes | Pieces  # what a body gives the server at a time


class CutShort(Exception):
    """An answer with a Content-Length that cannot be finished (a block gone from everywhere,
    damaged, or other than its parent says); its message is the log's line."""


# The ASGI extension our server offers (http_protocol): a body message's "body" may be
# `Pieces`, which it writes as they are; under another server they are joined first
PIECES = "edgefiles.pieces"


class CutShortResponse(StreamingResponse):
    """A streamed answer whose body may come in `Pieces`."""

    pieces_written = False  # whether the server writes Pieces itself (else they are joined)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # a body without a length is sent in chunks, which uvicorn frames by joining bytes
        self.pieces_written = PIECES in scope.get("extensions", {}) and "content-length" in self.headers
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        """Starlette's, but for Pieces (and for bytes only: no body of ours gives text). A body
        that raises CutShort ends without its last message: the server closes the connection,
        the client sees the answer short of its Content-Length, and the log says why in a line
        of ours, no traceback (uvicorn adds one that the answer was not completed)."""
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                body = bytes(chunk) if isinstance(chunk, Pieces) and not self.pieces_written else chunk
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except CutShort as exc:
            log.error("%s", exc)


class RunsAhead(Generic[R]):
    """The bytes of each of `runs` in order (`chunks`): `read(run, False, places)` on `pool`,
    RUNS_AHEAD runs under way while the one before is sent. A run whose read raises `retry`
    there is read again by `read(run, True, places)` on a worker thread of its own (it may wait
    for peers, which the pool's threads never do). `runs` is advanced on a worker thread
    (`plan`), PLANNED_RUNS at a time, and where their blocks lie is looked up there at once
    (`locate`): a lookup per run on the read threads, one of the steps that took the GIL back
    between hashes, slowed a 1 GiB CAR export by a sixth."""

    def __init__(self, runs: Iterator[R], read: Callable[[R, bool, Places], Chunk], pool: Executor,
                 retry: type[Exception], locate: Callable[[list[R]], Places]):
        self._runs, self._read, self._pool, self._retry, self._locate = runs, read, pool, retry, locate
        self._planned: deque[tuple[R, Places]] = deque()
        self._under_way: deque[tuple[R, Places, Future[Chunk]]] = deque()
        self._more = True

    def plan(self) -> None:
        """Blocking: the next runs planned, and the first ones set under way. A caller on a
        worker thread already calls it there, so that the reads start before the answer."""
        taken = list(islice(self._runs, PLANNED_RUNS))
        self._more = len(taken) == PLANNED_RUNS
        places = self._locate(taken) if taken else {}
        self._planned.extend((run, places) for run in taken)
        self._set_under_way()

    def _set_under_way(self) -> None:
        while self._planned and len(self._under_way) < RUNS_AHEAD:
            run, places = self._planned.popleft()
            self._under_way.append((run, places, self._pool.submit(self._read, run, False, places)))

    def cancel(self) -> None:
        for _, _, future in self._under_way:
            future.cancel()

    async def chunks(self) -> AsyncIterator[Chunk]:
        try:
            while True:
                if self._more and not self._planned and len(self._under_way) < RUNS_AHEAD:
                    await run_in_threadpool(self.plan)
                self._set_under_way()
                if not self._under_way:
                    return
                run, places, future = self._under_way.popleft()
                try:
                    chunk = await asyncio.wrap_future(future)
                except self._retry:
                    chunk = await run_in_threadpool(self._read, run, True, places)
                yield chunk
        finally:
            self.cancel()


async def held_while_sent(release: Callable[[], None], answer: Awaitable[Response]) -> Response:
    """The response `answer` gives, with `release` (of a DAG held against collection) called
    once its body is sent or given up, or at once when `answer` fails: what a client reads
    slowly must not be collected under it."""
    try:
        response = await answer
    except BaseException:
        release()
        raise
    return _released_after(response, release)


def _released_after(response: Response, release: Callable[[], None]) -> Response:
    """At once for a body held whole, after the last chunk of a streamed one."""
    if not isinstance(response, StreamingResponse):
        release()
        return response
    response.body_iterator = _then(response.body_iterator, release)
    return response


async def _then(body: AsyncIterator[bytes], release: Callable[[], None]) -> AsyncIterator[bytes]:
    try:
        async with aclosing(body) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                yield chunk
    finally:
        release()


async def first_then_runs(first: Chunk, rest: RunsAhead, errors: tuple[type[Exception], ...],
                          cut_short: Callable[[Exception], str]) -> AsyncIterator[Chunk]:
    """`first`, then the chunks of `rest`, ended as `cut_short_by` says. The runs under way are
    dropped however the answer ends: a client gone after `first` leaves nothing to read."""
    try:
        yield first
        async with aclosing(cut_short_by(rest.chunks(), errors, cut_short)) as chunks:
            async for chunk in chunks:
                yield chunk
    finally:
        rest.cancel()


async def cut_short_by(body: AsyncIterator[T], errors: tuple[type[Exception], ...],
                       cut_short: Callable[[Exception], str]) -> AsyncIterator[T]:
    """`body`, ended as CutShort(`cut_short(error)`) by one of `errors` while it is read (the
    log's one line, where the server would log a traceback)."""
    try:
        async with aclosing(body) as chunks:
            async for chunk in chunks:
                yield chunk
    except errors as exc:
        raise CutShort(cut_short(exc)) from exc


def streamed(pieces: Iterable[bytes], size: int = STREAM_CHUNK) -> AsyncIterator[bytes]:
    """A streamed answer's body from blocking `pieces`: read ahead on a thread of their own,
    in chunks of `size`, while the chunk before is sent."""
    return produced_ahead(in_chunks(pieces, size))


def in_chunks(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """`pieces` joined into chunks of at least `size` bytes (the last one may be smaller):
    one hand-over to the server per chunk, not one per block. When `pieces` fails, what it
    gave is sent before the error is (a CAR cut short still holds the blocks found)."""
    return (b"".join(batch) for batch in batches(pieces, len, size))


def batches(items: Iterable[T], weigh: Callable[[T], int], size: int) -> Iterator[list[T]]:
    """`items` in order, in lists that weigh at least `size` (the last one may weigh less).
    When `items` fails, the list gathered so far comes out before the error."""
    batch: list[T] = []
    held = 0
    try:
        for item in items:
            batch.append(item)
            held += weigh(item)
            if held >= size:
                yield batch
                batch, held = [], 0
    except Exception:
        if batch:
            yield batch
        raise
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
