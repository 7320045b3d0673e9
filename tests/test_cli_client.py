"""`edgefiles add`, `name`, `get` against a real node."""

import hashlib
import os
import pty
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from conftest import gen
from edgefiles.client_commands import _remove_tree
from edgefiles.node import car, dagpb, unixfs
from edgefiles.node.cid import DAG_PB, RAW, make_cid, to_str
from nodeproc import bound_by_file_modes, run_cli


def _env(node):
    return {"EDGEFILES_NODE": node.url}


def test_add_folder_matches_cid_and_names_it(node, tmp_path):
    site = tmp_path / "site"
    (site / "assets").mkdir(parents=True)
    (site / "index.html").write_text("<h1>cli</h1>")
    (site / "assets" / "app.js").write_text("cli()")
    (site / ".env").write_text("SECRET=1")
    added = run_cli("add", "--name", "cli-app", str(site), env=_env(node))
    assert added.returncode == 0, added.stderr
    offline = run_cli("cid", str(site))
    assert added.stdout.strip() == offline.stdout.strip()
    assert "skipped 1 hidden" in added.stderr
    listed = run_cli("name", "ls", env=_env(node))
    assert f"cli-app\t{added.stdout.strip()}" in listed.stdout


def test_add_large_file_and_get_it_back(node, tmp_path):
    data = gen("cli-big", 5 << 20)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    added = run_cli("add", str(src), env=_env(node))
    cid = added.stdout.strip()
    assert cid == run_cli("cid", str(src)).stdout.strip()
    out = tmp_path / "copy.bin"
    got = run_cli("get", cid, "-o", str(out), env=_env(node))
    assert got.returncode == 0, got.stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_add_reads_standard_input_for_a_dash_as_cid_does(node, tmp_path):
    data = gen("cli-stdin", 3 << 20)

    def edgefiles(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgefiles", *args], input=data, capture_output=True,
                              env={**os.environ, **_env(node)}, timeout=120)

    added = edgefiles("add", "-")
    assert added.returncode == 0, added.stderr
    cid = added.stdout.decode().strip()
    assert cid == edgefiles("cid", "-").stdout.decode().strip()
    out = tmp_path / "copy.bin"
    assert run_cli("get", cid, "-o", str(out), env=_env(node)).returncode == 0
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    twice = edgefiles("add", "-", "-")
    assert twice.returncode == 1 and b"can be given once" in twice.stderr and twice.stdout == b""


def test_get_directory_tree_by_name(node, tmp_path):
    site = tmp_path / "tree"
    (site / "a" / "b").mkdir(parents=True)
    (site / "a" / "b" / "deep.txt").write_text("deep")
    (site / "top.json").write_text('{"k": 1}')
    run_cli("add", "--name", "tree-app", str(site), env=_env(node))
    out = tmp_path / "out"
    got = run_cli("get", "tree-app", "-o", str(out), env=_env(node))
    assert got.returncode == 0, got.stderr
    assert (out / "a" / "b" / "deep.txt").read_text() == "deep"
    assert (out / "top.json").read_text() == '{"k": 1}'
    to_stdout = run_cli("get", "tree-app", "-o", "-", env=_env(node), cwd=tmp_path)
    assert to_stdout.returncode == 1 and "is a folder" in to_stdout.stderr and to_stdout.stdout == ""
    assert not (tmp_path / "-").exists()  # no folder named '-' made instead


