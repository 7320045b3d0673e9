"""A stand-in for the FlowFuse platform's token check (the platform is not ours to run).

It answers `GET /account/check/project/{id}` the way the real platform does: 200 with the
project's quotas for a token issued for that project, 401 otherwise; it records requests.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

EVERY_PROJECT = "*"  # a token `issue`d for it is granted for any project id it is asked about


class FakePlatform:
    def __init__(self) -> None:
        self.tokens: dict[str, tuple[str, dict]] = {}  # token -> (project, quota)
        self.requests: list[dict] = []
        self.delay = 0.0  # seconds before each answer, for tests of a slow platform
        self.trickle = 0.0  # seconds between the bytes of an answer's body (each read is quick)
        self.bodies: dict[str, bytes] = {}  # token -> the body of a 200 for it, as a platform might send
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                headers = {k.lower(): v for k, v in self.headers.items()}
                platform.requests.append({"path": self.path, **headers})
                time.sleep(platform.delay)
                prefix = "/account/check/project/"
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ")
                grant = platform.tokens.get(token)
                project = unquote(self.path[len(prefix):])
                granted = grant is not None and grant[0] in (EVERY_PROJECT, project)
                if token in platform.bodies:
                    body = platform.bodies[token]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                elif self.path.startswith(prefix) and granted:
                    body = json.dumps({"quota": grant[1]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                else:
                    body = b'{"error":"unauthorized"}'
                    self.send_response(401)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not platform.trickle:
                    self.wfile.write(body)
                for byte in body if platform.trickle else b"":
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(platform.trickle)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def issue(self, token: str, project: str, **quota: int) -> str:
        self.tokens[token] = (project, quota)
        return token

    def close(self) -> None:
        self.server.shutdown()
