"""`edgefiles serve` and the client commands (`add`, `name`, `get`)."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from typing import TypeVar

from .config import ServeConfig, parse_duration, parse_hostport, parse_log_level, parse_size
from .main import CliError

T = TypeVar("T")


class FromEnvironment(str):
    """A flag's value taken from its EDGEFILES_<FLAG> variable, which an error then names."""

    variable: str


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(f"EDGEFILES_{name}")
    if value is None:
        return default
    taken = FromEnvironment(value)
    taken.variable = f"EDGEFILES_{name}"
    return taken


def setting(args: argparse.Namespace, flag: str, convert: Callable[[str], T]) -> T:
    """serve's --`flag` as `convert` reads it: the one check its value gets, whether given as
    the flag or as its variable; a one-line error naming which of them holds a bad value."""
    text = getattr(args, flag.replace("-", "_"))
    try:
        return convert(text)
    except ValueError as exc:
        where = text.variable if isinstance(text, FromEnvironment) else f"--{flag}"
        raise CliError(f"{where}: {exc}") from None


def _env_list(name: str) -> list[str]:
    value = _env(name)
    return [v for v in value.replace(",", " ").split()] if value else []


def add_serve_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run a node: Files API, host route and swarm",
        description="Run a node. Every flag also reads EDGEFILES_<FLAG> (e.g. EDGEFILES_DATA).",
    )
    p.add_argument("--data", default=_env("DATA", "./edgefiles-data"),
                   help="data directory: blocks, names, keys (default ./edgefiles-data)")
    p.add_argument("--api", default=_env("API"),
                   help="HTTP listen HOST:PORT (default 127.0.0.1:4454, or a FlowFuse config's host:port)")
    p.add_argument("--swarm", action="append", default=None, metavar="MULTIADDR",
                   help="libp2p listen address (repeatable; default /ip4/0.0.0.0/tcp/4001)")
    p.add_argument("--peer", action="append", default=None, metavar="MULTIADDR",
                   help="bootstrap peer to dial (repeatable)")
    p.add_argument("--swarm-key", default=_env("SWARM_KEY"), metavar="FILE",
                   help="swarm membership key (default <data>/swarm.key, created when new)")
    p.add_argument("--allow-peer", action="append", default=None, metavar="PEERID",
                   help="admit a peer without the swarm key, for blocks only (repeatable)")
    p.add_argument("--profile", default=_env("PROFILE", "kubo-v1"),
                   help="how uploads become DAGs: kubo-v1 (ipfs add --cid-version=1), actyx (an Actyx "
                        "node's CIDs) or unixfs-v1-2025 (IPIP-499, 1 MiB chunks: Helia's defaults)")
    p.add_argument("--max-upload", default=_env("MAX_UPLOAD", "10GiB"), metavar="BYTES",
                   help="largest request body of the API: an upload, a CAR import, a name's CID, an "
                        "app manifest (413 past it; default 10GiB)")
    p.add_argument("--filestore-max-file", default=_env("FILESTORE_MAX_FILE", "1GiB"), metavar="BYTES",
                   help="largest file the Filestore facade takes (default 1GiB)")
    p.add_argument("--storage-bucket", action="append", default=None, metavar="NAME",
                   help="a bucket of the Storage API (repeatable; the first takes uploads that name none;"
                        " default: one named files)")
    p.add_argument("--storage-org-quota", default=_env("STORAGE_ORG_QUOTA", "1GiB"), metavar="BYTES",
                   help="an organization's Storage API quota unless `edgefiles admin org quota` sets one"
                        " (default 1GiB)")
    for category, default in STORAGE_CATEGORIES.items():
        p.add_argument(f"--storage-max-{category}", metavar="BYTES",
                       default=_env(f"STORAGE_MAX_{category.upper().replace('-', '_')}", default),
                       help=f"largest {category.replace('-', '_')} file of the Storage API ({default})")
    p.add_argument("--host-suffix", default=_env("HOST_SUFFIX", "actyx.localhost"),
                   help="names are served at http://<name>.<suffix>/ (default actyx.localhost)")
    p.add_argument("--token-ttl", default=_env("TOKEN_TTL", "24h"), metavar="DURATION",
                   help="how long an app token from /api/v2/auth is valid (default 24h)")
    p.add_argument("--trust-app", action="append", default=None, metavar="APPID",
                   help="trust an unsigned app id besides com.example.* (repeatable)")
    p.add_argument("--pin-uploads-for", default=_env("PIN_UPLOADS_FOR", "12h"), metavar="DURATION",
                   help="how long an upload is kept before garbage collection may free it, unless a "
                        "name points at it (default 12h, as Actyx)")
    p.add_argument("--fetch-timeout", default=_env("FETCH_TIMEOUT", "15"), metavar="SECONDS",
                   help="how long a read waits for blocks from the swarm before it is a 404 (default 15;"
                        " also e.g. 500ms, 1m)")
    p.add_argument("--client-timeout", default=_env("CLIENT_TIMEOUT", "60s"), metavar="DURATION",
                   help="how long a client may send nothing while its request is incomplete, or while "
                        "a new connection has sent no request, before the node closes it (default 60s); "
                        "a request's line and headers must come whole within four times this")
    p.add_argument("--gc-above", default=_env("GC_ABOVE"), metavar="BYTES",
                   help="free unpinned blocks once the store holds more than this (default: never)")
    p.add_argument("--store-quota", default=_env("STORE_QUOTA"), metavar="BYTES",
                   help="refuse uploads (507) once the store holds this many bytes")
    limits = p.add_argument_group(
        "limits per swarm peer", "what one peer may cost this node; beyond them the excess is dropped "
        "(records, connections, streams), forgotten (its oldest wants) or held back (messages, bytes "
        "to send), counted in "
        "edgefiles_peer_limit_hits_total{limit} and logged once a minute per peer")
    for flag, default, text in PEER_LIMIT_FLAGS:
        metavar = "BYTES" if flag == "inflight" else "N"
        limits.add_argument(f"--peer-max-{flag}", default=_env(f"PEER_MAX_{flag.upper()}", default),
                            metavar=metavar, help=f"{text} (default {default})")
    p.add_argument("--flowfuse-config", default=_env("FLOWFUSE_CONFIG"), metavar="FILE",
                   help="serve the FlowFuse file server API (/v1) as set in this flowforge-storage.yml"
                   " (default $FLOWFORGE_HOME/etc/flowforge-storage.yml when that exists)")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "info"),
                   help="debug, info, warning or error (default info; the ready line is logged at any)")
    p.set_defaults(func=cmd_serve)


