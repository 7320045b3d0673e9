"""Property tests: the path validator, HAMT build/read, byte ranges through the exporter."""

import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
from edgefiles.node import dagpb, exporter, hamt, unixfs
from edgefiles.node.cid import DAG_PB, RAW, codec_of, make_cid, normalize
from edgefiles.node.dagpb import Link
from edgefiles.node.importer import FileBuilder, TreeBuilder, build_directory, import_bytes
from edgefiles.node.profiles import ACTYX, KUBO_V1, UNIXFS_V1_2025, Profile
from edgefiles.web.ahead import batches
from edgefiles.web.errors import BadRequest
from edgefiles.web.paths import upload_segments, url_segments
from hypothesis import given, settings
from hypothesis import strategies as st

segment_chars = st.characters(codec="utf-8", exclude_categories=("Cs",))


@given(st.text(segment_chars, max_size=300))
def test_upload_segments_never_escape(filename):
    try:
        segments = upload_segments(filename)
    except BadRequest:
        return
    for seg in segments:
        assert seg not in ("", ".", "..")
        assert "/" not in seg and "\\" not in seg and "\x00" not in seg
        assert len(seg.encode()) <= 255
        assert "%2e%2e" not in seg.lower()
    assert upload_segments("/".join(segments)) == segments


@given(st.lists(st.text(segment_chars, min_size=1, max_size=40), min_size=1, max_size=5))
def test_url_segments_roundtrip_or_reject(segments):
    raw = "/".join(quote(s, safe="") for s in segments)
    try:
        decoded = url_segments(raw)
    except BadRequest:
        assert any(s in (".", "..") or "\\" in s or "\x00" in s or "/" in s or len(s.encode()) > 255
                   for s in segments)
        return
    assert decoded == segments


@pytest.mark.parametrize("raw", ["..", "a/..", "%2e%2e", "a/%2E%2E/b", "a%5c..", "%00", "a//b"])
def test_url_traversal_rejected(raw):
    with pytest.raises(BadRequest):
        url_segments(raw)


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="/\\\x00"),
                min_size=1, max_size=30).filter(lambda n: n not in (".", ".."))


@settings(max_examples=25, deadline=None)
@given(st.sets(names, min_size=1, max_size=400))
def test_hamt_directory_build_and_read(entry_names):
    """A HAMT-sharded directory of any size lists and finds every entry."""
    blocks: dict[bytes, bytes] = {}
    emit = blocks.__setitem__
    children = {n: import_bytes(KUBO_V1, n.encode(), emit) for n in entry_names}
    links = [Link(e.cid, n, e.tsize) for n, e in children.items()]
    root, _ = hamt.build(links, emit)
    reader = exporter.DagReader(blocks.__getitem__)
    node = reader.load(root)
    listed = {name: cid for name, cid, _, _ in reader.listing(node)}
    assert listed == {n: e.cid for n, e in children.items()}
    for n in list(entry_names)[:20]:
        assert reader.child(node, n).cid == children[n].cid
    with pytest.raises(exporter.NotFound):
        reader.child(node, "\x01 not there")


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 5000), st.data(), st.sampled_from([KUBO_V1, ACTYX]))
def test_ranges_read_exactly_the_slice(size, data, base):
    """With or without leaves read ahead on a pool: the same bytes, the same blocks read."""
    profile = Profile("small", 256, 3, base.raw_leaves, None, base.link_tsize_is_raw_size)
    blocks: dict[bytes, bytes] = {}
    content = bytes((i * 7 + size) % 251 for i in range(size))
    builder = FileBuilder(profile, blocks.__setitem__)
    builder.write(content)
    entry = builder.finish()
    node = exporter.DagReader(blocks.__getitem__).load(entry.cid)
    assert node.size == size
    start = data.draw(st.integers(0, size))
    end = data.draw(st.integers(start, size))
    read: list[bytes] = []
    touched: list[bytes] = []

    def get(cid: bytes) -> bytes:
        touched.append(cid)
        return blocks[cid]

    announced: list[bytes] = []
    with ThreadPoolExecutor(2) as pool:
        ahead = pool if data.draw(st.booleans()) else None
        read = b"".join(exporter.DagReader(get, announced.extend).read_range(node, start, end, ahead))
    assert read == content[start:end]
    if size > 256:  # a multi-leaf file: only the leaves holding the range are read
        leaves_needed = (end - 1) // 256 - start // 256 + 1 if end > start else 0
        assert sum(1 for c in touched if _is_leaf(c, blocks[c])) == leaves_needed
    # read-ahead asks for nothing the read does not need, and asks before the read does
    assert set(announced) <= set(touched)


