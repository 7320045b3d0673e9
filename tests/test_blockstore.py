"""Pack writes on a real block store and SQLite file: buffered and bulk (O_DIRECT) appends,
mixed in any order, read back intact, also after the store is opened again."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import tempfile
from pathlib import Path

import pytest
from conftest import open_store
from edgefiles.node.blockstore import CorruptBlock, QueuedWrites, StorageFull
from edgefiles.node.cid import DAG_PB, RAW, make_cid, normalize, verify_block
from edgefiles.node.core import Core, CoreSettings
from edgefiles.node.identity import NodeKey
from edgefiles.node.packs import HEADER, RECORD_MAGIC
from edgefiles.node.profiles import get_profile
from hypothesis import example, given, settings
from hypothesis import strategies as st


def takes_direct_io(folder: Path) -> bool:
    try:
        fd = os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError:
        return False
    os.close(fd)
    os.unlink(folder / "probe")
    return True


def commit_blocks(store, blocks: list[bytes], bulk: bool = False) -> list[bytes]:
    """Store blocks as one committed batch, as an upload or a transfer does; their CIDs."""
    pairs = [(make_cid(RAW, data), data) for data in blocks]
    batch = store.batch()
    batch.put_many(pairs, bulk=bulk)
    store.commit(batch)
    return [cid for cid, _ in pairs]


def damage(folder: Path, place: tuple[int, int]) -> None:
    """One byte of the block at (pack, offset) flipped on disk (the store closed)."""
    with open(folder / "blocks" / f"pack-{place[0]:06d}.dat", "r+b") as pack:
        pack.seek(place[1] + 100)
        pack.write(b"\xff")


writes = st.lists(
    st.tuples(
        st.booleans(),  # bulk
        st.lists(st.binary(min_size=0, max_size=9000), min_size=1, max_size=5),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=40, deadline=None)
@given(writes=writes)
def test_bulk_and_buffered_writes_in_any_order_read_back_intact(writes):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = open_store(folder)
        expected: dict[bytes, bytes] = {}
        try:
            for bulk, blocks in writes:
                batch = store.batch()
                pairs = [(make_cid(RAW, data), data) for data in blocks]
                batch.put_many(pairs, bulk=bulk)
                store.commit(batch)
                expected.update(pairs)
            for cid, data in expected.items():
                assert store.get(cid) == data
            assert store.totals()[1] == sum(map(len, expected.values()))
            if any(bulk for bulk, _ in writes) and takes_direct_io(folder):
                assert store.writes_past_cache  # this filesystem takes it: the bulk path was used
        finally:
            store.close()
        reopened = open_store(folder)
        try:
            for cid, data in expected.items():
                assert reopened.get(cid) == data
        finally:
            reopened.close()


@settings(max_examples=25, deadline=None)
@given(before=writes, after=writes, cut=st.integers(min_value=1, max_value=200))
@example(before=[(False, [b""])], after=[(True, [b"\x00"])], cut=5)  # a bulk write's zeros after a cut header
def test_a_store_whose_index_was_lost_indexes_its_packs_again(before, after, cut):
    """state.sqlite deleted (or made anew): every block is found again in the packs, those
    written after a record a crash cut off (the node went on appending after it) included."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        expected: dict[bytes, bytes] = {}
        for phase in (before, after):
            store = open_store(folder)
            try:
                for bulk, blocks in phase:
                    expected.update(zip(commit_blocks(store, blocks, bulk), blocks, strict=True))
            finally:
                store.close()
            if phase is before:  # a write cut off by a crash, then the node restarted
                never = b"a block whose write was cut off" * 10
                record = HEADER.pack(RECORD_MAGIC, 36, len(never)) + make_cid(RAW, never) + never
                with open(max((folder / "blocks").glob("pack-*.dat")), "ab") as pack:
                    pack.write(record[:cut])
        for path in folder.glob("state.sqlite*"):
            path.unlink()
        reopened = open_store(folder)
        try:
            assert {cid: reopened.get(cid) for cid in expected} == expected
            assert reopened.totals() == (len(expected), sum(map(len, expected.values())))
        finally:
            reopened.close()


