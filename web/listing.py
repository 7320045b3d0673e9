"""HTML directory listings (jinja2, autoescaped)."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import quote

import jinja2


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("edgefiles.web", "templates"), autoescape=True
    )


def human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def render_listing(
    dirname: str, path: str, entries: list[tuple[str, bytes, int, bool]], access_token: str | None = None
) -> str:
    """A token given in the URL is carried into the links, so the listing can be browsed."""
    suffix = f"?access_token={quote(access_token, safe='')}" if access_token else ""
    rows = [
        {"name": name + ("/" if is_dir else ""), "href": quote(name) + ("/" if is_dir else "") + suffix,
         "size": human_size(size)}
        for name, _, size, is_dir in entries
    ]
    return _env().get_template("listing.html").render(dirname=dirname, path=path, rows=rows, suffix=suffix)
