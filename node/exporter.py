"""Reading UnixFS DAGs: path resolution, directory listings, byte ranges in DAG order.

A `DagReader` takes a `get_block(cid) -> bytes` function (verified bytes, or raises) and
does no I/O of its own. It caches small decoded nodes and directory sizes by CID: the same
CID always names the same bytes, and only bytes that passed verification get cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import TypeVar

from . import dagcbor, dagpb, hamt, unixfs
from .cid import DAG_CBOR, DAG_PB, RAW, codec_of, digest_of, is_identity, normalize, to_str
from .protobuf import DecodeError

GetBlock = Callable[[bytes], bytes]
GetStored = Callable[[list[bytes]], "list[bytes | None]"]
Places = dict[bytes, tuple[int, int, int]]  # where a store found blocks (BlockStore.places)
# `GetStored` for blocks on their way out (an answer's body), read where `Places` says when
# it does (no index query per run); a large one may come as a view of the page cache, which
# nothing may keep (`BlockStore.get_many(to_send=True)`)
GetPlaced = Callable[[list[bytes], "Places | None"], "list[bytes | memoryview | None]"]
StoredSizes = Callable[[list[bytes]], dict[bytes, int]]  # sizes of stored blocks, keyed normalized
Laid = tuple[bytes, int, bool]  # a block of a layout: its CID, its size, whether a leaf
Block = tuple[bytes, bytes]  # (CID, its verified bytes)
# a walk's child: CID, where its bytes begin in the file, a leaf's bytes (None: not a leaf)
Child = tuple[bytes, int, "int | None"]
T = TypeVar("T")

CACHE_ENTRIES = 4096
CACHE_MAX_BLOCK = 64 * 1024  # directories and inner file nodes; never leaves full of content
LINKLESS_ENTRIES = 1 << 15  # 8 GiB of 256 KiB leaves; a CID each
# file nodes above the leaves, decoded by walks and layouts: a 1 GiB DAG of 256 KiB leaves has 25
# (~40 KB decoded each), which its CAR decoded anew every time (25 of the layout's 40 ms)
WALKED_ENTRIES = 128
READ_AHEAD = 32  # leaves read ahead of a DAG walk that has a thread pool,
READ_AHEAD_BYTES = 8 << 20  # and of their bytes: what a reader holds at most for a slow client
WINDOW_ITEMS = 4 * READ_AHEAD  # inner nodes, inline bytes and leaves: how far a walk runs ahead
LAYOUT_READ_BYTES = 16 << 20  # inner blocks a layout reads at most: a walk streams larger DAGs
READ_GROUP = 8  # leaves read by one task,
READ_GROUP_BYTES = 2 << 20  # or at least this many bytes of them
# A dag-pb leaf's Tsize is its bytes and ~14 bytes of framing; an inner node's adds its links' (40+ each)
LEAF_FRAMING = 32


class NotFound(Exception):
    """The path does not exist inside the DAG, or a block is missing."""


class NoSuchEntry(NotFound):
    """The path does not exist inside the DAG: a directory read whole lacks the name (not a
    block missing here, which a fetch may yet bring)."""


class NotUnixFS(Exception):
    """A block that is not a UnixFS node we can serve."""


class LayoutTooCostly(Exception):
    """A DAG whose layout would read too many of its blocks (see `DagReader.layout`)."""


class WrongSize(Exception):
    """A file's leaf holding other bytes than its parent says it does."""


class LeafWithLinks(Exception):
    """A block laid out as a leaf, its parent's Tsize for it saying so, that has links: the
    layout lacks the blocks below it (see `DagReader.read_laid`)."""


@dataclass(frozen=True, slots=True)
class Node:
    cid: bytes
    kind: int  # unixfs.FILE, DIRECTORY or HAMT_SHARD (raw leaves and symlinks are FILE)
    size: int  # content bytes for files; 0 for directories (see DagReader.dir_size)
    pb: dagpb.PBNode | None
    meta: unixfs.UnixFSData | None
    raw: bytes | None = None

    @property
    def is_dir(self) -> bool:
        return self.kind in (unixfs.DIRECTORY, unixfs.HAMT_SHARD)

    def size_disagreement(self) -> str | None:
        """How a file node's own fields contradict the size it claims (its data and its
        children's sizes must add up to it), None when they agree: such a file is damaged
        before a byte of it is read."""
        meta, pb = self.meta, self.pb
        if self.kind != unixfs.FILE or pb is None or meta is None or meta.filesize is None:
            return None
        if pb.links and len(meta.blocksizes) != len(pb.links):
            return None  # the leaves' sizes are not told here: they are checked as they are read
        held = len(meta.data or b"") + sum(meta.blocksizes if pb.links else ())
        return None if held == self.size else f"it claims {self.size} bytes and holds {held}"