def test_a_rebuild_cut_short_starts_over_at_the_next_start(tmp_path, monkeypatch):
    """Committed pack by pack, a rebuild stopped midway left an index that was no longer
    empty: the next start took the packs it had not reached for leftovers, and gave them back."""
    from edgefiles.node.blockstore import BlockStore

    store = open_store(tmp_path)
    blocks = [os.urandom(5000 + i) for i in range(30)]
    cids = commit_blocks(store, blocks)
    store.close()
    (tmp_path / "state.sqlite").unlink()
    checked = BlockStore._whole

    def stopped_midway(self, pack, cid, offset, length):
        if self.checked_here >= 10:
            raise KeyboardInterrupt  # a supervisor's restart, in effect
        self.checked_here += 1
        return checked(self, pack, cid, offset, length)

    monkeypatch.setattr(BlockStore, "_whole", stopped_midway)
    monkeypatch.setattr(BlockStore, "checked_here", 0, raising=False)
    with pytest.raises(KeyboardInterrupt):
        open_store(tmp_path)
    monkeypatch.setattr(BlockStore, "_whole", checked)
    store = open_store(tmp_path)
    try:
        assert [store.get(cid) for cid in cids] == blocks
    finally:
        store.close()


def test_a_repair_that_failed_does_not_make_the_damaged_copy_pass(tmp_path):
    """The first upload of a damaged block's content failed after writing it: the second took
    the damaged copy for checked (by the first one's write) and kept it."""
    store = open_store(tmp_path)
    data = os.urandom(9000)
    (cid,) = commit_blocks(store, [data])
    place = store.read_connection().execute("SELECT pack, offset FROM blocks").fetchone()
    store.close()
    damage(tmp_path, place)
    store = open_store(tmp_path)
    try:
        failed = store.batch()
        failed.put(cid, data)
        store.abandon(failed)
        commit_blocks(store, [data])
        assert store.get(cid) == data
    finally:
        store.close()


