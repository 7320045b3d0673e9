"""Serving UnixFS content over HTTP: files with Range/ETag, directories as JSON or HTML."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from functools import partial
from urllib.parse import quote, urlsplit

from edgefiles.node import exporter
from edgefiles.node.blockstore import CorruptBlock
from edgefiles.node.cid import to_str
from edgefiles.node.core import Core
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from . import redirects
from .ahead import (
    RUN_BYTES,
    Chunk,
    CutShort,
    CutShortResponse,
    RunsAhead,
    batches,
    first_then_runs,
    held_while_sent,
)
from .auth import without_token
from .cors import CORS_HEADERS
from .errors import (
    ApiError,
    CorruptBlockError,
    NoSuchPath,
    NotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    RedirectsInvalid,
)
from .listing import render_listing
from .mime import type_to_send
from .paths import raw_path, url_segments

log = logging.getLogger("edgefiles.web")
FILE_READ_ERRORS = (CorruptBlock, exporter.NotFound, exporter.NotUnixFS, exporter.WrongSize)

IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "no-cache"
WHOLE_BELOW = 256 << 10  # answers this small are read whole and sent in one piece; larger ones `streamed`
SITES_RULES_KEPT = 64  # sites whose parsed _redirects are kept


@dataclass(frozen=True)
class Target:
    root: bytes
    segments: list[str]
    trailing_slash: bool
    by_name: bool
    host_route: bool = False
    content_type: str | None = None  # the type stored with a facade's file, when it has one
    rule_status: int | None = None  # served for a rule of the site's _redirects, with this status


def q_values(accept: str) -> dict[str, float]:
    """Each media type of an Accept header with its weight (1 when none is given; 0 for one
    that is no number from 0 to 1)."""
    out: dict[str, float] = {}
    for item in accept.split(","):
        kind, *params = [p.strip() for p in item.split(";")]
        q = 1.0
        for p in params:
            key, _, value = p.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                q = q if 0.0 <= q <= 1.0 else 0.0  # nan, too
        if kind:
            out[kind.lower()] = q
    return out


def wants_html(accept: str | None) -> bool:
    if not accept:
        return False
    q = q_values(accept)
    html = q.get("text/html", 0.0)
    json_q = q.get("application/json", q.get("application/*", q.get("*/*", 0.0)))
    return html > 0 and html >= json_q


COALESCE_GAP = 100  # bytes: about what a multipart/byteranges part costs in headers


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of what a `bytes=` range asks for; None when absent or invalid (ignored:
    the whole is sent). RFC 9110 14.1: the unit is case-insensitive, empty list elements do not
    count, positions are ASCII digits (`isdigit` takes "²" too); 14.1.1: a set none of whose
    ranges can be met is a 416, one range or several. Of several, those that cannot be met are
    dropped (as Kubo's gateway does) and those that overlap or lie closer than a multipart
    part's own headers are joined (15.3.7.3); ranges still apart get the whole (we send no
    multipart/byteranges)."""
    unit, sep, listed = (header or "").partition("=")
    specs = [spec.strip() for spec in listed.split(",") if spec.strip()]
    if not sep or unit.lower() != "bytes" or not specs:  # `bytes =`: no space before "=" (14.1.2)
        return None
    met = []
    for spec in specs:
        try:
            span = _byte_range(spec, size)
        except RangeNotSatisfiable:
            continue
        if span is None:
            return None
        met.append(span)
    if not met:
        raise RangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    joined = _joined(met)
    return joined[0] if len(joined) == 1 else None


