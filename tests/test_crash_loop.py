"""Crash loops: a node killed with SIGKILL at a random moment of a mixed load (big and small
uploads, names set and deleted, FlowFuse writes and appends, garbage collection running, a
rollout arriving from a peer), restarted, and checked: everything it acknowledged is there
and reads back identical, and `fsck` finds the store clean.

`make test` runs a few rounds; `EDGEFILES_CRASH_ROUNDS=50` runs the full loop by hand.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
from fake_platform import FakePlatform
from nodeproc import Node, run_cli, wait_until

ROUNDS = int(os.environ.get("EDGEFILES_CRASH_ROUNDS", "4"))
OCTET = {"Content-Type": "application/octet-stream"}
pytestmark = pytest.mark.timeout(120 + 40 * ROUNDS)


@dataclass
class Acked:
    """What the victim acknowledged, and what it was doing when it died (may or may not have
    landed)."""

    uploads: dict[str, bytes] = field(default_factory=dict)  # CID -> bytes, this round
    names: dict[str, set[str | None]] = field(default_factory=dict)  # name -> CIDs it may hold
    flowfuse: dict[str, set[bytes]] = field(default_factory=dict)  # path -> contents it may hold
    requests: int = 0


class Load:
    """Two clients on the victim until it dies: uploads and names; FlowFuse writes and appends.
    Each is sequential, so per name or path the last acknowledged change and the one in flight
    are the only states the node may come back with."""

    def __init__(self, node: Node, token: str, ff_token: str, acked: Acked, rng: random.Random):
        self.node, self.acked, self.rng = node, acked, rng
        self.files = httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        self.ff = httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {ff_token}"}, timeout=30)
        self.threads = [threading.Thread(target=self._guard, args=(run,))
                        for run in (self._files, self._flowfuse)]
        self.errors: list[BaseException] = []

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join(60)
        self.files.close()
        self.ff.close()
        assert not self.errors, f"the load met answers it should not: {self.errors}"

    def _guard(self, run) -> None:
        try:
            while True:
                run()
        except httpx.TransportError:
            return  # the node died under us: what was in flight stays "maybe"
        except BaseException as exc:  # noqa: BLE001 (handed to the test's thread)
            self.errors.append(exc)

    def _files(self) -> None:
        size = self.rng.choice([3 << 20, 300 << 10, 4 << 10, 200])
        data = os.urandom(size)
        r = self.files.post("/api/v2/files", files=[("file", ("f.bin", data))])
        assert r.status_code == 200, r.text
        self.acked.uploads[r.text] = data
        self.acked.requests += 1
        name = f"app-{self.rng.randrange(4)}"
        before = self.acked.names.setdefault(name, {None})
        target = None if self.rng.random() < 0.25 else r.text
        self.acked.names[name] = before | {target}  # in flight: either may be what it holds
        if target is None:
            answer = self.files.delete(f"/api/v2/files/{name}")
            assert answer.status_code in (200, 204, 405), answer.text  # 405: no such name
        else:
            answer = self.files.put(f"/api/v2/files/{name}", content=target)
            assert answer.status_code in (200, 204), answer.text
        self.acked.names[name] = {target}
        self.acked.requests += 1

    def _flowfuse(self) -> None:
        path = f"/v1/files/crash/proj/f{self.rng.randrange(3)}.txt"
        before = self.acked.flowfuse.setdefault(path, {b""})
        piece = secrets.token_hex(self.rng.choice([8, 2000])).encode()
        append = self.rng.random() < 0.5 and len(before) == 1
        after = next(iter(before)) + piece if append else piece
        self.acked.flowfuse[path] = before | {after}
        headers = {**OCTET, "ff_mode": "append"} if append else OCTET
        r = self.ff.post(path, content=piece, headers=headers)
        assert r.status_code == 200, r.text
        self.acked.flowfuse[path] = {after}
        self.acked.requests += 1


def test_a_node_killed_at_random_loses_nothing_it_acknowledged(tmp_path):
    platform = FakePlatform()
    ff_token = platform.issue("tok-crash", "proj")
    config = tmp_path / "flowforge-storage.yml"
    config.write_text(f"base_url: {platform.url}\nhost: 127.0.0.1\nport: 3001\n")
    key = tmp_path / "swarm.key"
    key.write_text(secrets.token_hex(32) + "\n")
    origin = Node(tmp_path / "origin", "--swarm-key", str(key)).start()
    victim = Node(tmp_path / "victim", "--swarm-key", str(key), "--peer", origin.swarm_addr,
                  "--flowfuse-config", str(config), "--gc-above", "24MiB", "--pin-uploads-for", "60s").start()
    rng = random.Random(int(os.environ.get("EDGEFILES_CRASH_SEED", secrets.randbelow(1 << 30))))
    acked = Acked()
    try:
        for round_ in range(ROUNDS):
            rollout = os.urandom(2 << 20)  # named on the origin: the victim fetches it meanwhile
            rolled = origin.upload([("r.bin", rollout)]).text
            with origin.client() as c:
                assert c.put(f"/api/v2/files/roll-{round_}", content=rolled).status_code in (200, 204)
            acked.uploads = {}
            load = Load(victim, victim.token(), ff_token, acked, rng)
            load.start()
            time.sleep(rng.uniform(0.2, 2.0))
            victim.stop(signal.SIGKILL)
            load.join()
            victim.start()
            _check(victim, acked, f"roll-{round_}", rollout, round_)
        assert acked.requests > 10 * ROUNDS, "the load hardly ran: the crashes tested nothing"
        print(f"{ROUNDS} SIGKILLs survived; {acked.requests} acknowledged requests checked, none lost")
    finally:
        victim.stop()
        origin.stop()
        platform.close()


def _check(node: Node, acked: Acked, rolled_name: str, rolled: bytes, round_: int) -> None:
    where = f"round {round_}"
    with node.client() as c:
        for cid, data in acked.uploads.items():
            r = c.get(f"/api/v2/files/{cid}")
            assert r.status_code == 200 and r.content == data, f"{where}: acknowledged upload {cid} lost"
        table = {row["name"]: row["cid"] for row in c.get("/api/v2/names").json()}
        for name, may_hold in acked.names.items():
            assert table.get(name) in may_hold, f"{where}: name {name} is {table.get(name)}, not {may_hold}"
        wait_until(lambda: c.get(f"/api/v2/files/{rolled_name}").content == rolled, timeout=60,
                   what=f"{where}: the rollout to complete after the restart")
    with httpx.Client(base_url=node.url, headers={"Authorization": "Bearer tok-crash"}, timeout=30) as ff:
        for path, may_hold in acked.flowfuse.items():
            r = ff.get(path)
            held = r.content if r.status_code == 200 else b""
            assert held in may_hold, f"{where}: FlowFuse file {path} holds {held[:40]!r}..."
            acked.flowfuse[path] = {held}  # what it holds now is what later rounds build on
    for name in acked.names:
        acked.names[name] = {table.get(name)}
    out = run_cli("fsck", "--data", str(node.data), "--no-progress")
    assert out.returncode == 0, f"{where}: fsck after the crash:\n{out.stdout}{out.stderr}"
