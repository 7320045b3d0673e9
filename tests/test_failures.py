"""Damaged and exhausted storage: corrupt blocks are never served, a full disk stores nothing half."""

import contextlib
import os
import resource
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import gen
from edgefiles.node import car, dagpb, unixfs
from edgefiles.node.blockstore import StorageFull, as_storage_full
from edgefiles.node.cid import DAG_PB, RAW, make_cid, to_str
from edgefiles.node.importer import import_bytes
from edgefiles.node.profiles import KUBO_V1
from nodeproc import Node, wait_until

CHUNK = KUBO_V1.chunk_size
LATER_CHUNKS = 8  # past the first MiB, which is read before the answer starts


def corrupt(data_dir, cid: bytes) -> None:
    db = sqlite3.connect(data_dir / "state.sqlite")
    pack, offset, _ = db.execute("SELECT pack, offset, length FROM blocks WHERE cid = ?", (cid,)).fetchone()
    db.close()
    path = data_dir / "blocks" / f"pack-{pack:06d}.dat"
    with open(path, "r+b") as f:
        f.seek(offset + 10)
        byte = f.read(1)
        f.seek(offset + 10)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture
def damaged(fresh_node):
    n = fresh_node()
    first = gen("corrupt-first", 3 * CHUNK)
    later = gen("corrupt-later", LATER_CHUNKS * CHUNK)
    healthy = gen("healthy", 3 * CHUNK)
    cids = {name: n.upload([(f"{name}.bin", data)]).text
            for name, data in [("first", first), ("later", later), ("healthy", healthy)]}
    corrupt(n.data, make_cid(RAW, first[:CHUNK]))
    corrupt(n.data, make_cid(RAW, later[(LATER_CHUNKS - 1) * CHUNK:]))
    return n, cids, healthy


def test_uploading_again_what_is_stored_damaged_or_gone_stores_it_anew(tmp_path):
    """The upload was a 200 while the stored copy stayed damaged (or its pack gone): the obvious
    repair did nothing."""
    n = Node(tmp_path / "heal").start()
    data = gen("rots on disk", 3 * CHUNK)
    cid = n.upload([("data.bin", data)]).text
    n.stop()
    corrupt(n.data, make_cid(RAW, data[CHUNK:2 * CHUNK]))
    for damage in ("a byte flipped", "the packs gone"):
        n.start()
        try:
            with n.client() as c:
                assert c.get(f"/api/v2/files/{cid}").status_code in (404, 500), damage
                assert n.upload([("again.bin", data)]).text == cid
                assert c.get(f"/api/v2/files/{cid}").content == data, damage
        finally:
            n.stop()
        for pack in (n.data / "blocks").glob("pack-*.dat"):
            pack.unlink()


def test_corrupt_first_block_is_a_500(damaged):
    n, cids, _ = damaged
    with n.client() as c:
        r = c.get(f"/api/v2/files/{cids['first']}")
    assert r.status_code == 500
    assert r.json()["code"] == "ERR_CORRUPT_BLOCK"
    assert "corrupt block" in n.output()


def test_corrupt_later_block_aborts_and_never_sends_wrong_bytes(damaged):
    n, cids, _ = damaged
    expected = gen("corrupt-later", LATER_CHUNKS * CHUNK)
    received = bytearray()
    with n.client() as c, pytest.raises(httpx.HTTPError):
        with c.stream("GET", f"/api/v2/files/{cids['later']}") as r:
            assert r.status_code == 200
            for piece in r.iter_bytes():
                received += piece
    assert len(received) < len(expected)
    assert bytes(received) == expected[: len(received)]
    log = n.output()
    assert "mid-stream: file " in log and "cut short" in log and "Traceback" not in log, log


def test_other_content_still_served(damaged):
    n, cids, healthy = damaged
    with n.client() as c:
        c.get(f"/api/v2/files/{cids['first']}")
        assert c.get(f"/api/v2/files/{cids['healthy']}").content == healthy
        ranged = c.get(f"/api/v2/files/{cids['later']}", headers={"Range": "bytes=0-99"})
        assert ranged.status_code == 206
        assert ranged.content == gen("corrupt-later", 100)


def _tmpfs(path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode == 0


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (24 << 20, 24 << 20))


