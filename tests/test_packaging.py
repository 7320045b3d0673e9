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
