"""Encryption at rest (node/sealed.py): round trips and ranges of any shape, and every kind
of tampering (a flipped byte, a cut, swapped segments, another key) fails instead of giving
wrong bytes."""

from __future__ import annotations

import os

import pytest
from edgefiles.node import sealed
from hypothesis import given, settings
from hypothesis import strategies as st

KEY, OTHER = bytes(range(32)), bytes(32)
KEY_ID = b"k" * 16
SEG = sealed.PLAIN_SEGMENT
# sizes around the segment boundaries, where off-by-ones live
SIZES = st.one_of(st.integers(0, 3000), st.sampled_from([SEG - 1, SEG, SEG + 1, 2 * SEG, 2 * SEG + 7]))


def plain_of(size: int) -> bytes:
    return (os.urandom(4096) * (size // 4096 + 1))[:size]


@settings(max_examples=40, deadline=None)
@given(size=SIZES, cuts=st.lists(st.integers(1, 300_000), max_size=6))
def test_any_feeding_round_trips_and_sizes_invert(size, cuts):
    plain = plain_of(size)
    enc = sealed.Encryptor(KEY, KEY_ID)
    out, at = [enc.head], 0
    for cut in cuts:
        out += enc.feed(plain[at:at + cut])
        at += cut
    out += enc.feed(plain[at:])
    out.append(enc.finish())
    cipher = b"".join(out)
    assert len(cipher) == sealed.cipher_size(size) and sealed.plain_size(len(cipher)) == size
    assert sealed.decrypt(KEY, cipher) == plain


@settings(max_examples=60, deadline=None)
@given(size=SIZES.filter(lambda n: n > 0), data=st.data())
def test_a_range_decrypts_from_its_segments_alone(size, data):
    plain = plain_of(size)
    cipher = sealed.encrypt(KEY, KEY_ID, plain)
    start = data.draw(st.integers(0, size - 1))
    end = data.draw(st.integers(start + 1, size))
    _, lo, hi = sealed.cipher_span(start, end, size)
    piece = data.draw(st.integers(1, 2 * sealed.CIPHER_SEGMENT))
    span = cipher[lo:hi]
    pieces = [span[i:i + piece] for i in range(0, len(span), piece)]
    got = b"".join(sealed.decrypt_range(KEY, cipher[:32], size, start, end, pieces))
    assert got == plain[start:end]


@settings(max_examples=60, deadline=None)
@given(size=SIZES, data=st.data())
def test_a_flipped_byte_anywhere_is_an_error_never_other_bytes(size, data):
    cipher = bytearray(sealed.encrypt(KEY, KEY_ID, plain_of(size)))
    at = data.draw(st.integers(0, len(cipher) - 1))
    cipher[at] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(sealed.Tampered):
        sealed.decrypt(KEY, bytes(cipher))


def test_cut_reordered_or_foreign_ciphertext_fails():
    plain = plain_of(3 * SEG)
    cipher = sealed.encrypt(KEY, KEY_ID, plain)
    cut = cipher[:32 + 2 * sealed.CIPHER_SEGMENT]  # ends at a segment boundary: looks whole
    with pytest.raises(sealed.Tampered):
        sealed.decrypt(KEY, cut)
    body = cipher[32:]
    one, two = body[:sealed.CIPHER_SEGMENT], body[sealed.CIPHER_SEGMENT:2 * sealed.CIPHER_SEGMENT]
    with pytest.raises(sealed.Tampered):
        sealed.decrypt(KEY, cipher[:32] + two + one + body[2 * sealed.CIPHER_SEGMENT:])
    with pytest.raises(sealed.Tampered):
        sealed.decrypt(OTHER, cipher)
    other_file = sealed.encrypt(KEY, KEY_ID, plain)
    with pytest.raises(sealed.Tampered):  # a segment moved from another file of the same key
        moved = other_file[32:32 + sealed.CIPHER_SEGMENT]
        sealed.decrypt(KEY, cipher[:32] + moved + body[sealed.CIPHER_SEGMENT:])
    for bad in (0, 31, 32 + 15, 32 + sealed.CIPHER_SEGMENT + 3):
        with pytest.raises(sealed.Tampered):
            sealed.plain_size(bad)


def test_same_plaintext_twice_gives_different_ciphertext():
    assert sealed.encrypt(KEY, KEY_ID, b"hello") != sealed.encrypt(KEY, KEY_ID, b"hello")
