"""Garbage collection on a real node: unpinned blocks go, least recently read first; pinned stay."""

from __future__ import annotations

import socket
import time

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
        wait_until(lambda: "gc: freed" in n.output(), timeout=10, what="the collection to be logged")
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


@pytest.mark.parametrize("as_car", [False, True])
def test_a_file_read_slowly_is_not_collected_under_its_reader(fresh_node, as_car):
    """Its pin expires and collection runs while a client reads it: the answer still ends
    whole (it was a 200 cut short, its blocks freed under it), and once it is sent the
    blocks are free to go."""
    n = fresh_node("--gc-above", "1", "--pin-uploads-for", "1s")
    data = gen("slow", 24 * MIB)
    with n.client() as c:
        cid = c.post("/api/v2/files", files=[("f", ("slow.bin", data))]).text
    path = f"/api/v2/files/{cid}" + ("?format=car" if as_car else "")
    auth = f"Authorization: Bearer {n.token()}"
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", n.port), timeout=30) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        s.sendall(request.encode())
        answer = bytearray()
        started = time.monotonic()
        while chunk := s.recv(64 << 10):
            answer += chunk
            if time.monotonic() - started < 8:  # across a collection (every 5 s) after the pin's end
                time.sleep(0.02)
    head, _, body = bytes(answer).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert len(body) == length, (len(body), length)
    pieces = [data[i:i + 262144] for i in range(0, len(data), 262144)]  # its raw leaves
    assert all(piece in body for piece in pieces) if as_car else body == data
    assert "cut short" not in n.output()
    with n.client() as c:
        wait_until(lambda: c.get("/api/v2/node/info").json()["bytes"] == 0, timeout=30,
                   what="the blocks to go once nothing reads them")


def test_what_a_crash_left_in_the_packs_is_given_back_after_a_restart(fresh_node):
    """An upload cut off by a crash leaves bytes past the index, counted nowhere: after the
    restart they are reclaimed as a failed upload's are (they stayed until `fsck --repair`)."""
    n = fresh_node()
    data = gen("kept", 2 * MIB)
    with n.client() as c:
        cid = c.post("/api/v2/files", files=[("f", ("kept.bin", data))]).text
        assert c.put("/api/v2/files/kept", content=cid).status_code == 200
    n.stop()
    (pack,) = (n.data / "blocks").glob("pack-*.dat")
    with open(pack, "ab") as tail:  # what a crash mid-upload leaves: written, never indexed
        tail.write(gen("cut off", 24 * MIB))
    n.start()
    wait_until(lambda: pack_bytes(n) < 8 * MIB, timeout=30, what="the crash's leftovers to be given back")
    # the log line follows the reclaim itself, so it may come a moment after the pack shrank
    wait_until(lambda: "given back to the disk" in n.output(), timeout=10, what="the reclaim to be logged")
    with n.client() as c:
        assert c.get("/api/v2/files/kept").content == data
