"""Damage costs only what is damaged (issue 10 point 5), with real brokers and real damaged files.

16 flipped bytes in an old segment used to cost every later segment (kill -9) or a traceback per
fetch and a stuck consumer (clean stop). Now they cost the one batch they hit: everything else is
served, the range is logged at ERROR, a fetch inside it answers CORRUPT_MESSAGE with where it
ends, and where there are replicas the leader's copy fills the hole.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import Log, LogConfig
from storage.batch import build_native_batch, decode_native_records, iter_batches
from support import BrokerProcess, ClusterProcesses, RawClient, wait_until
from zbroker.errors import ErrorCode

pytestmark = pytest.mark.timeout(120)

BATCHES = 60
PER_BATCH = 10
SEGMENT_BYTES = 2000


def value(batch_no: int, i: int) -> bytes:
    return f"b{batch_no}-r{i}".encode() * 8


def produce_all(address: str, topic: str, acks: int = 1) -> dict[int, bytes]:
    """BATCHES acknowledged batches; returns {offset: value}."""
    client = RawClient(address)
    out = {}
    try:
        for n in range(BATCHES):
            batch = build_native_batch([(1_700_000_000_000 + i, None, value(n, i), None) for i in range(PER_BATCH)])
            header, _ = client.call("produce", (batch,), timeout=15, acks=acks, timeout_ms=5000,
                                    batches=[{"topic": topic, "partition": 0}])
            result = header["results"][0]
            assert result["error"] == 0, result
            out.update({result["base_offset"] + i: value(n, i) for i in range(PER_BATCH)})
    finally:
        client.close()
    return out


def consume_all(address: str, topic: str) -> tuple[dict[int, bytes], list[list[int]]]:
    """Every readable record, seeking past damaged ranges; returns ({offset: value}, ranges seen)."""
    client = RawClient(address)
    got, ranges, offset = {}, [], 0
    try:
        while True:
            header, frames = client.call("fetch", max_wait_ms=0,
                                         partitions=[{"topic": topic, "partition": 0, "offset": offset}])
            entry = header["partitions"][0]
            if entry["error"] == ErrorCode.CORRUPT_MESSAGE:
                ranges.append(entry["damaged"])
                assert entry["damaged"][0] <= offset < entry["damaged"][1], entry
                offset = entry["damaged"][1]  # seek past it
                continue
            assert entry["error"] == 0, entry
            if not frames[0]:
                return got, ranges
            for pos, h in iter_batches(frames[0]):
                for rec in decode_native_records(frames[0][pos:pos + h.size]):
                    if rec[0] >= offset:
                        got[rec[0]] = rec[3]
                offset = h.next_offset
    finally:
        client.close()


def damage_old_segment(part_dir: Path) -> tuple[int, int]:
    """Flip 16 bytes inside one batch of the third segment; returns that batch's offset range."""
    segments = sorted(part_dir.glob("*.log"))
    assert len(segments) >= 10, segments
    path = segments[2]
    data = bytearray(path.read_bytes())
    pos, h = list(iter_batches(bytes(data)))[1]
    for i in range(pos + 100, pos + 116):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    return h.base_offset, h.next_offset


@pytest.mark.parametrize("stop", ["kill", "stop"])
def test_flipped_bytes_in_an_old_segment_cost_one_batch(tmp_path, stop):
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        RawClient(broker.bootstrap).call("create_topic", topic="d", partitions=1, config={"segment_bytes": SEGMENT_BYTES})
        acked = produce_all(broker.bootstrap, "d")
        getattr(broker, stop)()  # kill: recovery scans the damaged segment; stop: a read finds it
        lost = damage_old_segment(broker.data_dir / "d-0")
        broker.start()
        got, ranges = consume_all(broker.bootstrap, "d")
        assert ranges == [list(lost)]
        assert got == {o: v for o, v in acked.items() if not lost[0] <= o < lost[1]}
        wait_until(lambda: f"offsets [{lost[0]}, {lost[1]}) are lost" in broker.log_text(), timeout=5, what="the ERROR line")
        line = next(l for l in broker.log_text().splitlines() if f"[{lost[0]}, {lost[1]})" in l)
        assert "ERROR" in line and "Traceback" not in broker.log_text(tail=None)
        # writes go on after everything, and the range stays reported after another restart
        broker.restart()
        header, _ = RawClient(broker.bootstrap).call("produce", (build_native_batch([(1, None, b"new", None)]),),
                                                     batches=[{"topic": "d", "partition": 0}])
        assert header["results"][0]["base_offset"] == BATCHES * PER_BATCH
        assert consume_all(broker.bootstrap, "d")[1] == [list(lost)]
    finally:
        broker.close()


