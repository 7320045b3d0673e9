"""Organization data keys, for the Storage API's encryption at rest.

Each organization has a 256-bit data key (more than one when two nodes made one at the same
moment: objects name the key they were sealed with, so none is ever lost). A key travels
between the swarm's members as an account record, sealed under a key derived from the swarm
key, so every member can serve every organization's downloads while IPFS peers admitted with
`--allow-peer` (who never get records) and anyone reading the store's blocks see only
ciphertext. On each node a key is also kept wrapped by the node's own key-encryption key
(`<data>/storage.kek`, made by `edgefiles serve`), so what the node holds stays readable
if the swarm key is rotated.

Threads: the event loop only.
"""

from __future__ import annotations

import asyncio
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from edgefiles.node.db import Database
from edgefiles.node.sealed import KEY_ID_BYTES, derive, new_key

from .accounts import Accounts, OrgKey
from .clock import now_ms

SEAL_INFO = b"edgefiles org keys v1"
STATE_PREFIX = "orgkey/"


def wrap(wrapping_key: bytes, key: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(wrapping_key).encrypt(nonce, key, aad)


def unwrap(wrapping_key: bytes, blob: bytes, aad: bytes) -> bytes | None:
    """The key inside `blob`; None when it was wrapped under another key or changed."""
    try:
        return AESGCM(wrapping_key).decrypt(blob[:12], blob[12:], aad)
    except (InvalidTag, ValueError):
        return None


class OrgKeys:
    def __init__(self, accounts: Accounts, db: Database, kek: bytes, swarm_key: bytes):
        self.accounts = accounts
        self._db = db
        self._kek = kek
        self._seal_key = derive(swarm_key, SEAL_INFO)
        self._keys: dict[str, tuple[str, bytes]] = {}  # key id (hex) -> (organization id, key)
        self._locks: dict[str, asyncio.Lock] = {}
        self._writing: dict[str, tuple[bytes, bytes]] = {}  # org id -> (key id, key) for new objects

    async def load(self) -> None:
        """The keys this node keeps (wrapped by its key-encryption key)."""
        rows = await self._db.fetchall("SELECT key, value FROM state WHERE key >= ? AND key < ?",
                                       (STATE_PREFIX, STATE_PREFIX[:-1] + "0"))
        for name, blob in rows:
            key_id = name[len(STATE_PREFIX):]
            org_id, _, wrapped = blob.partition(b"\x00")
            key = unwrap(self._kek, wrapped, _aad(org_id.decode(errors="replace"), key_id))
            if key is not None:
                self._keys[key_id] = (org_id.decode(), key)

    async def for_writing(self, org_id: str) -> tuple[bytes, bytes]:
        """(key id, key) to seal the organization's new objects with: its oldest key this node
        can open, or a new one (made once per organization, however many uploads ask)."""
        chosen = self._writing.get(org_id)
        if chosen is not None:
            return chosen
        lock = self._locks.setdefault(org_id, asyncio.Lock())
        async with lock:
            chosen = self._writing.get(org_id) or await self._openable(org_id) or await self._new(org_id)
            self._writing[org_id] = chosen
            return chosen

    async def _openable(self, org_id: str) -> tuple[bytes, bytes] | None:
        for record in self.accounts.org_keys(org_id):  # a scan of the accounts: once per organization
            key = await self.key(bytes.fromhex(record.id))
            if key is not None:
                return bytes.fromhex(record.id), key
        return None

    async def _new(self, org_id: str) -> tuple[bytes, bytes]:
        key_id, key = os.urandom(KEY_ID_BYTES), new_key()
        sealed = wrap(self._seal_key, key, _aad(org_id, key_id.hex()))
        await self._keep(org_id, key_id.hex(), key)
        await self.accounts.add_org_key(OrgKey(key_id.hex(), org_id, sealed, now_ms()))
        return key_id, key

    async def key(self, key_id: bytes, org_id: str | None = None) -> bytes | None:
        """The key of that id (of that organization, when given); None when this node has no
        such key or cannot open it (sealed under another swarm key)."""
        hex_id = key_id.hex()
        kept = self._keys.get(hex_id)
        if kept is not None:
            return kept[1] if org_id is None or kept[0] == org_id else None
        record = self.accounts.org_key(hex_id)
        if record is None or (org_id is not None and record.org_id != org_id):
            return None
        found = unwrap(self._seal_key, record.sealed, _aad(record.org_id, hex_id))
        if found is not None:
            await self._keep(record.org_id, hex_id, found)
        return found

    async def _keep(self, org_id: str, key_id: str, key: bytes) -> None:
        """This node's own copy, under its KEK, bound to the organization like the shared one."""
        blob = org_id.encode() + b"\x00" + wrap(self._kek, key, _aad(org_id, key_id))
        async with self._db.transaction() as conn:
            await conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (STATE_PREFIX + key_id, blob))
        self._keys[key_id] = (org_id, key)


def _aad(org_id: str, key_id: str) -> bytes:
    return f"{org_id}/{key_id}".encode()
