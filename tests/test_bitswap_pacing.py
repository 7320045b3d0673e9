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
        sizes.append(len(box._take()[0].blocks))
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


class Streams:
    """What an outbox's sends met: each message's stream and what else was on its way as it
    started. A stream in `broken` fails its first send (a reset the peer sent)."""

    def __init__(self, box) -> None:
        self.box = box
        self.on_the_way: list[int] = []  # numbers of the messages being sent
        self.sent: list[tuple[int, bool, object, list[int]]] = []  # number, wants?, stream, others going
        self.blocks: list[int] = []
        self.wants: list[int] = []
        self.broken: set[object] = set()
        self.opened = 0
        box._send = self.send

    async def send(self, msg, size, stream):
        import trio

        number = msg.wants[0].priority if msg.wants else msg.blocks[0][0][0]
        if stream is None:
            stream = self.opened = self.opened + 1
        if stream in self.broken:
            self.broken.discard(stream)
            raise OSError("stream reset")
        self.sent.append((number, bool(msg.wants), stream, list(self.on_the_way)))
        self.blocks += [cid[0] for cid, _ in msg.blocks]
        self.wants += [want.priority for want in msg.wants]
        self.on_the_way.append(number)
        await trio.sleep(0.01)
        self.on_the_way.remove(number)
        return stream


def _outbox(paced: bool):
    peer = object()
    net = SimpleNamespace(message_bytes={peer: 0} if paced else {},
                          host=SimpleNamespace(get_connected_peers=lambda: [peer]))
    return network._Outbox(net, peer)


def _run_outbox(box, batches, streams=None) -> Streams:
    """`batches` queued in turn, 2 ms apart: each a list of numbers, a number under 100 a
    want (its priority), one of 100 and over a block (its first byte)."""
    import trio

    streams = streams or Streams(box)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(box.run)
            for batch in batches:
                box.pending.wants += [network.bm.Want(b"w%d" % n, priority=n) for n in batch if n < 100]
                box.pending.blocks += [(bytes([n]), bytes(BLOCK)) for n in batch if n >= 100]
                box.ready.set()
                await trio.sleep(0.002)
            queued = sum(len(batch) for batch in batches)
            with trio.fail_after(10):
                while len(streams.wants) + len(streams.blocks) < queued or box._sending:
                    await trio.sleep(0.01)
            box.close()

    trio.run(run)
    return streams


BATCHES = [[1], list(range(100, 112)), [2], list(range(112, 124)), [3]]


def test_blocks_to_a_paced_peer_leave_on_several_streams_and_wants_in_turn():
    streams = _run_outbox(_outbox(paced=True), BATCHES)
    wants = [(number, stream, others) for number, is_want, stream, others in streams.sent if is_want]
    assert streams.wants == [1, 2, 3]  # in order, whether or not some left in one message
    assert len({stream for _, stream, _ in wants}) == 1  # one stream: the peer reads them in order
    assert all(other > number for number, _, others in wants for other in others if other < 100)
    assert all(others == [] or min(others) >= 100 for _, _, others in wants)  # nothing before it still going
    assert max(len(others) for *_, others in streams.sent) + 1 == network.LANES
    assert sorted(streams.blocks) == list(range(100, 124))


def test_a_member_gets_one_message_at_a_time_on_one_stream():
    streams = _run_outbox(_outbox(paced=False), BATCHES)
    assert all(others == [] for *_, others in streams.sent)
    assert {stream for _, _, stream, _ in streams.sent} == {1}


def test_a_message_whose_stream_was_reset_goes_once_more_on_a_fresh_stream():
    box = _outbox(paced=True)
    streams = Streams(box)
    box._main, box._lanes = "stale main", ["stale lane"]
    streams.broken |= {"stale main", "stale lane"}
    _run_outbox(box, [[1], [100]], streams)
    on = {number: stream for number, _, stream, _ in streams.sent}  # each sent once, on a fresh stream
    assert len(streams.sent) == 2 and sorted(on) == [1, 100] and set(on.values()) == {1, 2}
