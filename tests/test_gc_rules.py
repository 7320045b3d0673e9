"""Garbage collection rules on a real block store and SQLite file, without a node around it."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

import pytest
from conftest import open_store
from edgefiles.node import gc
from edgefiles.node.blockstore import BlockStore
from edgefiles.node.importer import FileBuilder
from edgefiles.node.profiles import Profile
from hypothesis import given, settings
from hypothesis import strategies as st

SMALL = Profile("small", 64, 3, True, None)


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path)
    yield s
    s.close()


def add_file(store: BlockStore, data: bytes) -> tuple[bytes, set[bytes]]:
    """Import `data` as a small-chunked file; (root, CIDs of all its blocks)."""
    blocks: dict[bytes, bytes] = {}
    builder = FileBuilder(SMALL, blocks.__setitem__)
    builder.write(data)
    root = builder.finish().cid
    batch = store.batch()
    for cid, block in blocks.items():
        batch.put(cid, block)
    store.commit(batch)
    return root, set(blocks)


def pin(folder: Path, root: bytes, expires: float | None = None) -> None:
    with sqlite3.connect(folder / "state.sqlite") as conn:
        conn.execute("INSERT INTO pins VALUES (?, ?, ?, ?)", (root, f"test:{root.hex()}", expires, 0))


@settings(max_examples=25, deadline=None)
@given(
    files=st.lists(st.binary(min_size=1, max_size=600), min_size=1, max_size=6, unique=True),
    pinned=st.data(),
)
def test_collecting_everything_keeps_exactly_what_pins_reach(files, pinned):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = open_store(folder)
        try:
            added = [add_file(store, data) for data in files]
            chosen = pinned.draw(st.sets(st.sampled_from(range(len(added)))))
            for i in chosen:
                pin(folder, added[i][0])
            expired = [i for i in range(len(added)) if i not in chosen][:1]
            for i in expired:  # an expired pin protects nothing
                pin(folder, added[i][0], expires=time.time() - 1)
            gc.collect(store, limit=0)
            keep = set().union(*(added[i][1] for i in chosen))
            for _, cids in added:
                for cid in cids:
                    assert store.has(cid) == (cid in keep)
                    if cid in keep:
                        assert store.get(cid) is not None  # still readable after compaction
        finally:
            store.close()


def test_a_block_an_open_upload_relies_on_survives_until_that_upload_ends(store):
    _, cids = add_file(store, b"shared content" * 20)
    upload = store.batch()
    for cid in cids:  # a second upload of the same bytes dedupes against them
        upload.put(cid, store.get(cid))
    gc.collect(store, limit=0)
    assert all(store.has(c) for c in cids)
    store.abandon(upload)
    gc.collect(store, limit=0)
    assert not any(store.has(c) for c in cids)


def older_file_read_last(store: BlockStore) -> tuple[set[bytes], set[bytes], int]:
    """Two files, the older one read after both were written: (its blocks, the newer one's
    blocks, the older one's size). Collection down to that size must keep the older one."""
    _, old = add_file(store, bytes(range(200)))
    _, new = add_file(store, bytes(range(100, 250)))
    for cid in old:
        store.get(cid)  # read last: the older file is the recently used one now
    return old, new, sum(len(store.get(c)) for c in old)


def assert_kept_only(store: BlockStore, kept: set[bytes], freed: set[bytes]) -> None:
    assert all(store.has(c) for c in kept)
    assert not any(store.has(c) for c in freed)


def test_least_recently_read_go_first(store):
    old, new, size = older_file_read_last(store)
    gc.collect(store, limit=size)
    assert_kept_only(store, old, new)


def test_least_recently_read_go_first_after_a_restart_too(tmp_path):
    store = open_store(tmp_path)
    old, new, size = older_file_read_last(store)
    store.close()
    store = open_store(tmp_path)  # a clean restart
    try:
        gc.collect(store, limit=size)
        assert_kept_only(store, old, new)
    finally:
        store.close()


def test_recency_saved_while_running_survives_a_crash(tmp_path):
    store = open_store(tmp_path)
    hints = tmp_path / "blocks" / "recent-reads.msgpack"
    store.save_recency()
    assert not hints.exists()  # nothing read yet: nothing to save
    old, new, size = older_file_read_last(store)
    store.save_recency()  # what the GC loop does every minute
    saved = hints.read_bytes()
    after_crash = open_store(tmp_path)  # `store` is never closed: as after a power cut
    try:
        gc.collect(after_crash, limit=size)
        assert_kept_only(after_crash, old, new)
        store.save_recency()
        assert hints.read_bytes() == saved  # no read since: not written again
    finally:
        after_crash.close()
        store.close()


def test_unreadable_recency_hints_are_ignored(tmp_path):
    store = open_store(tmp_path)
    _, cids = add_file(store, bytes(range(120)))
    store.close()
    (tmp_path / "blocks" / "recent-reads.msgpack").write_bytes(b"\xc1 not msgpack")
    store = open_store(tmp_path)
    try:
        assert all(store.last_read(c) == 0.0 for c in cids)
        assert all(store.get(c) is not None for c in cids)
    finally:
        store.close()


def test_what_a_pinned_dag_cbor_node_links_to_is_kept(store, tmp_path):
    import hashlib

    import cbor2

    def cbor_cid(block: bytes) -> bytes:
        return bytes([1, 0x71, 0x12, 0x20]) + hashlib.sha256(block).digest()

    leaf_root, leaf_blocks = add_file(store, b"a file below a dag-cbor node" * 10)
    child = cbor2.dumps({"file": cbor2.CBORTag(42, b"\x00" + leaf_root)})
    root = cbor2.dumps({"child": cbor2.CBORTag(42, b"\x00" + cbor_cid(child)), "n": 1.5})
    batch = store.batch()
    batch.put(cbor_cid(child), child)
    batch.put(cbor_cid(root), root)
    store.commit(batch)
    pin(tmp_path, cbor_cid(root))
    gc.collect(store, limit=0)
    assert all(store.has(cid) for cid in {cbor_cid(root), cbor_cid(child), *leaf_blocks})
