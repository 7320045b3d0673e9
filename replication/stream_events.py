"""py-libp2p's swarm (0.8.1) told its notifees of every stream opened and closed by opening a
nursery and starting a task per notifee, for each event. Kubo opens a stream for every
Bitswap message it sends (a rollout from Kubo ran 7-10 % faster told inline). Every
notifee in this process does nothing on stream events (py-libp2p's identify and tag store,
our membership), so here they are told inline, one after the other, each failure logged
as py-libp2p does; connection events keep py-libp2p's fan-out.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("edgefiles.libp2p")

STREAM_EVENTS = ("opened_stream", "closed_stream")


async def tell_inline(swarm: Any, method: str, *args: Any) -> None:
    """Swarm._notify for stream events: each notifee's `method` awaited in turn."""
    for notifee in list(swarm.notifees):
        try:
            await getattr(notifee, method)(swarm, *args)
        except Exception:
            log.exception("notifee %s.%s raised", type(notifee).__name__, method)


def install() -> None:
    """Stream events of every swarm of this process told inline (idempotent)."""
    from libp2p.network.swarm import Swarm

    if getattr(Swarm._notify, "stream_events_inline", False):
        return
    fan_out = Swarm._notify

    async def _notify(self: Any, method: str, *args: Any) -> None:
        if method in STREAM_EVENTS:
            await tell_inline(self, method, *args)
        else:
            await fan_out(self, method, *args)

    _notify.stream_events_inline = True  # type: ignore[attr-defined]
    Swarm._notify = _notify
