"""The Mainflux Filestore facade: files of things (`Authorization: Thing <key>`) and of groups
(`Authorization: Bearer <user token>`, or a member thing's key to read), each scope a
namespace of the named-files layer, so files replicate and dedupe like everything else.

Routes: `/filestore/files[/<name>]`, `/filestore/groupfiles/<name>` and
`/filestore/groups/<group_id>/files[/<name>]`. Errors are `{"error": <plain words>}`.
"""

from __future__ import annotations

from typing import Any

from edgefiles.ans.accounts import Thing, User
from edgefiles.ans.files import FileInfo
from edgefiles.node.cid import to_str
from edgefiles.node.core import Imported
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import paths
from .content import Target
from .context import AppContext
from .cors import CORS_HEADERS
from .errors import ApiError, BadRequest, PayloadTooLarge, UnsupportedMediaType
from .formfile import FormFile, abandon, parse_metadata, receive_form_file
from .mime import DEFAULT, type_to_send
from .paths import raw_tail

DEFAULT_LIMIT, MAX_LIMIT = 10, 200


class FilestoreError(ApiError):
    def response(self) -> Response:
        return JSONResponse({"error": self.message}, self.status, headers={**CORS_HEADERS, **self.headers})


class FsBadRequest(FilestoreError):
    status, default_message = 400, "bad request"


class FsUnauthorized(FilestoreError):
    """A 401 names the schemes a route takes (RFC 9110 requires the header)."""

    status, default_message = 401, "missing or unknown credentials"

    def __init__(self, message: str | None = None, schemes: str = "Bearer, Thing"):
        super().__init__(message, {"WWW-Authenticate": schemes})


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
        raise FsUnauthorized("a thing route needs `Authorization: Thing <key>` with a known key", "Thing")
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
def name_in_path(request: Request, prefix: str) -> str:
    """The file name after `prefix` in the raw path, percent-decoded once and checked."""
    try:
        return paths.name_in_path(raw_tail(request, prefix))
    except BadRequest as exc:
        raise FsBadRequest(exc.message) from None


def thing_ns(thing_id: str) -> str:
    return f"filestore/thing/{thing_id}"


def group_ns(group_id: str) -> str:
    return f"filestore/group/{group_id}"


# the parts of an upload -----------------------------------------------------------------------
async def receive_file(request: Request) -> tuple[Imported, str, str, dict[str, Any] | None]:
    """A Filestore upload, imported but not committed: (the import, the file name, its content
    type, its metadata or None). Nothing is kept on any error."""
    ctx: AppContext = request.app.state.ctx
    try:
        form = FormFile(ctx.filestore_max_file)
        imported = await receive_form_file(request, form)
    except (BadRequest, UnsupportedMediaType) as exc:
        raise FsBadRequest(exc.message) from None
    except PayloadTooLarge:
        raise FsTooLarge(f"files are at most {ctx.filestore_max_file} bytes here") from None
    try:
        metadata = parse_metadata(form.fields.get("metadata"))
    except BadRequest as exc:
        abandon(ctx, imported)
        raise FsBadRequest(exc.message) from None
    assert form.filename is not None
    return imported, form.filename, form.content_type_or_guess, metadata


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
    """GET or HEAD (list) or POST (upload) on a scope's files."""
    ctx: AppContext = request.app.state.ctx
    files = ctx.named_files
    if request.method in ("GET", "HEAD"):
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
        ctype = type_to_send(info.content_type, name)  # the file's name: the answer's path has none
        return await ctx.content.serve(request, Target(root, [], False, True, content_type=ctype))
    if request.method == "DELETE":
        if not await files.delete(ns, name):  # another DELETE came first
            raise FsNotFound(f"no file named {name!r}")
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
    group_access(request, group_id, write=request.method not in ("GET", "HEAD"))
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
    ("/filestore/files/{name:anypath}", thing_file, ["GET", "HEAD", "PUT", "DELETE"]),
    ("/filestore/groupfiles/{name:anypath}", groupfile, ["GET", "HEAD"]),
    ("/filestore/groups/{group_id}/files", group_files, ["GET", "POST"]),
    ("/filestore/groups/{group_id}/files/{name:anypath}", group_file, ["GET", "HEAD", "PUT", "DELETE"]),
]
