"""Upstream's error bodies (fastify's shape), one type per answer the facade gives."""

from __future__ import annotations

import json

from starlette.responses import Response

from ..cors import CORS_HEADERS
from ..errors import ApiError

PHRASES = {400: "Bad Request", 404: "Not Found", 413: "Payload Too Large", 415: "Unsupported Media Type"}


class FlowFuseError(ApiError):
    """An error in the shape a FlowFuse client expects; `body` is sent as JSON."""

    def body(self) -> dict:
        return {"statusCode": self.status, "code": self.code, "error": PHRASES.get(self.status, ""),
                "message": self.message}

    def response(self) -> Response:
        return Response(json.dumps(self.body()), self.status, media_type="application/json")


def client_error(exc: ApiError) -> Response:
    """A request refused before it reached the app (malformed, a head too large or too slow), as
    fastify's clientError answers it, with the security headers every /v1/ answer carries."""
    from http import HTTPStatus

    from .facade import SECURITY_HEADERS

    body = {"error": HTTPStatus(exc.status).phrase, "message": exc.message, "statusCode": exc.status}
    return Response(json.dumps(body), exc.status, headers=SECURITY_HEADERS, media_type="application/json")


class FFUnauthorized(FlowFuseError):
    status, code = 401, "unauthorized"

    def body(self) -> dict:
        return {"code": "unauthorized", "error": "unauthorized"}


class PlatformError(FlowFuseError):
    """An error of the FlowFuse platform API (its user and token routes): `{code, error}`,
    with the CORS headers every /api/ answer has (a browser app could not read why it was
    refused)."""

    def body(self) -> dict:
        return {"code": self.code, "error": self.message}

    def response(self) -> Response:
        headers = {**CORS_HEADERS, **self.extra_headers(), **self.headers}
        return Response(json.dumps(self.body()), self.status, headers=headers, media_type="application/json")


class PlatformUnauthorized(PlatformError):
    status, code, default_message = 401, "unauthorized", "unauthorized"

    def extra_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}  # RFC 9110 15.5.2


class PlatformBadRequest(PlatformError):
    status, code = 400, "invalid_request"


class PlatformForbidden(PlatformError):
    status, code, default_message = 403, "forbidden", "Forbidden"


class PlatformConflict(PlatformError):
    status, code = 409, "conflict"


class PlatformNotFound(PlatformError):
    status, code, default_message = 404, "not_found", "Not Found"


class FFBadRequest(FlowFuseError):
    status, code = 400, "FST_ERR_VALIDATION"


class FFNoEntry(FlowFuseError):
    status, code = 404, "ENOENT"


class FFRouteNotFound(FlowFuseError):
    status, code = 404, "FST_ERR_NOT_FOUND"  # Fastify's, for a route it does not have


class FFNoEntryToDelete(FlowFuseError):
    status, code = 400, "ENOENT"  # upstream answers a DELETE of a missing file with 400


class FFIsDirectory(FlowFuseError):
    status, code = 400, "EISDIR"


class FFNotDirectory(FlowFuseError):
    status, code = 400, "ENOTDIR"


class FFUnsupportedMedia(FlowFuseError):
    status, code, default_message = 415, "FST_ERR_CTP_INVALID_MEDIA_TYPE", "Unsupported Media Type"


class FFBodyTooLarge(FlowFuseError):
    status, code, default_message = 413, "FST_ERR_CTP_BODY_TOO_LARGE", "Request body is too large"


class FFOverQuota(FlowFuseError):
    status, code = 413, "over_quota"

    def __init__(self, limit: float):
        super().__init__("Over Quota")
        self.limit = limit

    def body(self) -> dict:
        return {"code": "over_quota", "error": "Over Quota", "limit": self.limit}
