"""The `serve` process: lock, ports, signals, schema versions, swarm security."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
from nodeproc import Node, free_port, run_cli


def test_second_serve_on_same_data_dir_is_refused(fresh_node, tmp_path):
    a = fresh_node()
    out = run_cli("serve", "--data", str(a.data), "--api", f"127.0.0.1:{free_port()}",
                  "--swarm", "/ip4/127.0.0.1/tcp/0", timeout=30)
    assert out.returncode != 0
    assert "in use by another edgefiles" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert httpx.get(f"{a.url}/health").status_code == 200


def test_taken_api_port_is_refused(fresh_node, tmp_path):
    a = fresh_node()
    out = run_cli("serve", "--data", str(tmp_path / "other"), "--api", f"127.0.0.1:{a.port}",
                  "--swarm", "/ip4/127.0.0.1/tcp/0", timeout=30)
    assert out.returncode != 0
    assert "already in use" in out.stderr


def test_taken_swarm_port_is_refused(fresh_node, tmp_path):
    a = fresh_node()
    out = run_cli("serve", "--data", str(tmp_path / "other"), "--api", f"127.0.0.1:{free_port()}",
                  "--swarm", f"/ip4/127.0.0.1/tcp/{a.swarm_port}", timeout=30)
    assert out.returncode != 0
    assert "swarm address" in out.stderr


def test_sigterm_and_sigint_exit_cleanly(fresh_node):
    for sig in (signal.SIGTERM, signal.SIGINT):
        n = fresh_node()
        assert n.stop(sig) == 0
        assert "stopped cleanly" in n.output()


def test_newer_schema_is_refused(fresh_node):
    n = fresh_node()
    n.stop()
    db = sqlite3.connect(n.data / "state.sqlite")
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    out = run_cli("serve", "--data", str(n.data), "--api", f"127.0.0.1:{free_port()}",
                  "--swarm", "/ip4/127.0.0.1/tcp/0", timeout=30)
    assert out.returncode != 0
    assert "schema version 99" in out.stderr


def test_a_data_dir_of_the_first_schema_is_upgraded_in_place_and_keeps_its_files(fresh_node):
    n = fresh_node()
    cid = n.upload([("a.txt", b"kept across the upgrade")]).text.strip()
    n.stop()
    db = sqlite3.connect(n.data / "state.sqlite")
    db.execute("DROP INDEX pins_by_reason")  # what a node of schema version 1 has
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    n.start()
    with n.client() as c:
        assert c.get(f"/api/v2/files/{cid}").content == b"kept across the upgrade"
    n.stop()
    db = sqlite3.connect(n.data / "state.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    plan = " ".join(str(row) for row in db.execute("EXPLAIN QUERY PLAN DELETE FROM pins WHERE reason = 'x'"))
    assert "pins_by_reason" in plan  # a pin moved by its reason is found without a scan
    db.close()


def test_bad_flags_are_one_line_errors(tmp_path):
    for flags in (["--api", "nonsense"], ["--max-upload", "lots"], ["--token-ttl", "soon"]):
        out = run_cli("serve", "--data", str(tmp_path / "d"), *flags, timeout=30)
        assert out.returncode != 0, flags
        assert out.stderr.startswith("edgefiles: "), out.stderr


def test_peer_id_is_stable_and_swarm_key_created(tmp_path):
    n = Node(tmp_path / "d").start()
    first = httpx.get(f"{n.url}/api/v2/node/id").text
    n.stop()
    key = (tmp_path / "d" / "swarm.key").read_text().strip()
    assert len(key) == 64 and int(key, 16) >= 0
    n.start()
    assert httpx.get(f"{n.url}/api/v2/node/id").text == first
    n.stop()


def test_a_data_dir_that_lost_its_node_key_says_its_peer_id_changed(tmp_path):
    """A new key is made (the node's identity, not its data), and the log says so: the peer id
    peers know and the tokens the node signed no longer hold."""
    n = Node(tmp_path / "d").start()
    first = httpx.get(f"{n.url}/api/v2/node/id").text
    assert "node key was made" not in n.output()
    n.stop()
    (tmp_path / "d" / "node.key").unlink()
    n.start()
    now = httpx.get(f"{n.url}/api/v2/node/id").text
    assert now != first and f"a new node key was made, so this node's peer id is now {now}" in n.output()
    n.stop()


def test_a_data_dir_that_lost_its_swarm_key_is_refused(tmp_path):
    """A fresh key would have the node quietly leave its swarm."""
    n = Node(tmp_path / "d").start()
    n.stop()
    (tmp_path / "d" / "swarm.key").unlink()
    out = run_cli("serve", "--data", str(tmp_path / "d"), "--api", f"127.0.0.1:{free_port()}",
                  "--swarm", "/ip4/127.0.0.1/tcp/0", timeout=30)
    assert out.returncode != 0 and "swarm.key is missing" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "d" / "swarm.key").exists()


def test_a_first_start_refused_for_its_swarm_key_leaves_the_directory_new(tmp_path):
    """A typo in --swarm-key, then a start without it: a new node, not one that lost its key."""
    for bad in (tmp_path / "swarm.kye", tmp_path / "not-a-key"):
        if bad.name == "not-a-key":
            bad.write_text("not hex")
        out = run_cli("serve", "--data", str(tmp_path / "d"), "--api", f"127.0.0.1:{free_port()}",
                      "--swarm", "/ip4/127.0.0.1/tcp/0", "--swarm-key", str(bad), timeout=30)
        assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert not (tmp_path / "d" / "node.key").exists()
    n = Node(tmp_path / "d").start()
    n.stop()
    assert len((tmp_path / "d" / "swarm.key").read_text().strip()) == 64


def test_swarm_port_speaks_noise_only(fresh_node):
    """A plaintext dialer that proposes /plaintext/2.0.0 is refused by multistream-select."""
    n = fresh_node()

    def frame(text: str) -> bytes:
        data = text.encode() + b"\n"
        return bytes([len(data)]) + data

    with socket.create_connection(("127.0.0.1", n.swarm_port), timeout=5) as s:
        s.sendall(frame("/multistream/1.0.0") + frame("/plaintext/2.0.0"))
        answer = b""
        while b"na\n" not in answer and b"/plaintext/2.0.0\n" not in answer[20:]:
            chunk = s.recv(1024)
            if not chunk:
                break
            answer += chunk
    assert b"/multistream/1.0.0" in answer
    assert b"na\n" in answer
    with socket.create_connection(("127.0.0.1", n.swarm_port), timeout=5) as s:
        s.sendall(frame("/multistream/1.0.0") + frame("/noise"))
        answer = b""
        while answer.count(b"\n") < 2:
            chunk = s.recv(1024)
            if not chunk:
                break
            answer += chunk
    assert b"/noise\n" in answer


def test_sigterm_during_upload_exits_cleanly_and_pins_nothing(fresh_node):
    n = fresh_node()
    pins = n.pins()
    with n.start_unfinished_upload(2_000_000) as stalled:
        assert n.stop(signal.SIGTERM) == 0
        stalled.settimeout(5)
        assert stalled.recv(65536).startswith(b"HTTP/1.1 503 ")  # told, not left hanging
    assert "stopped cleanly" in n.output() and "Traceback" not in n.output(), n.output()
    n.start()
    assert n.pins() == pins
    assert n.upload([("ok.txt", b"fine")]).status_code == 200


def test_flags_from_environment(tmp_path):
    port = free_port()
    env = {"EDGEFILES_DATA": str(tmp_path / "envdata"), "EDGEFILES_API": f"127.0.0.1:{port}",
           "EDGEFILES_SWARM": "/ip4/127.0.0.1/tcp/0", "EDGEFILES_TRUST_APP": "com.acme.one,com.acme.two"}
    proc = subprocess.Popen([sys.executable, "-m", "edgefiles", "serve"], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        app = {"appId": "com.acme.two", "displayName": "x", "version": "1"}
        assert httpx.post(f"http://127.0.0.1:{port}/api/v2/auth", json=app).status_code == 200
        assert (tmp_path / "envdata" / "state.sqlite").exists()
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


def test_the_ready_line_names_the_port_bound(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "edgefiles", "serve", "--data", str(tmp_path / "d"),
                             "--api", "127.0.0.1:0", "--swarm", "/ip4/127.0.0.1/tcp/0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = next(line for line in proc.stdout if "edgefiles ready" in line)
        url = line.split(" api ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0"), line
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


def test_an_ipv6_api_url_has_its_host_in_brackets():
    from edgefiles.serve import api_url

    assert api_url("::1", 4454) == "http://[::1]:4454" and api_url("127.0.0.1", 80) == "http://127.0.0.1:80"


def test_bad_settings_are_one_line_errors_naming_the_flag_or_variable(tmp_path):
    def serve(*flags: str, env: dict | None = None):
        return run_cli("serve", "--data", str(tmp_path / "d"), "--api", "127.0.0.1:0",
                       "--swarm", "/ip4/127.0.0.1/tcp/0", *flags, env=env, timeout=30)

    for variable, value in (("PROFILE", "bogus"), ("LOG_LEVEL", "loud"), ("FETCH_TIMEOUT", "abc"),
                            ("MAX_UPLOAD", "lots"), ("PEER_MAX_STREAMS", "nan")):
        out = serve(env={f"EDGEFILES_{variable}": value})
        assert out.returncode == 1 and out.stderr.startswith(f"edgefiles: EDGEFILES_{variable}: "), out.stderr
        assert len(out.stderr.splitlines()) == 1 and value in out.stderr, out.stderr
        flag = f"--{variable.lower().replace('_', '-')}"
        out = serve(flag, value)
        assert out.returncode == 1 and out.stderr.startswith(f"edgefiles: {flag}: "), out.stderr
    for value in ("-1", "nan", "inf", "abc"):
        out = serve(f"--fetch-timeout={value}")
        assert out.returncode == 1 and out.stderr.startswith("edgefiles: --fetch-timeout: "), out.stderr


def test_a_damaged_node_key_and_a_newer_schema_are_one_line_errors_for_serve_and_admin(fresh_node):
    n = fresh_node()
    n.stop()
    key = n.data / "node.key"
    kept = key.read_bytes()
    key.write_bytes(b"garbage")
    serve = ["serve", "--api", "127.0.0.1:0", "--swarm", "/ip4/127.0.0.1/tcp/0"]
    for command in (serve, ["admin", "org", "ls"]):
        out = run_cli(*command, "--data", str(n.data), timeout=30)
        assert out.returncode == 1 and out.stderr.startswith(f"edgefiles: {key} is not an Ed25519 node key")
        assert len(out.stderr.splitlines()) == 1, out.stderr
    key.write_bytes(kept)
    db = sqlite3.connect(n.data / "state.sqlite")
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    out = run_cli("admin", "org", "ls", "--data", str(n.data), timeout=30)
    assert out.returncode == 1 and "schema version 99" in out.stderr, out.stderr
    assert len(out.stderr.splitlines()) == 1, out.stderr


def test_a_flowfuse_context_store_that_cannot_open_ends_the_node_with_one_line(tmp_path):
    """The node must not live on without serving (a supervisor sees its process, clients hang)."""
    (tmp_path / "file").write_text("a file, not a folder")
    for context in ("type: mysql", "storage: file/below/a/file.db", "type: postgres\n    port: 1"):
        config = tmp_path / "ff.yml"
        config.write_text(f"base_url: http://127.0.0.1:1\ncontext:\n  options:\n    {context}\n")
        out = run_cli("serve", "--data", str(tmp_path / "data"), "--api", f"127.0.0.1:{free_port()}",
                      "--swarm", "/ip4/127.0.0.1/tcp/0", "--flowfuse-config", str(config), timeout=30)
        assert out.returncode == 1, (context, out.stderr)
        errors = [line for line in out.stderr.splitlines() if "edgefiles:" in line]
        assert len(errors) == 1 and "context store" in errors[0] and "Traceback" not in out.stderr, out.stderr


def test_a_store_that_cannot_open_ends_serve_and_admin_with_one_line(tmp_path):
    """A blocks folder that is a file, or a database that is none: one line and exit 1, where
    serve printed a traceback and then lived on, its API port taken and never answering."""
    def serve(data):
        return run_cli("serve", "--data", str(data), "--api", f"127.0.0.1:{free_port()}",
                       "--swarm", "/ip4/127.0.0.1/tcp/0", timeout=30)

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "blocks").write_text("a file where the blocks folder goes")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "state.sqlite").write_bytes(os.urandom(4096))
    for out in (serve(tmp_path / "a"), serve(tmp_path / "b"),
                run_cli("admin", "org", "ls", "--data", str(tmp_path / "b"), timeout=30)):
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.splitlines()) == 1 and "cannot open" in out.stderr, out.stderr


def test_swarm_addresses_keys_and_peers_that_cannot_work_are_one_line_errors(tmp_path):
    api = free_port()
    (tmp_path / "folder").mkdir()
    cases = {
        ("--swarm", "/ip4/127.0.0.1/tcp/99999"): "port must be a number from 0 to 65535",
        ("--swarm", f"/ip4/127.0.0.1/tcp/{api}"): "it is the API's port",
        ("--swarm-key", str(tmp_path / "folder")): "cannot read the swarm key file",
        ("--allow-peer", "notapeer"): "not a peer id",
        ("--allow-peer", "12D3KooWBWB59PG57qS5GQ3qnBf8pGf9WKqgpFjZmqc9KaeKSQ68/tcp/80"): "not a peer id",
        ("--token-ttl", "0"): "--token-ttl",
        ("--token-ttl", "-5m"): "--token-ttl: not a duration: '-5m'",  # argparse took it for an option
        ("--pin-uploads-for", "-1h"): "--pin-uploads-for: not a duration: '-1h'",
        ("--host-suffix", ""): "not the end of a host name",  # it would take every request for a name
        ("--host-suffix", "my apps"): "not the end of a host name",
    }
    for i, (flags, words) in enumerate(cases.items()):
        swarm = () if "--swarm" in flags else ("--swarm", "/ip4/127.0.0.1/tcp/0")
        out = run_cli("serve", "--data", str(tmp_path / f"d{i}"), "--api", f"127.0.0.1:{api}", *swarm, *flags,
                      timeout=30)
        assert out.returncode == 1 and len(out.stderr.splitlines()) == 1, (flags, out.stderr)
        assert words in out.stderr and "Traceback" not in out.stderr, (flags, out.stderr)


@pytest.mark.parametrize("level", ["warning", "error"])
def test_the_ready_line_is_logged_at_any_log_level(tmp_path, level):
    node = Node(tmp_path / "data", "--log-level", level)
    try:
        node.start()  # waits for the ready line
        info = [line for line in node.output().splitlines() if " INFO " in line]
        assert len(info) == 1 and "edgefiles ready: api http://" in info[0], info
    finally:
        node.stop()
