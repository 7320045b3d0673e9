"""CORS headers for every answer (Actyx left out DELETE; we do not)."""

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Range, If-None-Match",
    "Access-Control-Expose-Headers": "ETag, Content-Range, Content-Length, Content-Disposition",
}
