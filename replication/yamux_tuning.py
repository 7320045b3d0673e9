"""py-libp2p's Yamux (0.8.1) tuned as go-yamux behaves: the credit we give, the frames we
send and how a sender waits for credit.

Credit: py-libp2p can grant a sender more than its own 16 MiB window limit: when a read
leaves the window short of its target by less than half a window, it credits the shortfall
*and* the bytes just read, though the shortfall already counts them. A peer that sends
frames as large as its credit (js-libp2p's Yamux does: Helia moving megabyte blocks) then
sends a frame over 16 MiB, which py-libp2p takes for an attack and answers by closing the
whole connection; every want in flight on it is lost until it times out. Here the credit
never passes the target: the receive window plus what waits unread is at most the target
window, as in go-yamux.

Frames: py-libp2p sends 64 KiB of data per frame, which with its 12-byte header is 17 bytes
more than one Noise message carries, so every frame left as two Noise messages (a full one
and one of 17 bytes): twice the encryptions and socket writes here, and twice the messages a
peer decrypts and joins (Helia, busy on one core, received from us at 0.95x the speed it
received from another Helia). Here a frame and its header fill one Noise message exactly, or,
where the window holds two of them, four (`WIDE_FRAME_PAYLOAD`): js-libp2p's Yamux sends a
WINDOW_UPDATE for every frame it receives, each a Noise message and a socket write of its own,
which with frames of one message took Helia, receiving from us, 0.45 s of 4 x 128 MiB in
writes alone (from another Helia, which sends frames as large as its credit: 0.04 s); wide
frames cut that by four. Our reader takes a frame over several messages in pieces, uncopied
(`yamux_frames.FrameReader`).

Waiting: a py-libp2p sender out of credit looked again every 10 ms; a credit that arrived
just after a look cost the stream up to 10 ms idle, per window's worth of data (with frames
of one Noise message, a 256 KiB window ran out before the peer's half-window credit came,
and a raw stream fell from 260 to 70 MB/s). Here the credit wakes the sender at once.

Locks: a trio lock yields to every other runnable task even when it is free (a checkpoint
after taking it, with the lock held). py-libp2p's reader took the connection's streams lock
for every frame it received, so it waited for a whole round of the scheduler per frame, and
tasks that wanted the lock meanwhile parked behind it: sampled during Kubo -> us, the reader
spent most of its time off the socket at that yield or parked on that lock. Its locks here
(`prompt_sync.PromptLock`) are taken at once when free; our reader (`yamux_reader`) takes
none.

Acknowledgements: py-libp2p's reader wrote the ACK of every inbound stream the moment it
read its SYN, a Noise message and a system call of their own, with the reader waiting for
the connection. A bare ACK now waits (ACK_DELAY at most) for the next frame written on the
connection and leaves with it: the protocol's answer on that very stream, mostly.

Small frames: every frame was encrypted and written on its own; a peer that opens a stream
per message (Kubo sends each block so) costs us an ACK, protocol replies, credit and a FIN
per message, each a Noise message and a system call. Frames queued while the connection is
busy writing now leave together, packed into as few Noise messages as they fit in
(`pack_frames`), a full data frame still alone in its own.

Answers nobody waits for: Kubo sends the protocol it wants, its message and its FIN at once,
on a stream per message; the answer then leaves with the next frame written (mostly the
stream's FIN), as a bare ACK does (`send_soon`). Whatever is held back leaves before a read
waits for the peer (`read_after_flush`): the peer may be waiting for it first.

Batches: a stream's write cut one frame at a time and wrote each through py-libp2p's layers
on its own. It now cuts as many frames as the window allows, until they hold BATCH_BYTES of
data, and whatever leaves together is sealed into one socket write (`noise_io.write_sealed`).
"""

from __future__ import annotations

from typing import Any

import trio

