"""Forms that carry one file (the Filestore's and the Storage API's uploads): one part named
`file`, streamed into an import as it arrives (or read whole when the body is small), and a
few small text fields. Optionally sealed (encrypted at rest, node/sealed.py) on the way, in
the import's worker thread, so what reaches the store is ciphertext only."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import msgpack
from edgefiles.node import sealed
from edgefiles.node.core import Imported
from edgefiles.node.importer import FileBuilder
from starlette.requests import Request

from .body import declared_length, parse_json
from .context import AppContext
from .errors import BadRequest, PayloadTooLarge
from .mime import DEFAULT, MAX_MEDIA_TYPE, media_type, sendable
from .paths import check_file_name
from .upload import PartCollector, UploadSink, import_upload, parse_form, part_filename

MAX_FIELD = 64 << 10
MAX_FIELDS = 32  # text fields of a form besides its file (the forms name a handful)
FORM_ALLOWANCE = 4 * MAX_FIELD  # what a form may hold besides its file
WHOLE_BODY = 1 << 20  # smaller bodies are read whole and imported in one piece
HEAD_BYTES = 8192


@dataclass(frozen=True)
class Seal:
    key: bytes
    key_id: bytes


FieldLimit = Callable[[str, str], tuple[int, str] | None]


class FormFile(PartCollector):
    """One part named `file` (a checked file name, at most `limit` bytes, its first bytes kept
    in `head`) and small fields, kept as text. `too_large` is the 413's message; a field may
    lower the limit as soon as it arrives (`field_limit(name, value)` -> (limit, message)),
    so a file bigger than its kind allows is refused while it is still arriving."""

    def __init__(self, limit: int, too_large: str | None = None,
                 field_limit: FieldLimit | None = None) -> None:
        super().__init__()
        self.limit = limit
        self.too_large = too_large or f"files are at most {limit} bytes here"
        self.field_limit = field_limit
        self.buffer = False  # keep the file's bytes here rather than stream them to an import
        self.data: list[bytes] = []
        self.head = bytearray()
        self.field_count = 0
        self.filename: str | None = None
        self.content_type = ""
        self.size = 0
        self.fields: dict[str, str] = {}
        self._in_file = False
        self._field_name: str | None = None
        self._field_data = bytearray()

    def _headers_finished(self) -> None:
        params = self.disposition()
        filename = part_filename(params)
        self._in_file = params.get("name") == "file" and filename is not None
        if self._in_file:
            if self.filename is not None:
                raise BadRequest("the upload holds one part named `file`")
            self.filename = check_file_name(filename)
            self.content_type = _media_type_given(self._headers.get("content-type", ""))
            if not self.buffer:
                self.events.append(("begin", [self.filename]))
        else:
            self._field_name = params.get("name", "")
            self._field_data.clear()

    def _data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            self._field_data.extend(data[start:end])
            if len(self._field_data) > MAX_FIELD:
                raise BadRequest("a form field is at most 64 KiB")
            return
        self.size += end - start
        if self.size > self.limit:
            raise PayloadTooLarge(self.too_large)
        if len(self.head) < HEAD_BYTES:
            self.head += data[start:min(end, start + HEAD_BYTES - len(self.head))]
        if self.buffer:
            self.data.append(bytes(data[start:end]))
        else:
            super()._data(data, start, end)

    def _part_end(self) -> None:
        if self._in_file:
            if not self.buffer:
                super()._part_end()
        elif self._field_name is not None:
            self.field_count += 1
            if self.field_count > MAX_FIELDS:  # each costs a parse: a form of 50,000 took seconds
                raise BadRequest(f"a form holds at most {MAX_FIELDS} fields besides its file")
            value = self.fields[self._field_name] = self._field_data.decode("utf-8", "replace")
            lowered = self.field_limit(self._field_name, value) if self.field_limit else None
            if lowered is not None and lowered[0] < self.limit:
                self.limit, self.too_large = lowered
                if self.size > self.limit:
                    raise PayloadTooLarge(self.too_large)

    @property
    def content_type_or_guess(self) -> str:
        given = self.content_type.strip()
        if not given or given.split(";")[0].strip().lower() == DEFAULT:
            return media_type(self.filename or "").split(";")[0]
        return given


def _media_type_given(value: str) -> str:
    """The file part's Content-Type, kept to be sent back with the file (one outside Latin-1
    made every later download of the file a 500)."""
    value = value.strip(" \t")  # whitespace around a header's value is no part of it
    if value and not sendable(value):
        raise BadRequest(f"the file's Content-Type {value[:80]!r} is not a media type "
                         f"(printable ASCII, at most {MAX_MEDIA_TYPE} characters)")
    return value


class _SealedFile:
    """A FileBuilder fed ciphertext: the header, then each segment as it completes."""

    def __init__(self, inner: FileBuilder, seal: Seal):
        self.inner = inner
        self.encryptor = sealed.Encryptor(seal.key, seal.key_id)
        inner.write(self.encryptor.head)

    def write(self, data: bytes | memoryview) -> None:
        for segment in self.encryptor.feed(data):
            self.inner.write(segment)

    def finish(self):
        self.inner.write(self.encryptor.finish())
        return self.inner.finish()


class SealingSink(UploadSink):
    def __init__(self, ctx: AppContext, seal: Seal):
        super().__init__(ctx.core, ctx.hash_pool)
        self.seal = seal

    def new_file(self) -> FileBuilder:
        return _SealedFile(super().new_file(), self.seal)  # type: ignore[return-value]


async def receive_form_file(request: Request, form: FormFile, seal: Seal | None = None) -> Imported:
    """A form's file, imported (sealed when `seal` is given) but not committed; `form` holds
    the rest.
    Bodies of up to 1 MiB are read whole and imported in one piece (a third faster for small
    files); bigger ones stream into the import as they arrive. Nothing is kept on any error,
    nor when the form has no file part (400)."""
    ctx: AppContext = request.app.state.ctx
    declared = declared_length(request)
    small = declared is not None and declared <= WHOLE_BODY
    form.buffer = small
    if small:
        await parse_form(request, form)
        if form.filename is None:
            raise BadRequest("the upload has no part named `file` holding a file")
        data = b"".join(form.data)
        if seal is not None:
            data = sealed.encrypt(seal.key, seal.key_id, data)
        return await ctx.core.import_bytes(data)
    sink = SealingSink(ctx, seal) if seal is not None else UploadSink(ctx.core, ctx.hash_pool)
    sink, root = await import_upload(request, form, ctx.core, ctx.executor, ctx.hash_pool,
                                     form.limit + FORM_ALLOWANCE, sink)
    imported = Imported(sink.batch, root, sealed.cipher_size(form.size) if seal is not None else form.size)
    if form.filename is None:
        abandon(ctx, imported)
        raise BadRequest("the upload has no part named `file` holding a file")
    return imported


def abandon(ctx: AppContext, imported: Imported) -> None:
    ctx.core.store.abandon(imported.batch)


def parse_metadata(raw: str | None) -> dict[str, Any] | None:
    """A form's `metadata` field: a JSON object (None when the field is absent)."""
    if raw is None:
        return None
    if len(raw.encode()) > MAX_FIELD:
        raise BadRequest("metadata is a JSON object of at most 64 KiB")
    not_json = "metadata is not JSON (NaN and Infinity are not JSON either)"
    too_deep = "metadata is nested too deeply"
    value = parse_json(raw, partial(BadRequest, not_json), partial(BadRequest, too_deep))
    if not isinstance(value, dict):
        raise BadRequest("metadata is a JSON object")
    try:  # what the name record carries: finite numbers, integers of at most 64 bits
        json.dumps(value, allow_nan=False)
        msgpack.packb(value)
    except (ValueError, OverflowError, TypeError, RecursionError):
        raise BadRequest("metadata holds numbers that are not finite or past 64 bits, text that is not "
                         "UTF-8, or nesting too deep") from None
    return value
