"""py-libp2p's swarm (0.8.1) as Kubo and Helia use it: a stream per message.

Every inbound stream takes a token of the swarm's stream semaphore, a trio semaphore that
yields to every other task even when tokens are plenty; ours (`PromptSemaphore`) gives them
at once. The resource manager then base58-decodes the peer's id to look it up in its
allowlist of peers exempt from the limits; nobody is exempt here, and with the empty
allowlist gone it skips the lookup (it checks for one before it decodes). The limits hold.
Together these were a tenth of accepting a stream.
"""

from __future__ import annotations

from typing import Any

from .prompt_sync import PromptSemaphore


def install(host: Any) -> None:
    """Tune `host`'s swarm so (before it runs)."""
    swarm = host.get_network()
    semaphore = getattr(swarm, "_stream_semaphore", None)
    if semaphore is not None:
        swarm._stream_semaphore = PromptSemaphore(semaphore.value)
    manager = getattr(swarm, "_resource_manager", None)
    allowlist = getattr(manager, "allowlist", None)
    if allowlist is not None and allowlist.is_empty():
        del manager.allowlist