@given(st.data())
def test_a_file_node_that_does_not_record_its_block_sizes_still_reads_right(data):
    """IPFS importers record each child's size; a DAG made elsewhere may not: its children are
    loaded to learn them."""
    chunks = [b"a" * 5, b"", b"bcd" * 4, b"e"]
    blocks: dict[bytes, bytes] = {make_cid(RAW, c): c for c in chunks}
    links = [Link(make_cid(RAW, c), "", len(c)) for c in chunks]
    content = b"".join(chunks)
    meta = unixfs.encode(unixfs.UnixFSData(unixfs.FILE, filesize=len(content)))
    root_block = dagpb.encode(links, meta)
    root = make_cid(DAG_PB, root_block)
    blocks[root] = root_block
    reader = exporter.DagReader(blocks.__getitem__)
    node = reader.load(root)
    start = data.draw(st.integers(0, len(content)))
    end = data.draw(st.integers(start, len(content)))
    assert b"".join(reader.read_range(node, start, end)) == content[start:end]


def test_read_ahead_announces_the_blocks_of_a_range_before_reading_them():
    profile = Profile("small", 256, 3, True, None)
    blocks: dict[bytes, bytes] = {}
    builder = FileBuilder(profile, blocks.__setitem__)
    content = b"".join(bytes([i]) * 256 for i in range(40))  # 40 distinct leaves, width 3
    builder.write(content)
    root = builder.finish().cid
    events: list[tuple[str, bytes]] = []

    def get(cid: bytes) -> bytes:
        events.append(("read", cid))
        return blocks[cid]

    reader = exporter.DagReader(get, lambda cids: events.extend(("ahead", c) for c in cids))
    node = reader.load(root)
    assert b"".join(reader.read_range(node, 256 * 10 + 5, 256 * 20)) == content[2565:5120]
    ahead = [c for kind, c in events if kind == "ahead"]
    leaves = [c for kind, c in events if kind == "read" and _is_leaf(c, blocks[c])]
    assert len(leaves) == 10
    assert set(leaves) <= set(ahead)  # every parent here has 3 links: all were announced
    assert all(events.index(("ahead", c)) < events.index(("read", c)) for c in leaves)
    assert set(ahead) <= {c for kind, c in events if kind == "read"}  # nothing outside the range


def _leaves_read_in_groups(leaves: int) -> tuple[bytes, exporter.DagReader, exporter.Node, list[list[bytes]]]:
    """A file of distinct 256-byte raw leaves (174 per node), and a reader that records each
    group of leaves its read-ahead reads."""
    blocks: dict[bytes, bytes] = {}
    content = b"".join(bytes([i % 256]) * 256 for i in range(leaves))
    builder = FileBuilder(Profile("small", 256, 174, True, None), blocks.__setitem__)
    builder.write(content)
    reader = exporter.DagReader(blocks.__getitem__)
    groups: list[list[bytes]] = []
    lock = threading.Lock()

    def get_stored(cids: list[bytes]) -> list[bytes | None]:
        with lock:
            groups.append(cids)
        return [blocks[c] for c in cids]

    reader.get_stored = get_stored
    return content, reader, reader.load(builder.finish().cid), groups


def test_a_read_with_a_pool_reads_the_next_leaves_while_the_first_is_taken():
    content, reader, node, groups = _leaves_read_in_groups(200)  # two levels
    with ThreadPoolExecutor(2) as pool:
        pieces = reader.read_range(node, 0, len(content), pool)
        assert next(pieces) == content[:256]
        pool.submit(lambda: None).result()  # both threads done with what they were given
        pool.submit(lambda: None).result()
    first_inner = reader.load(node.pb.links[0].cid)
    # the first READ_AHEAD leaves, in file order: not the whole file, and no inner node
    assert sum(groups, []) == [link.cid for link in first_inner.pb.links[: exporter.READ_AHEAD]]
    pieces.close()


