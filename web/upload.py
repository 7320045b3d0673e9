"""Streaming multipart upload: parse as bytes arrive, import in a worker thread, commit once.

The event loop reads the socket and runs the multipart parser; the import (chunking,
hashing, pack writes) runs in a worker thread on the previous batch of part data, so both
cores work and memory stays bounded by a few MiB whatever the upload size.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from urllib.parse import unquote_to_bytes

from edgefiles.node.blockstore import QueuedWrites, StorageFull
from edgefiles.node.core import Core
from edgefiles.node.importer import FileBuilder, PathConflict, TreeBuilder, pooled_hasher
from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser
from starlette.requests import Request

from .body import declared_length
from .errors import BadRequest, InsufficientStorage, PayloadTooLarge, UnsupportedMediaType
from .paths import upload_segments

HANDOFF_BYTES = 1 << 20
# a part's header line may be as long as a request's head (http_protocol.MAX_HEAD_BYTES): a
# deep path is a long filename (python-multipart's own limit, 4 KiB, refused 21 levels of 200)
PART_HEADER_BYTES = 64 << 10
WRAP = "wrap-with-directory"
FLAG_VALUES = {"true": True, "1": True, "false": False, "0": False}


def parse_header_params(value: str, strict: bool = False) -> tuple[str, dict[str, str]]:
    """`type; k=v; k="quoted"` → (type, params); quoted-string escapes honoured, nothing else.
    `strict`: a quoted string left open, or followed by more than space before its `;`, is a
    400 (`filename="a"b"`, an unescaped quote, was taken as `a`: the file stored under another
    name, silently)."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().strip(";").strip().lower()
        i = eq + 1
        if i < len(rest) and rest[i] == '"':
            out = []
            i += 1
            while i < len(rest) and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < len(rest) and rest[i + 1] in '"\\':
                    i += 1
                out.append(rest[i])
                i += 1
            params[key] = "".join(out)
            end = rest.find(";", i + 1)
            end = len(rest) if end < 0 else end
            if strict and (i >= len(rest) or rest[i + 1:end].strip()):
                raise BadRequest(f"malformed header parameter {key!r}: a quote inside a quoted "
                                 'string is written \\"; %22 is not decoded')
            i = end + 1
        else:
            end = rest.find(";", i)
            end = len(rest) if end < 0 else end
            params[key] = rest[i:end].strip()
            i = end + 1
    return main.strip().lower(), params


def part_filename(params: dict[str, str]) -> str | None:
    """A part's file name: its `filename*` (RFC 8187: UTF-8, percent-encoded) when it gives
    one, since only that spelling carries a carriage return, which no header line can hold;
    else its `filename` as sent."""
    extended = params.get("filename*")
    if extended is None:
        return params.get("filename")
    charset, _, rest = extended.partition("'")
    _language, _, encoded = rest.partition("'")
    try:
        if charset.lower() != "utf-8":
            raise UnicodeError
        return unquote_to_bytes(encoded).decode()
    except UnicodeError:
        raise BadRequest("filename* is UTF-8 and percent-encoded: UTF-8''<name>") from None


class UploadSink:
    """The import side of one upload; every method runs in the worker thread, in order."""

    def __init__(self, core: Core, hash_pool: Executor, wrap: bool = False):
        self.core = core
        self.wrap = wrap  # one part too makes a folder (that holds it)
        self.hasher = pooled_hasher(hash_pool)
        self.batch = core.store.batch()
        self.writes = QueuedWrites(self.batch)
        self.tree = TreeBuilder(core.settings.profile, self.writes.put)
        self.file: FileBuilder | None = None
        self.segments: list[str] = []
        self.parts = 0

    def process(self, events: list[tuple]) -> None:
        for event in events:
            if event[0] == "data":
                self.file.write(event[1])
            elif event[0] == "begin":
                self.segments = event[1]
                self.file = self.new_file()
            else:
                self.tree.add_file(self.segments, self.file.finish())
                self.parts += 1
                self.file = None

    def new_file(self) -> FileBuilder:
        return FileBuilder(self.core.settings.profile, self.writes.put, self.hasher)

    def finish(self, events: list[tuple]) -> bytes:
        self.process(events)
        if self.parts == 0:
            raise BadRequest("the upload holds no file parts")
        root = self.tree.single_file() if self.parts == 1 and not self.wrap else self.tree.finish()
        self.writes.flush()
        return root.cid


class PartCollector:
    """python-multipart callbacks → a list of import events, with filenames validated."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.queued = 0
        self.ended = False
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").lower()
        self._headers[name] = self._value.decode("utf-8", "surrogateescape")
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        filename = part_filename(self.disposition())
        if not filename:
            raise BadRequest("every part needs a filename")
        try:
            filename.encode()
        except UnicodeEncodeError:
            raise BadRequest("filename is not UTF-8") from None
        segments = upload_segments(filename)
        self.events.append(("begin", segments))

    def disposition(self) -> dict[str, str]:
        """The parameters of this part's Content-Disposition (a malformed one is a 400)."""
        return parse_header_params(self._headers.get("content-disposition", ""), strict=True)[1]

    def _data(self, data: bytes, start: int, end: int) -> None:
        # uvicorn hands us immutable bytes per read: a view avoids copying every byte again
        self.events.append(("data", memoryview(data)[start:end]))
        self.queued += end - start

    def _part_end(self) -> None:
        self.events.append(("end",))

    def _end(self) -> None:
        self.ended = True

    def take(self) -> list[tuple]:
        events, self.events, self.queued = self.events, [], 0
        return events


