"""CAR v1 over HTTP: a DAG exported as one archive, and archives imported into the store.

Export lays out a DAG stored here whole (a Content-Length, then its blocks read, verified
against their CIDs and framed in runs on the read pool); a DAG still being fetched is streamed
as the walk reads it. Import parses the body as it arrives, checks every block against its CID
on a worker thread, and stores nothing unless the whole archive was well-formed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from functools import partial
from itertools import chain, islice

from edgefiles.node import car, exporter
from edgefiles.node.blockstore import CorruptBlock, QueuedWrites, StorageFull
from edgefiles.node.cid import is_identity, normalize, to_str
from edgefiles.node.core import Core
from edgefiles.node.exporter import Laid, Pieces
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .ahead import (
    RUN_BYTES,
    Chunk,
    CutShortResponse,
    RunsAhead,
    batches,
    cut_short_by,
    first_then_runs,
    held_while_sent,
    streamed,
)
from .content import etag_matches
from .context import AppContext
from .cors import CORS_HEADERS
from .errors import CarInvalid, InsufficientStorage, NotFound, PayloadTooLarge, UnsupportedMediaType
from .upload import HANDOFF_BYTES, parse_header_params

CAR_TYPE = "application/vnd.ipld.car"
CHUNK = 4 << 20  # sections are sent in writes of about this size
LAID_OUT_BLOCKS = 1 << 16  # blocks laid out at most before an answer starts
Block = tuple[bytes, bytes]
NOWHERE = "block not stored on this node and not found in its swarm"  # a GET's 404, and its HEAD's
DAMAGED = "a block of this DAG fails its hash check on this node"  # the same
log = logging.getLogger("edgefiles.web")
CAR_READ_ERRORS = (exporter.NotFound, exporter.NotUnixFS, exporter.LeafWithLinks, CorruptBlock)


async def export(core: Core, root: bytes, headers: dict[str, str],
                 if_none_match: str | None = None) -> Response:
    """The DAG under `root` as a CAR (roots = [root]); 404 when its root block is nowhere,
    304 when `if_none_match` names its ETag (a name's CAR revalidates as its files do)."""
    headers = {**headers, "Content-Type": f"{CAR_TYPE}; version=1", "ETag": f'"{to_str(root)}.car"',
               "X-Content-Type-Options": "nosniff", "Accept-Ranges": "none",
               "Content-Disposition": f'attachment; filename="{to_str(root)}.car"'}
    if etag_matches(if_none_match, headers["ETag"]):
        return Response(status_code=304, headers={**CORS_HEADERS, **headers})
    return await stream(core, [root], [], root, headers)


async def stream(core: Core, roots: list[bytes], steps: list[Block], top: bytes, headers: dict[str, str],
                 scope: str = "all", byte_range: tuple[int, int] | None = None,
                 dups: bool = False) -> Response:
    """`_stream`, the DAG under `top` held against collection until the CAR is sent."""
    answer = _stream(core, roots, steps, top, headers, scope, byte_range, dups)
    return await held_while_sent(core.store.hold(top), answer)


async def _stream(core: Core, roots: list[bytes], steps: list[Block], top: bytes, headers: dict[str, str],
                  scope: str, byte_range: tuple[int, int] | None, dups: bool) -> Response:
    """A CAR of `steps` (blocks read already: a path's) and then of the DAG under `top` (as
    `DagReader.blocks` walks it), skipping blocks given already.

    A DAG stored here whole (of up to LAID_OUT_BLOCKS blocks) is laid out first: the answer
    has a Content-Length (a client can show progress and tell a cut answer from a whole one)
    and its blocks are read in runs on the read pool. Otherwise the walk fetches what is
    missing as it goes; its first block is read before the answer starts, so that a DAG that
    is nowhere is a 404, not a cut stream. With `dups`, a block comes each time the DAG
    links it, not once."""
    start, seen = _start(roots, steps, dups)
    layout = await run_in_threadpool(_layout, core.reader, top, scope, byte_range, seen)
    if layout is not None:
        length = _length(start, layout)
        body = _laid_out(core, top, start, layout)
        return CutShortResponse(body, headers={**CORS_HEADERS, **headers, "Content-Length": str(length)})
    walk = core.reader.blocks(top, core.read_pool, scope, byte_range, seen)
    try:
        first = await run_in_threadpool(next, walk, None)
    except exporter.NotFound:
        raise NotFound(NOWHERE) from None
    except CorruptBlock:
        raise NotFound(DAMAGED) from None
    blocks = chain([first] if first is not None else [], walk)
    sections = chain.from_iterable(car.section(cid, data) for cid, data in blocks)
    body = cut_short_by(streamed(chain([start], sections), CHUNK), CAR_READ_ERRORS,
                        lambda exc: f"CAR of {to_str(top)} cut short: {exc}")
    return CutShortResponse(body, headers={**CORS_HEADERS, **headers})


async def length(core: Core, roots: list[bytes], steps: list[Block], top: bytes, scope: str = "all",
                 byte_range: tuple[int, int] | None = None, dups: bool = False) -> int | None:
    """The bytes `stream` would send (a HEAD's Content-Length); None when it would not know
    them before it starts (a DAG not stored here whole)."""
    start, seen = _start(roots, steps, dups)
    layout = await run_in_threadpool(_layout, core.reader, top, scope, byte_range, seen)
    return None if layout is None else _length(start, layout)


def _start(roots: list[bytes], steps: list[Block], dups: bool) -> tuple[bytes, set[bytes]]:
    """The CAR's header and the sections of the blocks on the path to it; the blocks given
    (none with `dups`: the DAG below gives a block again each time it links it)."""
    # an identity CID's block is in the CID: the specification forbids it in a CAR, path steps too
    sections = (car.section(cid, data) for cid, data in steps if not is_identity(cid))
    given = exporter.Unseen() if dups else {normalize(cid) for cid, _ in steps}
    return b"".join([car.header(roots), *chain.from_iterable(sections)]), given


def _length(start: bytes, layout: list[Laid]) -> int:
    return len(start) + sum(car.section_size(cid, size) for cid, size, _ in layout)


def _layout(reader: exporter.DagReader, top: bytes, scope: str, byte_range: tuple[int, int] | None,
            seen: set[bytes]) -> list[Laid] | None:
    """Worker thread: the layout of the DAG; None when a block is not stored here, or there
    are more than LAID_OUT_BLOCKS (the answer would wait too long for its first byte)."""
    try:
        layout = list(islice(reader.layout(top, scope, byte_range, seen), LAID_OUT_BLOCKS + 1))
    except (exporter.NotFound, exporter.NotUnixFS, exporter.LayoutTooCostly, CorruptBlock):
        return None
    return layout if len(layout) <= LAID_OUT_BLOCKS else None


def _laid_out(core: Core, top: bytes, start: bytes, layout: list[Laid]) -> AsyncIterator[Chunk]:
    """The CAR from `start` on: its blocks read, checked and framed in runs on the read pool
    while the ones before are sent. A block collected since the layout is fetched again (off
    the pool: perhaps from peers)."""
    runs = batches(layout, lambda laid: laid[1], RUN_BYTES)
    rest = RunsAhead(runs, partial(_framed, core.reader), core.read_pool, exporter.NotFound,
                     lambda planned: core.store.places([cid for run in planned for cid, _, _ in run]))
    return first_then_runs(start, rest, CAR_READ_ERRORS, lambda exc: f"CAR of {to_str(top)} cut short: {exc}")


def _framed(reader: exporter.DagReader, run: list[Laid], fetch: bool, places: exporter.Places) -> Pieces:
    """Worker thread: the sections of a run of blocks, not joined (the server writes them)."""
    blocks = reader.read_laid(run, fetch, places)
    sections = (car.section(cid, block) for (cid, _, _), block in zip(run, blocks, strict=True))
    return Pieces(list(chain.from_iterable(sections)))


class CarSink:
    """The import side of one archive; its methods run on a worker thread, in order."""

    def __init__(self, core: Core):
        self.parser = car.CarParser()
        self.batch = core.store.batch()
        self.writes = QueuedWrites(self.batch)
        self.blocks = 0

    def feed(self, data: bytes) -> None:
        for cid, block in self.parser.feed(data):
            if not is_identity(cid):  # checked, and held by its CID: nothing to store
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
