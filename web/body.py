"""Request bodies read whole, with a cap: refused once they pass it, declared or sent."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from .errors import PayloadTooLarge


async def read_small_body(request: Request, limit: int, max_upload: int, what: str) -> bytes:
    """A body read whole: a 413 past `limit`, or past --max-upload where that is less (it
    bounds every request body of the API), saying which bound it passed."""
    if max_upload < limit:
        return await read_capped(request, max_upload, lambda: PayloadTooLarge(
            f"request body larger than --max-upload ({max_upload} bytes)"))
    return await read_capped(request, limit, lambda: PayloadTooLarge(f"{what} is at most {limit} bytes"))


async def read_trimmed(request: Request, keep: int, max_upload: int,
                       too_long: Callable[[], Exception]) -> bytes:
    """A body with the whitespace around it trimmed, read with flat memory: `too_long()` once
    more than `keep` bytes are left between the whitespace (raised as soon as that is seen),
    a 413 only past --max-upload (the bound of every body), as padding of any length is
    whitespace to trim, not a body too large."""
    too_large = PayloadTooLarge(f"request body larger than --max-upload ({max_upload} bytes)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > max_upload:
        raise too_large
    kept, size = bytearray(), 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_upload:
            raise too_large
        chunk = chunk if kept else chunk.lstrip()
        room = keep - len(kept)
        kept += chunk[:room]
        if chunk[room:].strip():  # what is past `keep` is more than trailing whitespace
            raise too_long()
    return bytes(kept).strip()


async def read_capped(request: Request, limit: int, too_large: Callable[[], Exception]) -> bytes:
    """The body; `too_large()` is raised once its declared or received length passes `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


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
