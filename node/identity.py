"""The node's Ed25519 key: its libp2p peer id, token and name-record signatures.

Stored as libp2p stores an identity (protobuf PrivateKey: 08 01 12 20 + 32-byte seed), so
the same file is the libp2p host's key and the peer id is stable across restarts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEY_PREFIX = b"\x08\x01\x12\x20"  # protobuf: KeyType Ed25519, 32 data bytes


@dataclass(frozen=True)
class NodeKey:
    seed: bytes

    @cached_property
    def private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def peer_id_bytes(self) -> bytes:
        return peer_id_from_public(self.public)

    @property
    def peer_id(self) -> str:
        return peer_id_text(self.peer_id_bytes)

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def peer_id_from_public(public: bytes) -> bytes:
    """Identity multihash of the protobuf PublicKey, as libp2p derives Ed25519 peer ids."""
    encoded = KEY_PREFIX + public
    return bytes([0x00, len(encoded)]) + encoded


def peer_id_text(peer_id: bytes) -> str:
    from multiformats import multibase

    return multibase.encode(peer_id, "base58btc")[1:]


def verify(peer_id: bytes, message: bytes, signature: bytes) -> bool:
    """Whether `signature` over `message` was made by the key inside an Ed25519 peer id."""
    if len(peer_id) != 38 or peer_id[:2] != b"\x00\x24" or peer_id[2:6] != KEY_PREFIX:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(peer_id[6:]).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def load_or_create(path: Path) -> NodeKey:
    if path.exists():
        raw = path.read_bytes()
        if len(raw) != 36 or raw[:4] != KEY_PREFIX:
            raise ValueError(f"{path} is not an Ed25519 node key")
        return NodeKey(raw[4:])
    seed = os.urandom(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, KEY_PREFIX + seed)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return NodeKey(seed)
