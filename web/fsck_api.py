"""Checks of a running node's store, as jobs: `POST /api/v2/node/fsck` starts one (an admin
user's personal access token), `GET /api/v2/node/fsck/<id>` shows its progress and, when it
is done, the report. `edgefiles fsck` on a running node starts the same jobs through the
admin socket. Jobs run one at a time, in the order they were asked for."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from edgefiles.node.fsck import Progress, Report
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .body import parse_json, read_small_body
from .cors import CORS_HEADERS
from .errors import BadRequest, Forbidden, NotFound

if TYPE_CHECKING:
    from .context import AppContext

KEPT_JOBS = 20  # finished jobs remembered for GET
START_BODY = 4 << 10  # {"repair": bool}
RunFsck = Callable[[bool, Progress], Awaitable[Report]]
log = logging.getLogger("edgefiles")


@dataclass
class FsckJob:
    id: str
    repair: bool
    state: str = "queued"  # queued, running, done, failed
    phase: str = ""
    done: int = 0
    total: int = 0
    report: Report | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def progress(self, phase: str, done: int, total: int) -> None:
        """Called from the checking thread: plain stores, read by the event loop."""
        self.phase, self.done, self.total = phase, done, total

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "repair": self.repair, "state": self.state,
                "progress": {"phase": self.phase, "done": self.done, "total": self.total},
                "report": self.report.as_json() if self.report else None, "error": self.error}


class FsckJobs:
    def __init__(self, run: RunFsck):
        self._run = run
        self._jobs: OrderedDict[str, FsckJob] = OrderedDict()
        self._one_at_a_time = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    def start(self, repair: bool) -> FsckJob:
        job = FsckJob(secrets.token_hex(8), repair)
        self._jobs[job.id] = job
        while len(self._jobs) > KEPT_JOBS and next(iter(self._jobs.values())).state in ("done", "failed"):
            self._jobs.popitem(last=False)
        task = asyncio.get_running_loop().create_task(self._go(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def get(self, job_id: str) -> FsckJob | None:
        return self._jobs.get(job_id)

    async def _go(self, job: FsckJob) -> None:
        async with self._one_at_a_time:
            job.state = "running"
            try:
                job.report = await self._run(job.repair, job.progress)
                job.state = "done"
                log.info("fsck %s: %s", job.id, "clean" if job.report.ok else "problems found")
            except Exception as exc:
                log.exception("fsck %s failed", job.id)
                job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            finally:
                job.changed.set()


def _admin_only(request: Request) -> None:
    """An admin user's personal access token, with the Files API's 401s and a 403 for any
    other valid token (an app's, a user who is no admin)."""
    ctx: AppContext = request.app.state.ctx
    token = ctx.tokens.token_of(request)
    user = ctx.accounts.authenticate(token)
    if user is not None:
        if not user.admin:
            raise Forbidden("checking the store needs an admin user's token")
        return
    ctx.tokens.check(token)  # 401 for a bad or expired one
    raise Forbidden("checking the store needs an admin user's personal access token, not an app's")


async def start(request: Request) -> Response:
    """Start checking (and with `repair`, mending) the node's store: 202 with the job's id."""
    _admin_only(request)
    body = await read_small_body(request, START_BODY, request.app.state.ctx.max_upload, "the body")
    fields = parse_json(body, partial(BadRequest, "the body is a JSON object: {\"repair\": false}")) \
        if body.strip() else {}
    if not isinstance(fields, dict) or not isinstance(fields.get("repair", False), bool):
        raise BadRequest("the body is a JSON object whose \"repair\" is true or false")
    ctx: AppContext = request.app.state.ctx
    job = ctx.fsck.start(fields.get("repair", False))
    location = f"/api/v2/node/fsck/{job.id}"
    return JSONResponse({"id": job.id}, 202, headers={**CORS_HEADERS, "Location": location})


async def status(request: Request) -> Response:
    """A check's progress, and its report once it is done."""
    _admin_only(request)
    ctx: AppContext = request.app.state.ctx
    job = ctx.fsck.get(request.path_params["id"])
    if job is None:
        raise NotFound("no such fsck job on this node (the last 20 are kept)")
    return JSONResponse(job.view(), headers=CORS_HEADERS)