def _joined(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """`spans` in order, those overlapping or closer than COALESCE_GAP made one."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start - out[-1][1] < COALESCE_GAP:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _byte_range(spec: str, size: int) -> tuple[int, int] | None:
    """[start, end) of one range-spec, None when it is invalid; RangeNotSatisfiable."""
    first, sep, last = spec.partition("-")
    if not sep or not all(part == "" or part.isascii() and part.isdigit() for part in (first, last)):
        return None
    if first == "":
        if last == "":
            return None
        suffix = _position(last)
        if suffix == 0:  # 14.1.3: a suffix of no bytes is never satisfiable, of an empty file neither
            raise RangeNotSatisfiable()
        return (max(0, size - suffix), size) if size else None  # of an empty file: the whole of it
    start = _position(first)
    if last != "" and _position(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable()
    return start, size if last == "" else min(_position(last) + 1, size)


def _position(digits: str) -> int:
    """A position of any length: past 18 digits it is past any file (Python refuses to read
    integers of over 4300 digits, which was a 500)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18 + len(digits)


def content_disposition(filename: str, kind: str = "inline") -> str:
    """The header for a file of any name. `filename=` holds printable ASCII only: any other
    character, a quote and a backslash become `_` (with a control character in a header, the
    server refuses it and drops the connection). The real name follows as `filename*=` when
    the two differ."""
    plain = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    value = f'{kind}; filename="{plain}"'
    if plain != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='', errors='replace')}"
    return value


VARY = {"Vary": "Accept"}  # a directory's answer: a listing in JSON or HTML, or its index.html


def listed_header(request: Request, name: str) -> str | None:
    """A list-valued header (If-None-Match, If-Match) as one list: its field lines joined, as
    RFC 9110 5.3 says they combine (the first line alone was read); None when absent."""
    lines = request.headers.getlist(name)
    return ", ".join(lines) if lines else None


def _entity_tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",")]


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [tag.removeprefix("W/") for tag in _entity_tags(header)]
    return "*" in tags or etag in tags


def require_if_match(header: str | None, etag: str) -> None:
    """RFC 9110 13.1.1: with If-Match, the answer is for the versions it names only (compared
    strongly: a weak tag never matches); 412 for any other."""
    if header is None:
        return
    tags = _entity_tags(header)
    if "*" not in tags and etag not in tags:
        raise PreconditionFailed(f"If-Match names other versions than {etag}")


def requested_range(request: Request, etag: str, size: int) -> tuple[int, int] | None:
    """[start, end) the request's Range asks of a representation of `size` bytes tagged `etag`;
    None for the whole. RFC 9110 13.1.5: with `If-Range`, the Range holds only while the
    representation is the one the client has part of (its strong entity tag). A date never
    matches (there is no Last-Modified to compare it with): the whole is sent, never a splice
    of two."""
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        return None
    return parse_range(request.headers.get("range"), size)


