"""Streaming UnixFS importer: bytes in, blocks out through a callback; memory stays bounded.

Pure logic: no disk, no network. `emit(cid, block)` receives every block in creation
order (leaves before the nodes that link them), so a store can append them as they come.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

from . import dagpb, hamt, unixfs
from .cid import DAG_PB, RAW, cid_from_digest, codec_of, make_cid
from .dagpb import Link
from .profiles import Profile
from .protobuf import DecodeError

Emit = Callable[[bytes, bytes], None]


class Digest(Protocol):
    def result(self) -> bytes: ...


SubmitHash = Callable[[bytes], Digest]

HASH_WINDOW = 16  # leaves hashed ahead of the tree, so a thread pool can spread them over cores


class _Done:
    __slots__ = ("value",)

    def __init__(self, value: bytes):
        self.value = value

    def result(self) -> bytes:
        return self.value


def sha256_digest(block: bytes) -> bytes:
    return hashlib.sha256(block).digest()


def hash_now(block: bytes) -> Digest:
    return _Done(sha256_digest(block))


POOL_MIN_BLOCK = 64 * 1024  # below this, handing a block to a thread costs more than hashing it


def pooled_hasher(pool: Executor) -> SubmitHash:
    """Hash large leaves on a thread pool (hashlib releases the GIL), small ones at once."""

    def submit(block: bytes) -> Digest:
        if len(block) < POOL_MIN_BLOCK:
            return hash_now(block)
        return pool.submit(sha256_digest, block)

    return submit


@dataclass(frozen=True, slots=True)
class Entry:
    """A built file or directory: its CID, cumulative DAG size and content bytes."""

    cid: bytes
    tsize: int
    size: int
    is_dir: bool = False


class FileBuilder:
    """Chunks a byte stream and builds the balanced file DAG of a profile.

    Written bytes must not be mutated afterwards: leaves are views into them, not copies.
    """

    def __init__(self, profile: Profile, emit: Emit, submit_hash: SubmitHash = hash_now):
        self._profile = profile
        self._emit = emit
        self._submit = submit_hash
        self._pending: list[bytes | memoryview] = []
        self._pending_len = 0
        self._hashing: deque[tuple[int, bytes | memoryview, Digest]] = deque()
        self._levels: list[list[Entry]] = [[]]
        self._made: list[int] = [0]
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        if not data:
            return
        size = self._profile.chunk_size
        self.size += len(data)
        self._pending.append(data)
        self._pending_len += len(data)
        if self._pending_len < size:
            return
        joined = data if len(self._pending) == 1 else b"".join(self._pending)
        view = memoryview(joined)
        whole = len(view) - len(view) % size
        for i in range(0, whole, size):
            self._add_chunk(view[i : i + size])
        rest = view[whole:]
        self._pending = [bytes(rest)] if rest else []
        self._pending_len = len(rest)

    def finish(self) -> Entry:
        if self._pending_len or self.size == 0:
            self._add_chunk(b"".join(self._pending))
            self._pending, self._pending_len = [], 0
        while self._hashing:
            self._take_leaf()
        if self._made[0] == 1:
            return self._levels[0][0]
        level = 0
        while not (level > 0 and self._made[level] == 1):
            if self._levels[level]:
                self._close_group(level)
            level += 1
        return self._levels[level][0]

    def _add_chunk(self, chunk: bytes | memoryview) -> None:
        block = chunk if self._profile.raw_leaves else _actyx_leaf(chunk)
        self._hashing.append((len(chunk), block, self._submit(block)))
        if len(self._hashing) > HASH_WINDOW:
            self._take_leaf()

    def _take_leaf(self) -> None:
        chunk_len, block, digest = self._hashing.popleft()
        cid = cid_from_digest(RAW if self._profile.raw_leaves else DAG_PB, digest.result())
        self._emit(cid, block)
        self._push(0, Entry(cid, len(block), chunk_len))

    def _push(self, level: int, entry: Entry) -> None:
        if level == len(self._levels):
            self._levels.append([])
            self._made.append(0)
        self._levels[level].append(entry)
        self._made[level] += 1
        if len(self._levels[level]) == self._profile.max_links:
            self._close_group(level)

    def _close_group(self, level: int) -> None:
        children, self._levels[level] = self._levels[level], []
        links = [Link(c.cid, "", c.tsize) for c in children]
        sizes = tuple(c.size for c in children)
        data = unixfs.encode(unixfs.UnixFSData(unixfs.FILE, filesize=sum(sizes), blocksizes=sizes))
        block = dagpb.encode(links, data)
        cid = make_cid(DAG_PB, block)
        self._emit(cid, block)
        self._push(level + 1, Entry(cid, len(block) + sum(c.tsize for c in children), sum(sizes)))


def _actyx_leaf(chunk: bytes | memoryview) -> bytes:
    data = unixfs.encode(unixfs.UnixFSData(unixfs.FILE, data=chunk, filesize=len(chunk)))
    return dagpb.encode([], data)


def import_bytes(profile: Profile, data: bytes, emit: Emit) -> Entry:
    builder = FileBuilder(profile, emit)
    builder.write(data)
    return builder.finish()


class PathConflict(ValueError):
    """Two entries of one upload claim the same path, or a file sits where a directory is."""


class TreeBuilder:
    """Collects built files and empty directories by path, then builds the directory DAG."""

    def __init__(self, profile: Profile, emit: Emit):
        self._profile = profile
        self._emit = emit
        self._root: dict[str, Entry | dict] = {}

    def add_file(self, segments: list[str], entry: Entry) -> None:
        parent = self._parent(segments)
        if isinstance(parent.get(segments[-1]), dict):
            raise PathConflict(f"{'/'.join(segments)!r} is both a file and a directory")
        if segments[-1] in parent:
            raise PathConflict(f"duplicate path {'/'.join(segments)!r}")
        parent[segments[-1]] = entry

    def add_dir(self, segments: list[str]) -> None:
        parent = self._parent(segments)
        existing = parent.setdefault(segments[-1], {})
        if not isinstance(existing, dict):
            raise PathConflict(f"{'/'.join(segments)!r} is both a file and a directory")

    def _parent(self, segments: list[str]) -> dict:
        node = self._root
        for i, seg in enumerate(segments[:-1]):
            child = node.setdefault(seg, {})
            if not isinstance(child, dict):
                raise PathConflict(f"{'/'.join(segments[: i + 1])!r} is both a file and a directory")
            node = child
        return node

    def single_file(self) -> Entry | None:
        """The only file when the tree holds exactly one file and nothing else."""
        node: Entry | dict = self._root
        while isinstance(node, dict):
            if len(node) != 1:
                return None
            node = next(iter(node.values()))
        return node

    def finish(self) -> Entry:
        """The directory DAG, each folder built after those in it, in the order they came,
        with a stack of its own: a folder nested a thousand deep (which Kubo takes) passed
        Python's recursion limit."""
        built: dict[int, Entry] = {}  # by id() of a folder's dict, until its parent takes it
        stack: list[tuple[dict, bool]] = [(self._root, False)]
        while stack:
            tree, its_folders_built = stack.pop()
            if its_folders_built:
                children = {name: built.pop(id(child)) if isinstance(child, dict) else child
                            for name, child in tree.items()}
                built[id(tree)] = build_directory(self._profile, children, self._emit)
            else:
                stack.append((tree, True))
                stack.extend((child, False) for child in reversed(tree.values()) if isinstance(child, dict))
        return built[id(self._root)]


