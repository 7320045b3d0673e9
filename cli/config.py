"""The one typed configuration of `edgefiles serve`, built once from flags and environment."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefiles.ans.clock import parse_duration

__all__ = ["parse_duration"]  # kept here for the command line's other users

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE | re.ASCII)


def parse_size(text: str) -> int:
    """`10GiB`, `512M`, `1000000` (bytes); K/M/G/T are powers of 1024."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 10GiB, 512MiB, 1048576)")
    unit = (match.group(2) or "b").lower()[0]
    power = {"b": 0, "k": 1, "m": 2, "g": 3, "t": 4}[unit]
    return int(float(match.group(1)) * (1024**power))


LOG_LEVELS = ("debug", "info", "warning", "error")


def parse_log_level(text: str) -> str:
    if text not in LOG_LEVELS:
        raise ValueError(f"not a log level: {text!r} (one of {', '.join(LOG_LEVELS)})")
    return text


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"not HOST:PORT: {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass(frozen=True)
class ServeConfig:
    data_dir: Path
    api: tuple[str, int]
    swarm: list[str]
    peers: list[str] = field(default_factory=list)
    swarm_key_file: Path | None = None
    profile: str = "kubo-v1"
    max_upload: int = 10 << 30
    filestore_max_file: int = 1 << 30
    host_suffix: str = "actyx.localhost"
    token_ttl: float = 24 * 3600.0
    trusted_apps: frozenset[str] = frozenset()
    allowed_peers: frozenset[str] = frozenset()
    pin_uploads_for: float = 12 * 3600.0
    fetch_timeout: float = 15.0
    client_timeout: float = 60.0
    gc_above: int | None = None
    store_quota: int | None = None
    flowfuse: Any = None  # FlowFuseConfig from --flowfuse-config, when given
    storage: Any = None  # StorageSettings of the Storage API (web/storage/rules.py); None: defaults
    peer_limits: Any = None  # PeerLimits (replication/limits.py); None: defaults
    log_level: str = "info"
