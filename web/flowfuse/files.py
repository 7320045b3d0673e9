"""FlowFuse file server routes over named CIDs: each file is a name in its project's namespace.

`/v1/files/:teamId/:projectId/<path>`: the path (percent-decoded, checked by the one path
validator) is the name; the namespace `flowfuse/<team>/<project>` confines it, so no path
can reach another project, another team or the disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from edgefiles.node import exporter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..paths import raw_tail
from ..upload import parse_header_params
from .errors import (
    FFBadRequest,
    FFIsDirectory,
    FFNoEntry,
    FFNoEntryToDelete,
    FFNotDirectory,
    FFOverQuota,
    FFUnauthorized,
    FFUnsupportedMedia,
)
from .facade import FlowFuse, read_body
from .platform import Grant

TEXT_TYPES = {"application/octet-stream", "text/plain"}


def namespace(team: str, project: str) -> str:
    return f"flowfuse/{team}/{project}"


async def _target(request: Request, ff: FlowFuse, prefix: str) -> tuple[str, str, list[str], Grant]:
    """(team, project, path segments, the platform's grant) of `/v1/<prefix>/team/project[/path]`,
    all checked (`FlowFuse.authorize_path`)."""
    parts = raw_tail(request, f"/v1/{prefix}/").split("/")
    if len(parts) < 2 or parts[1:] == [""]:
        raise FFUnauthorized()  # `team[/]`: no such route upstream, whose auth check fails first
    (team, project, *segments), grant = await ff.authorize_path(request, f"/v1/{prefix}/", 1)
    return team, project, segments, grant


async def files(request: Request) -> Response:
    ff: FlowFuse = request.app.state.ctx.flowfuse
    team, project, segments, grant = await _target(request, ff, "files")
    if not segments:
        raise FFBadRequest("a file path is required")
    ns, name = namespace(team, project), "/".join(segments)
    store = ff.files
    if request.method in ("GET", "HEAD"):  # HEAD is GET's answer without its body (RFC 9110)
        _refuse_below_file(store, ns, segments)
        cid = store.resolve(ns, name)
        if cid is None:
            if store.is_dir(ns, name):
                raise FFIsDirectory(f"{name} is a directory")
            raise FFNoEntry(f"no such file: {name}")
        with _content_found(name):
            data = await run_in_threadpool(ff.core.read_bytes, cid)
        return Response(data, media_type="application/octet-stream")
    if request.method == "DELETE":
        if store.is_dir(ns, name):
            raise FFIsDirectory(f"{name} is a directory")
        if not await store.delete(ns, name):
            raise FFNoEntryToDelete(f"no such file: {name}")
        return Response(b"")
    body = await _body(request)
    mode = request.headers.get("ff_mode")
    if mode == "ensureDir":
        return Response(b"")
    async with ff.writing(ns):  # the quota is checked against what the writes before left
        _refuse_below_file(store, ns, segments)
        if store.is_dir(ns, name):
            raise FFIsDirectory(f"{name} is a directory")
        quota = grant.file_quota or ff.config.file_quota
        if quota is not None and store.used(ns) + len(body) >= quota:
            raise FFOverQuota(quota)
        content_type = request.headers.get("content-type")
        with _content_found(name):  # an append reads the inner blocks of the file it appends to
            await store.write(ns, name, body, append=mode == "append", content_type=content_type)
    return Response(b"")


@contextmanager
def _content_found(name: str) -> Iterator[None]:
    """A file whose content is on no node it can reach (a newer version named elsewhere, its
    blocks not here yet) is a 404 ENOENT, as the other facades answer: it was a 500 in the
    Files API's shape, with a traceback logged. Nothing was written."""
    try:
        yield
    except exporter.NotFound:
        raise FFNoEntry(f"{name}: its content is not on this node, and no peer sent it") from None


async def quota(request: Request) -> Response:
    ff: FlowFuse = request.app.state.ctx.flowfuse
    team, project, segments, _ = await _target(request, ff, "quota")
    if segments:
        raise FFUnauthorized()  # no such route upstream
    return JSONResponse({"used": ff.files.used(namespace(team, project))})


def _refuse_below_file(store, ns: str, segments: list[str]) -> None:
    for i in range(1, len(segments)):
        if store.exists(ns, "/".join(segments[:i])):
            raise FFNotDirectory(f"{'/'.join(segments[:i])} is a file, not a directory")


async def _body(request: Request) -> bytes:
    """The body, after the checks upstream makes before reading it: content type, then size."""
    media, _ = parse_header_params(request.headers.get("content-type", ""))
    declared = request.headers.get("content-length")
    has_body = (declared not in (None, "0")) or "transfer-encoding" in request.headers
    if media not in TEXT_TYPES:
        if has_body or media:
            raise FFUnsupportedMedia()
        raise FFBadRequest("a body with Content-Type application/octet-stream or text/plain is required")
    return await read_body(request)
