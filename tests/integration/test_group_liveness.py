"""Group liveness on one broker: max_poll_interval, static membership, offsets across restarts."""

from __future__ import annotations

import time

import pytest

from clients import Admin, Consumer, Producer
from support import RawClient, wait_until

pytestmark = pytest.mark.timeout(90)


def setup_topic(broker, name="t", partitions=2, records=10):
    with Admin(bootstrap=broker.bootstrap) as a:
        a.create_topic(name, partitions=partitions)
    with Producer(bootstrap=broker.bootstrap) as p:
        for i in range(records):
            p.send(name, b"%d" % i, partition=i % partitions)
        p.flush(10)


def members(broker, group):
    h, _ = RawClient(broker.bootstrap).call("describe_group", group=group)
    return {m.get("instance_id") or m["member_id"]: sorted(map(tuple, m["assignment"])) for m in h.get("members", [])}


def poll_until(consumer, pred, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        consumer.poll(timeout_ms=100)
        if pred():
            return True
    return False


def poll_all(consumers, pred, timeout=20, what="condition"):
    """Poll every consumer in turn (a member releases partitions only inside its poll) until ``pred()``."""
    return wait_until(lambda: [c.poll(timeout_ms=50) for c in consumers] and pred(), timeout=timeout, what=what)


def test_a_member_that_stops_polling_leaves_and_its_partitions_move(broker):
    setup_topic(broker)
    lost = []
    slow = Consumer("t", group="g", bootstrap=broker.bootstrap, session_timeout_ms=10_000, max_poll_interval_ms=1500,
                    on_lost=lost.extend)
    fast = Consumer("t", group="g", bootstrap=broker.bootstrap, session_timeout_ms=10_000)
    try:
        both = lambda: len(slow.assignment()) == 1 and len(fast.assignment()) == 1  # noqa: E731
        poll_all([slow, fast], both, what="one partition each")
        # slow stops polling; after max_poll_interval_ms it leaves, long before its session would expire
        assert poll_until(fast, lambda: len(fast.assignment()) == 2, timeout=8)
        slow.poll(timeout_ms=100)  # back: it learns it lost its partitions, and joins again
        assert lost
        poll_all([slow, fast], both, what="one partition each again")
    finally:
        slow.close()
        fast.close()


def test_a_static_member_restarting_within_its_session_keeps_its_partitions(broker):
    setup_topic(broker, partitions=4)
    other = Consumer("t", group="s", bootstrap=broker.bootstrap, session_timeout_ms=20_000)
    first = Consumer("t", group="s", bootstrap=broker.bootstrap, session_timeout_ms=20_000, group_instance_id="web-1")
    try:
        poll_all([first, other], lambda: len(first.assignment()) == 2 and len(other.assignment()) == 2, what="two each")
        mine = sorted(first.assignment())
        first.close()  # a static member's close keeps its slot for its session
        assert members(broker, "s")["web-1"] == [tuple(tp) for tp in mine]  # nothing moved
        other.poll(timeout_ms=200)
        assert len(other.assignment()) == 2
        second = Consumer("t", group="s", bootstrap=broker.bootstrap, session_timeout_ms=20_000, group_instance_id="web-1")
        try:
            assert poll_until(second, lambda: sorted(second.assignment()) == mine)
            assert members(broker, "s")["web-1"] == [tuple(tp) for tp in mine]
        finally:
            second.close()
    finally:
        other.close()


def test_committed_offsets_survive_a_broker_restart(broker):
    setup_topic(broker)
    with Consumer("t", group="r", bootstrap=broker.bootstrap, enable_auto_commit=False) as c:
        assert poll_until(c, lambda: c.assignment())
        c.commit({("t", 0): 4, ("t", 1): 2}, metadata="before restart")
    broker.stop()
    broker.start()
    with Consumer("t", group="r", bootstrap=broker.bootstrap) as c:
        assert wait_until(lambda: c.committed("t", 0) == 4, timeout=20, what="committed offsets after the restart")
        assert c.committed("t", 1) == 2
