"""Receive-window credit for py-libp2p's Yamux (0.8.1) as go-yamux gives it.

py-libp2p can grant a sender more than its own 16 MiB window limit: when a read leaves the
window short of its target by less than half a window, it credits the shortfall *and* the
bytes just read, though the shortfall already counts them. A peer that sends frames as large
as its credit (js-libp2p's Yamux does: Helia moving megabyte blocks) then sends a frame over
16 MiB, which py-libp2p takes for an attack and answers by closing the whole connection; every
want in flight on it is lost until it times out. Here the credit never passes the target: the
receive window plus what waits unread is at most the target window, as in go-yamux.
"""

from __future__ import annotations

from typing import Any


async def credit_after_read(stream: Any, *, bytes_read: int = 0) -> None:
    """Send the sender the credit it is short of, once that is at least the hysteresis
    threshold (half a window), growing the target window as py-libp2p's auto-tuning does."""
    del bytes_read  # what was read is already missing from the window: it needs no credit of its own
    async with stream.window_lock:
        buffered = len(stream.conn.stream_buffers.get(stream.stream_id, b""))
        delta = stream.target_recv_window - (stream.recv_window + buffered)
        if delta <= 0 or delta < stream._grow_threshold():
            return
        stream.recv_window += delta
        delta += stream._apply_autotune_epoch(buffered)
    await stream.send_window_update(delta, skip_lock=True)


def install() -> None:
    """Use `credit_after_read` for every Yamux stream of this process (idempotent)."""
    from libp2p.stream_muxer.yamux.yamux import YamuxStream

    YamuxStream._auto_tune_and_send_window_update = credit_after_read
