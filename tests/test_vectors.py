"""Every public CID vector, through the library and through the `edgefiles cid` command."""

import subprocess
import sys

import pytest
from conftest import gen, load_cases, materialize
from edgefiles.node.cid import to_str
from edgefiles.node.localfs import LocalImporter
from edgefiles.node.profiles import get_profile

CASES = [(c, p) for c in load_cases("cid-vectors.json") for p in c["cid"]]
CASES += [(c, p) for c in load_cases("actyx-vectors.json") for p in c["cid"]]


def test_generator_check_values():
    import hashlib

    assert gen("abc", 40).hex() == (
        "5f36efce86f68877cee18fda5637abb2a1bb409f4326cc741fdf13200aa26980bfcf0b9cbe9d8208"
    )
    # The vectors README pairs this value with size 33; it is the digest of the first 31 bytes.
    assert hashlib.sha256(gen("seed", 31)).hexdigest() == (
        "87d9ba9eb5725a4f73528e623b175bfcb2d3b706d4d4f0e365f0a1598a823971"
    )


@pytest.mark.parametrize(("case", "profile"), CASES, ids=[f"{c['id']}-{p}" for c, p in CASES])
def test_vector(case, profile, vectors_dir):
    path = materialize(case, vectors_dir)
    importer = LocalImporter(get_profile(profile))
    try:
        assert to_str(importer.path(path).cid) == case["cid"][profile]
    finally:
        importer.close()


def test_cid_command_prints_one_cid_per_path(vectors_dir):
    cases = {c["id"]: c for c in load_cases("cid-vectors.json")}
    chosen = [cases["file-174-chunks-plus-1"], cases["dir-spa"], cases["dir-nested"]]
    paths = [str(materialize(c, vectors_dir)) for c in chosen]
    out = subprocess.run(
        [sys.executable, "-m", "edgefiles", "cid", *paths], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [c["cid"]["kubo-v1"] for c in chosen]


def test_cid_command_reads_standard_input_for_a_dash(vectors_dir):
    case = {c["id"]: c for c in load_cases("cid-vectors.json")}["file-174-chunks-plus-1"]
    data = materialize(case, vectors_dir).read_bytes()
    out = subprocess.run([sys.executable, "-m", "edgefiles", "cid", "-"], input=data, capture_output=True,
                         check=True)
    assert out.stdout.decode().strip() == case["cid"]["kubo-v1"]
    twice = subprocess.run([sys.executable, "-m", "edgefiles", "cid", "-", "-"], input=data,
                           capture_output=True)
    assert twice.returncode == 1 and twice.stdout == b"" and b"once" in twice.stderr


def test_cid_command_actyx_profile(vectors_dir):
    case = load_cases("actyx-vectors.json")[2]
    path = materialize(case, vectors_dir)
    out = subprocess.run(
        [sys.executable, "-m", "edgefiles", "cid", "--profile", "actyx", str(path)],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == case["cid"]["actyx"]


def test_cid_command_missing_path_is_a_clear_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "edgefiles", "cid", str(tmp_path / "nope")],
        capture_output=True, text=True,
    )
    assert out.returncode != 0
    assert "no such file" in out.stderr
    assert out.stderr.count("\n") == 1


def test_cid_command_skips_dotfiles_unless_hidden(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    (tmp_path / ".secret").write_text("s")
    plain = subprocess.run([sys.executable, "-m", "edgefiles", "cid", str(tmp_path)],
                           capture_output=True, text=True, check=True)
    hidden = subprocess.run([sys.executable, "-m", "edgefiles", "cid", "--hidden", str(tmp_path)],
                            capture_output=True, text=True, check=True)
    assert plain.stdout != hidden.stdout
    assert "skipped 1 hidden" in plain.stderr


def test_cid_command_follows_links_and_reports_oddities(tmp_path):
    site = tmp_path / "site"
    (site / "real").mkdir(parents=True)
    (site / "real" / "a.txt").write_text("a")
    (site / "b.txt").write_text("b")
    (site / "linked").symlink_to(site / "real")
    (site / "loop").symlink_to(site)
    (site / "dangling").symlink_to(tmp_path / "missing")
    copy = tmp_path / "copy"
    (copy / "real").mkdir(parents=True)
    (copy / "linked").mkdir()
    for folder in ("real", "linked"):
        (copy / folder / "a.txt").write_text("a")
    (copy / "b.txt").write_text("b")
    linked = subprocess.run([sys.executable, "-m", "edgefiles", "cid", str(site)],
                            capture_output=True, text=True, check=True)
    plain = subprocess.run([sys.executable, "-m", "edgefiles", "cid", str(copy)],
                           capture_output=True, text=True, check=True)
    assert linked.stdout == plain.stdout
    assert "link back into a parent folder" in linked.stderr
    assert "dangling" in linked.stderr
    assert "followed 1 symbolic link (" in linked.stderr  # the loop and the dangling link were not
