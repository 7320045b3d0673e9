"""Which peer is asked for which block, and when: the Bitswap client's decisions, pure.

The planner is fed events (a want added or dropped, a peer's HAVE or DONT_HAVE, a block
received, a lying peer, peers joining and leaving, peers asking us for blocks) and the
time `now`; it answers with the want-list entries to send to each peer (`take_outgoing`).
It knows no trio, no store and no sockets, so tests drive it directly.

How a want is asked: first as want-have of every block peer; the block is then asked
(want-block) of the peer that has it with the fewest of our requests outstanding, so the
load spreads to whichever nodes already hold a block. At most `PEER_WINDOW` want-blocks
are outstanding at one peer; the rest wait for room. A peer that sends bytes matching no
CID we want is lying: its outstanding requests move to other peers and it is asked last.

Rollout shares: when several swarm members fetch the same large DAG at once, each leaf is
one fetcher's share (by its CID, on a ring of the fetchers in peer id order, which every
fetcher computes from who asked it for the root). A leaf that is another fetcher's share
is "parked" there: asked without DONT_HAVE, so the owner sends it once it has fetched it,
and the node that has everything serves each leaf about once. Nothing waits on an owner
that cannot answer: a parked want moves on when the owner leaves, when the ring changes
(at once, not when its cache expires), and when the owner has sent us nothing for a few of
its response times, as when it counts the leaf as someone else's share.
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from itertools import islice

from edgefiles.node.cid import DAG_PB, codec_of

from . import message as bm

Peer = Hashable

BLOCK_TIMEOUT = 10.0  # a requested block that does not come in time is asked elsewhere
PARK_TIMEOUT = 8.0  # a parked want moves on after this long, however busy its owner is
PARK_QUIET_RESPONSES = 4  # ... and sooner when its owner sent us nothing for this many responses
PARK_QUIET_MIN = 1.0  # seconds: the least such quiet spell that counts
FIRST_RESPONSE = 0.05  # seconds: a peer's response time before it was measured
REASK_HAVE = 3.0  # want-have asked again of a peer after this long without a block
PENALTY = 60.0  # a lying peer is asked last for this long
PEER_WINDOW = 32  # want-blocks outstanding at one peer, parked ones included
FULL_PASS_EVERY = 0.1  # every want is looked at again this often (timeouts, moved shares, re-asks)
RING_FRESH = 0.25  # seconds a share ring is reused: it is asked for on every pass
RING_ROOTS = 64
FETCHERS_REMEMBERED = 16384  # CIDs whose askers we remember (the roots of rollouts among them)


@dataclass
class WantState:
    """How one wanted block is being asked for."""

    cid: bytes
    root: bytes | None = None  # the DAG a rollout wants this block for
    hint: Peer | None = None  # a peer likely to have it: the one that sent its parent
    asked_have: dict[Peer, float] = field(default_factory=dict)
    asked_block: Peer | None = None
    asked_at: float = 0.0
    parked: bool = False  # asked of the share owner, which sends it once it has it
    refused: set[Peer] = field(default_factory=set)  # said DONT_HAVE, timed out or lied


class Planner:
    def __init__(self, me: Peer, peer_bytes: Callable[[Peer], bytes], rng: random.Random | None = None):
        self.me = me
        self._peer_bytes = peer_bytes  # the order of a share ring: the same on every fetcher
        self._random = rng or random.Random()
        self.wants: dict[bytes, WantState] = {}
        self._peers: dict[Peer, bool] = {}  # block peer -> whether it is a swarm member
        self._legacy: set[Peer] = set()  # peers that speak only Bitswap 1.0: no HAVE, no DONT_HAVE
        self._haves: dict[bytes, set[Peer]] = {}
        self._outstanding: dict[Peer, int] = {}  # want-blocks in flight, parked ones included
        self._penalised: dict[Peer, float] = {}
        self._last_block: dict[Peer, float] = {}  # when a peer last sent us a wanted block
        self._response: dict[Peer, float] = {}  # smoothed want-block -> block time per peer
        self._roots: Counter[bytes] = Counter()  # DAG roots of the wants, for share rings
        self._fetchers: dict[bytes, set[Peer]] = {}  # CID -> peers that asked us for it
        self._fetchers_order: deque[bytes] = deque()
        self._rings: dict[bytes, tuple[float, list[Peer]]] = {}
        self._todo: set[bytes] = set()  # wants to plan on the next pass
        self._waiting: dict[bytes, None] = {}  # wants whose holders are all at PEER_WINDOW, in order
        self._full_due = True
        self._last_full = -math.inf
        self._outgoing: dict[Peer, list[bm.Want]] = {}

    # peers ----------------------------------------------------------------------------
    def peer_joined(self, peer: Peer, member: bool = True) -> None:
        self._peers[peer] = member
        self._full_due = True

    def peer_left(self, peer: Peer) -> None:
        self._peers.pop(peer, None)
        self._legacy.discard(peer)
        self._outgoing.pop(peer, None)
        for want in self.wants.values():
            want.asked_have.pop(peer, None)
            if want.asked_block == peer:
                self._release(want, refused=False, tell=False)
        for holders in self._haves.values():
            holders.discard(peer)
        self._outstanding.pop(peer, None)
        self._last_block.pop(peer, None)
        self._response.pop(peer, None)
        self._full_due = True

    def peer_is_legacy(self, peer: Peer) -> bool:
        """A peer turned out to speak only Bitswap 1.0; whether that is news."""
        if peer in self._legacy:
            return False
        self._legacy.add(peer)
        self._full_due = True  # plan every want again: this peer may have them
        return True

    def peer_asked(self, peer: Peer, cid: bytes) -> None:
        """A peer wants `cid` from us: when it is a DAG's root, that peer fetches the DAG too."""
        askers = self._fetchers.get(cid)
        if askers is None:
            askers = self._fetchers[cid] = set()
            self._fetchers_order.append(cid)
            if len(self._fetchers_order) > FETCHERS_REMEMBERED:
                self._fetchers.pop(self._fetchers_order.popleft(), None)
        if peer not in askers and cid in self._roots:  # a new fetcher of a DAG we fetch:
            self._rings.pop(cid, None)  # the shares change now, not when the ring's cache ends
            self._full_due = True
        askers.add(peer)

    def outstanding(self, peer: Peer) -> int:
        return self._outstanding.get(peer, 0)

    # wants ----------------------------------------------------------------------------
    def want(self, cid: bytes, root: bytes | None = None, hint: Peer | None = None) -> None:
        """`root`: the DAG a rollout fetches, whose leaves are shared among its fetchers
        (None: fetch from whoever has the block first)."""
        if cid not in self.wants:
            self.wants[cid] = WantState(cid, root=root, hint=hint)
            self._todo.add(cid)
            if root is not None:
                self._roots[root] += 1

    def cancel(self, cid: bytes) -> None:
        """Nobody waits for `cid` any more: every peer asked for it is told."""
        want = self.wants.pop(cid, None)
        if want is None:
            return
        self._forget(want)
        for peer in {*want.asked_have, *([want.asked_block] if want.asked_block is not None else [])}:
            self._send(peer, bm.Want(cid, cancel=True))
        self._release(want, refused=False, tell=False)

    def have(self, peer: Peer, cid: bytes) -> None:
        if cid in self.wants:
            self._haves.setdefault(cid, set()).add(peer)
            self._todo.add(cid)

    def dont_have(self, peer: Peer, cid: bytes) -> None:
        want = self.wants.get(cid)
        if want is None:
            return
        want.refused.add(peer)
        if want.asked_block == peer:  # its ledger keeps the want-block unless it is cancelled
            self._release(want, refused=True, tell=True)
        self._todo.add(cid)

    def received(self, peer: Peer, cid: bytes, now: float) -> bool:
        """A block we want arrived (its bytes checked by the caller); False when it was met
        already (the same block twice in a message, or from two peers at once)."""
        want = self.wants.pop(cid, None)
        if want is None:
            return False
        self._last_block[peer] = now
        if want.asked_block == peer and not want.parked:
            seen = self._response.get(peer)
            took = now - want.asked_at
            self._response[peer] = took if seen is None else 0.875 * seen + 0.125 * took
        self._forget(want)
        for other in want.asked_have:  # their ledgers would keep our want-have for good
            if other != peer and other != want.asked_block:
                self._send(other, bm.Want(cid, bm.WANT_HAVE, cancel=True))
        self._release(want, refused=False, tell=want.asked_block != peer)
        return True

    def lying(self, peer: Peer, now: float) -> None:
        """`peer` sent bytes that match no CID we asked for: ask others, and it last."""
        self._penalised[peer] = now + PENALTY
        for want in self.wants.values():
            if want.asked_block == peer:
                self._release(want, refused=True, tell=True)

    def share_owner(self, cid: bytes, root: bytes | None, now: float) -> Peer | None:
        """The fetcher whose share of a concurrent rollout `cid` is; None when it is ours (or
        nobody else is fetching `root`). Inner nodes are nobody's share: small, and needed
        to go on."""
        if root is None or cid == root or codec_of(cid) == DAG_PB:
            return None
        ring = self._ring(root, now)
        if len(ring) < 2:
            return None
        owner = ring[int.from_bytes(cid[-4:], "big") % len(ring)]
        return None if owner == self.me else owner

    # planning -------------------------------------------------------------------------
    def plan(self, now: float) -> None:
        """Ask for the wants that need it: new ones, released ones, ones with news about who
        has them, as many waiting ones as there is room for; every `FULL_PASS_EVERY` (or after
        peers changed) every want, for timeouts and re-asks."""
        peers = list(self._peers)
        if not peers:
            return
        full = self._full_due or now - self._last_full >= FULL_PASS_EVERY
        if full:
            self._full_due, self._last_full = False, now
            todo = list(self.wants)
        else:
            todo = list(dict.fromkeys([*self._todo, *islice(self._waiting, self._room(peers))]))
        for cid in todo:
            want = self.wants.get(cid)
            if want is not None and self._plan_one(want, peers, now):
                self._waiting[cid] = None
            else:
                self._waiting.pop(cid, None)
            self._todo.discard(cid)

    def take_outgoing(self) -> dict[Peer, list[bm.Want]]:
        """Want-list entries to send, per peer, since the last call."""
        out, self._outgoing = self._outgoing, {}
        return out

    def _plan_one(self, want: WantState, peers: list[Peer], now: float) -> bool:
        """Ask for one want; whether it waits for room at the peers that have it."""
        owner = self.share_owner(want.cid, want.root, now)
        if want.asked_block is not None:
            moved = want.parked and owner != want.asked_block  # the fetchers changed
            if want.asked_block in self._peers and not self._overdue(want, now) and not moved:
                return False
            self._release(want, refused=not moved, tell=True)
        if owner is not None and owner in self._peers and owner not in want.refused:
            if self.outstanding(owner) >= PEER_WINDOW:
                return True
            self._ask_block(want, owner, now, parked=True)
            return False
        holders = self._holders(want, peers, now)
        if holders:
            self._random.shuffle(holders)
            best = min(holders, key=lambda p: (self._penalised.get(p, 0) > now, self.outstanding(p)))
            if self.outstanding(best) >= PEER_WINDOW:
                return True  # planned again once a peer has room
            self._ask_block(want, best, now, parked=False)
            return False
        for peer in peers:
            if now - want.asked_have.get(peer, -math.inf) >= REASK_HAVE:
                want.asked_have[peer] = now
                want.refused.discard(peer)
                self._send(peer, bm.Want(want.cid, bm.WANT_HAVE, send_dont_have=True))
        return False  # news (HAVE, DONT_HAVE) or the next full pass brings it back

    def _overdue(self, want: WantState, now: float) -> bool:
        """Whether to ask elsewhere. A parked want waits while its owner keeps sending us
        blocks (it is fetching its share); an owner quiet for a few of its response times
        does not have it coming (it left the rollout, or it counts the block as another
        fetcher's share)."""
        waited = now - want.asked_at
        if not want.parked:
            return waited >= BLOCK_TIMEOUT
        owner = want.asked_block
        quiet = min(waited, now - self._last_block.get(owner, -math.inf))
        response = self._response.get(owner, FIRST_RESPONSE)
        return waited >= PARK_TIMEOUT or quiet >= max(PARK_QUIET_MIN, PARK_QUIET_RESPONSES * response)

    def _holders(self, want: WantState, peers: list[Peer], now: float) -> list[Peer]:
        """Peers to ask for the block itself: those that said HAVE; else the hint, before
        any want-have round trip; else Bitswap 1.0 peers, which cannot answer want-have,
        once the peers that can answer have had REASK_HAVE to say HAVE."""
        holders = [p for p in self._haves.get(want.cid, ()) if p in self._peers and p not in want.refused]
        if holders:
            return holders
        hint = want.hint
        if hint in self._peers and hint not in want.refused and not want.asked_have:
            return [hint]
        legacy = [p for p in peers if p in self._legacy and p not in want.refused]
        if not legacy or all(p in self._legacy for p in peers):  # nobody can say HAVE
            return legacy
        asked = [t for p, t in want.asked_have.items() if p not in self._legacy]
        return legacy if asked and now - min(asked) >= REASK_HAVE else []

    def _room(self, peers: list[Peer]) -> int:
        return sum(max(0, PEER_WINDOW - self.outstanding(p)) for p in peers)

    def _ask_block(self, want: WantState, peer: Peer, now: float, parked: bool) -> None:
        want.asked_block, want.asked_at, want.parked = peer, now, parked
        self._outstanding[peer] = self.outstanding(peer) + 1
        # parked: no DONT_HAVE, so the owner keeps it and sends the block once it has it
        self._send(peer, bm.Want(want.cid, bm.WANT_BLOCK, send_dont_have=not parked))

    def _release(self, want: WantState, refused: bool, tell: bool) -> None:
        """The want is no longer asked of its peer; `tell`: send that peer a cancel (its ledger
        would keep the want-block, and send the block once it has it, until we do)."""
        peer = want.asked_block
        if peer is None:
            return
        if tell:
            self._send(peer, bm.Want(want.cid, cancel=True))
        if peer in self._outstanding:
            self._outstanding[peer] = max(0, self._outstanding[peer] - 1)
        want.asked_block, want.parked = None, False
        self._todo.add(want.cid)
        if refused:
            want.refused.add(peer)
            self._haves.get(want.cid, set()).discard(peer)

    def _forget(self, want: WantState) -> None:
        cid = want.cid
        self._waiting.pop(cid, None)
        self._haves.pop(cid, None)
        self._todo.discard(cid)
        if want.root is not None:
            self._roots[want.root] -= 1
            if self._roots[want.root] <= 0:
                del self._roots[want.root]

    def _ring(self, root: bytes, now: float) -> list[Peer]:
        cached = self._rings.get(root)
        if cached is not None and now - cached[0] < RING_FRESH:
            return cached[1]
        fetchers = [p for p in self._fetchers.get(root, ()) if self._peers.get(p)]
        ring = sorted([self.me, *fetchers], key=self._peer_bytes) if fetchers else []
        if len(self._rings) > RING_ROOTS:
            self._rings.clear()
        self._rings[root] = (now, ring)
        return ring

    def _send(self, peer: Peer, entry: bm.Want) -> None:
        if peer in self._peers:
            self._outgoing.setdefault(peer, []).append(entry)