from . import noise_io
from .prompt_sync import PromptLock
from .yamux_frames import FLAG_ACK, FRAME_HEADER, HEADER_SIZE, TYPE_DATA, TYPE_WINDOW_UPDATE, header

NOISE_PLAINTEXT = noise_io.MAX_PLAINTEXT  # what one Noise transport message carries
FRAME_PAYLOAD = NOISE_PLAINTEXT - HEADER_SIZE
# us -> Helia from 1.06-1.13x to 1.17-1.18x Helia -> Helia (frames of 1 MiB: the same)
WIDE_FRAME_PAYLOAD = 4 * NOISE_PLAINTEXT - HEADER_SIZE
CREDIT_WAIT = 5.0  # as py-libp2p: a stream given no credit for this long fails its write
CLOSED_CHECK = 0.05  # a waiting sender also notices a stream closed under it this often
WRITE_LIMIT = 10.0  # seconds one batch of frames may take to leave before the connection is given up
ACK_DELAY = 0.005  # seconds a bare ACK waits for another frame to leave with
# a write cuts frames until they hold this much data, and writes them together: five frames
# of one Noise message (a 256 KiB block's message), or two wide frames. Node to node messages are
# megabytes: in batches of 8 narrow frames they moved 5-10 % slower (the receiver, busy on its
# own core, waits longer for each batch), in batches of 1 a block to Kubo took 25 % more CPU;
# batches of five wide frames moved node to node at 0.93-0.94x, of two at 1.00x
BATCH_BYTES = 5 * FRAME_PAYLOAD


def frame_length(remaining: int, window: int) -> int:
    """Data bytes of the next frame (pure): as much as the send window allows, at most one
    Noise message's worth, or a wide frame's where the window holds two of them."""
    cap = WIDE_FRAME_PAYLOAD if window >= 2 * WIDE_FRAME_PAYLOAD else FRAME_PAYLOAD
    return min(window, cap, remaining)


async def credit_after_read(stream: Any, *, bytes_read: int = 0) -> None:
    """Send the sender the credit it is short of (`credit_due`)."""
    del bytes_read  # what was read is already missing from the window: it needs no credit of its own
    if stream.recv_closed:  # the sender has finished (Kubo and Helia close each message's stream)
        return
    async with stream.window_lock:
        delta = credit_due(stream)
    if delta:
        await stream.send_window_update(delta, skip_lock=True)


def credit_due(stream: Any) -> int:
    """The credit a stream's sender is short of, taken from its window: none until that is at
    least the hysteresis threshold (half a window), growing the target window as py-libp2p's
    auto-tuning does; a sender that closed its side gets none (py-libp2p sent it a frame it
    could not use)."""
    if stream.recv_closed:
        return 0
    buffered = len(stream.conn.stream_buffers.get(stream.stream_id, b""))
    delta = stream.target_recv_window - (stream.recv_window + buffered)
    if delta <= 0 or delta < stream.target_recv_window // 2:  # py-libp2p: half a window
        return 0
    stream.recv_window += delta
    return delta + stream._apply_autotune_epoch(buffered)


async def send(stream: Any, data: bytes | memoryview) -> None:
    """YamuxStream.write: `data` in frames (`frame_length`), as many as the send window allows
    (until they hold BATCH_BYTES of data) written together, waiting for credit whenever the
    window is spent."""
    from libp2p.stream_muxer.exceptions import MuxedStreamError

    if stream.send_closed:
        raise MuxedStreamError("Stream is closed for sending")
    view = memoryview(data).cast("B")
    sent = 0
    while sent < len(view):
        frames = await _cut_frames(stream, view, sent)
        while not frames:
            await _wait_for_credit(stream)
            frames = await _cut_frames(stream, view, sent)
        await stream.conn._write_frames(frames)
        sent += sum(len(frame) for frame in frames) - HEADER_SIZE * len(frames)


async def send_soon(stream: Any, data: bytes) -> None:
    """`send` of a few bytes nobody waits for (the answer owed to a dialer that went on
    without it): `queue_data`, or `send` where that cannot be."""
    if not queue_data(stream, data, now=False):
        await send(stream, data)


