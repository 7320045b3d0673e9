"""A real network split: two nodes in network namespaces joined by a veth pair that the test
cuts and heals. Each side goes on working alone; once healed, both hold the same names.

Layout (all private addresses, nothing leaves the machine):
    root --veth 10.213.1.0/30-- ns A --veth 10.213.0.0/30 (swarm)-- ns B --veth 10.213.2.0/30-- root
The test reaches each node's API over its own link from the root namespace; the swarm runs
only over the A-B link, which is the one that is cut.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
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


@pytest.fixture
def split_network():
    if os.geteuid() != 0:
        pytest.fail("this test needs root to create network namespaces (CI runs as root)")
    tag = uuid.uuid4().hex[:6]
    ns_a, ns_b = f"efa{tag}", f"efb{tag}"
    links = {"swarm": (f"efs{tag}a", f"efs{tag}b")}
    ip("netns", "add", ns_a)
    ip("netns", "add", ns_b)
    try:
        for ns in (ns_a, ns_b):
            ip("-n", ns, "link", "set", "lo", "up")
        sa, sb = links["swarm"]
        ip("link", "add", sa, "netns", ns_a, "type", "veth", "peer", "name", sb, "netns", ns_b)
        ip("-n", ns_a, "addr", "add", "10.213.0.1/30", "dev", sa)
        ip("-n", ns_b, "addr", "add", "10.213.0.2/30", "dev", sb)
        for i, (ns, end) in enumerate(((ns_a, "a"), (ns_b, "b")), start=1):
            host_end, ns_end = f"efh{tag}{end}", f"efn{tag}{end}"
            ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end, "netns", ns)
            ip("addr", "add", f"10.213.{i}.1/30", "dev", host_end)
            ip("link", "set", host_end, "up")
            ip("-n", ns, "addr", "add", f"10.213.{i}.2/30", "dev", ns_end)
            ip("-n", ns, "link", "set", ns_end, "up")
        ip("-n", ns_a, "link", "set", sa, "up")
        ip("-n", ns_b, "link", "set", sb, "up")

        def cut(up: bool) -> None:
            ip("-n", ns_a, "link", "set", sa, "up" if up else "down")

        yield ns_a, ns_b, cut
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for end in ("a", "b"):
            subprocess.run(["ip", "link", "del", f"efh{tag}{end}"], capture_output=True)


def names(node: Node) -> dict[str, str]:
    with node.client() as c:
        return {n["name"]: n["cid"] for n in c.get("/api/v2/names").json()}


def test_split_swarm_keeps_working_and_converges_when_healed(split_network, tmp_path):
    ns_a, ns_b, cut = split_network
    key = tmp_path / "swarm.key"
    key.write_text("5a" * 32)
    a = NsNode(tmp_path / "a", ns_a, "10.213.1.2", "10.213.0.1", "--swarm-key", str(key)).start()
    b = NsNode(tmp_path / "b", ns_b, "10.213.2.2", "10.213.0.2", "--swarm-key", str(key),
               "--peer", a.swarm_addr).start()
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
