"""One error type per HTTP error; every route and facade raises these."""

from __future__ import annotations

import json

from starlette.responses import Response

from .cors import CORS_HEADERS


class ApiError(Exception):
    status = 500
    code = "ERR_INTERNAL"
    default_message = "internal error"

    def __init__(self, message: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.headers = headers or {}

    def response(self) -> Response:
        body = json.dumps({"code": self.code, "message": self.message})
        headers = {**CORS_HEADERS, **self.extra_headers(), **self.headers}
        return Response(body, self.status, headers=headers, media_type="application/json")

    def extra_headers(self) -> dict[str, str]:
        return {}


class BadRequest(ApiError):
    status, code, default_message = 400, "ERR_BAD_REQUEST", "bad request"


class CarInvalid(ApiError):
    status, code, default_message = 400, "ERR_CAR_INVALID", "not a valid CAR v1 archive"


class ManifestInvalid(ApiError):
    status, code, default_message = 400, "ERR_MANIFEST_INVALID", "app manifest is not trusted"


class Unauthorized(ApiError):
    status = 401

    def extra_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class MissingAuth(Unauthorized):
    code, default_message = "ERR_MISSING_AUTH_HEADER", '"Authorization" header is missing.'


class TokenInvalid(Unauthorized):
    code = "ERR_TOKEN_INVALID"


class TokenExpired(Unauthorized):
    code, default_message = "ERR_TOKEN_EXPIRED", "Token expired. Please request a new token."


class UnsupportedAuthType(Unauthorized):
    code = "ERR_UNSUPPORTED_AUTH_TYPE"


class Forbidden(ApiError):
    status, code, default_message = 403, "ERR_FORBIDDEN", "not allowed"


class NotFound(ApiError):
    status, code, default_message = 404, "ERR_NOT_FOUND", "not found"


class NoSuchPath(NotFound):
    """A 404 for a path the DAG lacks (not for a block that is not here)."""


class MethodNotAllowed(ApiError):
    status, code, default_message = 405, "ERR_METHOD_NOT_ALLOWED", "method not allowed"
    allow = "GET, HEAD, PUT, DELETE, OPTIONS"

    def extra_headers(self) -> dict[str, str]:
        return {"Allow": self.allow}


class NotImplementedHere(ApiError):
    """501: a method, or a transfer coding, this node does not implement (RFC 9110 15.6.2)."""

    status, code, default_message = 501, "ERR_NOT_IMPLEMENTED", "not implemented here"


class PayloadTooLarge(ApiError):
    status, code, default_message = 413, "ERR_PAYLOAD_TOO_LARGE", "request body too large"


class RequestTimeout(ApiError):
    status, code, default_message = 408, "ERR_REQUEST_TIMEOUT", "the request did not arrive in time"


class HeadersTooLarge(ApiError):
    status, code, default_message = 431, "ERR_HEADERS_TOO_LARGE", "request headers too large"


class UriTooLong(ApiError):
    status, code, default_message = 414, "ERR_URI_TOO_LONG", "request target too long"


class UnsupportedMediaType(ApiError):
    status, code = 415, "ERR_UNSUPPORTED_MEDIA_TYPE"
    default_message = "Content-Type must be multipart/form-data"


class PreconditionFailed(ApiError):
    status, code, default_message = 412, "ERR_PRECONDITION_FAILED", "If-Match names another version"


class RangeNotSatisfiable(ApiError):
    status, code, default_message = 416, "ERR_RANGE_NOT_SATISFIABLE", "range not satisfiable"


class CorruptBlockError(ApiError):
    status, code, default_message = 500, "ERR_CORRUPT_BLOCK", "a stored block fails its hash check"


class RedirectsInvalid(ApiError):
    """A site's _redirects cannot be read as rules (the specification asks for a 500)."""
    status, code = 500, "ERR_REDIRECTS_INVALID"


class ShuttingDown(ApiError):
    status, code = 503, "ERR_SHUTTING_DOWN"
    default_message = "the node is stopping; nothing of this request was kept"


class InsufficientStorage(ApiError):
    status, code, default_message = 507, "ERR_INSUFFICIENT_STORAGE", "no space left for this upload"
