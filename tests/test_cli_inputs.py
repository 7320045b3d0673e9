"""What `edgefiles cid` and `add` read from the local file system, and what they refuse."""

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from nodeproc import bound_by_file_modes, run_cli


def _env(node):
    return {"EDGEFILES_NODE": node.url}


def _refused(out, names: str) -> None:
    """One line on stderr naming what is at fault, exit 1, no CID."""
    assert out.returncode == 1, out
    assert out.stdout == "", out.stdout
    assert out.stderr.startswith("edgefiles: ") and names in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def _both_refuse(node, path: Path, names: str, preexec=None) -> None:
    pins = node.pins()
    _refused(run_cli("cid", str(path), preexec=preexec), names)
    _refused(run_cli("add", str(path), env=_env(node), preexec=preexec), names)
    assert node.pins() == pins  # nothing was uploaded


def test_links_inside_the_folder_are_followed_and_links_out_of_it_refused(node, tmp_path):
    site = tmp_path / "site"
    (site / "real").mkdir(parents=True)
    (site / "real" / "page.html").write_text("inside")
    (site / "alias").symlink_to("real")
    (site / "page-link.html").symlink_to(site / "real" / "page.html")
    inside = run_cli("cid", str(site))
    assert inside.returncode == 0 and "followed 2 symbolic links" in inside.stderr, inside.stderr
    added = run_cli("add", str(site), env=_env(node))
    assert added.returncode == 0 and added.stdout == inside.stdout, added.stderr
    outside = tmp_path / "outside.txt"
    outside.write_text("not part of the site")
    for name, target in (("etc", Path("/etc")), ("up", Path("..")), ("home", Path.home()),
                         ("file", outside)):
        link = site / name
        link.symlink_to(target)
        _both_refuse(node, site, str(link))
        link.unlink()
    assert run_cli("cid", str(site)).stdout == inside.stdout


def test_a_refused_path_uploads_none_of_the_paths_given_with_it(node, tmp_path):
    fine = tmp_path / "fine.txt"
    fine.write_text("would be uploaded first")
    site = tmp_path / "site"
    site.mkdir()
    (site / "etc").symlink_to("/etc")
    pins = node.pins()
    _refused(run_cli("add", str(fine), str(site), env=_env(node)), str(site / "etc"))
    assert node.pins() == pins


def test_an_unreadable_folder_or_file_is_refused_not_left_out(node, tmp_path):
    site = tmp_path / "site"
    (site / "locked").mkdir(parents=True)
    (site / "a.txt").write_text("a")
    (site / "locked" / "b.txt").write_text("b")
    (site / "locked").chmod(0)
    _both_refuse(node, site, str(site / "locked"), preexec=bound_by_file_modes)
    (site / "locked").chmod(0o755)
    secret = site / "secret.txt"
    secret.write_text("s")
    secret.chmod(0)
    for path in (site, secret):
        _both_refuse(node, path, str(secret), preexec=bound_by_file_modes)


def test_devices_and_sockets_are_refused_as_not_regular_files(node, tmp_path):
    _both_refuse(node, Path("/dev/zero"), "/dev/zero: not a regular file")  # read forever before
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(tmp_path / "app.sock"))
    _both_refuse(node, tmp_path / "app.sock", "not a regular file")
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.txt").write_text("a")
    listening.close()
    (tmp_path / "app.sock").rename(site / "app.sock")
    kept = run_cli("cid", str(site))  # a socket holds nothing of the folder's: left out, and said so
    assert kept.returncode == 0 and "app.sock: not a regular file" in kept.stderr, kept.stderr



def test_a_device_in_a_folder_refuses_the_folder(tmp_path, monkeypatch):
    """In process, the walk told that an entry is a character device: making a real one takes
    root's CAP_MKNOD, which a developer's `make test` may not have."""
    from edgefiles.node import localfs

    site = tmp_path / "site"
    site.mkdir()
    (site / "a.txt").write_text("a")
    (site / "zero").write_text("")
    real_mode = localfs._mode_in_folder
    monkeypatch.setattr(localfs, "_mode_in_folder",
                        lambda path: stat.S_IFCHR | 0o666 if path.name == "zero" else real_mode(path))
    with pytest.raises(localfs.InputRefused, match="zero: not a regular file"):
        localfs.scan_folder(site, hidden=False)


def test_a_pipe_is_read_to_its_end_by_cid_and_add(node, tmp_path):
    (tmp_path / "x.txt").write_bytes(b"piped bytes")
    expected = run_cli("cid", str(tmp_path / "x.txt")).stdout.strip()

    def through_a_pipe(command: str, *extra: str) -> subprocess.CompletedProcess:
        script = (f'printf "piped bytes" | "{sys.executable}" -m edgefiles {command} '
                  f'<(printf "piped bytes") {" ".join(extra)}')
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                              env={**os.environ, **_env(node)})

    for command in ("cid", "add"):
        out = through_a_pipe(command)
        assert out.returncode == 0 and out.stdout.strip() == expected, out.stderr
    both = through_a_pipe("add", str(tmp_path / "x.txt"), "-")  # a pipe, a file and standard input
    assert both.returncode == 0 and both.stdout.split() == [expected] * 3, both.stderr


