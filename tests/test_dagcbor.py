"""The links of DAG-CBOR blocks, checked against an independent encoder (cbor2)."""

from __future__ import annotations

import cbor2
import pytest
from edgefiles.node.cid import DAG_PB, RAW, make_cid
from edgefiles.node.dagcbor import follow, links_of
from hypothesis import given, settings
from hypothesis import strategies as st

cids = st.builds(make_cid, st.sampled_from([RAW, DAG_PB]), st.binary(max_size=8))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**64) + 1, 2**64 - 1), st.text(max_size=8),
                    st.binary(max_size=8), st.floats(allow_nan=False), cids.map(lambda c: ("link", c)))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=4), inner, max_size=5)), max_leaves=25)


def encodable(value):
    """`value` for cbor2, a ("link", cid) as tag 42 (the bytes 0x00 + the CID)."""
    if isinstance(value, tuple):
        return cbor2.CBORTag(42, b"\x00" + value[1])
    if isinstance(value, list):
        return [encodable(v) for v in value]
    if isinstance(value, dict):
        return {k: encodable(v) for k, v in value.items()}
    return value


def links_in_order(value) -> list[bytes]:
    if isinstance(value, tuple):
        return [value[1]]
    children = value if isinstance(value, list) else value.values() if isinstance(value, dict) else []
    return [link for child in children for link in links_in_order(child)]


@settings(max_examples=300)
@given(documents)
def test_every_link_of_a_document_is_found_in_order(document):
    block = cbor2.dumps(encodable(document))
    assert links_of(block) == links_in_order(document)


@given(documents, st.data())
def test_bytes_cut_short_or_with_more_after_them_have_no_links(document, data):
    block = cbor2.dumps(encodable(document))
    cut = data.draw(st.integers(0, len(block) - 1))
    assert links_of(block[:cut]) == []
    assert links_of(block + b"\x00") == []


def test_garbage_and_indefinite_lengths_have_no_links():
    for block in (b"", b"\xff", b"\x9f\x01\xff", b"\xd8\x2a\x41\x01", b"\x9b" + b"\xff" * 8):
        assert links_of(block) == []


def test_a_link_that_is_no_cid_this_node_could_hold_is_not_followed():
    short = cbor2.dumps(cbor2.CBORTag(42, b"\x00\x01\x71"))
    good = make_cid(RAW, b"x")
    both = cbor2.dumps([cbor2.CBORTag(42, b"\x00" + good), cbor2.CBORTag(42, b"\x00\x01\x71")])
    assert links_of(short) == [] and links_of(both) == [good]
    assert links_of(bytes.fromhex("d82a42")) == []  # cut short right after the tag's head


def test_a_path_is_followed_through_maps_and_lists_to_the_first_link():
    leaf, other = make_cid(RAW, b"leaf"), make_cid(RAW, b"other")
    block = cbor2.dumps(encodable({"n": 1, "files": {"x": "y", "single": ("link", leaf)},
                                   "list": [0, {"a": 2}, ("link", other)]}))
    assert follow(block, ["files", "single"]) == (leaf, [])
    assert follow(block, ["files", "single", "deeper", "still"]) == (leaf, ["deeper", "still"])
    assert follow(block, ["list", "2"]) == (other, [])
    for nowhere in (["files"], ["files", "x"], ["n", "x"], ["list", "3"], ["list", "-1"], ["list", "a"],
                    ["nothing"], ["list", "1", "a"], []):
        with pytest.raises(LookupError):
            follow(block, nowhere)
    assert follow(cbor2.dumps(encodable(("link", leaf))), ["any"]) == (leaf, ["any"])  # the block is a link
    with pytest.raises(LookupError):
        follow(block[:-3], ["list", "2"])  # cut short
