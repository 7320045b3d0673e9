"""CAR v1 over HTTP: a DAG exported as one archive, and archives imported into the store.

Export streams the blocks as the walk reads them (each verified against its CID on the way),
in ~1 MiB writes. Import parses the body as it arrives, checks every block against its CID
on a worker thread, and stores nothing unless the whole archive was well-formed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import Executor
from itertools import chain

from edgefiles.node import car, exporter
from edgefiles.node.blockstore import CorruptBlock, QueuedWrites, StorageFull
from edgefiles.node.cid import normalize, to_str
from edgefiles.node.core import Core
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .ahead import streamed
from .context import AppContext
from .cors import CORS_HEADERS
from .errors import CarInvalid, InsufficientStorage, NotFound, PayloadTooLarge, UnsupportedMediaType
from .upload import HANDOFF_BYTES, parse_header_params

CAR_TYPE = "application/vnd.ipld.car"
CHUNK = 4 << 20  # sections are sent in writes of about this size
Block = tuple[bytes, bytes]


async def export(core: Core, root: bytes, headers: dict[str, str]) -> Response:
    """The DAG under `root` as a CAR (roots = [root]); 404 when its root block is nowhere."""
    headers = {**headers, "Content-Type": f"{CAR_TYPE}; version=1",
               "Content-Disposition": f'attachment; filename="{to_str(root)}.car"'}
    return await stream([root], [], core.reader.blocks(root, core.read_pool), set(), headers)


async def stream(roots: list[bytes], steps: list[Block], walk: Iterator[Block], seen: set[bytes],
                 headers: dict[str, str]) -> Response:
    """A CAR of `steps` (blocks read already: a path's) and then of the blocks `walk` gives,
    which skips those in `seen`. Its first block is read before the answer starts, so that a
    DAG that is nowhere is a 404, not a cut stream."""
    seen.update(normalize(cid) for cid, _ in steps)
    try:
        first = await run_in_threadpool(next, walk, None)
    except exporter.NotFound:
        raise NotFound("block not stored on this node") from None
    except CorruptBlock:
        raise NotFound("a block of this DAG fails its hash check here") from None
    blocks = chain(steps, [first] if first is not None else [], walk)
    sections = chain.from_iterable(car.section(cid, data) for cid, data in blocks)
    body = streamed(chain([car.header(roots)], sections), CHUNK)
    return StreamingResponse(body, headers={**CORS_HEADERS, **headers})


class CarSink:
    """The import side of one archive; its methods run on a worker thread, in order."""

    def __init__(self, core: Core):
        self.parser = car.CarParser()
        self.batch = core.store.batch()
        self.writes = QueuedWrites(self.batch)
        self.blocks = 0

    def feed(self, data: bytes) -> None:
        for cid, block in self.parser.feed(data):
            self.writes.put(cid, block)
            self.blocks += 1

    def finish(self) -> list[bytes]:
        self.parser.finish()
        self.writes.flush()
        return self.parser.roots or []


async def receive(request: Request) -> Response:
    """`POST /api/v2/car`: import an archive; its roots are pinned like an upload's."""
    ctx: AppContext = request.app.state.ctx
    ctx.tokens.require(request)
    ctype, _ = parse_header_params(request.headers.get("content-type", ""))
    if ctype != CAR_TYPE:
        raise UnsupportedMediaType(f"Content-Type must be {CAR_TYPE}")
    roots, blocks = await _import(request, ctx.core, ctx.executor, ctx.max_upload)
    return JSONResponse({"roots": [to_str(r) for r in roots], "blocks": blocks}, headers=CORS_HEADERS)


async def _import(request: Request, core: Core, executor: Executor, max_size: int) -> tuple[list[bytes], int]:
    loop = asyncio.get_running_loop()
    sink = CarSink(core)
    pending, received = bytearray(), 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_size:
                raise PayloadTooLarge(f"request body larger than {max_size} bytes")
            pending += chunk
            if len(pending) >= HANDOFF_BYTES:
                data, pending = bytes(pending), bytearray()
                await loop.run_in_executor(executor, sink.feed, data)
        await loop.run_in_executor(executor, sink.feed, bytes(pending))
        roots = await loop.run_in_executor(executor, sink.finish)
        await core.commit(sink.batch, roots)
        return roots, sink.blocks
    except BaseException as exc:
        await loop.run_in_executor(executor, sink.writes.close)  # no write may land after this
        core.store.abandon(sink.batch)
        if isinstance(exc, car.CarInvalid):
            raise CarInvalid(str(exc)) from None
        if isinstance(exc, StorageFull):
            raise InsufficientStorage(f"archive not stored: {exc}") from None
        raise
