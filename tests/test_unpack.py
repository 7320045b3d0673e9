"""Turning a UnixFS DAG, as a CAR gives its blocks, back into its file tree (node/unpack.py)."""

from __future__ import annotations

import pytest
from edgefiles.node import dagpb, unixfs
from edgefiles.node.cid import DAG_PB, make_cid, normalize
from edgefiles.node.exporter import DagReader
from edgefiles.node.importer import TreeBuilder, import_bytes
from edgefiles.node.profiles import KUBO_V1, Profile
from edgefiles.node.unpack import CopyRange, MakeDir, MakeFile, NotATree, TreeUnpacker, WriteAt
from edgefiles.web.paths import check_segment
from hypothesis import given, settings
from hypothesis import strategies as st

# many leaves and levels out of a few bytes: every shape a file DAG takes, small
TINY = {raw: Profile(f"tiny-{raw}", 8, 3, raw_leaves=raw, hamt_rule=None) for raw in (True, False)}


def dag_of(files: dict[str, bytes], empty_dirs: list[str],
           profile: Profile) -> tuple[bytes, dict[bytes, bytes]]:
    blocks: dict[bytes, bytes] = {}

    def emit(cid: bytes, block: bytes) -> None:
        blocks.setdefault(normalize(cid), block)

    tree = TreeBuilder(profile, emit)
    for path, content in files.items():
        tree.add_file(path.split("/"), import_bytes(profile, content, emit))
    for path in empty_dirs:
        tree.add_dir(path.split("/"))
    return tree.finish().cid, blocks


