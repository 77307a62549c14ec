"""``__consumer_offsets`` against a real broker: clients cannot write or reconfigure it, and
garbage put into its files on disk costs one ERROR line per batch, not the broker."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from storage import build_kafka_batch, build_native_batch, iter_batches, set_base_offset
from support import RawClient, wait_until

pytestmark = pytest.mark.timeout(90)

GROUP = "g"
OFFSETS = "__consumer_offsets"


def _ok(raw: RawClient, type_: str, **fields) -> dict | None:
    header, _ = raw.call(type_, **fields)
    return header if header["error"] == 0 else None


def _committed(raw: RawClient) -> dict | None:
    header = _ok(raw, "offset_fetch", group=GROUP)
    return None if header is None else {(o["topic"], o["partition"]): o["offset"] for o in header["offsets"]}


def _append_to_partition_files(data_dir: Path, batches: list[bytes]) -> str:
    """Append ``batches`` (renumbered from the log end) to the offsets partition that holds
    the group's records: the one partition directory with data."""
    dirs = [d for d in data_dir.glob(f"{OFFSETS}-*") if any(f.stat().st_size for f in d.glob("*.log"))]
    assert len(dirs) == 1, dirs
    segment = sorted(dirs[0].glob("*.log"))[-1]
    data = segment.read_bytes()
    leo = max(h.next_offset for _, h in iter_batches(data))
    with segment.open("ab") as f:
        for batch in batches:
            f.write(set_base_offset(batch, leo))
            leo += 1
    return dirs[0].name


def test_clients_cannot_write_the_offsets_topic_and_garbage_on_disk_does_not_stop_the_broker(broker):
    raw = RawClient(broker.bootstrap)
    try:
        wait_until(lambda: _ok(raw, "find_coordinator", group=GROUP), 30, what="a coordinator")
        wait_until(lambda: _ok(raw, "offset_commit", group=GROUP,
                               offsets=[{"topic": "t", "partition": 0, "offset": 5}]), 30, what="a commit")
        assert _committed(raw) == {("t", 0): 5}

        # the wire refuses a client's write and config change
        header, _ = raw.call("produce", (build_native_batch([(1, b"\xc1", b"x", None)]),), acks=1,
                             batches=[{"topic": OFFSETS, "partition": 0}])
        assert header["results"][0]["error"] == 17 and "internal topic" in header["results"][0]["error_message"]
        header, _ = raw.call("alter_topic_config", topic=OFFSETS, config={"retention_ms": 1})
        assert header["error"] == 17, header
        header, _ = raw.call("delete_topic", topic=OFFSETS)
        assert header["error"] == 17, header
    finally:
        raw.close()

    broker.stop()
    garbage = [build_native_batch([(1, b"\xc1 not msgpack", b"x", None)]),
               build_kafka_batch([(1, msgpack.packb(["o", GROUP, "t", 0]), msgpack.packb({"offset": 99}), None)])]
    where = _append_to_partition_files(broker.data_dir, garbage)
    broker.restart()

    raw = RawClient(broker.bootstrap)
    try:
        assert wait_until(lambda: _committed(raw), 30, what="the group's offsets") == {("t", 0): 5}
        assert _ok(raw, "offset_commit", group=GROUP, offsets=[{"topic": "t", "partition": 1, "offset": 6}])
        assert _committed(raw) == {("t", 0): 5, ("t", 1): 6}
    finally:
        raw.close()
    errors = [line for line in broker.log_text().splitlines() if "ERROR" in line and where in line]
    assert len(errors) == 2, errors
    assert "Traceback" not in broker.log_text(tail=None)
