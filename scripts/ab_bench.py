#!/usr/bin/env python3
"""A/B benchmark: this checkout against an earlier commit, alternating, on one machine.

For each round and each side (``base`` = a git worktree of ``--base``, ``head`` = this
checkout, in turn) a fresh single-node broker of that side's code is started on a fresh data
dir, then that side's ``zbroker bench produce`` and ``bench consume`` run against it.  Sides
alternate so the machine's noise falls on both; the table gives each run's records/s and the
head/base ratio of the medians.

    python scripts/ab_bench.py --base 7c114ad [--rounds 3] [--records 1000000]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATE = re.compile(r"= ([\d,]+) records/s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_side(code: Path, records: int) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=str(code))
    data = tempfile.mkdtemp(prefix="abbench-")
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    args = [sys.executable, "-m", "zbroker", "serve", "--data-dir", data, "--listen", bootstrap]
    if "--kafka-listen" in (code / "zbroker" / "cli" / "serve.py").read_text():  # revisions with a Kafka door
        args += ["--kafka-listen", "none"]
    broker = subprocess.Popen(args, cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([sys.executable, "-m", "zbroker", "--bootstrap", bootstrap, "topics", "list"], cwd=code, env=env,
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the broker of {code} did not start")
            time.sleep(0.2)
        rates = []
        for kind in ("produce", "consume"):
            out = subprocess.run([sys.executable, "-m", "zbroker", "--bootstrap", bootstrap, "bench", kind, "--records",
                                  str(records)], cwd=code, env=env, capture_output=True, text=True, timeout=600)
            match = RATE.search(out.stdout + out.stderr)
            if match is None:
                raise RuntimeError(f"bench {kind} of {code} printed no rate:\n{out.stdout}{out.stderr}")
            rates.append(float(match.group(1).replace(",", "")))
        return rates[0], rates[1]
    finally:
        broker.terminate()
        broker.wait(30)
        shutil.rmtree(data, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="abbench-base-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base], check=True,
                   capture_output=True)
    results: dict[str, list[tuple[float, float]]] = {"base": [], "head": []}
    try:
        for i in range(args.rounds):
            for side, code in (("base", base), ("head", ROOT)) if i % 2 == 0 else (("head", ROOT), ("base", base)):
                produce, consume = run_side(code, args.records)
                results[side].append((produce, consume))
                print(f"round {i + 1} {side}: produce {produce:,.0f} records/s, consume {consume:,.0f} records/s", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)
    for j, kind in enumerate(("produce", "consume")):
        b = statistics.median(r[j] for r in results["base"])
        h = statistics.median(r[j] for r in results["head"])
        print(f"{kind}: median base {b:,.0f}, head {h:,.0f} records/s; head/base = {h / b:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