async def receive_upload(
    request: Request, core: Core, executor: Executor, hash_pool: Executor, max_upload: int
) -> bytes:
    """A Files API upload, imported and committed (pinned for the upload grace period).
    `?wrap-with-directory=true` (Kubo's flag of that name): one part, too, gives the CID of a
    folder holding it, as `edgefiles add DIR` and the uploader need for a one-file folder."""
    wrap = query_flag(request, WRAP)
    sink, root = await import_upload(request, PartCollector(), core, executor, hash_pool, max_upload,
                                     UploadSink(core, hash_pool, wrap))
    try:
        await core.commit(sink.batch, [root])
    except BaseException:
        core.store.abandon(sink.batch)
        raise
    return root


def query_flag(request: Request, name: str) -> bool:
    """A boolean query parameter, spelled as Kubo's RPC takes them (absent: False)."""
    value = request.query_params.get(name)
    if value is None:
        return False
    if value.lower() not in FLAG_VALUES:
        raise BadRequest(f"{name} takes true or false, not {value!r}")
    return FLAG_VALUES[value.lower()]


async def parse_form(request: Request, collector: PartCollector) -> None:
    """Run a whole (small) multipart body through `collector`, nothing imported."""
    parser = _parser(request, collector)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None
    _check_ended(collector)


def _parser(request: Request, collector: PartCollector) -> AfterPreamble:
    ctype, params = parse_header_params(request.headers.get("content-type", ""))
    if ctype != "multipart/form-data":
        raise UnsupportedMediaType()
    if not params.get("boundary"):
        raise BadRequest("multipart/form-data without a boundary parameter")
    try:
        parser = MultipartParser(params["boundary"], collector.callbacks(), max_header_count=32,
                                 max_header_size=PART_HEADER_BYTES)
    except FormParserError as exc:  # a boundary too long (RFC 2046: 70 characters at most)
        raise BadRequest(f"malformed multipart header: {exc}") from None
    return AfterPreamble(parser, params["boundary"].encode("latin-1"))


class AfterPreamble:
    """A multipart parser that is given the body from its first boundary line on: RFC 2046
    5.1.1 lets text come before it (a preamble, to be ignored), which the parser refused
    (`400 Expected boundary character`). At most PREAMBLE_BYTES of it."""

    def __init__(self, parser: MultipartParser, boundary: bytes):
        self._parser = parser
        self._first = b"--" + boundary
        self._head: bytearray | None = bytearray()  # None once the first boundary line came

    def write(self, data: bytes) -> None:
        if self._head is None:
            self._parser.write(data)
            return
        self._head += data
        at = self._boundary_line()
        if at is None:
            if len(self._head) > PREAMBLE_BYTES:
                raise BadRequest(f"malformed multipart body: no boundary line in its first "
                                 f"{PREAMBLE_BYTES} bytes")
            return
        rest, self._head = bytes(self._head[at:]), None
        self._parser.write(rest)

    def _boundary_line(self) -> int | None:
        """Where the first boundary line starts (at the start, or after a CRLF; the boundary
        followed by CRLF, white space or `--`), None until it has come."""
        head, first = self._head, self._first
        at = head.find(first)
        while at >= 0:
            if at == 0 or head[at - 2 : at] == b"\r\n":
                after = bytes(head[at + len(first) : at + len(first) + 2])
                if len(after) < 2:
                    return None  # what follows it has not come yet
                if after[:1] in (b"\r", b" ", b"\t") or after == b"--":
                    return at
            at = head.find(first, at + 1)
        return None

    def finalize(self) -> None:
        self._parser.finalize()


PREAMBLE_BYTES = 64 << 10


def _check_ended(collector: PartCollector) -> None:
    if not collector.ended:
        raise BadRequest("truncated multipart body: the closing boundary never came")


async def import_upload(
    request: Request, collector: PartCollector, core: Core, executor: Executor, hash_pool: Executor,
    max_upload: int, sink: UploadSink | None = None,
) -> tuple[UploadSink, bytes]:
    """Parse a multipart body as it arrives and import the parts `collector` passes on, in a
    worker thread (into `sink`, a plain one when not given); (the sink, whose batch the
    caller commits or abandons, and the root: the file's CID for one part, else the
    folder's). Nothing is kept on any error."""
    parser = _parser(request, collector)
    if (declared := declared_length(request)) is not None and declared > max_upload:
        raise PayloadTooLarge(f"request body larger than {max_upload} bytes")
    loop = asyncio.get_running_loop()
    sink = sink or UploadSink(core, hash_pool)
    pending: asyncio.Future | None = None
    received = 0
    try:
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_upload:
                    raise PayloadTooLarge(f"request body larger than {max_upload} bytes")
                parser.write(chunk)
                if collector.queued >= HANDOFF_BYTES:
                    if pending is not None:
                        await pending
                    pending = loop.run_in_executor(executor, sink.process, collector.take())
            parser.finalize()
        except MultipartParseError as exc:
            raise BadRequest(f"malformed multipart body: {exc}") from None
        _check_ended(collector)
        if pending is not None:
            await pending
            pending = None
        return sink, await loop.run_in_executor(executor, sink.finish, collector.take())
    except BaseException as exc:
        if pending is not None:
            await asyncio.wait([pending])
        await loop.run_in_executor(executor, sink.writes.close)  # no write may land after this
        core.store.abandon(sink.batch)
        if isinstance(exc, PathConflict):
            raise BadRequest(str(exc)) from None
        if isinstance(exc, StorageFull):
            raise InsufficientStorage(f"upload not stored: {exc}") from None
        raise