def test_a_bulk_write_on_a_filesystem_without_direct_io_is_stored_buffered(tmp_path, monkeypatch):
    real_open = os.open

    def refusing_direct(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT not supported")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_direct)
    store = open_store(tmp_path)
    try:
        blocks = [os.urandom(70_000) for _ in range(3)]
        commit_blocks(store, blocks, bulk=True)
        assert all(store.get(make_cid(RAW, b)) == b for b in blocks)
        assert not store.writes_past_cache
    finally:
        store.close()


def test_a_block_stored_already_is_not_written_twice(tmp_path):
    store = open_store(tmp_path)
    try:
        data = os.urandom(50_000)
        cid = make_cid(RAW, data)
        for bulk in (True, False, True):
            batch = store.batch()
            batch.put_many([(cid, data)], bulk=bulk)
            store.commit(batch)
        assert store.totals()[1] == len(data)
        assert store.get(cid) == data
    finally:
        store.close()


def test_a_dag_pb_block_is_one_block_under_its_cidv0_and_its_cidv1(tmp_path):
    """Kubo names blocks by CIDv0: a block put under either name is found under both, in
    the batch before it is committed (a reader racing the commit) and in the index after."""
    data = b"\x0a\x08\x08\x02\x12\x02hi\x18\x02"  # a dag-pb UnixFS file node
    v1 = make_cid(DAG_PB, data)
    v0 = normalize(v1)[2:]
    for put_as, other in ((v0, v1), (v1, v0)):
        (tmp_path / put_as.hex()).mkdir()
        store = open_store(tmp_path / put_as.hex())
        try:
            batch = store.batch()
            batch.put_many([(put_as, data), (other, data)])
            assert batch.read(other) == data and other in batch and len(batch) == 1
            store.commit(batch)
            assert store.get(put_as) == data and store.get(other) == data
            assert store.totals() == (1, len(data))
        finally:
            store.close()


@pytest.mark.parametrize("bulk", [True, False])
def test_a_full_store_refuses_the_write_and_keeps_what_it_had(tmp_path, bulk):
    store = open_store(tmp_path)
    try:
        kept = os.urandom(10_000)
        commit_blocks(store, [kept])
        store.quota = store.size + 1000
        too_big = os.urandom(20_000)
        with pytest.raises(StorageFull):
            store.batch().put_many([(make_cid(RAW, too_big), too_big)], bulk=bulk)
        assert store.get(make_cid(RAW, kept)) == kept
        assert not store.has(make_cid(RAW, too_big))
    finally:
        store.close()


def test_a_filesystem_that_refuses_direct_writes_midway_gets_buffered_ones(tmp_path, monkeypatch):
    store = open_store(tmp_path)
    real_pwrite = os.pwrite

    def refusing(fd, data, offset):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:  # only writes past the page cache
            raise OSError(errno.EOPNOTSUPP, "not on this filesystem")
        return real_pwrite(fd, data, offset)

    try:
        first = os.urandom(5000)  # buffered: the pack ends mid-block
        commit_blocks(store, [first])
        monkeypatch.setattr(os, "pwrite", refusing)
        blocks = [os.urandom(70_000) for _ in range(3)]
        commit_blocks(store, blocks, bulk=True)
        assert not store.writes_past_cache
        assert all(store.get(make_cid(RAW, b)) == b for b in [first, *blocks])
    finally:
        store.close()


def test_a_write_that_fails_midway_is_rolled_back_and_the_store_goes_on(tmp_path):
    store = open_store(tmp_path)
    try:
        kept = os.urandom(3000)
        commit_blocks(store, [kept])

        def fails_inside_the_transaction(conn):
            raise RuntimeError("power blip")

        with pytest.raises(RuntimeError):
            store.delete([make_cid(RAW, kept)], keep=fails_inside_the_transaction)
        assert store.get(make_cid(RAW, kept)) == kept  # nothing of the failed delete happened
        later = os.urandom(3000)
        commit_blocks(store, [later])  # would fail inside a transaction left open
        assert store.get(make_cid(RAW, later)) == later and store.size == 6000
    finally:
        store.close()


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(0, 3 << 20), min_size=1, max_size=12), abandon=st.booleans())
def test_queued_writes_store_every_block_or_none(sizes, abandon):
    """An import's puts written in groups on a writer thread: after flush and commit every
    block reads back; an abandoned import leaves nothing visible and no bytes counted."""
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp))
        try:
            blocks = [os.urandom(n) for n in sizes]
            batch = store.batch()
            writes = QueuedWrites(batch)
            for data in blocks:
                writes.put(make_cid(RAW, data), data)
            if abandon:
                writes.close()
                store.abandon(batch)
                assert store.size == 0 and not any(store.has(make_cid(RAW, d)) for d in blocks)
                store.quota = 1 << 20  # nothing of the abandoned import still counts against it
                small = store.batch()
                small.put_many([(make_cid(RAW, b"x"), b"x")])
                store.commit(small)
                return
            writes.flush()
            store.commit(batch)
            assert all(store.get(make_cid(RAW, d)) == d for d in blocks)
            assert store.size == sum(len(d) for d in {bytes(b) for b in blocks})
        finally:
            store.close()


def cached_everywhere(folder: Path) -> bool:
    """Whether every byte of every file under `folder` is in the page cache (a read that
    would wait for the disk fails with EAGAIN under RWF_NOWAIT)."""
    buf = bytearray(1 << 20)
    for path in (p for p in folder.rglob("*") if p.is_file()):
        fd = os.open(path, os.O_RDONLY)
        try:
            for offset in range(0, os.fstat(fd).st_size, len(buf)):
                try:
                    os.preadv(fd, [buf], offset, os.RWF_NOWAIT)
                except BlockingIOError:
                    return False
        finally:
            os.close(fd)
    return True


def test_an_upload_stays_in_the_page_cache_for_the_peers_and_browsers_that_read_it_next(tmp_path):
    """An import's groups are written through the page cache (a transfer's go past it): the
    node serves what it was just given without reading it back from the disk."""
    (tmp_path / "store").mkdir()
    store = open_store(tmp_path / "store")
    try:
        batch = store.batch()
        writes = QueuedWrites(batch)
        for _ in range(24):
            data = os.urandom(1 << 20)
            writes.put(make_cid(RAW, data), data)
        writes.flush()
        store.commit(batch)
        assert cached_everywhere(tmp_path / "store")
        if takes_direct_io(tmp_path):  # the contrast: a transfer's megabytes are not kept there
            commit_blocks(store, [os.urandom(1 << 20) for _ in range(4)], bulk=True)
            assert not cached_everywhere(tmp_path / "store")
    finally:
        store.close()