def test_a_file_that_grows_while_it_is_uploaded_is_an_error_and_stores_nothing(node, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a-big.bin").write_bytes(os.urandom(32 << 20))  # sent first: the log grows meanwhile
    (logs / "z.log").write_text("started\n")
    writer = subprocess.Popen(["sh", "-c", f"while :; do echo more >> '{logs / 'z.log'}'; done"])
    try:
        pins = node.pins()
        out = run_cli("add", "--name", "growing-log", str(logs), env=_env(node))
    finally:
        writer.kill()
        writer.wait()
    _refused(out, f"{logs / 'z.log'} changed while it was being uploaded; nothing was stored")
    assert node.pins() == pins
    assert "growing-log" not in run_cli("name", "ls", env=_env(node)).stdout


def test_a_file_whose_size_says_0_is_read_to_its_end(node, tmp_path):
    offline = run_cli("cid", "/proc/version")  # /proc's files say 0 bytes and hold more
    added = run_cli("add", "/proc/version", env=_env(node))
    assert added.returncode == 0 and added.stdout == offline.stdout, added.stderr
    (tmp_path / "empty").touch()
    assert added.stdout != run_cli("cid", str(tmp_path / "empty")).stdout


def test_a_name_that_is_not_utf8_in_a_folder_is_refused_and_a_lone_file_so_named_is_added(node, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.txt").write_text("a")
    odd = os.fsdecode(bytes(site) + b"/\xff\xfe")
    Path(odd).write_text("b")
    _both_refuse(node, site, f"{site}/\\xff\\xfe")  # escaped as Python shows a byte, not as b'...'
    offline = run_cli("cid", odd)  # a lone file's CID holds no name
    added = run_cli("add", odd, env=_env(node))
    assert added.returncode == 0 and added.stdout == offline.stdout != "", added.stderr


def test_names_with_a_carriage_return_or_a_line_feed_are_added_as_cid_reads_them(node, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    for name in ("cr\rx", "lf\nx", "both\r\n.txt", 'a "quote"'):
        (site / name).write_text(name)
    offline = run_cli("cid", str(site))
    added = run_cli("add", str(site), env=_env(node))
    assert added.returncode == 0 and added.stdout == offline.stdout != "", added.stderr


def test_cid_looks_at_every_path_before_it_prints_a_cid(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    out = run_cli("cid", str(tmp_path / "a.txt"), str(tmp_path / "nope"), str(tmp_path / "a.txt"))
    assert out.returncode == 1 and out.stdout == "" and "nope: no such file or directory" in out.stderr


def test_only_the_links_followed_are_counted_as_followed(tmp_path):
    site = tmp_path / "site"
    (site / "a").mkdir(parents=True)
    (site / "f.txt").write_text("f")
    (site / "a" / "g.txt").write_text("g")
    (site / "a" / "back").symlink_to("..")  # a loop: skipped
    (site / "gone").symlink_to("nowhere")  # dangling: skipped
    out = run_cli("cid", str(site))
    assert out.returncode == 0 and out.stderr.count("skipped:") == 2, out.stderr
    assert "symbolic link" not in out.stderr, out.stderr
    (site / "alias.txt").symlink_to("f.txt")
    assert "followed 1 symbolic link (" in run_cli("cid", str(site)).stderr


def test_notes_count_in_words_that_agree_with_their_number(node, tmp_path):
    site = tmp_path / "site"
    (site / "empty").mkdir(parents=True)
    (site / "a.txt").write_text("a")
    (site / "b.txt").write_text("b")
    (site / ".env").write_text("secret")
    for command in (["cid", str(site)], ["add", str(site)]):
        out = run_cli(*command, env=_env(node))
        assert out.returncode == 0 and "skipped 1 hidden entry (" in out.stderr, out.stderr
    assert "1 empty folder in" in out.stderr and "is not uploaded" in out.stderr
    (site / ".cache").write_text("x")
    (site / "more-empty").mkdir()
    out = run_cli("add", str(site), env=_env(node))
    assert "skipped 2 hidden entries" in out.stderr and "2 empty folders in" in out.stderr, out.stderr


@pytest.mark.parametrize("argv, parsed", [
    (["serve", "--token-ttl", "-5m"], ["serve", "--token-ttl=-5m"]),
    (["get", "x", "-o", "-"], ["get", "x", "-o", "-"]),  # `-` is standard output
    (["get", "x", "-o", "-y"], ["get", "x", "-o=-y"]),
    (["cid", "--", "--profile", "-x"], ["cid", "--", "--profile", "-x"]),  # two files so named
    (["admin", "token", "create", "--user", "u", "--name", "--expires-in=1h"],  # a value left out
     ["admin", "token", "create", "--user", "u", "--name", "--expires-in=1h"]),
    (["serve", "--token-ttl", "--help"], ["serve", "--token-ttl", "--help"]),
])
def test_a_value_starting_with_a_dash_is_the_flags_and_an_option_never_is(argv, parsed):
    from edgefiles.main import _dash_values_joined, build_parser

    assert _dash_values_joined(build_parser(), argv) == parsed


def test_a_flag_left_without_its_value_is_an_error_not_the_next_option():
    out = run_cli("admin", "token", "create", "--user", "u", "--name", "--expires-in=1h")
    assert out.returncode == 2 and "expected one argument" in out.stderr, out
