"""`edgefiles` command line: parses arguments and calls the same code the server uses."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__

CID_EXAMPLES = """examples:
  edgefiles cid ./dist                   the CID `edgefiles add ./dist` will give (a node needs not run)
  edgefiles cid --profile actyx ./dist   the CID an Actyx node gave the same folder
  cat app.js | edgefiles cid -           standard input as one file

Files and folders whose names start with a dot are left out unless --hidden (as Kubo does);
how many were is told on standard error."""


class CliError(Exception):
    """A one-line reason to exit non-zero."""


def check_paths(paths: list[str]) -> None:
    """PATH arguments as `cid`, `add` and `car import` take them: an empty one (an unset
    $DIR) would be read as the current folder, and standard input can be read once."""
    if "" in paths:
        raise CliError("an empty path (an unset variable?); '.' names this folder")
    if paths.count("-") > 1:
        raise CliError("'-' (standard input) can be given once")


def cmd_cid(args: argparse.Namespace) -> int:
    from edgefiles.node.cid import to_str
    from edgefiles.node.localfs import InputRefused, LocalImporter, input_kind
    from edgefiles.node.profiles import get_profile

    check_paths(args.paths)
    importer = LocalImporter(get_profile(args.profile))
    try:
        for raw in args.paths:  # every PATH looked at before any CID is printed, as `add` does
            if raw != "-":
                input_kind(Path(raw))
        for raw in args.paths:
            if raw == "-":  # as `ipfs add` reads standard input
                entry = importer.stream(sys.stdin.buffer)
            else:
                entry = importer.path(Path(raw), hidden=args.hidden)
            print(to_str(entry.cid), flush=True)
    except InputRefused as refused:
        raise CliError(str(refused)) from None
    finally:
        importer.close()
    for note in importer.scanned.notes():
        print(note, file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgefiles",
        description="Content-addressed, replicated file node (Actyx Files API, IPFS CIDs).",
    )
    parser.add_argument("--version", action="version", version=f"edgefiles {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cid = sub.add_parser("cid", help="print the CID of files or folders, offline",
                         description="Print the CID of each PATH, offline, as `ipfs add -r -Q "
                         "--cid-version=1 PATH` would (profile kubo-v1).", epilog=CID_EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    cid.add_argument("--profile", default="kubo-v1", choices=["kubo-v1", "actyx", "unixfs-v1-2025"],
                     help="kubo-v1 (default: ipfs add --cid-version=1), actyx (an Actyx node's CIDs) or "
                     "unixfs-v1-2025 (IPIP-499, 1 MiB chunks)")
    cid.add_argument("--hidden", action="store_true", help="include dotfiles")
    cid.add_argument("paths", nargs="+", metavar="PATH", help="a file or folder; '-' for standard input")
    cid.set_defaults(func=cmd_cid)

    from . import admin, fsck
    from .commands import add_client_commands, add_serve_command

    add_serve_command(sub)
    add_client_commands(sub)
    admin.register(sub)
    fsck.register(sub)
    _tell_each_its_parser(parser)
    return parser


def _tell_each_its_parser(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command's arguments carry its own parser (`_parser`), so that an option it
    does not know is told with its usage, not the top level's."""
    parser.set_defaults(_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _tell_each_its_parser(child)


def _dash_values_joined(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`--token-ttl -5m` as `--token-ttl=-5m`: argparse takes a value that starts with a dash
    for an option, and says the flag "expected one argument", where the value's own check
    tells what is wrong with it. What names an option (`--x`, `--x=1`), `-`, and everything
    after `--` are left as they are; so are abbreviated flags."""
    taking, known = _option_strings(parser)
    out: list[str] = []
    for i, token in enumerate(argv):
        if token == "--":
            return out + argv[i:]
        names_option = token.partition("=")[0] in known or token == "-"
        joined = bool(out) and out[-1] in taking and token.startswith("-") and not names_option
        out.append(f"{out.pop()}={token}" if joined else token)
    return out


def _option_strings(parser: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    """(the option strings that take one value, every option string), of all (sub)commands."""
    taking: set[str] = set()
    known: set[str] = set()
    for action in parser._actions:
        known.update(action.option_strings)
        if action.option_strings and action.nargs is None:
            taking.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child_taking, child_known = _option_strings(child)
                taking |= child_taking
                known |= child_known
    return taking, known


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = _dash_values_joined(parser, sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(argv)
    parser = vars(args).pop("_parser")  # not an argument: commands pass theirs on (admin, as JSON)
    if unknown:  # exits 2, as parse_args would, but with the usage of the command at fault
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.func(args)
    except CliError as exc:
        _end_progress_line()
        print(f"edgefiles: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _end_progress_line()
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop as quietly as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit
        return 141  # 128 + SIGPIPE, what a shell shows for a command ended by a closed pipe


def _end_progress_line() -> None:
    """A bar a client command was drawing ends its line before the error's own is written."""
    client_commands = sys.modules.get(f"{__package__}.client_commands")
    if client_commands is not None:
        client_commands.end_progress_line()


if __name__ == "__main__":
    sys.exit(main())
