"""Admission of peers that connected before the membership was started (replication/membership.py)."""

from __future__ import annotations

from types import SimpleNamespace

import trio
from edgefiles.replication.membership import Membership


class Host:
    """The parts of a libp2p host the membership uses at its start, with `connected` peers
    already there, and a handshake stream that never opens."""

    def __init__(self, connected: list[str]) -> None:
        self.connected = connected
        self.handshakes: list[str] = []
        self.notifees: list[object] = []

    def get_connected_peers(self) -> list[str]:
        return list(self.connected)

    def get_id(self) -> str:
        return "us"

    def set_stream_handler(self, protocol: str, handler: object) -> None:
        pass

    def get_network(self) -> SimpleNamespace:
        return SimpleNamespace(register_notifee=self.notifees.append)

    async def new_stream(self, peer: str, protocols: list[str]) -> None:
        self.handshakes.append(peer)
        await trio.sleep_forever()


def test_a_peer_connected_before_the_start_is_challenged_like_any_other():
    host = Host(connected=["early"])

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            members = Membership(host, b"k" * 32, set(), nursery)
            members.start()
            await trio.sleep(0.01)
            assert host.handshakes == ["early"]  # it would wait for ever, connected and never admitted
            assert not members.admits("early")
            nursery.cancel_scope.cancel()

    trio.run(run)
