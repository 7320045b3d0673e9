"""Pure parts of replication: Bitswap messages, frames, the swarm-key proof, sealed gossip."""

from __future__ import annotations

import hashlib
import os

import msgpack
import pytest
from edgefiles.ans import record as rec_mod
from edgefiles.node.cid import DAG_PB, RAW, make_cid, normalize
from edgefiles.node.identity import NodeKey
from edgefiles.node.protobuf import DecodeError, varint
from edgefiles.replication.bitswap import message as bm
from edgefiles.replication.framing import FrameSplitter, FrameTooLarge, frame
from edgefiles.replication.membership import check_proof, proof
from edgefiles.replication.namesync import (
    BucketedTable,
    Seal,
    bucket_of,
    differing_buckets,
    pack_records,
    table_digest,
    unpack_records,
)
from hypothesis import given, settings
from hypothesis import strategies as st

blobs = st.binary(min_size=0, max_size=2048)
codecs = st.sampled_from([RAW, DAG_PB])


def v0(data: bytes) -> bytes:
    return b"\x12\x20" + hashlib.sha256(data).digest()


@given(
    blocks=st.lists(st.tuples(codecs, blobs), max_size=6),
    wants=st.lists(
        st.tuples(blobs, st.integers(0, 1), st.booleans(), st.booleans(), st.integers(1, 2**31 - 1)),
        max_size=6,
    ),
    presences=st.lists(st.tuples(blobs, st.integers(0, 1)), max_size=6),
    full=st.booleans(),
)
def test_bitswap_message_round_trip(blocks, wants, presences, full):
    msg = bm.Message(
        wants=[bm.Want(make_cid(RAW, seed), t, cancel, sdh, prio) for seed, t, cancel, sdh, prio in wants],
        full=full,
        blocks=[(make_cid(codec, data), data) for codec, data in blocks],
        presences=[(make_cid(DAG_PB, seed), kind) for seed, kind in presences],
    )
    back = bm.decode(bm.encode(msg))
    assert back.wants == msg.wants
    assert back.full == full
    assert back.blocks == msg.blocks
    assert back.presences == msg.presences


@given(data=blobs, flip=st.integers(0, 2047))
def test_altered_block_comes_out_under_another_cid(data, flip):
    cid = make_cid(RAW, data)
    body = bytearray(bm.encode(bm.Message(blocks=[(cid, data)])))
    if data:
        pos = len(body) - len(data) + flip % len(data)  # inside the block's bytes
        body[pos] ^= 0x01
    ((got, got_data),) = bm.decode(bytes(body)).blocks
    assert (got == cid) == (got_data == data)


def test_cidv0_blocks_use_a_v0_prefix_and_arrive_normalized():
    data = b"\x0a\x02\x08\x01"  # a tiny dag-pb node
    cid = v0(data)
    assert bm.cid_prefix(cid) == b"\x00\x70\x12\x20"
    ((got, _),) = bm.decode(bm.encode(bm.Message(blocks=[(cid, data)]))).blocks
    assert got == normalize(cid)


def test_bitswap_1_0_blocks_are_cidv0():
    data = b"hello"
    body = varint(2 << 3 | 2) + varint(len(data)) + data
    assert bm.decode(body).blocks == [(normalize(v0(data)), data)]


def test_blocks_with_hashes_we_do_not_speak_are_dropped():
    prefix = b"\x01\x55\x1e\x20"  # blake3
    body = bm.encode(bm.Message())  # empty
    pair = varint(1 << 3 | 2) + varint(len(prefix)) + prefix + varint(2 << 3 | 2) + varint(1) + b"x"
    body += varint(3 << 3 | 2) + varint(len(pair)) + pair
    assert bm.decode(body).blocks == []


def test_malformed_bitswap_messages_raise_decode_errors():
    with pytest.raises(DecodeError):
        bm.decode(b"\x0a\x05\x0a")  # wantlist cut short
    with pytest.raises(DecodeError):
        bm.decode(varint(1 << 3 | 2) + varint(2) + varint(1 << 3 | 2) + varint(0))  # entry without CID


@given(bodies=st.lists(st.binary(max_size=300), max_size=8), cuts=st.lists(st.integers(1, 50), max_size=40))
def test_frames_survive_any_split_of_the_stream(bodies, cuts):
    stream = b"".join(frame(b) for b in bodies)
    splitter = FrameSplitter(limit=1000)
    got, pos = [], 0
    for cut in cuts:
        got += splitter.feed(stream[pos : pos + cut])
        pos += cut
    got += splitter.feed(stream[pos:])
    assert got == bodies
    assert not splitter.pending


def test_frames_over_the_limit_are_refused_before_buffering():
    splitter = FrameSplitter(limit=100)
    with pytest.raises(FrameTooLarge):
        splitter.feed(varint(101))


def test_a_cut_frame_stays_pending():
    splitter = FrameSplitter(limit=100)
    assert splitter.feed(frame(b"abcdef")[:4]) == []
    assert splitter.pending


@given(key=st.binary(min_size=32, max_size=32), nonce=st.binary(min_size=32, max_size=32))
@settings(max_examples=50)
def test_swarm_key_proof_is_bound_to_key_nonce_and_both_peers(key, nonce):
    a, b, c = (NodeKey(os.urandom(32)).peer_id_bytes for _ in range(3))
    answer = proof(key, nonce, a, b)
    assert check_proof(key, nonce, a, b, answer)
    assert not check_proof(key, nonce, b, a, answer)  # roles swapped: no reflection
    assert not check_proof(key, nonce, a, c, answer)  # relayed to a third node
    other_key = bytes(32) if key != bytes(32) else b"\x01" * 32
    other_nonce = bytes(reversed(nonce)) if nonce != nonce[::-1] else os.urandom(32)
    assert not check_proof(other_key, nonce, a, b, answer)
    assert not check_proof(key, other_nonce, a, b, answer)


