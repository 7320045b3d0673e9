"""Node-RED persistent context, upstream's routes: scopes of JSON per project, in SQLite.

Each scope is one row holding its JSON object; sizes (the quota's measure: the JSON text of
each scope) are kept per project in memory, loaded once, so a set never sums the table.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from edgefiles.node.db import Database, connect
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..body import parse_json
from ..upload import parse_header_params
from . import jsvalues, properties
from .errors import FFBadRequest, FFOverQuota, FFUnsupportedMedia, FlowFuseError
from .facade import FlowFuse, read_body
from .files import TEXT_TYPES

SCHEMA = """
CREATE TABLE IF NOT EXISTS context (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, project TEXT NOT NULL, scope TEXT NOT NULL,
    value TEXT NOT NULL, UNIQUE (project, scope)
);
"""


LONE_SURROGATE = re.compile("[\ud800-\udfff]")
SQL_INTEGER_MAX = (1 << 63) - 1
MAX_PADDING = 1 << 20  # nulls one request may pad arrays with, in a project without a quota


class InvalidExpr(FlowFuseError):
    status, code = 400, "INVALID_EXPR"

    def body(self) -> dict:
        return {"error": self.message, "code": "INVALID_EXPR"}


def json_text(value: Any) -> str:
    """JSON as JavaScript's JSON.stringify writes it (what upstream measures): a lone surrogate
    (valid JSON, no UTF-8) escaped as `\\udXXX`, which either database then takes."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def js_length(text: str) -> int:
    """A string's length as JavaScript counts it, in UTF-16 code units (upstream's `.length`):
    a character past U+FFFF, an emoji, counts 2."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def json_size(value: Any) -> int:
    """The length of a value's JSON text, as upstream measures a project's context."""
    return js_length(json_text(value))


def item_size(value: Any) -> int:
    """Upstream's measure of one value: a string counts its length, null 1, else its JSON."""
    if isinstance(value, str):
        return js_length(value)
    if value is None:
        return 1
    return json_size(value)


def nesting(value: Any) -> int:
    """How deeply arrays and objects nest in `value` (iteratively: no recursion limit)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            pending.extend((child, depth + 1) for child in children)
    return deepest


class ContextJSON(JSONResponse):
    """An answer of context values, as upstream writes them (a lone surrogate escaped)."""

    def render(self, content: Any) -> bytes:
        return json_text(content).encode()


class ContextStore:
    def __init__(self, db: Database):
        self.db = db
        self._scopes: dict[str, dict[str, dict]] = {}  # project -> scope -> object (cached)
        self._used: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    async def open(cls, path: Path) -> ContextStore:
        conn = await connect(path)
        await conn.executescript(SCHEMA)
        return cls(Database(conn))

    async def close(self) -> None:
        await self.db.close()

    def lock(self, project: str) -> asyncio.Lock:
        return self._locks.setdefault(project, asyncio.Lock())

    async def scopes(self, project: str) -> dict[str, dict]:
        table = self._scopes.get(project)
        if table is None:
            rows = await self.db.fetchall(
                "SELECT scope, value FROM context WHERE project = ? ORDER BY seq", (project,)
            )
            table = {scope: json.loads(value) for scope, value in rows}
            self._scopes[project] = table
            self._used[project] = sum(json_size(v) for v in table.values())
        return table

    async def scope(self, project: str, scope: str) -> dict | None:
        return (await self.scopes(project)).get(scope)

    async def scope_names(self, project: str) -> list[str]:
        return list(await self.scopes(project))

    async def used(self, project: str) -> int:
        await self.scopes(project)
        return self._used[project]

    async def save(self, project: str, changed: dict[str, dict | None]) -> None:
        """Write changed scopes (None or {} deletes) in one transaction, then cache them."""
        table = await self.scopes(project)
        async with self.db.transaction() as conn:
            for scope, value in changed.items():
                if value:
                    await conn.execute(
                        "INSERT INTO context (project, scope, value) VALUES (?, ?, ?) "
                        "ON CONFLICT (project, scope) DO UPDATE SET value = excluded.value",
                        (project, scope, json_text(value)),
                    )
                else:
                    sql = "DELETE FROM context WHERE project = ? AND scope = ?"
                    await conn.execute(sql, (project, scope))
        for scope, value in changed.items():
            old = table.pop(scope, None) if not value else table.get(scope)
            if old:
                self._used[project] -= json_size(old)
            if value:
                table[scope] = value
                self._used[project] += json_size(value)

    async def page(self, project: str, limit: int, cursor: int) -> tuple[list, int, int | None]:
        rows = await self.db.fetchall(
            "SELECT seq, scope, value FROM context WHERE project = ? AND seq > ? ORDER BY seq LIMIT ?",
            (project, cursor, limit),
        )
        count = (await self.db.fetchall("SELECT COUNT(*) FROM context WHERE project = ?", (project,)))[0][0]
        data = [{"scope": scope, "values": json.loads(value)} for _, scope, value in rows]
        return data, count, rows[-1][0] if len(rows) == limit else None


# routes -----------------------------------------------------------------------------------
def _ff(request: Request) -> FlowFuse:
    return request.app.state.ctx.flowfuse


async def _authorized(request: Request) -> tuple[FlowFuse, str, Any]:
    """(facade, project, grant): the project and the scope, if the route has one, checked as
    `FlowFuse.authorize_path` says."""
    ff = _ff(request)
    segments, grant = await ff.authorize_path(request, "/v1/context/", 0)
    return ff, segments[0], grant


async def _json_body(request: Request) -> Any:
    """The body as fastify's parsers give it to upstream's handlers: JSON parsed, a text or
    octet body as its string (which no route takes), another type with a body a 415."""
    media, _ = parse_header_params(request.headers.get("content-type", ""))
    raw = await read_body(request)
    if not raw.strip():
        return None
    if media in TEXT_TYPES:
        return raw.decode(errors="replace")
    if media != "application/json":
        raise FFUnsupportedMedia()
    return parse_json(raw, partial(FFBadRequest, "body is not valid JSON"), partial(FFBadRequest, TOO_DEEP))


TOO_DEEP = "JSON nested too deeply"
MAX_NESTING = 200  # of a stored scope: read back whole by json.loads, at any request's depth


def _shallow_enough(scope: dict) -> None:
    """A scope nested deeper than MAX_NESTING is a 400, before it is stored: one nested near
    Python's recursion limit was written, then could not be read back (every context request
    of its project a 500, for good)."""
    if nesting(scope) > MAX_NESTING:
        raise FFBadRequest(f"{TOO_DEEP}: a scope nests at most {MAX_NESTING} levels")


@contextmanager
def _nesting_checked() -> Iterator[None]:
    """A value nested too deeply for JSON text here (a deep key, or a deep value set deep
    inside a scope) is a 400; the change is not saved."""
    try:
        yield
    except RecursionError:
        raise FFBadRequest(TOO_DEEP) from None


def _limit(ff: FlowFuse, grant: Any) -> float | None:
    return grant.context_quota or ff.config.context_quota


async def _check_quota(ff: FlowFuse, grant: Any, store: Any, project: str, delta: int,
                       old: dict | None, new: dict) -> None:
    """Upstream's rule: a change that does not shrink the project, as its items measure it
    (`delta`), may not pass its quota. Ours too: a project past its quota may not grow in
    stored bytes. The items' measure leaves keys out, so without it a cache write that each
    time shrank by that measure grew a project's stored bytes for ever."""
    limit = _limit(ff, grant)
    if limit is None:
        return
    if delta >= 0:
        over = await store.used(project) + delta > limit
    else:  # the stored sizes measured only here: a set that grows by the items' measure needs neither
        over = _stored_size(new) > _stored_size(old) and await store.used(project) > limit
    if over:
        raise FFOverQuota(limit)