def test_places_looked_up_before_a_compaction_still_read_the_blocks_it_moved(tmp_path):
    """A run's places are looked up ahead of its read; compaction may move the blocks and
    delete their pack meanwhile. They are then looked up again."""
    store = open_store(tmp_path)
    try:
        kept = commit_blocks(store, [os.urandom(5000) for _ in range(6)])
        dropped = commit_blocks(store, [os.urandom(5000) for _ in range(6)])
        expected = store.get_many(kept)
        places = store.places(kept)
        assert store.get_many(kept, places=places) == expected
        store.delete(dropped, lambda conn: set())
        assert store.compact(0.3, seal_current=True)[0] == 1
        assert store.places(kept) != places  # moved: the old places lie in a pack that is gone
        assert store.get_many(kept, places=places) == expected
    finally:
        store.close()


def test_a_place_looked_up_before_a_damaged_copy_was_replaced_reads_the_good_copy(tmp_path):
    """A read whose places were looked up while a block's copy was damaged, and which comes
    after a good copy took its place (an upload of the same content), reads the good one."""
    store = open_store(tmp_path)
    data = [os.urandom(9000) for _ in range(3)]
    cids = commit_blocks(store, data)
    damaged = store.places(cids)[cids[1]]
    store.close()
    damage(tmp_path, damaged)
    store = open_store(tmp_path)
    try:
        places = store.places(cids)
        with pytest.raises(CorruptBlock):
            store.get_many(cids, places=places)
        commit_blocks(store, [data[1]])
        assert store.places(cids)[cids[1]] != damaged
        assert store.get_many(cids, places=places) == data
    finally:
        store.close()


def test_places_that_lack_a_block_are_all_looked_up_again(tmp_path):
    """Places that do not cover a read are not mixed with a fresh lookup: a block dropped
    from the index since (a repair that could not mend it) is not read at its old place."""
    store = open_store(tmp_path)
    data = [os.urandom(9000) for _ in range(2)]
    cids = commit_blocks(store, data)
    places = store.places(cids[:1])
    store.close()
    damage(tmp_path, places[cids[0]])
    store = open_store(tmp_path)
    try:
        store.delete(cids[:1], lambda conn: set())
        assert store.get_many(cids, places=places) == [None, data[1]]
    finally:
        store.close()


def test_a_block_asked_for_as_cidv0_and_as_cidv1_at_once_is_found_under_both(tmp_path):
    data = b"\x0a\x08\x08\x02\x12\x02hi\x18\x02"  # a dag-pb UnixFS file node
    v1 = make_cid(DAG_PB, data)
    v0 = normalize(v1)[2:]
    store = open_store(tmp_path)
    try:
        commit_blocks(store, [b"other"])
        batch = store.batch()
        batch.put(v1, data)
        store.commit(batch)
        assert set(store.places([v0, v1])) == {v0, v1}
        assert store.get_many([v0, v1]) == [data, data]
    finally:
        store.close()


def test_a_block_the_disk_cannot_read_is_a_corrupt_block(tmp_path):
    """An I/O error reading a block (a bad sector) is what a failed hash is: CorruptBlock,
    which a read answers as a damaged block (a 500 or a cut answer), not an unknown error."""
    store = open_store(tmp_path)
    cids = commit_blocks(store, [os.urandom(9000)])

    def unreadable(place):
        raise OSError(errno.EIO, "Input/output error")

    try:
        store._packs.read = unreadable  # the disk: not ours to break for real
        with pytest.raises(CorruptBlock):
            store.get_many(cids)
        with pytest.raises(CorruptBlock):
            store.get(cids[0])
    finally:
        store.close()


def sealed_blocks(store, sizes: list[int]) -> tuple[list[bytes], list[bytes]]:
    """Blocks of these sizes committed to a pack that is then sealed (appends go to a new
    one): the data and the CIDs."""
    data = [os.urandom(size) for size in sizes]
    cids = commit_blocks(store, data)
    store._packs.roll()
    return data, cids