def _dag_pb_node(cid: bytes, pb: dagpb.PBNode, meta: unixfs.UnixFSData) -> Node:
    if meta.type in (unixfs.FILE, unixfs.RAW_TYPE):
        size = meta.filesize if meta.filesize is not None else len(meta.data or b"")
        return Node(cid, unixfs.FILE, size, pb, meta)
    if meta.type == unixfs.SYMLINK and not pb.links:  # `ipfs add -r` keeps a link as its target path:
        return Node(cid, unixfs.FILE, len(meta.data or b""), pb, meta)  # served as those bytes
    if meta.type in (unixfs.DIRECTORY, unixfs.HAMT_SHARD):
        return Node(cid, meta.type, 0, pb, meta)
    raise NotUnixFS(f"UnixFS type {meta.type} is not served")


class Pieces:
    """Bytes to send in order, as the blocks they were read in: a server writes them in one
    call, where joining them first copied every byte once more, holding the GIL the read
    threads wait for between the blocks they hash."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: list[bytes]):
        self.parts = parts
        self.size = sum(map(len, parts))

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


def _dag_pb(cid: bytes, block: bytes) -> dagpb.PBNode | None:
    """A walked block's links and data; None for a leaf told by its shape, undecoded."""
    if dagpb.is_data_only(block):
        return None
    try:
        return dagpb.decode(block)
    except DecodeError:
        raise NotUnixFS(f"block {cid.hex()} is not valid dag-pb") from None


def _unixfs_for_walk(pb: dagpb.PBNode) -> unixfs.UnixFSData | None:
    """A dag-pb node's UnixFS data, None for none (or none that decodes): a walk of the whole
    DAG ("all") follows such a node's links, a walk of an entity takes it alone (a node no
    entity could be read from, as a raw block; it was a CAR cut short after its header)."""
    try:
        return unixfs.decode(pb.data) if pb.data is not None else None
    except DecodeError:
        return None


def _decode(block: bytes) -> tuple[dagpb.PBNode, unixfs.UnixFSData]:
    try:
        pb = dagpb.decode(block)
        if pb.data is None:
            raise NotUnixFS("dag-pb node without UnixFS data")
        return pb, unixfs.decode(pb.data)
    except DecodeError as exc:
        raise NotUnixFS(str(exc)) from exc


class Unseen(set):
    """A walk's `seen` that holds nothing: each block is given every time the DAG links it
    (a CAR with `dups=y`), where a set gives it once."""

    def __contains__(self, key: object) -> bool:
        return False

    def add(self, key: bytes) -> None:
        pass

    def copy(self) -> Unseen:
        return Unseen()


class _Lru:
    """A small thread-safe LRU map: readers run on several worker threads."""

    def __init__(self, size: int):
        self._size = size
        self._items: OrderedDict[bytes, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: bytes, value: object) -> None:
        with self._lock:
            self._items[key] = value
            if len(self._items) > self._size:
                self._items.popitem(last=False)


