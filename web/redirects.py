"""A site's `_redirects` file (the IPFS web redirects file specification): its rules, and
which one a path that is not in the site's DAG meets (pure).

    from to [status]      # e.g. `/* /index.html 200`: a single-page app's deep links

`from` is a path of literal segments, `:placeholder`s (one segment each) and at most one
`*` at its end (the rest of the path, as `:splat`). `to` is a path of the site or an
http(s) URL, the placeholders of `from` filled in. The status is 301 (the default), 302,
303, 307 or 308 (a redirect), 200 (`to` served in place of the path), or 404, 410 or 451
(`to` served with that status). The first rule that matches wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

MAX_BYTES = 64 << 10  # the specification's limit on the file
FILE_NAME = "_redirects"
REDIRECTS = frozenset({301, 302, 303, 307, 308})
SERVED = frozenset({200, 404, 410, 451})
DEFAULT_STATUS = 301
PLACEHOLDER = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)")


class RedirectsInvalid(ValueError):
    """The file cannot be read as rules; the message names the line."""


@dataclass(frozen=True, slots=True)
class Rule:
    source: tuple[str, ...]  # the segments of `from`, without a trailing `*`
    splat: bool  # `from` ends in `*`
    to: str
    status: int


def parse(data: bytes) -> list[Rule]:
    """The rules of a `_redirects` file, in order; RedirectsInvalid for anything else."""
    check_size(len(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RedirectsInvalid(f"{FILE_NAME} is not UTF-8 text") from None
    rules = []
    for number, line in enumerate(text.split("\n"), 1):
        fields = line.removesuffix("\r").split()
        if fields and not fields[0].startswith("#"):
            try:
                rules.append(_rule(fields))
            except RedirectsInvalid as exc:
                raise RedirectsInvalid(f"{FILE_NAME} line {number}: {exc}") from None
    return rules


def check_size(size: int) -> None:
    """RedirectsInvalid for a file over the specification's limit (before it is read)."""
    if size > MAX_BYTES:
        raise RedirectsInvalid(f"{FILE_NAME} is {size} bytes, over the limit of {MAX_BYTES}")


def _rule(fields: list[str]) -> Rule:
    if len(fields) not in (2, 3):
        raise RedirectsInvalid(f"a rule is `from to [status]`, not {len(fields)} fields")
    source, to = fields[0], fields[1]
    if not source.startswith("/"):
        raise RedirectsInvalid(f"`from` must be a path starting with /, not {source!r}")
    status = _status(fields[2]) if len(fields) == 3 else DEFAULT_STATUS
    is_url = to.startswith(("http://", "https://"))
    # `//host/` and `/\host/` read as paths here, but a browser takes them to another host
    if not (to.startswith("/") and not to.startswith(("//", "/\\")) or is_url):
        raise RedirectsInvalid(f"`to` must be a path starting with / (one) or an http(s) URL, not {to!r}")
    if is_url and status not in REDIRECTS:
        raise RedirectsInvalid(f"a URL can only be redirected to (a 3xx status), not served with {status}")
    segments = source.strip("/").split("/") if source.strip("/") else []
    splat = bool(segments) and segments[-1] == "*"
    if splat:
        segments.pop()
    if "*" in "".join(segments):
        raise RedirectsInvalid("`*` may only end `from`, as a segment of its own")
    return Rule(tuple(segments), splat, to, status)


def _status(text: str) -> int:
    if text.endswith("!"):
        raise RedirectsInvalid("forced rules (a status ending in !) are not supported")
    known = REDIRECTS | SERVED
    if not (text.isascii() and text.isdigit()) or int(text) not in known:
        raise RedirectsInvalid(f"status {text!r} is none of {', '.join(map(str, sorted(known)))}")
    return int(text)


def match(rules: list[Rule], segments: list[str]) -> tuple[str, int] | None:
    """The first rule `segments` (a path's, decoded) meets: its `to` with the placeholders
    filled in (segments percent-encoded again), and its status; None when none matches."""
    for rule in rules:
        values = _bind(rule, segments)
        if values is not None:
            return _filled(rule.to, values), rule.status
    return None


def _filled(to: str, values: dict[str, str]) -> str:
    """`to` with each :placeholder that has a value replaced by it, percent-encoded (an
    unknown one stays as it is written)."""
    encoded = {key: quote(value, safe="/") for key, value in values.items()}
    return PLACEHOLDER.sub(lambda m: encoded.get(m.group(1), m.group(0)), to)


def _bind(rule: Rule, segments: list[str]) -> dict[str, str] | None:
    """The placeholders' values when `segments` matches `rule`, else None."""
    fixed = len(rule.source)
    if len(segments) < fixed or (len(segments) > fixed and not rule.splat):
        return None
    values = {}
    for pattern, segment in zip(rule.source, segments, strict=False):
        if pattern.startswith(":") and len(pattern) > 1:
            values[pattern[1:]] = segment
        elif pattern != segment:
            return None
    if rule.splat:
        values["splat"] = "/".join(segments[fixed:])
    return values
