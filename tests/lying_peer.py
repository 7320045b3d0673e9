"""A swarm member that misbehaves, built from our own host, handshake and Bitswap code.

    python lying_peer.py lie DATA_DIR SWARM_KEY_FILE LISTEN PEER_ADDR
        holds a copy of a node's blocks and serves every block altered by one byte;
    python lying_peer.py garbage DATA_DIR SWARM_KEY_FILE LISTEN PEER_ADDR
        sends malformed Bitswap and name-exchange messages to every member it meets;
    python lying_peer.py legacy DATA_DIR SWARM_KEY_FILE LISTEN PEER_ADDR
        honest, but speaks only Bitswap 1.0 (no want-have, no presences, bare blocks);
    python lying_peer.py flood DATA_DIR SWARM_KEY_FILE LISTEN PEER_ADDR
        floods every member it meets: a want list of 50,000 blocks, 200 Bitswap streams held
        open, 3,000 messages as fast as it can, and a table exchange of 20,000 forged records;
    python lying_peer.py bystander DATA_DIR SWARM_KEY_FILE LISTEN PEER_ADDR
        honest, holds nothing, and prints every want it is sent ("want <want-block|want-have>
        <CID hex>"): what a node asks of a peer that has nothing to give.

Only the part under test is swapped, so the node sees what a broken or malicious member
with the swarm key would really send.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import msgpack
from edgefiles.ans import record as rec_mod
from edgefiles.node.blockstore import BlockStore
from edgefiles.node.identity import NodeKey, load_or_create
from edgefiles.node.protobuf import varint
from edgefiles.replication.bitswap.message import LEGACY, PROTOCOLS
from edgefiles.replication.bitswap.network import BitswapNetwork
from edgefiles.replication.bitswap.server import BitswapServer
from edgefiles.replication.host import SwarmHost
from edgefiles.replication.membership import Membership
from edgefiles.replication.namesync import EXCHANGE


class LyingStore(BlockStore):
    def get(self, cid: bytes, for_peer: bool = False) -> bytes | None:
        data = super().get(cid, for_peer)
        if data is None or not data:
            return data
        return data[:-1] + bytes([data[-1] ^ 0xFF])


class EmptyStore:
    """All a Bitswap server asks of a store, for a peer that holds nothing."""

    def has(self, cid: bytes) -> bool:
        return False

    def get(self, cid: bytes, for_peer: bool = False) -> bytes | None:
        return None


def garbage_messages() -> list[tuple[str, bytes]]:
    forged = rec_mod.sign(NodeKey(os.urandom(32)), "", "forged", b"\x01\x55\x12\x20" + bytes(32), (1, 0))
    encoded = rec_mod.encode(forged)
    tampered = encoded[:-1] + bytes([encoded[-1] ^ 0x01])  # signature no longer matches
    hello = msgpack.packb({"addrs": [7], "peers": ["/not/a/multiaddr"], "records": [tampered, b"junk", 5]})
    return [
        (PROTOCOLS[0], varint(100 << 20) + b"\x0a"),  # announces a 100 MiB message
        (PROTOCOLS[0], varint(6) + b"\x0a\x05\x0a\x03\xff\xff"),  # truncated wantlist
        (PROTOCOLS[1], varint(4) + b"\xff\xff\xff\xff"),  # not protobuf
        (EXCHANGE, varint(5) + b"\xc1\xc1\xc1\xc1\xc1"),  # not msgpack
        (EXCHANGE, varint(len(hello)) + hello),  # well-formed, but every record is bad
    ]


def printing_wants(receive):
    from edgefiles.replication.bitswap import message as bm

    async def receive_and_print(peer, msg) -> None:
        for want in msg.wants:
            if not want.cancel:
                kind = "want-block" if want.want_type == bm.WANT_BLOCK else "want-have"
                print("want", kind, want.cid.hex(), flush=True)
        await receive(peer, msg)

    return receive_and_print


def main() -> None:
    mode, data, key, listen, peer = sys.argv[1:6]
    data_dir, key_file = Path(data), Path(key)
    swarm_key = bytes.fromhex(key_file.read_text().strip())
    node_key = load_or_create(data_dir / "rogue.key")

    async def send_garbage(host, member) -> None:
        from libp2p.custom_types import TProtocol

        for protocol, payload in garbage_messages():
            try:
                stream = await host.new_stream(member, [TProtocol(protocol)])
                await stream.write(payload)
                await stream.close()
            except Exception as exc:  # the node may reset us: that is the point
                print("garbage", protocol, "->", type(exc).__name__, flush=True)

    async def flood(host, member) -> None:
        import trio
        from edgefiles.replication.bitswap import message as bm
        from edgefiles.replication.framing import frame
        from libp2p.custom_types import TProtocol

        wants = [bm.Want(b"\x01\x55\x12\x20" + os.urandom(32)) for _ in range(50_000)]  # want-blocks
        held = []
        try:
            stream = await host.new_stream(member, [TProtocol(PROTOCOLS[0])])
            await stream.write(bm.frame(bm.Message(wants=wants)))
            for _ in range(3000):  # endless chatter on one stream
                await stream.write(bm.frame(bm.Message(wants=wants[:1])))
            for _ in range(200):
                held.append(await host.new_stream(member, [TProtocol(PROTOCOLS[0])]))
        except Exception as exc:  # the node may reset us: that is the point
            print("flood bitswap ->", type(exc).__name__, exc, flush=True)
        forged = [rec_mod.encode(rec_mod.sign(NodeKey(os.urandom(32)), "", f"forged-{i}",
                                              b"\x01\x55\x12\x20" + bytes(32), (1, 0)))
                  for i in range(200)]
        tampered = [r[:-1] + bytes([r[-1] ^ 1]) for r in forged] * 100  # 20,000 bad signatures
        try:
            stream = await host.new_stream(member, [TProtocol(EXCHANGE)])
            await stream.write(frame(msgpack.packb({"addrs": [], "peers": [], "digest": os.urandom(32)})))
            await stream.read(1 << 16)  # its answer: it wants our records
            await stream.write(frame(msgpack.packb({"records": tampered})))
            await stream.close()
        except Exception as exc:
            print("flood records ->", type(exc).__name__, exc, flush=True)
        print("flood sent", flush=True)
        await trio.sleep_forever()  # the streams stay open

    async def services(host, nursery) -> None:
        members = Membership(host, swarm_key, set(), nursery)
        members.start()
        if mode in ("lie", "legacy", "bystander"):  # only serves: the server side over its own network side
            if mode == "bystander":
                store = EmptyStore()
            else:
                store_type = LyingStore if mode == "lie" else BlockStore
                store = store_type(data_dir / "blocks", data_dir / "state.sqlite")
            protocols = (LEGACY,) if mode == "legacy" else PROTOCOLS  # legacy: offers and answers 1.0 only
            network = BitswapNetwork(host, members, nursery, protocols)
            server = BitswapServer(store, network, nursery)
            members.on_left.add(server.peer_left)
            members.on_left.add(network.peer_left)
            network.start(server.receive if mode != "bystander" else printing_wants(server.receive))
        elif mode == "flood":
            async def on_admitted(member) -> None:
                await flood(host, member)

            members.on_admitted.add(on_admitted)
        else:
            async def on_admitted(member) -> None:
                await send_garbage(host, member)
                print("garbage sent", flush=True)

            members.on_admitted.add(on_admitted)
        members.keep_connected(peer)

    host = SwarmHost(node_key.seed, [listen], services)
    host.start()
    print("rogue ready", host.addrs()[0], flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
