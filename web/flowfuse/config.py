"""`flowforge-storage.yml`, read as upstream reads it: pure text → typed settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import yaml

log = logging.getLogger("edgefiles.flowfuse")

KNOWN_KEYS = {"base_url", "host", "port", "driver", "context", "telemetry"}
DEFAULT_PORT = 3001


class ConfigError(ValueError):
    """A config file that cannot be used; the message says why, in one line."""


@dataclass(frozen=True)
class FlowFuseConfig:
    base_url: str
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    file_quota: int | None = None  # driver.quota: used when the platform gives none
    context_quota: int | None = None
    context_options: dict = field(default_factory=dict)
    prometheus: bool = False


def parse(text: str, source: str = "config") -> FlowFuseConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"{source} is not valid YAML{line}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping of settings")
    for key in sorted(set(data) - KNOWN_KEYS):
        log.warning("%s: ignoring unknown setting %r", source, key)
    base_url = data.get("base_url")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: base_url must be the platform's http(s) URL")
    driver = _mapping(data, "driver", source)
    context = _mapping(data, "context", source)
    telemetry = _mapping(data, "telemetry", source)
    prometheus = _mapping(_mapping(telemetry, "backend", source), "prometheus", source)
    return FlowFuseConfig(
        base_url=base_url.rstrip("/"),
        host=str(data.get("host", "0.0.0.0")),
        port=_port(data.get("port", DEFAULT_PORT), source),
        file_quota=_quota(driver.get("quota"), source),
        context_quota=_quota(context.get("quota"), source),
        context_options=_mapping(context, "options", source),
        prometheus=bool(prometheus.get("enabled", False)),
    )


def _mapping(data: dict, key: str, source: str) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key} must be a mapping")
    return value


def _port(value: object, source: str) -> int:
    try:
        port = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: port must be a number, not {value!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{source}: port {port} is out of range")
    return port


def _quota(value: object, source: str) -> int | None:
    if value in (None, 0, ""):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{source}: quota must be a number of bytes, not {value!r}")
    return value
