"""What CurveZMQ costs: acks=all produce on a fresh 3-broker cluster on this machine.

    python scripts/bench_curve.py [--curve] [--records N] [--rounds R]

Starts a 3-broker cluster (tests/support.py's ClusterProcesses: loopback, free ports, temp
data dirs), creates a topic of 3 partitions with replication factor 3 and min ISR 2, and runs
``zbroker bench produce --acks all`` against it R times on fresh topics; prints each round's
records/s and the median.  The brokers always replicate over CURVE (keys derived from a
cluster secret); ``--curve`` turns on ``[security] curve = true``, so the producer's own
connections are CURVE too.

To compare with a tree whose brokers replicate in plain ZeroMQ (before issue 12), run this
script from that tree (its tests/support.py has no ``curve`` argument; leave ``--curve``
out).  docs/operations.md has the figures.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support import ClusterProcesses, wait_until  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--curve", action="store_true", help="[security] curve = true (clients speak CURVE too)")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--value-size", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-curve-") as tmp:
        c = ClusterProcesses(Path(tmp), n=3, replication_factor=3, min_insync_replicas=2, partitions=3,
                             **({"curve": True} if args.curve else {}))
        try:
            c.start()
            wait_until(c.agreed_controller, timeout=30, what="a controller")
            keys = []
            if args.curve:
                options = c.client_options()
                keys = ["--curve-secret-key-file", options["curve_secret_key_file"],
                        "--curve-server-key", options["curve_server_key"]]
            rates = []
            for i in range(args.rounds):
                out = subprocess.run([sys.executable, "-m", "zbroker", "--bootstrap", c.bootstrap, *keys, "bench", "produce",
                                      "--topic", f"bench{i}", "--records", str(args.records), "--acks", "all",
                                      "--value-size", str(args.value_size), "--partitions", "3"],
                                     capture_output=True, text=True, timeout=600, cwd=ROOT)
                line = next((x for x in out.stdout.splitlines() if x.startswith("produce:")), None)
                if line is None:
                    raise SystemExit(f"bench failed: {out.stdout}{out.stderr}")
                rates.append(float(re.search(r"= ([\d,]+) records/s", line).group(1).replace(",", "")))
                print(line, flush=True)
            print(f"median {statistics.median(rates):,.0f} records/s over {args.rounds} rounds "
                  f"({'curve = true' if args.curve else 'curve off'})")
        finally:
            c.close()


if __name__ == "__main__":
    main()
