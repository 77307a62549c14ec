"""Retention on a real broker: disk use bounded while data streams through; live config changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clients import Admin, Consumer, Producer
from support import running_broker, wait_until

pytestmark = pytest.mark.timeout(180)

MB = 1 << 20


@pytest.fixture
def broker(tmp_path):
    yield from running_broker(tmp_path, "[cluster]\nretention_check_ms = 200\n\n[[broker]]\nid = 1\n\n[topic_defaults]\npartitions = 1\n")


def disk_use(path: Path) -> int:
    total = 0
    for f in path.iterdir():
        if f.suffix in (".log", ".index", ".timeindex"):
            try:
                total += f.stat().st_size
            except FileNotFoundError:  # retention deleted it meanwhile
                pass
    return total


def test_retention_bytes_bounds_disk_use_while_40_mb_pass_through(broker):
    with Admin(bootstrap=broker.bootstrap) as a:
        a.create_topic("stream", partitions=1, config={"retention_bytes": 4 * MB, "segment_bytes": MB})
    value = os.urandom(1000)
    part_dir = broker.data_dir / "stream-0"
    bound = 4 * MB + 2 * MB + 64 * 1024  # retention_bytes, the active segment, one chunk in flight
    peak = 0
    with Producer(bootstrap=broker.bootstrap, linger_ms=2) as p:
        for chunk in range(40):  # 40 x 1 MB
            for _ in range(1024):
                p.send("stream", value)
            p.flush(30)
            peak = max(peak, disk_use(part_dir))
            # retention runs every 200 ms in the background: the log comes back under the bound
            wait_until(lambda: disk_use(part_dir) <= bound, timeout=10, what=f"retention after {chunk + 1} MB")
    print(f"40 MB written, retention_bytes = 4 MB, segment_bytes = 1 MB: disk use peaked at {peak / MB:.1f} MB")
    with Consumer("stream", bootstrap=broker.bootstrap, auto_offset_reset="earliest") as c:
        start = c.beginning_offsets([("stream", 0)])[("stream", 0)]
        assert start > 30_000  # the log start moved forward
        c.assign([("stream", 0)])
        c.seek("stream", 0, 0)  # below the log start: out of range, reset to earliest
        recs = wait_until(lambda: c.poll(timeout_ms=200), timeout=10, what="records after the reset")
        assert recs[0].offset == start


def test_altering_retention_takes_effect_without_a_restart(broker):
    with Admin(bootstrap=broker.bootstrap) as a:
        a.create_topic("alter", partitions=1, config={"segment_bytes": 64 * 1024})
        with Producer(bootstrap=broker.bootstrap) as p:
            for _ in range(2000):
                p.send("alter", os.urandom(200))
            p.flush(10)
        assert a.describe_topic("alter").partitions[0].log_start_offset == 0
        a.alter_topic_config("alter", {"retention_bytes": 128 * 1024})
        assert a.describe_topic("alter").config["retention_bytes"] == 128 * 1024
        wait_until(lambda: a.describe_topic("alter").partitions[0].log_start_offset > 0, timeout=10, what="retention to apply")
        a.alter_topic_config("alter", {"retention_bytes": None})  # back to the broker default
        assert a.describe_topic("alter").config["retention_bytes"] == -1


def test_growing_a_topic_adds_partitions_that_clients_use(broker):
    with Admin(bootstrap=broker.bootstrap) as a:
        a.create_topic("grow", partitions=2)
        a.create_partitions("grow", 5)
        assert [p.partition for p in a.describe_topic("grow").partitions] == [0, 1, 2, 3, 4]
        with pytest.raises(Exception):
            a.create_partitions("grow", 3)  # shrinking is refused
    with Producer(bootstrap=broker.bootstrap) as p:
        assert p.send("grow", b"x", partition=4).result(10).partition == 4


def test_a_compacted_topic_keeps_the_latest_value_per_key_while_a_consumer_reads_it(broker):
    keys = [b"k%d" % i for i in range(20)]
    with Admin(bootstrap=broker.bootstrap) as a:
        a.create_topic("latest", partitions=1, config={"cleanup_policy": "compact", "segment_bytes": 16 * 1024,
                                                        "min_cleanable_dirty_ratio": 0.1, "delete_retention_ms": 0})
    latest = {}
    seen_offsets = []
    with Consumer("latest", bootstrap=broker.bootstrap, auto_offset_reset="earliest") as c, \
            Producer(bootstrap=broker.bootstrap, linger_ms=1) as p:
        for n in range(6000):
            key = keys[n % len(keys)]
            value = None if n % 997 == 0 else b"%s=%d" % (key, n)
            p.send("latest", value=value, key=key)
            latest[key] = value
            if n % 500 == 0:
                p.flush(10)
                seen_offsets.extend(r.offset for r in c.poll(timeout_ms=50))  # reading while the cleaner works
        p.flush(10)
        end = c.end_offsets([("latest", 0)])[("latest", 0)]
        while not seen_offsets or seen_offsets[-1] < end - 1:
            seen_offsets.extend(r.offset for r in c.poll(timeout_ms=200))
    assert seen_offsets == sorted(set(seen_offsets))  # in order, nothing twice, across the cleaner's swaps
    part_dir = broker.data_dir / "latest-0"

    def compacted():
        with Consumer(bootstrap=broker.bootstrap, auto_offset_reset="earliest") as c:
            c.assign([("latest", 0)])
            recs = []
            while not recs or recs[-1].offset < end - 1:
                batch = c.poll(timeout_ms=200)
                if not batch:
                    break
                recs.extend(batch)
        return recs if len(recs) < end / 4 else None  # far fewer than written: cleaned

    recs = wait_until(compacted, timeout=20, what="the cleaner to compact the closed segments")
    final = {}
    for r in recs:
        final[r.key] = r.value
    assert {k: v for k, v in final.items() if v is not None} == {k: v for k, v in latest.items() if v is not None}
    assert len(list(part_dir.glob("*.log"))) >= 1
