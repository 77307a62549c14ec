"""The ingest bridge's logic without sockets: messages -> records, partitions, idempotent batches,
retries, back-pressure and its counters; time is passed in."""

from __future__ import annotations

import pytest

from storage import decode_batches, decode_native_records, parse_header
from tests.unit.bridgefakes import ScriptedGateway, ingest_config
from tests.unit.servicefakes import START_MS
from zbroker.config import single_node_config
from zbroker.context import Completion
from zbroker.control.topicadmin import ProducerId
from zbroker.errors import ErrorCode
from zbroker.frontends.bridge.gateway import Gateway
from zbroker.frontends.bridge.ingest import CREATE_POLL_MS, LINGER_MS, MAX_CREATING, PRODUCER_ID_RETRY_MS, IngestBridge
from zbroker.frontends.bridge.ingest_batches import RETRY_MIN_MS
from zbroker.hashing import positive_hash_mod
from zbroker.node import BrokerNode

pytestmark = pytest.mark.timeout(30)
NOW = START_MS


def bridge(gateway=None, now=NOW, **config) -> IngestBridge:
    options = {k: config.pop(k) for k in list(config) if k in ("auto_create", "max_in_flight_records",
                                                                "max_in_flight_bytes", "max_batch_bytes", "on_room")}
    b = IngestBridge(ingest_config(**config), gateway if gateway is not None else ScriptedGateway(), now, **options)
    assert b.status(now)["state"] == "starting" and b.next_deadline(now) == now  # asks for a producer id at its first tick
    b.tick(now)
    return b


def records(produced) -> list[tuple[bytes | None, bytes]]:
    return [(key, value) for _o, _ts, key, value, _h in decode_native_records(produced.batch)]


def header(produced):
    return parse_header(produced.batch)


# -- messages -> records ---------------------------------------------------------------


def test_a_message_becomes_a_record_whose_value_is_the_last_frame_after_linger():
    gw = ScriptedGateway()
    b = bridge(gw)
    b.offer([b"ignored", b"v1"], NOW)
    b.offer([b"v2"], NOW + 1)
    assert gw.produced == [] and b.next_deadline(NOW + 1) == NOW + LINGER_MS
    b.tick(NOW + LINGER_MS)
    [p] = gw.produced
    assert (p.topic, p.acks) == ("t", -1) and records(p) == [(None, b"v1"), (None, b"v2")]
    assert b.status(NOW)["in_flight"] == 2
    p.ok()
    s = b.status(NOW + LINGER_MS)
    assert (s["received"], s["stored"], s["in_flight"], s["dropped"], s["failed"]) == (2, 2, 0, 0, 0)
    assert s["name"] == "sensors" and s["kind"] == "ingest" and s["state"] == "running"


def test_topic_from_frame0_and_key_from_a_frame_place_the_record_by_murmur2_of_the_key():
    gw = ScriptedGateway({"a": 5, "b": 7}, auto_ok=True)
    b = bridge(gw, topic=None, topic_from="frame0", key_from="frame1")
    for i in range(20):
        b.offer([b"a" if i % 2 else b"b", b"k%d" % i, b"middle", b"v%d" % i], NOW)
    b.tick(NOW + LINGER_MS)
    placed = {(p.topic, p.partition, k, v) for p in gw.produced for k, v in records(p)}
    assert len(placed) == 20
    for topic, partition, key, value in placed:
        assert partition == positive_hash_mod(key, 5 if topic == "a" else 7) and value.startswith(b"v")
        assert int(key[1:]) % 2 == (topic == "a")
    assert b.status(NOW)["stored"] == 20


@pytest.mark.parametrize("config, frames", [
    ({}, []),
    ({"topic": None, "topic_from": "frame0"}, [b"t"]),
    ({"topic": None, "topic_from": "frame0", "key_from": "frame1"}, [b"t", b"k"]),
    ({"key_from": "frame2"}, [b"a", b"b", b"v"]),
])
def test_a_message_with_too_few_frames_is_dropped_counted_and_logged(config, frames, caplog):
    gw = ScriptedGateway(auto_ok=True)
    b = bridge(gw, **config)
    b.offer(frames, NOW)
    b.tick(NOW + LINGER_MS)
    s = b.status(NOW)
    assert gw.produced == [] and s["dropped_by_reason"] == {"too_few_frames": 1} and s["received"] == 1
    assert "dropped a message of %d frame(s)" % len(frames) in caplog.text


