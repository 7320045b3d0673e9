"""Name records: one signed msgpack record per write, as replication ships them."""

from __future__ import annotations

from dataclasses import dataclass

import msgpack
from edgefiles.node.identity import NodeKey, verify

FORMAT_VERSION = 1  # a record without metadata
META_VERSION = 2  # a record with metadata: one more field, signed too


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
    meta: bytes | None = None  # msgpack map the facades keep about the target (see ans/files.py)

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @property
    def order(self) -> tuple[int, int, bytes]:
        return self.clock[0], self.clock[1], self.writer


def _fields(rec: NameRecord) -> list:
    fields = [rec.version, rec.namespace, rec.name, rec.cid, rec.clock[0], rec.clock[1], rec.writer]
    return fields if rec.version == FORMAT_VERSION else [*fields, rec.meta]


def signed_bytes(rec: NameRecord) -> bytes:
    return msgpack.packb(_fields(rec), use_bin_type=True)


def sign(key: NodeKey, namespace: str, name: str, cid: bytes | None, clock: tuple[int, int],
         meta: bytes | None = None) -> NameRecord:
    version = FORMAT_VERSION if meta is None else META_VERSION
    unsigned = NameRecord(namespace, name, cid, clock, key.peer_id_bytes, b"", version, meta)
    return NameRecord(namespace, name, cid, clock, key.peer_id_bytes, key.sign(signed_bytes(unsigned)),
                      version, meta)


def is_valid(rec: NameRecord) -> bool:
    return verify(rec.writer, signed_bytes(rec), rec.signature)


def encode(rec: NameRecord) -> bytes:
    fields = _fields(rec)
    fields.insert(7, rec.signature)  # version 1's layout, the metadata after it
    return msgpack.packb(fields, use_bin_type=True)


def decode(data: bytes) -> NameRecord:
    try:
        fields = msgpack.unpackb(data, raw=False)
        version, namespace, name, cid, ms, counter, writer, signature, *rest = fields
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BadRecord(f"malformed name record: {exc}") from exc
    if (version, len(rest)) not in ((FORMAT_VERSION, 0), (META_VERSION, 1)):
        raise BadRecord(f"unknown record version {version!r} with {len(fields)} fields")
    meta = rest[0] if rest else None
    if not (
        isinstance(namespace, str)
        and isinstance(name, str)
        and (cid is None or isinstance(cid, bytes))
        and isinstance(ms, int)
        and isinstance(counter, int)
        and isinstance(writer, bytes)
        and isinstance(signature, bytes)
        and (version == FORMAT_VERSION or isinstance(meta, bytes))
    ):
        raise BadRecord("name record fields have the wrong types")
    return NameRecord(namespace, name, cid, (ms, counter), writer, signature, version, meta)
