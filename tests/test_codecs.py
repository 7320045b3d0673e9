"""Property tests for the codecs and the chunker."""

import hashlib

from edgefiles.node import dagpb, unixfs
from edgefiles.node.cid import DAG_PB, RAW, make_cid, parse, to_str, verify_block
from edgefiles.node.importer import FileBuilder
from edgefiles.node.profiles import KUBO_V1, Profile
from edgefiles.node.protobuf import read_varint, varint
from hypothesis import given, settings
from hypothesis import strategies as st

cids = st.builds(lambda d, c: make_cid(c, d), st.binary(max_size=64), st.sampled_from([RAW, DAG_PB]))
links = st.builds(dagpb.Link, cids, st.text(max_size=20), st.integers(0, 2**63 - 1))


@given(st.integers(0, 2**64 - 1))
def test_varint_roundtrip(n):
    encoded = varint(n)
    assert read_varint(encoded, 0) == (n, len(encoded))


@given(st.lists(links, max_size=10), st.none() | st.binary(max_size=100))
def test_dagpb_roundtrip(node_links, data):
    block = dagpb.encode(node_links, data)
    assert dagpb.decode(block) == dagpb.PBNode(tuple(node_links), data)


@given(st.lists(links, max_size=4), st.none() | st.binary(max_size=300), st.booleans())
def test_dagpb_is_data_only_exactly_for_a_lone_data_field(node_links, data, data_first):
    """Also for a node that puts its Data before its Links (not canonical, still decoded)."""
    block = dagpb.encode(node_links, data)
    if data_first and data is not None:
        block = dagpb.encode([], data) + dagpb.encode(node_links, None)
    assert dagpb.is_data_only(block) == (not node_links and data is not None)


@given(st.binary(max_size=64))
def test_dagpb_is_data_only_of_any_bytes_means_a_node_without_links(block):
    if dagpb.is_data_only(block):
        node = dagpb.decode(block)
        assert node.links == () and node.data is not None


@given(st.lists(links, min_size=1, max_size=3), st.binary(min_size=1, max_size=10))
def test_dagpb_writes_links_before_data(node_links, data):
    block = dagpb.encode(node_links, data)
    assert block[0] == 0x12  # field 2 (Links), wire type 2
    assert block.endswith(data)


@given(
    st.sampled_from([unixfs.FILE, unixfs.DIRECTORY, unixfs.RAW_TYPE]),
    st.none() | st.binary(min_size=1, max_size=50),
    st.none() | st.integers(0, 2**40),
    st.lists(st.integers(0, 2**30), max_size=5),
)
def test_unixfs_roundtrip(kind, data, filesize, blocksizes):
    msg = unixfs.UnixFSData(kind, data, filesize, tuple(blocksizes))
    assert unixfs.decode(unixfs.encode(msg)) == msg


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=12), st.integers(1, 5))
def test_chunking_ignores_write_boundaries(pieces, max_links):
    """The same bytes give the same CID however they are split into writes."""
    profile = Profile("tiny", 1024, max_links + 1, raw_leaves=True, hamt_rule=None)
    blocks: dict[bytes, bytes] = {}

    def build(parts):
        builder = FileBuilder(profile, lambda cid, block: blocks.__setitem__(cid, block))
        for part in parts:
            builder.write(part)
        return builder.finish()

    whole = b"".join(pieces)
    split = build(pieces)
    joined = build([whole])
    assert split == joined
    assert split.size == len(whole)
    assert all(verify_block(cid, block) for cid, block in blocks.items())
    leaves = [b for c, b in blocks.items() if c[1] == RAW]
    assert all(len(b) <= 1024 for b in leaves)


def test_single_chunk_file_is_its_raw_leaf():
    data = b"x" * KUBO_V1.chunk_size
    entry = FileBuilder(KUBO_V1, lambda c, b: None)
    entry.write(data)
    assert entry.finish().cid == b"\x01\x55\x12\x20" + hashlib.sha256(data).digest()


@given(st.sampled_from([0x55, 0x70, 0x71, 0x0129]), st.sampled_from([0x00, 0x12]), st.binary(max_size=64))
def test_cid_text_is_what_multiformats_writes_and_parses_back(codec, hash_code, data):
    from multiformats import multibase

    digest = data if hash_code == 0x00 else hashlib.sha256(data).digest()
    cid = bytes([0x01]) + varint(codec) + bytes([hash_code]) + varint(len(digest)) + digest
    if hash_code == 0x12 and codec == 0x55:
        assert cid == make_cid(0x55, data)
    assert to_str(cid) == multibase.encode(cid, "base32")
    assert parse(to_str(cid)) == cid