def link_tsize(profile: Profile, entry: Entry) -> int:
    if profile.link_tsize_is_raw_size and not entry.is_dir:
        return entry.size
    return entry.tsize


def build_directory(profile: Profile, children: dict[str, Entry], emit: Emit) -> Entry:
    """One directory level: flat dag-pb, or a HAMT when the profile's rule says so."""
    links = sorted(
        (Link(e.cid, name, link_tsize(profile, e)) for name, e in children.items()),
        key=lambda link: link.name.encode(),
    )
    size = sum(e.size for e in children.values())
    if _needs_hamt(profile, links):
        cid, tsize = hamt.build(links, emit)
        return Entry(cid, tsize, size, is_dir=True)
    block = dagpb.encode(links, DIRECTORY_DATA)
    cid = make_cid(DAG_PB, block)
    emit(cid, block)
    return Entry(cid, len(block) + sum(link.tsize for link in links), size, is_dir=True)


DIRECTORY_DATA = unixfs.encode(unixfs.UnixFSData(unixfs.DIRECTORY))


def _needs_hamt(profile: Profile, links: list[Link]) -> bool:
    if profile.hamt_rule == "estimate":
        estimate = sum(len(link.name.encode()) + len(link.cid) for link in links)
        return estimate >= profile.hamt_threshold
    if profile.hamt_rule == "block-bytes":
        return len(dagpb.encode(links, DIRECTORY_DATA)) > profile.hamt_threshold
    return False