def test_a_read_with_a_pool_holds_no_more_than_its_bytes_ahead(monkeypatch):
    """Big leaves: what a read holds ahead for a slow client is bounded in bytes too."""
    monkeypatch.setattr(exporter, "READ_AHEAD_BYTES", 10 * 256)
    monkeypatch.setattr(exporter, "READ_GROUP_BYTES", 3 * 256)
    content, reader, node, groups = _leaves_read_in_groups(100)
    with ThreadPoolExecutor(1) as pool:
        pieces = reader.read_range(node, 0, len(content), pool)
        assert next(pieces) == content[:256]
        pool.submit(lambda: None).result()
        assert sum(len(g) for g in groups) == 10  # the leaves of 10 * 256 bytes, not 32
        assert max(len(g) for g in groups) == 3  # in groups of 3 * 256 bytes
        assert b"".join(pieces) == content[256:]
    assert max(len(g) for g in groups) == 3


def _root_over_lying_links(copies: int) -> tuple[dict[bytes, bytes], bytes, bytes]:
    """(blocks, root, its content): a file node linking `copies` times to an inner node
    (3 levels of 64-byte dag-pb leaves) with a leaf's Tsize."""
    blocks: dict[bytes, bytes] = {}
    content = bytes(range(256)) * 3
    inner = FileBuilder(Profile("small", 64, 3, False, None), blocks.__setitem__)
    inner.write(content)
    inner_cid = inner.finish().cid
    assert dagpb.decode(blocks[inner_cid]).links  # an inner node: its leaves are below it
    meta = unixfs.encode(unixfs.UnixFSData(unixfs.FILE, filesize=copies * len(content),
                                           blocksizes=(len(content),) * copies))
    lying = Link(inner_cid, "", len(content) + 1)
    root_block = dagpb.encode([lying] * copies, meta)
    root = make_cid(DAG_PB, root_block)
    blocks[root] = root_block
    return blocks, root, content * copies


def test_a_leaf_that_is_not_one_is_still_read_whole_with_a_pool():
    """A link's Tsize decides, unread, whether a child is a leaf; when it lies (an inner node
    claiming a leaf's size), the read is still right, the node read in place."""
    blocks, root, content = _root_over_lying_links(2)
    reader = exporter.DagReader(blocks.__getitem__)
    with ThreadPoolExecutor(2) as pool:
        node = reader.load(root)
        assert b"".join(reader.read_range(node, 5, len(content) - 3, pool)) == content[5:-3]


def _is_leaf(cid: bytes, block: bytes) -> bool:
    return cid[1] == RAW or not dagpb.decode(block).links


def test_tree_builder_single_file_and_conflicts():
    tree = TreeBuilder(KUBO_V1, lambda c, b: None)
    entry = import_bytes(KUBO_V1, b"x", lambda c, b: None)
    tree.add_file(["a", "b", "c.txt"], entry)
    assert tree.single_file() == entry
    tree.add_file(["d"], entry)
    assert tree.single_file() is None
    assert build_directory(KUBO_V1, {}, lambda c, b: None).is_dir


@settings(max_examples=30, deadline=None)
@given(st.integers(257, 4000), st.data())
def test_survey_counts_missing_subtrees(size, data):
    profile = Profile("small", 256, 3, True, None)
    blocks: dict[bytes, bytes] = {}
    builder = FileBuilder(profile, blocks.__setitem__)
    builder.write(bytes(i % 251 for i in range(size)))  # no two leaves alike
    root = builder.finish().cid
    reader = exporter.DagReader(blocks.__getitem__)
    assert reader.survey(root, lambda cids: {c for c in cids if c in blocks}) == (True, 0)
    leaves = sorted(c for c in blocks if c[1] == RAW)
    gone = data.draw(st.sets(st.sampled_from(leaves), min_size=1))
    present = {c: b for c, b in blocks.items() if c not in gone}
    complete, missing = exporter.DagReader(present.__getitem__).survey(
        root, lambda cids: {c for c in cids if c in present}
    )
    assert not complete
    links = [lk for c, b in blocks.items() if c[1] != RAW for lk in dagpb.decode(b).links]
    assert missing == sum(lk.tsize for lk in links if lk.cid in gone)


