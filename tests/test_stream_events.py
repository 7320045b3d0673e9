"""Stream events reach every notifee, on real hosts; a notifee that fails is logged and
costs neither the stream nor the other notifees their events."""

from __future__ import annotations

import logging

import trio
from hostpair import ECHO, connected, echo
from libp2p.custom_types import TProtocol


class Recorder:
    def __init__(self, events: list[str], fail: bool = False) -> None:
        self.events, self.fail = events, fail

    async def _record(self, name: str) -> None:
        self.events.append(name)
        if self.fail:
            raise RuntimeError(f"{name} failed on purpose")

    async def opened_stream(self, network, stream) -> None:
        await self._record("opened")

    async def closed_stream(self, network, stream) -> None:
        await self._record("closed")

    async def connected(self, network, conn) -> None:
        pass

    async def disconnected(self, network, conn) -> None:
        pass

    async def listen(self, network, multiaddr) -> None:
        pass

    async def listen_close(self, network, multiaddr) -> None:
        pass


def test_stream_events_reach_every_notifee_and_a_failing_one_harms_nothing(caplog):
    seen: list[str] = []
    failing: list[str] = []
    answers: list[bytes] = []

    async def run() -> None:
        async with connected({ECHO: echo}) as (listener, dialer):
            network = dialer.get_network()
            network.register_notifee(Recorder(failing, fail=True))
            network.register_notifee(Recorder(seen))
            with trio.fail_after(10):
                for i in range(3):
                    stream = await dialer.new_stream(listener.get_id(), [TProtocol(ECHO)])
                    await stream.write(b"ping %d" % i)
                    answers.append(await stream.read(1 << 16))
                    await stream.close()

    with caplog.at_level(logging.ERROR, logger="edgefiles.libp2p"):
        trio.run(run)
    assert answers == [b"ping 0", b"ping 1", b"ping 2"]
    assert seen == failing  # the same events, in the same order, failing or not
    assert seen.count("opened") >= 3 and seen.count("closed") >= 3  # identify opens streams too
    failures = [r for r in caplog.records if "failed on purpose" in str(r.exc_info)]
    assert len(failures) == len(failing)  # each logged, none raised into the stream
