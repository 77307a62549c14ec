"""Producer and Consumer against a real broker process."""

from __future__ import annotations

import collections
import threading
import time

import pytest

from clients import Admin, Consumer, Producer, Record, RecordMetadata
from zbroker.errors import (
    ClientClosedError,
    InvalidGroupIdError,
    OffsetOutOfRangeError,
    UnknownTopicOrPartitionError,
)


def consume(consumer: Consumer, n: int, timeout: float = 20.0) -> list[Record]:
    """Poll until ``n`` records arrived or the deadline passes."""
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out.extend(consumer.poll(timeout_ms=200))
    return out


def create(broker, name: str, partitions: int = 3) -> None:
    with Admin(broker.bootstrap) as admin:
        admin.create_topic(name, partitions=partitions)


@pytest.mark.timeout(60)
def test_keyed_and_unkeyed_round_trip(broker):
    create(broker, "orders", 4)
    sent = []
    with Producer(bootstrap=broker.bootstrap, linger_ms=2, batch_size=2048) as p:
        futs = []
        for i in range(3000):
            key = None if i % 3 == 0 else f"key-{i % 17}"
            headers = {"n": str(i), "raw": b"\x00\x01"} if i % 5 == 0 else None
            value = None if i % 101 == 0 else b"value-%d" % i
            futs.append(p.send("orders", value=value, key=key, headers=headers))
            sent.append((key.encode() if key else None, value, {"n": str(i).encode(), "raw": b"\x00\x01"} if headers else {}))
        p.flush(timeout=20)
        metas = [f.result(timeout=1) for f in futs]
    assert all(isinstance(m, RecordMetadata) and m.topic == "orders" for m in metas)
    # keyed records of one key share a partition
    by_key = collections.defaultdict(set)
    for (key, _v, _h), m in zip(sent, metas):
        if key is not None:
            by_key[key].add(m.partition)
    assert all(len(parts) == 1 for parts in by_key.values())
    # offsets are dense per partition and follow send order
    per_part = collections.defaultdict(list)
    for i, m in enumerate(metas):
        per_part[m.partition].append((m.offset, i))
    for items in per_part.values():
        assert [o for o, _ in items] == list(range(len(items)))
    assert len(per_part) == 4  # the sticky null-key spread and the keys reach every partition

    with Consumer("orders", bootstrap=broker.bootstrap, auto_offset_reset="earliest") as c:
        recs = consume(c, len(sent))
    assert len(recs) == len(sent)
    expected = {(m.partition, m.offset): (s, m.timestamp) for s, m in zip(sent, metas)}
    seen_per_part = collections.defaultdict(list)
    for r in recs:
        (key, value, headers), ts = expected[(r.partition, r.offset)]
        assert (r.topic, r.key, r.value, r.headers, r.timestamp) == ("orders", key, value, headers, ts)
        seen_per_part[r.partition].append(r.offset)
    for offsets in seen_per_part.values():
        assert offsets == sorted(offsets) == list(range(len(offsets)))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_compression_round_trip(broker, compression):
    create(broker, "comp", 1)
    with Producer(bootstrap=broker.bootstrap, compression=compression) as p:
        for i in range(500):
            p.send("comp", value=b"compressible " * 20 + str(i).encode(), key=b"k")
    with Consumer("comp", bootstrap=broker.bootstrap) as c:
        recs = consume(c, 500)
    assert [r.value for r in recs] == [b"compressible " * 20 + str(i).encode() for i in range(500)]


@pytest.mark.timeout(30)
def test_acks_all_and_acks_zero(broker):
    create(broker, "acks", 1)
    with Producer(bootstrap=broker.bootstrap, acks="all") as p:
        assert p.send("acks", b"a").result(10).offset == 0
    with Producer(bootstrap=broker.bootstrap, acks=0) as p:
        meta = p.send("acks", b"b").result(10)
        assert meta.offset == -1 and meta.partition == 0
        p.flush(10)
    with Consumer("acks", bootstrap=broker.bootstrap) as c:
        assert [r.value for r in consume(c, 2)] == [b"a", b"b"]


