"""Accounts on a real registry (SQLite file): token format and hashing, users and tokens,
expiry and revocation, and two nodes' records merging to the same accounts."""

from __future__ import annotations

import asyncio
import base64
import re

from edgefiles.ans import accounts as acc
from edgefiles.ans.accounts import AccountError, Accounts
from edgefiles.ans.registry import Registry
from edgefiles.node.db import open_db
from edgefiles.node.identity import NodeKey
from hypothesis import given, settings
from hypothesis import strategies as st


async def _open(path, seed: int) -> tuple:
    db = await open_db(path)
    registry = Registry(db, NodeKey(bytes([seed]) * 32))
    await registry.load()
    return db, Accounts(registry)


@settings(max_examples=200)
@given(st.integers(0, 10))
def test_tokens_look_like_flowfuse_tokens_and_never_repeat(_):
    tokens = {acc.new_token() for _ in range(20)}
    assert len(tokens) == 20
    for token in tokens:
        assert re.fullmatch(r"ffpat_[A-Za-z0-9_-]{43}", token) and acc.is_token_shaped(token)
        assert not acc.is_token_shaped(token + "\n")
        assert len(base64.urlsafe_b64decode(token[6:] + "=")) == 32
        assert acc.token_hash(token) == acc.token_hash(token) and len(acc.token_hash(token)) == 64


@given(st.text(max_size=60))
def test_anything_not_token_shaped_is_refused_before_any_lookup(text):
    if not re.fullmatch(r"ffpat_[A-Za-z0-9_-]{43}", text):
        assert not acc.is_token_shaped(text)


def test_a_user_and_their_tokens(tmp_path):
    async def scenario() -> None:
        db, accounts = await _open(tmp_path / "a.sqlite", 1)
        user, first, secret = await accounts.add_user("ada@example.com", "acme", admin=True)
        assert accounts.authenticate(secret) == user and user.admin
        assert accounts.org(user.org_id).name == "acme"
        assert accounts.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
        expiry = acc.now_ms() + 60_000
        with_expiry, short = await accounts.create_token(user.id, "ci", ["read"], expires_at=expiry)
        assert accounts.authenticate(short, now=with_expiry.expires_at - 1) == user
        assert accounts.authenticate(short, now=with_expiry.expires_at) is None
        listed = accounts.tokens(user.id)  # oldest first (two made in one millisecond: by id)
        assert {t.id for t in listed} == {first.id, with_expiry.id}
        assert listed == sorted(listed, key=lambda t: (t.created_at, t.id))
        assert await accounts.revoke_token(first.id) == first
        assert accounts.authenticate(secret) is None and await accounts.revoke_token(first.id) is None
        (again, _, _) = await accounts.add_user("bob@example.com", "acme")
        assert again.org_id == user.org_id and len(accounts.orgs()) == 1
        try:
            await accounts.add_user("ADA@example.com", "other")
            raise AssertionError("a second user with one email")
        except AccountError:
            pass
        await accounts.remove_user(user.id)
        assert accounts.authenticate(short) is None and accounts.user(user.id) is None
        await db.close()
        db, accounts = await _open(tmp_path / "a.sqlite", 1)  # and all of it survives a restart
        assert [u.email for u in accounts.users()] == ["bob@example.com"]
        await db.close()

    asyncio.run(scenario())


def test_records_exchanged_both_ways_give_both_nodes_the_same_accounts(tmp_path):
    """What replication does: each node applies the other's records; a revocation on one
    node wins over the token it revokes on the other."""
    async def scenario() -> None:
        db_a, a = await _open(tmp_path / "a.sqlite", 1)
        db_b, b = await _open(tmp_path / "b.sqlite", 2)
        user, token, secret = await a.add_user("ada@example.com", "acme")
        await b.registry.apply(list(a.registry.table.values()))
        assert b.authenticate(secret) == user
        await b.revoke_token(token.id)
        await a.registry.apply(list(b.registry.table.values()))
        assert a.authenticate(secret) is None and a.registry.table == b.registry.table
        await db_a.close()
        await db_b.close()

    asyncio.run(scenario())


def test_things_keys_groups_and_roles(tmp_path):
    async def scenario() -> None:
        db, accounts = await _open(tmp_path / "a.sqlite", 1)
        user, _, _ = await accounts.add_user("ada@example.com", "acme")
        sensor, key = await accounts.add_thing("sensor-1", "acme")
        assert accounts.thing_with_key(key) == sensor and sensor.org_id == user.org_id
        assert accounts.thing_with_key(key.upper()) is None and accounts.thing_with_key("") is None
        rotated, new_key = await accounts.rotate_thing(sensor.id)
        assert accounts.thing_with_key(key) is None and accounts.thing_with_key(new_key) == rotated
        group = await accounts.add_group("line-a", "acme")
        await accounts.add_member(group.id, "thing", sensor.id)
        await accounts.add_member(group.id, "user", user.id, "viewer")
        assert accounts.role(group.id, "user", user.id) == "viewer"
        assert accounts.role(group.id, "thing", sensor.id) == "member"
        assert accounts.groups_of("thing", sensor.id) == [group]
        stranger, _, _ = await accounts.add_user("eve@example.com", "evil")  # of another organization
        outsider, _ = await accounts.add_thing("sensor-9", "evil")
        for bad in (("nogroup", "user", user.id, "member"), (group.id, "user", "nobody", "member"),
                    (group.id, "user", user.id, "owner"), (group.id, "user", stranger.id, "member"),
                    (group.id, "thing", outsider.id, "member")):
            try:
                await accounts.add_member(*bad)
                raise AssertionError(f"accepted {bad}")
            except AccountError:
                pass
        await accounts.remove_thing(sensor.id)
        assert accounts.thing_with_key(new_key) is None
        assert accounts.role(group.id, "thing", sensor.id) is None
        await accounts.remove_group(group.id)
        assert accounts.role(group.id, "user", user.id) is None and accounts.groups() == []
        await db.close()

    asyncio.run(scenario())
