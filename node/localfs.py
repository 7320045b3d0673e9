"""Importing files and folders from the local file system (used by `cid` and `add`)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .importer import Emit, Entry, FileBuilder, TreeBuilder, pooled_hasher
from .profiles import Profile

READ_SIZE = 4 << 20
FOLDER, FILE, STREAM = "folder", "file", "stream"


class InputRefused(Exception):
    """A PATH that is not imported as given (a link out of its folder, say): the one-line
    reason, naming what is at fault. Nothing of that PATH is imported."""


@dataclass
class FolderScan:
    files: list[tuple[list[str], Path]]
    empty_dirs: list[list[str]]
    skipped_hidden: int = 0
    followed_links: int = 0
    skipped: list[str] = field(default_factory=list)  # loops, dangling links, sockets...

    def add_counts(self, other: FolderScan) -> None:
        self.skipped_hidden += other.skipped_hidden
        self.followed_links += other.followed_links
        self.skipped.extend(other.skipped)

    def notes(self) -> list[str]:
        """What a user should hear about the walk: skipped dotfiles, followed links, oddities."""
        out = [f"skipped: {reason}" for reason in self.skipped]
        if self.skipped_hidden:
            hidden = counted(self.skipped_hidden, "hidden entry", "hidden entries")
            out.append(f"skipped {hidden} (use --hidden to include them)")
        if self.followed_links:
            links = counted(self.followed_links, "symbolic link")
            out.append(f"followed {links} (their targets' content is stored)")
        return out


def counted(n: int, thing: str, things: str | None = None) -> str:
    """`1 thing`, `2 things` (`things` when the plural is not thing + s)."""
    return f"{n} {thing if n == 1 else things or thing + 's'}"


def scan_folder(root: Path, hidden: bool) -> FolderScan:
    """Files and empty directories under `root` as path segments, dotfiles skipped unless `hidden`.

    Symbolic links are followed: their target's content is stored, as `cp -L` would copy it,
    where Kubo stores a link as a symlink node, which a browser asking the gateway for it gets
    no content from. A link to something outside `root` is refused (InputRefused): what is
    added is the folder given, never /etc or a home folder a link points to. A link back into
    a folder being walked, a dangling link or a special file is skipped and reported.
    """
    scan = FolderScan([], [])
    top = os.path.realpath(root)
    _walk(root, scan, hidden, top)
    return scan


def _check_link(link: Path, top: str) -> None:
    """Refuse a link to something that is neither `top` nor inside it (a dangling link gives
    nothing away: it is skipped as the walk finds it)."""
    target = os.path.realpath(link)
    outside = target != top and not target.startswith(top.rstrip(os.sep) + os.sep)
    if outside and os.path.exists(target):
        raise InputRefused(f"{link}: a symbolic link to {target}, outside the folder being added")


def input_kind(path: Path) -> str:
    """What a PATH given on the command line is read as: FOLDER, FILE or STREAM (read to its
    end: a pipe, such as `<(...)`, or a file whose size says 0, as those of /proc do while
    they hold bytes). InputRefused when it cannot be read, or is a device or a socket: Kubo
    fails the whole add then, and so do we, rather than leave it out."""
    try:
        look = path.stat()
    except FileNotFoundError:
        raise InputRefused(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise InputRefused(f"{path}: {exc.strerror}") from None
    if stat.S_ISDIR(look.st_mode):
        return FOLDER
    if not stat.S_ISREG(look.st_mode) and not stat.S_ISFIFO(look.st_mode):
        raise InputRefused(f"{path}: not a regular file or folder")
    _check_readable(path)
    return FILE if stat.S_ISREG(look.st_mode) and look.st_size else STREAM


def _check_readable(path: Path) -> None:
    if not os.access(path, os.R_OK):
        raise InputRefused(f"{path}: cannot read this file: permission denied")


def _check_utf8(path: Path) -> None:
    """A folder's DAG names its entries in UTF-8: a name of other bytes has no name there."""
    try:
        path.name.encode()
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise InputRefused(f"{shown}: the name is not UTF-8, as names in a folder's CID must be") from None