class ContentServer:
    def __init__(self, core: Core):
        self.core = core
        self.reader = core.reader
        self._rules: dict[bytes, list[redirects.Rule]] = {}  # by the CID of a _redirects file

    async def serve(self, request: Request, target: Target) -> Response:
        """Resolve and prepare the answer on a worker thread: big listings must not stall the
        loop. The DAG is held against collection until the answer is sent."""
        return await held_while_sent(self.core.store.hold(target.root),
                                     run_in_threadpool(self._serve_or_redirected, request, target))

    def _serve_or_redirected(self, request: Request, target: Target) -> Response:
        """On the host route (where a site has an origin of its own, as on a subdomain
        gateway) a path that is not in the DAG meets the rules of the site's _redirects."""
        try:
            return self._serve(request, target)
        except NoSuchPath:  # a block not fetched yet is no path the site lacks: no rule for it
            if not target.host_route or target.rule_status is not None:
                raise
            response = self._redirected(request, target)
            if response is None:
                raise
            return response

    def _redirected(self, request: Request, target: Target) -> Response | None:
        """The answer of the first rule the path meets; None when there is none (no rule
        matches, no _redirects, or the site's root is not here to look in)."""
        if not self.core.store.has(target.root):  # not fetched yet: no second wait for peers
            return None
        found = redirects.match(self._site_rules(target.root), target.segments)
        if found is None:
            return None
        to, status = found
        if status in redirects.REDIRECTS:
            cache = REVALIDATE if target.by_name else IMMUTABLE
            return RedirectResponse(to, status, headers={**CORS_HEADERS, "Cache-Control": cache})
        path = urlsplit(to).path
        try:
            segments = url_segments(path.strip("/"))
        except ApiError:
            raise RedirectsInvalid(f"a rule's target {to!r} is not a path of the site") from None
        response = self._serve(request, replace(target, segments=segments, trailing_slash=path.endswith("/"),
                                                rule_status=status))
        if status != 200:  # a rewrite's answer keeps its own (a 304, a 206)
            response.status_code = status
        return response

    def _site_rules(self, root: bytes) -> list[redirects.Rule]:
        """The rules of the _redirects file at the root of the site (none when it has none)."""
        try:
            node = self.reader.resolve(root, [redirects.FILE_NAME])
        except (exporter.NotFound, exporter.NotUnixFS):
            return []
        if node.is_dir:
            return []
        rules = self._rules.get(node.cid)
        if rules is None:
            try:
                redirects.check_size(node.size)  # before reading it
                rules = redirects.parse(b"".join(self.reader.read_range(node, 0, node.size)))
            except redirects.RedirectsInvalid as exc:
                raise RedirectsInvalid(str(exc)) from None
            if len(self._rules) >= SITES_RULES_KEPT:
                self._rules.clear()
            self._rules[node.cid] = rules
        return rules

    def _serve(self, request: Request, target: Target) -> Response:
        try:
            node = self.reader.resolve(target.root, target.segments)
            if node.is_dir:
                return self._directory(request, target, node)
            if target.segments and target.trailing_slash:  # `a.txt/`: its links would resolve below it
                raise NotFound(f"{target.segments[-1]!r} is a file, not a directory")
            name = target.segments[-1] if target.segments else None
            return self._file(request, target, node, name)
        except exporter.NoSuchEntry:
            raise NoSuchPath("no such file or directory") from None
        except (exporter.NotFound, exporter.NotUnixFS):
            raise NotFound("no such file or directory") from None
        except CorruptBlock as exc:
            log.error("corrupt block %s while serving %s", to_str(exc.cid), request.url.path)
            raise CorruptBlockError() from None
        except exporter.WrongSize as exc:
            log.error("damaged file DAG while serving %s: %s", request.url.path, exc)
            raise CorruptBlockError(f"the file's blocks disagree on its size: {exc}") from None

    def _headers(self, target: Target, etag: str) -> dict[str, str]:
        cache = REVALIDATE if target.by_name else IMMUTABLE
        return {**CORS_HEADERS, "ETag": etag, "Cache-Control": cache}

    def _directory(self, request: Request, target: Target, node: exporter.Node) -> Response:
        """A redirect to the slashed URL, index.html, or a listing (HTML or JSON): which one
        depends on Accept, and says so (Vary) to caches."""
        html = wants_html(request.headers.get("accept"))
        if (html or target.host_route) and not target.trailing_slash and target.rule_status is None:
            return self._to_slashed(request, target)
        if html or target.host_route:
            try:
                index = self.reader.child(node, "index.html")
            except exporter.NotFound:
                index = None
            if index is not None and not index.is_dir:
                response = self._file(request, target, index, "index.html")
                response.headers.update(VARY)
                return response
        etag = f'"{to_str(node.cid)}.html"' if html else f'"{to_str(node.cid)}"'
        headers = {**self._headers(target, etag), **VARY}
        if _conditional(target) and etag_matches(listed_header(request, "if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        entries = self.reader.listing(node)
        dirname = target.segments[-1] if target.segments else "/"
        if html:
            # the host route's cookie carries the token: no copy of it in every link of the page
            token = None if target.host_route else request.query_params.get("access_token")
            body = render_listing(dirname, raw_path(request), entries, token, len(target.segments))
            return Response(body, headers=headers, media_type="text/html; charset=utf-8")
        children = [{"name": n, "size": size, "cid": to_str(c)} for n, c, size, _ in entries]
        body = json.dumps({"directory": {"name": dirname, "cid": to_str(node.cid), "children": children}})
        return Response(body, headers=headers, media_type="application/json")

    def _to_slashed(self, request: Request, target: Target) -> Response:
        """A 301 to the directory's URL with its slash. The Location is the path alone (RFC
        9110 10.2.2), so that a proxy's scheme and host stay the browser's; a name's redirect is
        revalidated, as its files are: a browser keeps a 301 for good, and a later version of
        the name may hold a file at that path."""
        query = request.url.query
        if target.host_route:  # the token's cookie comes with this answer: no copy of it in a URL
            query = without_token(query)
        location = "/" + raw_path(request).lstrip("/") + "/" + (f"?{query}" if query else "")
        cache = REVALIDATE if target.by_name else IMMUTABLE
        return RedirectResponse(location, 301, headers={**CORS_HEADERS, **VARY, "Cache-Control": cache})

    def _file(self, request: Request, target: Target, node: exporter.Node, name: str | None) -> Response:
        if (disagreement := node.size_disagreement()) is not None:
            raise exporter.WrongSize(disagreement)
        etag = f'"{to_str(node.cid)}"'
        headers = self._headers(target, etag)
        headers["Accept-Ranges"] = "bytes"
        headers["X-Content-Type-Options"] = "nosniff"
        if name is not None and (target.segments or name == "index.html"):
            headers["Content-Disposition"] = content_disposition(name)
        conditional = _conditional(target)
        if conditional:
            require_if_match(listed_header(request, "if-match"), etag)
        if conditional and etag_matches(listed_header(request, "if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        size = node.size
        status = 200
        start, end = 0, size
        byte_range = requested_range(request, etag, size) if conditional else None
        if byte_range is not None:
            start, end = byte_range
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - start)
        # as a header, not a media type: Starlette adds "; charset=utf-8" to a text/* one, and
        # a stored type goes back as it was given (a Latin-1 text file is no UTF-8)
        headers["Content-Type"] = type_to_send(target.content_type, name)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        if end - start <= WHOLE_BELOW:  # read here, on the worker thread: no streaming hops
            data = b"".join(self.reader.read_range(node, start, end))
            if len(data) != end - start:  # its leaves hold less than their parents say
                raise exporter.WrongSize(f"its leaves hold {len(data)} of the {end - start} bytes asked")
            return Response(data, status, headers)
        body = self._body(node, start, end)
        return CutShortResponse(body, status_code=status, headers=headers)

    def _body(self, node: exporter.Node, start: int, end: int) -> AsyncIterator[Chunk]:
        """Bytes [start, end) of a file, its leaves read in runs on the read pool while the ones
        before are sent. The first run is read here, so that a missing or corrupt first block
        is a 404 or a 500, not a cut answer."""
        runs = batches(self.reader.spans(node, start, end), exporter.span_bytes, RUN_BYTES)
        first_run = next(runs, [])
        rest = RunsAhead(runs, self.reader.read_spans, self.core.read_pool, exporter.NotFound,
                         self._leaf_places)
        rest.plan()  # the next runs are read on the pool while this thread reads the first
        try:
            first = self.reader.read_spans(first_run, fetch=True)
        except BaseException:
            rest.cancel()
            raise
        return _whole_or_cut_short(node.cid, end - start, first, rest)

    def _leaf_places(self, runs: list[list[bytes | exporter.Span]]) -> exporter.Places:
        leaves = [item.cid for run in runs for item in run if isinstance(item, exporter.Span)]
        return self.core.store.places(leaves)


def _conditional(target: Target) -> bool:
    """Whether conditions and ranges apply: only to a 200 (RFC 9110 13.2.1, 14.2), not to a
    page a rule serves as its 404, 410 or 451."""
    return target.rule_status in (None, 200)


async def _whole_or_cut_short(cid: bytes, length: int, first: Chunk, rest: RunsAhead) -> AsyncIterator[Chunk]:
    """`first` and the runs of `rest`, raising CutShort when a block is damaged or missing, or
    when they do not make up `length` (a file node whose sizes disagree with its leaves)."""
    sent = 0
    body = first_then_runs(first, rest, FILE_READ_ERRORS, partial(_cut_short, cid))
    async with aclosing(body) as chunks:
        async for chunk in chunks:
            sent += len(chunk)
            yield chunk
    if sent != length:
        raise CutShort(f"file {to_str(cid)} cut short: its leaves hold {sent} of its {length} bytes")


def _cut_short(cid: bytes, exc: Exception) -> str:
    if isinstance(exc, CorruptBlock):
        return f"corrupt block {to_str(exc.cid)} mid-stream: file {to_str(cid)} cut short"
    return f"file {to_str(cid)} cut short: {exc}"
