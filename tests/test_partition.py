"""Real networks between nodes in network namespaces, joined by veth pairs the tests make.

- A split: two nodes on one swarm link that the test cuts and heals. Each side goes on
  working alone; once healed, both hold the same names.
- A chain A - B - C: C cannot reach A, yet gets A's names and content through B.

Every namespace also has a link to the root namespace, where the test reaches the node's
API; the swarm runs only over the links between namespaces. All addresses are private and
nothing leaves the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from conftest import gen
from nodeproc import Node, wait_until

pytestmark = pytest.mark.timeout(240)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class NsNode(Node):
    """A node inside a network namespace, its API on the link to the root namespace."""

    def __init__(self, data, ns: str, api_ip: str, swarm_ip: str, *extra: str):
        super().__init__(data, *extra, api_port=4454, swarm_port=4001)
        self.ns, self.api_ip, self.swarm_ip = ns, api_ip, swarm_ip
        self.url = f"http://{api_ip}:4454"

    def command(self) -> list[str]:
        return [
            "ip", "netns", "exec", self.ns,
            sys.executable, "-m", "edgefiles", "serve", "--data", str(self.data),
            "--api", f"{self.api_ip}:4454", "--swarm", f"/ip4/{self.swarm_ip}/tcp/4001", *self.extra,
        ]


class Network:
    """Namespaces and the veth pairs between them, all removed by `close`."""

    def __init__(self, subnet: int):
        if os.geteuid() != 0:
            pytest.fail("this test needs root to create network namespaces (CI runs as root)")
        self.tag = uuid.uuid4().hex[:6]
        self.prefix = f"10.{subnet}"
        self.namespaces: list[str] = []
        self.links = 0

    def namespace(self) -> str:
        ns = f"ef{len(self.namespaces)}{self.tag}"
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def link(self, a: str | None, b: str) -> tuple[str, str]:
        """A /30 between two namespaces (a None: the root namespace); their addresses."""
        n = self.links
        self.links += 1
        end_a, end_b = f"e{self.tag}{n}a", f"e{self.tag}{n}b"
        addr_a, addr_b = f"{self.prefix}.{n}.1", f"{self.prefix}.{n}.2"
        on_a = [] if a is None else ["-n", a]
        ip("link", "add", end_a, *([] if a is None else ["netns", a]), "type", "veth",
           "peer", "name", end_b, "netns", b)
        ip(*on_a, "addr", "add", f"{addr_a}/30", "dev", end_a)
        ip("-n", b, "addr", "add", f"{addr_b}/30", "dev", end_b)
        ip(*on_a, "link", "set", end_a, "up")
        ip("-n", b, "link", "set", end_b, "up")
        return addr_a, addr_b

    def set_link(self, ns: str, addr: str, up: bool) -> None:
        """Bring the link end holding `addr` in `ns` up or down."""
        n = int(addr.split(".")[2])
        end = f"e{self.tag}{n}{'a' if addr.endswith('.1') else 'b'}"
        ip("-n", ns, "link", "set", end, "up" if up else "down")

    def close(self) -> None:
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for n in range(self.links):  # ends in the root namespace
            subprocess.run(["ip", "link", "del", f"e{self.tag}{n}a"], capture_output=True)


@pytest.fixture
def network():
    net = Network(213)
    yield net
    net.close()


def ns_node(net: Network, data, swarm_ip: str, ns: str, *extra: str) -> NsNode:
    _, api_ip = net.link(None, ns)
    return NsNode(data, ns, api_ip, swarm_ip, *extra)


def names(node: Node) -> dict[str, str]:
    with node.client() as c:
        return {n["name"]: n["cid"] for n in c.get("/api/v2/names").json()}


def test_split_swarm_keeps_working_and_converges_when_healed(network, tmp_path):
    ns_a, ns_b = network.namespace(), network.namespace()
    swarm_a, swarm_b = network.link(ns_a, ns_b)
    key = tmp_path / "swarm.key"
    key.write_text("5a" * 32)
    a = ns_node(network, tmp_path / "a", swarm_a, ns_a, "--swarm-key", str(key)).start()
    b = ns_node(network, tmp_path / "b", swarm_b, ns_b, "--swarm-key", str(key), "--peer", a.swarm_addr)
    b.start()

    def cut(up: bool) -> None:
        network.set_link(ns_a, swarm_a, up)

    try:
        before = a.upload([("v.txt", b"before the split")]).text
        with a.client() as c:
            c.put("/api/v2/files/app", content=before)
        wait_until(lambda: names(b).get("app") == before, what="replication before the split")

        cut(False)
        only_a = a.upload([("a.txt", b"written on A while split")]).text
        only_b = b.upload([("b.txt", b"written on B while split")]).text
        with a.client() as c:
            assert c.put("/api/v2/files/from-a", content=only_a).status_code == 200
            assert c.put("/api/v2/files/app", content=only_a).status_code == 200
        with b.client() as c:
            assert c.put("/api/v2/files/from-b", content=only_b).status_code == 200
            assert c.put("/api/v2/files/app", content=only_b).status_code == 200  # the later write
            assert c.get("/api/v2/files/app").content == b"written on B while split"
        time.sleep(1.5)  # replication takes ~20 ms when connected: give it far more
        assert "from-b" not in names(a) and "from-a" not in names(b)

        cut(True)
        wait_until(lambda: names(a) == names(b) and len(names(a)) == 3, timeout=120, what="convergence")
        assert names(a)["app"] == only_b  # last writer wins on both sides
        for node in (a, b):
            with node.client() as c:
                wait_until(lambda c=c: c.get("/api/v2/files/from-a").status_code == 200, timeout=60,
                           what="content from the other side")
                assert c.get("/api/v2/files/from-a").content == b"written on A while split"
                assert c.get("/api/v2/files/from-b").content == b"written on B while split"
    finally:
        a.stop()
        b.stop()


def test_a_member_that_cannot_reach_the_origin_gets_its_app_through_another(network, tmp_path):
    """A chain A - B - C: no route between A and C. A's app, named on A, reaches C through B,
    names by gossip and blocks by Bitswap, and C serves it byte for byte."""
    ns_a, ns_b, ns_c = network.namespace(), network.namespace(), network.namespace()
    ab_a, ab_b = network.link(ns_a, ns_b)
    bc_b, bc_c = network.link(ns_b, ns_c)
    key = tmp_path / "swarm.key"
    key.write_text("c4" * 32)
    b = ns_node(network, tmp_path / "b", "0.0.0.0", ns_b, "--swarm-key", str(key)).start()
    via_b = {link_ip: f"/ip4/{link_ip}/tcp/4001/p2p/{b.peer_id}" for link_ip in (ab_b, bc_b)}
    a = ns_node(network, tmp_path / "a", ab_a, ns_a, "--swarm-key", str(key), "--peer", via_b[ab_b]).start()
    c = ns_node(network, tmp_path / "c", bc_c, ns_c, "--swarm-key", str(key), "--peer", via_b[bc_b]).start()
    try:
        app = [("index.html", b"<h1>from A</h1>"), ("asset.bin", gen("through B", 3 << 20))]
        cid = a.upload(app).text
        with a.client() as client:
            assert client.put("/api/v2/files/far", content=cid).status_code == 200
        wait_until(lambda: names(c).get("far") == cid, timeout=60, what="the name to reach C")
        for path, data in app:
            r = wait_until(lambda p=path: (x := host_get(c, "far", f"/{p}")).status_code == 200 and x,
                           timeout=60, what=f"C to serve {path}")
            assert r.content == data
        with c.client() as client:
            assert client.get("/api/v2/node/info").json()["peers"] == [b.peer_id]  # never A itself
    finally:
        for n in (c, a, b):
            n.stop()


def host_get(node: Node, name: str, path: str) -> httpx.Response:
    return httpx.get(f"{node.url}{path}", headers={"Host": f"{name}.actyx.localhost"}, timeout=30)
