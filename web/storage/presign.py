"""Presigned URLs: a token that names one object, its organization, an expiry and the access
token that asked for it (its hash: revoking that token ends the URL, as deleting an access key
ends S3's), signed with HMAC-SHA256 under a secret every member of the swarm derives from the
swarm key, so any node honours a URL that another node signed. Pure."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import msgpack

MAX_TOKEN = 2048
FORMAT = 1  # the first element of a grant since it names its signer; a grant of four elements came before


@dataclass(frozen=True)
class Grant:
    org_id: str
    user_id: str
    object_name: str
    expires_at: int  # seconds since the epoch
    signer: bytes  # the SHA-256 of the access token that asked for the URL; b"" in a URL of the first format


class BadSignature(ValueError):
    """A token that was not made by a member of this swarm, or was changed since."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, grant: Grant) -> str:
    fields = [FORMAT, grant.org_id, grant.user_id, grant.object_name, grant.expires_at, grant.signer]
    body = msgpack.packb(fields)
    return _b64(body) + "." + _b64(hmac.new(secret, body, hashlib.sha256).digest())


def verify(secret: bytes, token: str) -> Grant:
    """The grant a token carries (expired or not: the caller decides); BadSignature else."""
    body_text, dot, mac_text = token.partition(".")
    if not dot or len(token) > MAX_TOKEN:
        raise BadSignature("not a presigned URL token")
    try:
        body, mac = _unb64(body_text), _unb64(mac_text)
    except ValueError:
        raise BadSignature("not a presigned URL token") from None
    if _b64(body) != body_text or _b64(mac) != mac_text:  # one token per grant: no spare bits
        raise BadSignature("not a presigned URL token")
    if not hmac.compare_digest(mac, hmac.new(secret, body, hashlib.sha256).digest()):
        raise BadSignature("the signature does not match")
    try:
        fields = msgpack.unpackb(body)
        if len(fields) == 4:  # signed before grants named their signer: it lives out its expiry
            fields = [FORMAT, *fields, b""]
        elif len(fields) == 5:  # named its signer, but no format yet
            fields = [FORMAT, *fields]
        version, org_id, user_id, name, expires, signer = fields
    except (ValueError, TypeError, msgpack.UnpackException):
        raise BadSignature("not a presigned URL token") from None
    if version != FORMAT:
        raise BadSignature("not a presigned URL token")
    return Grant(str(org_id), str(user_id), str(name), int(expires), bytes(signer))
