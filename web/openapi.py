"""One OpenAPI 3.1 document for every route the node serves, generated from the app's routes
(paths, methods, path parameters, summaries from the endpoints' docstrings), with the
request and answer bodies the routes take and give as schemas and examples. Served at
`/api/openapi.json`; `/api/` and `/docs` show it (a page shipped in the package, no CDN).
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

# the first prefix a path starts with names its tag
TAGS = [("/api/v1/storage", "storage"), ("/api/v1/admin", "admin"), ("/api/v1/user", "tokens"),
        ("/filestore", "filestore"),
        ("/v1/", "flowfuse"), ("/api/v2/node", "node"), ("/health", "node"), ("/metrics", "node"),
        ("/uploader", "node"), ("/api/openapi.json", "node"), ("/docs", "node"),
        ("/api/v2", "files"), ("/ipfs", "files"), ("/api/", "node"), ("/", "node")]
OPEN = {"/api/v2/auth", "/api/v2/node/id"}  # routes of the tagged ones that take no token
TAG_TEXT = {
    "files": "The Actyx Files API: uploads, names, reads, CAR files, the trustless gateway",
    "node": "The node: identity, status, health, metrics, the uploader page, this document",
    "flowfuse": "The FlowFuse file server (with --flowfuse-config)",
    "tokens": "The FlowFuse platform's user and personal access tokens",
    "admin": "Accounts for products that provision their own users (admin users only)",
    "filestore": "The Mainflux Filestore: files of things and of groups",
    "storage": "The Storage API: users' files per organization, quotas, presigned URLs, encrypted at rest",
}

_ID = {"type": "string", "format": "uuid"}
_TEXT = {"type": "string"}
_TEXTS = {"type": "array", "items": _TEXT}
_TIME = {"type": ["string", "null"], "format": "date-time"}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


_FILE = _object(["name", "content_type", "size", "cid"], name=_TEXT, content_type=_TEXT,
                size={"type": "integer"}, thing_id=_ID, group_id=_ID, cid=_TEXT,
                metadata={"type": "object"}, created_at=_TIME, updated_at=_TIME)
_FILE_EXAMPLE = {"name": "sensor-data.csv", "content_type": "text/csv", "size": 1024,
                 "thing_id": "111e4567-e89b-12d3-a456-426614174000",
                 "cid": "bafkreihcxokdlqvkwvkotzvoflwyhwxqdpbm7cawrspfrnt6m7xtsphfse",
                 "metadata": {"type": "readings"}, "created_at": "2026-12-05T02:15:09.090Z",
                 "updated_at": "2026-12-05T02:15:09.090Z"}
_FILES = _object(["total", "offset", "limit", "files"], total={"type": "integer"},
                 offset={"type": "integer"}, limit={"type": "integer", "maximum": 200},
                 files={"type": "array", "items": _FILE})
_UPLOAD = {"multipart/form-data": {"schema": _object(
    ["file"], file={"type": "string", "format": "binary"},
    metadata={"type": "string", "description": "a JSON object, at most 64 KiB"})}}
_TOKEN = _object(["id", "name", "scope", "expiresAt"], id=_ID, name=_TEXT, scope=_TEXTS, expiresAt=_TIME,
                 createdAt=_TIME, token={"type": "string", "pattern": "^ffpat_[A-Za-z0-9_-]{43}$"})
_USER = _object(["id", "email", "org_id", "admin"], id=_ID, email=_TEXT, name=_TEXT, org_id=_ID,
                admin={"type": "boolean"})
_NAMED = _object(["name", "org"], name=_TEXT, org=_TEXT)
_THING = "111e4567-e89b-12d3-a456-426614174000"


def _wrapped(data: dict[str, Any] | None) -> dict[str, Any]:
    """The Storage API's answer around `data` (None: an error's, whose data is null)."""
    return _object(["success", "data", "message"], success={"type": "boolean"},
                   data=data if data is not None else {"type": "null"}, message=_TEXT)


_INT = {"type": "integer", "minimum": 0}
_FILES_ERROR = ("an error: a code and a sentence", _object(
    ["code", "message"], code={"type": "string", "pattern": "^ERR_"}, message=_TEXT))
_PLATFORM_ERROR = ("an error, as the FlowFuse platform gives them",
                   _object(["code", "error"], code=_TEXT, error=_TEXT))
# the error body every route of a tag answers with
ERRORS: dict[str, tuple[str, dict[str, Any]]] = {
    "files": _FILES_ERROR, "node": _FILES_ERROR,
    "flowfuse": ("an error, as the FlowFuse file server gives them",
                 _object(["code", "error"], statusCode={"type": "integer"}, code=_TEXT, error=_TEXT)),
    "tokens": _PLATFORM_ERROR, "admin": _PLATFORM_ERROR,
    "filestore": ("an error, as the Filestore gives them", _object(["error"], error=_TEXT)),
    "storage": ("an error: the wrapper with success false, data null and the reason", _wrapped(None)),
}
_SFILE = _object(["object_name", "original_name", "key", "size", "content_type", "category", "metadata",
                  "created_at", "bucket"], object_name=_TEXT, original_name=_TEXT, key=_TEXT, size=_INT,
                 content_type=_TEXT, category={"enum": ["data_source", "profile_image", "general"]},
                 metadata={"type": "object"}, created_at=_TIME, bucket=_TEXT)
_SFILE_EXAMPLE = {
    "object_name": "report_20261205_031500_1a2b3c4d.csv", "original_name": "report.csv",
    "key": "organizations/c2ceb4b0-5fc7-4fe6-abee-a23773793203/files/1f7bd504-3df4-4650-b97b-b3c84c803c35/"
           "report_20261205_031500_1a2b3c4d.csv",
    "size": 2048, "content_type": "text/csv", "category": "data_source", "metadata": {"source": "erp"},
    "created_at": "2026-12-05T03:15:00.000Z", "bucket": "files"}
_PAGINATION = _object(["page", "page_size", "total_count", "total_pages", "has_next", "has_previous"],
                      page={"type": "integer", "minimum": 1}, page_size={"type": "integer", "maximum": 100},
                      total_count=_INT, total_pages=_INT, has_next={"type": "boolean"},
                      has_previous={"type": "boolean"})
_SLIST = _wrapped(_object(["items", "pagination"], items={"type": "array", "items": _SFILE},
                          pagination=_PAGINATION))
_SLIST_EXAMPLE = {"success": True, "message": "OK", "data": {"items": [_SFILE_EXAMPLE], "pagination": {
    "page": 1, "page_size": 20, "total_count": 1, "total_pages": 1, "has_next": False,
    "has_previous": False}}}
_PAGING = [("page", {"type": "integer", "minimum": 1, "default": 1}, "from 1"),
           ("page_size", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "1 to 100")]
_USAGE = _object(["used_bytes", "file_count", "quota_bytes", "percent_used"], used_bytes=_INT,
                 file_count=_INT, quota_bytes=_INT, percent_used={"type": "number"})
_USAGE_EXAMPLE = {"success": True, "message": "OK", "data": {
    "used_bytes": 2048, "file_count": 1, "quota_bytes": 1073741824, "percent_used": 0.0}}

_CIDS = {"type": "array", "items": _TEXT}
_FSCK_REPORT = _object(
    ["ok", "blocks", "corrupt", "missing", "names_incomplete"], ok={"type": "boolean"}, blocks=_INT,
    bytes=_INT, corrupt=_CIDS, missing=_CIDS, names_incomplete=_TEXTS, roots_checked=_INT, sqlite=_TEXTS,
    rows_past_end=_INT, unreferenced_bytes=_INT, packs=_INT, repaired={"type": ["object", "null"]},
    seconds={"type": "number"})
_FSCK_JOB = _object(
    ["id", "repair", "state", "progress", "report", "error"], id=_TEXT, repair={"type": "boolean"},
    state={"enum": ["queued", "running", "done", "failed"]},
    progress=_object(["phase", "done", "total"], phase=_TEXT, done=_INT, total=_INT),
    report={"oneOf": [_FSCK_REPORT, {"type": "null"}]}, error={"type": ["string", "null"]})
_FSCK_JOB_EXAMPLE = {
    "id": "9f2c4e1a7b3d5f60", "repair": False, "state": "done",
    "progress": {"phase": "packs", "done": 1, "total": 1}, "error": None,
    "report": {"ok": True, "blocks": 12, "bytes": 1048576, "corrupt": [], "missing": [],
               "names_incomplete": [], "roots_checked": 3, "sqlite": ["ok"], "rows_past_end": 0,
               "unreferenced_bytes": 0, "packs": 1, "repaired": None, "seconds": 0.02}}

# (method, path) -> what the route takes ("body": JSON schema and example, or "content") and
# gives ("answer": status, schema, example)
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/user/tokens"): {
        "body": (_object(["name"], name={"type": "string", "minLength": 1}, scope=_TEXTS, expiresAt=_TIME),
                 {"name": "ci", "scope": ["project:files:read"], "expiresAt": None}),
        "answer": (201, _TOKEN, {"id": "5b0c2e8e-54f1-4f55-9d2e-3f3a8c6f5a10", "name": "ci",
                                 "scope": ["project:files:read"], "expiresAt": None,
                                 "token": "ffpat_" + "A" * 43}),
    },
    ("GET", "/api/v1/user"): {
        "answer": (200, _USER, {"id": "1f7bd504-3df4-4650-b97b-b3c84c803c35", "email": "ada@example.com",
                                "name": "ada", "org_id": "c2ceb4b0-5fc7-4fe6-abee-a23773793203",
                                "admin": True}),
    },
    ("POST", "/api/v1/admin/users"): {
        "body": (_object(["email", "org"], email=_TEXT, org=_TEXT, name=_TEXT, admin={"type": "boolean"}),
                 {"email": "bob@example.com", "org": "acme"}),
    },
    ("POST", "/api/v1/admin/orgs"): {"body": (_object(["name"], name=_TEXT), {"name": "acme"})},
    ("POST", "/api/v1/admin/things"): {"body": (_NAMED, {"name": "sensor-1", "org": "acme"})},
    ("POST", "/api/v1/admin/groups"): {"body": (_NAMED, {"name": "line-a", "org": "acme"})},
    ("POST", "/api/v1/admin/groups/{id}/members"): {
        "body": (_object([], user=_ID, thing=_ID, role={"enum": ["member", "viewer"]}),
                 {"thing": _THING, "role": "member"}),
    },
    ("POST", "/api/v1/admin/users/{id}/tokens"): {
        "body": (_object([], name=_TEXT, expires_in={"type": "string", "pattern": "^[0-9.]+(ms|s|m|h|d)?$"}),
                 {"name": "ci", "expires_in": "24h"}),
    },
    ("POST", "/filestore/files"): {"content": _UPLOAD, "answer": (201, _FILE, _FILE_EXAMPLE)},
    ("PUT", "/filestore/files/{name}"): {"content": _UPLOAD, "answer": (200, _FILE, _FILE_EXAMPLE)},
    ("POST", "/filestore/groups/{group_id}/files"): {"content": _UPLOAD},
    ("GET", "/filestore/files"): {
        "answer": (200, _FILES, {"total": 1, "offset": 0, "limit": 10, "files": [_FILE_EXAMPLE]}),
    },
    ("POST", "/api/v1/storage/upload"): {
        "content": {"multipart/form-data": {"schema": _object(
            ["file"], file={"type": "string", "format": "binary"},
            category={"enum": ["data_source", "profile_image", "general"], "default": "general"},
            metadata={"type": "string", "description": "a JSON object, at most 64 KiB"},
            bucket={"type": "string", "description": "a bucket of GET /api/v1/storage/buckets"})}},
        "answer": (201, _wrapped(_SFILE),
                   {"success": True, "message": "File uploaded", "data": _SFILE_EXAMPLE}),
    },
    ("GET", "/api/v1/storage/files"): {"answer": (200, _SLIST, _SLIST_EXAMPLE), "query": _PAGING},
    ("GET", "/api/v1/storage/buckets/{bucket}/objects"): {
        "answer": (200, _SLIST, _SLIST_EXAMPLE),
        "query": [*_PAGING, ("prefix", _TEXT, "the start of the object names (in your own folder)")]},
    ("GET", "/api/v1/storage/buckets"): {"answer": (200, _wrapped(
        {"type": "array", "items": _object(["name"], name=_TEXT)}),
        {"success": True, "message": "OK", "data": [{"name": "files"}]})},
    ("DELETE", "/api/v1/storage/objects/{object_name}"): {"answer": (200, _wrapped(
        _object(["object_name", "deleted"], object_name=_TEXT, deleted={"const": True})),
        {"success": True, "message": "File deleted",
         "data": {"object_name": "report_20261205_031500_1a2b3c4d.csv", "deleted": True}})},
    ("GET", "/api/v1/storage/objects/{object_name}/metadata"): {
        "answer": (200, _wrapped(_SFILE), {"success": True, "message": "OK", "data": _SFILE_EXAMPLE}),
    },
    ("GET", "/api/v1/storage/usage"): {"answer": (200, _wrapped(_USAGE), _USAGE_EXAMPLE)},
    ("POST", "/api/v1/storage/quota/recalculate"): {"answer": (200, _wrapped(_USAGE), _USAGE_EXAMPLE)},
    ("GET", "/api/v1/storage/quota"): {"answer": (200, _wrapped(_object(
        ["quota_bytes", "max_file_size"], quota_bytes=_INT, max_file_size=_object(
            ["data_source", "profile_image", "general"], data_source=_INT, profile_image=_INT,
            general=_INT))),
        {"success": True, "message": "OK", "data": {"quota_bytes": 1073741824, "max_file_size": {
            "data_source": 524288000, "profile_image": 5242880, "general": 1073741824}}})},
    ("GET", "/api/v1/storage/objects/{object_name}/presigned-url"): {
        "query": [("expires_in", {"type": "integer", "minimum": 1, "maximum": 604800, "default": 3600},
                   "seconds the URL works")],
        "answer": (200, _wrapped(_object(
        ["url", "expires_at"], url={"type": "string", "format": "uri"}, expires_at=_TIME)),
        {"success": True, "message": "OK", "data": {
            "url": "http://127.0.0.1:4454/api/v1/storage/presigned/lNkk...Ck",
            "expires_at": "2026-12-05T04:15:00.000Z"}})},
    ("POST", "/api/v2/node/fsck"): {
        "body": (_object([], repair={
            "type": "boolean", "default": False,
            "description": "drop damaged blocks, refetch what is missing, reclaim space"}),
                 {"repair": False}),
        "answer": (202, _object(["id"], id=_TEXT), {"id": "9f2c4e1a7b3d5f60"}),
    },
    ("GET", "/api/v2/node/fsck/{id}"): {"answer": (200, _FSCK_JOB, _FSCK_JOB_EXAMPLE)},
    ("POST", "/api/v2/files"): {
        "content": {"multipart/form-data": {"schema": {"type": "object"}}},
        "query": [("wrap-with-directory", {"type": "boolean", "default": False},
                   "one part too gives the CID of a folder holding it (as for two or more)")]},
    ("POST", "/api/v2/car"): {"content": {"application/vnd.ipld.car": {
        "schema": {"type": "string", "format": "binary"}}}},
}


def openapi_path(path: str) -> str:
    """Starlette's `{name:path}` as OpenAPI's `{name}`."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def tag_of(path: str) -> str:
    """The tag of the routes `path` is under; "files" for a target that is no path (CONNECT's
    host:port, OPTIONS's *), which only an error answers."""
    return next((tag for prefix, tag in TAGS if path.startswith(prefix)), "files")


