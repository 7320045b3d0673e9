"""The Actyx Files API v2: upload, read, name, unname, plus auth and node endpoints."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from functools import partial

from edgefiles.ans.record import NameRecord
from edgefiles.ans.registry import NameRefused, check_name
from edgefiles.node import cid as cids
from edgefiles.node import exporter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import car
from .body import parse_json, read_small_body, read_trimmed
from .content import IMMUTABLE, REVALIDATE, Target, etag_matches, listed_header, require_if_match
from .context import AppContext
from .cors import CORS_HEADERS
from .errors import BadRequest, ManifestInvalid, MethodNotAllowed, NotFound, PreconditionFailed
from .paths import raw_tail, url_segments
from .upload import receive_upload

PREFIX = "/api/v2/files"
AUTH_BODY = 64 << 10  # an app manifest; read whole, before any token is checked
APP_ID_CHARS = 255  # every token carries its app id: one of megabytes made tokens no header could hold
NAME_BODY = 4 << 10  # a CID


async def auth(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    raw = await read_small_body(request, AUTH_BODY, ctx.max_upload, "an app manifest")
    body = parse_json(raw, partial(BadRequest, "body must be JSON: {appId, displayName, version}"))
    if not isinstance(body, dict) or not all(
        isinstance(body.get(k), str) and body.get(k) for k in ("appId", "displayName", "version")
    ):
        raise BadRequest("body must be JSON with string fields appId, displayName and version")
    if len(body["appId"]) > APP_ID_CHARS:
        raise BadRequest(f"appId is at most {APP_ID_CHARS} characters")
    if not ctx.tokens.is_trusted(body["appId"]):
        raise ManifestInvalid(f"app id {body['appId']!r} is not trusted by this node (see --trust-app)")
    return JSONResponse({"token": ctx.tokens.issue(body["appId"])}, headers=CORS_HEADERS)


def plain_text(text: str) -> Response:
    """Exactly `Content-Type: text/plain`, as the Actyx docs state (ASCII bodies: CIDs, peer ids)."""
    return Response(text.encode(), headers={**CORS_HEADERS, "Content-Type": "text/plain"})


def split_tail(raw_tail: str) -> tuple[list[str], bool]:
    """URL path after the prefix → (segments, trailing slash)."""
    trailing = raw_tail.endswith("/")
    body = raw_tail[:-1] if trailing else raw_tail
    return url_segments(body), trailing


async def files(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    ctx.tokens.require(request)
    tail = raw_tail(request, PREFIX + "/")
    method = request.method
    if method == "POST":  # only the collection's routes take it
        root = await receive_upload(request, ctx.core, ctx.executor, ctx.hash_pool, ctx.max_upload)
        return plain_text(cids.to_str(root))
    segments, trailing = split_tail(tail)
    if not segments:
        raise BadRequest("missing CID or name after /api/v2/files/")
    if method in ("GET", "HEAD"):
        return await read(request, ctx, segments, trailing)
    if len(segments) != 1 or trailing:
        raise BadRequest("names are single path segments: /api/v2/files/<name>")
    if method == "PUT":
        return await put_name(request, ctx, segments[0])
    return await delete_name(request, ctx, segments[0])


async def read(request: Request, ctx: AppContext, segments: list[str], trailing: bool) -> Response:
    root_text, path = segments[0], segments[1:]
    by_name = ctx.names.registry.get(root_text) is not None
    if by_name:
        root = await resolve_app_name(ctx, root_text)
    else:
        try:
            root = cids.parse(root_text)
        except cids.InvalidCid:
            raise MethodNotAllowed(f"{root_text!r} is neither a known name nor a valid CID") from None
        await refuse_facade_files(ctx, root)
    if root is None:
        raise NotFound(f"name {root_text!r} is not set")
    if request.query_params.get("format") == "car":
        return await _car_of(request, ctx, root, path, by_name)
    return await ctx.content.serve(request, Target(root, path, trailing, by_name))


async def resolve_app_name(ctx: AppContext, name: str) -> bytes | None:
    """`Names.resolve` of an app name; on the loop when its target is known complete (a
    rolled-out app's every asset), without a worker thread's hop."""
    return ctx.names.resolved_at_hand(name) or await run_in_threadpool(ctx.names.resolve, name)


async def refuse_facade_files(ctx: AppContext, cid: bytes) -> None:
    """404 for the root of a facade's file that apps never uploaded or named: a thing's,
    a group's or a FlowFuse project's file is no app's to read by CID. Most CIDs are no
    facade's: they are told on the loop, without a worker thread's hop (a tenth of a small
    file's GET)."""
    if ctx.names.facade_only(cid) and await run_in_threadpool(ctx.names.hidden_from_apps, cid):
        raise NotFound("no such file or directory")


async def _car_of(request: Request, ctx: AppContext, root: bytes, path: list[str], by_name: bool) -> Response:
    """The DAG at `path` below `root` as a CAR whose root is that DAG's CID."""
    if path:
        try:
            root = (await run_in_threadpool(ctx.core.reader.resolve, root, path)).cid
        except (exporter.NotFound, exporter.NotUnixFS):
            raise NotFound("no such file or directory") from None
    return await car.export(ctx.core, root, {"Cache-Control": REVALIDATE if by_name else IMMUTABLE},
                            listed_header(request, "if-none-match"))


async def put_name(request: Request, ctx: AppContext, name: str) -> Response:
    try:
        check_name(name)
    except NameRefused as refused:
        raise (MethodNotAllowed if refused.is_cid else BadRequest)(str(refused)) from None
    check_name_preconditions(request, ctx.names.registry.get(name))  # before a body is read for nothing
    body = await read_trimmed(request, NAME_BODY, ctx.max_upload,
                              lambda: MethodNotAllowed(f"the body is not a CID: more than {NAME_BODY} bytes"))
    text = body.decode("utf-8", "replace").strip()
    try:
        target = cids.parse(text)
    except cids.InvalidCid:
        raise MethodNotAllowed(f"body {text[:100]!r} is not a valid CID") from None
    await refuse_facade_files(ctx, target)  # a name would publish it: to everyone, with no token
    async with _conditional(request, ctx):  # and again as it is written: the name may have moved since
        check_name_preconditions(request, ctx.names.registry.get(name))
        await ctx.names.set(name, target)
    return Response(b"", headers=CORS_HEADERS)


async def delete_name(request: Request, ctx: AppContext, name: str) -> Response:
    async with _conditional(request, ctx):
        if (record := ctx.names.registry.get(name)) is not None:  # absent: a 405 whatever the preconditions
            check_name_preconditions(request, record)
        previous = await ctx.names.delete(name)
    if previous is None:
        raise MethodNotAllowed(f"name {name!r} does not exist")
    return plain_text(cids.to_str(previous))


def _conditional(request: Request, ctx: AppContext) -> contextlib.AbstractAsyncContextManager:
    """The lock a conditional write of a name holds from its check to its write; none for
    another write (it promises nothing about what it replaces)."""
    headers = request.headers
    made_conditional = "if-match" in headers or "if-none-match" in headers
    return ctx.conditional_name_writes if made_conditional else contextlib.nullcontext()


def check_name_preconditions(request: Request, record: NameRecord | None) -> None:
    """RFC 9110 13.1.1-2 for a PUT or DELETE of a name, whose version is the ETag its reads carry
    (`"<cid>"`): with If-Match, it must be one the client names (`*`: any, so the name must be
    set); with If-None-Match, none it names (`*`: the name must not be set, a create only).
    Else 412, and nothing changes: a client repoints a name only from the version it read."""
    if_match = listed_header(request, "if-match")
    if record is None:  # (the registry gives no record of a name deleted)
        if if_match is not None:
            raise PreconditionFailed("If-Match names a version, and the name is not set")
        return
    etag = f'"{cids.to_str(record.cid)}"'
    require_if_match(if_match, etag)
    if etag_matches(listed_header(request, "if-none-match"), etag):
        raise PreconditionFailed(f"If-None-Match names the name's version, {etag}")


async def names(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    ctx.tokens.require(request)
    # completeness walks whole DAGs the first time: keep them off the event loop
    return JSONResponse(await run_in_threadpool(_name_table, ctx), headers=CORS_HEADERS)


def _name_table(ctx: AppContext) -> list[dict]:
    out = []
    for record in ctx.names.registry.live():
        complete, missing = ctx.core.progress(record.cid)
        out.append({
            "name": record.name,
            "cid": cids.to_str(record.cid),
            "updated": _rfc3339(record.clock[0]),
            "complete": complete,
            "missing": missing,
        })
    return out


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def node_id(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    return plain_text(ctx.core.key.peer_id)


async def node_info(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    ctx.tokens.require(request)
    blocks, size = ctx.core.store_totals()
    rollout = await run_in_threadpool(_name_table, ctx)
    return JSONResponse(
        {
            "peerId": ctx.core.key.peer_id,
            "addrs": ctx.swarm.addrs(),
            "peers": ctx.swarm.peers(),
            "blocks": blocks,
            "bytes": size,
            "pins": ctx.core.pinned_roots(),
            "names": len(ctx.names.registry.live()),
            "rollout": [{k: n[k] for k in ("name", "cid", "complete", "missing")} for n in rollout],
            "hostSuffix": ctx.host_suffix,  # with apiPort: where the host route serves a name
            "apiPort": ctx.api_port or request.url.port,
        },
        headers=CORS_HEADERS,
    )
