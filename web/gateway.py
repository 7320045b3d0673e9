"""The IPFS trustless gateway (`/ipfs/<cid>[/<path>]`): raw blocks and CARs that a client
verifies itself, so that verified-fetch clients and other IPFS tools can use a node as a
gateway. Like the Files API it needs a token.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from edgefiles.node import cid as cids
from edgefiles.node import exporter
from edgefiles.node.blockstore import CorruptBlock
from edgefiles.node.cid import to_str
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from . import car
from .auth import without_token
from .content import content_disposition, etag_matches, listed_header, q_values, requested_range
from .context import AppContext
from .cors import CORS_HEADERS
from .errors import ApiError, BadRequest, NotFound
from .files_api import refuse_facade_files
from .paths import raw_path, raw_tail, url_segments
from .upload import parse_header_params

PREFIX = "/ipfs/"
RAW_TYPE = "application/vnd.ipld.raw"
CAR_RESPONSE_TYPES = f"{car.CAR_TYPE}; version=1; order=dfs; dups=n (or dups=y)"
IMMUTABLE = "public, max-age=29030400, immutable"  # as the path gateway specification asks
# the answer depends on Accept (raw or CAR); and a shared cache, which `public` lets keep an
# answer to a request with a token, must not give it to a request without that token
VARY = "Accept, Authorization"
SCOPES = ("all", "entity", "block")
# the CAR variants served: (query parameter, values that ask for one, the first the default);
# the specification lets a gateway answer 400 to a variant it does not serve, where sending
# another would be taken for the one asked for (a v1 CAR read as v2)
CAR_VARIANT = (("car-version", ("1",)), ("car-order", ("dfs", "unk")), ("car-dups", ("n", "y")))
EntityBytes = tuple[int, int | None]  # entity-bytes from:to as given (to None: '*')


@dataclass(frozen=True, slots=True)
class CarAsked:
    """The CAR a request asks for: dag-scope, entity-bytes, whether with duplicates."""
    scope: str
    byte_range: EntityBytes | None
    dups: bool

    @property
    def content_type(self) -> str:
        return f"{car.CAR_TYPE}; version=1; order=dfs; dups={'y' if self.dups else 'n'}"


class NotCached(ApiError):
    status, code, default_message = 412, "ERR_NOT_CACHED", "the block is not stored on this node"


async def ipfs(request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    ctx.tokens.require(request)
    segments = url_segments(raw_tail(request, PREFIX).rstrip("/"))
    if not segments:
        raise BadRequest("a CID is needed after /ipfs/")
    try:
        root = cids.parse(segments[0])
    except cids.InvalidCid:
        raise BadRequest(f"{segments[0]!r} is not a valid CID") from None
    if cids.servable_length(root) != len(root):  # the specification's 400 for an unsupported codec
        raise BadRequest(f"{segments[0]!r}: this node verifies and serves CIDv0, and CIDv1 with a "
                         "one-byte codec hashed with sha2-256 or identity")
    wanted = response_format(request)
    await refuse_facade_files(ctx, root)
    headers = {**CORS_HEADERS, "X-Content-Type-Options": "nosniff", "Cache-Control": IMMUTABLE, "Vary": VARY}
    if "format" not in request.query_params:  # chosen by Accept: where the same answer is by URL alone
        headers["Content-Location"] = _with_format(request, wanted)
    elif _format_by_accept(request) not in (None, wanted):  # the specification's SHOULD: a cache keyed
        headers["Content-Location"] = _with_format(request)  # on Accept learns what this URL holds
    cached_only = "only-if-cached" in request.headers.get("cache-control", "")
    if wanted == "raw":
        if len(segments) > 1:
            raise BadRequest("a raw block is asked for by CID alone: /ipfs/<cid>?format=raw")
        return await _raw(ctx, request, root, cached_only, headers)
    return await _car(ctx, request, root, segments[1:], _car_options(request), cached_only, headers)


def _with_format(request: Request, wanted: str | None = None) -> str:
    """This request's path and query, as sent, with `format=wanted` added (if given) and any
    `access_token` left out: a credential in a header of an answer caches may keep for a year."""
    query = without_token(request.scope.get("query_string", b"").decode("latin-1"))
    if wanted is not None:
        query = f"{query + '&' if query else ''}format={wanted}"
    return f"{raw_path(request)}?{query}"


def response_format(request: Request) -> str:
    """"raw" or "car", from `format` (which wins) or `Accept`; 400 for anything else, as a
    gateway that never deserializes answers."""
    given = request.query_params.get("format")
    if given in ("raw", "car"):
        return given
    if given is not None:
        raise BadRequest(f"format={given!r}: this trustless gateway serves format=raw and format=car")
    if (by_accept := _format_by_accept(request)) is not None:
        return by_accept
    raise BadRequest("this trustless gateway serves blocks and CARs: ask with format=raw or format=car "
                     f"(or Accept: {RAW_TYPE} / {car.CAR_TYPE})")


def _format_by_accept(request: Request) -> str | None:
    """"raw" or "car", the heavier in `Accept` (a tie goes to the block); None for neither."""
    weights = q_values(request.headers.get("accept", ""))
    raw, car_weight = weights.get(RAW_TYPE, 0.0), weights.get(car.CAR_TYPE, 0.0)
    if raw > 0 or car_weight > 0:
        return "raw" if raw >= car_weight else "car"
    return None


async def _raw(ctx: AppContext, request: Request, root: bytes, cached_only: bool,
               headers: dict[str, str]) -> Response:
    data = await run_in_threadpool(_block, ctx, root, cached_only)  # an identity CID's is in it
    headers = {**headers, "Content-Type": RAW_TYPE, "Etag": f'"{to_str(root)}.raw"', "Accept-Ranges": "bytes",
               "Content-Disposition": _attachment(request, f"{to_str(root)}.bin"),
               **_ipfs_path(request, [root])}
    if etag_matches(listed_header(request, "if-none-match"), headers["Etag"]):
        return Response(status_code=304, headers=headers)
    status, (start, end) = 200, (0, len(data))
    if (byte_range := requested_range(request, headers["Etag"], len(data))) is not None:
        status, (start, end) = 206, byte_range
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
    body = b"" if request.method == "HEAD" else data[start:end]
    return Response(body, status, headers={**headers, "Content-Length": str(end - start)})


def _attachment(request: Request, default: str) -> str:
    """Content-Disposition of a block or a CAR: the `filename` the URL gives, else `default`."""
    return content_disposition(request.query_params.get("filename") or default, "attachment")


def _block(ctx: AppContext, cid: bytes, cached_only: bool) -> bytes:
    """Worker thread: a verified block, from this node or (unless `cached_only`) its swarm."""
    try:
        data = ctx.core.store.get(cid)
        if data is None:
            if cached_only:
                raise NotCached()
            data = ctx.core.get_block(cid)
    except exporter.NotFound:
        raise NotFound(car.NOWHERE) from None
    except CorruptBlock:
        raise NotFound(car.DAMAGED) from None
    return data


# the specification's grammar, and none of what int() takes besides ('+1', ' 1', '1_000', '１')
ENTITY_BYTES = re.compile(r"(-?[0-9]{1,19}):(-?[0-9]{1,19}|\*)", re.ASCII)  # 19 digits: any 64-bit offset


def _car_options(request: Request) -> CarAsked:
    """dag-scope, entity-bytes and whether duplicates are sent (dups=y)."""
    for parameter, served in CAR_VARIANT:
        given = request.query_params.get(parameter)
        if given is not None and given not in served:
            raise BadRequest(f"{parameter}={given!r}: this gateway sends {CAR_RESPONSE_TYPES}")
    asked = _accepted_cars(request.headers.get("accept", ""))
    served_asks = [params for params in asked if _variant_served(params)]
    # chosen by Accept, a variant we do not send is refused as by URL; where the URL's format
    # chose, Accept's CAR parameters still count when they name one we send
    if asked and not served_asks and "format" not in request.query_params:
        raise BadRequest(f"Accept asks for CAR variants this gateway does not send ({CAR_RESPONSE_TYPES})")
    by_accept = served_asks[0].get("dups", "n") if served_asks else "n"
    dups = request.query_params.get("car-dups", by_accept) == "y"  # the URL's wins (the spec's SHOULD)
    scope = request.query_params.get("dag-scope", "all")
    if scope not in SCOPES:
        raise BadRequest(f"dag-scope={scope!r}: one of {', '.join(SCOPES)}")
    raw = request.query_params.get("entity-bytes")
    if raw is None:
        return CarAsked(scope, None, dups)
    match = ENTITY_BYTES.fullmatch(raw)
    if match is None:
        raise BadRequest(f"entity-bytes={raw!r}: from:to, integers (negative: from the end), '*' for the end")
    first, last = match.groups()
    return CarAsked("entity", (int(first), None if last == "*" else int(last)), dups)  # resolved once sized


def _accepted_cars(accept: str) -> list[dict[str, str]]:
    """The parameters (q left out) of each CAR media range Accept takes (q above 0), the
    heaviest first (in their order where they weigh the same)."""
    found = []
    for item in accept.split(","):
        kind, params = parse_header_params(item)
        weight = q_values(item).get(car.CAR_TYPE, 0.0)
        if kind == car.CAR_TYPE and weight > 0:
            found.append((-weight, len(found), {k: v for k, v in params.items() if k != "q"}))
    return [params for _, _, params in sorted(found, key=lambda item: item[:2])]


def _variant_served(params: dict[str, str]) -> bool:
    """Whether Accept's `version`, `order` and `dups` (each optional) name the CAR we send."""
    return all(params.get(name.removeprefix("car-"), served[0]) in served for name, served in CAR_VARIANT)


