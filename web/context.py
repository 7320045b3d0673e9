"""What the web layer is handed: the core, names, tokens, the swarm view and limits."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgefiles.ans.accounts import Accounts
from edgefiles.ans.files import NamedFiles
from edgefiles.ans.names import Names
from edgefiles.node.core import Core

from .auth import TokenAuthority
from .content import ContentServer
from .fsck_api import FsckJobs


class SwarmView(Protocol):
    def addrs(self) -> list[str]: ...
    def peers(self) -> list[str]: ...
    def counters(self) -> dict[str, int]: ...


class NoSwarm:
    def addrs(self) -> list[str]:
        return []

    def peers(self) -> list[str]:
        return []

    def counters(self) -> dict[str, int]:
        return {}


@dataclass
class AppContext:
    core: Core
    names: Names
    tokens: TokenAuthority
    executor: Executor
    max_upload: int = 10 << 30
    filestore_max_file: int = 1 << 30
    host_suffix: str = "actyx.localhost"
    api_port: int | None = None  # the port the HTTP API listens on (None: the request's)
    swarm: SwarmView = field(default_factory=NoSwarm)
    hash_pool: Executor = field(default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="hash"))
    flowfuse: Any = None  # the FlowFuse facade, when --flowfuse-config is given
    storage: Any = None  # the Storage API (web/storage), set up by `serve`
    stopping: bool = False  # set by `serve` once asked to stop

    def __post_init__(self) -> None:
        self.content = ContentServer(self.core)
        # a name's PUT or DELETE made conditional (If-Match, If-None-Match) checks and writes
        # under it: two clients that read one version cannot both repoint from it
        self.conditional_name_writes = asyncio.Lock()
        self.accounts = Accounts(self.names.registry)
        self.fsck = FsckJobs(lambda repair, progress: self.core.fsck(self.names.targets(), repair, progress))
        # one named-files layer for every facade: the FlowFuse facade's when it is on
        self.named_files: NamedFiles = (self.flowfuse.files if self.flowfuse is not None
                                        else NamedFiles(self.core, self.names))
