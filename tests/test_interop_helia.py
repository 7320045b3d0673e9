"""Interop with a real IPFS implementation: a Helia node (js-libp2p, TCP + Noise + Yamux,
Bitswap) from the npm registry, next to real `edgefiles serve` processes.

`make test` installs it (tests/interop: `npm ci`, with Node 22 from the npm registry).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import gen
from interop_peers import Helia, node_admitting
from nodeproc import Node, wait_until


@pytest.fixture
def helia():
    peer = Helia()
    yield peer
    peer.stop()


@pytest.fixture
def node_with_helia(tmp_path, helia):
    with node_admitting(tmp_path / "n", helia) as node:
        yield node


def test_helia_fetches_a_file_and_a_page_of_an_app_from_us(tmp_path, helia, node_with_helia):
    big = os.urandom(3_000_000)  # 12 leaves under one root
    page = b"<!doctype html><title>app</title>"
    with node_with_helia.client() as client:
        file_cid = client.post("/api/v2/files", files=[("f", ("big.bin", big))]).text
        app_cid = client.post("/api/v2/files", files=[
            ("f", ("index.html", page)), ("f", ("assets/app.js", b"console.log(1)")),
        ]).text
    assert helia.cat(file_cid, tmp_path / "big.out") == {"bytes": len(big)}
    assert (tmp_path / "big.out").read_bytes() == big
    assert helia.cat(app_cid, tmp_path / "page.out", inner="index.html") == {"bytes": len(page)}
    assert (tmp_path / "page.out").read_bytes() == page


def test_we_fetch_what_helia_stores(tmp_path, helia, node_with_helia):
    data = os.urandom(2_500_000)  # Helia's default importer: 1 MiB leaves, three of them
    (tmp_path / "h.bin").write_bytes(data)
    cid = helia.add(tmp_path / "h.bin")
    with node_with_helia.client() as client:
        r = client.get(f"/api/v2/files/{cid}")
        assert r.status_code == 200
        assert r.content == data
        # fetched, verified and stored: served again with Helia gone
        helia.stop()
        assert client.get(f"/api/v2/files/{cid}").content == data


@pytest.mark.parametrize("size", [0, 1, 1 << 20, (1 << 20) + 1, 5 * (1 << 20) + 7])
def test_our_cid_command_gives_helias_cids(tmp_path, helia, size):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(size))
    assert our_cid(path) == helia.add(path)


def our_cid(path: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "edgefiles", "cid", "--profile", "unixfs-v1-2025", str(path)],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]


def test_our_directory_cids_are_helias(tmp_path, helia):
    """An app folder (nested folders, an empty one, files of 0 bytes to over a chunk, UTF-8
    names in byte order) as Helia's default `addAll` imports it."""
    app = tmp_path / "app"
    for rel, data in [("index.html", b"<h1>hi</h1>"), ("assets/app.js", os.urandom(3 << 20)),
                      ("assets/B.css", b""), ("assets/a b.css", b"x"), ("caf\u00e9/men\u00fc.txt", b"m"),
                      ("deep/er/still/x.bin", os.urandom(1000))]:
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        (app / rel).write_bytes(data)
    (app / "empty").mkdir()
    assert our_cid(app) == helia.ask(op="addDir", root=str(app))["cid"]


def test_our_sharded_directory_cids_are_helias(tmp_path, helia):
    """A folder too big for one block becomes a HAMT under IPIP-499's rule, as in Helia."""
    big = tmp_path / "big"
    big.mkdir()
    for i in range(2500):
        (big / f"{i:05d}-{'n' * 90}.txt").write_bytes(str(i).encode())
    assert our_cid(big) == helia.ask(op="addDir", root=str(big), profile="unixfs-v1-2025")["cid"]


def test_a_helia_peer_that_is_not_allowed_gets_nothing(tmp_path, helia):
    node = Node(tmp_path / "n").start()
    try:
        with node.client() as client:
            cid = client.post("/api/v2/files", files=[("f", ("secret.txt", b"members only"))]).text
        helia.ask(op="dial", addr=node.swarm_addr)  # whether the dial succeeds before the cut varies
        assert "error" in helia.cat(cid, tmp_path / "out", timeout_ms=3000)
        assert not (tmp_path / "out").exists()
        wait_until(lambda: "refused peer" in node.output(), what="the node to log the refusal")
    finally:
        node.stop()


def test_car_files_travel_between_helia_and_us(tmp_path, helia, fresh_node):
    """Neither side can reach the other: what each reads came in the CAR. A CAR we export
    imports into Helia, which then reads the file; a CAR Helia exports imports into our
    node, which then serves the file."""
    node = fresh_node()
    ours = gen("a car for helia", (3 << 20) + 5)
    with node.client() as client:
        cid = client.post("/api/v2/files", files=[("f", ("ours.bin", ours))]).text
        exported = client.get(f"/api/v2/files/{cid}", params={"format": "car"})
        (tmp_path / "ours.car").write_bytes(exported.content)
    assert helia.ask(op="carImport", path=str(tmp_path / "ours.car")) == {"roots": [cid]}
    assert helia.cat(cid, tmp_path / "ours.out", timeout_ms=10000) == {"bytes": len(ours)}
    assert (tmp_path / "ours.out").read_bytes() == ours

    theirs = gen("a car from helia", (2 << 20) + 9)
    (tmp_path / "theirs.bin").write_bytes(theirs)
    their_cid = helia.add(tmp_path / "theirs.bin")
    helia.ask(op="carExport", cid=their_cid, path=str(tmp_path / "theirs.car"))
    with node.client() as client:
        r = client.post("/api/v2/car", content=(tmp_path / "theirs.car").read_bytes(),
                        headers={"Content-Type": "application/vnd.ipld.car"})
        assert r.status_code == 200 and r.json()["roots"] == [their_cid]
        assert client.get(f"/api/v2/files/{their_cid}").content == theirs


def test_helias_gateway_client_reads_through_our_trustless_gateway(tmp_path, helia, node):
    """Helia with nothing but a trustless-gateway block broker pointed at our node (and our
    token) reads a file and a page of an app, verifying every raw block itself; @ipld/car
    parses our CAR responses and every block hashes to its CID."""
    big = gen("through the gateway", (2 << 20) + 3)
    cid = node.upload([("index.html", b"<h1>via gateway</h1>"), ("big.bin", big)]).text
    ask = {"gateway": node.url, "token": node.token()}
    got = helia.ask(op="gatewayCat", cid=cid, inner="big.bin", path=str(tmp_path / "big"), **ask)
    assert got == {"bytes": len(big)} and (tmp_path / "big").read_bytes() == big
    helia.ask(op="gatewayCat", cid=cid, inner="index.html", path=str(tmp_path / "page"), **ask)
    assert (tmp_path / "page").read_bytes() == b"<h1>via gateway</h1>"
    for query, count in (("format=car", 12), ("format=car&dag-scope=entity", 1),
                         ("format=car&dag-scope=block", 1)):
        got = helia.ask(op="carVerify", url=f"{node.url}/ipfs/{cid}?{query}", token=node.token())
        assert got["roots"] == [cid] and got["blocks"][0] == cid and len(got["blocks"]) == count, (query, got)
