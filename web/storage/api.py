"""The Storage API (`/api/v1/storage`): a web product's user uploads on the node's store,
per organization, quota-checked, encrypted at rest, with presigned URLs.

Every JSON answer, errors included, is `{"success", "data", "message"}`; downloads are the
plaintext bytes (decrypted while streaming, `Range` honoured).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from itertools import chain
from typing import Any

from edgefiles.ans.accounts import User, iso, token_hash
from edgefiles.node import exporter, sealed
from edgefiles.node.blockstore import CorruptBlock, StorageFull
from edgefiles.node.cid import to_str
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Match, Route

from ..ahead import held_while_sent, streamed
from ..body import declared_length
from ..content import WHOLE_BELOW, content_disposition, etag_matches, listed_header, requested_range
from ..context import AppContext
from ..cors import CORS_HEADERS
from ..errors import (
    ApiError,
    BadRequest,
    CorruptBlockError,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    TokenInvalid,
    UnsupportedMediaType,
)
from ..formfile import FORM_ALLOWANCE, FieldLimit, FormFile, abandon, parse_metadata, receive_form_file
from ..mime import type_to_send
from ..paths import name_in_path, raw_tail
from ..tokens import bearer_token, bearer_user
from . import presign
from .objects import Storage, StoredObject
from .rules import RuleBroken, StorageSettings, category_of, check_upload, page_of, unique_name

log = logging.getLogger("edgefiles.web")

PREFIX = "/api/v1/storage"
ANY = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]
MAX_EXPIRY, DEFAULT_EXPIRY = 604800, 3600
RULE_ERRORS: dict[int, type[ApiError]] = {400: BadRequest, 413: PayloadTooLarge, 415: UnsupportedMediaType}

Endpoint = Callable[[Request], Awaitable[Response]]


def ok(data: Any, message: str = "OK", status: int = 200) -> Response:
    return JSONResponse({"success": True, "data": data, "message": message}, status, headers=CORS_HEADERS)


def failure(exc: ApiError) -> Response:
    headers = {**CORS_HEADERS, **exc.extra_headers(), **exc.headers}
    return JSONResponse({"success": False, "data": None, "message": exc.message}, exc.status, headers=headers)


def wrapped(endpoint: Endpoint) -> Endpoint:
    """Errors as the Storage API answers them (the wrapper, the right status)."""
    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ApiError as exc:
            return failure(exc)
        except RuleBroken as exc:
            return failure(RULE_ERRORS[exc.status](exc.message))
        except (ClientDisconnect, StorageFull):
            raise  # the app's own answers: a client gone is no error of ours, a full store a 507
        except Exception as exc:  # noqa: BLE001  (still an answer in the API's own shape)
            log.exception("unexpected error on %s %s", request.method, request.url.path)
            return failure(ApiError(f"internal error: {type(exc).__name__}"))
    run.__doc__ = endpoint.__doc__
    run.__name__ = endpoint.__name__
    return run


def storage_of(request: Request) -> Storage:
    ctx: AppContext = request.app.state.ctx
    if ctx.storage is None:
        raise NotFound("the Storage API is not served by this node")
    return ctx.storage


def caller(request: Request) -> User:
    user = bearer_user(request)
    if user is None:
        raise TokenInvalid("the Storage API needs `Authorization: Bearer ffpat_...` with a valid token")
    return user


# listings -----------------------------------------------------------------------------------
async def buckets(request: Request) -> Response:
    """The buckets the caller may use."""
    caller(request)
    return ok([{"name": name} for name in storage_of(request).settings.buckets])


async def bucket_objects(request: Request) -> Response:
    """The caller's objects in a bucket, newest first (`prefix`: of the object name)."""
    user, storage = caller(request), storage_of(request)
    bucket = request.path_params["bucket"]
    if bucket not in storage.settings.buckets:
        raise NotFound(f"no bucket named {bucket!r}")
    prefix = request.query_params.get("prefix", "")
    if "/" in prefix or "\\" in prefix or ".." in prefix or "\x00" in prefix:
        raise BadRequest("prefix is the start of an object name in your own folder: no '/', '\\' or '..'")
    mine = [o for o in storage.objects(user) if o.meta.get("bucket") == bucket
            and o.object_name.startswith(prefix)]
    return _paged(request, mine)


