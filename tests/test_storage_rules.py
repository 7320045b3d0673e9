"""The Storage API's pure parts: unique object names, paging, presigned tokens and the
wrapping of organization keys (property tests)."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime

import msgpack
import pytest
from edgefiles.ans.orgkeys import derive, unwrap, wrap
from edgefiles.web.errors import BadRequest
from edgefiles.web.paths import check_file_name
from edgefiles.web.storage import presign
from edgefiles.web.storage.rules import Page, RuleBroken, page_of, split_name, unique_name
from hypothesis import assume, given
from hypothesis import strategies as st

WHEN = datetime(2026, 12, 5, 3, 15, 9, tzinfo=UTC)


@pytest.mark.parametrize("original,stem,ext", [
    ("report final.csv", "report_final", "csv"), ("README", "README", ""), (".env", ".env", ""),
    ("a.tar.gz", "a.tar", "gz"), ("résumé (1).pdf", "résumé__1_", "pdf"), ("x;rm -rf.sh", "x_rm_-rf", "sh"),
])
def test_split_name_keeps_letters_digits_dash_underscore_dot(original, stem, ext):
    assert split_name(original) == (stem, ext)


def test_unique_name_shape():
    assert unique_name("report final.csv", WHEN, "1a2b3c4d") == "report_final_20261205_031509_1a2b3c4d.csv"
    assert unique_name("Makefile", WHEN, "1a2b3c4d") == "Makefile_20261205_031509_1a2b3c4d"


def _valid(name: str) -> bool:
    try:
        check_file_name(name)
    except BadRequest:
        return False
    return True


@given(st.text(min_size=1, max_size=300))
def test_any_acceptable_file_name_gives_a_unique_name_that_routes_accept(original):
    assume(_valid(original))
    made = unique_name(original, WHEN)
    assert _valid(made) and ".." not in made and len(made.encode()) <= 255
    assert re.search(r"_20261205_031509_[0-9a-f]{8}(\.[\w.-]*)?$", made)
    assert not made.endswith(".") and re.fullmatch(r"[\w.-]+", made)


@given(total=st.integers(0, 250), size=st.integers(1, 100))
def test_pages_cover_everything_once(total, size):
    items = list(range(total))
    seen, page = [], 1
    while True:
        got, info = Page(page, size).of(items)
        assert info["total_count"] == total and info["total_pages"] == -(-total // size)
        assert info["has_previous"] == (page > 1) and info["has_next"] == (page < info["total_pages"])
        seen += got
        if not info["has_next"]:
            break
        page += 1
    assert seen == items


@pytest.mark.parametrize("query", [{"page": "0"}, {"page_size": "0"}, {"page_size": "101"}, {"page": "one"},
                                   {"page": "-1"}, {"page_size": ""}])
def test_bad_paging_is_a_400(query):
    with pytest.raises(RuleBroken) as caught:
        page_of(query)
    assert caught.value.status == 400


@given(org=st.text(max_size=40), user=st.text(max_size=40), name=st.text(max_size=255),
       expires=st.integers(0, 2**40), signer=st.binary(min_size=32, max_size=32), data=st.data())
def test_presigned_tokens_round_trip_and_no_change_passes(org, user, name, expires, signer, data):
    secret = b"s" * 32
    grant = presign.Grant(org, user, name, expires, signer)
    token = presign.sign(secret, grant)
    assert presign.verify(secret, token) == grant
    with pytest.raises(presign.BadSignature):
        presign.verify(b"t" * 32, token)
    at = data.draw(st.integers(0, len(token) - 1))
    other = data.draw(st.sampled_from("ABCabc019_-.=%"))
    assume(token[at] != other)
    with pytest.raises(presign.BadSignature):
        presign.verify(secret, token[:at] + other + token[at + 1:])


def test_a_presigned_token_of_the_first_format_names_no_signer_and_still_verifies():
    secret = b"s" * 32
    def signed(fields: list) -> str:
        body = msgpack.packb(fields)
        return presign._b64(body) + "." + presign._b64(hmac.new(secret, body, hashlib.sha256).digest())

    first = signed(["org", "user", "a.txt", 1234])  # before grants named the token that asked
    assert presign.verify(secret, first) == presign.Grant("org", "user", "a.txt", 1234, b"")
    second = signed(["org", "user", "a.txt", 1234, b"s" * 32])  # before grants had a format number
    assert presign.verify(secret, second) == presign.Grant("org", "user", "a.txt", 1234, b"s" * 32)
    with pytest.raises(presign.BadSignature):  # a later format
        presign.verify(secret, signed([presign.FORMAT + 1, "org", "user", "a.txt", 1234, b"x" * 32]))


def test_org_keys_open_only_under_their_wrapping_key_and_label():
    swarm, other = derive(b"a" * 32, b"edgefiles org keys v1"), derive(b"b" * 32, b"edgefiles org keys v1")
    assert swarm != other and derive(b"a" * 32, b"another purpose") != swarm
    sealed = wrap(swarm, b"k" * 32, b"org/key")
    assert unwrap(swarm, sealed, b"org/key") == b"k" * 32
    assert unwrap(other, sealed, b"org/key") is None  # another swarm
    assert unwrap(swarm, sealed, b"org2/key") is None  # moved to another organization
    assert unwrap(swarm, sealed[:-1] + bytes([sealed[-1] ^ 1]), b"org/key") is None


def test_org_keys_made_once_kept_under_the_kek_and_shared_under_the_swarm_key(tmp_path):
    import asyncio

    from edgefiles.ans.accounts import Accounts
    from edgefiles.ans.orgkeys import OrgKeys
    from edgefiles.ans.registry import Registry
    from edgefiles.node.db import open_db
    from edgefiles.node.identity import NodeKey

    async def keys_of(path, kek: bytes, swarm: bytes) -> tuple:
        db = await open_db(path)
        registry = Registry(db, NodeKey(b"\x01" * 32))
        await registry.load()
        keys = OrgKeys(Accounts(registry), db, kek, swarm)
        await keys.load()
        return db, keys

    async def scenario() -> None:
        db, keys = await keys_of(tmp_path / "a.sqlite", b"k" * 32, b"s" * 32)
        made = await asyncio.gather(*(keys.for_writing("org-1") for _ in range(5)))
        assert len(set(made)) == 1  # one key, however many uploads ask at once
        key_id, key = made[0]
        assert await keys.for_writing("org-2") != made[0]
        assert await keys.key(key_id, "org-2") is None  # a key answers for its organization only
        await db.close()
        # the same node after a swarm key rotation: its own copy, under its KEK, still opens
        db, rotated = await keys_of(tmp_path / "a.sqlite", b"k" * 32, b"t" * 32)
        assert await rotated.key(key_id, "org-1") == key
        await db.close()
        # someone with the database but neither key opens nothing
        db, thief = await keys_of(tmp_path / "a.sqlite", b"x" * 32, b"y" * 32)
        assert await thief.key(key_id, "org-1") is None
        await db.close()
        # a member of the swarm without the KEK copy opens the shared record
        db, member = await keys_of(tmp_path / "a.sqlite", b"z" * 32, b"s" * 32)
        assert await member.key(key_id, "org-1") == key
        await db.close()

    asyncio.run(scenario())
