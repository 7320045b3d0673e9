"""Name records: one signed msgpack record per write, as replication ships them."""

from __future__ import annotations

from dataclasses import dataclass

import msgpack
from edgefiles.node.identity import NodeKey, verify

FORMAT_VERSION = 1


class BadRecord(ValueError):
    """Bytes that are not a well-formed, correctly signed record."""


@dataclass(frozen=True, slots=True)
class NameRecord:
    namespace: str
    name: str
    cid: bytes | None  # None is a tombstone
    clock: tuple[int, int]  # hybrid logical clock: (wall ms, logical counter)
    writer: bytes  # peer id bytes of the signing node
    signature: bytes = b""
    version: int = FORMAT_VERSION

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @property
    def order(self) -> tuple[int, int, bytes]:
        return self.clock[0], self.clock[1], self.writer


def signed_bytes(rec: NameRecord) -> bytes:
    return msgpack.packb(
        [rec.version, rec.namespace, rec.name, rec.cid, rec.clock[0], rec.clock[1], rec.writer],
        use_bin_type=True,
    )


def sign(key: NodeKey, namespace: str, name: str, cid: bytes | None, clock: tuple[int, int]) -> NameRecord:
    unsigned = NameRecord(namespace, name, cid, clock, key.peer_id_bytes)
    return NameRecord(namespace, name, cid, clock, key.peer_id_bytes, key.sign(signed_bytes(unsigned)))


def is_valid(rec: NameRecord) -> bool:
    return verify(rec.writer, signed_bytes(rec), rec.signature)


def encode(rec: NameRecord) -> bytes:
    fields = [rec.version, rec.namespace, rec.name, rec.cid, *rec.clock, rec.writer, rec.signature]
    return msgpack.packb(fields, use_bin_type=True)


def decode(data: bytes) -> NameRecord:
    try:
        fields = msgpack.unpackb(data, raw=False)
        version, namespace, name, cid, ms, counter, writer, signature = fields
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BadRecord(f"malformed name record: {exc}") from exc
    if version != FORMAT_VERSION:
        raise BadRecord(f"unknown record version {version!r}")
    if not (
        isinstance(namespace, str)
        and isinstance(name, str)
        and (cid is None or isinstance(cid, bytes))
        and isinstance(ms, int)
        and isinstance(counter, int)
        and isinstance(writer, bytes)
        and isinstance(signature, bytes)
    ):
        raise BadRecord("name record fields have the wrong types")
    return NameRecord(namespace, name, cid, (ms, counter), writer, signature, version)