def _listing(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError as exc:
        raise InputRefused(f"{folder}: cannot list this folder: {exc.strerror}") from None


def _mode_in_folder(path: Path) -> int | None:
    """The mode of what `path` is or links to; None for a dangling link or a loop of links."""
    try:
        return path.stat().st_mode
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) or exc.errno == errno.ELOOP:
            return None
        raise InputRefused(f"{path}: {exc.strerror}") from None


@dataclass
class _Folder:
    """A folder of a walk, as far as its entries are gone through."""
    path: Path
    real: str  # its path with every link resolved
    rel: list[str]
    names: Iterator[str]
    kept: int = 0  # entries taken (files and folders): none, and it is an empty folder


def _walk(root: Path, scan: FolderScan, hidden: bool, top: str) -> None:
    """Depth first, in listing order, with a stack of its own: a folder nested a thousand deep
    (which Kubo adds) passed Python's recursion limit."""
    stack = [_opened(root, top, [], scan, hidden)]  # a folder and those above it
    while stack:
        folder = stack[-1]
        name = next(folder.names, None)
        if name is None:
            stack.pop()
            if folder.kept == 0 and folder.rel:
                scan.empty_dirs.append(folder.rel)
            continue
        path = folder.path / name
        _check_utf8(path)
        linked = path.is_symlink()
        if linked:
            _check_link(path, top)
        mode = _mode_in_folder(path)
        if mode is not None and stat.S_ISDIR(mode):
            # only a link can lead back up; resolving each folder's path made a deep walk quadratic
            real = os.path.realpath(path) if linked else os.path.join(folder.real, name)
            if linked and any(above.real == real for above in stack):  # a loop
                scan.skipped.append(f"{path}: link back into a parent folder")
                continue
            stack.append(_opened(path, real, [*folder.rel, name], scan, hidden))
        elif mode is not None and stat.S_ISREG(mode):
            _check_readable(path)
            scan.files.append(([*folder.rel, name], path))
        elif mode is not None and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
            raise InputRefused(f"{path}: not a regular file or folder (a device)")
        else:  # a socket or a pipe holds nothing of the folder's; a dangling link, nothing at all
            scan.skipped.append(f"{path}: not a regular file or folder (or a dangling link)")
            continue
        folder.kept += 1
        scan.followed_links += linked  # a link skipped above was not followed


def _opened(path: Path, real: str, rel: list[str], scan: FolderScan, hidden: bool) -> _Folder:
    names = _listing(path)
    if not hidden:
        scan.skipped_hidden += sum(1 for n in names if n.startswith("."))
        names = [n for n in names if not n.startswith(".")]
    return _Folder(path, real, rel, iter(names))


def read_pieces(stream: BinaryIO) -> Iterator[bytes]:
    while piece := stream.read(READ_SIZE):
        yield piece


class LocalImporter:
    """Computes CIDs of local paths, hashing leaves on all cores."""

    def __init__(self, profile: Profile, emit: Emit | None = None, threads: int | None = None):
        self.profile = profile
        self.emit: Emit = emit or (lambda cid, block: None)
        self._pool = ThreadPoolExecutor(threads or os.cpu_count() or 2)
        self.scanned = FolderScan([], [])

    def close(self) -> None:
        self._pool.shutdown()

    def file(self, path: Path) -> Entry:
        try:
            with open(path, "rb", buffering=0) as f:
                return self.stream(f)
        except OSError as exc:  # unreadable since it was looked at, or a failing disk
            raise InputRefused(f"{path}: cannot read this file: {exc.strerror}") from None

    def stream(self, stream: BinaryIO) -> Entry:
        """The file whose bytes `stream` gives until its end (standard input, say)."""
        builder = FileBuilder(self.profile, self.emit, pooled_hasher(self._pool))
        for piece in read_pieces(stream):
            builder.write(piece)
        return builder.finish()

    def path(self, path: Path, hidden: bool = False) -> Entry:
        if input_kind(path) != FOLDER:  # a file, or a pipe: either is read to its end
            return self.file(path)
        scan = scan_folder(path, hidden)
        self.scanned.add_counts(scan)
        tree = TreeBuilder(self.profile, self.emit)
        for segments, file_path in scan.files:
            tree.add_file(segments, self.file(file_path))
        for segments in scan.empty_dirs:
            tree.add_dir(segments)
        return tree.finish()