@settings(max_examples=15, deadline=None)
@given(st.integers(70_001, 400_000), st.data())
def test_surveys_repeated_as_a_dag_arrives_agree_with_fresh_ones_and_read_each_leaf_once(size, data):
    """Clients poll a rollout's progress; `ipfs add` makes dag-pb leaves, which a survey must
    read to know they have no links (leaves over 64 KiB: smaller blocks are cached anyway)."""
    profile = Profile("dag-pb", 70_000, 3, False, None)
    blocks: dict[bytes, bytes] = {}
    builder = FileBuilder(profile, blocks.__setitem__)
    builder.write(bytes(i % 251 for i in range(size)))
    root = builder.finish().cid
    order = data.draw(st.permutations(sorted(blocks)))  # the order the blocks arrive in
    arrived: dict[bytes, bytes] = {}
    reads: list[bytes] = []

    def read(cid: bytes) -> bytes:
        reads.append(cid)
        return arrived[cid]

    polled = exporter.DagReader(read)
    for cid in order:
        arrived[cid] = blocks[cid]
        present = lambda cids: {c for c in cids if c in arrived}  # noqa: E731
        assert polled.survey(root, present) == exporter.DagReader(arrived.__getitem__).survey(root, present)
    leaves = {c for c, b in blocks.items() if not dagpb.decode(b).links}
    assert all(reads.count(leaf) <= 1 for leaf in leaves)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=1500), st.binary(max_size=700), st.sampled_from([True, False]))
def test_appending_to_a_file_gives_the_cid_of_importing_it_whole(head, tail, raw_leaves):
    from edgefiles.node.importer import resume_file

    profile = Profile("small", 64, 3, raw_leaves, None)
    blocks: dict[bytes, bytes] = {}
    root = import_bytes(profile, head, blocks.__setitem__).cid
    read: list[bytes] = []

    def get(cid: bytes) -> bytes:
        read.append(cid)
        return blocks[cid]

    builder = resume_file(profile, root, get, blocks.__setitem__)
    builder.write(tail)
    assert builder.finish().cid == import_bytes(profile, head + tail, lambda c, b: None).cid
    full_leaves_read = [c for c in read if c[1] == RAW and len(blocks[c]) == 64]
    assert not full_leaves_read  # reused by reference, never read back


def _directory_measuring(profile: Profile, target: int) -> dict:
    """Children whose size, as the profile's HAMT rule measures it, is exactly `target` bytes:
    names of 100 characters, as many as fit, then one more character in as many as needed
    (each adds one byte to either measure)."""
    from edgefiles.node.importer import DIRECTORY_DATA, Entry

    def children(count: int, longer: int) -> dict:
        out = {}
        for i in range(count):
            name = f"{i:05d}".ljust(101 if i < longer else 100, "x")
            out[name] = Entry(make_cid(RAW, name.encode()), 10, 10)
        return out

    def measure(kids: dict) -> int:
        links = sorted((Link(e.cid, n, e.tsize) for n, e in kids.items()), key=lambda x: x.name.encode())
        if profile.hamt_rule == "estimate":
            return sum(len(link.name.encode()) + len(link.cid) for link in links)
        return len(dagpb.encode(links, DIRECTORY_DATA))

    per_child = measure(children(2, 0)) - measure(children(1, 0))
    count = (target - (measure(children(1, 0)) - per_child)) // per_child
    kids = children(count, target - measure(children(count, 0)))
    assert measure(kids) == target
    return kids


@pytest.mark.parametrize(("profile", "sharded"), [
    (KUBO_V1, [False, True, True]),  # Kubo <= 0.39: a HAMT from 262144 bytes on
    (UNIXFS_V1_2025, [False, False, True]),  # IPIP-499: only above 262144 bytes
])
def test_hamt_switch_exactly_at_the_threshold(profile, sharded):
    """Directories one byte below, at and above the threshold, as each profile counts it."""
    for target, expect in zip((262143, 262144, 262145), sharded, strict=True):
        blocks: dict[bytes, bytes] = {}
        root = build_directory(profile, _directory_measuring(profile, target), blocks.__setitem__)
        kind = unixfs.decode(dagpb.decode(blocks[root.cid]).data).type
        assert kind == (unixfs.HAMT_SHARD if expect else unixfs.DIRECTORY), (profile.name, target)


