"""How fast a [[mirror]] copies a backlog: a single-node source, a single-node target, on this machine.

    python scripts/mirror_bench.py [--source zbroker|kafka] [--records N] [--value-size B]

Starts a source broker (tests/support.py's ClusterProcesses: loopback, free ports, temp data
dirs; with a Kafka listener), writes N records of B bytes into a topic of 3 partitions
(Producer, acks=1), then starts a target broker whose ``[[mirror]]`` reads that topic through
the native protocol (``zbroker://``) or the source's Kafka front door (``kafka://``).  Polls
``zbroker bridge status --json`` on the target until the mirror reports all N records mirrored
and lag 0, checks that the target's high watermarks add up to N, and prints the time from the
target's start (so including it) and records/s.  Not a timed test; the notes of issue 13 have
the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support import ClusterProcesses, run_cli, wait_until  # noqa: E402

from clients import Admin, Producer  # noqa: E402


def mirror_status(bootstrap: str) -> dict:
    run = run_cli("bridge", "status", "--json", bootstrap=bootstrap)
    found = [e for e in json.loads(run.stdout or b"[]") if e.get("kind") == "mirror"]
    return found[0] if found else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", choices=("zbroker", "kafka"), default="zbroker")
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--value-size", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mirror-") as tmp:
        source = ClusterProcesses(Path(tmp) / "source", n=1, name="source", kafka=True).start()
        target = None
        try:
            wait_until(source.agreed_controller, timeout=20, what="the source's controller")
            with Admin(source.bootstrap) as admin:
                admin.create_topic("plant.bench", partitions=3)
            with Producer(bootstrap=source.bootstrap, linger_ms=5, acks=1) as producer:
                value = b"x" * args.value_size
                for _ in range(args.records):
                    producer.send("plant.bench", value=value)
                producer.flush(120)
            address = source.bootstrap if args.source == "zbroker" else source.kafka_bootstrap
            target = ClusterProcesses(Path(tmp) / "target", n=1, name="target")
            target.config.write_text(target.config.read_text() + f'\n[[mirror]]\nname = "bench"\nsource = "{args.source}://{address}"\n'
                                     'topics = "plant\\\\..*"\n')
            started = time.monotonic()
            target.start()
            status = wait_until(lambda: (lambda s: s if s.get("mirrored", 0) >= args.records and s.get("lag") == 0 else None)(
                mirror_status(target.bootstrap)), timeout=600, interval=0.2, what="the backlog mirrored")
            elapsed = time.monotonic() - started
            with Admin(target.bootstrap) as admin:
                stored = sum(p.high_watermark for p in admin.describe_topic("plant.bench").partitions)
            assert stored >= args.records, f"the target has {stored} records"
            print(f"{args.source}:// source: {status['mirrored']} records of {args.value_size} bytes mirrored in "
                  f"{elapsed:.1f} s including the target's start: {args.records / elapsed:,.0f} records/s "
                  f"(errors {status['errors']})")
        finally:
            if target is not None:
                target.close()
            source.close()


if __name__ == "__main__":
    main()