def test_large_blocks_of_a_sealed_pack_are_sent_from_the_page_cache_and_still_verified(tmp_path):
    """Blocks on their way out come as views of the page cache, uncopied, where they are
    large and their pack is sealed; small ones are read as ever. A byte changed on the disk
    under the view is still caught by the hash."""
    store = open_store(tmp_path)
    try:
        data, cids = sealed_blocks(store, [1 << 20, 300_000, 5000])
        sent = store.get_many(cids, to_send=True)
        assert sent == data
        assert [type(block) for block in sent] == [memoryview, memoryview, bytes]
        assert all(block.readonly for block in sent[:2])
        place = store.places(cids[:1])[cids[0]]
        with open(tmp_path / "blocks" / f"pack-{place[0]:06d}.dat", "r+b") as pack:
            pack.seek(place[1] + 100)
            pack.write(bytes([data[0][100] ^ 0xFF]))
        with pytest.raises(CorruptBlock):
            store.get_many(cids[:1], to_send=True)
    finally:
        store.close()


def test_a_block_to_send_read_from_the_disk_comes_whole(tmp_path):
    """A block whose pages the page cache no longer holds is read in from the disk."""
    store = open_store(tmp_path)
    try:
        data, cids = sealed_blocks(store, [1 << 20])
        place = store.places(cids)[cids[0]]
        fd = os.open(tmp_path / "blocks" / f"pack-{place[0]:06d}.dat", os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        assert store.get_many(cids, to_send=True) == data
    finally:
        store.close()


def test_a_block_past_the_end_of_a_pack_cut_short_under_its_mapping_is_a_damaged_block(tmp_path):
    """A mapped page that cannot be read (past the end of a file cut short here, a bad sector
    on a disk) would kill the node (SIGBUS) when touched: it is a damaged block instead."""
    store = open_store(tmp_path)
    try:
        data, cids = sealed_blocks(store, [1 << 20, 1 << 20])
        assert store.get_many(cids, to_send=True) == data  # the pack is mapped whole
        place = store.places(cids[1:])[cids[1]]
        os.truncate(tmp_path / "blocks" / f"pack-{place[0]:06d}.dat", place[1] + 1000)
        assert store.get_many(cids[:1], to_send=True) == data[:1]
        with pytest.raises(CorruptBlock):
            store.get_many(cids[1:], to_send=True)
    finally:
        store.close()


def test_views_sent_while_compaction_removes_their_pack_keep_their_bytes(tmp_path):
    """Compaction may move the blocks of an answer being sent and delete their pack: what
    was handed out stays intact, and places looked up before still read the blocks."""
    store = open_store(tmp_path)
    try:
        data, cids = sealed_blocks(store, [1 << 20] * 6)
        (kept, kept_cids), dropped = (data[:2], cids[:2]), cids[2:]
        places = store.places(kept_cids)
        sent = store.get_many(kept_cids, places=places, to_send=True)
        assert all(isinstance(block, memoryview) for block in sent)
        store.delete(dropped, lambda conn: set())
        assert store.compact(0.3, seal_current=True)[0] >= 1
        assert not (tmp_path / "blocks" / f"pack-{places[kept_cids[0]][0]:06d}.dat").exists()
        assert sent == kept
        assert store.get_many(kept_cids, places=places, to_send=True) == kept
    finally:
        store.close()


@pytest.mark.parametrize("profile", ["kubo-v1", "actyx"])  # raw leaves; dag-pb ones, as `ipfs add` makes
def test_a_file_and_its_car_read_from_a_sealed_pack_come_whole_and_verified(tmp_path, profile):
    """What a node answers with, read from a sealed pack: the file's bytes in order, and
    every block of its DAG hashing to its CID."""
    data = os.urandom((3 << 20) + 12345)

    async def read_back() -> tuple[bytes, list[tuple[bytes, bytes | memoryview]]]:
        core = await Core.open(CoreSettings(tmp_path, get_profile(profile)), NodeKey(b"\1" * 32))
        try:
            imported = await core.import_bytes(data)
            await core.commit(imported.batch, [imported.root])
            core.store._packs.roll()
            reader = core.reader
            node = reader.load(imported.root)
            file = bytes(reader.read_spans(list(reader.spans(node, 0, node.size))))
            laid = list(reader.layout(imported.root))
            return file, list(zip([cid for cid, _, _ in laid], reader.read_laid(laid), strict=True))
        finally:
            await core.close()

    file, blocks = asyncio.run(read_back())
    assert file == data
    assert len(blocks) == 14 and all(verify_block(cid, block) for cid, block in blocks)
    assert any(isinstance(block, memoryview) for _, block in blocks)


def test_large_blocks_of_the_pack_being_appended_to_are_sent_from_the_page_cache_as_it_grows(tmp_path):
    """The pack being appended to outgrows its mapping: blocks past it are sent uncopied too."""
    store = open_store(tmp_path)
    try:
        first = [os.urandom(1 << 20)]
        first_cids = commit_blocks(store, first)
        assert store.get_many(first_cids, to_send=True) == first
        later = [os.urandom(200_000) for _ in range(3)]
        later_cids = commit_blocks(store, later)  # past the end of the pack as it was mapped
        sent = store.get_many(first_cids + later_cids, to_send=True)
        assert sent == first + later and all(isinstance(block, memoryview) for block in sent)
    finally:
        store.close()


def test_the_pack_being_appended_to_is_not_cut_under_an_answer_sending_from_it(tmp_path):
    """Bytes no record owns any more are cut off the pack being appended to (a full disk),
    but not while an answer still sends some of them: touching a page past the end of the
    file would kill the node, and bytes appended there later would be sent unverified."""
    store = open_store(tmp_path)
    try:
        kept = [os.urandom(5000)]
        kept_cids = commit_blocks(store, kept)
        gone = [os.urandom(1 << 20)]
        gone_cids = commit_blocks(store, gone)
        places = store.places(gone_cids)
        sent = store.get_many(gone_cids, places=places, to_send=True)
        assert isinstance(sent[0], memoryview)
        store.delete(gone_cids, lambda conn: set())
        assert store.trim_current() == 0
        assert sent == gone
        del sent
        assert store.trim_current() > 1 << 20
        assert store.get_many(gone_cids, places=places, to_send=True) == [None]
        assert store.get_many(kept_cids, to_send=True) == kept
    finally:
        store.close()


def pack_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in (folder / "blocks").glob("pack-*.dat"))


