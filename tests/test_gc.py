"""Garbage collection on a real node: unpinned blocks go, least recently read first; pinned stay."""

from __future__ import annotations

import pytest
from conftest import gen
from nodeproc import wait_until

pytestmark = pytest.mark.timeout(120)
MIB = 1 << 20


def pack_bytes(node) -> int:
    return sum(p.stat().st_size for p in (node.data / "blocks").glob("pack-*.dat"))


def test_gc_frees_unpinned_blocks_oldest_use_first_and_keeps_named_ones(fresh_node):
    n = fresh_node("--gc-above", str(int(2.5 * MIB)), "--pin-uploads-for", "2s")
    keep = gen("keep", MIB)
    files = [gen(f"u{i}", MIB) for i in range(4)]
    with n.client() as c:
        named = c.post("/api/v2/files", files=[("f", ("keep.bin", keep))]).text
        assert c.put("/api/v2/files/kept", content=named).status_code == 200
        cids = [c.post("/api/v2/files", files=[("f", ("u.bin", data))]).text for data in files]
        assert c.get("/api/v2/files/" + cids[0]).content == files[0]  # the most recent use
        before = pack_bytes(n)
        wait_until(lambda: c.get("/api/v2/node/info").json()["bytes"] <= 2.5 * MIB, timeout=60,
                   what="the store to shrink below --gc-above")
        assert c.get("/api/v2/files/kept").content == keep
        assert c.get("/api/v2/files/" + cids[0]).content == files[0]
        assert c.get("/api/v2/files/" + cids[1]).status_code == 404
        assert c.get("/api/v2/files/" + cids[2]).status_code == 404
        wait_until(lambda: pack_bytes(n) < before - 2 * MIB, timeout=30, what="packs to be compacted")
        assert "gc: freed" in n.output()
    n.stop()
    n.start()  # the compacted store is consistent after a restart
    with n.client() as c:
        assert c.get("/api/v2/files/kept").content == keep
        assert c.get("/api/v2/files/" + cids[0]).content == files[0]


def test_without_gc_above_nothing_is_collected(fresh_node):
    n = fresh_node("--pin-uploads-for", "1s")
    data = gen("stays", MIB)
    with n.client() as c:
        cid = c.post("/api/v2/files", files=[("f", ("s.bin", data))]).text
        wait_until(lambda: c.get("/api/v2/node/info").json()["pins"] == 0, what="the upload pin to expire")
        assert c.get("/api/v2/files/" + cid).content == data