def test_add_refuses_a_bad_name_before_uploading(node, tmp_path):
    f = tmp_path / "never-sent.txt"
    f.write_text("never sent")
    for name in ("Bad_Name", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"):
        added = run_cli("add", "--name", name, str(f), env=_env(node))
        assert added.returncode == 1 and added.stdout == "" and name in added.stderr, added
    assert run_cli("get", run_cli("cid", str(f)).stdout.strip(), "-o", "-", env=_env(node)).returncode == 1


def test_name_set_rm(node, tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("x")
    cid = run_cli("add", str(f), env=_env(node)).stdout.strip()
    named = run_cli("name", "set", "cli-x", cid, env=_env(node))
    assert named.returncode == 0 and named.stderr == f"cli-x -> {cid}\n"  # it says what it did
    rm = run_cli("name", "rm", "cli-x", env=_env(node))
    assert rm.stdout.strip() == cid
    again = run_cli("name", "rm", "cli-x", env=_env(node))
    assert again.returncode == 1
    assert "405" in again.stderr


def test_client_errors_are_one_line(tmp_path):
    out = run_cli("name", "ls", "--node", "http://127.0.0.1:9")
    assert out.returncode == 1
    assert out.stderr.startswith("edgefiles: cannot reach node")
    assert len(out.stderr.strip().splitlines()) == 1
    for command in (["get", "bafkqaaa"], ["car", "export", "bafkqaaa"]):  # a token given: no request before
        down = run_cli(*command, "--token", "t", "--node", "http://127.0.0.1:9", cwd=tmp_path)
        assert down.returncode == 1 and down.stderr.startswith("edgefiles: cannot reach node"), down.stderr
    unset = run_cli("name", "ls", env={"EDGEFILES_NODE": ""})  # set to nothing: the default, not a bad URL
    assert "is not a node's URL" not in unset.stderr, unset.stderr
    bad = run_cli("add", str(tmp_path / "missing"), "--node", "http://127.0.0.1:9")
    assert bad.returncode == 1


def test_help_lists_commands():
    out = run_cli("--help")
    for command in ("serve", "cid", "add", "name", "get"):
        assert command in out.stdout


def _on_a_terminal(node, *args: str) -> tuple[subprocess.CompletedProcess, bytes]:
    """A client command run with its stderr on a terminal; what it drew there."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "edgefiles", *args], stdout=subprocess.PIPE,
                            stderr=follower, env={**os.environ, **_env(node)})
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    out, _ = proc.communicate(timeout=60)
    os.close(leader)
    return subprocess.CompletedProcess(args, proc.returncode, out), drawn


def test_an_unknown_option_is_told_with_the_usage_of_its_command(tmp_path):
    for command, usage in ((["add", "--nmae", "x", str(tmp_path)], "usage: edgefiles add "),
                           (["name", "set", "--bogus", "a", "b"], "usage: edgefiles name set ")):
        out = run_cli(*command)
        assert out.returncode == 2 and out.stderr.startswith(usage), out.stderr
        assert "unrecognized arguments: " in out.stderr


def test_add_draws_a_progress_bar_on_a_terminal(node, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(gen("progress", 24 << 20))
    done, drawn = _on_a_terminal(node, "add", str(big))
    assert done.returncode == 0
    assert done.stdout.decode().strip() == run_cli("cid", str(big)).stdout.strip()
    assert b"100.0%" in drawn and b"MiB/s" in drawn and b"#" * 30 in drawn


def test_get_of_a_folder_draws_one_progress_bar_for_all_its_files(node, tmp_path):
    site = tmp_path / "site"
    (site / "media").mkdir(parents=True)
    (site / "a.bin").write_bytes(gen("folder progress a", 9 << 20))
    (site / "media" / "b.bin").write_bytes(gen("folder progress b", 9 << 20))
    cid = run_cli("add", str(site), env=_env(node)).stdout.strip()
    done, drawn = _on_a_terminal(node, "get", cid, "-o", str(tmp_path / "copy"))
    assert done.returncode == 0
    assert (tmp_path / "copy" / "media" / "b.bin").read_bytes() == (site / "media" / "b.bin").read_bytes()
    assert b"/18 MiB" in drawn and b"100.0%" in drawn and b"#" * 30 in drawn


def _two_files_added(node, tmp_path) -> tuple[str, str]:
    """The CIDs of a folder of two files, and of its first file, as `add` gives them."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "one.txt").write_text("1")
    (site / "two.txt").write_text("2")
    folder_cid = run_cli("add", str(site), env=_env(node)).stdout.strip()
    file_cid = run_cli("add", str(site / "one.txt"), env=_env(node)).stdout.strip()
    return folder_cid, file_cid


def test_a_node_lost_mid_upload_is_told_on_a_line_of_its_own_after_the_bar(tmp_path):
    """A node that takes part of an upload and is gone: one line that says so (not that it
    cannot be reached), below the progress bar, not run on at its end."""
    listener = socket.create_server(("127.0.0.1", 0))

    def take_part_then_vanish() -> None:
        conn, _ = listener.accept()
        got = 0
        while got < 24 << 20 and (piece := conn.recv(1 << 20)):
            got += len(piece)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset
        conn.close()

    threading.Thread(target=take_part_then_vanish, daemon=True).start()
    big = tmp_path / "big.bin"
    big.write_bytes(gen("lost mid-upload", 64 << 20))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    done, drawn = _on_a_terminal(SimpleNamespace(url=url), "add", "--token", "t", str(big))
    listener.close()
    lines = drawn.replace(b"\r\n", b"\n").split(b"\n")
    assert done.returncode == 1 and b"MiB/s" in drawn, drawn[-300:]
    told = f"edgefiles: the node at {url} broke off POST /api/v2/files".encode()
    assert lines[-2].startswith(told), lines[-3:]


def test_get_of_a_folder_into_one_holding_files_is_refused_and_into_an_empty_one_fills_it(node, tmp_path):
    """A folder written over another's files would leave them mixed in, unsaid."""
    folder_cid, _ = _two_files_added(node, tmp_path)
    used = tmp_path / "used"
    used.mkdir()
    (used / "stale.js").write_text("old")
    out = run_cli("get", folder_cid, "-o", str(used), env=_env(node))
    assert out.returncode == 1 and "holds files already" in out.stderr, out.stderr
    assert os.listdir(used) == ["stale.js"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("get", folder_cid, "-o", str(empty), env=_env(node)).returncode == 0
    assert sorted(os.listdir(empty)) == ["one.txt", "two.txt"]


def test_get_onto_what_is_in_the_way_is_a_clear_error_and_leaves_nothing(node, tmp_path):
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("mine")
    folder_cid, file_cid = _two_files_added(node, tmp_path)
    file_into_folder = run_cli("get", file_cid, "-o", str(tmp_path / "a-folder"), env=_env(node))
    assert file_into_folder.returncode == 1 and "is a folder" in file_into_folder.stderr
    assert "Traceback" not in file_into_folder.stderr and not (tmp_path / "a-folder.part").exists()
    folder_onto_file = run_cli("get", folder_cid, "-o", str(tmp_path / "a-file"), env=_env(node))
    assert folder_onto_file.returncode == 1 and "is a file" in folder_onto_file.stderr
    assert "Traceback" not in folder_onto_file.stderr and (tmp_path / "a-file").read_text() == "mine"


def test_name_set_checks_the_name_before_asking_the_node(node, tmp_path):
    src = tmp_path / "x.txt"
    src.write_text("x")
    cid = run_cli("add", str(src), env=_env(node)).stdout.strip()
    for bad in ("..", "a/b", "UPPER"):
        out = run_cli("name", "set", bad, cid, env=_env(node))
        assert out.returncode == 1 and "not a valid name" in out.stderr and "404" not in out.stderr, bad


def test_add_of_a_folder_left_with_one_file_gives_the_folders_cid_as_cid_does(node, tmp_path):
    """A one-page app named must be served as a page: the CID is the folder's, not its file's."""
    site = tmp_path / "dotted"
    site.mkdir()
    (site / "index.html").write_text("<h1>one</h1>")
    (site / ".hidden").write_text("b")
    added = run_cli("add", str(site), "--name", "one-file-app", env=_env(node))
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == run_cli("cid", str(site)).stdout.strip()
    page = httpx.get(f"{node.url}/", headers={"Host": "one-file-app.actyx.localhost"})
    assert page.text == "<h1>one</h1>" and page.headers["content-type"].startswith("text/html")
    alone = run_cli("add", str(site / "index.html"), env=_env(node))  # a file given is that file
    assert alone.stdout.strip() == run_cli("cid", str(site / "index.html")).stdout.strip()


def test_an_empty_name_or_output_is_refused_before_anything_is_sent(node, tmp_path):
    f = tmp_path / "never-sent.txt"
    f.write_text("never sent, never named")
    added = run_cli("add", "--name", "", str(f), env=_env(node))  # --name "$NAME" with NAME unset
    assert added.returncode == 1 and added.stdout == "" and "not a valid name" in added.stderr
    assert run_cli("get", run_cli("cid", str(f)).stdout.strip(), "-o", "-", env=_env(node)).returncode == 1
    for command in (["get", "x"], ["car", "export", "x"]):
        out = run_cli(*command, "-o", "", env=_env(node), cwd=tmp_path)
        assert out.returncode == 1 and "-o is empty" in out.stderr, out
    (tmp_path / "here.txt").write_text("the current folder, never sent")
    for command in (["add", ""], ["add", "--name", "here", ""], ["car", "import", ""], ["cid", ""]):
        out = run_cli(*command, env=_env(node), cwd=tmp_path)  # "$DIR" with DIR unset
        assert (out.returncode, out.stdout) == (1, "") and "an empty path" in out.stderr, out
    here = run_cli("cid", str(tmp_path)).stdout.strip()
    with node.client() as c:  # the current folder was not sent
        assert c.get(f"/api/v2/files/{here}", headers={"Cache-Control": "only-if-cached"}).status_code == 404
        assert c.get("/api/v2/files/here").status_code == 405  # no such name


@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1:4454x", "Invalid port"), ("http://[::1", "Invalid port"),
    ("127.0.0.1:99999", "out of range"), ("http://127.0.0.1:4454?x", "no query"),
    ("ftp://127.0.0.1", "not http")])
def test_a_node_url_that_is_no_url_is_one_line(url, says):
    out = run_cli("name", "ls", "--node", url)
    assert out.returncode == 1 and says in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_get_writes_names_of_255_bytes_and_a_failed_folder_leaves_nothing(node, tmp_path):
    site = tmp_path / "long"
    (site / ("d" * 255)).mkdir(parents=True)
    for name in ("f" * 255, "e" * 252, "d" * 255 + "/" + "g" * 254):
        (site / name).write_text(name[-1])
    cid = run_cli("add", str(site), env=_env(node)).stdout.strip()
    out = tmp_path / "copy"
    got = run_cli("get", cid, "-o", str(out), env=_env(node))
    assert got.returncode == 0, got.stderr
    written = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert written == sorted(p.relative_to(site) for p in site.rglob("*"))
    single = run_cli("get", f"{cid}/{'f' * 255}", "-o", str(tmp_path / ("h" * 255)), env=_env(node))
    assert single.returncode == 0 and (tmp_path / ("h" * 255)).read_text() == "f", single.stderr
    # a folder the client refuses a name of, after it has written the file before it
    leaf = b"written first"
    links = [dagpb.Link(make_cid(RAW, leaf), name, len(leaf)) for name in ("a.txt", "b\\c")]
    folder = dagpb.encode(links, unixfs.encode(unixfs.UnixFSData(type=1)))
    root = make_cid(DAG_PB, folder)
    body = car.header([root]) + b"".join(car.section(root, folder) + car.section(make_cid(RAW, leaf), leaf))
    (tmp_path / "odd.car").write_bytes(body)
    assert run_cli("car", "import", str(tmp_path / "odd.car"), env=_env(node)).returncode == 0
    before = set(os.listdir(tmp_path))
    failed = run_cli("get", to_str(root), "-o", str(tmp_path / "half"), env=_env(node))
    assert failed.returncode == 1 and "unsafe name 'b\\\\c'" in failed.stderr, failed.stderr
    assert set(os.listdir(tmp_path)) == before  # neither the folder nor its temporary name


def test_get_and_car_export_into_a_missing_or_unwritable_folder_are_one_line_errors(node, tmp_path):
    folder_cid, file_cid = _two_files_added(node, tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    for out, says in ((tmp_path / "missing" / "deeper" / "out", "{out}: there is no folder"),
                      (locked / "out", "cannot write {out}")):
        for command in (["get", file_cid], ["get", folder_cid], ["car", "export", folder_cid]):
            got = run_cli(*command, "-o", str(out), env=_env(node), preexec=bound_by_file_modes)
            assert got.returncode == 1 and got.stderr.startswith("edgefiles: " + says.format(out=out)), got
            assert len(got.stderr.splitlines()) == 1, got.stderr
    assert not (tmp_path / "missing").exists() and os.listdir(locked) == []


def test_get_of_a_path_inside_a_cid_writes_its_last_segment_and_node_takes_host_port(node, tmp_path):
    """`get CID/a/b.txt` lands as ./b.txt (it looked for a folder named after the CID), and
    --node takes host:port without a scheme, as curl does."""
    site = tmp_path / "site"
    (site / "a").mkdir(parents=True)
    (site / "a" / "b.txt").write_text("inner")
    (site / "c.txt").write_text("other")
    cid = run_cli("add", str(site), env=_env(node)).stdout.strip()
    work = tmp_path / "work"
    work.mkdir()
    got = run_cli("get", f"{cid}/a/b.txt", "--node", f"127.0.0.1:{node.port}", cwd=work)
    assert got.returncode == 0 and (work / "b.txt").read_text() == "inner", got.stderr


def test_a_closed_pipe_ends_a_command_quietly(tmp_path):
    (tmp_path / "f").write_text("x")
    paths = " ".join(["f"] * 5000)  # more CIDs than a pipe holds once its reader has gone
    pipe = subprocess.run(f"{sys.executable} -m edgefiles cid {paths} | head -1", shell=True, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert pipe.stdout.startswith("bafk") and pipe.stderr == "", pipe.stderr  # no BrokenPipeError traceback


def test_a_kubo_folder_holding_a_symlink_is_listed_and_read(node, tmp_path):
    """`ipfs add -r` keeps a link as a UnixFS symlink node: a folder holding one (from a CAR, or
    a Kubo peer) was a 404 as a whole. The link is served as its target path."""
    text = make_cid(RAW, b"ok\n")
    link = dagpb.encode([], unixfs.encode(unixfs.UnixFSData(unixfs.SYMLINK, b"/etc/passwd")))
    link_cid = make_cid(DAG_PB, link)
    links = [dagpb.Link(text, "a.txt", 3), dagpb.Link(link_cid, "link", len(link))]
    folder = dagpb.encode(links, unixfs.encode(unixfs.UnixFSData(unixfs.DIRECTORY)))
    root = make_cid(DAG_PB, folder)
    archive = tmp_path / "sym.car"
    archive.write_bytes(b"".join([car.header([root]), *car.section(root, folder), *car.section(text, b"ok\n"),
                                  *car.section(link_cid, link)]))
    assert run_cli("car", "import", str(archive), env=_env(node)).returncode == 0
    with node.client() as c:
        children = c.get(f"/api/v2/files/{to_str(root)}").json()["directory"]["children"]
        assert {(e["name"], e["size"]) for e in children} == {("a.txt", 3), ("link", 11)}
        assert c.get(f"/api/v2/files/{to_str(root)}/link").content == b"/etc/passwd"
    got = run_cli("get", to_str(root), "-o", str(tmp_path / "out"), env=_env(node))
    assert got.returncode == 0 and (tmp_path / "out" / "a.txt").read_text() == "ok\n", got.stderr
    assert not (tmp_path / "out" / "link").is_symlink()  # a file holding the path, never a link made here


def test_add_refuses_a_name_the_node_would_refuse_before_sending_a_byte(node, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "ok.txt").write_text("ok")
    (site / "back\\slash.txt").write_text("x")
    pins = node.pins()
    out = run_cli("add", str(site), env=_env(node))
    assert out.returncode == 1 and "back\\slash.txt: a node takes no such name" in out.stderr, out.stderr
    assert node.pins() == pins  # nothing was uploaded


def test_get_of_a_dot_segment_never_writes_into_a_folder_here(node, tmp_path):
    """`get CID/..` (a client removes the dot segment: the CID's root) lands as ./<CID>, not
    spread over the parent folder."""
    site = tmp_path / "site"
    site.mkdir()
    for name in ("a.txt", "b.txt"):
        (site / name).write_text(name)
    cid = run_cli("add", str(site), env=_env(node)).stdout.strip()
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    got = run_cli("get", f"{cid}/sub/..", env=_env(node), cwd=work)
    assert got.returncode == 0 and (work / cid / "a.txt").read_text() == "a.txt", got.stderr
    assert not (tmp_path / "deep" / "a.txt").exists()


def test_a_folder_nested_past_pythons_recursion_limit_is_added_listed_and_got_back(node, tmp_path):
    """Kubo adds a folder nested a thousand deep; `cid`, the node's upload and listing, and
    `get` each passed Python's recursion limit on it."""
    top = here = tmp_path / "deep"
    top.mkdir()
    for _ in range(1050):  # one level at a time: os.makedirs recurses too
        here = here / "d"
        here.mkdir()
    (here / "f").write_text("bottom")
    (top / "g").write_text("top")
    try:
        cid = run_cli("cid", str(top)).stdout.strip()
        assert run_cli("add", str(top), env=_env(node)).stdout.strip() == cid
        with node.client() as client:
            listing = client.get(f"/api/v2/files/{cid}").json()["directory"]
        assert {(c["name"], c["size"]) for c in listing["children"]} == {("d", 6), ("g", 3)}
        got = run_cli("get", cid, "-o", str(tmp_path / "copy"), env=_env(node))
        assert got.returncode == 0, got.stderr
        assert (tmp_path / "copy" / here.relative_to(top) / "f").read_text() == "bottom"
    finally:  # pytest's own clean-up of old temporary folders recurses, and would fail on these
        for tree in (top, tmp_path / "copy"):
            _remove_tree(tree)


def test_get_of_a_folder_holding_the_same_files_and_folders_twice_writes_every_copy(node, tmp_path):
    """The folder comes as one CAR, which holds each block once: a file or folder the DAG holds
    twice is written twice all the same, a big one and an empty one included."""
    site = tmp_path / "twice"
    for folder in ("a", "b", "b/inner"):
        (site / folder).mkdir(parents=True)
        (site / folder / "same.bin").write_bytes(gen("same everywhere", 700_000))
        (site / folder / "empty").write_bytes(b"")
    (site / "a" / "inner").mkdir()
    (site / "a" / "inner" / "same.bin").write_bytes(gen("same everywhere", 700_000))
    (site / "a" / "inner" / "empty").write_bytes(b"")
    cid = run_cli("add", str(site), env=_env(node)).stdout.strip()
    got = run_cli("get", cid, "-o", str(tmp_path / "copy"), env=_env(node))
    assert got.returncode == 0, got.stderr
    def files_in(top: Path) -> dict[Path, bytes]:
        return {p.relative_to(top): p.read_bytes() for p in top.rglob("*") if p.is_file()}

    assert files_in(tmp_path / "copy") == files_in(site) and len(files_in(site)) == 8