async def files(request: Request) -> Response:
    """The caller's files, newest first."""
    user = caller(request)
    return _paged(request, storage_of(request).objects(user))


def _paged(request: Request, objects: list[StoredObject]) -> Response:
    items, pagination = page_of(dict(request.query_params)).of(objects)
    return ok({"items": [o.view() for o in items], "pagination": pagination})


# upload ---------------------------------------------------------------------------------------
async def upload(request: Request) -> Response:
    """Upload a file (multipart `file`, `category`, `metadata`): quota and category checked,
    sealed with the organization's key before it is chunked into blocks."""
    user, storage = caller(request), storage_of(request)
    settings = storage.settings
    room = storage.room(user.org_id)
    limit, too_large = _limit(room, settings.largest_file, "files")
    # the file is at least the body less what else a form may hold: when even that cannot fit,
    # say so before the body is read
    if (declared := declared_length(request)) is not None and declared - FORM_ALLOWANCE > limit:
        raise PayloadTooLarge(too_large)
    seal = await storage.seal_for(user.org_id)
    form = FormFile(limit, too_large, _category_limit(room, settings))
    try:
        imported = await receive_form_file(request, form, seal)
    except UnsupportedMediaType:
        raise BadRequest("an upload is a multipart/form-data body with a part named `file`") from None
    try:
        category = category_of(form.fields.get("category"))
        assert form.filename is not None
        check_upload(category, form.filename, bytes(form.head), form.size, settings)
        metadata = parse_metadata(form.fields.get("metadata")) or {}
        bucket = form.fields.get("bucket") or settings.buckets[0]
        if bucket not in settings.buckets:
            raise BadRequest(f"no bucket named {bucket!r}")
    except BaseException:
        abandon(request.app.state.ctx, imported)
        raise
    fields = {"original_name": form.filename, "category": category, "bucket": bucket, "metadata": metadata}
    stored = await storage.store(user, imported, form, unique_name(form.filename), fields)
    return ok(stored.view(), "File uploaded", 201)


def _limit(room: int, largest: int, kind: str) -> tuple[int, str]:
    """The upload's limit and the 413 that says which one it met: the quota's room or a size."""
    if room < largest:
        return max(room, 0), f"over quota: the organization has room for {max(room, 0)} more bytes"
    return largest, f"{kind} are at most {largest} bytes"


def _category_limit(room: int, settings: StorageSettings) -> FieldLimit:
    def limit(field: str, value: str) -> tuple[int, str] | None:
        largest = settings.max_file.get(value.strip()) if field == "category" else None
        return None if largest is None else _limit(room, largest, f"{value.strip()} files")
    return limit


# one object -----------------------------------------------------------------------------------
SUBROUTES = {"": ("GET", "HEAD", "DELETE"), "metadata": ("GET",), "presigned-url": ("GET",)}


async def object_routes(request: Request) -> Response:
    """An object (GET: its bytes, DELETE), its `metadata`, or a `presigned-url` for it."""
    user, storage = caller(request), storage_of(request)
    tail = raw_tail(request, PREFIX + "/objects/")
    raw_name, _, sub = tail.partition("/")
    if sub not in SUBROUTES:
        raise BadRequest("an object name has no '/'")
    if request.method not in SUBROUTES[sub]:
        raise _not_allowed(SUBROUTES[sub])
    found = storage.find(user, name_in_path(raw_name))
    if sub == "metadata":
        return ok(found.view())
    if sub == "presigned-url":
        return _presigned_url(request, storage, found)
    if request.method == "DELETE":
        if not await storage.delete(found):
            raise NotFound(f"no object named {found.object_name!r}")
        return ok({"object_name": found.object_name, "deleted": True}, "File deleted")
    return await send_object(request, storage, found)


def _not_allowed(methods: tuple[str, ...]) -> MethodNotAllowed:
    error = MethodNotAllowed(f"this route takes {', '.join(methods)}")
    error.headers = {"Allow": ", ".join((*methods, "OPTIONS"))}
    return error