@pytest.mark.timeout(30)
def test_flush_and_close_semantics(broker):
    create(broker, "fc", 2)
    p = Producer(bootstrap=broker.bootstrap, linger_ms=60_000)  # only flush/close send
    futs = [p.send("fc", b"x%d" % i) for i in range(10)]
    assert not any(f.done() for f in futs)
    p.flush(timeout=10)
    assert all(f.done() and f.exception() is None for f in futs)
    more = [p.send("fc", b"y") for _ in range(5)]
    p.close(timeout=10)  # close flushes
    assert all(f.result(0).offset >= 0 for f in more)
    with pytest.raises(ClientClosedError):
        p.send("fc", b"z")
    p.close()  # idempotent


@pytest.mark.timeout(30)
def test_auto_create_and_unknown_partition(broker):
    with Producer(bootstrap=broker.bootstrap) as p:
        meta = p.send("fresh-topic", b"hello").result(10)
        assert meta.topic == "fresh-topic" and meta.offset == 0
        count = len(p.partitions_for("fresh-topic"))
        fut = p.send("fresh-topic", b"x", partition=count + 5)
        with pytest.raises(UnknownTopicOrPartitionError):
            fut.result(10)
    with Admin(broker.bootstrap) as admin:
        assert "fresh-topic" in admin.list_topics()


@pytest.mark.timeout(30)
def test_done_callback_runs(broker):
    create(broker, "cb", 1)
    got = []
    done = threading.Event()
    with Producer(bootstrap=broker.bootstrap) as p:
        f = p.send("cb", b"v")
        f.add_done_callback(lambda fut: (got.append(fut.result()), done.set()))
        assert done.wait(10)
    assert got[0].offset == 0


@pytest.mark.timeout(45)
def test_seek_position_and_offset_lookups(broker):
    create(broker, "pos", 1)
    t0 = int(time.time() * 1000) - 100_000
    with Producer(bootstrap=broker.bootstrap, linger_ms=0) as p:
        for i in range(10):
            p.send("pos", b"v%d" % i, timestamp_ms=t0 + i * 1000).result(10)  # one batch each
    tp = ("pos", 0)
    with Consumer(bootstrap=broker.bootstrap) as c:
        c.assign([tp])
        assert c.assignment() == {tp}
        assert c.position("pos", 0) == 0
        c.seek("pos", 0, 7)
        assert c.position("pos", 0) == 7
        assert [r.offset for r in consume(c, 3)] == [7, 8, 9]
        assert c.position("pos", 0) == 10
        c.seek_to_beginning()
        assert c.position("pos", 0) == 0
        c.seek_to_end(tp)
        assert c.position("pos", 0) == 10
        assert c.poll(timeout_ms=200) == []
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: 10}
        found = c.offsets_for_times({tp: t0 + 4500, ("pos", 0): t0 + 4500})
        assert found[tp].offset == 5 and found[tp].timestamp == t0 + 5000
        assert c.offsets_for_times({tp: t0 + 10**9}) == {tp: None}
        with pytest.raises(InvalidGroupIdError):
            c.commit()


@pytest.mark.timeout(30)
def test_auto_offset_reset_none_raises(broker):
    create(broker, "strict", 1)
    with Producer(bootstrap=broker.bootstrap) as p:
        p.send("strict", b"a").result(10)
    with Consumer("strict", bootstrap=broker.bootstrap, auto_offset_reset="none") as c:
        with pytest.raises(OffsetOutOfRangeError):
            c.poll(timeout_ms=2000)
        c.seek("strict", 0, 0)
        assert [r.value for r in consume(c, 1)] == [b"a"]
        c.seek("strict", 0, 50)  # beyond the log end
        with pytest.raises(OffsetOutOfRangeError):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                c.poll(timeout_ms=200)


