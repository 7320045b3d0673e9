"""A swarm member that holds a copy of a node's blocks but serves every block altered.

Run as `python lying_peer.py DATA_DIR SWARM_KEY_FILE LISTEN PEER_ADDR`: it is our own
host, handshake and Bitswap code with only the block store swapped for a lying one, so
the test exercises what a real corrupt or malicious member would send.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from edgefiles.node.blockstore import BlockStore
from edgefiles.node.identity import load_or_create
from edgefiles.replication.bitswap import Bitswap
from edgefiles.replication.host import SwarmHost
from edgefiles.replication.membership import Membership


class LyingStore(BlockStore):
    def get(self, cid: bytes, for_peer: bool = False) -> bytes | None:
        data = super().get(cid, for_peer)
        if data is None or not data:
            return data
        return data[:-1] + bytes([data[-1] ^ 0xFF])


def main() -> None:
    data_dir, key_file, listen, peer = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    swarm_key = bytes.fromhex(key_file.read_text().strip())
    store = LyingStore(data_dir / "blocks", data_dir / "state.sqlite")
    node_key = load_or_create(data_dir / "liar.key")

    async def services(host, nursery) -> None:
        members = Membership(host, swarm_key, set(), nursery)
        members.start()
        Bitswap(host, members, store, nursery).start()
        members.keep_connected(peer)

    host = SwarmHost(node_key.seed, [listen], services)
    host.start()
    print("liar ready", host.addrs()[0], flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
