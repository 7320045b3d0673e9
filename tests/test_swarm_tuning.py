"""The swarm tuned for a stream per message still counts every stream: on real hosts, the
tokens of the stream semaphore and the resource manager's count come back once streams end,
and the manager still refuses a stream past its limit."""

from __future__ import annotations

import trio
from hostpair import ECHO, connected, echo
from libp2p.custom_types import TProtocol
from libp2p.rcmgr import Direction


def test_streams_opened_at_once_are_all_answered_and_give_their_tokens_back():
    answers: list[bytes] = []
    counts: dict[str, int] = {}

    async def run() -> None:
        async with connected({ECHO: echo}) as (listener, dialer):
            swarm = listener.get_network()
            tokens, manager = swarm._stream_semaphore, swarm._resource_manager
            full = manager.limits.max_streams  # every token

            async def ask(i: int) -> None:
                stream = await dialer.new_stream(listener.get_id(), [TProtocol(ECHO)])
                await stream.write(b"ping %d" % i)
                answers.append(await stream.read(1 << 16))
                await stream.close()

            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    for i in range(50):
                        nursery.start_soon(ask, i)
                while tokens.value != full or manager._current_streams:
                    await trio.sleep(0.01)
            counts.update(missing=full - tokens.value, open=manager._current_streams)
            manager._current_streams = manager.limits.max_streams  # as if every stream were open
            counts["one_more_taken"] = manager.acquire_stream(str(dialer.get_id()), Direction.INBOUND)

    trio.run(run)
    assert sorted(answers) == sorted(b"ping %d" % i for i in range(50))
    assert counts == {"missing": 0, "open": 0, "one_more_taken": False}, counts  # the limit holds