def all_offsets(part_dir: Path) -> dict[int, bytes]:
    """Every record in a stopped replica's partition directory."""
    lg = Log(part_dir, LogConfig(), 0)
    try:
        assert not lg.damaged, lg.damaged.ranges
        out, offset = {}, lg.log_start_offset
        while offset < lg.log_end_offset:
            r = lg.read(offset, 1 << 20)
            for pos, h in iter_batches(r.data):
                out.update({rec[0]: rec[3] for rec in decode_native_records(r.data[pos:pos + h.size])})
            offset = r.next_offset
        return out
    finally:
        lg.close()


def partition_meta(c: ClusterProcesses, topic: str) -> dict | None:
    for i, b in c.brokers.items():
        if b.alive():
            meta = c.metadata(i)
            for t in (meta or {}).get("topics", []):
                if t["topic"] == topic and t["partitions"]:
                    return t["partitions"][0]
    return None


def test_a_followers_damaged_range_is_fetched_again_from_the_leader(tmp_path):
    c = ClusterProcesses(tmp_path / "c", replication_factor=3, min_insync_replicas=2, replica_lag_ms=1500)
    try:
        c.start()
        wait_until(c.agreed_controller, timeout=15, what="a controller")
        from clients import Admin

        with Admin(bootstrap=c.bootstrap, request_timeout_ms=20_000) as a:
            a.create_topic("r", partitions=1, replication_factor=3, config={"segment_bytes": SEGMENT_BYTES})
        p = wait_until(lambda: (m := partition_meta(c, "r")) and m["leader"] > 0 and len(m["isr"]) == 3 and m,
                       timeout=15, what="a full ISR")
        acked = produce_all(c.brokers[p["leader"]].bootstrap, "r", acks=-1)
        follower = next(b for b in p["replicas"] if b != p["leader"])
        fb = c.brokers[follower]
        fb.kill()
        lost = damage_old_segment(fb.data_dir / "r-0")
        fb.start()
        wait_until(lambda: f"damaged offsets [({lost[0]}, {lost[1]})]" in fb.log_text(), timeout=15,
                   what="the follower to drop its damaged range")
        # it fetches everything from the hole on again: wait until it is back in the ISR, then stop it
        wait_until(lambda: (m := partition_meta(c, "r")) and follower in m["isr"] and m["leader"] != follower,
                   timeout=30, what="the follower back in the ISR")
        hw = wait_until(lambda: (m := partition_meta(c, "r")) and m, timeout=5)
        assert hw["leader"] == p["leader"]
        wait_until(lambda: _leo_on_disk(fb.data_dir / "r-0") >= BATCHES * PER_BATCH, timeout=30,
                   what="the follower caught up")
        fb.stop()
        assert all_offsets(fb.data_dir / "r-0") == acked  # the hole is filled, nothing else lost
    finally:
        c.close()


def _leo_on_disk(part_dir: Path) -> int:
    """The next offset after the last whole batch in a live replica's files (read only)."""
    end = 0
    for path in sorted(part_dir.glob("*.log")):
        try:
            for _, h in iter_batches(path.read_bytes()):
                end = max(end, h.next_offset)
        except Exception:  # a batch being written right now
            pass
    return end