def document(routes: list[Any]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route) or not route.include_in_schema:
            continue
        path = openapi_path(route.path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(path, {})[method.lower()] = _operation(method, path, route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgefiles", "version": _version(),
                 "description": "A content-addressed, replicated file node."},
        "tags": [{"name": name, "description": text} for name, text in TAG_TEXT.items()],
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "thing": {"type": "apiKey", "in": "header", "name": "Authorization",
                      "description": "`Thing <key>`"}}},
        "paths": paths,
    }


def _first_sentence(doc: str) -> str:
    """A docstring's first sentence, over as many lines as it takes (its first line was cut
    mid-sentence: "quota and category checked,")."""
    text = " ".join(doc.split())
    end = re.search(r"\.(\s|$)", text)
    return text[:end.start()] if end else text


def _operation(method: str, path: str, route: Route) -> dict[str, Any]:
    summary = _first_sentence(route.endpoint.__doc__ or "")
    tag = tag_of(path)
    operation_id = f"{method.lower()}_{re.sub(r'[^a-zA-Z0-9]+', '_', path).strip('_')}"
    op: dict[str, Any] = {"tags": [tag], "summary": summary or f"{method} {path}",
                          "operationId": operation_id}
    spec = BODIES.get((method, path), {})
    params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
              for p in re.findall(r"\{(\w+)\}", path)]
    params += [{"name": name, "in": "query", "required": False, "schema": schema, "description": text}
               for name, schema, text in spec.get("query", [])]
    if params:
        op["parameters"] = params
    if tag == "filestore":  # a thing's own files need its key; a group's take a user's token too
        op["security"] = [{"thing": []}, {"bearer": []}] if "/groups/" in path else [{"thing": []}]
    elif path.startswith("/api/v1/storage/presigned/") or path in OPEN:
        op["security"] = []  # the URL is the credential, or none is needed
    elif tag not in ("node",) or path.startswith("/api/v2/node"):
        op["security"] = [{"bearer": []}]
    if "body" in spec:
        schema, example = spec["body"]
        json_body = {"application/json": {"schema": schema, "example": example}}
        op["requestBody"] = {"required": True, "content": json_body}
    elif "content" in spec:
        op["requestBody"] = {"required": True, "content": spec["content"]}
    text, schema = ERRORS[tag]
    responses: dict[str, Any] = {"default": {"description": text,
                                             "content": {"application/json": {"schema": schema}}}}
    status, schema, example = spec.get("answer", (None, None, None))
    if status is not None:
        responses[str(status)] = {"description": "done",
                                  "content": {"application/json": {"schema": schema, "example": example}}}
    else:
        responses["2XX"] = {"description": "done"}
    op["responses"] = responses
    return op


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("edgefiles")
    except Exception:  # noqa: BLE001  (a checkout run without installing)
        return "0"


async def openapi_json(request: Request) -> Response:
    """This document: every route the node serves."""
    return JSONResponse(document(request.app.routes), headers={"Access-Control-Allow-Origin": "*"})


async def docs_page(request: Request) -> Response:
    """A page that shows this document, grouped by tag (`/docs#/filestore`)."""
    page = resources.files("edgefiles.web").joinpath("templates/docs.html").read_text()
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})
