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
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .content import Target
from .context import AppContext
from .cors import CORS_HEADERS
from .errors import ApiError
from .mime import DEFAULT, media_type
from .paths import raw_path
from .upload import parse_header_params

MAX_METADATA = 64 << 10
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
async def read_upload(request: Request, limit: int) -> tuple[str, bytes, str, dict[str, Any] | None]:
    """(file name, bytes, content type, metadata or None) of a multipart upload, read as it
    arrives: the file part up to `limit` bytes, other fields up to 64 KiB."""
    ctype, params = parse_header_params(request.headers.get("content-type", ""))
    if ctype != "multipart/form-data" or not params.get("boundary"):
        raise FsBadRequest("send the file as multipart/form-data with a part named `file`")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + 2 * MAX_METADATA:
        raise FsTooLarge(f"files are at most {limit} bytes here")
    parts = _Parts(limit)
    parser = MultipartParser(params["boundary"], parts.callbacks(), max_header_count=16)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise FsBadRequest(f"malformed multipart body: {exc}") from None
    if not parts.ended:
        raise FsBadRequest("truncated multipart body: the closing boundary never came")
    if "file" not in parts.files:
        raise FsBadRequest("the upload has no part named `file` holding a file")
    filename, part_type, data = parts.files["file"]
    name = check_name(filename)
    return name, data, _content_type(part_type, name), _metadata(parts.fields.get("metadata"))


class _Parts:
    """python-multipart callbacks → the form's files (name → (filename, type, bytes)) and
    fields (name → text), each capped as it grows."""

    def __init__(self, file_limit: int) -> None:
        self.file_limit = file_limit
        self.files: dict[str, tuple[str, str, bytes]] = {}
        self.fields: dict[str, str] = {}
        self.ended = False
        self._headers: dict[str, str] = {}
        self._header = (bytearray(), bytearray())
        self._data: list[bytes] = []
        self._size = 0
        self._params: dict[str, str] = {}

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: self._header[0].extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header[1].extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        self._headers, self._data, self._size, self._params = {}, [], 0, {}

    def _header_end(self) -> None:
        field, value = self._header
        self._headers[field.decode("latin-1").lower()] = value.decode("utf-8", "replace")
        field.clear()
        value.clear()

    def _headers_finished(self) -> None:
        self._params = parse_header_params(self._headers.get("content-disposition", ""))[1]

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        is_file = "filename" in self._params
        if self._size > (self.file_limit if is_file else MAX_METADATA):
            raise (FsTooLarge(f"files are at most {self.file_limit} bytes here") if is_file else
                   FsBadRequest("a form field is at most 64 KiB"))
        self._data.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        name, data = self._params.get("name", ""), b"".join(self._data)
        if "filename" in self._params:
            self.files[name] = (self._params["filename"], self._headers.get("content-type", ""), data)
        else:
            self.fields[name] = data.decode("utf-8", "replace")

    def _end(self) -> None:
        self.ended = True


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
    name, data, content_type, metadata = await read_upload(request, ctx.filestore_max_file)
    try:
        info = await files.write(ns, name, data, content_type=content_type, metadata=metadata or {},
                                 exists=False)
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
    _, data, content_type, metadata = await read_upload(request, ctx.filestore_max_file)  # the path names it
    try:
        written = await files.write(ns, name, data, content_type=content_type,
                                    metadata=info.metadata if metadata is None else metadata, exists=True)
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