async def _car(ctx: AppContext, request: Request, root: bytes, path: list[str], asked: CarAsked,
               cached_only: bool, headers: dict[str, str]) -> Response:
    scope, byte_range = asked.scope, asked.byte_range
    headers = {**headers, "Content-Type": asked.content_type, "Etag": car_etag(root, path, asked),
               "Content-Disposition": _attachment(request, f"{to_str(root)}.car"),
               "Accept-Ranges": "none"}  # streamed as it is read: no offset into it to resume from
    if cached_only and not (cids.is_identity(root) or ctx.core.store.has(root)):
        raise NotCached()
    try:
        steps, terminal = await run_in_threadpool(ctx.core.reader.path_blocks, root, path)
    except (exporter.NotFound, exporter.NotUnixFS):
        raise NotFound("no such path in this DAG (or a block on the way is nowhere to be found)") from None
    headers.update(_ipfs_path(request, await run_in_threadpool(_logical_roots, ctx.core.reader, root, path)))
    unchanged = etag_matches(listed_header(request, "if-none-match"), headers["Etag"])
    no_body = request.method == "HEAD" or unchanged
    if no_body:
        await run_in_threadpool(_block, ctx, terminal, cached_only)  # 404 when it is nowhere
    span = await run_in_threadpool(_file_span, ctx, terminal, byte_range)  # 400 when out of the file
    if no_body:
        head = Response(status_code=304 if unchanged else 200, headers=headers)
        size = None if unchanged else await car.length(ctx.core, [root], steps, terminal, scope, span,
                                                       asked.dups)
        if size is None:  # not 0: unknown until the DAG is here whole, or no body at all (304)
            del head.headers["content-length"]
        else:
            head.headers["content-length"] = str(size)
        return head
    return await car.stream(ctx.core, [root], steps, terminal, headers, scope, span, asked.dups)


