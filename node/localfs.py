"""Importing files and folders from the local file system (used by `cid` and `add`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .importer import Emit, Entry, FileBuilder, TreeBuilder, pooled_hasher
from .profiles import Profile

READ_SIZE = 4 << 20


@dataclass
class FolderScan:
    files: list[tuple[list[str], Path]]
    empty_dirs: list[list[str]]
    skipped_hidden: int


def scan_folder(root: Path, hidden: bool) -> FolderScan:
    """Files and empty directories under `root` as path segments, dotfiles skipped unless `hidden`."""
    scan = FolderScan([], [], 0)
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).parts
        if not hidden:
            scan.skipped_hidden += sum(1 for n in dirnames + filenames if n.startswith("."))
            dirnames[:] = [n for n in dirnames if not n.startswith(".")]
            filenames = [n for n in filenames if not n.startswith(".")]
        dirnames.sort()
        for name in sorted(filenames):
            scan.files.append(([*rel, name], Path(dirpath, name)))
        if not dirnames and not filenames and rel:
            scan.empty_dirs.append(list(rel))
    return scan


def read_pieces(path: Path) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        while piece := f.read(READ_SIZE):
            yield piece


class LocalImporter:
    """Computes CIDs of local paths, hashing leaves on all cores."""

    def __init__(self, profile: Profile, emit: Emit | None = None, threads: int | None = None):
        self.profile = profile
        self.emit: Emit = emit or (lambda cid, block: None)
        self._pool = ThreadPoolExecutor(threads or os.cpu_count() or 2)
        self.skipped_hidden = 0

    def close(self) -> None:
        self._pool.shutdown()

    def file(self, path: Path) -> Entry:
        builder = FileBuilder(self.profile, self.emit, pooled_hasher(self._pool))
        for piece in read_pieces(path):
            builder.write(piece)
        return builder.finish()

    def path(self, path: Path, hidden: bool = False) -> Entry:
        if not path.is_dir():
            return self.file(path)
        scan = scan_folder(path, hidden)
        self.skipped_hidden += scan.skipped_hidden
        tree = TreeBuilder(self.profile, self.emit)
        for segments, file_path in scan.files:
            tree.add_file(segments, self.file(file_path))
        for segments in scan.empty_dirs:
            tree.add_dir(segments)
        return tree.finish()