def _check_full_store(n, big: bytes) -> None:
    with n.client() as c:
        pins = c.get("/api/v2/node/info").json()["pins"]
    r = n.upload([("big.bin", big)])
    assert r.status_code == 507, r.text
    assert r.json()["code"] == "ERR_INSUFFICIENT_STORAGE"
    big_cid = to_str(import_bytes(KUBO_V1, big, lambda c, b: None).cid)
    with n.client() as c:
        assert c.get("/api/v2/node/info").json()["pins"] == pins
        assert c.get(f"/api/v2/files/{big_cid}").status_code == 404
    ok = n.upload([("small.txt", b"there is room for this")])
    assert ok.status_code == 200
    with n.client() as c:
        assert c.get(f"/api/v2/files/{ok.text}").content == b"there is room for this"


def test_full_disk_is_507_and_stores_nothing_half(tmp_path):
    mount = tmp_path / "small"
    mounted = _tmpfs(mount, "32m")
    try:
        if mounted:
            n = Node(mount / "data").start()
        else:  # no mount rights: the kernel's file-size limit gives the same EFBIG/ENOSPC path
            n = Node(tmp_path / "limited", preexec=_limit_file_size).start()
        try:
            _check_full_store(n, gen("too-big", 40 << 20))
        finally:
            n.stop()
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount)])


def test_names_and_uploads_on_a_full_disk_are_507s_that_say_so(tmp_path):
    """SQLite's own 'database or disk is full' (a name's write, a small upload's pin) was a
    500 ERR_INTERNAL 'OperationalError'. Without mount rights the mapping itself is checked."""
    if not _tmpfs(tmp_path / "small", "24m"):
        full = as_storage_full(sqlite3.OperationalError("database or disk is full"))
        assert isinstance(full, StorageFull) and not isinstance(as_storage_full(ValueError()), StorageFull)
        return
    n = Node(tmp_path / "small" / "data")
    try:  # started inside: a start that fails still unmounts
        n.start()
        cid = n.upload([("a.txt", b"stored before the disk filled")]).text
        with n.client() as c:
            c.put("/api/v2/files/before", content=cid).raise_for_status()
        with open(tmp_path / "small" / "filler", "wb") as filler:
            with pytest.raises(OSError):
                while True:
                    filler.write(bytes(1 << 20))
                    filler.flush()
        with n.client() as c:
            answers = [c.put("/api/v2/files/during", content=cid), c.delete("/api/v2/files/before"),
                       n.upload([("b.txt", b"no room")])]
            for r in answers:
                assert r.status_code == 507 and r.json()["code"] == "ERR_INSUFFICIENT_STORAGE", r.text
            (tmp_path / "small" / "filler").unlink()
            assert c.put("/api/v2/files/during", content=cid).status_code == 200
            assert c.get("/api/v2/files/before").content == b"stored before the disk filled"
    finally:
        n.stop()
        subprocess.run(["umount", "-l", str(tmp_path / "small")])


@contextlib.contextmanager
def _node_on_a_small_disk(tmp_path) -> Iterator[tuple[Node, int]]:
    """A started node whose disk holds 64 MiB (a tmpfs), or whose files are capped at 24 MiB
    where mounting is not allowed; and that room."""
    mount = tmp_path / "small"
    if not _tmpfs(mount, "64m"):  # no mount rights: the kernel's file-size limit fills the "disk"
        n, room = Node(tmp_path / "limited", preexec=_limit_file_size), 24 << 20
    else:
        n, room = Node(mount / "data"), 64 << 20
    try:  # started inside: a start that fails still unmounts
        n.start()
        yield n, room
    finally:
        n.stop()
        if mount.is_mount():
            subprocess.run(["umount", "-l", str(mount)])


