"""No request costs much more than it carries, against a real broker process with raw frames."""

from __future__ import annotations

import time
from pathlib import Path

import msgpack
import pytest
import zmq

from storage.batch import build_native_batch
from support import RawClient, running_broker

pytestmark = pytest.mark.timeout(90)

QUEUED_REPLY_BYTES = 16 << 20  # the broker's max_queued_reply_bytes in these tests
MiB = 1 << 20
SLACK = 32 * MiB  # allocator, kernel socket buffers, pyzmq bookkeeping


@pytest.fixture
def small_budget_broker(tmp_path):
    yield from running_broker(tmp_path, f"[cluster]\nmax_queued_reply_bytes = {QUEUED_REPLY_BYTES}\n\n[[broker]]\nid = 1\n")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


UNREAD_FETCHES = {
    "one 64 KiB frame": [{"topic": "big", "partition": 0, "offset": 0, "max_bytes": 65536}],
    # the tracker of a reply is its last frame's: an empty or small last frame must still count
    "64 KiB then an empty frame": [{"topic": "big", "partition": 0, "offset": 0, "max_bytes": 65536},
                                   {"topic": "big", "partition": 1, "offset": 1}],
    "60 KB frames (copied by pyzmq)": [{"topic": "big", "partition": 1, "offset": 0}],
}


@pytest.mark.parametrize("partitions", list(UNREAD_FETCHES.values()), ids=list(UNREAD_FETCHES))
def test_unread_replies_hold_a_bounded_amount_of_broker_memory(small_budget_broker, partitions):
    """10k unread 64 KB replies once held 712 MB of the broker's memory.  Now the replies ZeroMQ
    still holds for one connection are bounded by max_queued_reply_bytes (plus one reply); the
    rest are dropped, and the broker keeps serving others."""
    broker = small_budget_broker
    other = RawClient(broker.bootstrap)
    assert other.call("create_topic", topic="big", partitions=2)[0]["error"] == 0
    value = bytes(range(256)) * 256  # 64 KiB, incompressible enough
    for index, size in ((0, len(value)), (1, 60_000)):
        header, _ = other.call("produce", (build_native_batch([(0, None, value[:size], None)]),),
                               batches=[{"topic": "big", "partition": index}])
        assert header["results"][0]["error"] == 0
    baseline = rss_bytes(broker.proc.pid)

    hog = zmq.Context.instance().socket(zmq.DEALER)  # sends, never reads
    hog.setsockopt(zmq.LINGER, 0)
    hog.setsockopt(zmq.RCVHWM, 1)
    hog.setsockopt(zmq.RCVBUF, 4096)
    hog.connect(f"tcp://{broker.bootstrap}")
    fetch = {"v": 1, "type": "fetch", "max_wait_ms": 0, "partitions": partitions}
    try:
        for cid in range(10_000):
            hog.send(msgpack.packb({**fetch, "cid": cid}))
        peak, served = baseline, 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            peak = max(peak, rss_bytes(broker.proc.pid))
            assert peak - baseline < QUEUED_REPLY_BYTES + SLACK, f"broker RSS grew by {(peak - baseline) / MiB:.0f} MiB"
            # the broker keeps serving another client meanwhile
            header, frames = other.call("fetch", max_wait_ms=0, partitions=[{"topic": "big", "partition": 0, "offset": 0}])
            assert header["error"] == 0 and len(frames[0]) > 65536
            served += 1
            if "max_queued_reply_bytes" in broker.log_text() and served >= 20:
                break
        assert "max_queued_reply_bytes" in broker.log_text(tail=None), "no reply was ever dropped"
        peak = max(peak, rss_bytes(broker.proc.pid))
        assert peak - baseline < QUEUED_REPLY_BYTES + SLACK, f"broker RSS grew by {(peak - baseline) / MiB:.0f} MiB"
        assert other.call("metadata", topics=["big"])[0]["topics"][0]["error"] == 0
    finally:
        hog.close(linger=0)
        other.close()


def test_a_metadata_request_with_200k_names_is_refused_at_once(broker):
    """1M names once blocked the loop for 4.6 s; now the cap answers before any name is looked up."""
    client, other = RawClient(broker.bootstrap), RawClient(broker.bootstrap)
    try:
        cid = client.send({"type": "metadata", "topics": [f"topic-{i}" for i in range(200_000)]})
        header, _ = client.recv(timeout=10)
        assert header["cid"] == cid and header["error"] == 42
        assert header["error_message"] == "field 'topics' has 200000 items, over the cap of 10000"
        assert len(msgpack.packb(header)) < 512
        assert other.call("metadata", topics=[])[0]["error"] == 0
    finally:
        client.close()
        other.close()


def test_a_5mb_type_string_is_answered_and_logged_in_a_few_hundred_bytes(broker, raw):
    """A 5 MB type string once came back as a 10 MB reply and a 50 MB log line."""
    before = broker.log_path.stat().st_size
    for _ in range(3):
        header, _ = raw.call("q" * 5_000_000)
        assert header["error"] == 42 and header["type"] == "error"
        assert len(msgpack.packb(header)) < 512
    assert raw.call("metadata", topics=[])[0]["error"] == 0
    assert broker.log_path.stat().st_size - before < 4096