def test_sealed_gossip_opens_only_with_the_same_swarm_key():
    key = os.urandom(32)
    sealed = Seal(key).seal(b"payload")
    assert Seal(key).open(sealed) == b"payload"
    assert Seal(os.urandom(32)).open(sealed) is None
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    assert Seal(key).open(bytes(tampered)) is None
    assert Seal(key).open(b"short") is None
    assert Seal(key).topic != Seal(os.urandom(32)).topic


def test_record_payloads_skip_garbage_entries():
    key = NodeKey(os.urandom(32))
    good = rec_mod.sign(key, "", "app", make_cid(RAW, b"x"), (1, 0))
    payload = pack_records([rec_mod.encode(good), b"garbage", msgpack.packb([1, 2])])
    assert unpack_records(payload) == [good]
    assert unpack_records(b"\xc1") == []
    assert unpack_records(msgpack.packb({"not": "a list"})) == []


def test_legacy_encoding_sends_bare_blocks_and_only_want_blocks():
    data = b"\x0a\x02\x08\x01"
    cid = normalize(v0(data))
    msg = bm.Message(
        wants=[bm.Want(cid, bm.WANT_HAVE), bm.Want(cid, bm.WANT_BLOCK)],
        blocks=[(cid, data)],
        presences=[(cid, bm.HAVE)],
    )
    back = bm.decode(bm.encode(msg, legacy=True))
    assert back.blocks == [(cid, data)]
    assert [w.want_type for w in back.wants] == [bm.WANT_BLOCK]
    assert back.presences == []


def test_wildcard_listen_addresses_become_dialable_ones_loopback_last():
    from edgefiles.replication.host import expand_wildcards

    interfaces = {"ip4": ["127.0.0.1", "10.1.2.3"], "ip6": ["::1", "fd00::5"]}
    pid = "/p2p/12D3KooWExample"
    listen = [f"/ip4/0.0.0.0/tcp/4001{pid}", f"/ip6/::/tcp/4001{pid}", f"/ip4/10.9.9.9/tcp/1{pid}"]
    got = expand_wildcards(listen, interfaces)
    assert got == [
        f"/ip4/10.1.2.3/tcp/4001{pid}", f"/ip4/127.0.0.1/tcp/4001{pid}",
        f"/ip6/fd00::5/tcp/4001{pid}", f"/ip6/::1/tcp/4001{pid}",
        f"/ip4/10.9.9.9/tcp/1{pid}",
    ]


keys = st.tuples(st.sampled_from(["", "flowfuse/t/p"]), st.text(min_size=1, max_size=6))
# an encoded record carries its own namespace and name, as a signed record does: two keys never
# share an encoding (bucket digests cover the encodings alone)
tables = st.dictionaries(keys, st.binary(min_size=0, max_size=40), max_size=12).map(
    lambda table: {key: repr(key).encode() + value for key, value in table.items()})


def bucketed(items) -> BucketedTable:
    table = BucketedTable()
    for key, encoded in items:
        table.put(key, encoded)
    return table


def digest_of(table: dict) -> bytes:
    return table_digest(bucketed(table.items()).digests())


@given(tables, st.randoms())
def test_table_digest_ignores_order_and_sees_any_difference(table, rnd):
    items = list(table.items())
    rnd.shuffle(items)
    assert table_digest(bucketed(items).digests()) == digest_of(table)
    if table:
        first = next(iter(table))
        assert digest_of({k: v for k, v in table.items() if k != first}) != digest_of(table)
        assert digest_of({**table, first: table[first] + b"\x00"}) != digest_of(table)


@given(keys, st.binary(max_size=20), st.binary(max_size=20))
def test_record_boundaries_count_in_a_bucket(key, v1, v2):
    namespace, name = key
    other = next(k for i in range(100_000) if bucket_of(k := (namespace, f"{name}{i}")) == bucket_of(key))
    assert digest_of({key: v1, other: v2}) != digest_of({key: v1 + v2})
    assert digest_of({key: v1, other: v2}) != digest_of({key: v1, other: v2 + b"\x00"})


@given(st.lists(st.tuples(keys, st.binary(max_size=20)), max_size=30), st.integers(0, 30))
def test_digests_kept_between_changes_match_digests_from_scratch(puts, asked_at):
    """Digests are cached per bucket and dropped when the bucket changes: asking midway must
    not leave a stale digest behind."""
    live = BucketedTable()
    for i, (key, encoded) in enumerate(puts):
        if i == asked_at:
            live.digests()
        live.put(key, encoded)
    assert live.digests() == bucketed(dict(puts).items()).digests()


@given(tables, tables)
def test_the_records_sent_cover_all_the_other_side_lacks(ours, theirs):
    table = bucketed(ours.items())
    mine = table.digests()
    sent = table.records(differing_buckets(mine, b"".join(bucketed(theirs.items()).digests())))
    lacking = [v for k, v in ours.items() if theirs.get(k) != v]
    assert all(v in sent for v in lacking)
    assert len(sent) <= len(ours)
    if ours == theirs:
        assert sent == []
    assert sorted(table.records(differing_buckets(mine, b"short"))) == sorted(ours.values())  # all