class DagReader:
    def __init__(self, get_block: GetBlock, prefetch: Callable[[list[bytes]], None] | None = None,
                 get_stored: GetStored | None = None, stored_sizes: StoredSizes | None = None,
                 get_placed: GetPlaced | None = None):
        self.get_block = get_block
        self.prefetch = prefetch  # told which blocks a read will need next (read-ahead)
        # what a read-ahead reads: blocks at hand (None: not here; the reader fetches it in its
        # turn, so the pool's threads never wait for peers)
        self.get_stored: GetStored = get_stored or (lambda cids: [get_block(cid) for cid in cids])
        self.stored_sizes: StoredSizes = stored_sizes or self._sizes_read
        self.get_placed: GetPlaced = get_placed or (lambda cids, _: self.get_stored(cids))
        self._nodes = _Lru(CACHE_ENTRIES)
        self._dir_sizes = _Lru(CACHE_ENTRIES)
        # dag-pb blocks read once and found to have no links: leaves too big for `_nodes`,
        # which a survey would otherwise read and hash again each time it is asked
        self._linkless = _Lru(LINKLESS_ENTRIES)
        self._walked = _Lru(WALKED_ENTRIES)

    def load(self, cid: bytes) -> Node:
        codec = codec_of(cid)
        if codec == RAW:
            return self._node_of(cid, self.get_block(cid))
        if codec != DAG_PB:
            raise NotUnixFS("unsupported codec")
        return _dag_pb_node(cid, *self._decoded(cid))

    def _node_of(self, cid: bytes, block: bytes) -> Node:
        """`load` of a block already read."""
        codec = codec_of(cid)
        if codec == RAW:
            return Node(cid, unixfs.FILE, len(block), None, None, block)
        if codec != DAG_PB:
            raise NotUnixFS("unsupported codec")
        return _dag_pb_node(cid, *_decode(block))

    def _decoded(self, cid: bytes) -> tuple[dagpb.PBNode, unixfs.UnixFSData]:
        hit = self._nodes.get(cid)
        if hit is not None:
            return hit
        block = self.get_block(cid)
        decoded = _decode(block)
        if len(block) <= CACHE_MAX_BLOCK:
            self._nodes.put(cid, decoded)
        return decoded

    def _shard(self, cid: bytes) -> dagpb.PBNode:
        return self._decoded(cid)[0]

    def entries(self, node: Node) -> Iterator[dagpb.Link]:
        """Directory entries in the directory's own order."""
        assert node.pb is not None
        if node.kind == unixfs.HAMT_SHARD:
            yield from hamt.iter_entries(node.pb, self._shard)
        else:
            yield from node.pb.links

    def child(self, node: Node, name: str) -> Node:
        assert node.pb is not None
        if node.kind == unixfs.HAMT_SHARD:
            link = hamt.find(node.pb, name, self._shard)
        else:
            link = next((lk for lk in node.pb.links if lk.name == name), None)
        if link is None:
            raise NoSuchEntry(name)
        return self.load(link.cid)

    def resolve(self, root: bytes, segments: list[str]) -> Node:
        node = self.load(root)
        for seg in segments:
            if not node.is_dir:
                raise NoSuchEntry(seg)
            node = self.child(node, seg)
        return node

    def dir_size(self, node: Node) -> int:
        """Sum of the sizes of every file below a directory; each folder's summed after those
        in it, with a stack of its own (a folder nested a thousand deep passed Python's
        recursion limit)."""
        sizes: dict[bytes, int] = {}  # of the folders summed here

        def folder_size(cid: bytes) -> int | None:
            return sizes.get(cid, self._dir_sizes.get(cid))

        # a folder, then (once its entries are looked at) their files' bytes and the folders
        # below it: sizes and CIDs only, never a node (a raw leaf's node holds its bytes: a
        # folder of 2,000 small files held 400 MB while its parent was summed)
        stack: list[tuple[Node, tuple[int, list[bytes]] | None]] = [(node, None)]
        while stack:
            current, seen = stack.pop()
            if folder_size(current.cid) is not None:
                continue
            if seen is None:
                files, folders = 0, []
                for link in self.entries(current):
                    sub = self.load(link.cid)
                    if not sub.is_dir:
                        files += sub.size
                    elif folder_size(sub.cid) is None:
                        folders.append(sub)
                    else:
                        files += folder_size(sub.cid) or 0
                stack.append((current, (files, [sub.cid for sub in folders])))
                stack.extend((sub, None) for sub in folders)
                continue
            files, below = seen
            sizes[current.cid] = files + sum(folder_size(cid) or 0 for cid in below)
            self._dir_sizes.put(current.cid, sizes[current.cid])
        return folder_size(node.cid) or 0

    def listing(self, node: Node) -> list[tuple[str, bytes, int, bool]]:
        """(name, cid, size, is_dir) for each entry."""
        out = []
        for link in self.entries(node):
            sub = self.load(link.cid)
            size = self.dir_size(sub) if sub.is_dir else sub.size
            out.append((link.name, link.cid, size, sub.is_dir))
        return out

    def survey(
        self, root: bytes, present: Callable[[list[bytes]], set[bytes]], first_gap: bool = False
    ) -> tuple[bool, int]:
        """(complete, missing bytes) of a DAG: walks every stored node, sums the Tsize of
        subtrees not stored here (a missing root counts 0: its size is not known yet).

        Level by level, so `present` can look a whole level up at once. A dag-pb leaf is
        read once per reader: clients poll a rollout's progress, and content from `ipfs add`
        has nothing but dag-pb leaves."""
        complete, missing = True, 0
        level: list[tuple[bytes, int]] = [(root, 0)]
        surveyed: set[bytes] = set()  # a block linked twice is walked once
        while level:
            level = [(cid, tsize) for cid, tsize in level if not _seen_before(normalize(cid), surveyed)]
            here = present([cid for cid, _ in level])
            below: list[tuple[bytes, int]] = []
            for cid, tsize in level:
                if cid not in here and not is_identity(cid):  # an identity CID holds its block
                    complete, missing = False, missing + tsize
                    if first_gap:
                        return complete, missing
                elif codec_of(cid) == DAG_PB and self._linkless.get(cid) is None:
                    links = self._decoded(cid)[0].links
                    below.extend((link.cid, link.tsize) for link in links)
                    if not links:
                        self._linkless.put(cid, True)
                elif codec_of(cid) == DAG_CBOR:  # its links carry no sizes
                    below.extend((link, 0) for link in dagcbor.links_of(self.get_block(cid)))
            level = below
        return complete, missing

    def read_range(self, node: Node, start: int, end: int, pool: Executor | None = None) -> Iterator[bytes]:
        """Bytes [start, end) of a file, block by block in DAG order, touching only needed
        blocks. With `pool`, the next leaves are read (and verified) on its threads while the
        caller takes the ones before."""
        if pool is None:
            yield from self._pieces(node, start, end, leaves_later=False)  # bytes only
            return
        pieces = self._pieces(node, start, end, leaves_later=True)
        for item in _read_ahead(pieces, len, self.get_stored, pool):
            if isinstance(item, _Ahead):  # the leaf's bytes (all of them, should it not be a leaf)
                span = item.span
                leaf = self._node_of(span.cid, item.block(self.get_block))
                yield from self._pieces(leaf, span.start, span.end, leaves_later=False)
            else:
                yield item

    def spans(self, node: Node, start: int, end: int) -> Iterator[bytes | Span]:
        """Bytes [start, end) of a file in order, laid out: a leaf as the `Span` of it to read
        (`read_spans`), bytes held in inner nodes as they are (inner nodes are read here)."""
        return self._pieces(node, start, end, leaves_later=True)

    def read_spans(self, items: list[bytes | Span], fetch: bool = False,
                   places: Places | None = None) -> Pieces:
        """The bytes of a piece of `spans`, their leaves read and verified: from what is stored
        here alone or, with `fetch`, from peers too (never on a read pool's thread); where
        `places` says, when it does. NotFound: a leaf is not stored here, or has links after all
        (then read it with `fetch`, which reads the blocks below it). WrongSize: a leaf holds
        fewer bytes than its parent says."""
        blocks = iter(self._blocks([item.cid for item in items if isinstance(item, Span)], fetch, places,
                                   to_send=True))
        pieces: list[bytes] = []
        for item in items:
            if not isinstance(item, Span):
                pieces.append(item)
                continue
            leaf = self._node_of(item.cid, next(blocks))
            if not fetch and leaf.pb is not None and leaf.pb.links:
                raise NotFound(f"block {to_str(item.cid)} has links where its parent says it is a leaf")
            pieces.extend(self._pieces(leaf, item.start, item.end, leaves_later=False))
        data = Pieces(pieces)
        if len(data) != sum(map(span_bytes, items)):
            raise WrongSize("a leaf holds fewer bytes than its parent says")
        return data

    def _pieces(self, node: Node, start: int, end: int, leaves_later: bool) -> Iterator[bytes | Span]:
        """The bytes of [start, end) in order; with `leaves_later`, a leaf's bytes as a `Span`
        of it, for the caller to read (inner nodes are read here: small, and cached)."""
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
        wanted = _links_in_range(node.pb.links, self._child_sizes(node), offset, start, end)
        if self.prefetch is not None and len(node.pb.links) > 1:
            self.prefetch([link.cid for link, _, _ in wanted])
        for link, at, size in wanted:
            if leaves_later and _is_leaf(link, size):
                yield Span(link.cid, max(0, start - at), min(size, end - at), max(size, link.tsize))
                continue
            sub = self.load(link.cid)
            yield from self._pieces(sub, max(0, start - at), min(sub.size, end - at), leaves_later)

    def path_blocks(self, root: bytes, segments: list[str]) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """The blocks it takes to verify each step of a path below `root` (directories, the
        HAMT shards and DAG-CBOR nodes on the way), and the CID the path ends at."""
        steps: list[tuple[bytes, bytes]] = []

        def load(cid: bytes) -> bytes:
            block = self.get_block(cid)
            steps.append((cid, block))
            return block

        cid, rest = root, segments
        while rest:
            if codec_of(cid) == DAG_CBOR:  # IPLD pathing: map keys and list indices, to a link
                try:
                    cid, rest = dagcbor.follow(load(cid), rest)
                except LookupError:
                    raise NotFound("/".join(rest)) from None
                continue
            pb, meta = _decode(load(cid))
            if meta.type == unixfs.HAMT_SHARD:
                link = hamt.find(pb, rest[0], lambda shard: dagpb.decode(load(shard)))
            elif meta.type == unixfs.DIRECTORY:
                link = next((lk for lk in pb.links if lk.name == rest[0]), None)
            else:
                link = None
            if link is None:
                raise NotFound(rest[0])
            cid, rest = link.cid, rest[1:]
        return steps, cid

    def blocks(self, root: bytes, pool: Executor | None = None, scope: str = "all",
               byte_range: tuple[int, int] | None = None,
               seen: set[bytes] | None = None) -> Iterator[Block]:
        """Blocks of the DAG under `root`, each once, depth first with links in order (the
        order of a CAR): (the CID as it is linked, its verified bytes). The children of each
        node are named to `prefetch` before they are read; with `pool`, the next leaves are
        read (and verified) on its threads while the caller sends the ones before.

        `scope` (a trustless gateway's `dag-scope`): "all" the whole DAG; "block" the root
        block alone; "entity" what it takes to read a whole file or list a directory (its
        HAMT shards, not its entries). `byte_range` [start, end) of a file: only the blocks
        that hold those bytes. `seen`: blocks already given (by an earlier walk) and skipped
        (`Unseen()`: none is, and a block is given each time it is linked)."""
        seen = set() if seen is None else seen
        if pool is None:
            yield from self._walk([(root, 0, None)], scope, byte_range, seen, seen, False)  # blocks only
            return
        # The walk runs ahead of what is given: it marks what it queued, `seen` what was given.
        walk = self._walk([(root, 0, None)], scope, byte_range, seen, seen.copy(), leaves_later=True)
        for item in _read_ahead(walk, _block_size, self.get_stored, pool):
            if not isinstance(item, _Ahead):
                if _first_time(item[0], seen):  # else given already, below a leaf that was none
                    yield item
                continue
            span, block = item.span, item.block(self.get_block)
            if not _first_time(span.cid, seen):
                continue
            yield span.cid, block
            if scope != "block" and codec_of(span.cid) == DAG_PB:  # its Tsize said leaf: was it?
                below = self._below(span.cid, block, span.start, scope, byte_range)
                yield from self._walk(below[::-1], scope, byte_range, seen, seen, False)

    def layout(self, root: bytes, scope: str = "all", byte_range: tuple[int, int] | None = None,
               seen: set[bytes] | None = None) -> Iterator[Laid]:
        """(CID as linked, its size, whether a leaf) of each block `blocks` gives, in its
        order, from what is stored here alone (NotFound: a block is not). The sizes of a
        node's children are looked up at once; a child is read only when it may have links
        (LayoutTooCostly: more than LAYOUT_READ_BYTES of them). A file's dag-pb leaf, told by
        its parent, whose size is its parent's Tsize for it, claims none; `read_laid` finds out
        whether it has some all the same. (A directory's dag-pb child is read: a Tsize equal
        to its size is no proof, since a directory of empty raw files has one.)"""
        queued = set() if seen is None else seen.copy()
        budget = LAYOUT_READ_BYTES
        levels = [iter(self._with_sizes([(root, 0, None)]))]
        while levels:
            entry = next(levels[-1], None)
            if entry is None:
                levels.pop()
                continue
            (cid, offset, leaf), size = entry
            key = normalize(cid)
            if key in queued:
                continue
            queued.add(key)
            if is_identity(cid):  # virtual: never a block of a CAR, but an inline node's links are
                if scope != "block":
                    below = self._below(cid, digest_of(cid)[1], offset, scope, byte_range)
                    levels.append(iter(self._with_sizes(below)))
                continue
            if size is None:
                raise NotFound("block not stored on this node")
            if codec_of(cid) == RAW or size == leaf:
                yield cid, size, True
                continue
            budget -= size
            if budget < 0:
                raise LayoutTooCostly(f"more than {LAYOUT_READ_BYTES} bytes of inner blocks to read")
            block = self._blocks([cid])[0]
            yield cid, size, False
            if scope != "block":
                levels.append(iter(self._with_sizes(self._below(cid, block, offset, scope, byte_range))))

    def read_laid(self, run: list[Laid], fetch: bool = False,
                  places: Places | None = None) -> list[bytes | memoryview]:
        """The verified blocks of `run` (a piece of a `layout`): from what is stored here
        alone (NotFound: one is gone since) or, with `fetch`, from peers too (never on a read
        pool's thread); where `places` says, when it does. LeafWithLinks: a leaf has links all
        the same."""
        blocks = self._blocks([cid for cid, _, _ in run], fetch, places, to_send=True)
        for (cid, _, leaf), block in zip(run, blocks, strict=True):
            if leaf and codec_of(cid) == DAG_PB and (pb := _dag_pb(cid, block)) is not None and pb.links:
                raise LeafWithLinks(f"block {to_str(cid)} has links where its parent says it is a leaf")
        return blocks

    def _blocks(self, cids: list[bytes], fetch: bool = False, places: Places | None = None,
                to_send: bool = False) -> list[bytes | memoryview]:
        """The verified blocks of `cids`, in one trip to the store (where `places` says, when
        it does): from what is stored here alone (NotFound: one is not) or, with `fetch`, what
        is not from peers (never on a read pool's thread). `to_send`: bytes for an answer's
        body, which may be views of the page cache (`GetPlaced`), else bytes to keep."""
        got = self.get_placed(cids, places) if to_send else self.get_stored(cids)
        blocks = [block if block is not None or not fetch else self.get_block(cid)
                  for cid, block in zip(cids, got, strict=True)]
        if None in blocks:
            raise NotFound("block not stored on this node")
        return blocks  # type: ignore[return-value]  (no None left)

    def _sizes_read(self, cids: list[bytes]) -> dict[bytes, int]:
        """`stored_sizes` for a reader that has no index to look sizes up in."""
        blocks = self.get_stored(cids)
        pairs = zip(cids, blocks, strict=True)
        return {normalize(cid): len(block) for cid, block in pairs if block is not None}

    def _with_sizes(self, children: list[Child]) -> list[tuple[Child, int | None]]:
        """Each child with the size of its block (None: not stored here)."""
        sizes = self.stored_sizes([child[0] for child in children])
        return [(child, sizes.get(normalize(child[0]))) for child in children]

    def _walk(self, stack: list[Child], scope: str, byte_range: tuple[int, int] | None,
              seen: set[bytes], queued: set[bytes], leaves_later: bool) -> Iterator[Block | Span]:
        """`blocks` from a stack of children, its top last, skipping those `seen` or `queued`
        (and queuing each it gives); with `leaves_later`, a leaf as a `Span` of it, for the
        caller to read."""
        while stack:
            cid, offset, leaf = stack.pop()
            key = normalize(cid)
            if key in queued or key in seen:
                continue
            queued.add(key)
            if leaf is not None and leaves_later:
                yield Span(cid, offset, 0, leaf)
                continue
            block = self.get_block(cid)
            if not is_identity(cid):  # a virtual block, which its CID holds: no CAR carries one
                yield cid, block
            if scope != "block":
                children = self._below(cid, block, offset, scope, byte_range)
                if self.prefetch is not None and len(children) > 1:
                    self.prefetch([c for c, _, _ in children])
                stack.extend(reversed(children))

    def _below(self, cid: bytes, block: bytes, offset: int, scope: str,
               byte_range: tuple[int, int] | None) -> list[Child]:
        """The links of a block a walk of `scope` follows: a dag-pb node's, or (all of the DAG
        asked for) a dag-cbor node's. A block without links has none to follow, whatever its
        UnixFS data: a leaf's is not decoded."""
        codec = codec_of(cid)
        if codec == DAG_CBOR:
            return [(link, 0, None) for link in dagcbor.links_of(block)] if scope == "all" else []
        if codec != DAG_PB:
            return []
        cached = self._walked.get(cid)
        if cached is not None:
            pb, meta = cached
        else:
            try:
                pb = _dag_pb(cid, block)
            except NotUnixFS:  # as a dag-cbor block that is no CBOR: hashed right, linking nothing
                return []
            if pb is None or not pb.links:
                return []
            meta = _unixfs_for_walk(pb)
            if meta is not None and meta.type == unixfs.FILE and len(block) <= CACHE_MAX_BLOCK:
                self._walked.put(cid, (pb, meta))
        if scope == "all":  # every link of any dag-pb node
            sizes = meta.blocksizes if meta is not None else ()  # a file's: each link's bytes
            if len(sizes) != len(pb.links):
                return [(link.cid, 0, _leaf(link, None)) for link in pb.links]
            return [(link.cid, 0, _leaf(link, size)) for link, size in zip(pb.links, sizes, strict=True)]
        if meta is None or meta.type in (unixfs.DIRECTORY, unixfs.METADATA, unixfs.SYMLINK):
            return []
        if meta.type == unixfs.HAMT_SHARD:  # its sub-shards; its entries are other entities
            return [(link.cid, 0, None) for link in pb.links if len(link.name) == 2]
        start, end = byte_range if byte_range is not None else (0, 1 << 62)
        sizes = self._child_sizes(Node(cid, unixfs.FILE, 0, pb, meta))
        wanted = _links_in_range(pb.links, sizes, offset + len(meta.data or b""), start, end)
        return [(link.cid, at, _leaf(link, size)) for link, at, size in wanted]

    def _child_sizes(self, node: Node) -> list[int]:
        """File bytes below each link, as the node records them; a node that does not record
        them all (IPFS importers always do) has its children loaded to learn them."""
        assert node.meta is not None and node.pb is not None
        if len(node.meta.blocksizes) == len(node.pb.links):
            return list(node.meta.blocksizes)
        return [self.load(link.cid).size for link in node.pb.links]


