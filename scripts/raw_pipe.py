#!/usr/bin/env python3
"""Baseline: a raw pyzmq pipe carrying the benchmark's records, 1,000 to a msgpack frame.

One process packs records ``[timestamp_delta, key, value, headers]`` (100-byte values, null
keys, as `zbroker bench produce` sends) 1,000 to a frame and pushes the frames over TCP
loopback; a second process receives and unpacks every frame.  No broker, no disk, no
offsets: the ceiling a zmq + msgpack system in Python can approach on this machine.

    python scripts/raw_pipe.py [--records 5000000] [--per-frame 1000] [--value-size 100]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import msgpack
import zmq


def receiver(port: int, frames: int, ready, result) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.bind(f"tcp://127.0.0.1:{port}")
    ready.set()
    count = 0
    first = None
    for _ in range(frames):
        data = sock.recv()
        if first is None:
            first = time.perf_counter()
        count += len(msgpack.unpackb(data))
    result.put((count, time.perf_counter() - first))
    sock.close(linger=0)
    ctx.term()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=5_000_000)
    ap.add_argument("--per-frame", type=int, default=1000)
    ap.add_argument("--value-size", type=int, default=100)
    args = ap.parse_args()

    frames = args.records // args.per_frame
    value = os.urandom(args.value_size)
    with zmq.Context() as probe:
        s = probe.socket(zmq.PULL)
        port = s.bind_to_random_port("tcp://127.0.0.1")
        s.close(linger=0)
    ready, result = mp.Event(), mp.Queue()
    proc = mp.Process(target=receiver, args=(port, frames, ready, result))
    proc.start()
    ready.wait(10)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.connect(f"tcp://127.0.0.1:{port}")
    records = [[i, None, value, None] for i in range(args.per_frame)]  # built once: measure the pipe
    start = time.perf_counter()
    for _ in range(frames):
        sock.send(msgpack.packb(records, use_bin_type=True))
    send_elapsed = time.perf_counter() - start
    count, recv_elapsed = result.get(timeout=300)
    proc.join(10)
    sock.close(linger=0)
    ctx.term()
    total = frames * args.per_frame
    print(
        f"raw pipe: {total} records, {args.per_frame}/frame, {args.value_size}-byte values: "
        f"send {total / send_elapsed:,.0f} records/s, receive+unpack {count / recv_elapsed:,.0f} records/s"
    )


if __name__ == "__main__":
    main()
