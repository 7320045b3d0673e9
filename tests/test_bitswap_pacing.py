"""How we size the Bitswap messages we send an IPFS peer, from how it asks: a peer that asks
for a few blocks at a time gets each block in a message of its own, one that asks for many
gets them batched, and up to LANES such messages on their way at once, while wants go one
message at a time, in order (the parts of replication/bitswap/network.py above streams)."""

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


def _sent_at_once(paced: bool) -> tuple[int, int, list[str]]:
    """An outbox sending wants, blocks and a cancel (each send held a moment): the most
    messages on their way at once, the most of them carrying wants, and the order the
    wants left in."""
    import trio

    peer = object()
    net = SimpleNamespace(message_bytes={peer: 0} if paced else {})
    box = network._Outbox(net, peer)
    in_flight = {"all": 0, "wants": 0}
    most = {"all": 0, "wants": 0}
    wants_order: list[str] = []

    async def send(msg, stream):
        kinds = ["all", "wants"] if msg.wants else ["all"]
        for kind in kinds:
            in_flight[kind] += 1
            most[kind] = max(most[kind], in_flight[kind])
        wants_order.extend(want.cid.decode() for want in msg.wants)
        await trio.sleep(0.01)
        for kind in kinds:
            in_flight[kind] -= 1
        return stream or object()

    box._send = send

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(box.run)
            for wants, blocks in (([b"first"], 0), ([], 12), ([b"second"], 0), ([], 12), ([b"third"], 0)):
                box.pending.wants += [network.bm.Want(cid) for cid in wants]
                box.pending.blocks += [(bytes([i]), bytes(BLOCK)) for i in range(blocks)]
                box.ready.set()
                await trio.sleep(0.002)
            await trio.sleep(0.5)
            box.closed = True
            box.ready.set()

    trio.run(run)
    return most["all"], most["wants"], wants_order


def test_blocks_to_a_paced_peer_leave_on_several_streams_and_wants_one_message_at_a_time():
    most, most_wants, order = _sent_at_once(paced=True)
    assert most == network.LANES and most_wants == 1 and order == ["first", "second", "third"]
    most, most_wants, order = _sent_at_once(paced=False)  # a member: one message at a time
    assert most == 1 and order == ["first", "second", "third"]
