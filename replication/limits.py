"""What one peer may cost us: connections, streams, open wants, bytes queued for it, messages
and name records per second. A peer over a limit is held back or has the excess dropped, the
hit is counted (`edgefiles_peer_limit_hits_total{limit}`) and logged once a minute per peer
and limit, so a misbehaving or malicious member cannot starve the node or its other peers.

Pure: the caller passes the time; the swarm's trio side owns one `PeerLimiter`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("edgefiles.limits")
LOG_EVERY = 60.0  # seconds between log lines for one peer and limit
BURST_SECONDS = 2.0  # a rate limit lets this many seconds' worth through at once
FATE = {"inflight": "held back", "messages": "held back", "wants": "forgotten, oldest first"}
KINDS = ("connections", "streams", "wants", "inflight", "messages", "records")


@dataclass(frozen=True)
class PeerLimits:
    connections: int = 4  # open at once
    streams: int = 256  # inbound Bitswap streams open at once (Helia opens one per message)
    wants: int = 16384  # wants kept open with us; past it the oldest are forgotten
    inflight: int = 64 << 20  # block bytes queued to send to it
    messages: float = 2000.0  # Bitswap and name messages per second
    records: float = 5000.0  # gossiped name records per second (table exchanges are not counted)


class PeerLimiter:
    def __init__(self, limits: PeerLimits):
        self.limits = limits
        self.hits: Counter[str] = Counter()
        self._buckets: dict[tuple[str, Any], tuple[float, float]] = {}  # (tokens, when)
        self._logged: dict[tuple[str, Any], float] = {}

    def take(self, kind: str, peer: Any, count: int, now: float, quiet: bool = False) -> bool:
        """Whether `peer` may send `count` more of `kind` (messages, records) now; a refusal
        is a hit (unless `quiet`: asking again for the same thing)."""
        rate = getattr(self.limits, kind)
        tokens, when = self._buckets.get((kind, peer), (rate * BURST_SECONDS, now))
        tokens = min(rate * BURST_SECONDS, tokens + (now - when) * rate)
        if tokens < count:
            self._buckets[(kind, peer)] = (tokens, now)
            if not quiet:
                self.hit(kind, peer, now)
            return False
        self._buckets[(kind, peer)] = (tokens - count, now)
        return True

    def over(self, kind: str, peer: Any, amount: int, now: float) -> bool:
        """Whether `amount` (connections, streams, wants, inflight bytes) is beyond the limit;
        if so, a hit."""
        if amount <= getattr(self.limits, kind):
            return False
        self.hit(kind, peer, now)
        return True

    def hit(self, kind: str, peer: Any, now: float) -> None:
        self.hits[kind] += 1
        last = self._logged.get((kind, peer))
        if last is None or now - last >= LOG_EVERY:
            self._logged[(kind, peer)] = now
            log.warning("peer %s is over its %s limit (%s); the excess is %s", peer_text(peer), kind,
                        getattr(self.limits, kind), FATE.get(kind, "dropped"))

    def forget(self, peer: Any) -> None:
        for table in (self._buckets, self._logged):
            for key in [k for k in table if k[1] == peer]:
                del table[key]


def peer_text(peer: Any) -> str:
    """A peer as its ready line and every other log line show it (12D3KooW...): gossip names a
    message's origin by the raw bytes of its id."""
    if isinstance(peer, bytes):
        from libp2p.peer.id import ID

        return ID(peer).to_base58()
    return str(peer)
