"""The example rollout script works against a real node and the app is served by name."""

import os
import subprocess
from pathlib import Path

import httpx

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_rollout_script_serves_sample_spa(node):
    bin_dir = Path(os.sys.executable).parent
    env = {**os.environ, "EDGEFILES_BIN": str(bin_dir / "edgefiles")}
    out = subprocess.run([str(EXAMPLES / "rollout.sh"), str(EXAMPLES / "sample-spa"), "sample-app", node.url],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"http://sample-app.actyx.localhost:{node.port}/" in out.stdout
    page = httpx.get(f"{node.url}/", headers={"Host": "sample-app.actyx.localhost"})
    assert page.status_code == 200
    assert "Hello from the edge" in page.text
    css = httpx.get(f"{node.url}/assets/style.css", headers={"Host": "sample-app.actyx.localhost"})
    assert css.headers["content-type"].startswith("text/css")


def test_rollout_script_prints_where_the_node_serves_the_name(tmp_path):
    """The node's own host suffix and port, whatever the URL it was given looks like."""
    from nodeproc import Node

    node = Node(tmp_path / "n", "--host-suffix", "edge.test").start()
    try:
        for url in (f"{node.url}/", f"localhost:{node.port}"):
            out = subprocess.run([str(EXAMPLES / "rollout.sh"), str(EXAMPLES / "sample-spa"), "shop", url],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert out.stdout.splitlines()[-1] == f"open http://shop.edge.test:{node.port}/", out.stdout
    finally:
        node.stop()
