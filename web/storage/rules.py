"""The Storage API's rules, as pure functions: unique object names, what each category takes
(by name and by the first bytes of the content), and paging."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

CATEGORIES = ("data_source", "profile_image", "general")
DEFAULT_CATEGORY = "general"
SNIFF_BYTES = 8192  # how much of the start of a file the type checks look at
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 100
MAX_NAME_BYTES = 255
_UNSAFE = re.compile(r"[^\w.-]")  # \w: letters and digits of any script, and `_`

IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"),
               (b"GIF89a", "GIF"))
DATA_EXTENSIONS = ("csv", "json", "parquet", "xlsx", "xls")


@dataclass(frozen=True)
class StorageSettings:
    buckets: tuple[str, ...] = ("files",)
    org_quota: int = 1 << 30
    max_file: dict[str, int] = field(default_factory=lambda: {
        "profile_image": 5 << 20, "data_source": 500 << 20, "general": 1 << 30})

    @property
    def largest_file(self) -> int:
        return max(self.max_file.values())


class RuleBroken(ValueError):
    """An upload a rule refuses; `status` is the HTTP status that says which kind of rule."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def split_name(original: str) -> tuple[str, str]:
    """(stem, extension) of a file name: split at its last dot (a leading dot is part of the
    stem, as in `.env`), each made safe: anything but letters, digits, `-`, `_` and `.`
    becomes `_`."""
    stem, dot, ext = original.rpartition(".")
    if not dot or not stem:
        stem, ext = original, ""
    return _UNSAFE.sub("_", stem), _UNSAFE.sub("_", ext)


def unique_name(original: str, now: datetime | None = None, token: str | None = None) -> str:
    """`{stem}_{YYYYMMDD_HHMMSS}_{uuid8}.{ext}` (UTC); no extension, no trailing dot. The stem
    (then the extension) is cut so the name stays within 255 bytes, a path segment's limit."""
    stem, ext = split_name(original)
    stamp = "%Y%m%d_%H%M%S"
    when = now.astimezone(UTC).strftime(stamp) if now else time.strftime(stamp, time.gmtime())
    middle = f"_{when}_{token or secrets.token_hex(4)}"  # a uuid4's first 8 hex digits are as random
    while len(f"{stem}{middle}.{ext}".encode()) > MAX_NAME_BYTES and stem:
        stem = stem[:-1]
    while len(f"{stem}{middle}.{ext}".encode()) > MAX_NAME_BYTES:
        ext = ext[:-1]
    return f"{stem}{middle}.{ext}" if ext else f"{stem}{middle}"


def extension(name: str) -> str:
    return name.rpartition(".")[2].lower() if "." in name.lstrip(".") else ""


def image_kind(head: bytes) -> str | None:
    for magic, kind in IMAGE_MAGIC:
        if head.startswith(magic):
            return kind
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut at the end of the sniffed bytes is fine
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def _data_matches(ext: str, head: bytes) -> bool:
    if ext == "csv":
        return _is_text(head)
    if ext == "json":
        text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
        return _is_text(head) and text[:1] in (b"{", b"[")
    if ext == "parquet":
        return head.startswith(b"PAR1")
    if ext == "xlsx":
        return head.startswith(b"PK\x03\x04")
    return head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")  # xls: an OLE2 compound file


def check_upload(category: str, filename: str, head: bytes, size: int, settings: StorageSettings) -> None:
    """Refuse (RuleBroken) a file its category does not take: 415 for a type, 413 for a size."""
    limit = settings.max_file[category]
    if size > limit:
        raise RuleBroken(413, f"{category} files are at most {limit} bytes; this one has {size}")
    if category == "profile_image" and image_kind(head) is None:
        raise RuleBroken(415, "a profile_image must be a PNG, JPEG, GIF or WebP image "
                              "(checked by its content)")
    if category == "data_source":
        ext = extension(filename)
        if ext not in DATA_EXTENSIONS:
            raise RuleBroken(415, "a data_source must be CSV, JSON, Parquet or Excel (.csv, .json, .parquet, "
                                  f".xlsx, .xls); {filename!r} is not")
        if not _data_matches(ext, head):
            raise RuleBroken(415, f"the content of {filename!r} is not {ext.upper()} "
                                  "(checked by its first bytes)")


def category_of(value: str | None) -> str:
    category = (value or DEFAULT_CATEGORY).strip()
    if category not in CATEGORIES:
        raise RuleBroken(400, f"category {category!r}: one of {', '.join(CATEGORIES)}")
    return category


@dataclass(frozen=True)
class Page:
    page: int
    size: int

    def of(self, items: list[Any]) -> tuple[list[Any], dict[str, Any]]:
        """The items of this page, and the pagination object that describes it."""
        total = len(items)
        pages = -(-total // self.size)
        start = (self.page - 1) * self.size
        return items[start:start + self.size], {
            "page": self.page, "page_size": self.size, "total_count": total, "total_pages": pages,
            "has_next": self.page < pages, "has_previous": self.page > 1}


def page_of(query: dict[str, str]) -> Page:
    """`page` (from 1) and `page_size` (1..100, default 20) of a query; RuleBroken(400) else."""
    try:
        page = int(query.get("page", "1"))
        size = int(query.get("page_size", str(DEFAULT_PAGE_SIZE)))
    except ValueError:
        raise RuleBroken(400, "page and page_size are whole numbers") from None
    if page < 1:
        raise RuleBroken(400, "page starts at 1")
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise RuleBroken(400, f"page_size is 1 to {MAX_PAGE_SIZE}")
    return Page(page, size)
