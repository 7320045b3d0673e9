"""The wheel installs one top-level package, `edgefiles`, with its templates and uploader page."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_has_only_the_edgefiles_package(tmp_path):
    source = tmp_path / "src"  # a clean copy: an in-tree build/ would carry stale modules
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", "build", "*.egg-info", ".git"))
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(tmp_path)]
    subprocess.run(pip_wheel, check=True, capture_output=True)
    wheel = next(tmp_path.glob("edgefiles-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"edgefiles"}
    for needed in ("edgefiles/node/importer.py", "edgefiles/web/templates/listing.html",
                   "edgefiles/uploader/index.html", "edgefiles/main.py"):
        assert needed in names
    folders = {"cli": "edgefiles", "node": "edgefiles/node", "ans": "edgefiles/ans",
               "replication": "edgefiles/replication", "web": "edgefiles/web",
               "uploader": "edgefiles/uploader"}
    for folder, package in folders.items():  # every module, sub-packages included
        for module in (ROOT / folder).rglob("*.py"):
            assert f"{package}/{module.relative_to(ROOT / folder).as_posix()}" in names, module
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "edgefiles = edgefiles.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_suite_stands_alone_outside_its_checkout(tmp_path):
    """A clone carries every file its tests read: run a copy of the suite far from this checkout
    (no sibling folders, working directory elsewhere) and its vector tests still pass."""
    clone = tmp_path / "clone" / "project"
    skip = shutil.ignore_patterns("node_modules", "__pycache__")
    shutil.copytree(ROOT / "tests", clone / "tests", ignore=skip)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(clone),
         str(clone / "tests" / "test_vectors.py"), "-k", "dir-spa or generator"],
        cwd=elsewhere, capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert " passed" in run.stdout and "error" not in run.stdout.lower()


def test_node_depends_on_nothing_above_it():
    """node/ (CIDs, codecs, store, core) imports nothing from ans/, replication/ or web/."""
    import ast

    above = ("edgefiles.ans", "edgefiles.replication", "edgefiles.web", "edgefiles.uploader")
    for module in (ROOT / "node").rglob("*.py"):
        for stmt in ast.walk(ast.parse(module.read_text())):
            names = [stmt.module or ""] if isinstance(stmt, ast.ImportFrom) else (
                [a.name for a in stmt.names] if isinstance(stmt, ast.Import) else [])
            for name in names:
                assert not name.startswith(above), f"{module.name} imports {name}"