def _seen_before(key: bytes, seen: set[bytes]) -> bool:
    """Whether `key` is in `seen`; added to it if not."""
    if key in seen:
        return True
    seen.add(key)
    return False


def _links_in_range(
    links: tuple[dagpb.Link, ...], sizes: list[int], offset: int, start: int, end: int
) -> list[tuple[dagpb.Link, int, int]]:
    """(link, offset of its first byte, its file bytes) of each link of a file node that holds
    bytes of [start, end)."""
    out = []
    for link, size in zip(links, sizes, strict=True):
        if offset >= end:
            break
        if offset + size > start:
            out.append((link, offset, size))
        offset += size
    return out


def _is_leaf(link: dagpb.Link, size: int | None) -> bool:
    """Whether a link points at a leaf, judged without reading it: raw, or (`size`: the file
    bytes below the link) a dag-pb node whose Tsize (its whole subtree) is its bytes and a
    leaf's framing only."""
    return codec_of(link.cid) == RAW or (size is not None and 0 <= link.tsize - size < LEAF_FRAMING)


def _leaf(link: dagpb.Link, size: int | None) -> int | None:
    """The bytes a leaf brings, as far as its parent tells (its Tsize, its size); None for a
    link that is no leaf (see `_is_leaf`)."""
    return max(link.tsize, size or 0) if _is_leaf(link, size) else None


