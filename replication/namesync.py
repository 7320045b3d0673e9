"""Name records across the swarm: gossipsub for news, a table exchange on every join.

Gossip payloads are sealed with a key derived from the swarm key (ChaCha20-Poly1305), so a
peer that is connected but not a member learns nothing from them and cannot inject any.
Gossip may still lose a message, so whenever two members meet each offers the other its
table: a digest first; when it differs, the other side answers with the digests of the
table's 256 buckets (records grouped by a hash of their key), and only the records of the
buckets that differ follow. The merge (last writer wins) then repairs whatever was missed:
two nodes in step exchange a few bytes, a node that missed one update gets about 1/256 of
the table.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import random
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgpack
import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from edgefiles.ans import record as rec_mod
from edgefiles.ans.record import NameRecord

from .framing import frame, read_frames
from .membership import MEMBER, Membership

log = logging.getLogger("edgefiles.names")

EXCHANGE = "/edgefiles/names/2.0.0"  # 2: digest first, then bucket digests, then records
INTRODUCE = "/edgefiles/peers/1.0.0"  # where a member listens, passed on to the other members
MAX_INTRODUCTION = 64 << 10
MAX_EXCHANGE = 256 << 20
BUCKETS = 256
DIGEST = 32  # bytes of one bucket digest (SHA-256)
GOSSIP_BATCH = 512 << 10
BURST = 1 << 16  # gossipsub queue sizes: drops only beyond this many queued messages
RECHECK_EVERY = 5.0  # seconds (jittered) between offers of our table to one random member


class Seal:
    """Authenticated encryption of gossip payloads under the swarm key."""

    def __init__(self, swarm_key: bytes):
        derived = hmac.new(swarm_key, b"edgefiles names gossip v1", hashlib.sha256).digest()
        self._aead = ChaCha20Poly1305(derived)
        self.topic = "edgefiles/names/" + hashlib.sha256(b"topic" + derived).hexdigest()[:32]

    def seal(self, payload: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, payload, self.topic.encode())

    def open(self, sealed: bytes) -> bytes | None:
        if len(sealed) < 28:
            return None
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], self.topic.encode())
        except InvalidTag:
            return None


def pack_records(encoded: list[bytes]) -> bytes:
    return msgpack.packb(encoded, use_bin_type=True)


def unpack_records(payload: bytes) -> list[NameRecord]:
    """Records from a payload; malformed entries are dropped (signatures are checked on apply)."""
    try:
        items = msgpack.unpackb(payload, raw=False)
    except (ValueError, msgpack.UnpackException):
        return []
    out = []
    for item in items if isinstance(items, list) else []:
        try:
            out.append(rec_mod.decode(item))
        except (rec_mod.BadRecord, TypeError):
            continue
    return out


Key = tuple[str, str]  # (namespace, name)
Apply = Callable[[list[NameRecord]], Awaitable[None]]
Digests = Callable[[], Awaitable[list[bytes]]]  # the table's bucket digests
Records = Callable[[Iterable[int]], Awaitable[list[bytes]]]  # the encoded records of these buckets


class NameSync:
    def __init__(self, host: Any, membership: Membership, swarm_key: bytes, nursery: trio.Nursery,
                 apply: Apply, digests: Digests, records: Records):
        self.host = host
        self.members = membership
        self.seal = Seal(swarm_key)
        self._nursery = nursery
        self._apply = apply
        self._digests = digests
        self._records = records
        self._outgoing: deque[bytes] = deque()
        self._publish_now = trio.Event()
        self.pubsub: Any = None
        self._listen_addrs: dict[Any, list[str]] = {}
        self.records_sent = 0  # in table exchanges (gossip not counted)
        self.exchanges = 0  # table exchanges finished, offered or answered

    async def start(self) -> None:
        from libp2p.custom_types import TProtocol

        self.host.set_stream_handler(TProtocol(EXCHANGE), self.members.gate(self._receive_table))
        self.host.set_stream_handler(TProtocol(INTRODUCE), self.members.gate(self._introduced))
        self.members.on_admitted.add(self._send_table)
        await self._start_gossip()
        self._nursery.start_soon(self._publisher)
        self._nursery.start_soon(self._recheck)

    # local writes (handed over by the host's bridge) ---------------------------------------
    def publish(self, encoded: bytes) -> None:
        """Queue a record for the next gossip batch (trio side, synchronous)."""
        self._outgoing.append(encoded)
        self._publish_now.set()

    async def _publisher(self) -> None:
        while True:
            await self._publish_now.wait()
            self._publish_now = trio.Event()
            while self._outgoing:
                batch, size = [], 0
                while self._outgoing and size < GOSSIP_BATCH:
                    item = self._outgoing.popleft()
                    batch.append(item)
                    size += len(item)
                try:
                    await self.pubsub.publish(self.seal.topic, self.seal.seal(pack_records(batch)))
                except Exception as exc:  # the full exchange on the next join repairs it
                    log.warning("could not gossip %d name records: %s", len(batch), exc)

    # gossip -----------------------------------------------------------------------------
    async def _start_gossip(self) -> None:
        from libp2p.pubsub import pubsub as pubsub_mod
        from libp2p.pubsub import rpc_queue
        from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
        from libp2p.tools.anyio_service import background_trio_service

        # Queue sizes are module defaults in py-libp2p; beyond them messages vanish silently.
        defaults = rpc_queue.RpcQueue.__init__.__defaults__ or ()
        rpc_queue.RpcQueue.__init__.__defaults__ = (BURST, *defaults[1:])
        pubsub_mod.SUBSCRIPTION_CHANNEL_SIZE = BURST
        router = GossipSub(
            [PROTOCOL_ID_V11, PROTOCOL_ID], degree=6, degree_low=4, degree_high=12,
            heartbeat_interval=1, adaptive_gossip_enabled=False, spam_protection_enabled=False,
            eclipse_protection_enabled=False, max_pending_messages_per_peer=BURST,
        )
        self.pubsub = pubsub_mod.Pubsub(self.host, router)
        # py-libp2p numbers messages from the clock in seconds, one more per message: a node
        # restarted after publishing more messages than seconds went by reused numbers that
        # peers still remembered as seen, and they dropped its news. Nanoseconds, as Go's.
        self.pubsub.counter = time.time_ns()
        for proto in router.get_protocols():  # members only: re-register pubsub's handler gated
            self.host.set_stream_handler(proto, self.members.gate(self.pubsub.stream_handler))
        await self._nursery.start(_run_service, background_trio_service, router)
        await self._nursery.start(_run_service, background_trio_service, self.pubsub)
        await self.pubsub.wait_until_ready()
        subscription = await self.pubsub.subscribe(self.seal.topic)
        self._nursery.start_soon(self._listen, subscription)

    async def _listen(self, subscription: Any) -> None:
        me = self.host.get_id().to_bytes()
        while True:
            message = await subscription.get()
            if message.from_id == me:  # gossipsub hands a publisher its own messages back
                continue
            payload = self.seal.open(message.data)
            if payload is None:
                log.warning("dropping a names gossip message that is not sealed with our swarm key")
                continue
            origin, now, limiter = message.from_id, trio.current_time(), self.members.limiter
            records = unpack_records(payload)
            flooding = not limiter.take("messages", origin, 1, now)
            if flooding or not limiter.take("records", origin, len(records), now):
                continue  # a flood: what it held that matters comes back in a table exchange
            if records:
                await self._apply(records)

    # table exchange on join, and now and then -------------------------------------------
    async def _recheck(self) -> None:
        """Offer our table to one random member every few seconds. Joins and gossip are not
        enough: a record gossiped into a mesh that has not re-formed yet (a peer restarted
        under the same identity a moment ago) is lost, and with no join after it the tables
        would stay apart for good (seen in the soak with nodes killed and restarted). In
        step, this costs one digest each way."""
        rng = random.Random()
        while True:
            await trio.sleep(RECHECK_EVERY * rng.uniform(0.5, 1.5))
            members = self.members.members()
            if members:
                await self._send_table(rng.choice(members))

    async def _send_table(self, peer: Any) -> None:
        """Offer our table to a member that just joined: hello with a digest; the records
        follow only if it answers that its table differs."""
        from libp2p.custom_types import TProtocol

        if not await self.members.admitted(peer, MEMBER):
            return
        buckets = await self._digests()
        hello = {
            "addrs": [str(a) for a in self.host.get_addrs()],
            "peers": self._member_addrs(exclude=peer),
            "digest": table_digest(buckets),
        }
        try:
            with trio.fail_after(60):
                stream = await self.host.new_stream(peer, [TProtocol(EXCHANGE)])
                await stream.write(_frame(hello))
                answer = await anext(read_frames(stream, BUCKETS * DIGEST + 1024), None)
                answer = msgpack.unpackb(answer, raw=False) if answer is not None else {}
                if answer.get("want"):
                    records = await self._records(differing_buckets(buckets, answer.get("buckets")))
                    await stream.write(_frame({"records": records}))
                    self.records_sent += len(records)
                await stream.close()
            self.exchanges += 1
        except Exception as exc:
            log.debug("name table to %s not sent: %s", peer, exc)

    async def _receive_table(self, stream: Any) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            frames = read_frames(stream, MAX_EXCHANGE)
            hello = msgpack.unpackb(await anext(frames), raw=False)
            own = [a for a in hello.get("addrs", []) if isinstance(a, str) and a.endswith(f"/p2p/{peer}")]
            if own and own != self._listen_addrs.get(peer):
                self._introduce(peer, own)
            self._listen_addrs[peer] = own
            for addr in own + hello.get("peers", []):
                self.members.keep_connected(addr)
            buckets = await self._digests()
            want = hello.get("digest") != table_digest(buckets)
            answer = {"want": True, "buckets": b"".join(buckets)} if want else {"want": False}
            await stream.write(_frame(answer))
            if want:
                offered = msgpack.unpackb(await anext(frames), raw=False).get("records", [])
                records = [r for r in map(_decode_or_none, offered) if r]
                if records:
                    await self._apply(records)
            self.exchanges += 1
        except StopAsyncIteration:
            log.debug("name table exchange with %s ended early", peer)
        except Exception as exc:
            log.warning("bad name table from %s: %r", peer, exc)

    # introductions: members that joined at the same moment learn of each other ---------------
    def _introduce(self, newcomer: Any, addrs: list[str]) -> None:
        """Tell every other member where a newcomer listens. Two nodes that join through us at
        the same moment each get our member list before the other is on it; this way each
        hears of the other, whichever of them we heard from first."""
        payload = _frame({"peers": addrs})
        for member in self.members.members():
            if member != newcomer:
                self._nursery.start_soon(self._send_introduction, member, payload)

    async def _send_introduction(self, member: Any, payload: bytes) -> None:
        from libp2p.custom_types import TProtocol

        try:
            with trio.fail_after(10):
                stream = await self.host.new_stream(member, [TProtocol(INTRODUCE)])
                await stream.write(payload)
                await stream.close()
        except Exception as exc:
            log.debug("introduction to %s not sent: %s", member, exc)

    async def _introduced(self, stream: Any) -> None:
        try:
            body = await anext(read_frames(stream, MAX_INTRODUCTION), None)
            introduced = msgpack.unpackb(body, raw=False) if body is not None else {}
            for addr in introduced.get("peers", []) if isinstance(introduced, dict) else []:
                if isinstance(addr, str):
                    self.members.keep_connected(addr)
        except Exception as exc:
            log.warning("bad introduction from %s: %r", stream.muxed_conn.peer_id, exc)
        finally:
            try:
                await stream.close()
            except Exception:
                pass

    def _member_addrs(self, exclude: Any) -> list[str]:
        return [a for p in self.members.members() if p != exclude for a in self._listen_addrs.get(p, [])]


def bucket_of(key: Key) -> int:
    """The bucket of a name: the same on every node, whatever the record's version."""
    namespace, name = key
    return zlib.crc32(f"{namespace}\0{name}".encode()) % BUCKETS


