"""What network faults cost a fetch: four nodes on one bridge, each in a network namespace of
its own (needs root), an app named on A and fetched by B, C and D at once; the time until D
is complete, with D's link to B healthy, losing one packet in three (nftables), B's link
throttled to 2 Mbit/s (tc tbf), or D's link to B going silent mid-transfer. Rounds on fresh
content and a fresh swarm each; p50 and worst, and each fault against the healthy p50.

    sudo python benchmarks/faults.py [--rounds 3] [--mib 48]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from netns import Network, complete, named, names, swarm_of_four  # noqa: E402
from nodeproc import wait_until  # noqa: E402

FAULTS = ("none", "lossy", "slow", "silent")


def one_round(fault: str, mib: int) -> float:
    network = Network(214)
    try:
        with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
            nodes, spaces, addrs = swarm_of_four(network, Path(tmp), "--fetch-timeout", "5")
            a, b, c, d = nodes
            try:
                if fault == "lossy":
                    network.drop(spaces[3], [addrs[1]], every=3)
                if fault == "slow":
                    network.throttle(addrs[1], "2mbit")
                started = time.perf_counter()
                named(a, "app", [("app.bin", os.urandom(mib << 20))])
                if fault == "silent":
                    wait_until(lambda: "app" in names(d), interval=0.005, what="D to start")
                    network.drop(spaces[3], [addrs[1]])
                wait_until(lambda: complete(d, "app"), timeout=300, interval=0.02, what="D to complete")
                return time.perf_counter() - started
            finally:
                for n in nodes:
                    n.stop()
    finally:
        network.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mib", type=int, default=48)
    args = p.parse_args()
    results = {fault: [one_round(fault, args.mib) for _ in range(args.rounds)] for fault in FAULTS}
    healthy = statistics.median(results["none"])
    print(f"{args.mib} MiB named on A, time until D is complete ({args.rounds} rounds each):")
    for fault, times in results.items():
        p50 = statistics.median(times)
        print(f"  {fault:<7} p50 {p50:6.2f} s  worst {max(times):6.2f} s  {p50 / healthy:5.2f}x healthy")


if __name__ == "__main__":
    main()
