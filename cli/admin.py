"""`edgefiles admin`: organizations, users and tokens of a node's data directory.

On a stopped node the command opens the data directory itself; on a running one it goes
through the node, over a Unix socket in the data directory that only its owner can use
(`admin.sock`, mode 0600, the caller's uid checked), so changes take effect at once and
replicate from there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import sqlite3
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgefiles.ans.admin import answer

from .main import CliError

SOCKET_NAME = "admin.sock"
log = logging.getLogger("edgefiles")


def register(sub: argparse._SubParsersAction) -> None:
    admin = sub.add_parser("admin", help="manage a node's organizations, users, tokens, things and groups")
    kinds = admin.add_subparsers(dest="kind", required=True, metavar="WHAT")
    add_admin_commands(kinds)
    admin.set_defaults(func=cmd_admin)


def _size(text: str) -> int:
    from .config import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_admin_commands(kinds: argparse._SubParsersAction) -> None:
    def command(kind: argparse._SubParsersAction, name: str, help_: str) -> argparse.ArgumentParser:
        p = kind.add_parser(name, help=help_)
        p.add_argument("--data", default=os.environ.get("EDGEFILES_DATA", "./edgefiles-data"),
                       help="the node's data directory (default: $EDGEFILES_DATA or ./edgefiles-data)")
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
    p = command(org, "quota", "set an organization's Storage API quota (plaintext bytes)")
    p.add_argument("name", help="the organization's name")
    p.add_argument("bytes", type=_size, help="e.g. 10GiB, 500MiB, 1048576")

    thing = kinds.add_parser("thing", help="things (devices) and their keys")
    thing = thing.add_subparsers(dest="action", required=True)
    named_in_org(command(thing, "add", "add a thing; prints its key once"))
    command(thing, "ls", "list things")
    command(thing, "rm", "remove a thing; its key stops working").add_argument("id")
    command(thing, "rotate", "a new key (printed once); the old one stops working").add_argument("id")

    group = kinds.add_parser("group", help="groups of users and things")
    group = group.add_subparsers(dest="action", required=True)
    named_in_org(command(group, "add", "add a group"))
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


def named_in_org(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("--org", required=True, help="the organization's name (created if missing)")


def cmd_admin(args: argparse.Namespace) -> int:
    data = Path(args.data)
    if not (data / "state.sqlite").exists():
        raise CliError(f"{data} is not a node's data directory (no state.sqlite); start a node on it once")
    from edgefiles.node.db import SchemaTooNew

    from .serve import try_lock_data_dir

    lock = try_lock_data_dir(data)  # held while we write: no node may start on it meanwhile
    if lock is None:
        reply = _through_node(data, args)
    else:
        try:
            reply = asyncio.run(_offline(data, args))
        except SchemaTooNew as exc:
            raise CliError(str(exc)) from None
        finally:
            os.close(lock)
    if "error" in reply:
        print(f"edgefiles: {reply['error']}", file=sys.stderr)
        return 2 if reply.get("usage") else 1
    if args.json:
        print(json.dumps(reply["result"], indent=2))
    else:
        for line in reply["lines"]:
            print(line)
    return 0


async def _offline(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    from edgefiles.ans.accounts import Accounts
    from edgefiles.ans.registry import Registry
    from edgefiles.node.db import open_db

    from .serve import node_key

    try:
        db = await open_db(data / "state.sqlite")
    except (sqlite3.DatabaseError, OSError) as exc:
        raise CliError(f"cannot open the node's database in {data}: {exc}") from None
    try:
        registry = Registry(db, node_key(data))
        await registry.load()
        return await answer(Accounts(registry), vars(args))
    finally:
        await db.close()


def _through_node(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    request = {k: v for k, v in vars(args).items() if k not in ("func", "data")}
    try:
        return next(ask_node(data, request, timeout=30))
    except (OSError, ValueError, StopIteration) as exc:
        raise CliError(unreachable(data, exc)) from None


def ask_node(data: Path, request: dict[str, Any], timeout: float | None) -> Iterator[dict[str, Any]]:
    """One request to the running node's admin socket; its answer, one JSON object a line
    (a check sends progress lines before its report). OSError or ValueError when the socket
    does not answer as it should."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(data / SOCKET_NAME))
        s.sendall(json.dumps(request).encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        for line in s.makefile("rb"):
            yield json.loads(line)


def unreachable(data: Path, exc: Exception) -> str:
    return f"the node on {data} is running but its admin socket does not answer: {exc or 'no answer'}"


# the node's side of the socket ------------------------------------------------------------
async def serve_admin_socket(data: Path, accounts: Any, fsck: Any) -> asyncio.AbstractServer | None:
    """Answer admin requests from processes of this user on `<data>/admin.sock`; None (and a
    warning) where no socket can be made there, e.g. a path over the 107 bytes Unix allows:
    the node runs on, and `edgefiles admin` says it cannot reach it. `fsck` (web/fsck_api's
    jobs) runs checks: their progress is streamed, one JSON object a line, then the report."""
    path = data / SOCKET_NAME
    path.unlink(missing_ok=True)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not _same_user(writer.get_extra_info("socket")):
                reply: dict[str, Any] = {"error": "the admin socket serves the data directory's owner only"}
            else:
                try:
                    request = json.loads(await reader.read(1 << 20))
                except ValueError:
                    request = None
                if not isinstance(request, dict):
                    reply = {"error": "not a JSON request", "usage": True}
                elif request.get("kind") == "fsck":
                    reply = await _stream_fsck(fsck.start(bool(request.get("repair"))), writer)
                else:
                    reply = await answer(accounts, request)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass  # the command went away (Ctrl-C): a check it started still runs to its end
        finally:
            writer.close()

    old_umask = os.umask(0o177)  # the socket is created 0600: nobody else may even connect
    try:
        return await asyncio.start_unix_server(handle, path=str(path))
    except OSError as exc:
        log.warning("no admin socket at %s (%s): edgefiles admin cannot reach this node while it runs",
                    path, exc.strerror or exc)
        return None
    finally:
        os.umask(old_umask)


async def _stream_fsck(job: Any, writer: asyncio.StreamWriter) -> dict[str, Any]:
    """Progress lines while the job runs; its report (or failure) as the last line."""
    shown = None
    while not job.changed.is_set():
        now = (job.phase, job.done, job.total)
        if now != shown:
            shown = now
            writer.write(json.dumps({"progress": list(now)}).encode() + b"\n")
            await writer.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.changed.wait(), 0.2)
    if job.report is None:
        return {"error": f"fsck failed on the node: {job.error}"}
    return {"result": job.report.as_json()}


def _same_user(sock: socket.socket | None) -> bool:
    if sock is None:
        return False
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return uid == os.getuid()