def _presigned_url(request: Request, storage: Storage, found: StoredObject) -> Response:
    text = request.query_params.get("expires_in", str(DEFAULT_EXPIRY))
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_EXPIRY:
        raise BadRequest(f"expires_in is a whole number of seconds from 1 to {MAX_EXPIRY}")
    expires = math.ceil(time.time()) + int(text)  # whole seconds, rounded up: at least the seconds asked for
    asker = storage.accounts.live_token(token_hash(bearer_token(request) or ""))
    if asker is None:  # checked as the route began: revoked or expired since
        raise TokenInvalid("the token asking for a presigned URL was revoked or has expired")
    if asker.expires_at is not None:  # the URL ends with it: its expiry says so
        expires = min(expires, -(-asker.expires_at // 1000))  # rounded up, as `expires` is
    grant = presign.Grant(found.org_id, found.user_id, found.object_name, expires, bytes.fromhex(asker.hash))
    token = presign.sign(storage.presign_secret, grant)
    base = str(request.base_url).rstrip("/")
    return ok({"url": f"{base}{PREFIX}/presigned/{token}", "expires_at": iso(expires * 1000)})


async def presigned(request: Request) -> Response:
    """An object's bytes through a presigned URL (no token): 403 when it expired, was changed,
    the token that asked for it was revoked or has expired, or its user was removed (or moved
    to another organization), 404 when the object is gone."""
    storage = storage_of(request)
    try:
        grant = presign.verify(storage.presign_secret, request.path_params["token"])
    except presign.BadSignature as exc:
        raise Forbidden(f"this presigned URL is not valid: {exc}") from None
    if grant.expires_at <= time.time():
        raise Forbidden(f"this presigned URL expired at {iso(grant.expires_at * 1000)}")
    signer = storage.accounts.user(grant.user_id)
    if signer is None or signer.org_id != grant.org_id:  # the grant lived as long as its user
        raise Forbidden("the user who made this presigned URL has no access any more")
    token = storage.accounts.live_token(grant.signer.hex()) if grant.signer else None
    if grant.signer and (token is None or token.user_id != grant.user_id):
        raise Forbidden("the token that made this presigned URL was revoked or has expired")
    found = storage.get(grant.org_id, grant.user_id, grant.object_name)
    if found is None:
        raise NotFound("the object of this URL is gone")
    return await send_object(request, storage, found)


# downloads ------------------------------------------------------------------------------------
async def send_object(request: Request, storage: Storage, found: StoredObject) -> Response:
    """The plaintext of an object (a range of it), decrypted while it streams; an object that
    fails its checks before the first byte is a 500, after it the connection is cut. Its DAG
    is held against collection until it is sent (an object deleted meanwhile included)."""
    ctx: AppContext = request.app.state.ctx
    answer = _plaintext_answer(request, storage, found)
    return await held_while_sent(ctx.core.store.hold(storage.root(found)), answer)


async def _plaintext_answer(request: Request, storage: Storage, found: StoredObject) -> Response:
    ctx: AppContext = request.app.state.ctx
    node, head = await run_in_threadpool(_open, ctx, storage.root(found))
    with _read_errors():
        key = await storage.keys.key(sealed.key_id_of(head), found.org_id)
        size = sealed.plain_size(node.size)
    if key is None:
        raise ApiError("this node does not hold the organization's key for this object")
    headers = {**CORS_HEADERS, "ETag": f'"{to_str(found.info.cid)}"', "Accept-Ranges": "bytes",
               "Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff",
               "Content-Disposition": content_disposition(found.original_name, "attachment")}
    if etag_matches(listed_header(request, "if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=headers)
    start, end, status = 0, size, 200
    byte_range = requested_range(request, headers["ETag"], size)
    if byte_range is not None:
        (start, end), status = byte_range, 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    headers["Content-Type"] = type_to_send(found.info.content_type, found.original_name)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    if end - start <= WHOLE_BELOW:  # read here, on a worker thread: no streaming thread
        body = await run_in_threadpool(_whole, _plaintext(ctx, node, head, key, size, start, end, None))
        return Response(body, status, headers)
    pieces = _plaintext(ctx, node, head, key, size, start, end, ctx.core.read_pool)
    first = await run_in_threadpool(_first, pieces)
    return StreamingResponse(streamed(chain([first], pieces)), status, headers)


@contextmanager
def _read_errors() -> Iterator[None]:
    """What reading an object's blocks can meet, as the API's errors."""
    try:
        yield
    except (exporter.NotFound, exporter.NotUnixFS):
        raise NotFound("the object's blocks are not on this node and no peer sent them") from None
    except (sealed.Tampered, CorruptBlock) as exc:
        raise CorruptBlockError(f"the stored object is damaged: {exc}") from None


def _open(ctx: AppContext, root: bytes) -> tuple[exporter.Node, bytes]:
    with _read_errors():
        node = ctx.core.reader.resolve(root, [])
        return node, b"".join(ctx.core.reader.read_range(node, 0, min(node.size, sealed.HEADER_BYTES)))


def _plaintext(ctx: AppContext, node: exporter.Node, head: bytes, key: bytes, size: int, start: int,
               end: int, pool: Executor | None) -> Iterator[bytes]:
    _, lo, hi = sealed.cipher_span(start, end, size)
    if pool is None:  # small: read here, every block hashed
        cipher = ctx.core.reader.read_range(node, lo, hi)
    else:
        cipher = ctx.core.read_sealed(node, lo, hi, pool)
    return sealed.decrypt_range(key, head, size, start, end, cipher)


def _first(pieces: Iterator[bytes]) -> bytes:
    with _read_errors():
        return next(pieces, b"")


def _whole(pieces: Iterator[bytes]) -> bytes:
    with _read_errors():
        return b"".join(pieces)


# usage and quota ------------------------------------------------------------------------------
async def usage(request: Request) -> Response:
    """The organization's bytes used (plaintext), file count, quota and percent used."""
    user = caller(request)
    return ok(storage_of(request).usage(user.org_id))


async def quota(request: Request) -> Response:
    """The organization's limits."""
    user, storage = caller(request), storage_of(request)
    return ok({"quota_bytes": storage.quota(user.org_id), "max_file_size": dict(storage.settings.max_file)})


async def recalculate(request: Request) -> Response:
    """Count the organization's usage again from what is stored."""
    user = caller(request)
    return ok(storage_of(request).recount(user.org_id), "Usage recalculated")


async def unknown(request: Request) -> Response:
    """405 for a route that takes other methods, else 404."""
    allowed = sorted({m for route in ROUTES if route.include_in_schema
                      and route.matches(request.scope)[0] is Match.PARTIAL for m in route.methods or ()})
    if allowed:
        raise _not_allowed(tuple(allowed))
    raise NotFound(f"no Storage API route {request.method} {request.url.path}")


async def object_bytes(request: Request) -> Response:
    """Download an object (decrypted while it streams, `Range` honoured), or delete it."""
    return await object_routes(request)


async def object_metadata(request: Request) -> Response:
    """An object's metadata."""
    return await object_routes(request)


async def object_presigned_url(request: Request) -> Response:
    """A URL that reads the object without a token for `expires_in` seconds (1 to 604800)."""
    return await object_routes(request)


ROUTES = [
    Route(f"{PREFIX}/buckets", wrapped(buckets), methods=["GET"]),
    Route(f"{PREFIX}/buckets/{{bucket}}/objects", wrapped(bucket_objects), methods=["GET"]),
    Route(f"{PREFIX}/files", wrapped(files), methods=["GET"]),
    Route(f"{PREFIX}/upload", wrapped(upload), methods=["POST"]),
    Route(f"{PREFIX}/objects/{{object_name}}", wrapped(object_bytes), methods=["GET", "HEAD", "DELETE"]),
    Route(f"{PREFIX}/objects/{{object_name}}/metadata", wrapped(object_metadata), methods=["GET"]),
    Route(f"{PREFIX}/objects/{{object_name}}/presigned-url", wrapped(object_presigned_url), methods=["GET"]),
    Route(f"{PREFIX}/usage", wrapped(usage), methods=["GET"]),
    Route(f"{PREFIX}/quota", wrapped(quota), methods=["GET"]),
    Route(f"{PREFIX}/quota/recalculate", wrapped(recalculate), methods=["POST"]),
    Route(f"{PREFIX}/presigned/{{token}}", wrapped(presigned), methods=["GET", "HEAD"]),
    # what the routes above leave (an encoded '/' in a name, another method): answered here
    Route(f"{PREFIX}/objects/{{tail:anypath}}", wrapped(object_routes), methods=ANY, include_in_schema=False),
    Route(f"{PREFIX}/{{rest:path}}", wrapped(unknown), methods=ANY, include_in_schema=False),
]
