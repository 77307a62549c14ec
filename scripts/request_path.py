"""List the source files one produce request passes through on the broker (docs/architecture.md §2).

Builds a single-node broker in-process (sans-IO: frames in, frames out), creates a topic,
then traces one acks=all produce request with ``sys.setprofile`` and prints every project
file whose code ran, in first-call order.  The record batch is built before tracing starts.

    python scripts/request_path.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.batch import build_native_batch  # noqa: E402
from zbroker.config import single_node_config  # noqa: E402
from zbroker.node import BrokerNode  # noqa: E402


def request(kind: str, cid: int, **fields) -> bytes:
    return msgpack.packb({"v": 1, "type": kind, "cid": cid, **fields})


def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        node = BrokerNode(single_node_config(data_dir), 1, 1000)
        node.handle(b"\0client", [request("create_topic", 1, topic="t", partitions=1)], 1000)
        node.tick(1001)
        batch = build_native_batch([(1, None, b"v", None)])
        files: dict[str, None] = {}

        def profile(frame, event, _arg) -> None:
            name = frame.f_code.co_filename
            if event == "call" and name.startswith(str(ROOT)) and f"{os.sep}.venv{os.sep}" not in name and name != __file__:
                files.setdefault(os.path.relpath(name, ROOT), None)

        sys.setprofile(profile)
        node.handle(b"\0client", [request("produce", 2, acks=-1, batches=[{"topic": "t", "partition": 0}]), batch], 1002)
        sys.setprofile(None)
        node.close()
    print(f"{len(files)} files:")
    for name in files:
        print(f"  {name}")


if __name__ == "__main__":
    main()