def _depth_first(blocks: dict[bytes, bytes], root: bytes) -> list[bytes]:
    """The reference order of a CAR: preorder, links in order, each block at its first place."""
    order: list[bytes] = []

    def visit(cid: bytes) -> None:
        if cid in order:
            return
        order.append(cid)
        if codec_of(cid) == DAG_PB:
            for link in dagpb.decode(blocks[cid]).links:
                visit(link.cid)

    visit(root)
    return order


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=700), min_size=1, max_size=6), st.data())
def test_a_dag_walk_gives_every_block_once_depth_first_with_or_without_read_ahead(contents, data):
    """A DAG walk's leaves (raw, or dag-pb told by their Tsize) are read ahead on a pool"""
    small = Profile("small", 64, 3, data.draw(st.booleans()), None)  # raw or dag-pb leaves
    blocks: dict[bytes, bytes] = {}
    tree = TreeBuilder(small, blocks.__setitem__)
    for i, content in enumerate(contents):  # repeated contents share blocks: each comes once
        tree.add_file([f"d{i % 2}", f"f{i}"], import_bytes(small, content, blocks.__setitem__))
        if data.draw(st.booleans()):
            tree.add_file([f"copy{i}"], import_bytes(small, content, blocks.__setitem__))
    root = tree.finish().cid
    reader = exporter.DagReader(blocks.__getitem__)
    expected = [(cid, blocks[cid]) for cid in _depth_first(blocks, root)]
    assert list(reader.blocks(root)) == expected
    with ThreadPoolExecutor(2) as pool:
        assert list(reader.blocks(root, pool)) == expected


def test_a_walk_with_a_pool_still_gives_the_blocks_below_a_leaf_that_is_not_one():
    blocks, root, _ = _root_over_lying_links(1)
    reader = exporter.DagReader(blocks.__getitem__)
    expected = [(cid, blocks[cid]) for cid in _depth_first(blocks, root)]
    assert len(expected) > 2
    with ThreadPoolExecutor(2) as pool:
        for scope in ("all", "entity"):
            assert list(reader.blocks(root, pool, scope)) == expected


def _dag_pb_leaf(content: bytes, blocks: dict[bytes, bytes]) -> bytes:
    meta = unixfs.UnixFSData(unixfs.FILE, data=content, filesize=len(content))
    block = dagpb.encode([], unixfs.encode(meta))
    cid = make_cid(DAG_PB, block)
    blocks[cid] = block
    return cid


def _counting(blocks: dict[bytes, bytes]) -> tuple[exporter.DagReader, list[bytes]]:
    read: list[bytes] = []
    lock = threading.Lock()

    def get(cid: bytes) -> bytes:
        with lock:
            read.append(cid)
        return blocks[cid]

    return exporter.DagReader(get), read


def test_a_walk_with_a_pool_runs_ahead_a_window_not_a_whole_directory():
    """A directory of single-block dag-pb files (no sizes tell that they are leaves): the walk
    reads a window ahead of what it gives, not every block before the first."""
    small = Profile("small", 256, 3, False, None)
    blocks: dict[bytes, bytes] = {}
    tree = TreeBuilder(small, blocks.__setitem__)
    for i in range(600):
        tree.add_file([f"f{i}"], import_bytes(small, b"%d" % i, blocks.__setitem__))
    root = tree.finish().cid
    reader, read = _counting(blocks)
    with ThreadPoolExecutor(2) as pool:
        walk = reader.blocks(root, pool)
        assert next(walk)[0] == root
        assert len(read) <= exporter.WINDOW_ITEMS + 1
        assert [cid for cid, _ in [(root, b"")] + list(walk)] == _depth_first(blocks, root)


