"""Request bodies read whole, with a cap: refused once they pass it, declared or sent."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request

from .errors import PayloadTooLarge


def declared_length(request: Request) -> int | None:
    """The length the request's Content-Length declares; None without one (a chunked body) or
    with one that is no number (ASCII digits only: `isdigit` takes "²" too)."""
    declared = request.headers.get("content-length")
    return int(declared) if declared is not None and declared.isascii() and declared.isdigit() else None


def past_max_upload(max_upload: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body larger than --max-upload ({max_upload} bytes)")


async def read_small_body(request: Request, limit: int, max_upload: int, what: str) -> bytes:
    """A body read whole: a 413 past `limit`, or past --max-upload where that is less (it
    bounds every request body of the API), saying which bound it passed."""
    if max_upload < limit:
        return await read_capped(request, max_upload, lambda: past_max_upload(max_upload))
    return await read_capped(request, limit, lambda: PayloadTooLarge(f"{what} is at most {limit} bytes"))


async def read_trimmed(request: Request, keep: int, max_upload: int,
                       too_long: Callable[[], Exception]) -> bytes:
    """A body with the whitespace around it trimmed, read with flat memory: `too_long()` once
    more than `keep` bytes are left between the whitespace (raised as soon as that is seen),
    a 413 only past --max-upload (the bound of every body), as padding of any length is
    whitespace to trim, not a body too large."""
    kept = bytearray()
    async for chunk in _capped(request, max_upload, lambda: past_max_upload(max_upload)):
        chunk = chunk if kept else chunk.lstrip()
        room = keep - len(kept)
        kept += chunk[:room]
        if chunk[room:].strip():  # what is past `keep` is more than trailing whitespace
            raise too_long()
    return bytes(kept).strip()


async def read_capped(request: Request, limit: int, too_large: Callable[[], Exception]) -> bytes:
    """The body; `too_large()` is raised once its declared or received length passes `limit`."""
    return b"".join([chunk async for chunk in _capped(request, limit, too_large)])


async def _capped(request: Request, limit: int, too_large: Callable[[], Exception]) -> AsyncIterator[bytes]:
    """The body's chunks as they come; `too_large()` once its declared or received length
    passes `limit`."""
    if (declared := declared_length(request)) is not None and declared > limit:
        raise too_large()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        yield chunk


def parse_json(raw: bytes | str, invalid: Callable[[], Exception],
               too_deep: Callable[[], Exception] | None = None) -> Any:
    """The JSON value of `raw`; `invalid()` is raised for text that is not JSON or not UTF-8
    (`NaN` and `Infinity` are not, nor is a number too large for a double, `1e400`: Python
    reads them as such, no JSON writer can write them back), and `too_deep()` (else `invalid()`) for
    nesting past Python's recursion limit, which a 64 KiB body of brackets reaches (it was a
    500 with two tracebacks in the log)."""
    try:
        return json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except ValueError:
        raise invalid() from None
    except RecursionError:
        raise (too_deep or invalid)() from None


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is past a double's range")
    return value