def span_bytes(item: bytes | Span) -> int:
    """The file bytes an item of `spans` brings."""
    return item.end - item.start if isinstance(item, Span) else len(item)


def _first_time(cid: bytes, seen: set[bytes]) -> bool:
    """Whether a walk gives `cid` now for the first time (marked given, then)."""
    key = normalize(cid)
    if key in seen:
        return False
    seen.add(key)
    return True


def _block_size(item: Block) -> int:
    return len(item[1])


@dataclass(slots=True)  # not frozen: a frozen dataclass costs a microsecond per block to make
class Span:
    """Bytes [start, end) of the leaf `cid`, still to be read (a DAG walk's: `start` is where
    the leaf's bytes begin in its file)."""

    cid: bytes
    start: int
    end: int
    weight: int  # the leaf's bytes, as its parent tells: what reading it ahead holds


def _read_ahead(items: Iterator[T | Span], weigh: Callable[[T], int], get_stored: GetStored,
                pool: Executor) -> Iterator[T | _Ahead]:
    """`items` in order, each `Span` as the `_Ahead` that reads its leaf: the leaves of the
    next items (READ_AHEAD leaves, READ_AHEAD_BYTES with the other items' bytes, WINDOW_ITEMS
    items at most) are read on `pool` in groups (one index query and one hand-off per group)
    while the caller takes the ones before. An error while taking items ahead is raised in its
    turn."""
    window: deque[object] = deque()  # items, a leaf's as its _Ahead
    unread: list[_Ahead] = []
    leaves = held = 0
    more = True
    try:
        while True:
            while more and leaves < READ_AHEAD and held < READ_AHEAD_BYTES and len(window) < WINDOW_ITEMS:
                try:
                    item = next(items)
                except StopIteration:
                    more = False
                    break
                except Exception as exc:  # noqa: BLE001  (raised when its turn comes)
                    window.append(_Failed(exc))
                    more = False
                    break
                if isinstance(item, Span):
                    window.append(ahead := _Ahead(item))
                    unread.append(ahead)
                    leaves, held = leaves + 1, held + item.weight
                else:
                    window.append(item)
                    held += weigh(item)
            # whole groups while reads are under way in the window; else the next leaf's too
            for group in _groups(unread, whole_only=more and leaves > len(unread)):
                _read_group(group, get_stored, pool)
            if not window:
                return
            entry = window.popleft()
            if isinstance(entry, _Ahead):
                leaves, held = leaves - 1, held - entry.span.weight
            elif isinstance(entry, _Failed):
                raise entry.error
            else:
                held -= weigh(entry)
            yield entry
    finally:
        for entry in window:
            if isinstance(entry, _Ahead) and entry.read is not None:
                entry.read.cancel()


