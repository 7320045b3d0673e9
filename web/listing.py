"""HTML directory listings (jinja2, autoescaped): breadcrumbs, then each entry's size and type."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import quote, unquote

import jinja2

from .mime import media_type


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


def breadcrumbs(path: str, depth: int, suffix: str) -> list[dict[str, str]]:
    """The listed DAG's root (its CID or name, `/` on the host route), then one crumb per folder
    below it (`depth` of them, the last one this listing's), each a link with the token carried.
    `path` is the request's as sent (percent-encoded): links keep it, names show it decoded."""
    parts = [p for p in path.split("/") if p]
    top = len(parts) - depth
    crumbs = [{"name": unquote(parts[top - 1]) if top else "/", "href": "/" + "/".join(parts[:top])}]
    crumbs += [{"name": unquote(part), "href": "/" + "/".join(parts[:top + i + 1])}
               for i, part in enumerate(parts[top:])]
    for crumb in crumbs:
        crumb["href"] = crumb["href"].rstrip("/") + "/" + suffix
    return crumbs


def render_listing(
    dirname: str, path: str, entries: list[tuple[str, bytes, int, bool]], access_token: str | None = None,
    depth: int = 0,
) -> str:
    """`path`: the request's, percent-encoded as sent. A token given in the URL is carried into
    the links, so the listing can be browsed."""
    suffix = f"?access_token={quote(access_token, safe='')}" if access_token else ""
    rows = [
        {"name": name + ("/" if is_dir else ""), "href": quote(name) + ("/" if is_dir else "") + suffix,
         "size": "—" if is_dir else human_size(size), "bytes": size,
         "type": "folder" if is_dir else media_type(name).split(";")[0]}
        for name, _, size, is_dir in sorted(entries, key=lambda e: (not e[3], e[0]))
    ]
    return _env().get_template("listing.html").render(
        dirname=dirname, path=unquote(path), rows=rows, suffix=suffix,
        crumbs=breadcrumbs(path, depth, suffix), below_root=depth > 0)
