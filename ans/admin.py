"""The account administration commands, one function each: what `edgefiles admin` runs (on
the data directory or through the node's admin socket) and what the HTTP admin API runs. A
request is the parsed command line as a dict (option names as keys); the answer is
`{"result": <JSON>, "lines": [<readable lines>]}` or `{"error": <plain words>}` (with
`"usage": true` for a request that cannot be carried out as given, `"missing": true` when it
names something that does not exist, `"conflict": true` when it would repeat what must be
unique).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .accounts import AccountError, Accounts, Conflict, Missing, iso
from .clock import now_ms, parse_duration

MAX_TOKEN_LIFETIME_S = 36500 * 86400  # a hundred years: longer is no expiry, which leaving it out says

Result = tuple[Any, list[str]]  # (the JSON answer, the readable lines)


class UsageError(ValueError):
    """A request that cannot be carried out as given."""


async def answer(accounts: Accounts, request: dict[str, Any]) -> dict[str, Any]:
    """One admin request (the parsed command line as a dict) against `accounts`."""
    action = request.get("action")
    if action == "member":
        action = f"member {request.get('member_action')}"
    handler = HANDLERS.get((request.get("kind"), action))
    if handler is None:
        return {"error": "unknown admin command", "usage": True}
    try:
        result, lines = await handler(accounts, request)
    except (KeyError, TypeError, AttributeError) as exc:  # a field missing or of the wrong kind
        return {"error": f"the request lacks a field or has one of the wrong kind ({exc})", "usage": True}
    except Missing as exc:
        return {"error": str(exc), "missing": True}
    except Conflict as exc:
        return {"error": str(exc), "conflict": True}
    except AccountError as exc:
        return {"error": str(exc)}
    except UsageError as exc:
        return {"error": str(exc), "usage": True}
    return {"result": result, "lines": lines}


# the commands ---------------------------------------------------------------------------
async def _user_add(accounts: Accounts, r: dict[str, Any]) -> Result:
    admin = r.get("admin", False)
    if not isinstance(admin, bool):  # "false" is a non-empty string: it made a node-wide admin
        raise UsageError(f"admin is true or false, not {admin!r}")
    user, _, secret = await accounts.add_user(r["email"], r["org"], admin, r.get("name"))
    out = {"id": user.id, "email": user.email, "name": user.name, "org_id": user.org_id,
           "admin": user.admin, "token": secret}
    return out, [f"user {user.id} {user.email} (org {r['org']}){' admin' if user.admin else ''}",
                 f"token {secret}  (shown once)"]


async def _user_ls(accounts: Accounts, r: dict[str, Any]) -> Result:
    users = [_user(u) for u in accounts.users()]
    return users, [f"{u['id']}  {u['email']}  org {u['org_id']}{'  admin' if u['admin'] else ''}"
                   for u in users]


async def _user_rm(accounts: Accounts, r: dict[str, Any]) -> Result:
    user = _user(await accounts.remove_user(r["id"]))
    return user, [f"removed user {user['id']} {user['email']}"]


async def _org_add(accounts: Accounts, r: dict[str, Any]) -> Result:
    org = await accounts.add_org(r["name"])
    return {"id": org.id, "name": org.name}, [f"org {org.id} {org.name}"]


async def _org_ls(accounts: Accounts, r: dict[str, Any]) -> Result:
    orgs = [{"id": o.id, "name": o.name} for o in accounts.orgs()]
    return orgs, [f"{o['id']}  {o['name']}" for o in orgs]


async def _org_quota(accounts: Accounts, r: dict[str, Any]) -> Result:
    if not isinstance(r["bytes"], int) or isinstance(r["bytes"], bool):
        raise UsageError("bytes: a whole number of bytes")
    quota = await accounts.set_quota(r["name"], r["bytes"])
    out = {"org_id": quota.org_id, "name": r["name"], "quota_bytes": quota.bytes}
    return out, [f"org {r['name']} may store {quota.bytes} bytes through the Storage API"]


async def _token_create(accounts: Accounts, r: dict[str, Any]) -> Result:
    expires_at = None
    if r.get("expires_in") is not None:
        try:
            seconds = parse_duration(r["expires_in"])
        except (ValueError, TypeError) as exc:
            raise UsageError(f"expires_in: {exc}") from None
        if not 1 <= seconds <= MAX_TOKEN_LIFETIME_S:  # a token past year 9999 broke every token listing
            raise UsageError(f"expires_in is at least 1s and at most {MAX_TOKEN_LIFETIME_S // 86400}d "
                             "(leave it out for a token that does not expire)")
        expires_at = now_ms() + int(seconds * 1000)
    token, secret = await accounts.create_token(r["user"], r.get("name") or "cli", [], expires_at)
    out = {"id": token.id, "token": secret, "expires_at": iso(token.expires_at)}
    return out, [f"token {token.id} for user {token.user_id}, expires {out['expires_at'] or 'never'}",
                 f"{secret}  (shown once)"]


async def _token_ls(accounts: Accounts, r: dict[str, Any]) -> Result:
    tokens = [_token(t) for t in accounts.tokens(r.get("user"))]
    return tokens, [f"{t['id']}  user {t['user_id']}  {t['name']}  expires {t['expires_at'] or 'never'}"
                    for t in tokens]


async def _token_revoke(accounts: Accounts, r: dict[str, Any]) -> Result:
    token = await accounts.revoke_token(r["id"])
    if token is None:
        raise Missing(f"no live token {r['id']}")
    return _token(token), [f"revoked token {token.id}"]


async def _thing_add(accounts: Accounts, r: dict[str, Any]) -> Result:
    thing, key = await accounts.add_thing(r["name"], r["org"])
    return {**_thing(thing), "key": key}, [f"thing {thing.id} {thing.name}", f"key {key}  (shown once)"]


async def _thing_ls(accounts: Accounts, r: dict[str, Any]) -> Result:
    things = [_thing(t) for t in accounts.things()]
    return things, [f"{t['id']}  {t['name']}  org {t['org_id']}" for t in things]


async def _thing_rm(accounts: Accounts, r: dict[str, Any]) -> Result:
    thing = _thing(await accounts.remove_thing(r["id"]))
    return thing, [f"removed thing {thing['id']} {thing['name']}"]


async def _thing_rotate(accounts: Accounts, r: dict[str, Any]) -> Result:
    thing, key = await accounts.rotate_thing(r["id"])
    return {**_thing(thing), "key": key}, [f"thing {thing.id} has a new key", f"key {key}  (shown once)"]


async def _group_add(accounts: Accounts, r: dict[str, Any]) -> Result:
    group = _group(await accounts.add_group(r["name"], r["org"]))
    return group, [f"group {group['id']} {group['name']}"]


async def _group_ls(accounts: Accounts, r: dict[str, Any]) -> Result:
    groups = [{**_group(g), "members": [_member(m) for m in accounts.members(g.id)]}
              for g in accounts.groups()]
    return groups, [f"{g['id']}  {g['name']}  org {g['org_id']}  {len(g['members'])} members" for g in groups]


async def _group_rm(accounts: Accounts, r: dict[str, Any]) -> Result:
    group = _group(await accounts.remove_group(r["id"]))
    return group, [f"removed group {group['id']} {group['name']}"]


async def _member_add(accounts: Accounts, r: dict[str, Any]) -> Result:
    kind, member_id = ("user", r["user"]) if r.get("user") else ("thing", r["thing"])
    member = _member(await accounts.add_member(r["group_id"], kind, member_id, r.get("role") or "member"))
    return member, [f"{kind} {member_id} is a {member['role']} of group {r['group_id']}"]


async def _member_rm(accounts: Accounts, r: dict[str, Any]) -> Result:
    kind, member_id = ("user", r["user"]) if r.get("user") else ("thing", r["thing"])
    member = _member(await accounts.remove_member(r["group_id"], kind, member_id))
    return member, [f"{kind} {member_id} left group {r['group_id']}"]


def _thing(thing: Any) -> dict[str, Any]:
    return {"id": thing.id, "name": thing.name, "org_id": thing.org_id}


def _group(group: Any) -> dict[str, Any]:
    return {"id": group.id, "name": group.name, "org_id": group.org_id}


def _member(member: Any) -> dict[str, Any]:
    return {"group_id": member.group_id, "kind": member.kind, "id": member.member_id, "role": member.role}


def _user(user: Any) -> dict[str, Any]:
    return {"id": user.id, "email": user.email, "name": user.name, "org_id": user.org_id, "admin": user.admin}


def _token(token: Any) -> dict[str, Any]:
    return {"id": token.id, "user_id": token.user_id, "name": token.name, "scope": token.scope,
            "expires_at": iso(token.expires_at), "created_at": iso(token.created_at)}


HANDLERS: dict[tuple[str, str], Callable[[Accounts, dict[str, Any]], Awaitable[Result]]] = {
    ("user", "add"): _user_add, ("user", "ls"): _user_ls, ("user", "rm"): _user_rm,
    ("org", "add"): _org_add, ("org", "ls"): _org_ls, ("org", "quota"): _org_quota,
    ("token", "create"): _token_create, ("token", "ls"): _token_ls, ("token", "revoke"): _token_revoke,
    ("thing", "add"): _thing_add, ("thing", "ls"): _thing_ls, ("thing", "rm"): _thing_rm,
    ("thing", "rotate"): _thing_rotate,
    ("group", "add"): _group_add, ("group", "ls"): _group_ls, ("group", "rm"): _group_rm,
    ("group", "member add"): _member_add, ("group", "member rm"): _member_rm,
}