@pytest.mark.timeout(30)
def test_out_of_range_resets_to_earliest(broker):
    create(broker, "oor", 1)
    with Producer(bootstrap=broker.bootstrap) as p:
        for i in range(3):
            p.send("oor", b"%d" % i)
    with Consumer("oor", bootstrap=broker.bootstrap, auto_offset_reset="earliest") as c:
        c.seek("oor", 0, 1000)
        assert [r.offset for r in consume(c, 3)] == [0, 1, 2]


@pytest.mark.timeout(30)
def test_latest_reset_sees_only_new_records_and_iteration_stops_on_close(broker):
    create(broker, "live", 1)
    with Producer(bootstrap=broker.bootstrap) as p:
        p.send("live", b"old").result(10)
        c = Consumer("live", bootstrap=broker.bootstrap, auto_offset_reset="latest")
        assert c.position("live", 0) == 1
        p.send("live", b"new").result(10)
        got = []

        def reader():
            for rec in c:
                got.append(rec.value)

        t = threading.Thread(target=reader)
        t.start()
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        c.close()
        t.join(5)
        assert not t.is_alive()
    assert got == [b"new"]


@pytest.mark.timeout(30)
def test_a_group_member_resumes_from_the_committed_offset(broker):
    create(broker, "grp", 2)
    with Producer(bootstrap=broker.bootstrap) as p:
        for i in range(10):
            p.send("grp", b"%d" % i, partition=i % 2)
        p.flush(10)
    assigned = []
    with Consumer("grp", group="g1", bootstrap=broker.bootstrap, value_deserializer="str", enable_auto_commit=False,
                  session_timeout_ms=5000, on_assigned=assigned.extend) as c:
        got = consume(c, 10)
        assert sorted(r.value for r in got) == [str(i) for i in range(10)]
        assert sorted(assigned) == [("grp", 0), ("grp", 1)]
        c.commit({("grp", 0): 3, ("grp", 1): 5}, metadata="half way")
        assert c.committed("grp", 0) == 3 and c.committed("grp", 1) == 5
    with Consumer("grp", group="g1", bootstrap=broker.bootstrap, value_deserializer="str", session_timeout_ms=5000) as c:
        got = consume(c, 2)  # each partition holds offsets 0-4: p0 has 3 and 4 left, p1 nothing
        assert sorted((r.partition, r.offset) for r in got) == [(0, 3), (0, 4)]  # resumed where committed
        assert c.position("grp", 1) == 5


@pytest.mark.timeout(60)
def test_producer_retries_across_broker_restart(broker):
    create(broker, "durable", 1)
    with Producer(bootstrap=broker.bootstrap, request_timeout_ms=5000) as p:
        assert p.send("durable", b"before").result(10).offset == 0
        broker.kill()
        futs = [p.send("durable", b"during-%d" % i) for i in range(20)]
        broker.start()
        offsets = [f.result(30).offset for f in futs]
    assert offsets == sorted(offsets) and len(set(offsets)) == 20
    with Consumer("durable", bootstrap=broker.bootstrap) as c:
        values = [r.value for r in consume(c, 21)]
    assert values[0] == b"before"
    assert [v for v in values if v.startswith(b"during")] == [b"during-%d" % i for i in range(20)]


@pytest.mark.timeout(30)
def test_subscription_picks_up_topic_created_later(broker):
    with Consumer("later", bootstrap=broker.bootstrap, fetch_max_wait_ms=100) as c:
        assert c.assignment() == set()
        assert c.poll(timeout_ms=100) == []
        with Producer(bootstrap=broker.bootstrap) as p:
            p.send("later", b"hi").result(10)  # auto-creates the topic
        recs = consume(c, 1)
    assert [r.value for r in recs] == [b"hi"]


@pytest.mark.timeout(30)
def test_mixed_null_and_keyed_sends_keep_send_order(broker):
    create(broker, "mixed", 1)
    with Producer(bootstrap=broker.bootstrap, batch_size=1000, linger_ms=1) as p:
        futs = [
            p.send("mixed", value=b"v" * (1 + (i * 37) % 300), key=(b"k" if i % 2 else None))
            for i in range(2000)
        ]
        p.flush(20)
    assert [f.result(0).offset for f in futs] == list(range(2000))