class NotResumable(ValueError):
    """The file was not built the way this profile builds files: import it whole instead."""


def resume_file(
    profile: Profile, root: bytes, get_block: Callable[[bytes], bytes], emit: Emit
) -> FileBuilder:
    """A FileBuilder in the state it had just before finishing the file at `root`, so that
    writing more and finishing gives the CID a fresh import of the longer file would give.

    Full leaves are reused by reference (their CIDs and sizes come from the links above
    them); only inner nodes and the last, partial leaf are read. Appending therefore costs
    the appended bytes plus about one block read per `max_links` leaves, not the file size.
    """
    try:
        leaves = _leaf_entries(root, get_block, profile)
    except DecodeError as exc:
        raise NotResumable(f"not a balanced file DAG: {exc}") from None
    chunk = profile.chunk_size
    if any(e.size != chunk for e in leaves[:-1]) or leaves[-1].size > chunk:
        raise NotResumable("the file was chunked differently")
    builder = FileBuilder(profile, emit)
    last = leaves[-1]
    full = leaves if last.size == chunk else leaves[:-1]
    for entry in full:
        builder._push(0, entry)
    builder.size = len(full) * chunk
    if last.size != chunk:
        builder.write(_leaf_data(get_block(last.cid), profile))
    return builder


def _leaf_entries(root: bytes, get_block: Callable[[bytes], bytes], profile: Profile) -> list[Entry]:
    """Every leaf of a balanced file DAG, left to right, as Entries; leaves are not read (all
    leaves of a balanced DAG sit at the same depth, found along the leftmost path)."""
    depth, cid = 0, root
    while not _is_leaf(cid, get_block):
        cid = dagpb.decode(get_block(cid)).links[0].cid
        depth += 1
    if depth == 0:
        block = get_block(root)
        return [Entry(root, len(block), len(_leaf_data(block, profile)))]
    level = [root]
    for _ in range(depth - 1):
        level = [link.cid for cid in level for link in dagpb.decode(get_block(cid)).links]
    out = []
    for cid in level:
        node = dagpb.decode(get_block(cid))
        sizes = unixfs.decode(node.data or b"").blocksizes
        if len(sizes) != len(node.links):
            raise NotResumable("an inner node without a size for each child")
        out.extend(Entry(link.cid, link.tsize, size) for link, size in zip(node.links, sizes, strict=True))
    return out


def _is_leaf(cid: bytes, get_block: Callable[[bytes], bytes]) -> bool:
    return codec_of(cid) == RAW or not dagpb.decode(get_block(cid)).links


def _leaf_data(block: bytes, profile: Profile) -> bytes:
    if profile.raw_leaves:
        return block
    return unixfs.decode(dagpb.decode(block).data or b"").data or b""
