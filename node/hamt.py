"""HAMT-sharded UnixFS directories (fanout 256, murmur3-x64-128 first half, big-endian)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import mmh3

from . import dagpb, unixfs
from .cid import DAG_PB, make_cid
from .dagpb import Link

FANOUT = 256
KEY_BYTES = 8


def hash_key(name: str) -> bytes:
    return mmh3.hash64(name.encode(), 0, signed=False)[0].to_bytes(8, "big")


def build(links: list[Link], emit: Callable[[bytes, bytes], None]) -> tuple[bytes, int]:
    """Build the shard tree for directory entries; returns (root CID, cumulative size)."""
    keyed = [(hash_key(link.name), link) for link in links]
    return _build_shard(keyed, 0, emit)


def _build_shard(
    keyed: list[tuple[bytes, Link]], depth: int, emit: Callable[[bytes, bytes], None]
) -> tuple[bytes, int]:
    if depth >= KEY_BYTES:
        raise ValueError("HAMT hash collision deeper than 64 bits")
    slots: dict[int, list[tuple[bytes, Link]]] = {}
    for key, link in keyed:
        slots.setdefault(key[depth], []).append((key, link))
    out: list[Link] = []
    for slot in sorted(slots):
        members = slots[slot]
        prefix = f"{slot:02X}"
        if len(members) == 1:
            link = members[0][1]
            out.append(Link(link.cid, prefix + link.name, link.tsize))
        else:
            cid, tsize = _build_shard(members, depth + 1, emit)
            out.append(Link(cid, prefix, tsize))
    out.sort(key=lambda link: link.name.encode())
    bitmap = sum(1 << slot for slot in slots)
    data = unixfs.encode(
        unixfs.UnixFSData(
            unixfs.HAMT_SHARD,
            data=bitmap.to_bytes((bitmap.bit_length() + 7) // 8, "big"),
            hash_type=unixfs.MURMUR3_128,
            fanout=FANOUT,
        )
    )
    block = dagpb.encode(out, data)
    cid = make_cid(DAG_PB, block)
    emit(cid, block)
    return cid, len(block) + sum(link.tsize for link in out)


def iter_entries(
    node: dagpb.PBNode, get_node: Callable[[bytes], dagpb.PBNode]
) -> Iterator[Link]:
    """Every entry of a sharded directory, in shard order, names without their slot prefix."""
    for link in node.links:
        if len(link.name) == 2:
            yield from iter_entries(get_node(link.cid), get_node)
        else:
            yield Link(link.cid, link.name[2:], link.tsize)


def find(
    node: dagpb.PBNode, name: str, get_node: Callable[[bytes], dagpb.PBNode]
) -> Link | None:
    """The entry called `name`, following the hash path through child shards."""
    key = hash_key(name)
    for depth in range(KEY_BYTES):
        prefix = f"{key[depth]:02X}"
        shard = None
        for link in node.links:
            if link.name == prefix:
                shard = link
            elif link.name == prefix + name:
                return Link(link.cid, name, link.tsize)
        if shard is None:
            return None
        node = get_node(shard.cid)
    return None
