"""The HTML uploader page: pick a folder, upload it, name it, list names."""

from __future__ import annotations

from functools import lru_cache

import jinja2


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("edgefiles.uploader", "."), autoescape=True)
    return env.get_template("index.html")


@lru_cache(maxsize=16)
def render(host_suffix: str, port: int | None) -> str:
    return _template().render(host_suffix=host_suffix, port=port or 80)