def _groups(unread: list[_Ahead], whole_only: bool) -> list[list[_Ahead]]:
    """Takes the leaves of `unread` that make groups (READ_GROUP leaves, or READ_GROUP_BYTES
    of them): whole ones only, or (`whole_only` false) the rest too."""
    groups: list[list[_Ahead]] = []
    group: list[_Ahead] = []
    size = 0
    for ahead in unread:
        group.append(ahead)
        size += ahead.span.weight
        if len(group) == READ_GROUP or size >= READ_GROUP_BYTES:
            groups.append(group)
            group, size = [], 0
    if group and not whole_only:
        groups.append(group)
    del unread[: sum(len(g) for g in groups)]
    return groups


def _read_group(group: list[_Ahead], get_stored: GetStored, pool: Executor) -> None:
    task = pool.submit(get_stored, [ahead.span.cid for ahead in group])
    for index, ahead in enumerate(group):
        ahead.read, ahead.index = task, index


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


@dataclass(slots=True)
class _Ahead:
    """A leaf in the read-ahead window, and where its read is under way."""

    span: Span
    read: Future | None = None
    index: int = 0

    def block(self, get_block: GetBlock) -> bytes:
        """The leaf's verified bytes: from its group's read, or read here, in its turn, when
        the group did not bring it (not stored here, or a block of the group failed: whether
        this one did is found out now, in its turn)."""
        data = None
        if self.read is not None:
            try:
                data = self.read.result()[self.index]
            except Exception:  # noqa: BLE001  (read again below: the error, if any, is this leaf's)
                data = None
        return data if data is not None else get_block(self.span.cid)