def queue_data(stream: Any, data: bytes, now: bool) -> bool:
    """`data` queued on a stream nobody else writes to yet, waiting for nothing (the
    connection's reader sends so: it must never wait for credit, which only it brings in).
    It leaves at once in a task of its own when `now` (the peer waits for it), else with the
    next frame written on the connection, ACK_DELAY at most: not in a Noise message and a
    socket write of its own. False, and nothing queued, when the stream is closed, `data` is
    over its send window or one frame, or the connection is not running. No lock: with no
    await between taking the window and queueing the frame, nothing can come between."""
    conn = stream.conn
    if stream.send_closed or stream.closed or len(data) > min(stream.send_window, FRAME_PAYLOAD):
        return False
    frame = header(TYPE_DATA, 0, stream.stream_id, len(data)) + data
    if now:
        nursery = conn.__dict__.get("_nursery")
        if nursery is None:
            return False
        _frame_queue(conn).add(frame)
        nursery.start_soon(_flush, conn, _frame_queue(conn))
    elif not queue_frame(conn, frame):
        return False
    stream.send_window -= len(data)
    return True


async def _cut_frames(stream: Any, view: memoryview, sent: int) -> list[bytes]:
    """The next frames from `view[sent:]` as far as the send window allows, the window taken
    (none: no window left)."""
    from libp2p.stream_muxer.exceptions import MuxedStreamError

    frames: list[bytes] = []
    async with stream.rw_lock.write_lock():
        if stream.send_closed:
            raise MuxedStreamError("Stream is closed for sending")
        async with stream.window_lock:
            if stream.closed:
                raise MuxedStreamError("Stream is closed")
            batched = 0
            while sent < len(view) and stream.send_window > 0 and batched < BATCH_BYTES:
                n = frame_length(len(view) - sent, stream.send_window)
                stream.send_window -= n
                frames.append(header(TYPE_DATA, 0, stream.stream_id, n) + view[sent:sent + n])
                sent += n
                batched += n
    return frames


async def _wait_for_credit(stream: Any) -> None:
    from libp2p.stream_muxer.exceptions import MuxedStreamError

    stream._zero_window_waits += 1
    with trio.move_on_after(CREDIT_WAIT) as waited:
        while stream.send_window <= 0 and not stream.closed:
            opened = stream.__dict__.get("_credit_came")
            if opened is None:
                opened = stream._credit_came = trio.Event()
            with trio.move_on_after(CLOSED_CHECK):
                await opened.wait()
    if waited.cancelled_caught:
        raise MuxedStreamError(f"Timed out waiting for window update after {CREDIT_WAIT:g} seconds.")


def _get_send_window(stream: Any) -> int:
    return stream.__dict__["_send_window"]


def _set_send_window(stream: Any, value: int) -> None:
    """Every change of a stream's send window goes through here (py-libp2p assigns it in
    several places): a rise wakes a sender waiting for credit."""
    rose = value > stream.__dict__.get("_send_window", 0)
    stream.__dict__["_send_window"] = value
    if rose:
        opened = stream.__dict__.pop("_credit_came", None)
        if opened is not None:
            opened.set()


def pack_frames(frames: list[bytes], limit: int = NOISE_PLAINTEXT) -> list[bytes]:
    """Frames joined, in order, into pieces of at most `limit` bytes, none cut in two (a
    frame over the limit is a piece of its own, which Noise splits as it must)."""
    pieces: list[bytes] = []
    group: list[bytes] = []
    size = 0
    for frame in frames:
        if group and size + len(frame) > limit:
            pieces.append(b"".join(group))
            group, size = [], 0
        group.append(frame)
        size += len(frame)
    if group:
        pieces.append(b"".join(group))
    return pieces


