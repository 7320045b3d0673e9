"""Request bodies read whole, with a cap: refused once they pass it, declared or sent."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request


async def read_capped(request: Request, limit: int, too_large: Callable[[], Exception]) -> bytes:
    """The body; `too_large()` is raised once its declared or received length passes `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)