class BucketedTable:
    """The name table as the exchange sees it: encoded records in buckets, each bucket's digest
    kept until a record of it changes, so a join hashes only the buckets changed since the last."""

    def __init__(self) -> None:
        self._buckets: list[dict[Key, bytes]] = [{} for _ in range(BUCKETS)]
        self._digests: list[bytes | None] = [None] * BUCKETS

    def put(self, key: Key, encoded: bytes) -> None:
        bucket = bucket_of(key)
        self._buckets[bucket][key] = encoded
        self._digests[bucket] = None

    def put_record(self, record: NameRecord, _previous: NameRecord | None = None) -> None:
        """As a registry listener: every record that won, tombstones included."""
        self.put(record.key, rec_mod.encode(record))

    def digests(self) -> list[bytes]:
        """One per bucket, equal exactly when the buckets hold the same records."""
        for i, digest in enumerate(self._digests):
            if digest is None:
                h = hashlib.sha256()
                for item in sorted(self._buckets[i].values()):
                    h.update(len(item).to_bytes(4, "big") + item)
                self._digests[i] = h.digest()
        return list(self._digests)  # type: ignore[arg-type]

    def records(self, buckets: Iterable[int]) -> list[bytes]:
        return [encoded for i in buckets for encoded in self._buckets[i].values()]


def table_digest(buckets: list[bytes]) -> bytes:
    return hashlib.sha256(b"".join(buckets)).digest()


def differing_buckets(ours: list[bytes], theirs: object) -> Iterable[int]:
    """Buckets whose digests differ from the other side's (`theirs`: its digests joined);
    every bucket when `theirs` is not a well-formed list of them."""
    if not isinstance(theirs, bytes) or len(theirs) != BUCKETS * DIGEST:
        return range(BUCKETS)
    return [i for i, digest in enumerate(ours) if theirs[i * DIGEST : (i + 1) * DIGEST] != digest]


def _frame(obj: dict) -> bytes:
    return frame(msgpack.packb(obj, use_bin_type=True))


def _decode_or_none(item: Any) -> NameRecord | None:
    try:
        return rec_mod.decode(item)
    except (rec_mod.BadRecord, TypeError):
        return None


async def _run_service(runner: Any, service: Any, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with runner(service):
        task_status.started()
        await trio.sleep_forever()
