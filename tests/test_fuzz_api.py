"""Hostile input from the node's own OpenAPI document: schemathesis generates requests for
every route (valid and invalid bodies, parameters, headers) against a real node, each with a
token of the kind that route takes, and every answer must be what the document promises: no
5xx other than the documented ones (500 ERR_CORRUPT_BLOCK, 507), no hang, every 4xx with the
documented error body of its facade, every documented success body as its schema says.

`make test` runs a few cases per route; `EDGEFILES_FUZZ_EXAMPLES=200` fuzzes for real.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import httpx
import jsonschema
import pytest
import schemathesis
from fake_platform import FakePlatform
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import FailedHealthCheck, Unsatisfiable
from nodeproc import Node, admin
from schemathesis import GenerationMode
from schemathesis.checks import response_schema_conformance

EXAMPLES = int(os.environ.get("EDGEFILES_FUZZ_EXAMPLES", "8"))  # per route and kind; by hand: 100
DOCUMENTED_5XX = {(500, "ERR_CORRUPT_BLOCK"), (507, "ERR_INSUFFICIENT_STORAGE")}
CASES: Counter[str] = Counter()


@schemathesis.serializer("application/vnd.ipld.car")
def _car_body(ctx, value) -> bytes:
    """CAR bodies as generated: random bytes (the node must refuse them with 400)."""
    return value if isinstance(value, bytes) else str(value).encode()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    platform = FakePlatform()
    config = folder / "flowforge-storage.yml"
    config.write_text(f"base_url: {platform.url}\nhost: 127.0.0.1\nport: 3001\n")
    node = Node(folder / "data", "--fetch-timeout", "0.5", "--flowfuse-config", str(config)).start()
    ada = admin(node, "user", "add", "--email", "ada@example.com", "--org", "acme", "--admin")
    tokens = {"app": node.token(), "user": ada["token"], "flowfuse": platform.issue("tok-fuzz", "proj")}
    yield node, tokens
    node.stop()
    platform.close()
    print("fuzz cases per route:", json.dumps(dict(CASES), indent=1))


def token_for(path: str, tokens: dict[str, str]) -> str:
    if path.startswith("/v1/"):
        return tokens["flowfuse"]
    if path.startswith(("/api/v1/", "/filestore", "/api/v2/node/fsck")):
        return tokens["user"]
    return tokens["app"]


def test_every_route_answers_as_documented(fuzzed):
    node, tokens = fuzzed
    schema = schemathesis.openapi.from_url(f"{node.url}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 50
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, node, tokens)
            except (Unsatisfiable, FailedHealthCheck):
                continue  # nothing of this kind can be made for the route (e.g. no parameters)
            except Exception as exc:  # noqa: BLE001 (every route's failure is reported together)
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert sum(CASES.values()) >= len(operations) * EXAMPLES
    assert not failures, "\n\n".join(failures)


def _fuzz(operation, mode: GenerationMode, node: Node, tokens: dict[str, str]) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        path = operation.path
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token_for(path, tokens)}"}
        CASES[operation.label] += 1
        try:
            response = case.call(base_url=node.url, timeout=15)  # a hang fails here
        except Exception as exc:
            raise AssertionError(f"no answer ({exc}):\n{case.as_curl_command()}") from None
        _check(case, response)

    run()


def _check(case, response) -> None:
    status = response.status_code
    error = _error_body(response)
    where = f"{status}: {response.text[:300]}\n{case.as_curl_command()}"
    if status >= 500:
        assert (status, (error or {}).get("code")) in DOCUMENTED_5XX, f"undocumented {where}"
    if 400 <= status < 500 and status != 405:  # 405 comes from routing, before any facade
        documented = case.operation.definition.raw["responses"]["default"]["content"]["application/json"]
        assert error is not None, f"an error without a JSON body: {where}"
        try:
            jsonschema.validate(error, documented["schema"])
        except jsonschema.ValidationError as exc:
            raise AssertionError(f"not the documented error ({exc.message}): {where}") from None
    if status < 400:
        case.validate_response(response, checks=[response_schema_conformance])


def _error_body(response) -> dict | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


# multipart bodies of any shape, against the three routes that parse them --------------------
UPLOADS = {"/api/v2/files": ("app", "code"), "/filestore/files": ("user", "error"),
           "/api/v1/storage/upload": ("user", "success")}
HOSTILE_NAMES = ["a.txt", "../up.txt", "/abs.txt", "%2e%2e/x", "a\\b", "a\x00b", "", ".", "dir/./x", "é.bin"]


@st.composite
def multipart(draw) -> tuple[str, bytes]:
    boundary = draw(st.sampled_from(["B", "x" * 70, "--", "b\"q"]))
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["file", "files", "metadata", "category", "", "fi\"le"]))
        filename = draw(st.none() | st.sampled_from(HOSTILE_NAMES) | st.text(max_size=12))
        disposition = f'form-data; name="{name}"' + ("" if filename is None else f'; filename="{filename}"')
        headers = f"Content-Disposition: {disposition}\r\n"
        if draw(st.booleans()):
            headers += f"Content-Type: {draw(st.sampled_from(['text/plain', 'image/png', '', 'x']))}\r\n"
        parts.append(f"--{boundary}\r\n{headers}\r\n".encode() + draw(st.binary(max_size=300)) + b"\r\n")
    body = b"".join(parts) + (f"--{boundary}--\r\n".encode() if draw(st.booleans()) else b"")
    cut = draw(st.integers(0, len(body)))
    body = body[:cut] if draw(st.booleans()) else body
    header = draw(st.sampled_from([f"multipart/form-data; boundary={boundary}", "multipart/form-data",
                                   f"multipart/form-data; boundary={boundary}x", "text/plain"]))
    return header, body


@settings(max_examples=EXAMPLES * 25, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(UPLOADS)), multipart())
def test_multipart_bodies_of_any_shape_get_an_answer_not_a_500(fuzzed, route, request_body):
    node, tokens = fuzzed
    content_type, body = request_body
    token, error_key = UPLOADS[route]
    r = httpx.post(node.url + route, content=body, timeout=15,
                   headers={"Authorization": f"Bearer {tokens[token]}", "Content-Type": content_type})
    CASES[f"multipart {route}"] += 1
    assert r.status_code < 500, f"{r.status_code} {r.text[:300]} for {content_type!r} {body[:300]!r}"
    if r.status_code >= 400:
        assert error_key in r.json(), r.text


def test_a_path_no_route_takes_gets_the_facades_own_404(fuzzed):
    """Found by fuzzing: a newline in a path matches no route pattern; the 404 came in the Files
    API's body on every facade."""
    node, tokens = fuzzed
    expected = {"/api/v1/admin/a%0Ab": "error", "/api/v1/storage/a%0Ab/c": "success"}
    for path, key in expected.items():
        r = httpx.get(node.url + path, headers={"Authorization": f"Bearer {tokens['user']}"})
        assert r.status_code == 404 and key in r.json(), (path, r.text)


def test_a_line_break_in_a_file_path_reaches_the_route_like_any_other_character(fuzzed):
    """Files and FlowFuse files are reached by any name a file may have (%0A included)."""
    node, tokens = fuzzed
    answers = {"/api/v2/files/a%0Ab/c%0Ad": (tokens["app"], 405, "ERR_METHOD_NOT_ALLOWED"),  # no name, no CID
               "/v1/files/team/proj/a%0Ab": (tokens["flowfuse"], 404, "ENOENT"),
               "/ipfs/a%0Ab": (tokens["app"], 400, "ERR_BAD_REQUEST")}
    for path, (token, status, code) in answers.items():
        r = httpx.get(node.url + path, headers={"Authorization": f"Bearer {token}"})
        assert (r.status_code, r.json()["code"]) == (status, code), (path, r.text)
    r = httpx.get(f"{node.url}/filestore/files/a%0Ab", headers={"Authorization": f"Bearer {tokens['user']}"})
    assert r.status_code == 401 and set(r.json()) == {"error"}  # a thing's route, asked without a thing key
