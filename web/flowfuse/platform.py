"""Asking the FlowFuse platform whether a token may use a project, as upstream asks it."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from ..body import parse_json
from . import jsvalues

CACHE_SECONDS = 90.0
TIMEOUT_SECONDS = 0.5


@dataclass(frozen=True)
class Grant:
    project: str
    file_quota: float | None  # bytes; a platform's 50.5 stays 50.5, as upstream compares it
    context_quota: float | None
    expires: float


class Platform:
    """`GET {base_url}/account/check/project/{id}`; a yes is cached 90 s per token, and only
    for the project it was given for (a cached token used on another project is asked again)."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self._client = httpx.AsyncClient(timeout=TIMEOUT_SECONDS)
        self._cache: dict[str, Grant] = {}
        self._asking: dict[tuple[str, str], asyncio.Task] = {}

    async def check(self, authorization: str, project: str) -> Grant | None:
        now = time.monotonic()
        grant = self._cache.get(authorization)
        if grant is not None and grant.project == project and grant.expires > now:
            return grant
        key = (authorization, project)
        task = self._asking.get(key)
        if task is None:  # requests arriving together with one token ask the platform once
            task = self._asking[key] = asyncio.ensure_future(self._ask(authorization, project, now))
            task.add_done_callback(lambda _: self._asking.pop(key, None))
        grant = await asyncio.shield(task)
        if grant is not None:  # a no leaves the token's yes for its own project (upstream too)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[authorization] = grant
        return grant

    async def _ask(self, authorization: str, project: str, now: float) -> Grant | None:
        if project in ("", ".", ".."):  # the URL would name another platform route
            return None
        # the project id came percent-decoded from our own path: one segment again, whatever it holds
        url = f"{self.base_url}/account/check/project/{quote(project, safe='')}"
        headers = {
            "Authorization": authorization, "ff-quota": "true", "user-agent": "FlowFuse Storage Server",
        }
        try:  # the whole exchange within the timeout: httpx's bounds each read, not their sum
            async with asyncio.timeout(TIMEOUT_SECONDS):
                r = await self._client.get(url, headers=headers)
            if not 200 <= r.status_code < 300:
                return None
            body = parse_json(r.content, ValueError)
        except (httpx.HTTPError, ValueError, TimeoutError):
            return None
        if jsvalues.falsy(body):  # upstream: `if (!tokenResponse) throw` (null, false, 0, "")
            return None
        quota = body.get("quota") if isinstance(body, dict) else None
        quota = quota if isinstance(quota, dict) else {}
        return Grant(project, _bytes(quota.get("file")), _context_quota(quota), now + CACHE_SECONDS)

    async def close(self) -> None:
        await self._client.aclose()


UPSTREAM_CONTEXT_DEFAULT = 1000  # bytes, when the platform's answer has no context quota


def _context_quota(quota: dict) -> float | None:
    if "context" not in quota:
        return UPSTREAM_CONTEXT_DEFAULT
    return _bytes(quota["context"])


def _bytes(value: object) -> float | None:
    """A quota in bytes as upstream compares it: a number, or text spelling one (JavaScript
    compares "100" as 100); anything else, or one not above 0, is none."""
    if isinstance(value, str):
        value = jsvalues.number(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)  # JSON writes 50, as upstream does
    return value