def test_a_read_with_a_pool_runs_ahead_a_window_when_sizes_do_not_tell_leaves():
    """Leaves whose links carry no Tsize (0) are read in place, as inner nodes are: still
    no further ahead than the window."""
    chunks = [bytes([i % 256, i // 256]) * 32 for i in range(400)]
    blocks: dict[bytes, bytes] = {}
    links = [Link(_dag_pb_leaf(c, blocks), "", 0) for c in chunks]
    content = b"".join(chunks)
    meta = unixfs.encode(unixfs.UnixFSData(unixfs.FILE, filesize=len(content), blocksizes=(64,) * 400))
    root_block = dagpb.encode(links, meta)
    root = make_cid(DAG_PB, root_block)
    blocks[root] = root_block
    reader, read = _counting(blocks)
    with ThreadPoolExecutor(2) as pool:
        pieces = reader.read_range(reader.load(root), 0, len(content), pool)
        assert next(pieces) == chunks[0]
        assert len(read) <= exporter.WINDOW_ITEMS + 1
        assert b"".join(pieces) == content[64:]


def test_a_walk_with_a_pool_keeps_depth_first_order_below_a_leaf_that_is_not_one():
    """Root -> [A (its Tsize says leaf; it links L3, L1), L2, L3]: L3 comes inside A, as a
    walk without read-ahead gives it."""
    blocks: dict[bytes, bytes] = {}
    leaves = [_dag_pb_leaf(bytes([i]) * 100, blocks) for i in range(4)]
    l1, l2, l3 = leaves[1], leaves[2], leaves[3]
    meta_a = unixfs.encode(unixfs.UnixFSData(unixfs.FILE, filesize=200, blocksizes=(100, 100)))
    a_block = dagpb.encode([Link(l3, "", len(blocks[l3])), Link(l1, "", len(blocks[l1]))], meta_a)
    a = make_cid(DAG_PB, a_block)
    blocks[a] = a_block
    meta_root = unixfs.encode(unixfs.UnixFSData(unixfs.FILE, filesize=400, blocksizes=(200, 100, 100)))
    root_links = [Link(a, "", 201), Link(l2, "", len(blocks[l2])), Link(l3, "", len(blocks[l3]))]
    root_block = dagpb.encode(root_links, meta_root)
    root = make_cid(DAG_PB, root_block)
    blocks[root] = root_block
    reader = exporter.DagReader(blocks.__getitem__)
    expected = [root, a, l3, l1, l2]
    assert [cid for cid, _ in reader.blocks(root)] == expected == _depth_first(blocks, root)
    with ThreadPoolExecutor(2) as pool:
        assert [cid for cid, _ in reader.blocks(root, pool)] == expected


@pytest.mark.parametrize("group_fails", [False, True])
def test_a_missing_leaf_fails_a_read_with_a_pool_in_its_turn(group_fails):
    """The bytes before a missing leaf are given, with or without read-ahead, whether the
    group read around it fails or leaves it to the reader."""
    profile = Profile("small", 256, 174, True, None)
    blocks: dict[bytes, bytes] = {}
    content = b"".join(bytes([i]) * 256 for i in range(20))
    builder = FileBuilder(profile, blocks.__setitem__)
    builder.write(content)
    root = builder.finish().cid
    missing = dagpb.decode(blocks[root]).links[5].cid
    del blocks[missing]

    def get(cid: bytes) -> bytes:
        if cid not in blocks:
            raise exporter.NotFound("block not stored on this node")
        return blocks[cid]

    def get_stored(cids: list[bytes]) -> list[bytes | None]:
        if group_fails and missing in cids:
            raise OSError("a pack could not be read")
        return [blocks.get(c) for c in cids]

    reader = exporter.DagReader(get, None, get_stored)
    for pool in (None, ThreadPoolExecutor(2)):
        given = bytearray()
        with pytest.raises(exporter.NotFound):
            for piece in reader.read_range(reader.load(root), 0, len(content), pool):
                given += piece
        assert bytes(given) == content[: 5 * 256]
        if pool is not None:
            pool.shutdown()


def _reader_of(blocks: dict[bytes, bytes], read: list[bytes]) -> exporter.DagReader:
    """A reader of `blocks` alone that notes in `read` each block it reads ahead or whole."""
    def stored(cids: list[bytes]) -> list[bytes | None]:
        read.extend(cids)
        return [blocks.get(cid) for cid in cids]

    def sizes_of(cids: list[bytes]) -> dict[bytes, int]:
        return {normalize(cid): len(blocks[cid]) for cid in cids if cid in blocks}

    return exporter.DagReader(blocks.__getitem__, get_stored=stored, stored_sizes=sizes_of)


def _laid_out_as_walked(reader: exporter.DagReader, read: list[bytes], top: bytes, scope: str = "all",
                        byte_range: tuple[int, int] | None = None,
                        seen: frozenset[bytes] | exporter.Unseen = frozenset()) -> None:
    read.clear()
    def given() -> set[bytes]:  # each walk's own
        return seen.copy() if isinstance(seen, exporter.Unseen) else set(seen)

    laid = list(reader.layout(top, scope, byte_range, given()))
    walked = list(reader.blocks(top, None, scope, byte_range, given()))
    assert [(cid, size) for cid, size, _ in laid] == [(cid, len(block)) for cid, block in walked]
    # leaves only looked up; a block a walk with duplicates lays out also as a directory's
    # entry (a one-block file), which is read, is read for that
    inner = {cid for cid, _, leaf in laid if not leaf}
    assert not ({cid for cid, _, leaf in laid if leaf} - inner) & set(read)
    assert reader.read_laid(laid) == [block for _, block in walked]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2000), min_size=1, max_size=4), st.sampled_from([KUBO_V1, ACTYX]), st.data())
