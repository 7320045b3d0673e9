"""The soak benchmark, short: four nodes under mixed load for a minute while nodes are killed
and restarted; no error answer, nothing acknowledged lost, every node agrees at the end.
(The 10-minute run, whose memory must stay flat, is run by hand: benchmarks/soak.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


@pytest.mark.timeout(600)
def test_a_minute_of_mixed_load_with_crashes_loses_nothing_and_ends_in_agreement(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, str(SOAK), "--minutes", "1", "--kill-every", "15", "--keep", str(tmp_path)],
        capture_output=True, text=True, timeout=540,
    )
    said = out.stdout[-3000:] + out.stderr[-3000:] + "".join(_troubles(log) for log in tmp_path.glob("*.log"))
    assert "{" in out.stdout, f"no summary (exit status {out.returncode}):\n{said}"
    summary = json.loads(out.stdout[out.stdout.index("{"): out.stdout.rindex("}") + 1])
    assert out.returncode == 0 and "soak: OK" in out.stdout, said
    assert summary["errors"] == 0 and summary["data_lost"] == 0 and summary["crashes_survived"] >= 2
    assert all(summary["requests"].get(kind, 0) > 50 for kind in ("upload", "read", "rename", "flowfuse"))


def _troubles(log: Path) -> str:
    """What a node logged above INFO, the last of it."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if " INFO " not in line]
    return f"\n--- {log.name}:\n" + "\n".join(lines[-30:]) if lines else ""
