"""Reading UnixFS DAGs: path resolution, directory listings, byte ranges in DAG order.

Takes a `get_block(cid) -> bytes` function (verified bytes, or raises); no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from . import dagpb, hamt, unixfs
from .cid import DAG_PB, RAW, codec_of
from .protobuf import DecodeError

GetBlock = Callable[[bytes], bytes]


class NotFound(Exception):
    """The path does not exist inside the DAG, or a block is missing."""


class NotUnixFS(Exception):
    """A block that is not a UnixFS node we can serve."""


@dataclass(frozen=True, slots=True)
class Node:
    cid: bytes
    kind: int  # unixfs.FILE, DIRECTORY or HAMT_SHARD (raw leaves are FILE)
    size: int  # content bytes for files; 0 for directories (see dir_size)
    pb: dagpb.PBNode | None
    meta: unixfs.UnixFSData | None
    raw: bytes | None = None

    @property
    def is_dir(self) -> bool:
        return self.kind in (unixfs.DIRECTORY, unixfs.HAMT_SHARD)


@lru_cache(maxsize=2048)
def _decode(block: bytes) -> tuple[dagpb.PBNode, unixfs.UnixFSData]:
    pb = dagpb.decode(block)
    if pb.data is None:
        raise NotUnixFS("dag-pb node without UnixFS data")
    return pb, unixfs.decode(pb.data)


def load(get_block: GetBlock, cid: bytes) -> Node:
    block = get_block(cid)
    codec = codec_of(cid)
    if codec == RAW:
        return Node(cid, unixfs.FILE, len(block), None, None, block)
    if codec != DAG_PB:
        raise NotUnixFS("unsupported codec")
    try:
        pb, meta = _decode(block)
    except DecodeError as exc:
        raise NotUnixFS(str(exc)) from exc
    if meta.type in (unixfs.FILE, unixfs.RAW_TYPE):
        size = meta.filesize if meta.filesize is not None else len(meta.data or b"")
        return Node(cid, unixfs.FILE, size, pb, meta)
    if meta.type in (unixfs.DIRECTORY, unixfs.HAMT_SHARD):
        return Node(cid, meta.type, 0, pb, meta)
    raise NotUnixFS(f"UnixFS type {meta.type} is not served")


def entries(get_block: GetBlock, node: Node) -> Iterator[dagpb.Link]:
    """Directory entries in the directory's own order."""
    assert node.pb is not None
    if node.kind == unixfs.HAMT_SHARD:
        yield from hamt.iter_entries(node.pb, lambda c: load(get_block, c).pb)
    else:
        yield from node.pb.links


def child(get_block: GetBlock, node: Node, name: str) -> Node:
    assert node.pb is not None
    if node.kind == unixfs.HAMT_SHARD:
        link = hamt.find(node.pb, name, lambda c: load(get_block, c).pb)
    else:
        link = next((lk for lk in node.pb.links if lk.name == name), None)
    if link is None:
        raise NotFound(name)
    return load(get_block, link.cid)


def resolve(get_block: GetBlock, root: bytes, segments: list[str]) -> Node:
    node = load(get_block, root)
    for seg in segments:
        if not node.is_dir:
            raise NotFound(seg)
        node = child(get_block, node, seg)
    return node


def dir_size(get_block: GetBlock, node: Node) -> int:
    """Sum of the sizes of every file below a directory."""
    return _dir_size(get_block, node.cid)


_size_cache: dict[bytes, int] = {}


def _dir_size(get_block: GetBlock, cid: bytes) -> int:
    if cid in _size_cache:
        return _size_cache[cid]
    node = load(get_block, cid)
    total = 0
    for link in entries(get_block, node):
        sub = load(get_block, link.cid)
        total += _dir_size(get_block, sub.cid) if sub.is_dir else sub.size
    if len(_size_cache) > 10000:
        _size_cache.clear()
    _size_cache[cid] = total
    return total


def listing(get_block: GetBlock, node: Node) -> list[tuple[str, bytes, int, bool]]:
    """(name, cid, size, is_dir) for each entry."""
    out = []
    for link in entries(get_block, node):
        sub = load(get_block, link.cid)
        size = dir_size(get_block, sub) if sub.is_dir else sub.size
        out.append((link.name, link.cid, size, sub.is_dir))
    return out


def read_range(get_block: GetBlock, node: Node, start: int, end: int) -> Iterator[bytes]:
    """Bytes [start, end) of a file, block by block in DAG order, touching only needed blocks."""
    if start >= end:
        return
    if node.raw is not None:
        yield node.raw[start:end]
        return
    assert node.meta is not None and node.pb is not None
    offset = 0
    inline = node.meta.data or b""
    if inline:
        if start < len(inline):
            yield inline[start:end]
        offset = len(inline)
    sizes = node.meta.blocksizes
    for i, link in enumerate(node.pb.links):
        size = sizes[i] if i < len(sizes) else None
        if size is not None and offset + size <= start:
            offset += size
            continue
        if offset >= end:
            return
        sub = load(get_block, link.cid)
        size = sub.size
        yield from read_range(get_block, sub, max(0, start - offset), min(size, end - offset))
        offset += size
