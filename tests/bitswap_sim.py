"""A simulated swarm around one Bitswap planner: peers with blocks answer what the planner
sends, after a network delay, on a simulated clock. No trio, no sockets: the planner is
pure, so its tests drive it with this."""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field

from edgefiles.replication.bitswap import message as bm
from edgefiles.replication.bitswap.planner import PEER_WINDOW, Planner

ME = "me"
TICK = 0.5  # the client's scheduler plans at least this often


@dataclass
class SimPeer:
    """`kind`: honest; legacy (Bitswap 1.0: no want-have, no DONT_HAVE); lying (says HAVE to
    everything, sends altered bytes); silent (never answers)."""

    name: str
    holds: set[bytes] = field(default_factory=set)
    kind: str = "honest"
    member: bool = True
    gets: dict[bytes, float] = field(default_factory=dict)  # blocks it fetches itself, and when
    ledger: dict[bytes, bm.Want] = field(default_factory=dict)  # our wants it keeps
    most_want_blocks: int = 0  # the most want-blocks of ours it held at once


class Sim:
    def __init__(self, peers: list[SimPeer], delay: float = 0.002, seed: int = 0):
        self.planner = Planner(ME, str.encode, random.Random(seed))
        self.peers = {p.name: p for p in peers}
        self.connected: set[str] = set()
        self.delay = delay
        self.now = 0.0
        self.received: dict[bytes, str] = {}  # block -> the peer it came from
        self.lies = 0
        self._queue: list[tuple[float, int, object]] = []
        self._seq = itertools.count()
        for peer in peers:
            self.join(peer.name)
            for cid, when in peer.gets.items():
                self.at(when, self._acquired, peer.name, cid)

    # scenario --------------------------------------------------------------------------
    def at(self, when: float, fn, *args) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), (fn, args)))

    def join(self, name: str) -> None:
        self.connected.add(name)
        self.planner.peer_joined(name, member=self.peers[name].member)
        if self.peers[name].kind == "legacy":  # the network learns it from the protocol it speaks
            self.planner.peer_is_legacy(name)

    def leave(self, name: str) -> None:
        self.connected.discard(name)
        self.peers[name].ledger.clear()
        self.planner.peer_left(name)

    def want(self, cids: list[bytes], root: bytes | None = None) -> None:
        for cid in cids:
            self.planner.want(cid, root)

    def run(self, until: float, max_steps: int = 50_000) -> None:
        """Plan, deliver and answer until every want is met, or `until` (simulated seconds),
        or `max_steps` events (a planner that keeps asking in circles)."""
        next_tick = self.now
        for _ in range(max_steps):
            if self.now >= until:
                return
            if not self.planner.wants:
                self._settle(max_steps)
                return
            if self._queue and self._queue[0][0] <= next_tick:
                when, _, (fn, args) = heapq.heappop(self._queue)
                self.now = max(self.now, when)
                fn(*args)
            else:
                self.now, next_tick = next_tick, next_tick + TICK
            self.planner.plan(self.now)
            self.flush()

    def _settle(self, max_steps: int) -> None:
        """Every want is met: what the planner still sends (cancels) reaches the peers, and
        what is on the wire arrives, as on a real network that goes on after we stop asking."""
        met_at, horizon = self.now, self.now + 10 * self.delay
        for _ in range(max_steps):
            self.flush()
            if not self._queue or self._queue[0][0] > horizon:  # only what is on the wire
                break
            when, _, (fn, args) = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            fn(*args)
        self.now = met_at  # callers read when the last want was met

    def flush(self) -> None:
        for name, wants in self.planner.take_outgoing().items():
            assert name in self.connected, f"planned a want for {name}, which is not connected"
            self.at(self.now + self.delay, self._deliver, name, wants)

    def want_blocks_at(self, name: str) -> int:
        return sum(w.want_type == bm.WANT_BLOCK for w in self.peers[name].ledger.values())

    # the peers' side ---------------------------------------------------------------------
    def _deliver(self, name: str, wants: list[bm.Want]) -> None:
        if name not in self.connected:
            return
        peer = self.peers[name]
        for want in wants:
            if want.cancel:
                peer.ledger.pop(want.cid, None)
            elif peer.kind != "silent" and not (peer.kind == "legacy" and want.want_type == bm.WANT_HAVE):
                self._answer(peer, want)
        peer.most_want_blocks = max(peer.most_want_blocks, self.want_blocks_at(name))
        assert self.want_blocks_at(name) <= PEER_WINDOW, f"{name} holds more than {PEER_WINDOW} want-blocks"

    def _answer(self, peer: SimPeer, want: bm.Want) -> None:
        if peer.kind == "lying":
            if want.want_type == bm.WANT_HAVE:
                self._reply(peer.name, "have", want.cid)
            else:
                self._reply(peer.name, "lie", want.cid)
        elif want.cid in peer.holds:
            peer.ledger.pop(want.cid, None)
            self._reply(peer.name, "block" if want.want_type == bm.WANT_BLOCK else "have", want.cid)
        else:
            peer.ledger[want.cid] = want
            # as our server: a member's parked want for a block it does not fetch is refused
            parked_in_vain = want.want_type == bm.WANT_BLOCK and peer.member and want.cid not in peer.gets
            if peer.kind == "honest" and (want.send_dont_have or parked_in_vain):
                self._reply(peer.name, "dont_have", want.cid)

    def _acquired(self, name: str, cid: bytes) -> None:
        """A peer got a block itself: it answers what it kept for us, as a server does."""
        peer = self.peers[name]
        peer.holds.add(cid)
        want = peer.ledger.pop(cid, None)
        if want is not None and name in self.connected:
            self._reply(name, "block" if want.want_type == bm.WANT_BLOCK else "have", cid)

    def _reply(self, name: str, kind: str, cid: bytes) -> None:
        self.at(self.now + self.delay, self._arrive, name, kind, cid)

    def _arrive(self, name: str, kind: str, cid: bytes) -> None:
        if name not in self.connected:
            return
        if kind == "block":
            if self.planner.received(name, cid, self.now):
                self.received[cid] = name
        elif kind == "have":
            self.planner.have(name, cid)
        elif kind == "dont_have":
            self.planner.dont_have(name, cid)
        else:  # bytes that hash to no CID we want: the client calls the sender a liar
            self.lies += 1
            self.planner.lying(name, self.now)


def leaf(i: int) -> bytes:
    """A raw-leaf CID (codec 0x55) with a made-up digest."""
    return b"\x01\x55\x12\x20" + i.to_bytes(4, "big") * 8


ROOT = b"\x01\x70\x12\x20" + bytes(32)
