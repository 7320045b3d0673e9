"""How we size the Bitswap messages we send an IPFS peer, from how it asks: a peer that asks
for a few blocks at a time gets each block in a message of its own, one that asks for many
gets them batched (pure parts of replication/bitswap/network.py)."""

from __future__ import annotations

from types import SimpleNamespace

from edgefiles.replication.bitswap import network
from hypothesis import given
from hypothesis import strategies as st

BLOCK = 256 << 10


@given(st.integers(0, 1000))
def test_few_wants_one_block_per_message_many_wants_batched(want_blocks):
    limit = network.message_bytes(want_blocks)
    if 0 < want_blocks <= network.FEW_WANTS:
        assert limit == 0
    else:
        assert limit == network.MESSAGE_BYTES


def _taken(limit: int | None, blocks: int) -> list[int]:
    peer = object()
    net = SimpleNamespace(message_bytes={} if limit is None else {peer: limit})
    box = network._Outbox(net, peer)
    box.pending.blocks = [(bytes([i]), bytes(BLOCK)) for i in range(blocks)]
    sizes = []
    while box.pending:
        sizes.append(len(box._take().blocks))
    return sizes


def test_messages_take_as_many_blocks_as_the_peer_is_paced_for():
    assert _taken(network.message_bytes(10), 5) == [1, 1, 1, 1, 1]  # Kubo asks 10 at a time
    per_message = network.MESSAGE_BYTES // BLOCK
    assert _taken(network.message_bytes(174), 30) == [per_message] * (30 // per_message) + (
        [30 % per_message] if 30 % per_message else [])  # Helia asks 174
    assert _taken(None, 13)[0] == per_message  # a peer not heard from (a member): batched


def test_a_message_of_cancels_alone_keeps_the_pace_and_members_are_always_batched():
    net = SimpleNamespace(message_bytes={})
    peer = object()
    network.BitswapNetwork.paced_by(net, peer, 10)
    network.BitswapNetwork.paced_by(net, peer, 0)
    assert net.message_bytes[peer] == 0
    network.BitswapNetwork.paced_by(net, peer, 3, member=True)  # its handshake settled meanwhile
    assert peer not in net.message_bytes
