"""A UnixFS DAG, as its blocks come (a CAR), turned into the file tree it holds.

`TreeUnpacker` takes verified (CID, block) pairs and gives back what to do to a folder:
make a folder, make a file of a size, write bytes at an offset of a file, copy bytes one file
holds already to another. It does no I/O. A block's place in the tree is known from the
blocks above it, which a CAR in DAG order (each block after the first one linking to it, as
a node exports them) gives first; a block the DAG holds twice comes once (a CAR without
duplicates): where it lands a second time, it is copied from where it landed first (a
leaf), or laid out again from memory (a directory, or a file's inner node: small).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from . import dagpb, unixfs
from .cid import DAG_PB, RAW, codec_of, digest_of, is_identity, normalize, to_str
from .protobuf import DecodeError

Path = tuple[str, ...]  # segments below the tree's root; () is the root


@dataclass(frozen=True, slots=True)
class MakeDir:
    path: Path


@dataclass(frozen=True, slots=True)
class MakeFile:
    path: Path
    size: int


@dataclass(frozen=True, slots=True)
class WriteAt:
    path: Path
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class CopyRange:
    """`length` bytes at `source_offset` of `source` (written already), to `offset` of `path`."""
    source: Path
    source_offset: int
    length: int
    path: Path
    offset: int


Action = MakeDir | MakeFile | WriteAt | CopyRange


class NotATree(Exception):
    """The blocks do not make a UnixFS tree: a block out of place or not UnixFS, a name that
    could climb out of the folder, sizes that disagree, or blocks missing at the end."""


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a block's content goes: as the entry at `path` (a file or folder), as a part of
    the file at `path` from `offset`, or as a shard of the sharded folder at `path`."""
    kind: str  # ENTRY, PART or SHARD
    path: Path
    offset: int = 0
    length: int | None = None  # a part's: the size its parent says it has


ENTRY, PART, SHARD = "entry", "part", "shard"


@dataclass
class _File:
    size: int
    written: int = 0


