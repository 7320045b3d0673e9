"""The Mainflux Filestore facade: files of things (`Authorization: Thing <key>`) and of groups
(`Authorization: Bearer <user token>`, or a member thing's key to read), each scope a
namespace of the named-files layer, so files replicate and dedupe like everything else.

Routes: `/filestore/files[/<name>]`, `/filestore/groupfiles/<name>` and
`/filestore/groups/<group_id>/files[/<name>]`. Errors are `{"error": <plain words>}`.
"""

from __future__ import annotations

import json
from typing import Any

from edgefiles.ans.accounts import Thing, User
from edgefiles.ans.files import FileInfo
from edgefiles.node.cid import to_str
from edgefiles.node.core import Imported
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .content import Target
from .context import AppContext
from .cors import CORS_HEADERS
from .errors import ApiError, BadRequest, PayloadTooLarge, UnsupportedMediaType
from .mime import DEFAULT, media_type
from .paths import raw_path
from .upload import PartCollector, import_upload, parse_form, parse_header_params

MAX_METADATA = 64 << 10
WHOLE_BODY = 1 << 20  # smaller upload bodies are read whole and imported in one piece
MAX_NAME_BYTES = 255
DEFAULT_LIMIT, MAX_LIMIT = 10, 200


class FilestoreError(ApiError):
    def response(self) -> Response:
        return JSONResponse({"error": self.message}, self.status, headers={**CORS_HEADERS, **self.headers})


class FsBadRequest(FilestoreError):
    status, default_message = 400, "bad request"


class FsUnauthorized(FilestoreError):
    status, default_message = 401, "missing or unknown credentials"


class FsForbidden(FilestoreError):
    status, default_message = 403, "not allowed"


class FsNotFound(FilestoreError):
    status, default_message = 404, "no such file"


class FsConflict(FilestoreError):
    status = 409


class FsTooLarge(FilestoreError):
    status = 413


# who asks ---------------------------------------------------------------------------------
def _credentials(request: Request) -> tuple[str, str]:
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    return scheme.lower(), secret.strip()


def thing_of(request: Request) -> Thing:
    """The thing whose key the request carries; 401 for anything else (a Bearer token too)."""
    ctx: AppContext = request.app.state.ctx
    scheme, secret = _credentials(request)
    thing = ctx.accounts.thing_with_key(secret) if scheme == "thing" else None
    if thing is None:
        raise FsUnauthorized("a thing route needs `Authorization: Thing <key>` with a known key")
    return thing


def group_access(request: Request, group_id: str, write: bool) -> None:
    """A user member of the group (viewers read only), or a member thing reading; else 401
    (no or unknown credentials), 404 (no such group) or 403."""
    ctx: AppContext = request.app.state.ctx
    scheme, secret = _credentials(request)
    caller: User | Thing | None = None
    if scheme == "bearer":
        caller = ctx.accounts.authenticate(secret)
    elif scheme == "thing":
        caller = ctx.accounts.thing_with_key(secret)
    if caller is None:
        raise FsUnauthorized()
    if ctx.accounts.group(group_id) is None:
        raise FsNotFound("no such group")
    kind = "thing" if isinstance(caller, Thing) else "user"
    role = ctx.accounts.role(group_id, kind, caller.id)
    if role is None:
        raise FsForbidden("not a member of this group")
    if write and (kind == "thing" or role != "member"):
        raise FsForbidden("this member may read the group's files, not write them")


# names --------------------------------------------------------------------------------------
def check_name(name: str) -> str:
    """A file name as the Filestore keeps it: one path segment, nothing that could climb."""
    if not name or len(name.encode()) > MAX_NAME_BYTES:
        raise FsBadRequest(f"a file name is 1 to {MAX_NAME_BYTES} bytes")
    if "/" in name or "\\" in name or ".." in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise FsBadRequest("a file name has no '/', '\\', '..' or control characters")
    return name


def name_in_path(request: Request, prefix: str) -> str:
    """The file name after `prefix` in the raw path, percent-decoded once and checked."""
    from urllib.parse import unquote

    tail = raw_path(request)[len(prefix):]
    if "/" in tail:
        raise FsBadRequest("a file name has no '/'")
    try:
        return check_name(unquote(tail, errors="strict"))
    except UnicodeDecodeError:
        raise FsBadRequest("a file name is UTF-8") from None


def thing_ns(thing_id: str) -> str:
    return f"filestore/thing/{thing_id}"


def group_ns(group_id: str) -> str:
    return f"filestore/group/{group_id}"


