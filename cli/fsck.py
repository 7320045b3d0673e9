"""`edgefiles fsck`: check a node's store, and with `--repair` mend it.

On a stopped node the command opens the data directory itself; on a running one the node
does the check (so repairs can fetch from its swarm), asked over the owner-only admin
socket, which streams the progress back. Exit status: 0 clean, 1 problems, 2 could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from .admin import ask_node, unreachable
from .client_commands import Progress

UNITS = {"blocks": None, "dags": "DAGs", "packs": "packs", "sqlite": "checks", "repair": "steps"}
CLEAN, PROBLEMS, CANNOT_RUN = 0, 1, 2


class CannotRun(Exception):
    """fsck could not look at the store at all."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fsck", help="check a node's store (blocks against their CIDs, DAGs complete, the database)",
        description="Read every block back and hash it against its CID, walk every pinned DAG and "
                    "every name's target for missing blocks, run SQLite's integrity check and find "
                    "pack bytes nothing points to. Exit status: 0 clean, 1 problems found (or left "
                    "after --repair), 2 the check could not run. Works on a running node too.")
    p.add_argument("--data", default=os.environ.get("EDGEFILES_DATA", "./edgefiles-data"),
                   help="the node's data directory (default: $EDGEFILES_DATA or ./edgefiles-data)")
    p.add_argument("--repair", action="store_true",
                   help="drop damaged blocks, fetch missing ones from swarm members (running node), "
                        "give unreferenced pack bytes back to the disk (each pack holding some, or a "
                        "dropped block, is rewritten: up to 1 GiB copied per pack); then check again")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="never draw a progress bar")
    p.set_defaults(func=cmd_fsck)


def cmd_fsck(args: argparse.Namespace) -> int:
    bar = Progress(0, not args.no_progress, least=0)

    def show(phase: str, done: int, total: int) -> None:
        bar.unit = UNITS.get(phase, "")
        bar.update(done, total, f"{phase:<7}")

    try:
        report = check(Path(args.data), args.repair, show)
    except Exception as exc:  # whatever stopped it, the status says "could not run", not "problems"
        bar.close()
        reason = str(exc) if isinstance(exc, CannotRun) else f"{type(exc).__name__}: {exc}"
        print(f"edgefiles fsck: {reason}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "error": reason}))
        return CANNOT_RUN
    bar.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(summary(report))
    return CLEAN if report["ok"] else PROBLEMS


def check(data: Path, repair: bool, show: Any) -> dict[str, Any]:
    if not (data / "state.sqlite").exists():
        raise CannotRun(f"{data} is not a node's data directory (no state.sqlite)")
    from .serve import try_lock_data_dir

    lock = try_lock_data_dir(data)  # held while we check: no node may start on it meanwhile
    if lock is None:
        return _through_node(data, repair, show)
    try:
        return asyncio.run(_offline(data, repair, show))
    except (sqlite3.DatabaseError, OSError) as exc:
        raise CannotRun(f"cannot open the store in {data}: {exc}") from None
    finally:
        os.close(lock)


async def _offline(data: Path, repair: bool, show: Any) -> dict[str, Any]:
    from edgefiles.ans.names import Names
    from edgefiles.node.core import Core, CoreSettings
    from edgefiles.node.db import SchemaTooNew
    from edgefiles.node.identity import load_or_create
    from edgefiles.node.profiles import get_profile

    if not (data / "node.key").exists():  # fsck looks; it does not make a node of a folder
        raise CannotRun(f"{data} has no node.key")
    try:
        core = await Core.open(CoreSettings(data, get_profile("kubo-v1")), load_or_create(data / "node.key"))
    except SchemaTooNew as exc:
        raise CannotRun(str(exc)) from None
    try:
        names = await Names.open(core)
        return (await core.fsck(names.targets(), repair, show)).as_json()
    finally:
        await core.close()


def _through_node(data: Path, repair: bool, show: Any) -> dict[str, Any]:
    """Ask the running node; its progress lines are drawn as they come."""
    try:
        for message in ask_node(data, {"kind": "fsck", "repair": repair}, timeout=None):
            if "progress" in message:
                show(*message["progress"])
            elif "result" in message:
                return message["result"]
            else:
                raise CannotRun(message.get("error", "the node gave no report"))
    except (OSError, ValueError) as exc:
        raise CannotRun(unreachable(data, exc)) from None
    raise CannotRun(f"the node on {data} stopped answering before the check was done")


def summary(report: dict[str, Any]) -> str:
    lines = [f"{report['blocks']} blocks ({report['bytes'] / 2**20:.1f} MiB) hashed, "
             f"{report['roots_checked']} pinned or named DAGs walked, {report['packs']} packs, "
             f"{report['seconds']:.1f} s: {'clean' if report['ok'] else 'PROBLEMS FOUND'}"]
    if report["sqlite"] != ["ok"]:
        lines += ["database integrity check:", *(f"  {line}" for line in report["sqlite"])]
    for key, what in (("corrupt", "blocks whose bytes do not match their CID"),
                      ("missing", "blocks pinned DAGs or names need and the store lacks"),
                      ("names_incomplete", "names whose target is incomplete")):
        if report[key]:
            lines += [f"{len(report[key])} {what}:", *(f"  {item}" for item in report[key][:50])]
            if len(report[key]) > 50:
                lines.append(f"  ... and {len(report[key]) - 50} more (--json lists all)")
    if report["rows_past_end"]:
        lines.append(f"{report['rows_past_end']} index rows point past the end of their pack")
    if report["unreferenced_bytes"]:
        lines.append(f"{report['unreferenced_bytes'] / 2**20:.2f} MiB of pack bytes nothing points to "
                     "(not a problem; --repair gives them back)")
    repaired = report.get("repaired")
    if repaired:
        fetched, reclaimed = repaired["fetched_bytes"] / 2**20, repaired["reclaimed_bytes"] / 2**20
        lines.append(f"repair: dropped {repaired['dropped']} damaged blocks, fetched {fetched:.1f} MiB, "
                     f"gave {reclaimed:.2f} MiB back to the disk")
    return "\n".join(lines)
