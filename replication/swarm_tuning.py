"""py-libp2p's swarm (0.8.1) as Kubo and Helia use it: a stream per message.

Stream events: the swarm told its notifees of every stream opened and closed by opening a
nursery and starting a task per notifee, for each event (a rollout from Kubo ran 7-10 %
faster told inline). Every notifee in this process does nothing on stream events
(py-libp2p's identify and tag store, our membership), so here they are told inline, one
after the other, each failure logged as py-libp2p does; connection events keep py-libp2p's
fan-out.

Accepting: every inbound stream takes a token of the swarm's stream semaphore, a trio
semaphore that yields to every other task even when tokens are plenty; ours
(`PromptSemaphore`) gives them at once. The resource manager then base58-decodes the peer's
id to look it up in its allowlist of peers exempt from the limits; nobody is exempt here,
and with the empty allowlist gone it skips the lookup (it checks for one before it decodes).
The limits hold. Together these were a tenth of accepting a stream.
"""

from __future__ import annotations

import logging
from typing import Any

from .prompt_sync import PromptSemaphore

log = logging.getLogger("edgefiles.libp2p")

STREAM_EVENTS = ("opened_stream", "closed_stream")


async def tell_inline(swarm: Any, method: str, *args: Any) -> None:
    """Swarm._notify for stream events: each notifee's `method` awaited in turn."""
    for notifee in list(swarm.notifees):
        try:
            await getattr(notifee, method)(swarm, *args)
        except Exception:
            log.exception("notifee %s.%s raised", type(notifee).__name__, method)


def install(host: Any) -> None:
    """Tune `host`'s swarm so (before it runs); stream events of every swarm of this
    process are told inline from then on (idempotent)."""
    _stream_events_inline()
    swarm = host.get_network()
    semaphore = getattr(swarm, "_stream_semaphore", None)
    if semaphore is not None:
        swarm._stream_semaphore = PromptSemaphore(semaphore.value)
    manager = getattr(swarm, "_resource_manager", None)
    allowlist = getattr(manager, "allowlist", None)
    if allowlist is not None and allowlist.is_empty():
        del manager.allowlist


def _stream_events_inline() -> None:
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