# the parts of an upload -----------------------------------------------------------------------
class FileParts(PartCollector):
    """The Filestore's form: one part named `file` (a file, streamed into the import, at most
    `limit` bytes) and small fields (`metadata`), kept as text."""

    def __init__(self, limit: int, buffer: bool = False) -> None:
        super().__init__()
        self.limit = limit
        self.buffer = buffer  # keep the file's bytes here rather than stream them to an import
        self.data: list[bytes] = []
        self.filename: str | None = None
        self.content_type = ""
        self.size = 0
        self.fields: dict[str, str] = {}
        self._in_file = False
        self._field_name: str | None = None
        self._field_data = bytearray()

    def _headers_finished(self) -> None:
        _, params = parse_header_params(self._headers.get("content-disposition", ""))
        self._in_file = params.get("name") == "file" and "filename" in params
        if self._in_file:
            if self.filename is not None:
                raise FsBadRequest("the upload holds one part named `file`")
            self.filename = check_name(params["filename"])
            self.content_type = self._headers.get("content-type", "")
            if not self.buffer:
                self.events.append(("begin", [self.filename]))
        else:
            self._field_name = params.get("name", "")
            self._field_data.clear()

    def _data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            self._field_data.extend(data[start:end])
            if len(self._field_data) > MAX_METADATA:
                raise FsBadRequest("a form field is at most 64 KiB")
            return
        self.size += end - start
        if self.size > self.limit:
            raise FsTooLarge(f"files are at most {self.limit} bytes here")
        if self.buffer:
            self.data.append(bytes(data[start:end]))
        else:
            super()._data(data, start, end)

    def _part_end(self) -> None:
        if self._in_file:
            if not self.buffer:
                super()._part_end()
        elif self._field_name is not None:
            self.fields[self._field_name] = self._field_data.decode("utf-8", "replace")


async def receive_file(request: Request) -> tuple[Imported, str, str, dict[str, Any] | None]:
    """A Filestore upload, imported but not committed: (the import, the file name, its content
    type, its metadata or None). Bodies of up to 1 MiB are read whole and imported in one
    piece, as the FlowFuse facade does (a third faster for small files); bigger ones stream
    into the import as they arrive. Nothing is kept on any error."""
    ctx: AppContext = request.app.state.ctx
    declared = request.headers.get("content-length", "")
    small = declared.isdigit() and int(declared) <= WHOLE_BODY
    parts = FileParts(ctx.filestore_max_file, buffer=small)
    try:
        if small:
            await parse_form(request, parts)
            batch = None
        else:
            sink, root = await import_upload(request, parts, ctx.core, ctx.executor, ctx.hash_pool,
                                             ctx.filestore_max_file + 4 * MAX_METADATA)
            batch = sink.batch
    except (BadRequest, UnsupportedMediaType) as exc:
        raise FsBadRequest(exc.message) from None
    except PayloadTooLarge:
        raise FsTooLarge(f"files are at most {ctx.filestore_max_file} bytes here") from None
    try:
        if parts.filename is None:
            raise FsBadRequest("the upload has no part named `file` holding a file")
        metadata = _metadata(parts.fields.get("metadata"))
    except FilestoreError:
        if batch is not None:
            ctx.core.store.abandon(batch)
        raise
    content_type = _content_type(parts.content_type, parts.filename)
    if batch is None:
        imported = await ctx.core.import_bytes(b"".join(parts.data))
    else:
        imported = Imported(batch, root, parts.size)
    return imported, parts.filename, content_type, metadata


def _metadata(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw.encode()) > MAX_METADATA:
        raise FsBadRequest("metadata is a JSON object of at most 64 KiB")
    try:
        value = json.loads(raw)
    except ValueError:
        raise FsBadRequest("metadata is not JSON") from None
    if not isinstance(value, dict):
        raise FsBadRequest("metadata is a JSON object")
    return value


def _content_type(given: str, name: str) -> str:
    given = given.strip()
    if not given or given.split(";")[0].strip().lower() == DEFAULT:
        return media_type(name).split(";")[0]
    return given


# answers --------------------------------------------------------------------------------------
def file_object(info: FileInfo, owner: tuple[str, str]) -> dict[str, Any]:
    from edgefiles.ans.accounts import iso

    return {"name": info.name, "content_type": info.content_type or DEFAULT, "size": info.size,
            owner[0]: owner[1], "cid": to_str(info.cid), "metadata": info.metadata,
            "created_at": iso(info.created), "updated_at": iso(info.modified)}