@dataclass
class TreeUnpacker:
    root: bytes
    check_name: Callable[[str], object] | None = None  # raises for a name that must not be a path
    _expected: dict[bytes, list[_Target]] = field(default_factory=dict)
    _leaves: dict[bytes, tuple[Path, int, int]] = field(default_factory=dict)  # where each landed first
    _inner: dict[bytes, bytes] = field(default_factory=dict)  # blocks with links, kept to lay out again
    _files: dict[Path, _File] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._out: list[Action] = []
        self._place(self.root, _Target(ENTRY, ()))

    def start(self) -> list[Action]:
        """What the root's place alone gives (an identity root holds its block)."""
        return self._taken()

    def feed(self, cid: bytes, block: bytes) -> list[Action]:
        """The actions a verified block gives."""
        targets = self._expected.pop(normalize(cid), None)
        if targets is None:
            raise NotATree(f"block {to_str(cid)} comes before any block linking to it, or is not the DAG's")
        for target in targets:
            self._lay_out(cid, block, target)
        return self._taken()

    def finish(self) -> None:
        if self._expected:
            raise NotATree(f"{len(self._expected)} blocks of the DAG never came")
        short = [path for path, file in self._files.items() if file.written != file.size]
        if short:
            raise NotATree(f"{'/'.join(short[0])} holds other bytes than its size says")

    def _taken(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def _place(self, cid: bytes, target: _Target) -> None:
        """`cid` goes to `target`: now, when its block came already (or is in the CID), else
        when it comes. Breadth-first with a queue: a block laid out again may place many."""
        queue = deque([(cid, target)])
        while queue:
            cid, target = queue.popleft()
            key = normalize(cid)
            if key in self._leaves:  # written already: copied from where it landed
                source, at, length = self._leaves[key]
                self._piece(target, length, CopyRange(source, at, length, target.path, target.offset))
            elif key in self._inner or is_identity(cid):
                queue.extend(self._expand(cid, self._inner.get(key) or digest_of(cid)[1], target))
            else:
                self._expected.setdefault(key, []).append(target)

    def _lay_out(self, cid: bytes, block: bytes, target: _Target) -> None:
        for child in self._expand(cid, block, target):
            self._place(*child)

    def _expand(self, cid: bytes, block: bytes, target: _Target) -> list[tuple[bytes, _Target]]:
        """The actions of `block` at `target`, and the places of the blocks it links to."""
        codec = codec_of(cid)
        if codec == RAW:
            return self._leaf(cid, block, target)
        if codec != DAG_PB:
            raise NotATree(f"block {to_str(cid)} is neither dag-pb nor raw")
        try:
            pb = dagpb.decode(block)
            meta = unixfs.decode(pb.data) if pb.data is not None else None
        except DecodeError:
            meta = None
        if meta is None:
            raise NotATree(f"block {to_str(cid)} is not UnixFS")
        if meta.type in (unixfs.DIRECTORY, unixfs.HAMT_SHARD):
            self._inner[normalize(cid)] = block
            return self._folder(pb, meta, target)
        symlink = meta.type == unixfs.SYMLINK and not pb.links  # its target's path, as the node serves it
        if meta.type not in (unixfs.FILE, unixfs.RAW_TYPE) and not symlink:
            raise NotATree(f"block {to_str(cid)} is UnixFS type {meta.type}, which holds no file")
        if not pb.links:
            return self._leaf(cid, meta.data or b"", target, meta.filesize)
        self._inner[normalize(cid)] = block
        return self._file(pb, meta, target)

    def _leaf(self, cid: bytes, data: bytes, target: _Target, claimed: int | None = None) -> list:
        self._piece(target, len(data), WriteAt(target.path, target.offset, data), claimed)
        self._leaves.setdefault(normalize(cid), (target.path, target.offset, len(data)))
        return []

    def _piece(self, target: _Target, length: int, action: WriteAt | CopyRange,
               claimed: int | None = None) -> None:
        """A leaf's `length` bytes at `target`, by `action`: a whole file (of `claimed` bytes,
        when its node says) or a part of one."""
        if target.kind == SHARD:
            raise NotATree(f"a file's block is linked as a shard at {'/'.join(target.path)}")
        if target.kind == ENTRY:
            self._new_file(target.path, length if claimed is None else claimed)
        _check_part(target, length)
        self._write(target.path, target.offset, length)
        self._out.append(action)

    def _file(self, pb: dagpb.PBNode, meta: unixfs.UnixFSData, target: _Target) -> list:
        if target.kind == SHARD:
            raise NotATree(f"a file is linked as a shard at {'/'.join(target.path)}")
        if len(meta.blocksizes) != len(pb.links):
            raise NotATree(f"a node of {'/'.join(target.path)} does not tell its parts' sizes")
        inline = meta.data or b""
        held = len(inline) + sum(meta.blocksizes)
        _check_part(target, held)
        if target.kind == ENTRY:
            self._new_file(target.path, meta.filesize if meta.filesize is not None else held)
        if inline:
            self._write(target.path, target.offset, len(inline))
            self._out.append(WriteAt(target.path, target.offset, inline))
        at, parts = target.offset + len(inline), []
        for link, size in zip(pb.links, meta.blocksizes, strict=True):
            parts.append((link.cid, _Target(PART, target.path, at, size)))
            at += size
        return parts

    def _folder(self, pb: dagpb.PBNode, meta: unixfs.UnixFSData, target: _Target) -> list:
        if target.kind == PART:
            raise NotATree(f"a folder is linked as part of the file {'/'.join(target.path)}")
        if target.kind == ENTRY:
            self._out.append(MakeDir(target.path))
        if meta.type == unixfs.DIRECTORY:
            return [(link.cid, _Target(ENTRY, (*target.path, self._named(link.name))))
                    for link in pb.links]
        prefix = len(f"{(meta.fanout or 256) - 1:X}")  # a link's name: the slot, then the entry's name
        return [(link.cid, _Target(SHARD, target.path)) if len(link.name) == prefix
                else (link.cid, _Target(ENTRY, (*target.path, self._named(link.name[prefix:]))))
                for link in pb.links]

    def _named(self, name: str) -> str:
        if self.check_name is not None:
            try:
                self.check_name(name)  # type: ignore[operator]
            except Exception as exc:  # noqa: BLE001  (the checker's own refusal, told as ours)
                raise NotATree(f"unsafe name {name!r} in the DAG: {exc}") from None
        return name

    def _new_file(self, path: Path, size: int) -> None:
        if path in self._files:
            raise NotATree(f"{'/'.join(path)} is named twice")
        self._files[path] = _File(size)
        self._out.append(MakeFile(path, size))

    def _write(self, path: Path, offset: int, length: int) -> None:
        file = self._files.get(path)
        if file is None or offset + length > file.size:
            raise NotATree(f"bytes past the end of {'/'.join(path)} (its size: {file.size if file else 0})")
        file.written += length


def _check_part(target: _Target, length: int) -> None:
    """A part of a file holds the bytes its parent says: parts that overlap or leave gaps
    could add up to the file's size all the same."""
    if target.kind == PART and target.length is not None and length != target.length:
        raise NotATree(f"a part of {'/'.join(target.path)} holds {length} bytes where its parent says "
                       f"{target.length}")
