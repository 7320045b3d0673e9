"""`edgefiles fsck`, black-box: real nodes, real pack files and SQLite databases damaged the
way disks and crashes damage them, checked and repaired offline, through a running node
(which refetches from its swarm) and over HTTP."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

import httpx
from edgefiles.node.cid import to_str
from edgefiles.node.fsck import gaps_between, subtract
from hypothesis import given
from hypothesis import strategies as st
from nodeproc import Node, admin, run_cli, two_members, wait_until

BIG = os.urandom(3 << 20)  # 12 leaves of 256 KiB


def fsck(data: Path, *flags: str) -> tuple[int, dict]:
    out = run_cli("fsck", "--data", str(data), "--json", *flags)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def upload_site(node: Node, name: str = "site") -> str:
    r = node.upload([("index.html", b"<h1>hello</h1>"), ("big.bin", BIG)])
    assert r.status_code == 200, r.text
    cid = r.text.strip()
    with node.client() as c:
        assert c.put(f"/api/v2/files/{name}", content=cid).status_code in (200, 204)
    return cid


def biggest_block(data: Path) -> tuple[str, Path, int]:
    """(CID, pack file, data offset) of the largest block: a leaf of BIG."""
    conn = sqlite3.connect(data / "state.sqlite")
    try:
        biggest = conn.execute("SELECT cid, pack, offset FROM blocks ORDER BY length DESC").fetchone()
    finally:
        conn.close()
    cid, pack, offset = biggest
    return to_str(cid), data / "blocks" / f"pack-{pack:06d}.dat", offset


def flip_byte(path: Path, at: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, bytes([os.pread(fd, 1, at)[0] ^ 0xFF]), at)
    finally:
        os.close(fd)


def test_a_damaged_block_and_a_torn_tail_are_found_and_repaired_offline(fresh_node):
    node = fresh_node()
    upload_site(node)
    node.stop()

    status, clean = fsck(node.data)
    assert status == 0 and clean["ok"] and clean["blocks"] >= 13 and clean["bytes"] > len(BIG)
    assert clean["corrupt"] == clean["missing"] == clean["names_incomplete"] == []
    assert clean["sqlite"] == ["ok"]
    assert clean["unreferenced_bytes"] == 0

    cid, pack, offset = biggest_block(node.data)
    flip_byte(pack, offset + 1000)
    with open(pack, "ab") as f:  # a record torn by a crash in the middle of a write
        f.write(b"EFB1" + os.urandom(5000))
    status, found = fsck(node.data)
    assert status == 1 and not found["ok"]
    assert found["corrupt"] == [cid] and found["missing"] == [cid] and found["names_incomplete"] == ["site"]
    assert found["unreferenced_bytes"] >= 5004 and found["blocks"] == clean["blocks"]

    status, repaired = fsck(node.data, "--repair")
    assert status == 1, "no peer has the dropped block: it is missing now"
    assert repaired["repaired"]["dropped"] == 1 and repaired["repaired"]["dropped_cids"] == [cid]
    assert repaired["repaired"]["reclaimed_bytes"] >= 5004
    assert repaired["corrupt"] == [] and repaired["missing"] == [cid] and repaired["unreferenced_bytes"] == 0
    assert repaired["blocks"] == clean["blocks"] - 1

    node.start()  # the rest of the store still serves
    with node.client() as c:
        assert c.get("/api/v2/files/site/index.html").content == b"<h1>hello</h1>"


def test_a_repair_gives_back_the_bytes_of_the_blocks_it_drops(fresh_node):
    """Their pack is compacted too, though the check found no unreferenced bytes in it."""
    node = fresh_node()
    upload_site(node)
    node.stop()
    cid, pack, offset = biggest_block(node.data)
    flip_byte(pack, offset + 1000)
    status, repaired = fsck(node.data, "--repair")
    assert repaired["repaired"]["dropped_cids"] == [cid]
    assert repaired["repaired"]["reclaimed_bytes"] >= 256 << 10
    assert repaired["unreferenced_bytes"] == 0 and repaired["corrupt"] == []


def test_index_rows_past_the_end_of_a_pack_are_corrupt(fresh_node):
    node = fresh_node()
    upload_site(node)
    node.stop()
    cid, pack, offset = biggest_block(node.data)
    os.truncate(pack, offset + 10)  # the block, and all after it in the pack, cut away
    status, found = fsck(node.data)
    assert status == 1 and found["rows_past_end"] >= 1 and cid in found["corrupt"]
    assert found["names_incomplete"] == ["site"]


def test_a_damaged_database_is_reported(fresh_node):
    node = fresh_node()
    upload_site(node)
    node.stop()
    conn = sqlite3.connect(node.data / "state.sqlite")
    conn.execute("PRAGMA writable_schema=ON")  # forget an index but keep its pages: orphans
    conn.execute("DELETE FROM sqlite_master WHERE name = 'pins_by_reason'")
    conn.commit()
    conn.close()
    status, found = fsck(node.data)
    assert status == 1 and found["sqlite"] != ["ok"] and not found["ok"]
    text = run_cli("fsck", "--data", str(node.data))
    assert text.returncode == 1 and "database integrity check" in text.stdout


def test_fsck_that_cannot_run_says_why_with_status_2(tmp_path):
    out = run_cli("fsck", "--data", str(tmp_path / "nothing-here"))
    assert out.returncode == 2 and "not a node's data directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_running_node_refetches_what_it_dropped_from_its_swarm(tmp_path):
    with two_members(tmp_path) as (a, b):
        upload_site(a)
        wait_until(lambda: _serves(b, "site/big.bin", BIG), what="B to roll the site out")
        b.stop()
        cid, pack, offset = biggest_block(b.data)
        flip_byte(pack, offset + 7)
        b.start()
        status, found = fsck(b.data)  # through the running node
        assert status == 1 and found["corrupt"] == [cid] and found["names_incomplete"] == ["site"]
        status, repaired = fsck(b.data, "--repair")
        assert status == 0, repaired
        assert repaired["repaired"]["dropped"] == 1 and repaired["repaired"]["fetched_bytes"] >= 256 << 10
        assert repaired["ok"] and repaired["missing"] == [] and repaired["corrupt"] == []
        assert _serves(b, "site/big.bin", BIG)


def _serves(node: Node, path: str, expected: bytes) -> bool:
    with node.client() as c:
        r = c.get(f"/api/v2/files/{path}")
        return r.status_code == 200 and r.content == expected


def test_fsck_over_http_is_for_admin_users_and_reports_progress(fresh_node):
    node = fresh_node()
    upload_site(node)
    ada = admin(node, "user", "add", "--email", "ada@example.com", "--org", "acme", "--admin")
    bob = admin(node, "user", "add", "--email", "bob@example.com", "--org", "acme")
    with httpx.Client(base_url=node.url, timeout=30) as http:
        assert http.post("/api/v2/node/fsck").json()["code"] == "ERR_MISSING_AUTH_HEADER"
        garbage = http.post("/api/v2/node/fsck", headers=_bearer("ffpat_nope"))
        assert garbage.status_code == 401 and garbage.json()["code"] == "ERR_TOKEN_INVALID"
        for token in (node.token(), bob["token"]):  # an app's token, a user who is no admin
            refused = http.post("/api/v2/node/fsck", headers=_bearer(token), json={"repair": False})
            assert refused.status_code == 403 and refused.json()["code"] == "ERR_FORBIDDEN"
        huge = http.post("/api/v2/node/fsck", headers=_bearer(ada["token"]), content=b" " * (1 << 20))
        assert huge.status_code == 413, huge.text
        bad = http.post("/api/v2/node/fsck", headers=_bearer(ada["token"]), json={"repair": "yes"})
        assert bad.status_code == 400 and bad.json()["code"] == "ERR_BAD_REQUEST"
        nested = b"[" * 2000 + b"]" * 2000
        deep = http.post("/api/v2/node/fsck", headers=_bearer(ada["token"]), content=nested)
        assert deep.status_code == 400 and deep.json()["code"] == "ERR_BAD_REQUEST"

        started = http.post("/api/v2/node/fsck", headers=_bearer(ada["token"]), json={"repair": False})
        assert started.status_code == 202
        job = started.json()["id"]
        assert started.headers["location"] == f"/api/v2/node/fsck/{job}"

        def finished() -> dict | None:
            view = http.get(f"/api/v2/node/fsck/{job}", headers=_bearer(ada["token"])).json()
            return view if view["state"] in ("done", "failed") else None

        view = wait_until(finished, what="the fsck job")
        assert view["state"] == "done" and view["report"]["ok"] and view["report"]["blocks"] >= 13
        assert view["progress"]["done"] == view["progress"]["total"]
        assert http.get(f"/api/v2/node/fsck/{job}", headers=_bearer(bob["token"])).status_code == 403
        missing = http.get("/api/v2/node/fsck/0000", headers=_bearer(ada["token"]))
        assert missing.status_code == 404 and missing.json()["code"] == "ERR_NOT_FOUND"


def test_uploads_during_a_check_are_not_taken_for_garbage(fresh_node):
    """Checks of a running node while uploads arrive: their bytes are never unreferenced."""
    node = fresh_node()
    upload_site(node)
    done = threading.Event()
    uploaded: list[int] = []

    def upload_until_done() -> None:
        while not done.is_set():
            uploaded.append(node.upload([("f.bin", os.urandom(700 << 10))]).status_code)

    uploader = threading.Thread(target=upload_until_done)
    uploader.start()
    try:
        for _ in range(5):
            status, found = fsck(node.data)
            assert status == 0 and found["unreferenced_bytes"] == 0, found
    finally:
        done.set()
        uploader.join()
    assert len(uploaded) >= 5 and set(uploaded) == {200}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


spans = st.lists(st.tuples(st.integers(0, 300), st.integers(0, 60)).map(lambda t: (t[0], t[0] + t[1])),
                 max_size=12)


@given(spans, st.integers(0, 400))
def test_gaps_are_exactly_the_bytes_no_span_covers(covered, size):
    gaps = gaps_between(covered, size)
    holes = {i for s, e in gaps for i in range(s, e)}
    assert holes == {i for i in range(size) if not any(s <= i < e for s, e in covered)}
    assert all(s < e for s, e in gaps) and gaps == sorted(gaps)


@given(spans, spans)
def test_subtracting_busy_spans_leaves_exactly_the_uncovered_bytes(gap_spans, busy):
    gaps = gaps_between(gap_spans, 400)  # sorted and disjoint, as gaps are
    left = subtract(gaps, busy)
    expected = {i for s, e in gaps for i in range(s, e) if not any(bs <= i < be for bs, be in busy)}
    assert {i for s, e in left for i in range(s, e)} == expected


def test_a_block_committed_while_fsck_looks_is_neither_past_the_end_nor_dropped(tmp_path):
    """The pack sizes fsck reads first can be older than the rows it reads next (an upload
    committed in between): such a block is whole where its row points, and stays."""
    from edgefiles.node.blockstore import BlockStore
    from edgefiles.node.cid import make_cid
    from edgefiles.node.db import migrate
    from edgefiles.node.fsck import Fsck

    migrate(tmp_path / "state.sqlite")
    store = BlockStore(tmp_path / "blocks", tmp_path / "state.sqlite")
    data = os.urandom(5000)
    batch = store.batch()
    batch.put(make_cid(0x55, data), data)
    store.commit(batch)
    fsck = Fsck(store, lambda: [])
    store.pack_sizes = lambda: {1: 0}  # as read just before the upload committed
    report, found = fsck.check()
    assert report.rows_past_end == 0 and report.corrupt == [] and report.blocks == 1
    assert fsck.repair(found, lambda roots: 0)["dropped"] == 0 and store.get(make_cid(0x55, data)) == data
    store.close()