def _paging(request: Request) -> tuple[int, int]:
    try:
        offset = int(request.query_params.get("offset", "0"))
        limit = int(request.query_params.get("limit", str(DEFAULT_LIMIT)))
    except ValueError:
        raise FsBadRequest("offset and limit are whole numbers") from None
    if offset < 0 or not 0 < limit <= MAX_LIMIT:
        raise FsBadRequest(f"offset >= 0 and limit from 1 to {MAX_LIMIT}")
    return offset, limit


async def _collection(request: Request, ns: str, owner: tuple[str, str]) -> Response:
    """GET (list) or POST (upload) on a scope's files."""
    ctx: AppContext = request.app.state.ctx
    files = ctx.named_files
    if request.method == "GET":
        offset, limit = _paging(request)
        everything = sorted(files.list(ns), key=lambda f: f.name.encode())
        page = [file_object(f, owner) for f in everything[offset:offset + limit]]
        return JSONResponse({"total": len(everything), "offset": offset, "limit": limit, "files": page},
                            headers=CORS_HEADERS)
    imported, name, content_type, metadata = await receive_file(request)
    try:
        info = await files.write_imported(ns, name, imported, content_type, metadata or {}, exists=False)
    except FileExistsError:
        raise FsConflict(f"a file named {name!r} exists already; PUT replaces it") from None
    return JSONResponse(file_object(info, owner), 201, headers=CORS_HEADERS)


async def _one(request: Request, ns: str, name: str, owner: tuple[str, str]) -> Response:
    """GET, PUT or DELETE of one file of a scope."""
    ctx: AppContext = request.app.state.ctx
    files = ctx.named_files
    info = files.info(ns, name)
    if info is None:
        raise FsNotFound(f"no file named {name!r}")
    if request.method in ("GET", "HEAD"):
        root = files.resolve(ns, name) or info.cid
        return await ctx.content.serve(request, Target(root, [], False, True, content_type=info.content_type))
    if request.method == "DELETE":
        await files.delete(ns, name)
        return Response(status_code=204, headers=CORS_HEADERS)
    imported, _, content_type, metadata = await receive_file(request)  # the path names the file
    try:
        written = await files.write_imported(ns, name, imported, content_type, metadata, exists=True)
    except FileNotFoundError:
        raise FsNotFound(f"no file named {name!r}") from None
    return JSONResponse(file_object(written, owner), headers=CORS_HEADERS)


# routes -----------------------------------------------------------------------------------------
async def thing_files(request: Request) -> Response:
    thing = thing_of(request)
    return await _collection(request, thing_ns(thing.id), ("thing_id", thing.id))


async def thing_file(request: Request) -> Response:
    thing = thing_of(request)
    name = name_in_path(request, "/filestore/files/")
    return await _one(request, thing_ns(thing.id), name, ("thing_id", thing.id))


async def group_files(request: Request) -> Response:
    group_id = request.path_params["group_id"]
    group_access(request, group_id, write=request.method == "POST")
    return await _collection(request, group_ns(group_id), ("group_id", group_id))


async def group_file(request: Request) -> Response:
    group_id = request.path_params["group_id"]
    group_access(request, group_id, write=request.method not in ("GET", "HEAD"))
    name = name_in_path(request, f"/filestore/groups/{group_id}/files/")
    return await _one(request, group_ns(group_id), name, ("group_id", group_id))


async def groupfile(request: Request) -> Response:
    """A file of one of the thing's groups, found by name alone."""
    ctx: AppContext = request.app.state.ctx
    thing = thing_of(request)
    name = name_in_path(request, "/filestore/groupfiles/")
    holders = [g for g in ctx.accounts.groups_of("thing", thing.id)
               if ctx.named_files.info(group_ns(g.id), name) is not None]
    if not holders:
        raise FsNotFound(f"no group of this thing has a file named {name!r}")
    if len(holders) > 1:
        ids = ", ".join(g.id for g in holders)
        raise FsConflict(f"several groups hold {name!r} ({ids}): "
                         f"ask /filestore/groups/<group_id>/files/{name}")
    return await _one(request, group_ns(holders[0].id), name, ("group_id", holders[0].id))


ROUTES = [
    ("/filestore/files", thing_files, ["GET", "POST"]),
    ("/filestore/files/{name:path}", thing_file, ["GET", "HEAD", "PUT", "DELETE"]),
    ("/filestore/groupfiles/{name:path}", groupfile, ["GET", "HEAD"]),
    ("/filestore/groups/{group_id}/files", group_files, ["GET", "POST"]),
    ("/filestore/groups/{group_id}/files/{name:path}", group_file, ["GET", "HEAD", "PUT", "DELETE"]),
]