def test_a_layout_tells_the_blocks_a_walk_gives_without_reading_leaves(sizes, base, data):
    """Whole DAGs, flat and sharded directories, entities, byte ranges, single blocks, blocks
    given already, leaves shared: the layout names the walk's blocks in its order, with their
    sizes, and reads no leaf."""
    profile = Profile("small", 256, 3, base.raw_leaves, None, base.link_tsize_is_raw_size)
    blocks: dict[bytes, bytes] = {}
    files = {f"f{i}": import_bytes(profile, bytes([i % 2]) * size, blocks.__setitem__)
             for i, size in enumerate(sizes)}  # leaves repeat, within files and across them
    root = build_directory(profile, files, blocks.__setitem__).cid
    shards, _ = hamt.build([Link(e.cid, n, e.tsize) for n, e in files.items()], blocks.__setitem__)
    read: list[bytes] = []
    reader = _reader_of(blocks, read)
    file = files[data.draw(st.sampled_from(sorted(files)))]
    start = data.draw(st.integers(0, file.size))
    end = data.draw(st.integers(start, 1 << 12))
    given_already = frozenset(normalize(c) for c in data.draw(st.lists(st.sampled_from(sorted(blocks)))))
    _laid_out_as_walked(reader, read, root)
    _laid_out_as_walked(reader, read, shards)
    _laid_out_as_walked(reader, read, root, seen=given_already)
    _laid_out_as_walked(reader, read, file.cid, "entity", (start, end))
    _laid_out_as_walked(reader, read, root, data.draw(st.sampled_from(["block", "entity"])))
    _laid_out_as_walked(reader, read, root, seen=exporter.Unseen())
    every_time = _each_time_linked(blocks, root)
    assert [cid for cid, _ in reader.blocks(root, None, seen=exporter.Unseen())] == every_time
    with ThreadPoolExecutor(2) as pool:  # read ahead: a leaf linked twice is read for each link
        assert [cid for cid, _ in reader.blocks(root, pool, seen=exporter.Unseen())] == every_time
    leaf = next((cid for cid, _, is_leaf in reader.layout(root) if is_leaf), None)
    if leaf is not None:
        del blocks[leaf]
        with pytest.raises(exporter.NotFound):
            list(reader.layout(root))


def _each_time_linked(blocks: dict[bytes, bytes], root: bytes) -> list[bytes]:
    """The blocks of a DAG depth first, each as often as it is linked (a CAR's dups=y)."""
    out, stack = [], [root]
    while stack:
        cid = stack.pop()
        out.append(cid)
        if codec_of(cid) == DAG_PB:
            stack.extend(link.cid for link in reversed(dagpb.decode(blocks[cid]).links))
    return out


def test_a_dag_laid_out_again_decodes_none_of_its_inner_nodes_again(monkeypatch):
    """A file's inner nodes decoded for a layout (or a walk) are kept: a CAR of the same DAG
    asked for again, or its entity, does not decode them anew (a 1 GiB DAG's took 25 of 40 ms)."""
    profile = Profile("small", 256, 3, True, None)
    blocks: dict[bytes, bytes] = {}
    root = import_bytes(profile, bytes(range(256)) * 40, blocks.__setitem__).cid
    reader = _reader_of(blocks, [])
    first = list(reader.layout(root))
    assert sum(not leaf for _, _, leaf in first) > 3  # inner nodes below the root
    decoded: list[bytes] = []
    real_decode = dagpb.decode
    monkeypatch.setattr(dagpb, "decode", lambda block: decoded.append(block) or real_decode(block))
    assert list(reader.layout(root)) == first
    assert list(reader.layout(root, "entity")) == first
    assert [cid for cid, _ in reader.blocks(root)] == [cid for cid, _, _ in first]
    assert decoded == []


def test_a_layout_reads_what_a_lying_tsize_calls_a_leaf_and_fetches_what_went_since():
    """An inner node with a leaf's Tsize is read (its size is not that Tsize); a block gone
    from the store after the layout is read from peers when asked (`fetch`), not else."""
    blocks, root, _ = _root_over_lying_links(2)
    read: list[bytes] = []
    reader = _reader_of(blocks, read)
    _laid_out_as_walked(reader, read, root)
    laid = list(reader.layout(root))
    gone = laid[-1][0]
    peers = {gone: blocks.pop(gone)}
    reader.get_block = peers.__getitem__  # what is not stored here comes from peers
    with pytest.raises(exporter.NotFound):
        reader.read_laid(laid)
    assert reader.read_laid(laid, fetch=True)[-1] == peers[gone]