def _stored_size(scope: dict | None) -> int:
    return json_size(scope) if scope else 0  # an empty scope is not stored


def _check_indices(paths: list[properties.Path], limit: float | None) -> None:
    """An array index pads the array with nulls up to it, which JSON stores: `[20000000]`
    would be 100 MB. The nulls one request pads arrays with may not pass the quota (an array
    that long could never have been stored under it), nor, without one, MAX_PADDING: refused
    here, before any work, when its numeric indices alone add up past that, and as a set pads
    (`_changed`: a name spelling an index, `a.5` or `a["5"]`, pads an array too)."""
    # a number past JavaScript's array indices names a property, as text does: it pads nothing
    numbers = (key for path in paths for key in path if isinstance(key, int))
    if sum(key for key in numbers if jsvalues.array_index(key) is not None) >= (limit or MAX_PADDING):
        raise _padding_refused(limit)


def _padding_refused(limit: float | None) -> FlowFuseError:
    if limit is not None:
        return FFOverQuota(limit)
    return FFBadRequest(f"the nulls a request pads arrays with add up to less than {MAX_PADDING}")


def _path(key: Any, parse: Callable[[str], properties.Path] = properties.parse) -> properties.Path:
    try:
        return parse(key)
    except properties.InvalidExpression as exc:
        raise InvalidExpr(str(exc)) from None


async def set_values(request: Request) -> Response:
    ff, project, grant = await _authorized(request)
    scope = request.path_params["scope"]
    items = await _json_body(request)
    if not isinstance(items, list) or not all(isinstance(i, dict) and "key" in i for i in items):
        raise FFBadRequest("body must be an array of {key, value}")
    paths = [_path(item["key"], properties.parse_for_set) for item in items]
    _check_indices(paths, _limit(ff, grant))
    store: ContextStore = ff.context
    with _nesting_checked():
        async with store.lock(project):
            old = await store.scope(project, scope)
            value, delta = _changed(old, items, paths, _limit(ff, grant))
            _shallow_enough(value)
            await _check_quota(ff, grant, store, project, delta, old, value)
            await store.save(project, {scope: value})
    return ContextJSON({})


