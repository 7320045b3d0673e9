"""Bitswap 1.0-1.2 on raw libp2p streams, split as boxo splits it: a pure `planner` (who is
asked for what), the `client` (what we want: waiting, receiving, storing), the `server`
(answering peers' wants) and the `network` (streams and messages). `Bitswap` wires the
four together for a node; `message` is the wire codec.
"""

from __future__ import annotations

from typing import Any

import trio
from edgefiles.node.blockstore import BlockStore

from ..membership import Membership
from . import message as bm
from .client import BitswapClient
from .network import BitswapNetwork
from .planner import Planner
from .server import BitswapServer


class Bitswap:
    def __init__(self, host: Any, membership: Membership, store: BlockStore, nursery: trio.Nursery):
        self.network = BitswapNetwork(host, membership, nursery, limiter=membership.limiter)
        planner = Planner(host.get_id(), lambda peer: peer.to_bytes())
        self.client = BitswapClient(planner, store, self.network, membership, nursery)
        self.server = BitswapServer(store, self.network, nursery, in_flight=self.client.in_flight_block,
                                    on_asked=self.client.peer_asked, fetching=self.client.fetching,
                                    is_member=lambda peer: peer in membership.members())
        self.client.on_block = self.server.block_arrived
        self.network.on_legacy = self.client.peer_is_legacy
        self._members = membership

    def start(self) -> None:
        self._members.on_admitted.add(self.client.peer_joined)
        self._members.on_left.add(self._peer_left)
        self.network.start(self._receive)
        self.client.start()

    async def _receive(self, peer: Any, msg: bm.Message) -> None:
        await self.server.receive(peer, msg)
        if msg.presences:
            self.client.receive_presences(peer, msg.presences)
        if msg.unhashed:
            await self.client.receive_blocks(peer, msg.unhashed)

    def _peer_left(self, peer: Any) -> None:
        self.server.peer_left(peer)
        self.network.peer_left(peer)
        self.client.peer_left(peer)

    # what the node uses ----------------------------------------------------------------------
    async def get(self, cid: bytes, root: bytes | None = None) -> bytes:
        return await self.client.get(cid, root)

    async def fetch_dag(self, root: bytes) -> int:
        return await self.client.fetch_dag(root)

    def local_block(self, cid: bytes) -> bytes | None:
        return self.client.local_block(cid)

    def in_flight_block(self, cid: bytes) -> bytes | None:
        """From any thread: a block fetched and written here but not indexed yet."""
        return self.client.in_flight_block(cid)

    def prefetch(self, cids: list[bytes], timeout: float) -> None:
        self.client.prefetch(cids, timeout)

    def counters(self) -> dict[str, int]:
        return {"sent": self.network.sent_bytes, "received": self.client.received_bytes,
                "rejected": self.client.rejected_blocks}
