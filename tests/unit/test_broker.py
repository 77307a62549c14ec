"""The broker's request handling without sockets: frames and `now` in, outbox out."""

import dataclasses

import msgpack
import pytest

from storage.batch import build_native_batch
from zbroker.node import BrokerNode
from zbroker.config import single_node_config

PEER = b"\x00peer"


def req(kind, cid, **fields):
    return msgpack.packb({"v": 1, "type": kind, "cid": cid, **fields})


class Harness:
    def __init__(self, data_dir, now=1_000):
        self.cfg = single_node_config(str(data_dir))
        self.now = now
        self.broker = BrokerNode(self.cfg, 1, now)

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

    monkeypatch.setitem(h.broker.router.table, "metadata", dataclasses.replace(h.broker.router.table["metadata"], call=boom))
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
    from zbroker.control.controller import new_topic
    from zbroker.control.metadata import topic_record

    h.call("produce", batch(4), batches=[{"topic": "t", "partition": 0}])
    again = new_topic(h.broker.app.control.image, [1], "t", 2, 1, {}, {1})
    h.broker.app.control.propose([{"type": "remove_topic", "name": "t"}, topic_record(again)])  # one metadata step
    h.broker.app.metadata_changed(h.now)
    desc, _ = h.call("describe_topic", topic="t")
    assert [p["high_watermark"] for p in desc["partitions"]] == [0, 0]
    marker = h.broker.app.logs.data_dir / "t-0" / "partition.metadata"
    assert marker.read_text().strip() == f"topic_id: {again.topic_id}"


def test_compaction_runs_in_bounded_turns_of_the_loop(h, monkeypatch):
    import zbroker.core.housekeeping as hk
    from storage import decode_native_records, iter_batches

    monkeypatch.setattr(hk, "CLEAN_BYTES_PER_TURN", 4096)
    cfg = {"cleanup_policy": "compact", "segment_bytes": 4096, "min_cleanable_dirty_ratio": 0.1}
    assert h.call("create_topic", topic="c", partitions=1, config=cfg)[0]["error"] == 0
    model = {}
    for i in range(200):
        recs = [(h.now, b"k%d" % ((i * 3 + j) % 7), b"v%d-%d" % (i, j) + b"." * 40, None) for j in range(4)]
        model.update({k: v for _ts, k, v, _h in recs})
        assert h.call("produce", build_native_batch(recs), acks=1,
                      batches=[{"topic": "c", "partition": 0}])[0]["error"] == 0
    part = h.broker.app.partitions.online[("c", 0)]
    before = part.log.size_bytes()
    h.now += h.cfg.setting("retention_check_ms")
    turns = 0
    while True:
        h.broker.tick(h.now)
        turns += 1
        if ("c", 0) not in h.broker.app.housekeeping.cleaners and part.log.size_bytes() < before:
            break
        assert h.broker.next_timer_ms(h.now) <= 10  # an unfinished pass asks for the next turn soon
        h.now += 10
        assert turns < 500
    assert turns > 5  # the pass was spread over many turns
    data = part.log.read(0, 1 << 20).data
    closed_keys, latest = [], {}
    for pos, hd in iter_batches(data):
        for off, _ts, k, v, _hd in decode_native_records(data[pos:pos + hd.size]):
            if off < part.log.active_segment.base_offset:
                closed_keys.append(k)
            latest[k] = v
    assert latest == model
    assert len(closed_keys) == len(set(closed_keys))  # one record per key left in closed segments
    # where the pass ended survives a restart, so the next start does not clean it all again
    cleaned_to = h.broker.app.logs.cleaned_to[("c", 0)]
    assert cleaned_to == part.log.active_segment.base_offset
    h.broker.tick(h.now + h.cfg.setting("flush_check_ms"))
    h.broker.close()
    h.broker = BrokerNode(h.cfg, 1, h.now)
    assert h.broker.app.logs.cleaned_to[("c", 0)] == cleaned_to


def test_a_big_topic_is_opened_over_several_turns(h):
    from zbroker.core.partitions import OPENS_PER_TURN

    n = OPENS_PER_TURN * 4 + 3
    h.broker.tick(h.now)  # a new turn
    assert h.call("create_topic", topic="big", partitions=n)[0]["error"] == 0
    opened = [tp for tp in h.broker.app.partitions.online if tp[0] == "big"]
    assert len(opened) == OPENS_PER_TURN  # the rest is queued, the loop is not held up
    waiting = next(i for i in range(n) if ("big", i) not in h.broker.app.partitions.online)
    reply = h.call("produce", batch(), acks=1, batches=[{"topic": "big", "partition": waiting}])
    assert reply[0]["results"][0]["error"] == 5  # LEADER_NOT_AVAILABLE: retriable
    turns = 0
    while h.broker.next_timer_ms(h.now) == 0 and turns < 100:
        h.broker.tick(h.now)
        turns += 1
    assert turns == 4 and all(("big", i) in h.broker.app.partitions.online for i in range(n))
    reply = h.call("produce", batch(), acks=1, batches=[{"topic": "big", "partition": waiting}])
    assert reply[0]["results"][0]["error"] == 0