# the Storage API's file categories, each with the default size of its largest file
STORAGE_CATEGORIES = {"profile-image": "5MiB", "data-source": "500MiB", "general": "1GiB"}
PEER_LIMIT_FLAGS = (
    ("connections", "4", "connections open at once"),
    ("streams", "256", "inbound Bitswap streams open at once"),
    ("wants", "16384", "wants kept open with this node (past it, its oldest are forgotten)"),
    ("inflight", "64MiB", "block bytes queued to send to it"),
    ("messages", "2000", "Bitswap and name messages per second"),
    ("records", "5000", "gossiped name records per second"),
)


def peer_limits(args: argparse.Namespace):
    from edgefiles.replication.limits import PeerLimits

    values = {}
    for flag, _, _ in PEER_LIMIT_FLAGS:
        value = setting(args, f"peer-max-{flag}", _above_zero(parse_size if flag == "inflight" else float))
        values[flag] = value if flag in ("messages", "records") else int(value)
    return PeerLimits(**values)


def _above_zero(convert: Callable[[str], float]) -> Callable[[str], float]:
    def checked(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            value = 0
        if not value > 0:  # nan too
            raise ValueError(f"a number above 0, not {text!r}")
        return value

    return checked


LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"


def _host_suffix(text: str) -> str:
    """The end of the host names the host route answers (dots around it dropped, lower-cased):
    DNS labels; an empty one would take every request for a name."""
    suffix = text.strip(".").lower()
    if not re.fullmatch(rf"{LABEL}(\.{LABEL})*", suffix):
        raise ValueError(f"{text!r} is not the end of a host name, like actyx.localhost (letters, digits "
                         "and hyphens, dots between)")
    return suffix


def _positive_duration(text: str) -> float:
    """A duration above 0 (a token valid 0 s is born expired); parse_duration's own words for
    text that is no duration."""
    seconds = parse_duration(text)
    if not seconds > 0:
        raise ValueError(f"a duration above 0, not {text!r}")
    return seconds


def build_config(args: argparse.Namespace) -> ServeConfig:
    from pathlib import Path

    from edgefiles.node.profiles import get_profile

    flowfuse = load_flowfuse(args.flowfuse_config)
    return ServeConfig(
        data_dir=Path(args.data),
        api=setting(args, "api", parse_hostport) if args.api else default_api(flowfuse),
        swarm=args.swarm or _env_list("SWARM") or ["/ip4/0.0.0.0/tcp/4001"],
        peers=args.peer or _env_list("PEER"),
        swarm_key_file=Path(args.swarm_key) if args.swarm_key else None,
        profile=setting(args, "profile", lambda text: get_profile(text).name),
        max_upload=setting(args, "max-upload", parse_size),
        filestore_max_file=setting(args, "filestore-max-file", parse_size),
        host_suffix=setting(args, "host-suffix", _host_suffix),
        token_ttl=setting(args, "token-ttl", _positive_duration),
        trusted_apps=frozenset(args.trust_app or _env_list("TRUST_APP")),
        allowed_peers=frozenset(args.allow_peer or _env_list("ALLOW_PEER")),
        pin_uploads_for=setting(args, "pin-uploads-for", parse_duration),
        fetch_timeout=setting(args, "fetch-timeout", parse_duration),
        client_timeout=setting(args, "client-timeout", _positive_duration),
        gc_above=setting(args, "gc-above", parse_size) if args.gc_above else None,
        store_quota=setting(args, "store-quota", parse_size) if args.store_quota else None,
        flowfuse=flowfuse,
        storage=storage_settings(args),
        peer_limits=peer_limits(args),
        log_level=setting(args, "log-level", parse_log_level),
    )


def storage_settings(args: argparse.Namespace):
    from edgefiles.web.storage.rules import StorageSettings

    buckets = tuple(args.storage_bucket or _env_list("STORAGE_BUCKET") or ["files"])
    for bucket in buckets:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            raise CliError(f"--storage-bucket {bucket!r}: 3 to 63 lower-case letters, digits, '.' or '-'")
    limits = {category.replace("-", "_"): setting(args, f"storage-max-{category}", parse_size)
              for category in STORAGE_CATEGORIES}
    return StorageSettings(buckets, setting(args, "storage-org-quota", parse_size), limits)


def load_flowfuse(path: str | None):
    """The FlowFuse settings: --flowfuse-config, else $FLOWFORGE_HOME/etc/flowforge-storage.yml
    when that file exists (as upstream looks for it), else none."""
    from pathlib import Path

    from edgefiles.web.flowfuse.config import ConfigError, parse

    if path is None:
        home = os.environ.get("FLOWFORGE_HOME")
        candidate = Path(home) / "etc" / "flowforge-storage.yml" if home else None
        if candidate is None or not candidate.is_file():
            return None
        path = str(candidate)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read FlowFuse config {path}: {exc.strerror}") from None
    try:
        return parse(text, path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def default_api(flowfuse) -> tuple[str, int]:
    """Without --api: upstream's host and port (PORT overrides it) for a FlowFuse node."""
    if flowfuse is None:
        return "127.0.0.1", 4454
    port = os.environ.get("PORT")
    if not port:
        return flowfuse.host, flowfuse.port
    try:
        return flowfuse.host, parse_hostport(f"x:{port}")[1]
    except ValueError:
        raise CliError(f"PORT: not a port number: {port!r}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve

    return serve(build_config(args))


def add_client_commands(sub: argparse._SubParsersAction) -> None:
    from .client_commands import register

    register(sub)