def _ipfs_path(request: Request, roots: list[bytes] | None) -> dict[str, str]:
    """X-Ipfs-Path (the content path asked for, as sent) and X-Ipfs-Roots (the CID of each of
    its steps, when known), as IPFS gateways tell them."""
    told = {"X-Ipfs-Path": raw_path(request)}
    return told if roots is None else {**told, "X-Ipfs-Roots": ",".join(map(to_str, roots))}


def _logical_roots(reader: exporter.DagReader, root: bytes, path: list[str]) -> list[bytes] | None:
    """Worker thread: the CID of the root and of what each segment of `path` names below it
    (a sharded directory's inner shards are none of them); None for a path through other
    than UnixFS directories (DAG-CBOR), whose steps the header leaves out (the spec's MAY)."""
    roots = [root]
    try:
        node = reader.load(root) if path else None
        for segment in path:
            node = reader.child(node, segment) if node is not None and node.is_dir else None
            if node is None:
                return None
            roots.append(node.cid)
    except (exporter.NotFound, exporter.NotUnixFS):
        return None
    return roots


def car_etag(root: bytes, path: list[str], asked: CarAsked) -> str:
    """The Etag of a CAR answer: the CID, the scope, and a digest of the path, entity-bytes and
    whether duplicates are sent (a path may hold any character; a header only Latin-1, and no
    bare quote)."""
    shape = json.dumps([path, asked.byte_range] + (["dups"] if asked.dups else [])).encode()
    return f'"{to_str(root)}.car.{asked.scope}.{hashlib.sha256(shape).hexdigest()[:16]}"'


def _file_span(ctx: AppContext, cid: bytes, byte_range: EntityBytes | None) -> tuple[int, int] | None:
    """Worker thread: entity-bytes as [start, end) of the file at `cid` (negative = from its
    end, inclusive `to` as the specification has it); None when no range applies."""
    if byte_range is None:
        return None
    try:
        node = ctx.core.reader.load(cid)
    except (exporter.NotFound, exporter.NotUnixFS):
        return None
    if node.is_dir:
        return None
    first, last = byte_range
    start = first if first >= 0 else max(0, node.size + first)
    end = node.size if last is None else (last + 1 if last >= 0 else node.size + last + 1)
    if start >= node.size or end <= start:
        if first >= max(node.size, 1):  # of an empty file, 0:* is the whole of it: its root block
            raise BadRequest(f"entity-bytes starts past the end of a {node.size}-byte file")
        return (0, 0)  # nothing in range: the root block alone
    return start, min(end, node.size)
