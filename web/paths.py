"""The one path validator: upload filenames and URL paths both end up as checked segments."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request

from .errors import BadRequest

MAX_SEGMENT_BYTES = 255


class AnyPath(Convertor[str]):
    """Starlette's `path`, line breaks included: a file whose name holds one (a multipart
    filename takes it, a CAR or a peer's DAG may hold it) is reached as `%0A`, not a 404 of
    no route. Routes take their tails from `raw_path` and check them there."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", AnyPath())


def utf8_size(text: str) -> int:
    """Bytes of `text` in UTF-8; a 400 for text that has none (bytes a header carried that are
    not UTF-8 arrive as lone surrogates)."""
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        raise BadRequest("a name must be UTF-8") from None


def check_segment(seg: str) -> str:
    if seg in ("", ".", ".."):
        raise BadRequest(f"unsafe or empty path segment {seg!r}")
    if "\\" in seg or "\x00" in seg or "/" in seg:
        raise BadRequest(f"path segment {seg!r} holds a backslash, slash or NUL")
    if utf8_size(seg) > MAX_SEGMENT_BYTES:
        raise BadRequest("path segment longer than 255 bytes")
    return seg


def check_file_name(name: str) -> str:
    """A facade's file name: one path segment with nothing that could climb or hide (no '/',
    '\\', '..' anywhere, no control characters), 1 to 255 bytes."""
    if not name or name == "." or utf8_size(name) > MAX_SEGMENT_BYTES:
        raise BadRequest(f"a file name is 1 to {MAX_SEGMENT_BYTES} bytes, and not '.'")
    if "/" in name or "\\" in name or ".." in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BadRequest("a file name has no '/', '\\', '..' or control characters")
    return name


def name_in_path(tail: str) -> str:
    """The one file name a raw (percent-encoded) path tail holds, decoded once and checked."""
    if "/" in tail:
        raise BadRequest("a file name has no '/'")
    try:
        return check_file_name(unquote_to_bytes(tail).decode())
    except UnicodeDecodeError:
        raise BadRequest("a file name is UTF-8") from None


def upload_segments(filename: str) -> list[str]:
    """Segments of a multipart filename, taken literally; one leading '/' is dropped."""
    lowered = filename.lower()
    if "%2e%2e" in lowered or "%2f" in lowered:  # no URL could reach such a file
        raise BadRequest(f"filename {filename!r} holds an encoded traversal")
    path = filename[1:] if filename.startswith("/") else filename
    return [check_segment(seg) for seg in path.split("/")]


def raw_path(request: Request) -> str:
    """The request path exactly as sent, still percent-encoded, without the query."""
    return request.scope.get("raw_path", request.url.path.encode()).decode("latin-1").split("?")[0]


def raw_tail(request: Request, prefix: str) -> str:
    """What follows `prefix` (a path ending in '/', as the route matched it: decoded) in the
    raw path. A client may percent-encode any character of the prefix (`/filestore/%66iles/`),
    so the prefix's segments are counted, not its characters; "" when the raw path has no
    more segments than the prefix."""
    assert prefix.endswith("/")
    skipped = prefix.count("/")
    parts = raw_path(request).split("/", skipped)
    return parts[skipped] if len(parts) > skipped else ""


def url_segments(raw_path: str) -> list[str]:
    """Percent-decoded segments of a URL path tail (no leading '/'); empty tail → []."""
    if raw_path == "":
        return []
    return [url_segment(part) for part in raw_path.split("/")]


def url_segment(raw: str) -> str:
    """One percent-encoded path segment, decoded and checked (an empty one is refused)."""
    try:
        seg = unquote_to_bytes(raw).decode()
    except UnicodeDecodeError:
        raise BadRequest("path segment is not UTF-8") from None
    return check_segment(seg)