class FrameQueue:
    """Frames waiting for a connection's writer, numbered in the order they came (pure)."""

    def __init__(self) -> None:
        self._frames: list[bytes | None] = []  # numbers taken + 1 ... queued; None: withdrawn
        self.queued = 0  # number of the last frame queued
        self.taken = 0  # ... of the last one taken to be written
        self._lost: tuple[int, int, BaseException] | None = None  # the numbers of a failed write

    def add(self, frame: bytes) -> int:
        self._frames.append(frame)
        self.queued += 1
        return self.queued

    def withdraw(self, number: int) -> None:
        """Its writer gave up before anyone took the frame: it never leaves (taken: too late)."""
        if number > self.taken:
            self._frames[number - self.taken - 1] = None

    def take(self) -> list[bytes]:
        """Every frame waiting, in order."""
        frames, self._frames = self._frames, []
        self.taken = self.queued
        return [frame for frame in frames if frame is not None]

    def written(self, number: int) -> bool:
        """Whether frame `number` was taken by a write (which may have failed: `lost`)."""
        return number <= self.taken

    def fail(self, first: int, last: int, error: BaseException) -> None:
        """Frames `first` to `last` went to a write that failed with `error` (kept without
        its traceback, which would hold the whole batch)."""
        self._lost = (first, last, _same_kind(error))

    def lost(self, number: int) -> BaseException | None:
        """Why frame `number`, written by another task's write, did not go out (None: it did)."""
        if self._lost is not None and self._lost[0] <= number <= self._lost[1]:
            return _same_kind(self._lost[2])
        return None


def _same_kind(error: BaseException) -> BaseException:
    """A fresh error of the kind py-libp2p's callers tell apart (a closed connection is
    ignored where a window update fails; anything else is a broken connection)."""
    from libp2p.io.exceptions import ConnectionClosedError
    from libp2p.network.connection.exceptions import RawConnError

    if isinstance(error, ConnectionClosedError):
        return ConnectionClosedError(str(error), error.close_code, error.close_reason, error.transport)
    return RawConnError(f"the connection failed writing: {error}")


def is_bare_ack(frame: bytes) -> bool:
    """A window update that only acknowledges a stream (no credit, no other flag)."""
    if len(frame) != HEADER_SIZE:
        return False
    _, kind, flags, _, length = FRAME_HEADER.unpack(frame)
    return kind == TYPE_WINDOW_UPDATE and flags == FLAG_ACK and length == 0


async def write_frame(conn: Any, frame: bytes) -> None:
    """Yamux._write_frame: the frame leaves with every other one queued meanwhile; returns
    once it was handed to the connection, or raises as the write that carried it failed.
    A bare ACK returns at once and leaves with the next frame (`ACK_DELAY` at most)."""
    if is_bare_ack(frame) and queue_frame(conn, frame):
        return
    await write_frames(conn, [frame])


async def write_frames(conn: Any, frames: list[bytes]) -> None:
    """`write_frame` of several frames, in order, in one write with whatever else is queued."""
    queue = _frame_queue(conn)
    for frame in frames:
        number = queue.add(frame)
    try:
        await conn._write_lock.acquire()
    except BaseException:  # cancelled while waiting: the frames must not leave later, unasked
        for withdrawn in range(number - len(frames) + 1, number + 1):
            queue.withdraw(withdrawn)
        raise
    try:
        if not queue.written(number):  # nobody took them along yet: this task writes them all
            await _write_queued(conn, queue)
        elif (error := queue.lost(number)) is not None:
            raise error
    finally:
        conn._write_lock.release()
    await trio.lowlevel.checkpoint()


def queue_frame(conn: Any, frame: bytes) -> bool:
    """A frame that leaves with the connection's next write, ACK_DELAY at most; False, and
    nothing queued, when that cannot be arranged (the connection is not running)."""
    queue = _frame_queue(conn)
    if not _flush_later(conn, queue):
        return False
    queue.add(frame)
    return True


