"""Node-signed bearer tokens: `<payload>.<signature>`, Ed25519 by the node key, with expiry."""

from __future__ import annotations

import base64
import binascii
import json
import time
from urllib.parse import unquote_plus

from edgefiles.node.identity import NodeKey, verify
from starlette.requests import Request

from .errors import MissingAuth, TokenExpired, TokenInvalid, UnsupportedAuthType

COOKIE = "edgefiles_token"
TOKEN_PARAMETER = "access_token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """The bytes of unpadded base64url text in its one canonical spelling: a padded copy, or
    one whose last character carries stray bits, would be a second spelling of one token."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data


def cookie_values(headers: list[str], name: str) -> list[str]:
    """Every value the Cookie headers give `name`, in order: a browser sends a second cookie of
    the same name when another host of the site set one for the whole domain."""
    values = []
    for header in headers:
        for pair in header.split(";"):
            key, sep, value = pair.strip().partition("=")
            if sep and key.strip() == name:
                values.append(value.strip().strip('"'))
    return values


class TokenAuthority:
    def __init__(self, key: NodeKey, ttl: float, trusted_apps: frozenset[str] = frozenset()):
        self.key = key
        self.ttl = ttl
        self.trusted_apps = trusted_apps
        # a signature checks out or not forever: verify each token once (~60 µs a request)
        self._verified: dict[str, dict] = {}

    def is_trusted(self, app_id: str) -> bool:
        if not app_id.isprintable() or " " in app_id:  # it travels in every token, and in logs
            return False
        return (app_id.startswith("com.example.") and app_id != "com.example.") or app_id in self.trusted_apps

    def issue(self, app_id: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        payload = json.dumps(
            # to the millisecond: whole seconds cut a 2 s token's life to as little as 1 s
            {"app": app_id, "iat": int(now), "exp": round(now + self.ttl, 3), "node": self.key.peer_id},
            separators=(",", ":"),
        ).encode()
        return f"{_b64(payload)}.{_b64(self.key.sign(payload))}"

    def check(self, token: str) -> dict:
        """The token's claims; TokenInvalid or TokenExpired otherwise."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify(token)
            if len(self._verified) >= 4096:
                self._verified.clear()
            self._verified[token] = claims
        if claims.get("exp", 0) <= time.time():
            raise TokenExpired()
        return claims

    def _verify(self, token: str) -> dict:
        invalid = TokenInvalid(
            f"Invalid token: '{token[:100]}'. Not a signed token. Please provide a valid bearer token."
        )
        try:
            payload_text, sig_text = token.split(".")
            payload, signature = _unb64(payload_text), _unb64(sig_text)
        except (ValueError, binascii.Error):
            raise invalid from None
        if not verify(self.key.peer_id_bytes, payload, signature):
            raise invalid
        return json.loads(payload)

    def token_of(self, request: Request) -> str:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, value = header.strip().partition(" ")
            if scheme.lower() != "bearer":
                raise UnsupportedAuthType(f"Unsupported authorization type {scheme!r}; use Bearer.")
            return value.strip()
        query = request.query_params.get(TOKEN_PARAMETER)
        if query is not None:
            return query
        raise MissingAuth()

    def require(self, request: Request, allow_cookie: bool = False) -> dict:
        """The claims of the request's token: its header's, else its query's, else (with
        `allow_cookie`) the first of its cookies that checks out."""
        try:
            return self.check(self.token_of(request))
        except MissingAuth:
            cookies = cookie_values(request.headers.getlist("cookie"), COOKIE) if allow_cookie else []
            if not cookies:
                raise
        refusals: list[Exception] = []
        for token in cookies:
            try:
                return self.check(token)
            except (TokenInvalid, TokenExpired) as exc:
                refusals.append(exc)
        raise refusals[0]


def without_token(query: str) -> str:
    """A raw query string less its token (however its name is percent-encoded, as the token
    is read): what a header the answer carries may repeat of it."""
    return "&".join(part for part in query.split("&")
                    if part and unquote_plus(part.partition("=")[0]) != TOKEN_PARAMETER)