@pytest.mark.parametrize("topic_frame, why", [(b"\xff\xfe", "not UTF-8"), (b"no spaces", "must be 1-249 characters"),
                                              (b"__consumer_offsets", "reserved"), (b"", "must be 1-249")])
def test_a_topic_frame_that_is_no_topic_name_is_dropped_naming_why(topic_frame, why, caplog):
    gw = ScriptedGateway(auto_ok=True)
    b = bridge(gw, topic=None, topic_from="frame0")
    b.offer([topic_frame, b"v"], NOW)
    assert b.status(NOW)["dropped_by_reason"] == {"bad_topic": 1} and why in caplog.text


def test_drop_logs_are_rate_limited_and_the_counter_counts_every_one(caplog):
    b = bridge(ScriptedGateway(), key_from="frame1")
    for i in range(1000):
        b.offer([b"one"], NOW + i)
    assert b.status(NOW)["dropped"] == 1000
    assert caplog.text.count("dropped a message") <= 10


def test_keyless_records_stick_to_a_partition_until_its_batch_leaves_then_move_on():
    gw = ScriptedGateway({"t": 3}, auto_ok=True)
    b = bridge(gw)
    now = NOW
    for round_ in range(6):
        for _ in range(4):
            b.offer([b"v"], now)
        now += LINGER_MS
        b.tick(now)
    assert [p.partition for p in gw.produced] == [0, 1, 2, 0, 1, 2]
    assert all(len(records(p)) == 4 for p in gw.produced)


def test_keyless_records_move_on_from_a_partition_whose_batch_is_still_in_flight():
    gw = ScriptedGateway({"t": 2})
    b = bridge(gw)
    b.offer([b"a"], NOW)
    b.tick(NOW + LINGER_MS)
    assert [p.partition for p in gw.produced] == [0]  # in flight, unanswered (a slow leader)
    b.offer([b"b"], NOW + LINGER_MS)  # partition 1: partition 0's open list had left
    b.offer([b"c"], NOW + LINGER_MS)
    b.tick(NOW + 2 * LINGER_MS)
    assert [p.partition for p in gw.produced] == [0, 1]
    gw.produced[1].ok()
    b.offer([b"d"], NOW + 2 * LINGER_MS)  # partition 0 (round robin), where it waits behind the batch in flight
    b.offer([b"e"], NOW + 3 * LINGER_MS)  # due there and blocked: move on
    b.tick(NOW + 4 * LINGER_MS)
    assert [(p.partition, records(p)) for p in gw.produced[2:]] == [(1, [(None, b"e")])]


# -- unknown topics ---------------------------------------------------------------------


def test_an_unknown_topic_without_auto_create_is_dropped_as_unknown_topic(caplog):
    gw = ScriptedGateway({}, auto_ok=True)
    b = bridge(gw, topic="nope")
    b.offer([b"v"], NOW)
    assert b.status(NOW)["dropped_by_reason"] == {"unknown_topic": 1} and gw.created == []
    assert "'nope', which does not exist (auto_create_topics is off)" in caplog.text


def test_an_unknown_topic_is_auto_created_and_its_messages_wait_for_it():
    gw = ScriptedGateway({}, auto_ok=True)
    b = bridge(gw, topic=None, topic_from="frame0", auto_create=True)
    b.offer([b"new", b"v1"], NOW)
    b.offer([b"new", b"v2"], NOW)
    assert [(n, p) for n, p, _ in gw.created] == [("new", None)]  # asked once, for the default partitions
    assert b.next_deadline(NOW) == NOW + CREATE_POLL_MS and b.status(NOW)["in_flight"] == 2
    b.tick(NOW + CREATE_POLL_MS)
    assert gw.produced == []  # not in the image yet
    gw.created[0][2].complete(None)
    gw.topic_counts["new"] = 2
    b.tick(NOW + 2 * CREATE_POLL_MS)
    b.tick(NOW + 2 * CREATE_POLL_MS + LINGER_MS)
    assert [v for p in gw.produced for _, v in records(p)] == [b"v1", b"v2"]
    assert b.status(NOW)["stored"] == 2


