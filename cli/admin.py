"""`edgefiles admin`: organizations, users and tokens of a node's data directory.

On a stopped node the command opens the data directory itself; on a running one it goes
through the node, over a Unix socket in the data directory that only its owner can use
(`admin.sock`, mode 0600, the caller's uid checked), so changes take effect at once and
replicate from there.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import socket
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgefiles.ans.accounts import iso

from .config import parse_duration
from .main import CliError

SOCKET_NAME = "admin.sock"
Result = tuple[Any, list[str]]  # (the --json answer, the readable lines)


class UsageError(CliError):
    """A command line that cannot be carried out as given (exit status 2)."""


def register(sub: argparse._SubParsersAction) -> None:
    admin = sub.add_parser("admin", help="manage organizations, users and tokens of a node")
    kinds = admin.add_subparsers(dest="kind", required=True, metavar="WHAT")
    add_admin_commands(kinds)
    admin.set_defaults(func=cmd_admin)


def add_admin_commands(kinds: argparse._SubParsersAction) -> None:
    def command(kind: argparse._SubParsersAction, name: str, help_: str) -> argparse.ArgumentParser:
        p = kind.add_parser(name, help=help_)
        p.add_argument("--data", default=os.environ.get("EDGEFILES_DATA", "./edgefiles-data"),
                       help="the node's data directory")
        p.add_argument("--json", action="store_true", help="print JSON")
        return p

    user = kinds.add_parser("user", help="users").add_subparsers(dest="action", required=True)
    p = command(user, "add", "add a user (and its organization if new); prints its first token")
    p.add_argument("--email", required=True)
    p.add_argument("--org", required=True, help="the organization's name")
    p.add_argument("--name", help="display name (default: the email's local part)")
    p.add_argument("--admin", action="store_true", help="may use the admin API")
    command(user, "ls", "list users")
    command(user, "rm", "remove a user; their tokens stop working").add_argument("id")

    org = kinds.add_parser("org", help="organizations").add_subparsers(dest="action", required=True)
    command(org, "add", "add an organization").add_argument("name")
    command(org, "ls", "list organizations")

    thing = kinds.add_parser("thing", help="things (devices) and their keys")
    thing = thing.add_subparsers(dest="action", required=True)
    p = command(thing, "add", "add a thing; prints its key once")
    p.add_argument("name")
    p.add_argument("--org", required=True, help="the organization's name")
    command(thing, "ls", "list things")
    command(thing, "rm", "remove a thing; its key stops working").add_argument("id")
    command(thing, "rotate", "a new key (printed once); the old one stops working").add_argument("id")

    group = kinds.add_parser("group", help="groups of users and things")
    group = group.add_subparsers(dest="action", required=True)
    p = command(group, "add", "add a group")
    p.add_argument("name")
    p.add_argument("--org", required=True, help="the organization's name")
    command(group, "ls", "list groups")
    command(group, "rm", "remove a group").add_argument("id")
    member = group.add_parser("member", help="members of a group")
    member = member.add_subparsers(dest="member_action", required=True)
    for action, help_ in (("add", "add a user or a thing to a group"), ("rm", "take one out of a group")):
        p = command(member, action, help_)
        p.add_argument("group_id")
        who = p.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", metavar="ID")
        who.add_argument("--thing", metavar="ID")
        if action == "add":
            p.add_argument("--role", choices=["member", "viewer"], default="member")

    token = kinds.add_parser("token", help="personal access tokens")
    token = token.add_subparsers(dest="action", required=True)
    p = command(token, "create", "create a token for a user; prints it once")
    p.add_argument("--user", required=True, metavar="ID")
    p.add_argument("--name", default="cli")
    p.add_argument("--expires-in", metavar="DURATION", help="e.g. 30m, 24h, 2d (default: never)")
    command(token, "ls", "list live tokens").add_argument("--user", metavar="ID")
    command(token, "revoke", "revoke a token").add_argument("id")


def cmd_admin(args: argparse.Namespace) -> int:
    data = Path(args.data)
    if not (data / "state.sqlite").exists():
        raise CliError(f"{data} is not a node's data directory (no state.sqlite); start a node on it once")
    answer = _through_node(data, args) if _node_running(data) else asyncio.run(_offline(data, args))
    if "error" in answer:
        print(f"edgefiles: {answer['error']}", file=sys.stderr)
        return 2 if answer.get("usage") else 1
    if args.json:
        print(json.dumps(answer["result"], indent=2))
    else:
        for line in answer["lines"]:
            print(line)
    return 0


def _node_running(data: Path) -> bool:
    fd = os.open(data / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


async def _offline(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    from edgefiles.ans.accounts import Accounts
    from edgefiles.ans.registry import Registry
    from edgefiles.node.db import open_db
    from edgefiles.node.identity import load_or_create

    db = await open_db(data / "state.sqlite")
    try:
        registry = Registry(db, load_or_create(data / "node.key"))
        await registry.load()
        return await answer(Accounts(registry), vars(args))
    finally:
        await db.close()


def _through_node(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    request = {k: v for k, v in vars(args).items() if k not in ("func", "data")}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(data / SOCKET_NAME))
            s.sendall(json.dumps(request).encode() + b"\n")
            s.shutdown(socket.SHUT_WR)
            reply = b"".join(iter(lambda: s.recv(65536), b""))
    except OSError as exc:
        raise CliError(f"the node on {data} is running but its admin socket does not answer: {exc}") from None
    return json.loads(reply)


async def answer(accounts: Any, request: dict[str, Any]) -> dict[str, Any]:
    """One admin request (the parsed command line as a dict) against `accounts`."""
    from edgefiles.ans.accounts import AccountError

    action = request.get("action")
    if action == "member":
        action = f"member {request.get('member_action')}"
    handler = HANDLERS.get((request.get("kind"), action))
    if handler is None:
        return {"error": "unknown admin command", "usage": True}
    try:
        result, lines = await handler(accounts, request)
    except AccountError as exc:
        return {"error": str(exc)}
    except UsageError as exc:
        return {"error": str(exc), "usage": True}
    return {"result": result, "lines": lines}


# the commands ---------------------------------------------------------------------------
async def _user_add(accounts: Any, r: dict[str, Any]) -> Result:
    user, _, secret = await accounts.add_user(r["email"], r["org"], r.get("admin", False), r.get("name"))
    out = {"id": user.id, "email": user.email, "name": user.name, "org_id": user.org_id,
           "admin": user.admin, "token": secret}
    return out, [f"user {user.id} {user.email} (org {r['org']}){' admin' if user.admin else ''}",
                 f"token {secret}  (shown once)"]


async def _user_ls(accounts: Any, r: dict[str, Any]) -> Result:
    users = [_user(u) for u in accounts.users()]
    return users, [f"{u['id']}  {u['email']}  org {u['org_id']}{'  admin' if u['admin'] else ''}"
                   for u in users]


async def _user_rm(accounts: Any, r: dict[str, Any]) -> Result:
    user = _user(await accounts.remove_user(r["id"]))
    return user, [f"removed user {user['id']} {user['email']}"]


async def _org_add(accounts: Any, r: dict[str, Any]) -> Result:
    org = await accounts.add_org(r["name"])
    return {"id": org.id, "name": org.name}, [f"org {org.id} {org.name}"]


async def _org_ls(accounts: Any, r: dict[str, Any]) -> Result:
    orgs = [{"id": o.id, "name": o.name} for o in accounts.orgs()]
    return orgs, [f"{o['id']}  {o['name']}" for o in orgs]


async def _token_create(accounts: Any, r: dict[str, Any]) -> Result:
    from edgefiles.ans.clock import now_ms

    expires_at = None
    if r.get("expires_in"):
        try:
            expires_at = now_ms() + int(parse_duration(r["expires_in"]) * 1000)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    token, secret = await accounts.create_token(r["user"], r.get("name") or "cli", [], expires_at)
    out = {"id": token.id, "token": secret, "expires_at": iso(token.expires_at)}
    return out, [f"token {token.id} for user {token.user_id}, expires {out['expires_at'] or 'never'}",
                 f"{secret}  (shown once)"]


async def _token_ls(accounts: Any, r: dict[str, Any]) -> Result:
    tokens = [_token(t) for t in accounts.tokens(r.get("user"))]
    return tokens, [f"{t['id']}  user {t['user_id']}  {t['name']}  expires {t['expires_at'] or 'never'}"
                    for t in tokens]


async def _token_revoke(accounts: Any, r: dict[str, Any]) -> Result:
    from edgefiles.ans.accounts import AccountError

    token = await accounts.revoke_token(r["id"])
    if token is None:
        raise AccountError(f"no live token {r['id']}")
    return _token(token), [f"revoked token {token.id}"]


async def _thing_add(accounts: Any, r: dict[str, Any]) -> Result:
    thing, key = await accounts.add_thing(r["name"], r["org"])
    return {**_thing(thing), "key": key}, [f"thing {thing.id} {thing.name}", f"key {key}  (shown once)"]


async def _thing_ls(accounts: Any, r: dict[str, Any]) -> Result:
    things = [_thing(t) for t in accounts.things()]
    return things, [f"{t['id']}  {t['name']}  org {t['org_id']}" for t in things]


async def _thing_rm(accounts: Any, r: dict[str, Any]) -> Result:
    thing = _thing(await accounts.remove_thing(r["id"]))
    return thing, [f"removed thing {thing['id']} {thing['name']}"]


async def _thing_rotate(accounts: Any, r: dict[str, Any]) -> Result:
    thing, key = await accounts.rotate_thing(r["id"])
    return {**_thing(thing), "key": key}, [f"thing {thing.id} has a new key", f"key {key}  (shown once)"]


async def _group_add(accounts: Any, r: dict[str, Any]) -> Result:
    group = _group(await accounts.add_group(r["name"], r["org"]))
    return group, [f"group {group['id']} {group['name']}"]


async def _group_ls(accounts: Any, r: dict[str, Any]) -> Result:
    groups = [{**_group(g), "members": [_member(m) for m in accounts.members(g.id)]}
              for g in accounts.groups()]
    return groups, [f"{g['id']}  {g['name']}  org {g['org_id']}  {len(g['members'])} members" for g in groups]


async def _group_rm(accounts: Any, r: dict[str, Any]) -> Result:
    group = _group(await accounts.remove_group(r["id"]))
    return group, [f"removed group {group['id']} {group['name']}"]


async def _member_add(accounts: Any, r: dict[str, Any]) -> Result:
    kind, member_id = ("user", r["user"]) if r.get("user") else ("thing", r["thing"])
    member = _member(await accounts.add_member(r["group_id"], kind, member_id, r.get("role") or "member"))
    return member, [f"{kind} {member_id} is a {member['role']} of group {r['group_id']}"]


async def _member_rm(accounts: Any, r: dict[str, Any]) -> Result:
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


HANDLERS: dict[tuple[str, str], Callable[[Any, dict[str, Any]], Any]] = {
    ("user", "add"): _user_add, ("user", "ls"): _user_ls, ("user", "rm"): _user_rm,
    ("org", "add"): _org_add, ("org", "ls"): _org_ls,
    ("token", "create"): _token_create, ("token", "ls"): _token_ls, ("token", "revoke"): _token_revoke,
    ("thing", "add"): _thing_add, ("thing", "ls"): _thing_ls, ("thing", "rm"): _thing_rm,
    ("thing", "rotate"): _thing_rotate,
    ("group", "add"): _group_add, ("group", "ls"): _group_ls, ("group", "rm"): _group_rm,
    ("group", "member add"): _member_add, ("group", "member rm"): _member_rm,
}


# the node's side of the socket ------------------------------------------------------------
async def serve_admin_socket(data: Path, accounts: Any) -> asyncio.AbstractServer:
    """Answer admin requests from processes of this user on `<data>/admin.sock`."""
    path = data / SOCKET_NAME
    path.unlink(missing_ok=True)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not _same_user(writer.get_extra_info("socket")):
                reply: dict[str, Any] = {"error": "the admin socket serves the data directory's owner only"}
            else:
                try:
                    request = json.loads(await reader.read(1 << 20))
                    reply = await answer(accounts, request if isinstance(request, dict) else {})
                except ValueError:
                    reply = {"error": "not a JSON request", "usage": True}
            writer.write(json.dumps(reply).encode())
            await writer.drain()
        finally:
            writer.close()

    old_umask = os.umask(0o177)  # the socket is created 0600: nobody else may even connect
    try:
        return await asyncio.start_unix_server(handle, path=str(path))
    finally:
        os.umask(old_umask)


def _same_user(sock: socket.socket | None) -> bool:
    if sock is None:
        return False
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return uid == os.getuid()
