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
def test_a_minute_of_mixed_load_with_crashes_loses_nothing_and_ends_in_agreement():
    out = subprocess.run([sys.executable, str(SOAK), "--minutes", "1", "--kill-every", "15"],
                         capture_output=True, text=True, timeout=540)
    summary = json.loads(out.stdout[out.stdout.index("{"): out.stdout.rindex("}") + 1])
    assert out.returncode == 0 and "soak: OK" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]
    assert summary["errors"] == 0 and summary["data_lost"] == 0 and summary["crashes_survived"] >= 2
    assert all(summary["requests"].get(kind, 0) > 50 for kind in ("upload", "read", "rename", "flowfuse"))