def test_a_leaf_that_has_links_after_all_is_found_out_when_read():
    blocks, root, _ = _root_over_lying_links(1)
    inner = dagpb.decode(blocks[root]).links[0].cid
    laid = [(inner, len(blocks[inner]), True)]  # as a layout would lay it, its size being its Tsize
    with pytest.raises(exporter.LeafWithLinks):
        _reader_of(blocks, []).read_laid(laid)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5000), st.data(), st.sampled_from([KUBO_V1, ACTYX, UNIXFS_V1_2025]))
def test_a_range_laid_out_in_spans_and_read_in_runs_of_any_size_gives_the_slice(size, data, base):
    """Runs of any size over a file's spans give its range's bytes; laying it out reads no
    leaf, and a run reads only the leaves of its spans."""
    profile = Profile("small", 256, 3, base.raw_leaves, None, base.link_tsize_is_raw_size)
    blocks: dict[bytes, bytes] = {}
    content = bytes((i * 7 + size) % 251 for i in range(size))
    root = import_bytes(profile, content, blocks.__setitem__).cid
    read: list[bytes] = []
    reader = _reader_of(blocks, read)
    reader.get_block = lambda cid: read.append(cid) or blocks[cid]  # blocks loaded are noted too
    start = data.draw(st.integers(0, size))
    end = data.draw(st.integers(start, size))
    node = reader.load(root)
    read.clear()
    items = list(reader.spans(node, start, end))
    assert not [cid for cid in read if _is_leaf(cid, blocks[cid])]
    if size > 256 and end > start:  # a range of a file of several leaves: laid out as spans
        assert any(isinstance(item, exporter.Span) for item in items)
    runs = list(batches(items, exporter.span_bytes, data.draw(st.integers(1, 2000))))
    got = []
    for run in runs:
        read.clear()
        got.append(bytes(reader.read_spans(run)))
        assert read == [item.cid for item in run if isinstance(item, exporter.Span)]
    assert b"".join(got) == content[start:end]


def test_spans_that_are_no_leaves_gone_or_short_are_read_with_fetch_or_fail():
    """A span whose leaf has links after all, or is not stored here, is NotFound from what is
    stored alone (the read pool's way) and read whole with `fetch`; a leaf shorter than its
    parent says is WrongSize."""
    blocks, root, content = _root_over_lying_links(2)
    reader = _reader_of(blocks, [])
    items = list(reader.spans(reader.load(root), 5, len(content) - 3))
    with pytest.raises(exporter.NotFound):
        reader.read_spans(items)
    assert bytes(reader.read_spans(items, fetch=True)) == content[5:-3]

    chunks = [b"a" * 300, b"b" * 300]
    blocks = {make_cid(RAW, c): c for c in chunks}
    meta = unixfs.encode(unixfs.UnixFSData(unixfs.FILE, filesize=700, blocksizes=(400, 300)))
    root_block = dagpb.encode([Link(make_cid(RAW, c), "", len(c)) for c in chunks], meta)
    blocks[root := make_cid(DAG_PB, root_block)] = root_block
    reader = _reader_of(blocks, [])
    items = list(reader.spans(reader.load(root), 0, 700))
    with pytest.raises(exporter.WrongSize):
        reader.read_spans(items)
    gone = make_cid(RAW, chunks[1])
    peers = {gone: blocks.pop(gone)}
    reader.get_block = peers.__getitem__
    with pytest.raises(exporter.NotFound):
        reader.read_spans(items[1:])
    assert bytes(reader.read_spans(items[1:], fetch=True)) == chunks[1]


def test_a_folders_size_is_summed_without_holding_its_files():
    """A listing sums the files of each folder below; the nodes of a folder's small files (a
    raw leaf's holds its bytes) were all held until it was summed: 300 files of 100 KB, 30 MB."""
    import tracemalloc

    blocks: dict[bytes, bytes] = {}
    assets = {f"a{i}.js": import_bytes(KUBO_V1, bytes([i % 251, i // 251]) * 50_000, blocks.__setitem__)
              for i in range(300)}
    folder = build_directory(KUBO_V1, assets, blocks.__setitem__)
    root = build_directory(KUBO_V1, {"assets": folder, "x": import_bytes(KUBO_V1, b"x", blocks.__setitem__)},
                           blocks.__setitem__)
    reader = exporter.DagReader(lambda cid: bytes(bytearray(blocks[cid])))  # read anew, as from disk
    tracemalloc.start()
    try:
        assert reader.dir_size(reader.load(root.cid)) == 300 * 100_000 + 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 << 20, peak
