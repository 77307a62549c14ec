"""A consumer-group member in its own process, for fault tests (kill -9 needs a process).

Polls ``--topic`` in ``--group``, appends one line per record to ``--out``
(``R partition offset value``) and one per assignment change (``A`` / ``V`` with
the partitions), commits synchronously after every poll that returned records,
and closes cleanly (commit + leave) on SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from clients import Consumer  # noqa: E402
from zbroker.errors import ZBrokerError  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--session-ms", type=int, default=3000)
    args = ap.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    out = open(args.out, "a", buffering=1)

    def note(kind):
        return lambda tps: out.write(f"{kind} {' '.join(f'{t}:{p}' for t, p in sorted(tps))}\n")

    # auto-commit on: revoked partitions' positions are committed before they are released (and
    # on close); the interval is long because the loop below commits after every poll anyway
    consumer = Consumer(args.topic, group=args.group, bootstrap=args.bootstrap, session_timeout_ms=args.session_ms,
                        enable_auto_commit=True, auto_commit_interval_ms=3_600_000, max_poll_interval_ms=60_000,
                        on_assigned=note("A"), on_revoked=note("V"), on_lost=note("L"))
    try:
        while not stop:
            recs = consumer.poll(timeout_ms=200)
            if recs:
                out.write("".join(f"R {r.partition} {r.offset} {r.value.decode()}\n" for r in recs))
                try:
                    consumer.commit()
                except ZBrokerError as exc:  # a partition moved meanwhile: its new owner re-reads the tail
                    out.write(f"E {exc}\n")
    finally:
        consumer.close()
        out.write("CLOSED\n")
        out.close()


if __name__ == "__main__":
    main()