def test_a_deleted_topic_is_renamed_at_once_and_removed_in_later_turns(h):
    from zbroker.core.partitions import PURGES_PER_TURN

    n = PURGES_PER_TURN * 2 + 1
    assert h.call("create_topic", topic="gone", partitions=n)[0]["error"] == 0
    while h.broker.app.partitions.opening:
        h.broker.tick(h.now)
    assert h.call("produce", batch(), acks=1, batches=[{"topic": "gone", "partition": 0}])[0]["error"] == 0
    data_dir = h.broker.app.logs.data_dir
    assert h.call("delete_topic", topic="gone")[0]["error"] == 0
    assert not any(p.name.startswith("gone-") and p.name[5:].isdigit() for p in data_dir.iterdir())
    trash = [p for p in data_dir.iterdir() if p.name.endswith("-delete")]
    assert len(trash) == n  # renamed, not yet removed
    assert h.broker.next_timer_ms(h.now) <= 10
    turns = 0
    while any(p.name.endswith("-delete") for p in data_dir.iterdir()):
        h.broker.tick(h.now)
        turns += 1
        assert turns < 10
    assert turns == 3
    # a topic of the same name starts empty
    assert h.call("create_topic", topic="gone", partitions=1)[0]["error"] == 0
    reply = h.call("list_offsets", partitions=[{"topic": "gone", "partition": 0, "timestamp": -1}])
    assert reply[0]["partitions"][0]["offset"] == 0


def test_trash_left_by_a_crash_is_removed_after_a_restart(tmp_path):
    h = Harness(tmp_path / "d")
    stale = h.broker.app.logs.data_dir / "old-0.0123abcd-delete"
    stale.mkdir()
    (stale / "00000000000000000000.log").write_bytes(b"x" * 100)
    h.broker.close()
    h = Harness(tmp_path / "d")
    h.broker.tick(h.now)
    assert not stale.exists()
    h.broker.close()


def test_a_topic_can_be_created_again_after_its_last_partition_is_deleted(tmp_path):
    h = Harness(tmp_path / "d")  # no other topic: the broker holds no partition after the delete
    for _ in range(3):
        assert h.call("create_topic", topic="again", partitions=1)[0]["error"] == 0
        assert h.call("describe_topic", topic="again")[0]["error"] == 0
        assert h.call("delete_topic", topic="again")[0]["error"] == 0
        h.broker.tick(h.now)
    h.broker.close()


def test_a_partition_still_opening_does_not_end_a_long_poll(h):
    from zbroker.core.partitions import OPENS_PER_TURN

    h.broker.tick(h.now)  # a new turn
    assert h.call("create_topic", topic="big", partitions=OPENS_PER_TURN + 2)[0]["error"] == 0
    waiting = next(i for i in range(OPENS_PER_TURN + 2) if ("big", i) not in h.broker.app.partitions.online)
    h.send("fetch", 9, max_wait_ms=1000, partitions=[{"topic": "t", "partition": 0, "offset": 0},
                                                     {"topic": "big", "partition": waiting, "offset": 0}])
    assert h.replies() == []  # parked, not answered at once with an error
    h.send("produce", 10, batch(), batches=[{"topic": "t", "partition": 0}])
    fetch = next(r for r in h.replies() if r[0]["cid"] == 9)[0]
    assert [p["error"] for p in fetch["partitions"]] == [0, 5]


def test_a_topic_with_a_249_character_name_is_deleted(h):
    name = "x" * 249
    assert h.call("create_topic", topic=name, partitions=1)[0]["error"] == 0
    assert h.call("delete_topic", topic=name)[0]["error"] == 0
    data_dir = h.broker.app.logs.data_dir
    assert not (data_dir / f"{name}-0").exists()
    while h.broker.app.logs.trash:
        h.broker.tick(h.now)
    assert not [p for p in data_dir.iterdir() if p.name.startswith("xxx")]


def test_a_partition_that_cannot_be_opened_says_so_and_is_tried_again(h, monkeypatch):
    from zbroker.core.partitions import OPEN_RETRY_MS

    real_open = h.broker.app.logs.open
    broken = {("bad", 0)}

    def flaky_open(tp, *args, **kwargs):
        if tp in broken:
            raise OSError("disk says no")
        return real_open(tp, *args, **kwargs)

    monkeypatch.setattr(h.broker.app.logs, "open", flaky_open)
    h.broker.tick(h.now)
    assert h.call("create_topic", topic="bad", partitions=1)[0]["error"] == 0
    h.send("fetch", 5, max_wait_ms=60_000, partitions=[{"topic": "bad", "partition": 0, "offset": 0}])
    (reply,) = h.replies()  # answered at once: a storage error, not a long wait
    assert reply[0]["partitions"][0]["error"] == 56
    assert h.broker.next_timer_ms(h.now) <= OPEN_RETRY_MS
    broken.clear()
    h.now += OPEN_RETRY_MS
    h.broker.tick(h.now)
    assert ("bad", 0) in h.broker.app.partitions.online
    assert h.call("produce", batch(), acks=1, batches=[{"topic": "bad", "partition": 0}])[0]["results"][0]["error"] == 0


def test_a_fetch_parked_on_an_opening_partition_is_answered_when_its_topic_goes(h):
    from zbroker.core.partitions import OPENS_PER_TURN

    h.broker.tick(h.now)
    assert h.call("create_topic", topic="big", partitions=OPENS_PER_TURN + 2)[0]["error"] == 0
    waiting = next(i for i in range(OPENS_PER_TURN + 2) if ("big", i) not in h.broker.app.partitions.online)
    h.send("fetch", 6, max_wait_ms=60_000, partitions=[{"topic": "big", "partition": waiting, "offset": 0}])
    assert h.replies() == []
    h.send("delete_topic", 7, topic="big")
    fetch = next(r for r in h.replies() if r[0]["cid"] == 6)[0]
    assert fetch["partitions"][0]["error"] == 3  # UNKNOWN_TOPIC_OR_PARTITION, at once