async def flush(conn: Any) -> None:
    """Whatever frames are queued on the connection leave now."""
    await _flush(conn, _frame_queue(conn))


def _frame_queue(conn: Any) -> FrameQueue:
    queue = conn.__dict__.get("_frame_queue")
    if queue is None:
        queue = conn._frame_queue = FrameQueue()
    return queue


def _flush_later(conn: Any, queue: FrameQueue) -> bool:
    """Make sure what is queued leaves within ACK_DELAY; False when that cannot be arranged
    (no nursery: the connection is not running)."""
    if conn.__dict__.get("_flush_due"):
        return True
    nursery = getattr(conn, "_nursery", None)
    if nursery is None:
        return False
    nursery.start_soon(_flush_after_delay, conn, queue)
    conn._flush_due = True
    return True


async def _flush_after_delay(conn: Any, queue: FrameQueue) -> None:
    await trio.sleep(ACK_DELAY)
    conn._flush_due = False
    await _flush(conn, queue)


async def _flush(conn: Any, queue: FrameQueue) -> None:
    async with conn._write_lock:
        if queue.queued > queue.taken:  # nobody wrote meanwhile
            try:
                await _write_queued(conn, queue)
            except Exception:  # the connection failed: its reader and writers hear of it
                pass


async def read_after_flush(stream: Any, n: int | None = -1) -> bytes:
    """YamuxStream.read; but when it would wait for the peer, the frames held back on the
    connection (ACKs, answers) leave first: the peer may be waiting for them (js-libp2p
    waits for our protocol answer before it closes its side, and we read until it does)."""
    conn = stream.conn
    queue = conn.__dict__.get("_frame_queue")
    if (queue is not None and queue.queued > queue.taken and not stream.recv_closed
            and not conn.stream_buffers.get(stream.stream_id)):
        await _flush(conn, queue)
    return await _read_waiting(stream, n)


_read_waiting: Any = None  # py-libp2p's YamuxStream.read


async def _write_queued(conn: Any, queue: FrameQueue) -> None:
    """Write every queued frame. Shielded (other tasks' frames ride along, and a write cut off
    halfway would leave a torn Noise message), but for WRITE_LIMIT at most: a connection whose
    peer stopped reading is closed rather than holding every task that writes to it."""
    from libp2p.network.connection.exceptions import RawConnError

    first = queue.taken + 1
    frames = queue.take()
    try:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + WRITE_LIMIT) as scope:
            await noise_io.write_sealed(conn.secured_conn, pack_frames(frames))
        if scope.cancelled_caught:
            raise RawConnError(f"the peer read nothing for {WRITE_LIMIT:g} s: connection closed")
    except BaseException as exc:
        queue.fail(first, queue.taken, exc)
        if scope.cancelled_caught:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 1):
                await conn.secured_conn.close()
        raise


def _with_prompt_locks(cls: type, names: tuple[str, ...]) -> None:
    init = cls.__init__
    if getattr(init, "prompt_locks", False):
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        for name in names:
            setattr(self, name, PromptLock())

    __init__.prompt_locks = True  # type: ignore[attr-defined]
    cls.__init__ = __init__


def install() -> None:
    """Use all of the above for every Yamux stream of this process (idempotent)."""
    from libp2p.network.stream.net_stream import NetStream
    from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

    global _read_waiting
    if YamuxStream.read is not read_after_flush:
        _read_waiting = YamuxStream.read
        YamuxStream.read = read_after_flush
    YamuxStream._auto_tune_and_send_window_update = credit_after_read
    YamuxStream.write = send
    YamuxStream.send_window = property(_get_send_window, _set_send_window)
    Yamux._write_frame = write_frame
    Yamux._write_frames = write_frames
    _with_prompt_locks(Yamux, ("streams_lock",))
    _with_prompt_locks(YamuxStream, ("window_lock", "close_lock"))
    _with_prompt_locks(NetStream, ("_state_lock",))