def test_what_a_refused_upload_wrote_on_a_full_disk_is_given_back(tmp_path):
    """Compaction copies what is live, for which a full disk has no room: it failed, was never
    tried again, and 48 MiB of a refused upload stayed in the pack (later uploads 507)."""
    with _node_on_a_small_disk(tmp_path) as (n, room):
        kept = os.urandom(room // 6)
        cid = n.upload([("kept.bin", kept)]).text
        refused = n.upload([("big.bin", os.urandom(room))])
        assert refused.status_code == 507, refused.text

        def pack_bytes() -> int:
            return sum(p.stat().st_size for p in (n.data / "blocks").glob("pack-*.dat"))

        wait_until(lambda: pack_bytes() < len(kept) + (2 << 20), timeout=30, what="the refused bytes back")
        again = n.upload([("next.bin", os.urandom(room // 3))])
        assert again.status_code == 200, again.text
        with n.client() as c:
            assert c.get(f"/api/v2/files/{cid}").content == kept


def test_an_upload_right_after_one_refused_on_a_full_disk_does_not_trap_its_bytes(tmp_path):
    """The refused upload's bytes were cut at collection's next round, unless an upload wrote
    past them first: then only compaction, which a full disk has no room for, could free them,
    and every larger upload after was a 507."""
    with _node_on_a_small_disk(tmp_path) as (n, room):
        assert n.upload([("kept.bin", os.urandom(room // 8))]).status_code == 200
        assert n.upload([("big.bin", os.urandom(room))]).status_code == 507
        assert n.upload([("small.txt", b"right after")]).status_code == 200  # at once: no round between
        fits = n.upload([("fits.bin", os.urandom(room // 2))])
        assert fits.status_code == 200, fits.text


def test_store_quota_is_507(fresh_node):
    n = fresh_node("--store-quota", "2MiB")
    _check_full_store(n, gen("over-quota", 3 << 20))


def test_kill_9_keeps_acknowledged_uploads_and_drops_unfinished_ones(tmp_path):
    n = Node(tmp_path / "crash").start()
    data = gen("acknowledged", 3 * CHUNK + 5)
    cid = n.upload([("kept.bin", data)]).text
    with n.client() as c:
        c.put("/api/v2/files/kept", content=cid)
    pins = n.pins()
    unfinished = n.start_unfinished_upload(2 * CHUNK + 100)
    time.sleep(0.3)
    n.stop(signal.SIGKILL)
    unfinished.close()
    n.start()
    try:
        with n.client() as c:
            assert c.get(f"/api/v2/files/{cid}").content == data
            assert c.get("/api/v2/files/kept").content == data
        assert n.pins() == pins
        again = gen("after-crash", 2 * CHUNK)
        new_cid = n.upload([("after.bin", again)]).text
        with n.client() as c:
            assert c.get(f"/api/v2/files/{new_cid}").content == again
    finally:
        n.stop()


def test_a_node_whose_database_was_lost_keeps_every_block_of_its_packs(tmp_path):
    """state.sqlite deleted (a disk fault, a bad restore, a mistake): the node took its packs
    for a crash's leftovers and deleted them all within seconds of its start."""
    n = Node(tmp_path / "lost").start()
    big, site = gen("big after a loss", 20 << 20), [("index.html", b"<h1>kept</h1>"), ("app.js", b"go()")]
    cids = [n.upload([("big.bin", big)]).text, n.upload(site).text]
    n.stop()
    for path in (tmp_path / "lost").glob("state.sqlite*"):
        path.unlink()
    n.start()
    try:
        time.sleep(7)  # past the collector's first rounds (every 5 s)
        with n.client() as c:
            assert c.get(f"/api/v2/files/{cids[0]}").content == big
            assert c.get(f"/api/v2/files/{cids[1]}/app.js").content == b"go()"
        assert "indexing its blocks again" in n.output() and "given back to the disk" not in n.output()
        assert sum(p.stat().st_size for p in (tmp_path / "lost" / "blocks").glob("pack-*.dat")) > 20 << 20
    finally:
        n.stop()


def test_a_file_whose_leaves_hold_less_than_it_says_is_a_500_early_and_cut_short_later(fresh_node):
    """A damaged file DAG (its last leaf shorter than its node says): within the first MiB,
    which is read before the answer starts, a 500; further on, the answer is cut short of its
    Content-Length. Each time one line in the log, no traceback, and the node goes on."""
    leaf = os.urandom(300 << 10)
    leaf_cid = make_cid(RAW, leaf)
    n = fresh_node()
    with n.client() as client:
        for count in (2, 8):
            sizes = [len(leaf)] * (count - 1) + [400 << 10]
            meta = unixfs.UnixFSData(unixfs.FILE, filesize=sum(sizes), blocksizes=tuple(sizes))
            top = dagpb.encode([dagpb.Link(leaf_cid, "", len(leaf))] * count, unixfs.encode(meta))
            top_cid = make_cid(DAG_PB, top)
            body = car.header([top_cid]) + b"".join(
                part for cid, data in ((top_cid, top), (leaf_cid, leaf)) for part in car.section(cid, data))
            headers = {"Content-Type": "application/vnd.ipld.car"}
            assert client.post("/api/v2/car", content=body, headers=headers).status_code == 200
            if count == 2:
                r = client.get(f"/api/v2/files/{to_str(top_cid)}")
                assert r.status_code == 500 and r.json()["code"] == "ERR_CORRUPT_BLOCK"
                continue
            with pytest.raises(httpx.RemoteProtocolError):
                client.get(f"/api/v2/files/{to_str(top_cid)}")
        assert client.get(f"/api/v2/files/{to_str(leaf_cid)}").content == leaf
    log = n.output()
    assert "damaged file DAG" in log and f"file {to_str(top_cid)} cut short" in log, log
    assert "Traceback" not in log, log
