import hashlib
import json
import os
from pathlib import Path

import pytest
from edgefiles.ans.names import Names
from edgefiles.node.blockstore import BlockStore
from edgefiles.node.core import Core, CoreSettings
from edgefiles.node.db import migrate
from edgefiles.node.identity import NodeKey
from edgefiles.node.profiles import get_profile

# The project's own byte-identical copy of the published CID vectors: tests read nothing
# outside the repository.
VECTORS = Path(__file__).resolve().parent / "vectors"


def open_store(folder: Path) -> BlockStore:
    """A bare block store on a real SQLite file in `folder`, as a node opens it."""
    migrate(folder / "state.sqlite")
    return BlockStore(folder / "blocks", folder / "state.sqlite")


async def open_names(folder: Path, count: int = 2) -> list[Names]:
    """`count` nodes' names over cores of their own in sub-folders of `folder` (no swarm: a
    test hands records and blocks across itself). Close each with `names.core.close()`."""
    opened = []
    for i in range(1, count + 1):
        data = folder / f"node{i}"
        data.mkdir()
        core = await Core.open(CoreSettings(data, get_profile("kubo-v1")), NodeKey(bytes([i]) * 32))
        opened.append(await Names.open(core))
    return opened


def gen(seed: str, size: int) -> bytes:
    """The vectors README's content generator."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return bytes(out[:size])


def entry_bytes(entry: dict) -> bytes:
    if "text" in entry:
        return entry["text"].encode()
    return gen(entry["gen"]["seed"], entry["gen"]["size"])


def load_cases(name: str) -> list[dict]:
    return json.loads((VECTORS / name).read_text())


def materialize(case: dict, outdir: Path) -> Path:
    """Write a case as OUTDIR/<id>/<path>; returns the path to hash."""
    root = outdir / case["id"]
    root.mkdir(parents=True, exist_ok=True)
    for entry in case["entries"]:
        target = root / entry["path"]
        if entry.get("dir"):
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(entry_bytes(entry))
    if case["kind"] == "file":
        return root / case["entries"][0]["path"]
    return root


@pytest.fixture(scope="session")
def vectors_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vectors")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """One shared node per test module."""
    from nodeproc import Node

    n = Node(tmp_path_factory.mktemp("node") / "data").start()
    yield n
    n.stop()


@pytest.fixture
def fresh_node(tmp_path):
    """A node of its own, for tests that change or break it."""
    from nodeproc import Node

    started = []

    def make(*extra: str, **kw):
        n = Node(tmp_path / f"data{len(started)}", *extra, **kw).start()
        started.append(n)
        return n

    yield make
    for n in started:
        n.stop()


@pytest.fixture
def network():
    """Network namespaces the test makes (tests/netns.py), all removed afterwards."""
    from netns import Network

    # test files run in parallel processes (make test): each has addresses of its own in the
    # root namespace, where the nodes' API links end
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    net = Network(200 + int(worker.removeprefix("gw")))
    yield net
    net.close()
