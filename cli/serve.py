"""Running a node: data-dir lock, port checks, core + libp2p host + HTTP, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import platform
import secrets
import signal
import socket
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uvicorn
from edgefiles.node.identity import NodeKey, load_or_create

from .admin import SOCKET_NAME, serve_admin_socket
from .config import ServeConfig
from .main import CliError

log = logging.getLogger("edgefiles")
STATE_DB = "state.sqlite"  # names, pins, the index: what a data directory in use holds
ready_log = logging.getLogger("edgefiles.ready")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
MMAP_THRESHOLD = 8 << 20
TRIM_THRESHOLD = 16 << 20  # 64 MiB exported no faster, and held back more freed memory
MALLOC_ENVIRONMENT = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive lock on <data>/lock for the life of the process."""
    fd = try_lock_data_dir(data_dir)
    if fd is None:
        holder = (data_dir / "lock").read_text(errors="replace").strip() or "?"
        raise CliError(f"data directory {data_dir} is in use by another edgefiles (pid {holder})")
    return fd


def try_lock_data_dir(data_dir: Path) -> int | None:
    """The exclusive lock on <data>/lock (this process's pid written in), or None while
    another process holds it (a running node)."""
    try:
        fd = os.open(data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CliError(f"cannot open the lock file {data_dir / 'lock'}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def bind_api(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CliError(f"API address {host}:{port} is already in use") from None
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def check_swarm_ports(addrs: list[str], api_port: int) -> None:
    """libp2p listens with SO_REUSEPORT and would share a taken port silently: bind plainly
    first (after the API's bind: a swarm address on the API's port is taken, and says so)."""
    for addr in addrs:
        parts = addr.strip("/").split("/")
        if len(parts) < 4 or parts[2] != "tcp" or parts[0] not in ("ip4", "ip6"):
            raise CliError(f"--swarm {addr}: expected /ip4/HOST/tcp/PORT or /ip6/HOST/tcp/PORT")
        host, port = parts[1], int(parts[3]) if parts[3].isascii() and parts[3].isdigit() else -1
        if not 0 <= port <= 65535:
            raise CliError(f"--swarm {addr}: the port must be a number from 0 to 65535")
        if port == 0:
            continue
        family = socket.AF_INET6 if parts[0] == "ip6" else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # SO_REUSEADDR: connections of a crashed predecessor in TIME_WAIT must not count;
            # a live listener (which libp2p opens with SO_REUSEPORT) still refuses the bind
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                hint = " (it is the API's port, --api)" if port == api_port else ""
                raise CliError(f"swarm address {addr} is not available: {exc.strerror}{hint}") from None


def check_allowed_peers(peer_ids: frozenset[str]) -> None:
    """Each --allow-peer a peer id as peers show theirs: any other spelling would never match."""
    from libp2p.peer.id import ID
    from multiaddr import Multiaddr

    for peer_id in peer_ids:
        try:  # a multihash (the multiaddr checks it), spelled as peers spell theirs
            same = str(Multiaddr(f"/p2p/{peer_id}")) == f"/p2p/{peer_id}"
            same = same and ID.from_base58(peer_id).to_base58() == peer_id
        except Exception:
            same = False
        if not same:
            raise CliError(f"--allow-peer {peer_id}: not a peer id (the peer's own ready line or `ipfs id` "
                           "shows it)") from None


def check_peer_addrs(addrs: list[str]) -> None:
    """libp2p must know whom it dials (Noise authenticates that peer id): /p2p/<id> is required."""
    from multiaddr import Multiaddr

    for addr in addrs:
        try:
            Multiaddr(addr)
        except Exception as exc:
            raise CliError(f"--peer {addr}: not a multiaddr ({exc})") from None
        if "/p2p/" not in addr:
            raise CliError(f"--peer {addr}: must end with /p2p/<peer id> (that node's ready line shows it)")


def load_secret(path: Path, create: bool, what: str = "swarm key") -> bytes:
    """32 secret bytes kept as hex in an owner-only file (the swarm key, the node's storage
    key-encryption key), made with fresh random bytes (synced) when `create` and missing."""
    if not path.exists():
        if not create:
            raise CliError(f"{what} file {path} does not exist")
        tmp = path.with_suffix(".tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            out.write(secrets.token_hex(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise CliError(f"cannot read the {what} file {path}: {reason}") from None
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise CliError(f"{what} file {path} must hold 64 hex characters")
    return bytes.fromhex(text)


def load_swarm_key(config: ServeConfig, new_dir: bool) -> bytes:
    """The --swarm-key file's key, else the data directory's, made when the directory is new.
    A data directory that lost its key gets no new one: the node would quietly leave its swarm
    (and its old peers would be refused from then on)."""
    if config.swarm_key_file is not None:
        return load_secret(config.swarm_key_file, create=False)
    path = config.data_dir / "swarm.key"
    if not new_dir and not path.exists():
        raise CliError(f"{path} is missing from this data directory: restore it (a copy from any node of "
                       "the swarm), or give one with --swarm-key FILE")
    return load_secret(path, create=new_dir)


def node_key(data_dir: Path) -> NodeKey:
    """The node's key from <data>/node.key, made there when missing."""
    try:
        return load_or_create(data_dir / "node.key")
    except ValueError as exc:
        raise CliError(f"{exc}: move it away to have a new key made (the node's peer id changes)") from None
    except OSError as exc:
        raise CliError(f"cannot read the node key {data_dir / 'node.key'}: {exc.strerror}") from None


def serve(config: ServeConfig) -> int:
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    ready_log.setLevel(logging.INFO)  # whatever --log-level says: what starts a node waits for the line
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create data directory {config.data_dir}: {exc.strerror}") from None
    lock_fd = lock_data_dir(config.data_dir)
    try:
        check_peer_addrs(config.peers)
        check_allowed_peers(config.allowed_peers)
        sock = bind_api(*config.api)
        check_swarm_ports(config.swarm, sock.getsockname()[1])
        new_dir = not (config.data_dir / "node.key").exists()
        # the swarm key first: a --swarm-key refused must leave a new directory new (with a
        # node key made, its next start would take it for one that lost its swarm key)
        swarm_key = load_swarm_key(config, new_dir)
        lost_key = new_dir and (config.data_dir / STATE_DB).exists()  # not a new node: one that lost its key
        key = node_key(config.data_dir)
        keep_freed_memory()
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(run_node(config, sock, key, swarm_key, lost_key))
    finally:
        os.close(lock_fd)


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve buffers of up to MMAP_THRESHOLD from its heaps, and to keep
    up to TRIM_THRESHOLD of freed heap; whether it took the settings (False: another libc, or
    the operator tuned malloc through the environment, which then stands).

    Its adaptive defaults gave the MiB-sized buffers of a transfer (a CAR's runs of sections)
    fresh pages over and over, 100,000 page faults per GiB exported: on a VM each first touch
    of a page costs microseconds. A 1 GiB CAR export: 1.72 -> 1.48 s of CPU, 0.78x -> 0.86x
    one core of hashlib (in alternation); uploads and Bitswap unchanged."""
    if platform.libc_ver()[0] != "glibc" or any(v in os.environ for v in MALLOC_ENVIRONMENT):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _loop_factory():
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def run_node(config: ServeConfig, sock: socket.socket, key, swarm_key: bytes,
                   lost_key: bool = False) -> int:
    import uvicorn
    from edgefiles.ans.names import Names
    from edgefiles.node.core import Core, CoreSettings
    from edgefiles.node.db import SchemaTooNew
    from edgefiles.node.profiles import get_profile
    from edgefiles.replication.limits import PeerLimits
    from edgefiles.replication.swarm import Swarm, SwarmSettings
    from edgefiles.web.app import create_app
    from edgefiles.web.auth import TokenAuthority
    from edgefiles.web.context import AppContext
    from edgefiles.web.http_protocol import HttpProtocol

    settings = CoreSettings(
        config.data_dir, get_profile(config.profile), config.pin_uploads_for, config.store_quota
    )
    swarm = Swarm(key, SwarmSettings(
        config.swarm, swarm_key, config.peers, set(config.allowed_peers), config.fetch_timeout,
        config.peer_limits or PeerLimits(),
    ))
    try:
        core = await Core.open(settings, key, blocks=swarm)
    except SchemaTooNew as exc:
        raise CliError(str(exc)) from None
    except (OSError, sqlite3.DatabaseError) as exc:  # a damaged database, a blocks folder it cannot use
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
        raise CliError(f"cannot open the store in {config.data_dir}{where}: {reason}") from None
    if lost_key:  # told once the store opened: a start that fails says one thing, why it fails
        log.warning("%s was missing: a new node key was made, so this node's peer id is now %s and "
                    "the tokens it signed before are refused", config.data_dir / "node.key", key.peer_id)
    try:
        names = await Names.open(core)
        flowfuse = await _flowfuse(config, core, names)
    except BaseException:  # a context store that cannot open: the node must end, not hang
        await core.close()
        raise
    executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="import")
    try:
        try:
            await swarm.start(core, names)
        except RuntimeError as exc:  # e.g. the swarm port was taken between our check and libp2p's listen
            raise CliError(str(exc)) from None
        ctx = AppContext(
            core=core,
            names=names,
            tokens=TokenAuthority(key, config.token_ttl, config.trusted_apps),
            executor=executor,
            max_upload=config.max_upload,
            filestore_max_file=config.filestore_max_file,
            host_suffix=config.host_suffix,
            api_port=sock.getsockname()[1],
            swarm=swarm,
            flowfuse=flowfuse,
        )
        debug = config.log_level == "debug"
        server = _Server(
            uvicorn.Config(
                create_app(ctx), http=HttpProtocol.with_client_timeout(config.client_timeout), ws="none",
                lifespan="off",
                log_level="debug" if debug else "warning", timeout_graceful_shutdown=10, access_log=debug,
                log_config=None,  # uvicorn's lines in the node's own format, through its root logger
                server_header=False,
            )
        )
        loop = asyncio.get_running_loop()

        def stop() -> None:
            ctx.stopping = True
            server.request_exit()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        swarm.host.on_failure = stop  # a node cut off from its swarm must not go on
        ctx.storage = await _storage(config, ctx, swarm_key)
        admin_socket = await serve_admin_socket(config.data_dir, ctx.accounts, ctx.fsck)
        background = [asyncio.create_task(_announce(server, sock, swarm)),
                      asyncio.create_task(core.keep_below(config.gc_above))]
        await server.serve(sockets=[sock])
        for task in background:
            task.cancel()
        if admin_socket is not None:
            admin_socket.close()
        (config.data_dir / SOCKET_NAME).unlink(missing_ok=True)
    finally:
        swarm.stop()
        if flowfuse is not None:
            await flowfuse.close()
        executor.shutdown(wait=True, cancel_futures=True)
        await core.close()
    if swarm.host.failed.is_set():
        log.error("stopped: the swarm side failed (see above); nothing acknowledged is lost")
        return 1
    log.info("stopped cleanly")
    return 0


async def _storage(config: ServeConfig, ctx, swarm_key: bytes):
    """The Storage API: organization keys (kept under the node's key-encryption key, shared
    sealed under the swarm key) and presigned URLs any member of the swarm honours."""
    from edgefiles.ans.orgkeys import OrgKeys, derive
    from edgefiles.web.storage.objects import Storage
    from edgefiles.web.storage.rules import StorageSettings

    kek = load_secret(config.data_dir / "storage.kek", create=True, what="key-encryption key")
    keys = OrgKeys(ctx.accounts, ctx.core.db, kek, swarm_key)
    await keys.load()
    return Storage(ctx.named_files, ctx.accounts, keys, config.storage or StorageSettings(),
                   derive(swarm_key, b"edgefiles presigned urls v1"))


async def _flowfuse(config: ServeConfig, core, names):
    if config.flowfuse is None:
        return None
    from edgefiles.web.flowfuse import FlowFuse

    facade = FlowFuse(config.flowfuse, core, names)
    try:
        await facade.open()
    except BaseException as exc:
        await facade.close()
        if isinstance(exc, ValueError):
            raise CliError(f"FlowFuse config: {exc}") from None
        raise
    log.info("serving the FlowFuse file server API (/v1) for platform %s", config.flowfuse.base_url)
    return facade


CANCELLED_REQUESTS_WAIT = 5.0


class _Server(uvicorn.Server):
    """uvicorn re-raises a captured SIGTERM after shutdown (exit 143); we want exit 0."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield

    def request_exit(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn cancels the requests still running at its graceful timeout (an upload whose
        client stalled) and returns at once; their cleanup needs the import threads and the
        store, which close after this, so it runs first (it failed with "cannot schedule new
        futures after shutdown", and the upload's abort never ran)."""
        await super().shutdown(sockets)
        if self.server_state.tasks:
            await asyncio.wait(list(self.server_state.tasks), timeout=CANCELLED_REQUESTS_WAIT)


async def _announce(server, sock: socket.socket, swarm) -> None:
    while not server.started:
        await asyncio.sleep(0.02)
    host, port = sock.getsockname()[:2]  # the port bound: --api HOST:0 asks for any free one
    ready_log.info("edgefiles ready: api %s swarm %s", api_url(host, port), " ".join(swarm.addrs()))


def api_url(host: str, port: int) -> str:
    """Where the API answers, an IPv6 host in brackets as URLs write it."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
