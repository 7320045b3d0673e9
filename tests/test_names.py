"""Property tests for name records: merge laws, signatures, encoding."""

import msgpack
import pytest
from edgefiles.ans import record
from edgefiles.ans.clock import HybridClock
from edgefiles.ans.merge import merge, merge_tables, too_far_ahead
from edgefiles.ans.registry import is_valid_name
from edgefiles.node.identity import NodeKey
from hypothesis import given
from hypothesis import strategies as st

KEYS = [NodeKey(bytes([i]) * 32) for i in range(3)]

records = st.builds(
    lambda k, ns, name, cid, ms, c, meta: record.sign(KEYS[k], ns, name, cid, (ms, c), meta),
    st.integers(0, 2),
    st.sampled_from(["", "flowfuse"]),
    st.sampled_from(["a", "b", "app"]),
    st.none() | st.binary(min_size=36, max_size=36),
    st.integers(0, 5),
    st.integers(0, 3),
    st.none() | st.binary(max_size=40),  # metadata a facade keeps with the name
)
tables = st.lists(records, max_size=6).map(lambda rs: merge_tables({}, {r.key: r for r in rs}))


@given(records, records)
def test_merge_commutative(a, b):
    assert merge(a, b) == merge(b, a)


@given(records, records, records)
def test_merge_associative(a, b, c):
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@given(records)
def test_merge_idempotent(a):
    assert merge(a, a) == a


@given(tables, tables, tables)
def test_table_merge_laws(a, b, c):
    assert merge_tables(a, b) == merge_tables(b, a)
    assert merge_tables(merge_tables(a, b), c) == merge_tables(a, merge_tables(b, c))
    assert merge_tables(a, a) == a


@given(records)
def test_record_roundtrip_and_signature(r):
    decoded = record.decode(record.encode(r))
    assert decoded == r
    assert record.is_valid(decoded)


@given(records, st.binary(min_size=36, max_size=36))
def test_tampered_record_fails_verification(r, other_cid):
    forged = record.NameRecord(r.namespace, r.name, other_cid, r.clock, r.writer, r.signature,
                               r.version, r.meta)
    assert record.is_valid(forged) == (other_cid == r.cid)


@given(records, st.binary(max_size=40))
def test_metadata_is_signed_too(r, other_meta):
    forged = record.NameRecord(r.namespace, r.name, r.cid, r.clock, r.writer, r.signature,
                               record.META_VERSION, other_meta)
    assert record.is_valid(forged) == (r.version == record.META_VERSION and other_meta == r.meta)


def test_a_record_without_metadata_keeps_the_first_format():
    """Records written before metadata existed decode and verify unchanged, and a record
    without metadata is still written in that format."""
    plain = record.sign(KEYS[0], "", "app", bytes(36), (5, 1))
    assert plain.version == record.FORMAT_VERSION and len(msgpack.unpackb(record.encode(plain))) == 8
    with_meta = record.sign(KEYS[0], "", "app", bytes(36), (5, 1), b"\x80")
    assert len(msgpack.unpackb(record.encode(with_meta))) == 9
    for bad in ([2, "", "a", None, 1, 0, b"w", b"s"], [1, "", "a", None, 1, 0, b"w", b"s", b"m"]):
        with pytest.raises(record.BadRecord):
            record.decode(msgpack.packb(bad))


def test_clock_never_goes_backwards():
    clock = HybridClock((1000, 5))
    assert clock.tick(500) == (1000, 6)
    assert clock.tick(2000) == (2000, 0)
    clock.observe((3000, 7), 2500)
    assert clock.tick(2600) == (3000, 9)


def test_clock_skew_bound():
    r = record.sign(KEYS[0], "", "a", None, (10 * 60 * 1000, 0))
    assert too_far_ahead(r, 0)
    assert not too_far_ahead(r, 6 * 60 * 1000)


def _is_dns_label(label: str) -> bool:
    return 1 <= len(label) <= 63 and set(label) <= set("abcdefghijklmnopqrstuvwxyz0123456789-") \
        and label[0] != "-" and label[-1] != "-"


@given(st.text(max_size=70) | st.text(alphabet="ab9-.\n\r \x00Z", max_size=70))
def test_name_syntax_property(name):
    assert is_valid_name(name) == (len(name) <= 237 and all(_is_dns_label(part) for part in name.split(".")))


def test_name_syntax_examples():
    assert is_valid_name("my-app.v2")
    for bad in ["", "-x", "x-", "A", "a..b", "a_b", "a" * 64, ".a", "a.", "a\n", "a.b\n", "a\n.b"]:
        assert not is_valid_name(bad)