def test_a_topic_that_cannot_be_created_fails_its_waiting_messages_with_the_reason(caplog):
    gw = ScriptedGateway({})
    b = bridge(gw, topic="denied", auto_create=True)
    b.offer([b"v"], NOW)
    gw.created[0][2].fail_with(ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Bridge:sensors may not create denied")
    b.tick(NOW + CREATE_POLL_MS)
    s = b.status(NOW)
    assert s["failed_by_reason"] == {"TOPIC_AUTHORIZATION_FAILED": 1} and s["in_flight"] == 0
    assert "may not create denied" in caplog.text


def test_at_most_max_creating_topics_are_created_at_once_a_pull_bridge_waits_for_a_slot():
    gw = ScriptedGateway({})
    rooms = []
    b = bridge(gw, topic=None, topic_from="frame0", auto_create=True, on_room=lambda: rooms.append(1))
    for i in range(MAX_CREATING):
        b.offer([b"topic%d" % i, b"v"], NOW)
    assert b.has_room()
    b.offer([b"topic%d" % MAX_CREATING, b"v"], NOW)  # no slot: parked, and no room (the PULL socket stops being read)
    assert len(gw.created) == MAX_CREATING and not b.has_room() and b.status(NOW)["state"] == "back-pressure"
    gw.created[0][2].complete(None)
    gw.topic_counts["topic0"] = 1
    b.tick(NOW + CREATE_POLL_MS)  # topic0 is there: the waiting topic's creation starts, room is back
    assert [n for n, _, _ in gw.created][-1] == "topic%d" % MAX_CREATING and b.has_room() and rooms == [1]
    s = b.status(NOW)
    assert (s["dropped"], s["failed"], s["in_flight"]) == (0, 0, MAX_CREATING + 1)


def test_a_sub_bridge_drops_a_topic_past_max_creating_counted_as_creating_full():
    gw = ScriptedGateway({})
    b = bridge(gw, socket="sub", topic=None, topic_from="frame0", auto_create=True)
    for i in range(MAX_CREATING + 3):
        b.offer([b"topic%d" % i, b"v"], NOW)
    assert len(gw.created) == MAX_CREATING and b.status(NOW)["dropped_by_reason"] == {"creating_full": 3}


def test_a_retriable_create_error_is_retried_with_back_off_and_the_messages_wait():
    gw = ScriptedGateway({})
    b = bridge(gw, topic="fresh", auto_create=True)
    b.offer([b"v"], NOW)
    gw.created[0][2].fail_with(ErrorCode.NOT_CONTROLLER, "the controller moved")
    b.tick(NOW + RETRY_MIN_MS - 1)
    assert len(gw.created) == 1
    b.tick(NOW + RETRY_MIN_MS)
    assert len(gw.created) == 2
    gw.created[1][2].fail_with(ErrorCode.REQUEST_TIMED_OUT, "slow")
    b.tick(NOW + RETRY_MIN_MS + 2 * RETRY_MIN_MS - 1)
    assert len(gw.created) == 2  # doubled
    b.tick(NOW + 3 * RETRY_MIN_MS)
    gw.created[2][2].complete(None)
    gw.topic_counts["fresh"] = 1
    b.tick(NOW + 3 * RETRY_MIN_MS + CREATE_POLL_MS)
    b.tick(NOW + 3 * RETRY_MIN_MS + CREATE_POLL_MS + LINGER_MS)
    gw.produced[0].ok()
    s = b.status(NOW)
    assert (s["stored"], s["failed"], s["dropped"], s["in_flight"]) == (1, 0, 0, 0)


# -- idempotent batches, ordering, retries -----------------------------------------------------


def test_batches_carry_the_producer_id_and_consecutive_sequences_one_in_flight_per_partition():
    gw = ScriptedGateway({"t": 1})
    b = bridge(gw)
    for i in range(3):
        b.offer([b"a%d" % i], NOW)
    b.tick(NOW + LINGER_MS)
    for i in range(2):
        b.offer([b"b%d" % i], NOW + LINGER_MS)
    b.tick(NOW + 3 * LINGER_MS)
    assert len(gw.produced) == 1  # the second waits for the first: order on the partition
    gw.produced[0].ok()
    b.tick(NOW + 4 * LINGER_MS)
    first, second = gw.produced
    assert (header(first).producer_id, header(first).base_sequence, header(first).record_count) == (42, 0, 3)
    assert (header(second).producer_id, header(second).base_sequence, header(second).record_count) == (42, 3, 2)


def test_a_retriable_error_resends_the_same_bytes_after_a_back_off():
    gw = ScriptedGateway({"t": 1})
    b = bridge(gw)
    b.offer([b"v"], NOW)
    b.tick(NOW + LINGER_MS)
    gw.produced[0].error(ErrorCode.NOT_ENOUGH_REPLICAS)
    assert b.next_deadline(NOW + LINGER_MS) == NOW + LINGER_MS + RETRY_MIN_MS
    b.tick(NOW + LINGER_MS + RETRY_MIN_MS - 1)
    assert len(gw.produced) == 1
    b.tick(NOW + LINGER_MS + RETRY_MIN_MS)
    assert len(gw.produced) == 2 and gw.produced[1].batch == gw.produced[0].batch
    gw.produced[1].done.fail_with(ErrorCode.REQUEST_TIMED_OUT, "late")  # the gateway's own failure counts the same
    b.tick(NOW + 10_000)
    assert gw.produced[2].batch == gw.produced[0].batch
    gw.produced[2].ok()
    s = b.status(NOW)
    assert (s["stored"], s["failed"], s["in_flight"]) == (1, 0, 0)


def test_a_definitive_error_fails_the_batch_and_the_next_batch_reuses_its_sequence(caplog):
    gw = ScriptedGateway({"t": 1})
    b = bridge(gw)
    b.offer([b"x" * 10], NOW)
    b.tick(NOW + LINGER_MS)
    gw.produced[0].error(ErrorCode.MESSAGE_TOO_LARGE, "batch too big")
    b.offer([b"y"], NOW + LINGER_MS)
    b.tick(NOW + 2 * LINGER_MS)
    assert header(gw.produced[1]).base_sequence == 0
    s = b.status(NOW)
    assert s["failed_by_reason"] == {"MESSAGE_TOO_LARGE": 1} and s["in_flight"] == 1
    assert s["last_error"] == "bridge sensors: 1 record(s) for t-0 were not stored: MESSAGE_TOO_LARGE batch too big"
    assert "were not stored: MESSAGE_TOO_LARGE batch too big" in caplog.text


def test_out_of_order_sequence_takes_a_new_producer_id_and_reseals_from_sequence_0():
    gw = ScriptedGateway({"t": 1})
    b = bridge(gw)
    b.offer([b"a"], NOW)
    b.tick(NOW + LINGER_MS)
    gw.produced[0].ok()
    b.offer([b"b"], NOW + LINGER_MS)
    b.tick(NOW + 2 * LINGER_MS)
    assert header(gw.produced[1]).base_sequence == 1
    gw.produced[1].error(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
    assert len(gw.pid_asks) == 2
    b.tick(NOW + 3 * LINGER_MS)
    again = gw.produced[2]
    assert (header(again).producer_id, header(again).base_sequence) == (43, 0) and records(again) == [(None, b"b")]


def test_nothing_is_sent_until_the_producer_id_comes_and_a_failed_ask_is_retried():
    gw = ScriptedGateway({"t": 1}, pid=None)
    b = bridge(gw)
    b.offer([b"v"], NOW)
    b.tick(NOW + LINGER_MS)
    assert gw.produced == [] and b.status(NOW)["state"] == "starting"
    gw.pid_asks[0].fail_with(ErrorCode.COORDINATOR_NOT_AVAILABLE, "no controller")
    assert b.next_deadline(NOW + LINGER_MS) == NOW + LINGER_MS + PRODUCER_ID_RETRY_MS
    b.tick(NOW + LINGER_MS + PRODUCER_ID_RETRY_MS)
    assert len(gw.pid_asks) == 2
    gw._pid = 9
    gw.pid_asks[1].complete(gw.producer_id(NOW).value)
    b.tick(NOW + 2 * PRODUCER_ID_RETRY_MS)
    assert len(gw.produced) == 1 and b.status(NOW)["state"] == "running"


# -- back-pressure and bounds ----------------------------------------------------------------


def test_has_room_turns_false_at_the_in_flight_bound_sends_everything_and_calls_on_room_when_back():
    gw = ScriptedGateway({"t": 2})
    rooms = []
    b = bridge(gw, max_in_flight_records=10, on_room=lambda: rooms.append(1))
    for i in range(10):
        assert b.has_room()
        b.offer([b"k%d" % i, b"v"], NOW)  # no key: sticky
    assert not b.has_room() and b.status(NOW)["state"] == "back-pressure"
    assert sum(len(records(p)) for p in gw.produced) == 10  # sent at once, not after the linger
    gw.produced[0].ok()
    assert rooms == [1] and b.has_room()


def test_the_byte_bound_counts_too():
    gw = ScriptedGateway({"t": 1})
    b = bridge(gw, max_in_flight_bytes=1000)
    b.offer([b"x" * 600], NOW)
    assert b.has_room()
    b.offer([b"x" * 600], NOW)
    assert not b.has_room()


def test_a_sub_bridge_drops_what_does_not_fit_counted_as_buffer_full(caplog):
    gw = ScriptedGateway({"t": 1})
    b = bridge(gw, socket="sub", max_in_flight_records=5)
    for _ in range(8):
        b.offer([b"v"], NOW)
    s = b.status(NOW)
    assert (s["received"], s["in_flight"], s["dropped_by_reason"], s["state"]) == (8, 5, {"buffer_full": 3}, "dropping")
    assert "its buffer is full" in caplog.text


def test_close_takes_nothing_more_sends_what_is_open_and_waits_for_what_is_in_flight(caplog):
    gw = ScriptedGateway({"t": 1})
    b = bridge(gw)
    b.offer([b"v"], NOW)
    b.close(NOW + 1)
    assert len(gw.produced) == 1 and not b.has_room()  # a PULL socket is no longer read
    b.offer([b"late"], NOW + 2)  # read in the same burst as the stop
    assert b.status(NOW)["dropped_by_reason"] == {"closing": 1}
    assert not b.settled()  # the host keeps the loop running for the answer
    gw.produced[0].ok()
    assert b.settled() and b.status(NOW)["stored"] == 1 and b.status(NOW)["state"] == "closed"
    b.finish(NOW + 3)
    assert "not stored" not in caplog.text


def test_finish_logs_what_was_taken_and_not_stored(caplog):
    gw = ScriptedGateway({"t": 1})
    b = bridge(gw)
    b.offer([b"v"], NOW)
    b.close(NOW + 1)
    b.finish(NOW + 3000)  # the answer never came before the broker stopped
    assert "closed with 1 record(s) taken off its socket and not stored" in caplog.text


# -- over a real sans-IO broker and the real gateway: the produce service's sequence checks ------------


class Broker:
    """A single-node BrokerNode with topic ``t`` of 2 partitions; ``run`` steps bridge and node together."""

    def __init__(self, data_dir) -> None:
        self.now = NOW
        self.node = BrokerNode(single_node_config(str(data_dir)), 1, NOW)
        self.app = self.node.app
        self.gateway = Gateway(self.app, self.node.peers, "Bridge:sensors")
        self.gateway.create_topic("t", 2, {}, NOW)
        self.step()
        assert self.gateway.partition_count("t") == 2

    def step(self, bridge=None) -> None:
        self.now += 1
        self.node.tick(self.now)
        if bridge is not None:
            bridge.tick(self.now)

    def stored(self, topic="t") -> list[tuple[bytes | None, bytes]]:
        out = []
        for index in range(self.gateway.partition_count(topic)):
            log = self.app.partitions.get((topic, index)).log
            out += [(r[4], r[5]) for r in decode_batches(log.read(0, 1 << 24).data, topic, index)]
        return out


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "d")
    yield b
    b.node.close(b.now)


@pytest.mark.parametrize("acks", [0, 1, -1])
def test_over_a_real_broker_every_message_is_stored_once_in_order_per_key(broker, acks):
    b = bridge(broker.gateway, acks=acks, max_in_flight_records=100, key_from="frame0")
    for i in range(1000):
        while not b.has_room():
            broker.step(b)
        b.offer([b"k%d" % (i % 7), b"v%d" % i], broker.now)
    for _ in range(LINGER_MS + 2):
        broker.step(b)
    s = b.status(broker.now)
    assert (s["stored"], s["in_flight"], s["failed"]) == (1000, 0, 0)
    got = broker.stored()
    assert sorted(v for _, v in got) == sorted(b"v%d" % i for i in range(1000))
    for key in {k for k, _ in got}:
        values = [int(v[1:]) for k, v in got if k == key]
        assert values == sorted(values)


def test_over_a_real_broker_a_batch_resent_after_a_lost_answer_is_not_stored_twice(broker):
    real = broker.gateway.produce
    calls = []

    def lose_first_answer(*args):
        done = real(*args)
        calls.append(done.value)
        if len(calls) == 1:  # stored, but the answer never comes back
            done = Completion()
            done.fail_with(ErrorCode.REQUEST_TIMED_OUT, "the answer was lost")
        return done

    broker.gateway.produce = lose_first_answer
    b = bridge(broker.gateway)
    for i in range(5):
        b.offer([b"v%d" % i], broker.now)
    for _ in range(LINGER_MS + RETRY_MIN_MS + 2):
        broker.step(b)
    assert len(calls) == 2 and calls[0].base_offset == calls[1].base_offset  # acknowledged as the duplicate it is
    assert b.status(broker.now)["stored"] == 5 and len(broker.stored()) == 5


def test_over_a_real_broker_an_unknown_topic_is_auto_created_with_the_default_partitions(broker):
    b = bridge(broker.gateway, topic=None, topic_from="frame0", auto_create=True)
    b.offer([b"fresh", b"v"], broker.now)
    for _ in range(3 * CREATE_POLL_MS):
        broker.step(b)
    assert b.status(broker.now)["stored"] == 1 and broker.stored("fresh") == [(None, b"v")]
    assert broker.gateway.partition_count("fresh") == broker.app.config.default_partitions()


def test_messages_after_the_topic_appears_wait_behind_those_parked_for_its_creation():
    """Once an auto-created topic is in the image, a new message must not overtake the ones that
    waited for the creation (one key, one partition: stored in the order received)."""
    gw = ScriptedGateway({}, auto_ok=True)
    b = bridge(gw, topic=None, topic_from="frame0", key_from="frame1", auto_create=True)
    b.offer([b"new", b"k", b"v1"], NOW)
    gw.created[0][2].complete(None)
    gw.topic_counts["new"] = 1  # in the image before the bridge's next creation poll
    b.offer([b"new", b"k", b"v2"], NOW + 1)
    b.tick(NOW + CREATE_POLL_MS)
    b.tick(NOW + CREATE_POLL_MS + LINGER_MS)
    assert [v for p in gw.produced for _, v in records(p)] == [b"v1", b"v2"]
    assert b.status(NOW)["stored"] == 2


def test_a_callback_that_raises_never_raises_into_what_settled_the_completion(caplog):
    """The produce answer runs the bridge's code (here on_room, which raises) inside whatever
    settled the Completion: the failure is counted and logged (rate-limited), never raised there."""
    gw = ScriptedGateway({"t": 1}, pid=None)

    def broken_room() -> None:
        raise RuntimeError("socket gone")

    b = bridge(gw, max_in_flight_records=2, on_room=broken_room)
    gw.pid_asks[0].complete(None)  # an answer without a producer id: the callback raises
    b._pid_wanted_at = NOW  # asked again at once
    b.tick(NOW)
    gw.pid_asks[1].complete(ProducerId(42, 0))
    for i in range(2):
        b.offer([b"v%d" % i], NOW)
    assert not b.has_room() and len(gw.produced) == 1
    gw.produced[0].ok()  # stored; on_room raises inside this call, which returns
    s = b.status(NOW)
    assert (s["callback_errors"], s["stored"], s["in_flight"]) == (2, 2, 0)
    assert "error handling a produce answer" in caplog.text and "RuntimeError: socket gone" in caplog.text
    assert "error handling a producer id's answer" in caplog.text


def test_idle_partition_queues_are_dropped_and_their_sequence_is_kept():
    """Timers scan only partitions with records open or in flight; a partition written again
    continues its sequence (no OUT_OF_ORDER_SEQUENCE_NUMBER, no new producer id)."""
    gw = ScriptedGateway({"t": 50}, auto_ok=True)
    b = bridge(gw, key_from="frame0")
    keys = [b"k%d" % i for i in range(400)]
    for key in keys:
        b.offer([key, b"v"], NOW)
    b.tick(NOW + LINGER_MS)
    assert b.status(NOW)["stored"] == 400 and len(b.sender.sequences) > 40  # stored at once (auto_ok), then dropped
    assert b.sender.queues == {} and b.next_deadline(NOW + LINGER_MS + 1) is None
    before = {p.partition: header(p).record_count for p in gw.produced}
    b.offer([keys[0], b"again"], NOW + 10)
    b.tick(NOW + 10 + LINGER_MS)
    last = gw.produced[-1]
    assert header(last).base_sequence == before[last.partition] and header(last).producer_id == 42
