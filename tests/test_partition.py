"""Real networks between nodes in network namespaces, joined by veth pairs the tests make.

- A split: two nodes on one swarm link that the test cuts and heals. Each side goes on
  working alone; once healed, both hold the same names.
- A chain A - B - C: C cannot reach A, yet gets A's names and content through B.

Every namespace also has a link to the root namespace, where the test reaches the node's
API; the swarm runs only over the links between namespaces. All addresses are private and
nothing leaves the machine.
"""

from __future__ import annotations

import time

import httpx
import pytest
from conftest import gen
from netns import names, ns_node
from nodeproc import Node, wait_until

pytestmark = pytest.mark.timeout(240)


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
