#!/usr/bin/env python3
"""Measure controller failover: kill -9 of the controller -> a new controller acting.

Starts a 3-broker cluster on free loopback ports with the default timings (or the
ones given), waits for a controller, kills it with SIGKILL and measures, by
polling the survivors' metadata every 10 ms, how long until they agree on a new
controller, and until a topic creation through them succeeds.  Repeats --rounds
times (the killed broker is restarted between rounds).

    python scripts/failover.py [--rounds 5] [--election-timeout-ms 1000] [--session-timeout-ms 3000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support import ClusterProcesses, wait_until  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--election-timeout-ms", type=int, default=1000)
    ap.add_argument("--session-timeout-ms", type=int, default=3000)
    ap.add_argument("--heartbeat-ms", type=int, default=250)
    args = ap.parse_args()

    from clients import Admin

    elected, usable = [], []
    with tempfile.TemporaryDirectory() as tmp:
        c = ClusterProcesses(Path(tmp), heartbeat_ms=args.heartbeat_ms, session_timeout_ms=args.session_timeout_ms,
                             election_timeout_ms=args.election_timeout_ms)
        try:
            c.start()
            for r in range(args.rounds):
                old, epoch = wait_until(c.agreed_controller, timeout=30, what="a controller")
                rest = [i for i in c.brokers if i != old]
                c.brokers[old].kill()
                t0 = time.monotonic()

                def agreed():
                    v = c.agreed_controller(rest)
                    return v if v and v[0] != old else None

                new, new_epoch = wait_until(agreed, timeout=60, interval=0.01, what="a new controller")
                t1 = time.monotonic()
                with Admin(bootstrap=",".join(c.brokers[i].bootstrap for i in rest), request_timeout_ms=30_000) as a:
                    a.create_topic(f"after-{r}", partitions=1)
                t2 = time.monotonic()
                elected.append(t1 - t0)
                usable.append(t2 - t0)
                print(f"round {r}: controller {old} (epoch {epoch}) killed -> {new} (epoch {new_epoch}) "
                      f"elected after {t1 - t0:.2f}s, topic created after {t2 - t0:.2f}s")
                c.brokers[old].start()
        finally:
            c.close()
    print(f"failover over {len(elected)} rounds (election_timeout_ms={args.election_timeout_ms}): new controller "
          f"median {statistics.median(elected):.2f}s max {max(elected):.2f}s; admin usable median "
          f"{statistics.median(usable):.2f}s max {max(usable):.2f}s")


if __name__ == "__main__":
    main()
