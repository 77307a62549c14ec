"""The broker's request handling without sockets: frames and `now` in, outbox out."""

import msgpack
import pytest

from storage.batch import build_native_batch
from zbroker.broker import Broker
from zbroker.config import single_node_config

PEER = b"\x00peer"


def req(kind, cid, **fields):
    return msgpack.packb({"v": 1, "type": kind, "cid": cid, **fields})


class Harness:
    def __init__(self, data_dir, now=1_000):
        self.cfg = single_node_config(str(data_dir))
        self.now = now
        self.broker = Broker(self.cfg, 1, now)

    def send(self, kind, cid, *payloads, **fields):
        self.broker.handle(PEER, [req(kind, cid, **fields), *payloads], self.now)

    def replies(self):
        out = [(msgpack.unpackb(frames[0]), frames[1:]) for _, frames in self.broker.outbox]
        self.broker.outbox.clear()
        return out

    def call(self, kind, *payloads, **fields):
        self.send(kind, 1, *payloads, **fields)
        (reply,) = self.replies()
        return reply


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path / "d")
    assert harness.call("create_topic", topic="t", partitions=2)[0]["error"] == 0
    yield harness
    harness.broker.close()


def batch(n=3):
    return build_native_batch([(5, None, b"v%d" % i, None) for i in range(n)])


def test_long_poll_parks_until_an_append_then_answers(h):
    h.send("fetch", 7, max_wait_ms=1000, partitions=[{"topic": "t", "partition": 1, "offset": 0}])
    assert h.replies() == []  # parked
    assert h.broker.next_timer_ms(h.now) <= 1000
    h.send("produce", 8, batch(), batches=[{"topic": "t", "partition": 1}])
    replies = h.replies()
    assert [r[0]["cid"] for r in replies] == [7, 8]  # the append woke the fetch first
    assert len(replies[0][1][0]) > 0


def test_long_poll_expires_at_its_deadline(h):
    h.send("fetch", 7, max_wait_ms=1000, partitions=[{"topic": "t", "partition": 0, "offset": 0}])
    h.broker.tick(h.now + 999)
    assert h.replies() == []
    h.broker.tick(h.now + 1000)
    (reply,) = h.replies()
    assert reply[0]["cid"] == 7 and reply[1] == [b""]


def test_min_bytes_waits_for_enough_data(h):
    small = batch(1)
    h.send("fetch", 7, max_wait_ms=1000, min_bytes=len(small) * 2, partitions=[{"topic": "t", "partition": 0, "offset": 0}])
    h.send("produce", 8, small, batches=[{"topic": "t", "partition": 0}])
    assert [r[0]["cid"] for r in h.replies()] == [8]  # not enough yet
    h.send("produce", 9, batch(1), batches=[{"topic": "t", "partition": 0}])
    assert [r[0]["cid"] for r in h.replies()] == [7, 9]


def test_close_answers_parked_fetches(h):
    h.send("fetch", 7, max_wait_ms=60_000, partitions=[{"topic": "t", "partition": 0, "offset": 0}])
    h.broker.close()
    assert [r[0]["cid"] for r in h.replies()] == [7]


def test_a_handler_bug_is_answered_not_raised(h, monkeypatch):
    def boom(*a):
        raise RuntimeError("bug")

    monkeypatch.setitem(h.broker._handlers, "metadata", boom)
    reply, _ = h.call("metadata")
    assert reply["error"] == -1 and "bug" in reply["error_message"]


def test_state_survives_reopening(tmp_path):
    first = Harness(tmp_path / "d")
    first.call("create_topic", topic="t", partitions=1, config={"retention_ms": 10})
    first.call("produce", batch(4), batches=[{"topic": "t", "partition": 0}])
    first.broker.close()
    second = Harness(tmp_path / "d")
    desc, _ = second.call("describe_topic", topic="t")
    assert desc["config"]["retention_ms"] == 10
    assert desc["partitions"][0]["high_watermark"] == 4
    second.broker.close()


def test_a_topic_deleted_and_created_again_in_one_step_starts_empty(h):
    from zbroker.controller import new_topic
    from zbroker.metadata import topic_record

    h.call("produce", batch(4), batches=[{"topic": "t", "partition": 0}])
    again = new_topic(h.broker.image, [1], "t", 2, 1, {}, {1})
    h.broker.control.propose([{"type": "remove_topic", "name": "t"}, topic_record(again)])  # one metadata step
    h.broker._reconcile(h.now)
    desc, _ = h.call("describe_topic", topic="t")
    assert [p["high_watermark"] for p in desc["partitions"]] == [0, 0]
    marker = h.broker.logs.data_dir / "t-0" / "partition.metadata"
    assert marker.read_text().strip() == f"topic_id: {again.topic_id}"