def in_car_order(root: bytes, blocks: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """As a node exports the DAG: depth first, links in order, each block once."""
    return list(DagReader(lambda cid: blocks[normalize(cid)]).blocks(root))


def unpacked(root: bytes, sections: list[tuple[bytes, bytes]]) -> tuple[dict[str, bytes], set[str]]:
    """The tree the actions make, in memory: files by path, and folders."""
    files: dict[tuple[str, ...], bytearray] = {}
    dirs: set[tuple[str, ...]] = set()
    unpacker = TreeUnpacker(root, check_segment)
    actions = unpacker.start()
    for cid, block in sections:
        actions += unpacker.feed(cid, block)
    unpacker.finish()
    for action in actions:
        if isinstance(action, MakeDir):
            dirs.add(action.path)
        elif isinstance(action, MakeFile):
            files[action.path] = bytearray(action.size)
        elif isinstance(action, WriteAt):
            files[action.path][action.offset:action.offset + len(action.data)] = action.data
        elif isinstance(action, CopyRange):
            copied = files[action.source][action.source_offset:action.source_offset + action.length]
            files[action.path][action.offset:action.offset + action.length] = copied
    return {"/".join(p): bytes(b) for p, b in files.items()}, {"/".join(p) for p in dirs if p}


def folders_of(files: dict[str, bytes], empty_dirs: list[str]) -> set[str]:
    out = set(empty_dirs)
    for path in [*files, *empty_dirs]:
        parts = path.split("/")
        out.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return out


# folders are named a, b, c and files x, y, z: a path is never both; contents repeat (a CAR
# holds a block once, wherever the DAG links it)
paths = st.lists(st.sampled_from("abc"), max_size=3).flatmap(
    lambda dirs: st.sampled_from("xyz").map(lambda name: "/".join([*dirs, name])))
contents = st.sampled_from([b"", b"a", b"0123456789abcdef", bytes(range(40)), b"z" * 100, bytes(70)])


@settings(max_examples=200, deadline=None)
@given(files=st.dictionaries(paths, contents, min_size=1, max_size=12),
       empty=st.lists(st.lists(st.sampled_from("abc"), min_size=1, max_size=3).map("/".join), max_size=3),
       raw=st.booleans(), copied=st.booleans())
def test_a_tree_comes_back_from_its_blocks_in_car_order_duplicates_included(files, empty, raw, copied):
    if copied:  # a folder twice, under two names: its blocks come once
        files = {**files, **{f"c/{path}": data for path, data in files.items() if not path.startswith("c/")}}
    empty = [d for d in empty if not any(p == d or p.startswith(d + "/") for p in files)
             and not any(d.startswith(p + "/") for p in files)]
    root, blocks = dag_of(files, empty, TINY[raw])
    got_files, got_dirs = unpacked(root, in_car_order(root, blocks))
    assert got_files == files
    assert got_dirs == folders_of(files, empty)


def test_a_sharded_folder_comes_back_whole():
    files = {f"{i:04d}-" + "n" * 250: str(i).encode() * (i % 5) for i in range(1100)}
    root, blocks = dag_of(files, [], KUBO_V1)
    sections = in_car_order(root, blocks)
    assert unixfs.decode(dagpb.decode(sections[0][1]).data).type == unixfs.HAMT_SHARD
    assert unpacked(root, sections)[0] == files


def test_blocks_out_of_order_missing_or_naming_a_way_out_are_refused():
    root, blocks = dag_of({"a/x": b"0123456789abcdef", "y": b"y"}, [], TINY[True])
    sections = in_car_order(root, blocks)
    with pytest.raises(NotATree, match="comes before any block linking to it"):
        unpacked(root, sections[1:2] + sections[:1])
    with pytest.raises(NotATree, match="never came"):
        unpacked(root, sections[:-1])
    leaf = make_cid(0x55, b"secret")
    hostile = dagpb.encode([dagpb.Link(leaf, "..", 6)], unixfs.encode(unixfs.UnixFSData(unixfs.DIRECTORY)))
    hostile_root = make_cid(DAG_PB, hostile)
    with pytest.raises(NotATree, match="unsafe name"):
        unpacked(hostile_root, [(hostile_root, hostile), (leaf, b"secret")])


def test_a_file_whose_parts_say_more_than_its_size_is_refused():
    leaf = b"0123456789"
    leaf_cid = make_cid(0x55, leaf)
    lying = dagpb.encode([dagpb.Link(leaf_cid, "", 10)],
                         unixfs.encode(unixfs.UnixFSData(unixfs.FILE, filesize=4, blocksizes=(10,))))
    lying_cid = make_cid(DAG_PB, lying)
    folder = dagpb.encode([dagpb.Link(lying_cid, "f", 30)],
                          unixfs.encode(unixfs.UnixFSData(unixfs.DIRECTORY)))
    root = make_cid(DAG_PB, folder)
    with pytest.raises(NotATree, match="past the end"):
        unpacked(root, [(root, folder), (lying_cid, lying), (leaf_cid, leaf)])


def test_blocks_inlined_in_their_cids_are_written_from_them():
    """Kubo's --inline, CARs from elsewhere: an identity CID's block is its digest, in no CAR."""
    hello = bytes([1, 0x55, 0x00, 5]) + b"hello"  # CIDv1, raw, identity multihash: the block itself
    inner = dagpb.encode([dagpb.Link(hello, "", 5)], unixfs.encode(unixfs.UnixFSData(
        unixfs.FILE, filesize=5, blocksizes=(5,))))
    inner_cid = bytes([1, DAG_PB, 0x00, len(inner)]) + inner
    folder = dagpb.encode([dagpb.Link(hello, "a.txt", 5), dagpb.Link(inner_cid, "b.txt", 20)],
                          unixfs.encode(unixfs.UnixFSData(unixfs.DIRECTORY)))
    root = make_cid(DAG_PB, folder)
    assert unpacked(root, [(root, folder)])[0] == {"a.txt": b"hello", "b.txt": b"hello"}


def test_parts_that_overlap_are_refused_even_when_their_bytes_add_up():
    long, short = b"A" * 7, b"B" * 3
    leaves = [make_cid(0x55, long), make_cid(0x55, short)]
    node = dagpb.encode([dagpb.Link(cid, "", 5) for cid in leaves],
                        unixfs.encode(unixfs.UnixFSData(unixfs.FILE, filesize=10, blocksizes=(5, 3))))
    node_cid = make_cid(DAG_PB, node)
    folder = dagpb.encode([dagpb.Link(node_cid, "f", 30)], unixfs.encode(unixfs.UnixFSData(unixfs.DIRECTORY)))
    root = make_cid(DAG_PB, folder)
    with pytest.raises(NotATree, match="holds 7 bytes where its parent says 5"):
        unpacked(root, [(root, folder), (node_cid, node), (leaves[0], long), (leaves[1], short)])
