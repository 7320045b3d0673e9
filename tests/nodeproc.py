"""Start and stop real `edgefiles serve` processes for black-box tests."""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

APP = {"appId": "com.example.tests", "displayName": "tests", "version": "1.0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, data: Path, *extra: str, api_port: int | None = None, swarm_port: int | None = None,
                 preexec=None):
        self.data = data
        self.port = api_port or free_port()
        self.swarm_port = swarm_port if swarm_port is not None else free_port()
        self._ports_chosen = api_port is None and swarm_port is None  # ours to change if taken
        self.extra = list(extra)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data.parent / f"{data.name}-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.preexec = preexec
        self._token: str | None = None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "edgefiles", "serve", "--data", str(self.data),
            "--api", f"127.0.0.1:{self.port}", "--swarm", f"/ip4/127.0.0.1/tcp/{self.swarm_port}",
            *self.extra,
        ]

    def start(self, wait: bool = True) -> Node:
        self.log = open(self.log_path, "ab")
        self._log_start = self.log.tell()
        self.proc = subprocess.Popen(
            self.command(), stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=self.preexec,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                if self._ports_chosen and "in use" in self.output()[self._log_start :]:
                    self._restart_on_other_ports()  # a free port we picked was taken meanwhile
                    continue
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.output()}")
            if "edgefiles ready" in self.output()[self._log_start :]:
                return
            time.sleep(0.05)
        raise RuntimeError(f"node not ready after {timeout}s:\n{self.output()}")

    def _restart_on_other_ports(self) -> None:
        self.log.close()
        self.port, self.swarm_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start(wait=False)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.log.close()

    @property
    def swarm_addr(self) -> str:
        """The full multiaddr (with /p2p/) from the ready line."""
        for line in self.output().splitlines():
            if "edgefiles ready" in line:
                return next(w for w in line.split() if "/p2p/" in w)
        raise RuntimeError("node has not announced its swarm address")

    @property
    def peer_id(self) -> str:
        return self.swarm_addr.rsplit("/", 1)[1]

    def token(self) -> str:
        if self._token is None:
            r = httpx.post(f"{self.url}/api/v2/auth", json=APP)
            r.raise_for_status()
            self._token = r.json()["token"]
        return self._token

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token()}"},
                            timeout=60, **kw)

    def raw_request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """Sent exactly as written: HTTP clients like httpx remove dot segments before sending."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            return r.status, r.read().decode(errors="replace")
        finally:
            conn.close()

    def raw_exchange(self, request: bytes) -> tuple[bytes, bytes]:
        """(head, body) of the answer to `request`, bytes sent exactly as given (a request no
        HTTP client would send), read until the node closes the connection."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as conn:
            conn.sendall(request)
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        return head, body

    def pins(self) -> int:
        with self.client() as c:
            return c.get("/api/v2/node/info").json()["pins"]

    def start_unfinished_upload(self, sent: int) -> socket.socket:
        """A connection that announces 100 MB of multipart upload and sends only `sent` bytes of it."""
        s = socket.create_connection(("127.0.0.1", self.port))
        s.sendall(
            b"POST /api/v2/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + self.token().encode()
            + b"\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 100000000\r\n\r\n"
            + b'--B\r\nContent-Disposition: form-data; name="f"; filename="a.bin"\r\n\r\n' + b"y" * sent
        )
        return s

    def upload(self, files: list[tuple[str, bytes]]) -> httpx.Response:
        with self.client() as c:
            return c.post("/api/v2/files", files=[("file", (name, data)) for name, data in files])


def at_once(action: Callable[[], int], count: int) -> list[int]:
    """What `action` returns, run by `count` threads let go at the same moment (a race)."""
    start, results = threading.Barrier(count), []

    def run() -> None:
        start.wait()
        results.append(action())

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def wait_until(predicate, timeout: float = 30, interval: float = 0.05, what: str = "condition"):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def run_cli(*args: str, env: dict | None = None, timeout: float = 120,
            cwd: Path | None = None, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgefiles", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=cwd, preexec_fn=preexec,
    )


PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4  # linux/prctl.h
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2  # linux/capability.h
CAPABILITY_V3 = 0x20080522


def bound_by_file_modes() -> None:
    """As preexec of a child process: file modes bind it even when it runs as root (tests do,
    in CI), so a file of mode 000 is unreadable to it as it would be to any user. Root's
    override of them is dropped from the capabilities the child's program can start with: root
    gets its bounding and its inheritable set at exec, so both lose it (and the ambient set
    is emptied)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "cannot drop root's override of file modes")
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(CAPABILITY_V3, 0)
    sets = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable; twice (bits 0-31, 32-63)
    if libc.capget(header, sets) != 0:
        raise OSError(ctypes.get_errno(), "cannot read the capabilities")
    sets[2] = sets[5] = 0  # no inheritable capabilities
    if libc.capset(header, sets) != 0:
        raise OSError(ctypes.get_errno(), "cannot clear the inheritable capabilities")


def admin(node: Node, *args: str) -> dict | list:
    """`edgefiles admin ... --json` on the node's data directory (through the node while it runs)."""
    out = run_cli("admin", *args, "--data", str(node.data), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def start_star(root: Path, count: int, key: Path, *extra: str) -> list[Node]:
    """Node 0, then the others at once, each told only of node 0; back as soon as every node
    answers, whether or not the mesh has formed (as a fleet is switched on)."""
    first = Node(root / "n0", "--swarm-key", str(key), *extra).start()
    others = [Node(root / f"n{i}", "--swarm-key", str(key), "--peer", first.swarm_addr, *extra)
              for i in range(1, count)]
    for n in others:
        n.start(wait=False)
    for n in others:
        n.wait_ready()
    return [first, *others]


@contextmanager
def two_members(root: Path) -> Iterator[tuple[Node, Node]]:
    """Nodes A and B of one swarm (a key of their own), B told of A."""
    key = root / "swarm.key"
    key.write_text(secrets.token_hex(32) + "\n")
    a = Node(root / "a", "--swarm-key", str(key)).start()
    b = Node(root / "b", "--swarm-key", str(key), "--peer", a.swarm_addr).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()
