"""Built-in extension → media type table: the same answer on every machine."""

from __future__ import annotations

TYPES = {
    "html": "text/html; charset=utf-8", "htm": "text/html; charset=utf-8",
    "css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8",
    "mjs": "text/javascript; charset=utf-8", "json": "application/json",
    "map": "application/json", "webmanifest": "application/manifest+json",
    "txt": "text/plain; charset=utf-8", "md": "text/markdown; charset=utf-8",
    "csv": "text/csv; charset=utf-8", "xml": "application/xml",
    "svg": "image/svg+xml", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
    "gif": "image/gif", "webp": "image/webp", "avif": "image/avif", "ico": "image/x-icon",
    "bmp": "image/bmp", "woff": "font/woff", "woff2": "font/woff2", "ttf": "font/ttf",
    "otf": "font/otf", "eot": "application/vnd.ms-fontobject", "wasm": "application/wasm",
    "pdf": "application/pdf", "zip": "application/zip", "gz": "application/gzip",
    "tar": "application/x-tar", "mp4": "video/mp4", "webm": "video/webm", "mp3": "audio/mpeg",
    "ogg": "audio/ogg", "wav": "audio/wav", "yaml": "application/yaml", "yml": "application/yaml",
    "xhtml": "application/xhtml+xml", "cjs": "text/javascript; charset=utf-8", "apng": "image/apng",
    "jsonld": "application/ld+json", "heic": "image/heic", "tif": "image/tiff", "tiff": "image/tiff",
    "glb": "model/gltf-binary", "gltf": "model/gltf+json", "flac": "audio/flac", "m4a": "audio/mp4",
    "mov": "video/quicktime", "ics": "text/calendar; charset=utf-8",
}
DEFAULT = "application/octet-stream"


def media_type(filename: str | None) -> str:
    if not filename or "." not in filename:
        return DEFAULT
    return TYPES.get(filename.rsplit(".", 1)[1].lower(), DEFAULT)


MAX_MEDIA_TYPE = 255  # characters of a Content-Type kept with a file


def sendable(content_type: str | None) -> bool:
    """Whether a stored Content-Type can go back in a header: some printable ASCII or tabs, at
    most MAX_MEDIA_TYPE characters (a server refuses other characters, and the answer fails)."""
    if not content_type or len(content_type) > MAX_MEDIA_TYPE:
        return False
    return all(" " <= c <= "~" or c == "\t" for c in content_type)


def type_to_send(stored: str | None, name: str | None) -> str:
    """The Content-Type to answer with for a file: the one stored with it when a header can
    carry it (an older node kept any), else the guess from its name."""
    return stored if stored is not None and sendable(stored) else media_type(name)