def test_a_failed_uploads_bytes_are_cut_before_the_next_upload_writes_past_them(tmp_path):
    """Once another upload's bytes lie past them, only compaction (which copies: a full disk
    has no room for it) could give them back."""
    store = open_store(tmp_path)
    try:
        commit_blocks(store, [os.urandom(5000)])
        before = pack_bytes(tmp_path)
        failed = store.batch()
        failed.put_many([(make_cid(RAW, data), data) for data in (os.urandom(1 << 20), os.urandom(1 << 20))])
        store.abandon(failed)
        assert pack_bytes(tmp_path) > before + (2 << 20)
        commit_blocks(store, [os.urandom(3000)])
        assert pack_bytes(tmp_path) < before + (64 << 10)
    finally:
        store.close()


def test_a_reclaim_cut_short_leaves_copies_the_next_one_cuts_rather_than_copies(tmp_path):
    """A `fsck --repair` killed while copying: its copies lie past the last indexed record of
    the pack it copied to; the next repair cuts them (each interrupted repair added a copy)."""
    store = open_store(tmp_path)
    kept = os.urandom(5000)
    (kept_cid,) = commit_blocks(store, [kept])
    copying = store.batch()  # what an interrupted compaction wrote: never indexed
    copying.put_many([(make_cid(RAW, data), data) for data in (os.urandom(1 << 20), os.urandom(1 << 20))])
    store.close()  # the process dies: nothing settles the batch
    store = open_store(tmp_path)
    try:
        assert pack_bytes(tmp_path) > 2 << 20
        store.reclaim(set())
        assert pack_bytes(tmp_path) < 64 << 10
        assert store.get(kept_cid) == kept
    finally:
        store.close()
