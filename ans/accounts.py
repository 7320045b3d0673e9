"""Accounts: organizations, users and their personal access tokens, things (devices, with a
key each) and groups of users and things, kept as name records in
a namespace of their own, so that they replicate as names do (signed, clocked, the last
writer wins, a delete is a tombstone): a token made on one node works on every node of the
swarm, and its revocation reaches every node.

Secrets never leave a node in clear. A token is kept as the SHA-256 of its text, and its
record is named by that hash, so checking a token is one hash and one lookup in the
registry's in-memory table, never a key derivation per request.

Threads: the event loop only.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgpack

from .clock import now_ms
from .registry import Registry

NAMESPACE = "@accounts"  # not a DNS label: no app name can ever be one of these
PRESENT = bytes([0x01, 0x55, 0x00, 0x00])  # an account record's target: the empty identity CID
TOKEN_PREFIX = "ffpat_"
_TOKEN_SHAPE = re.compile(r"ffpat_[A-Za-z0-9_-]{43}")


def new_token() -> str:
    """A FlowFuse-style personal access token: `ffpat_` and 32 random bytes, URL-safe base64."""
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_token_shaped(text: str) -> bool:
    return bool(_TOKEN_SHAPE.fullmatch(text))


def new_id() -> str:
    return str(uuid.uuid4())


def iso(ms: int | None) -> str | None:
    """ms since the epoch as ISO 8601 UTC (`2027-01-31T12:00:00.000Z`); None stays None."""
    if ms is None:
        return None
    try:
        moment = datetime.fromtimestamp(ms / 1000, UTC)
    except (ValueError, OverflowError, OSError):  # past year 9999 (stored before expiries were capped)
        moment = datetime.max.replace(tzinfo=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Org:
    id: str
    name: str


@dataclass(frozen=True)
class User:
    id: str
    email: str
    name: str
    org_id: str
    admin: bool = False


@dataclass(frozen=True)
class Token:
    id: str
    user_id: str
    name: str
    hash: str
    created_at: int  # ms since the epoch
    expires_at: int | None = None  # ms since the epoch; None: never
    scope: list[str] = field(default_factory=list)

    def expired(self, now: int) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True)
class Thing:
    """A device; it signs in with `Authorization: Thing <key>` (kept here as the key's hash)."""
    id: str
    name: str
    org_id: str
    key_hash: str


@dataclass(frozen=True)
class Group:
    id: str
    name: str
    org_id: str


@dataclass(frozen=True)
class Member:
    group_id: str
    kind: str  # "user" or "thing"
    member_id: str
    role: str = "member"  # members read and write the group's files, viewers read


@dataclass(frozen=True)
class ThingKey:
    thing_id: str


@dataclass(frozen=True)
class Quota:
    """An organization's Storage API quota, in plaintext bytes."""
    org_id: str
    bytes: int


@dataclass(frozen=True)
class OrgKey:
    """An organization's data key, sealed under the swarm key (see ans/orgkeys.py)."""
    id: str  # hex of the 16-byte key id that encrypted objects carry in their header
    org_id: str
    sealed: bytes
    created_at: int


KINDS: dict[str, type] = {"org": Org, "user": User, "token": Token, "thing": Thing, "thingkey": ThingKey,
                          "group": Group, "member": Member, "quota": Quota, "orgkey": OrgKey}
ROLES = ("member", "viewer")


class AccountError(ValueError):
    """A request the accounts cannot carry out (an email taken, a bad role...)."""


class Conflict(AccountError):
    """A request that would make a second of something that must be unique (an email)."""


class Missing(AccountError):
    """A request that names a user, thing, group or token that does not exist."""


class Accounts:
    def __init__(self, registry: Registry):
        self.registry = registry

    # reading ------------------------------------------------------------------------
    def _get(self, kind: str, key: str) -> Any:
        record = self.registry.get(f"{kind}/{key}", NAMESPACE)
        return None if record is None else _decode(kind, record.meta)

    def _all(self, kind: str) -> list[Any]:
        prefix = f"{kind}/"
        found = (_decode(kind, r.meta) for r in self.registry.live(NAMESPACE) if r.name.startswith(prefix))
        return [item for item in found if item is not None]

    def org(self, org_id: str) -> Org | None:
        return self._get("org", org_id)

    def org_named(self, name: str) -> Org | None:
        return next((org for org in self._all("org") if org.name == name), None)

    def orgs(self) -> list[Org]:
        return sorted(self._all("org"), key=lambda org: org.name)

    def user(self, user_id: str) -> User | None:
        return self._get("user", user_id)

    def users(self) -> list[User]:
        return sorted(self._all("user"), key=lambda user: user.email)

    def tokens(self, user_id: str | None = None, now: int | None = None) -> list[Token]:
        """Live tokens (of one user), oldest first; expired ones are left out."""
        now = now_ms() if now is None else now
        return sorted((t for t in self._all("token") if (user_id is None or t.user_id == user_id)
                       and not t.expired(now)), key=lambda t: (t.created_at, t.id))

    def authenticate(self, token: str, now: int | None = None) -> User | None:
        """The user a token belongs to; None for a token that is unknown, expired, revoked or
        whose user is gone."""
        found = self.live_token(token_hash(token), now) if is_token_shaped(token) else None
        return None if found is None else self.user(found.user_id)

    def live_token(self, hashed: str, now: int | None = None) -> Token | None:
        """The token whose `token_hash` is `hashed`; None once it is revoked or expired."""
        found: Token | None = self._get("token", hashed)
        return None if found is None or found.expired(now_ms() if now is None else now) else found

    def thing(self, thing_id: str) -> Thing | None:
        return self._get("thing", thing_id)

    def things(self) -> list[Thing]:
        return sorted(self._all("thing"), key=lambda t: (t.name, t.id))

    def thing_with_key(self, key: str) -> Thing | None:
        """The thing a key belongs to (one hash, one lookup); None for an unknown or old key."""
        if not 0 < len(key) <= 200:
            return None
        found: ThingKey | None = self._get("thingkey", token_hash(key))
        return None if found is None else self.thing(found.thing_id)

    def group(self, group_id: str) -> Group | None:
        return self._get("group", group_id)

    def groups(self) -> list[Group]:
        return sorted(self._all("group"), key=lambda g: (g.name, g.id))

    def members(self, group_id: str) -> list[Member]:
        return [m for m in self._all("member") if m.group_id == group_id]

    def role(self, group_id: str, kind: str, member_id: str) -> str | None:
        """`member` or `viewer` for a member of the group, None for anyone else."""
        found: Member | None = self._get("member", f"{group_id}/{kind}:{member_id}")
        return None if found is None else found.role

    def groups_of(self, kind: str, member_id: str) -> list[Group]:
        ids = {m.group_id for m in self._all("member") if m.kind == kind and m.member_id == member_id}
        return [g for g in self.groups() if g.id in ids]

    def quota(self, org_id: str) -> int | None:
        """The organization's Storage API quota in bytes; None: the node's default."""
        found: Quota | None = self._get("quota", org_id)
        return None if found is None else found.bytes

    def org_keys(self, org_id: str | None = None) -> list[OrgKey]:
        """Data keys (of one organization), oldest first."""
        return sorted((k for k in self._all("orgkey") if org_id is None or k.org_id == org_id),
                      key=lambda k: (k.created_at, k.id))

    def org_key(self, key_id: str) -> OrgKey | None:
        return self._get("orgkey", key_id)

    # writing ------------------------------------------------------------------------
    async def set_quota(self, org_name: str, quota: int) -> Quota:
        org = self.org_named(org_name)
        if org is None:
            raise Missing(f"no organization named {org_name!r}")
        if quota < 0:
            raise AccountError("a quota is 0 bytes or more")
        found = Quota(org.id, quota)
        await self._write([("quota", org.id, found)])
        return found

    async def add_org_key(self, key: OrgKey) -> None:
        await self._write([("orgkey", key.id, key)])

    async def _write(self, puts: list[tuple[str, str, Any]], drops: list[tuple[str, str]] = ()) -> None:
        """Records set and deleted in one transaction: a change is whole or not at all."""
        items = [(NAMESPACE, f"{kind}/{key}", None, None) for kind, key in drops]
        items += [(NAMESPACE, f"{kind}/{key}", PRESENT, msgpack.packb(item.__dict__, use_bin_type=True))
                  for kind, key, item in puts]
        if items:
            await self.registry.write_many(items)

    async def add_org(self, name: str) -> Org:
        """The organization of that name, created when there is none."""
        if not name.strip():
            raise AccountError("an organization needs a name")
        existing = self.org_named(name)
        if existing is not None:
            return existing
        org = Org(new_id(), name)
        await self._write([("org", org.id, org)])
        return org

    async def add_user(self, email: str, org_name: str, admin: bool = False,
                       name: str | None = None) -> tuple[User, Token, str]:
        """A new user of the organization `org_name` (created if missing), with a first token."""
        email = email.strip()
        if "@" not in email or len(email) > 254:
            raise AccountError(f"{email!r} is not an email address")
        if any(u.email.lower() == email.lower() for u in self._all("user")):
            raise Conflict(f"a user with the email {email} exists already")
        org = await self.add_org(org_name)
        user = User(new_id(), email, name or email.split("@")[0], org.id, admin)
        token, secret = self._new_token(user.id, "first token")
        await self._write([("user", user.id, user), ("token", token.hash, token)])
        return user, token, secret

    async def remove_user(self, user_id: str) -> User:
        """Delete a user; their tokens stop working at once."""
        user = self._existing("user", user_id)
        drops = [("token", t.hash) for t in self._all("token") if t.user_id == user_id]
        drops += self._memberships("user", user_id)
        await self._write([], [*drops, ("user", user_id)])
        return user

    async def create_token(self, user_id: str, name: str, scope: list[str] | None = None,
                           expires_at: int | None = None) -> tuple[Token, str]:
        """A new token of `user_id`: the record, and the secret (the only time it exists)."""
        self._existing("user", user_id)
        token, secret = self._new_token(user_id, name, scope, expires_at)
        await self._write([("token", token.hash, token)])
        return token, secret

    @staticmethod
    def _new_token(user_id: str, name: str, scope: list[str] | None = None,
                   expires_at: int | None = None) -> tuple[Token, str]:
        secret = new_token()
        token = Token(new_id(), user_id, name, token_hash(secret), now_ms(), expires_at, list(scope or []))
        return token, secret

    async def revoke_token(self, token_id: str, user_id: str | None = None) -> Token | None:
        """Revoke a token by its id (only if it is `user_id`'s, when given); None when there
        is no such live token."""
        for token in self._all("token"):
            if token.id == token_id and (user_id is None or token.user_id == user_id):
                await self._write([], [("token", token.hash)])
                return token
        return None

    async def add_thing(self, name: str, org_name: str) -> tuple[Thing, str]:
        """A new thing and its key (the only time the key exists in clear)."""
        if not name.strip():
            raise AccountError("a thing needs a name")
        org = await self.add_org(org_name)
        return await self._keyed(Thing(new_id(), name.strip(), org.id, ""))

    async def rotate_thing(self, thing_id: str) -> tuple[Thing, str]:
        """A new key for a thing; the old one stops working."""
        return await self._keyed(self._existing("thing", thing_id))

    async def _keyed(self, old: Thing) -> tuple[Thing, str]:
        """`old` with a new key; its old key (if any) stops working in the same write."""
        key = str(uuid.uuid4())  # Mainflux's thing keys are UUIDs
        thing = Thing(old.id, old.name, old.org_id, token_hash(key))
        drops = [("thingkey", old.key_hash)] if old.key_hash else []
        puts = [("thingkey", thing.key_hash, ThingKey(thing.id)), ("thing", thing.id, thing)]
        await self._write(puts, drops)
        return thing, key

    async def remove_thing(self, thing_id: str) -> Thing:
        thing = self._existing("thing", thing_id)
        await self._write([], [("thingkey", thing.key_hash), *self._memberships("thing", thing_id),
                               ("thing", thing_id)])
        return thing

    def _memberships(self, kind: str, member_id: str) -> list[tuple[str, str]]:
        return [("member", f"{m.group_id}/{kind}:{member_id}") for m in self._all("member")
                if m.kind == kind and m.member_id == member_id]

    async def add_group(self, name: str, org_name: str) -> Group:
        if not name.strip():
            raise AccountError("a group needs a name")
        org = await self.add_org(org_name)
        group = Group(new_id(), name.strip(), org.id)
        await self._write([("group", group.id, group)])
        return group

    async def remove_group(self, group_id: str) -> Group:
        group = self._existing("group", group_id)
        drops = [("member", f"{group_id}/{m.kind}:{m.member_id}") for m in self.members(group_id)]
        await self._write([], [*drops, ("group", group_id)])
        return group

    async def add_member(self, group_id: str, kind: str, member_id: str, role: str = "member") -> Member:
        """Put a user or a thing into a group (or change its role there); both of one
        organization: a group is its organization's, and so are the files it shares."""
        group = self._existing("group", group_id)
        joining = self._existing(kind, member_id)
        if joining.org_id != group.org_id:
            raise AccountError(f"{kind} {member_id} is of another organization than group {group_id}")
        if role not in ROLES:
            raise AccountError(f"role {role!r}: one of {', '.join(ROLES)}")
        member = Member(group_id, kind, member_id, role)
        await self._write([("member", f"{group_id}/{kind}:{member_id}", member)])
        return member

    async def remove_member(self, group_id: str, kind: str, member_id: str) -> Member:
        found: Member | None = self._get("member", f"{group_id}/{kind}:{member_id}")
        if found is None:
            raise Missing(f"{kind} {member_id} is not in group {group_id}")
        await self._write([], [("member", f"{group_id}/{kind}:{member_id}")])
        return found

    def _existing(self, kind: str, key: str) -> Any:
        found = self._get(kind, key) if kind in KINDS else None
        if found is None:
            raise Missing(f"no {kind} {key}")
        return found

    async def drop_expired(self, now: int | None = None) -> int:
        """Tombstones for expired tokens (they are refused already; this keeps lists short)."""
        now = now_ms() if now is None else now
        expired = [("token", t.hash) for t in self._all("token") if t.expired(now)]
        await self._write([], expired)
        return len(expired)


def _decode(kind: str, meta: bytes | None) -> Any:
    """The object a record holds; None for one that does not parse (a peer's bug must not
    break a listing)."""
    try:
        fields = msgpack.unpackb(meta or b"", raw=False)
        return KINDS[kind](**fields)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