def _changed(stored: dict | None, items: list[dict], paths: list[properties.Path],
             limit: float | None) -> tuple[dict, int]:
    """(the scope after the sets and deletes of `items`, the change in the quota's measure);
    `_padding_refused` when they pad arrays with more nulls than `_check_indices` allows.
    Upstream measures an item's old value at its key as given, `msg.` and all (only the set
    drops it), so a set of `msg.m` counts whole and its delete frees nothing: so here."""
    value = copy.deepcopy(stored or {})
    delta, room = 0, limit or MAX_PADDING
    for item, path in zip(items, paths, strict=True):
        found, old = properties.get(value, properties.parse(item["key"]))
        if "value" in item:
            delta += item_size(item["value"]) - (item_size(old) if found else 0)
            try:
                padded = properties.set_value(value, path, item["value"], room)
            except properties.PaddingTooLong:
                raise _padding_refused(limit) from None
            room -= padded
            delta += len("null,") * padded
        else:
            delta -= item_size(old) if found else 0
            properties.delete(value, path)
    return jsvalues.in_key_order(value), delta  # stored, listed and read in JavaScript's key order


async def get_values(request: Request) -> Response:
    ff, project, _ = await _authorized(request)
    scope = request.path_params["scope"]
    keys = request.query_params.getlist("key")
    if not keys:
        raise FFBadRequest("at least one key is required")
    paths = [_path(k) for k in keys]
    value = await ff.context.scope(project, scope)
    if value is None:
        return ContextJSON([])
    out = []
    for key, path in zip(keys, paths, strict=True):
        found, got = properties.get(value, path)
        out.append({"key": key, "value": got} if found else {"key": key})
    return ContextJSON(out)


async def keys(request: Request) -> Response:
    ff, project, _ = await _authorized(request)
    value = await ff.context.scope(project, request.path_params["scope"]) or {}
    return ContextJSON(list(value))


async def delete_scope(request: Request) -> Response:
    ff, project, _ = await _authorized(request)
    async with ff.context.lock(project):
        await ff.context.save(project, {request.path_params["scope"]: None})
    return Response(b"")  # upstream's `reply.send()`: no body


async def clean(request: Request) -> Response:
    ff, project, _ = await _authorized(request)
    ids = await _json_body(request) or []
    if not isinstance(ids, list):
        raise FFBadRequest("body must be an array of flow and node ids")
    keep = {str(i) for i in ids}
    async with ff.context.lock(project):
        names = await ff.context.scope_names(project)
        doomed = {s: None for s in names if s != "global" and s.split(":")[0] not in keep}
        await ff.context.save(project, doomed)
    return Response(b"")


async def cache_page(request: Request) -> Response:
    ff, project, _ = await _authorized(request)
    limit, cursor = page_window(request.query_params.get("limit"), request.query_params.get("cursor"))
    data, count, next_cursor = await ff.context.page(project, limit, cursor)
    meta = {"next_cursor": next_cursor} if next_cursor is not None else {}
    return ContextJSON({"meta": meta, "count": count, "data": data})




def page_window(limit: str | None, cursor: str | None) -> tuple[int, int]:
    """(limit, cursor) of a cache page as upstream reads them (pure): `parseInt(limit) || 1000`,
    so 0 and text are 1000 and a negative limit is none (SQLite's LIMIT -1); rows past a
    cursor, which SQLite compares as a number when it reads as one, else as text, which
    is past every row id. Default limit 30."""
    limit_read = 30 if limit is None else jsvalues.parse_int(limit) or 1000
    if limit_read < 0:
        limit_read = SQL_INTEGER_MAX
    if not cursor:  # upstream: `if (params.cursor)`
        after = 0
    elif (number := jsvalues.sqlite_number(cursor)) is not None:
        after = math.floor(number) if math.isfinite(number) else SQL_INTEGER_MAX if number > 0 else 0
    else:
        after = SQL_INTEGER_MAX
    return min(limit_read, SQL_INTEGER_MAX), min(max(after, 0), SQL_INTEGER_MAX)


async def cache_replace(request: Request) -> Response:
    """The scope replaced by the body's keys set in turn, as property paths (upstream sets
    each one as `POST /:scope` does its items); the quota's change is the items' sizes less
    the old scope's JSON text."""
    ff, project, grant = await _authorized(request)
    scope = request.path_params["scope"]
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise FFBadRequest("body must be an object")
    items = [{"key": key, "value": value} for key, value in body.items()]
    paths = [_path(key, properties.parse_for_set) for key in body]
    _check_indices(paths, _limit(ff, grant))
    store: ContextStore = ff.context
    with _nesting_checked():
        value, added = _changed(None, items, paths, _limit(ff, grant))
        _shallow_enough(value)
        async with store.lock(project):
            old = await store.scope(project, scope)
            await _check_quota(ff, grant, store, project, added - _stored_size(old), old, value)
            await store.save(project, {scope: value})
    return ContextJSON({})
