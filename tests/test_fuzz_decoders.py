"""Every decoder that reads bytes from outside (peers, uploads, CAR files, form fields, URL
paths) takes garbage: it answers or raises its own documented error, never anything else
(an IndexError or a RecursionError would be a 500, or a dead connection to a peer).

Inputs: pure random bytes, and valid encodings with bytes flipped, cut or inserted, which
get past the first checks and deeper into the decoders."""

from __future__ import annotations

import json
import os

from edgefiles.ans import record
from edgefiles.node import car, dagpb, unixfs
from edgefiles.node.cid import make_cid, verify_block
from edgefiles.node.identity import NodeKey
from edgefiles.node.protobuf import DecodeError
from edgefiles.replication.bitswap import message
from edgefiles.web.errors import BadRequest
from edgefiles.web.formfile import parse_metadata
from edgefiles.web.paths import check_file_name, name_in_path, upload_segments
from hypothesis import given, settings
from hypothesis import strategies as st

KEY = NodeKey(bytes(range(32)))
LEAF = make_cid(0x55, b"leaf")
VALID = {
    "dagpb": dagpb.encode([dagpb.Link(LEAF, "a.txt", 4)], unixfs.encode(unixfs.UnixFSData(1))),
    "unixfs": unixfs.encode(unixfs.UnixFSData(2, b"hello", 5, (5,))),
    "record": record.encode(record.sign(KEY, "", "app", LEAF, (1, 0))),
    "car": car.header([LEAF]) + b"".join(car.section(LEAF, b"leaf")),
    "bitswap": message.encode(message.Message(blocks=[(LEAF, b"leaf")])),
}
EXAMPLES = int(os.environ.get("EDGEFILES_FUZZ_EXAMPLES", "300"))  # per decoder; by hand: 20000
many = settings(max_examples=EXAMPLES, deadline=None)


def mangled(valid: bytes) -> st.SearchStrategy[bytes]:
    """A valid encoding with a few bytes flipped, a cut, or random bytes spliced in."""
    flips = st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(1, 255)), max_size=4)
    flipped = flips.map(lambda fs: _flip(valid, fs))
    cut = st.integers(0, len(valid)).map(lambda n: valid[:n])
    spliced = st.tuples(st.integers(0, len(valid)), st.binary(max_size=16)).map(
        lambda t: valid[: t[0]] + t[1] + valid[t[0]:])
    return st.one_of(st.binary(max_size=200), flipped, cut, spliced)


def _flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for at, mask in flips:
        out[at] ^= mask
    return bytes(out)


@many
@given(mangled(VALID["dagpb"]))
def test_dag_pb_nodes(data):
    try:
        node = dagpb.decode(data)
    except DecodeError:
        return
    assert all(isinstance(link.cid, bytes) for link in node.links)


@many
@given(mangled(VALID["unixfs"]))
def test_unixfs_data(data):
    try:
        unixfs.decode(data)
    except DecodeError:
        pass


@many
@given(mangled(VALID["bitswap"]))
def test_bitswap_messages(data):
    try:
        msg = message.decode(data)
    except DecodeError:
        return
    for cid, block in msg.blocks:  # whatever comes out is named by what it hashes to
        assert verify_block(cid, bytes(block))


@many
@given(mangled(VALID["record"]))
def test_name_records_and_their_signatures(data):
    try:
        rec = record.decode(data)
    except record.BadRecord:
        return
    if data != VALID["record"]:  # a changed record never passes as signed by its writer
        assert not record.is_valid(rec) or record.encode(rec) == VALID["record"]


@many
@given(mangled(VALID["car"]), st.integers(1, 64))
def test_car_streams_in_any_pieces(data, piece):
    parser = car.CarParser()
    try:
        for at in range(0, len(data), piece):
            for cid, block in parser.feed(data[at : at + piece]):
                car.check_block(cid, block)
        parser.finish()
    except car.CarInvalid:
        pass


@many
@given(st.one_of(st.text(max_size=80), st.sampled_from(["..%2e", "../a", "a\\b", "a\x00", "%2e%2e/x"])))
def test_paths_are_refused_or_stay_inside(text):
    for check in (check_file_name, name_in_path):
        try:
            name = check(text)
        except BadRequest:
            continue
        assert "/" not in name and "\\" not in name and ".." not in name and "\x00" not in name
    try:
        segments = upload_segments(text)
    except BadRequest:
        return
    assert all(s not in ("", ".", "..") and "\\" not in s and "\x00" not in s for s in segments)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@many
@given(st.one_of(st.text(max_size=100), json_values.map(lambda v: json.dumps(v, allow_nan=True))))
def test_form_metadata(raw):
    try:
        value = parse_metadata(raw)
    except BadRequest:
        return
    assert isinstance(value, dict)
    json.dumps(value, allow_nan=False)  # what was taken, a record can carry
