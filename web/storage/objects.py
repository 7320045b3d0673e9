"""The Storage API's objects: files of the named-files layer, one namespace per organization
(`storage/<org id>`, files named `<user id>/<unique name>`), their bytes sealed with the
organization's key, their plaintext size, original name, category and bucket in the record's
metadata, so they replicate (and usage converges) with the names.

Threads: the event loop only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from edgefiles.ans.accounts import Accounts, User, iso
from edgefiles.ans.files import FileInfo, NamedFiles
from edgefiles.ans.orgkeys import OrgKeys
from edgefiles.node.core import Imported

from ..errors import Forbidden, NotFound, PayloadTooLarge
from ..formfile import FormFile, Seal
from .rules import StorageSettings


@dataclass(frozen=True)
class StoredObject:
    info: FileInfo
    org_id: str
    user_id: str
    object_name: str

    @property
    def meta(self) -> dict[str, Any]:
        return self.info.metadata

    @property
    def original_name(self) -> str:
        return str(self.meta.get("original_name") or self.object_name)

    @property
    def file_name(self) -> str:
        return file_name(self.user_id, self.object_name)

    @property
    def key(self) -> str:
        return f"organizations/{self.org_id}/files/{self.user_id}/{self.object_name}"

    def view(self) -> dict[str, Any]:
        """The API's file object."""
        user_meta = self.meta.get("metadata")
        return {"object_name": self.object_name, "original_name": self.original_name, "key": self.key,
                "size": self.info.size, "content_type": self.info.content_type or "application/octet-stream",
                "category": self.meta.get("category", "general"),
                "metadata": user_meta if isinstance(user_meta, dict) else {},
                "created_at": iso(self.info.created), "bucket": self.meta.get("bucket")}

    def order(self) -> tuple[int, int]:
        """Newest first; uploads of the same millisecond in upload order."""
        uploaded = self.meta.get("uploaded_ns")
        return -self.info.created, uploaded if isinstance(uploaded, int) else 0


def namespace(org_id: str) -> str:
    return f"storage/{org_id}"


def file_name(user_id: str, object_name: str) -> str:
    """An object's name in its organization's namespace: in its user's folder."""
    return f"{user_id}/{object_name}"


class Storage:
    def __init__(self, files: NamedFiles, accounts: Accounts, keys: OrgKeys, settings: StorageSettings,
                 presign_secret: bytes):
        self.files = files
        self.accounts = accounts
        self.keys = keys
        self.settings = settings
        self.presign_secret = presign_secret
        self._reserved: dict[str, int] = {}  # org id -> bytes of uploads being committed

    # reading --------------------------------------------------------------------------
    def quota(self, org_id: str) -> int:
        found = self.accounts.quota(org_id)
        return self.settings.org_quota if found is None else found

    def usage(self, org_id: str) -> dict[str, Any]:
        used, quota = self.files.used(namespace(org_id)), self.quota(org_id)
        percent = round(100.0 * used / quota, 2) if quota else (0.0 if used == 0 else 100.0)
        return {"used_bytes": used, "file_count": self.files.count(namespace(org_id)),
                "quota_bytes": quota, "percent_used": percent}

    def recount(self, org_id: str) -> dict[str, Any]:
        self.files.recount(namespace(org_id))
        return self.usage(org_id)

    def objects(self, user: User) -> list[StoredObject]:
        """The user's objects, newest first."""
        found = [self._object(user.org_id, info) for info in
                 self.files.list(namespace(user.org_id), f"{user.id}/")]
        return sorted(found, key=StoredObject.order)

    def get(self, org_id: str, user_id: str, object_name: str) -> StoredObject | None:
        info = self.files.info(namespace(org_id), file_name(user_id, object_name))
        return None if info is None else self._object(org_id, info)

    def find(self, user: User, object_name: str) -> StoredObject:
        """The user's object of that name; 403 when it is another user's of the same
        organization, 404 when there is none (another organization's is not revealed)."""
        found = self.get(user.org_id, user.id, object_name)
        if found is not None:
            return found
        if any(name.endswith("/" + object_name) for name in self.files.names_in(namespace(user.org_id))):
            raise Forbidden("this object belongs to another user")
        raise NotFound("no such object")

    @staticmethod
    def _object(org_id: str, info: FileInfo) -> StoredObject:
        user_id, _, name = info.name.partition("/")
        return StoredObject(info, org_id, user_id, name)

    # writing --------------------------------------------------------------------------
    async def seal_for(self, org_id: str) -> Seal:
        key_id, key = await self.keys.for_writing(org_id)
        return Seal(key, key_id)

    def room(self, org_id: str) -> int:
        """Bytes the organization may still add (uploads being committed count already)."""
        return self.quota(org_id) - self.files.used(namespace(org_id)) - self._reserved.get(org_id, 0)

    async def store(self, user: User, imported: Imported, form: FormFile, object_name: str,
                    fields: dict[str, Any]) -> StoredObject:
        """Commit an upload as `object_name`, if the organization's quota still has room for
        it once every upload ahead of it is counted: checking and reserving happen in one
        step of the event loop, so of two uploads that together pass the quota one is
        refused (413), and nothing of it is kept."""
        org = user.org_id
        room = self.room(org)
        if form.size > room or room <= 0:  # a full organization takes nothing, not even an empty file
            abandon_and_refuse(self, imported, org, form.size)
        self._reserved[org] = self._reserved.get(org, 0) + form.size
        try:
            info = await self.files.write_imported(
                namespace(org), file_name(user.id, object_name), imported, form.content_type_or_guess,
                {**fields, "uploaded_ns": time.time_ns()}, exists=False, size=form.size)
        finally:
            self._reserved[org] -= form.size
        return self._object(org, info)

    def root(self, found: StoredObject) -> bytes:
        """The root to read for an object (while a newer version is fetched, the previous one)."""
        return self.files.resolve(namespace(found.org_id), found.file_name) or found.info.cid

    async def delete(self, found: StoredObject) -> bool:
        """False when the object was gone already (a delete that came first)."""
        return await self.files.delete(namespace(found.org_id), found.file_name)


def abandon_and_refuse(storage: Storage, imported: Imported, org_id: str, size: int) -> None:
    storage.files.core.store.abandon(imported.batch)
    raise PayloadTooLarge(f"the organization's storage quota ({storage.quota(org_id)} bytes) has no room "
                          f"for {size} more bytes")

