"""The mirror's logic (frontends/bridge/mirror.py) with a fake gateway and a fake source:
time passed in, completions settled by hand."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from storage.batch import MAGIC_KAFKA, parse_header
from storage.decode import decode_batches
from zbroker.bridge_config import MirrorConfig
from zbroker.context import Completion
from zbroker.core.produce import ProduceResult
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.bridge import mirror as M
from zbroker.frontends.bridge import mirror_partition as MP
from zbroker.frontends.bridge.mirror_commit import COMMIT_INTERVAL_MS
from zbroker.frontends.bridge.mirror_configs import target_configs

T0 = 1_000_000


def Config(scheme="zbroker", prefix="a.", topics=r"plant\..*"):
    return MirrorConfig("m1", f"{scheme}://127.0.0.1:1", scheme, "127.0.0.1:1", topics, prefix)


def done(value=None) -> Completion:
    c = Completion()
    c.complete(value)
    return c


@dataclass
class FakeGateway:
    topics: dict = field(default_factory=dict)
    committed_offsets: dict = field(default_factory=dict)
    created: list = field(default_factory=list)
    grown: list = field(default_factory=list)
    produced: list = field(default_factory=list)  # (topic, partition, batch, acks, completion)
    commits: list = field(default_factory=list)  # (group, offsets, completion)
    auto_ack: bool = True
    fail_committed: bool = False
    leaders: dict = field(default_factory=dict)

    def leader_of(self, topic, partition):
        return self.leaders.get((topic, partition), 1)

    def partition_count(self, topic):
        return self.topics.get(topic)

    def create_topic(self, name, partitions, configs, now_ms):
        self.created.append((name, partitions, dict(configs)))
        self.topics[name] = partitions
        return done()

    def create_partitions(self, name, total, now_ms):
        self.grown.append((name, total))
        self.topics[name] = total
        return done()

    def committed(self, group, tps, now_ms):
        if self.fail_committed:
            c = Completion()
            c.fail(RequestError(ErrorCode.COORDINATOR_NOT_AVAILABLE, "no coordinator yet"))
            return c
        return done({tp: self.committed_offsets.get((group, tp), -1) for tp in tps})

    def produce(self, topic, partition, batch, acks, timeout_ms, now_ms):
        c = Completion()
        self.produced.append((topic, partition, batch, acks, c))
        if self.auto_ack:
            c.complete(ProduceResult(topic, partition, base_offset=0))
        return c

    def commit(self, group, offsets, now_ms):
        c = Completion()
        self.commits.append((group, dict(offsets), c))
        for tp, offset in offsets.items():
            self.committed_offsets[(group, tp)] = offset
        c.complete(None)
        return c

    def records(self, topic, partition):
        out = []
        for t, p, batch, _, c in self.produced:
            if (t, p) == (topic, partition) and c.done and c.error is None and c.value.error == 0:
                out += [r[2:] for r in decode_batches(batch, t, p)]
        return out


@dataclass
class FakeSource:
    events: list = field(default_factory=list)
    added: list = field(default_factory=list)
    refreshes: int = 0
    closed: bool = False
    paused: set = field(default_factory=set)
    resumed: list = field(default_factory=list)
    removed: list = field(default_factory=list)

    def add(self, positions):
        self.added.append(dict(positions))

    def pause(self, tps):
        self.paused |= set(tps)

    def resume(self, tps):
        self.paused -= set(tps)
        self.resumed += tps

    def remove(self, tps):
        self.paused -= set(tps)
        self.removed += tps

    def refresh(self):
        self.refreshes += 1

    def take(self, limit):
        out, self.events = self.events[:limit], self.events[limit:]
        return out

    def close(self):
        self.closed = True


def recs(first, n, ts=T0):
    return [(o, ts + o, b"k%d" % o, b"v%d" % o, {"h": b"%d" % o}) for o in range(first, first + n)]


def run_as_host(mirror, start, end, step=50):
    """Time passing as the bridge host drives a mirror: it is ticked only once its own
    next_deadline() has come (``now`` in steps of ``step`` ms)."""
    for now in range(start, end + 1, step):
        due = mirror.next_deadline(now)
        if due is not None and due <= now:
            mirror.tick(now)


def make(config=None, gateway=None, source=None):
    config = config or Config()
    gateway = gateway or FakeGateway()
    source = source or FakeSource()
    return M.Mirror(config, gateway, source, T0), gateway, source


def listing(**topics):
    """("topics", ...) with each topic's partitions (no configs, offsets unknown)."""
    return ("topics", {name.replace("_", "."): (n, {}, {}) for name, n in topics.items()})


def test_a_matching_topic_is_created_with_its_partitions_and_configs_and_read_from_the_start():
    mirror, gw, src = make()
    assert src.refreshes == 1
    src.events.append(("topics", {"plant.x": (3, {"retention_ms": 1000, "no_such": 1}, {}), "other": (1, {}, {}),
                                  "plant": (1, {}, {})}))
    mirror.pump(T0)
    assert gw.created == [("a.plant.x", 3, {"retention_ms": 1000})]
    assert src.added == [{("plant.x", p): MP.EARLIEST for p in range(3)}]
    assert mirror.status(T0)["state"] == "running"


def test_positions_are_restored_from_the_group_on_the_target_topic():
    gw = FakeGateway(topics={"a.plant.x": 2})
    gw.committed_offsets[("mirror.m1", ("a.plant.x", 0))] = 17
    mirror, gw, src = make(gateway=gw)
    src.events.append(listing(plant_x=2))
    mirror.pump(T0)
    assert gw.created == []
    assert src.added == [{("plant.x", 0): 17, ("plant.x", 1): MP.EARLIEST}]
    status = mirror.status(T0)
    assert [(p["partition"], p["position"], p["committed"]) for p in status["partitions"]] == [(0, 17, 17), (1, -1, -1)]


def test_no_position_no_reading_while_the_group_cannot_be_asked():
    gw = FakeGateway(fail_committed=True)
    mirror, gw, src = make(gateway=gw)
    src.events.append(listing(plant_x=1))
    mirror.pump(T0)
    status = mirror.status(T0)
    assert src.added == [] and status["state"] == "waiting" and status["errors"] == 0  # a passing state, not an error
    assert "no coordinator yet" in status["failing"]["topics"]
    gw.fail_committed = False
    mirror.tick(T0 + M.SETUP_RETRY_MS)
    assert src.added == [{("plant.x", 0): MP.EARLIEST}]
    assert mirror.status(T0)["state"] == "running"


def test_records_keep_key_value_headers_timestamps_with_acks_all_and_the_commit_follows_the_ack():
    mirror, gw, src = make()
    src.events += [listing(plant_x=1), ("records", "plant.x", 0, recs(0, 3), 10)]
    mirror.pump(T0)
    assert gw.records("a.plant.x", 0) == [(i, T0 + o, b"k%d" % o, b"v%d" % o, {"h": b"%d" % o})
                                          for i, o in enumerate(range(3))]
    assert {acks for *_, acks, _ in gw.produced} == {-1}
    assert gw.commits == []  # not before the interval
    mirror.tick(T0 + COMMIT_INTERVAL_MS)
    assert gw.commits[0][:2] == ("mirror.m1", {("a.plant.x", 0): 3})
    part = mirror.status(T0)["partitions"][0]
    assert (part["position"], part["committed"], part["source_end"], part["lag"]) == (3, 3, 10, 7)
    assert mirror.status(T0)["mirrored"] == 3


def test_nothing_is_committed_before_the_target_acknowledged_and_a_failed_append_is_retried_in_order():
    gw = FakeGateway(auto_ack=False)
    mirror, gw, src = make(gateway=gw)
    src.events += [listing(plant_x=1), ("records", "plant.x", 0, recs(0, 2), -1), ("records", "plant.x", 0, recs(2, 2), -1)]
    mirror.pump(T0)
    assert len(gw.produced) == 1  # one append in flight per partition
    mirror.tick(T0 + COMMIT_INTERVAL_MS)
    assert gw.commits == []
    gw.produced[0][4].complete(ProduceResult("a.plant.x", 0, error=int(ErrorCode.TOPIC_AUTHORIZATION_FAILED),
                                             error_message="Bridge:m1 may not write"))
    status = mirror.status(T0)
    assert status["errors"] == 1 and status["state"] == "error" and "TOPIC_AUTHORIZATION_FAILED" in status["last_error"]
    assert len(gw.produced) == 1  # waits for the retry pause
    mirror.tick(T0 + COMMIT_INTERVAL_MS + MP.RETRY_MIN_MS)
    assert len(gw.produced) == 2  # the failed records first, with those read since
    gw.produced[1][4].complete(ProduceResult("a.plant.x", 0))
    assert [r[3] for r in gw.records("a.plant.x", 0)] == [b"v0", b"v1", b"v2", b"v3"]
    mirror.tick(T0 + 10 * COMMIT_INTERVAL_MS)
    assert gw.commits[-1][1] == {("a.plant.x", 0): 4}
    assert mirror.status(T0)["state"] == "running"


def test_a_request_error_from_the_gateway_is_retried_too():
    gw = FakeGateway(auto_ack=False)
    mirror, gw, src = make(gateway=gw)
    src.events += [listing(plant_x=1), ("records", "plant.x", 0, recs(0, 1), -1)]
    mirror.pump(T0)
    gw.produced[0][4].fail(RequestError(ErrorCode.NOT_ENOUGH_REPLICAS, "isr too small"))
    status = mirror.status(T0)
    assert status["state"] == "waiting" and status["errors"] == 0 and "isr too small" in status["failing"]["append a.plant.x-0"]
    mirror.tick(T0 + MP.RETRY_MIN_MS)
    gw.produced[1][4].complete(ProduceResult("a.plant.x", 0))
    assert [r[3] for r in gw.records("a.plant.x", 0)] == [b"v0"]


def test_records_the_source_repeats_are_not_appended_twice():
    mirror, gw, src = make()
    src.events += [listing(plant_x=1), ("records", "plant.x", 0, recs(0, 3), -1), ("records", "plant.x", 0, recs(1, 4), -1)]
    mirror.pump(T0)
    assert [r[3] for r in gw.records("a.plant.x", 0)] == [b"v%d" % i for i in range(5)]


def test_a_topic_created_later_and_a_topic_that_grew_are_picked_up_at_the_next_listing():
    mirror, gw, src = make()
    src.events.append(listing(plant_x=1))
    mirror.pump(T0)
    mirror.tick(T0 + 1000)
    assert src.refreshes == 1
    mirror.tick(T0 + 5000)
    assert src.refreshes == 2
    src.events.append(listing(plant_x=3, plant_y=1))
    mirror.pump(T0 + 5000)
    assert gw.grown == [("a.plant.x", 3)]
    assert ("a.plant.y", 1, {}) in gw.created
    assert {("plant.x", 1): MP.EARLIEST, ("plant.x", 2): MP.EARLIEST} in src.added
    assert {("plant.y", 0): MP.EARLIEST} in src.added
    assert len(mirror.status(T0)["partitions"]) == 4


def test_the_source_is_read_only_while_few_records_wait(monkeypatch):
    monkeypatch.setattr(MP, "PARTITION_MAX_RECORDS", 10**9)  # the mirror's bound, not a partition's
    gw = FakeGateway(auto_ack=False)
    mirror, gw, src = make(gateway=gw)
    src.events.append(listing(plant_x=1))
    src.events += [("records", "plant.x", 0, recs(i * 1000, 1000), -1) for i in range(M.MAX_PENDING_RECORDS // 1000 + 5)]
    mirror.pump(T0)
    assert len(src.events) == 5  # taken up to the bound, then the source waits
    gw.produced[0][4].complete(ProduceResult("a.plant.x", 0))  # room again: more is taken
    assert len(src.events) == 4


def test_the_source_is_read_only_while_few_bytes_wait(monkeypatch):
    monkeypatch.setattr(MP, "PARTITION_MAX_BYTES", 10**12)
    gw = FakeGateway(auto_ack=False)
    mirror, gw, src = make(gateway=gw)
    big = 1 << 20
    src.events.append(listing(plant_x=1))
    src.events += [("records", "plant.x", 0, [(i, T0, None, b"x" * big, None)], -1) for i in range(M.MAX_PENDING_BYTES // big + 5)]
    mirror.pump(T0)
    assert 5 <= len(src.events) <= 6 and mirror.status(T0)["pending"] < 100  # the bytes bound, far below the records bound
    assert mirror.status(T0)["pending_bytes"] >= M.MAX_PENDING_BYTES


def test_lag_and_source_errors_show_in_status():
    mirror, gw, src = make()
    assert mirror.status(T0)["state"] == "starting"
    src.events += [("error", "cannot reach 127.0.0.1:1"), ("topics", {"plant.x": (1, {}, {0: (5, 50)})})]
    mirror.pump(T0)
    status = mirror.status(T0)
    assert status["errors"] == 1 and status["last_error"] == "cannot reach 127.0.0.1:1"
    # the listing came after the error: the source answers again
    assert status["state"] == "running"
    mirror.pump(T0)
    src.events.append(("topics", {"plant.x": (1, {}, {0: (5, 50)})}))
    mirror.pump(T0)
    part = mirror.status(T0)["partitions"][0]
    assert (part["position"], part["source_end"], part["lag"]) == (5, 50, 45)
    assert mirror.status(T0)["kind"] == "mirror" and mirror.status(T0)["lag"] == 45


def test_close_commits_what_was_acknowledged_and_stops_the_source():
    mirror, gw, src = make()
    src.events += [listing(plant_x=1), ("records", "plant.x", 0, recs(0, 2), -1)]
    mirror.pump(T0)
    mirror.close(T0 + 1)
    assert gw.commits[-1][1] == {("a.plant.x", 0): 2} and src.closed
    assert mirror.status(T0)["state"] == "stopped" and mirror.next_deadline(T0) is None


def test_a_create_refused_for_its_configs_is_made_without_them():
    class Refusing(FakeGateway):
        def create_topic(self, name, partitions, configs, now_ms):
            if configs:
                c = Completion()
                c.fail(RequestError(ErrorCode.INVALID_CONFIG, "min_insync_replicas above the replication factor"))
                return c
            return super().create_topic(name, partitions, configs, now_ms)

    mirror, gw, src = make(gateway=Refusing())
    src.events.append(("topics", {"plant.x": (1, {"min_insync_replicas": 2}, {})}))
    mirror.pump(T0)
    mirror.tick(T0 + M.SETUP_RETRY_MS)
    assert gw.created == [("a.plant.x", 1, {})]


def test_kafka_source_configs_and_headers():
    assert target_configs("kafka", {"retention.ms": "1000", "cleanup.policy": "compact, delete", "flush.ms": str(2**63 - 1),
                                    "unclean.leader.election.enable": "true", "compression.type": "lz4",
                                    "segment.bytes": "12"}) == (
        {"retention_ms": 1000, "cleanup_policy": "compact,delete", "flush_ms": 0, "unclean_leader_election": True},
        ["compression.type", "segment.bytes"])
    mirror, gw, src = make(config=Config(scheme="kafka", prefix=""))
    src.events += [listing(plant_x=1), ("records", "plant.x", 0, [(0, T0, None, b"v", [("h", b"1"), ("h", None)])], -1)]
    mirror.pump(T0)
    batch = gw.produced[0][2]
    assert parse_header(batch).magic == MAGIC_KAFKA and gw.produced[0][0] == "plant.x"


@pytest.mark.parametrize("name", ["m1", "from-plant"])
def test_group_name(name):
    assert M.group_name(name) == f"mirror.{name}"


def test_appends_that_settle_at_once_do_not_recurse_through_the_queue():
    import traceback

    depths = []

    class Deep(FakeGateway):
        def produce(self, *args):
            depths.append(len(traceback.extract_stack()))
            return super().produce(*args)

    mirror, gw, src = make(gateway=Deep())
    src.events.append(listing(plant_x=2))
    src.events += [("records", "plant.x", i % 2, recs(i // 2, 1), -1) for i in range(400)]
    mirror.pump(T0)
    assert len(depths) == 400 and max(depths) - min(depths) < 20


def test_an_append_waiting_for_a_leader_that_moved_is_sent_again_to_the_new_one():
    gw = FakeGateway(auto_ack=False)
    mirror, gw, src = make(gateway=gw)
    src.events += [listing(plant_x=1), ("records", "plant.x", 0, recs(0, 2), -1)]
    mirror.pump(T0)
    assert len(gw.produced) == 1 and mirror.next_deadline(T0) == T0 + MP.LEADER_CHECK_MS
    mirror.tick(T0 + MP.LEADER_CHECK_MS)
    assert len(gw.produced) == 1  # same leader: it waits
    gw.leaders[("a.plant.x", 0)] = 2  # the old leader died; its answer would come with the timeout
    mirror.tick(T0 + 2 * MP.LEADER_CHECK_MS)
    assert len(gw.produced) == 2 and gw.produced[1][2] == gw.produced[0][2]
    gw.produced[0][4].fail(RequestError(ErrorCode.REQUEST_TIMED_OUT, "late"))  # abandoned: no effect
    assert mirror.status(T0)["errors"] == 0
    gw.produced[1][4].complete(ProduceResult("a.plant.x", 0))
    assert mirror.status(T0)["partitions"][0]["position"] == 2


def test_records_that_cannot_be_encoded_wait_with_an_error_and_are_not_skipped():
    mirror, gw, src = make()
    bad = (0, T0, b"k", {b"a set"}, None)  # no codec takes it
    src.events += [listing(plant_x=1), ("records", "plant.x", 0, [bad], -1), ("records", "plant.x", 0, recs(1, 1), -1)]
    mirror.pump(T0)
    status = mirror.status(T0)
    assert gw.produced == [] and status["state"] == "error" and status["partitions"][0]["position"] == 0  # still waits at the first
    assert "append to a.plant.x-0" in status["last_error"]


def test_one_partition_that_fails_keeps_the_state_in_error_while_others_append():
    gw = FakeGateway(auto_ack=False)
    mirror, gw, src = make(gateway=gw)
    src.events += [listing(plant_x=2), ("records", "plant.x", 0, recs(0, 1), -1), ("records", "plant.x", 1, recs(0, 1), -1)]
    mirror.pump(T0)
    gw.produced[0][4].complete(ProduceResult("a.plant.x", 0, error=int(ErrorCode.MESSAGE_TOO_LARGE)))
    gw.produced[1][4].complete(ProduceResult("a.plant.x", 1))
    status = mirror.status(T0)
    assert status["state"] == "error" and list(status["failing"]) == ["append a.plant.x-0"]
    assert [(p["position"], p["lag"]) for p in status["partitions"]] == [(0, 1), (1, 0)]


def test_more_records_than_the_bound_all_pass_when_appends_settle_at_once():
    mirror, gw, src = make()
    n = M.MAX_PENDING_RECORDS * 3
    src.events.append(listing(plant_x=1))
    src.events += [("records", "plant.x", 0, recs(i, 1000), -1) for i in range(0, n, 1000)]
    mirror.pump(T0)
    assert src.events == [] and mirror.status(T0)["mirrored"] == n and mirror._pending == 0


def test_driven_as_the_host_drives_it_set_up_retries_and_leader_checks_happen_on_their_own():
    gw = FakeGateway(fail_committed=True, auto_ack=False)
    mirror, gw, src = make(gateway=gw)  # refresh_ms 5000: the refresh must not be what drives them
    src.events.append(listing(plant_x=1))
    mirror.pump(T0)
    gw.fail_committed = False
    run_as_host(mirror, T0, T0 + 1000)
    assert src.added == [{("plant.x", 0): MP.EARLIEST}]
    src.events.append(("records", "plant.x", 0, recs(0, 1), -1))
    mirror.pump(T0 + 1000)
    gw.leaders[("a.plant.x", 0)] = 2
    run_as_host(mirror, T0 + 1000, T0 + 2000)
    assert len(gw.produced) == 2  # sent again to the new leader well before the next refresh


def test_a_partition_the_target_refuses_is_paused_alone_and_read_again_once_drained(monkeypatch):
    monkeypatch.setattr(MP, "PARTITION_MAX_RECORDS", 100)
    gw = FakeGateway(auto_ack=False)
    mirror, gw, src = make(gateway=gw)
    src.events += [listing(plant_x=2)] + [("records", "plant.x", 0, recs(i, 10), -1) for i in range(0, 120, 10)]
    mirror.pump(T0)
    assert src.paused == {("plant.x", 0)}  # its backlog is full: the source stops reading it
    stuck = gw.produced[0]
    stuck[4].complete(ProduceResult("a.plant.x", 0, error=int(ErrorCode.MESSAGE_TOO_LARGE)))
    # the other partition keeps flowing: taken, appended, acknowledged, committed
    for first in range(0, 300, 50):
        src.events.append(("records", "plant.x", 1, recs(first, 50), -1))
        mirror.pump(T0 + 1)
        gw.produced[-1][4].complete(ProduceResult("a.plant.x", 1))
    assert src.events == [] and [r[3] for r in gw.records("a.plant.x", 1)] == [b"v%d" % i for i in range(300)]
    status = mirror.status(T0)
    assert status["paused"] == 1 and [p["partition"] for p in status["partitions"] if p["paused"]] == [0]
    # the target takes partition 0's records again: once half its backlog is appended, it is read again
    gw.auto_ack = True
    mirror.tick(T0 + 10_000)
    assert src.resumed == [("plant.x", 0)] and src.paused == set()
    assert [r[3] for r in gw.records("a.plant.x", 0)] == [b"v%d" % i for i in range(120)]
    assert mirror.status(T0)["pending"] == 0 and mirror.status(T0)["pending_bytes"] == 0


def test_a_partition_is_paused_by_the_bytes_it_holds_too(monkeypatch):
    monkeypatch.setattr(MP, "PARTITION_MAX_BYTES", 100_000)
    gw = FakeGateway(auto_ack=False)
    mirror, gw, src = make(gateway=gw)
    src.events += [listing(plant_x=1)] + [("records", "plant.x", 0, [(i, T0, None, b"x" * 30_000, None)], -1) for i in range(4)]
    mirror.pump(T0)
    assert src.paused == {("plant.x", 0)} and mirror.status(T0)["pending"] == 4


def failing_once(cls, method: str, message: str):
    """``cls`` with ``method`` raising RuntimeError(message) the first time it is called (a step with a bug)."""
    def once(self, *args):
        if not getattr(self, "failed_once", False):
            self.failed_once = True
            raise RuntimeError(message)
        return getattr(super(flaky, self), method)(*args)
    flaky = type(f"Flaky{cls.__name__}", (cls,), {method: once})
    return flaky


def test_an_event_whose_handling_fails_is_handled_again_and_no_record_is_skipped():
    mirror, gw, src = make(gateway=failing_once(FakeGateway, "partition_count", "a bug in a step")())
    src.events += [listing(plant_x=1), ("records", "plant.x", 0, recs(0, 3), -1)]
    mirror.pump(T0)  # the listing fails: it stays first, the records wait behind it
    status = mirror.status(T0)
    assert status["state"] == "error" and "a bug in a step" in status["last_error"] and len(src.events) == 1
    assert mirror.next_deadline(T0) <= T0 + M.EVENT_RETRY_MS
    mirror.pump(T0 + 10)  # not before its pause
    assert gw.created == []
    run_as_host(mirror, T0, T0 + M.EVENT_RETRY_MS)
    assert gw.created == [("a.plant.x", 1, {})] and src.events == []
    assert [r[3] for r in gw.records("a.plant.x", 0)] == [b"v0", b"v1", b"v2"]
    assert "event" not in mirror.status(T0)["failing"]


def test_a_records_event_handled_again_after_a_failure_appends_nothing_twice():
    mirror, gw, src = make(source=failing_once(FakeSource, "pause", "pause failed")())
    src.events += [listing(plant_x=1), ("records", "plant.x", 0, recs(0, MP.PARTITION_MAX_RECORDS), -1)]
    gw.auto_ack = False
    mirror.pump(T0)  # offered, then pausing the partition raised
    assert src.paused == set() and len(src.events) == 0
    mirror.tick(T0 + M.EVENT_RETRY_MS)
    assert src.paused == {("plant.x", 0)}  # handled again: the pause is made
    assert mirror.status(T0)["pending"] == MP.PARTITION_MAX_RECORDS  # the records were not counted twice
    gw.produced[0][4].complete(ProduceResult("a.plant.x", 0))
    while gw.produced[-1][4].done is False:
        gw.produced[-1][4].complete(ProduceResult("a.plant.x", 0))
    assert [r[3] for r in gw.records("a.plant.x", 0)] == [b"v%d" % i for i in range(MP.PARTITION_MAX_RECORDS)]


def test_a_failing_callback_does_not_raise_into_what_settled_the_completion():
    gw = FakeGateway(auto_ack=False)
    mirror, gw, src = make(gateway=gw)
    src.events += [listing(plant_x=1), ("records", "plant.x", 0, recs(0, 1), -1)]
    mirror.pump(T0)

    def boom(*args):
        raise RuntimeError("bug")
    mirror._parts[("plant.x", 0)].on_stored = boom
    gw.produced[0][4].complete(ProduceResult("a.plant.x", 0))  # does not raise


def test_close_while_a_commit_is_in_flight_commits_again_once_it_settled():
    class Slow(FakeGateway):
        def commit(self, group, offsets, now_ms):
            c = Completion()
            self.commits.append((group, dict(offsets), c))
            return c

    mirror, gw, src = make(gateway=Slow())
    src.events += [listing(plant_x=1), ("records", "plant.x", 0, recs(0, 2), -1)]
    mirror.pump(T0)
    mirror.tick(T0 + COMMIT_INTERVAL_MS)
    assert [c[1] for c in gw.commits] == [{("a.plant.x", 0): 2}]
    src.events.append(("records", "plant.x", 0, recs(2, 3), -1))
    mirror.pump(T0 + COMMIT_INTERVAL_MS + 1)
    mirror.close(T0 + COMMIT_INTERVAL_MS + 2)
    assert len(gw.commits) == 1 and src.closed and not mirror.settled()  # waits for the one in flight
    gw.commits[0][2].complete(None)
    assert [c[1] for c in gw.commits] == [{("a.plant.x", 0): 2}, {("a.plant.x", 0): 5}] and not mirror.settled()
    gw.commits[1][2].complete(None)
    assert mirror.settled()


def test_a_topic_gone_from_the_source_is_forgotten_after_the_grace_period():
    mirror, gw, src = make()
    src.events += [listing(plant_x=2, plant_y=1), ("records", "plant.x", 0, recs(0, 2), -1)]
    mirror.pump(T0)
    assert mirror.status(T0)["topics"] == 2 and len(mirror.status(T0)["partitions"]) == 3
    src.events.append(listing(plant_y=1))
    mirror.pump(T0 + 5000)
    assert mirror.status(T0)["topics"] == 2 and src.removed == []  # once missing: maybe a passing listing error
    src.events.append(listing(plant_y=1))
    mirror.pump(T0 + 5000 + M.FORGET_AFTER_MS)
    status = mirror.status(T0)
    assert status["topics"] == 1 and [p["topic"] for p in status["partitions"]] == ["a.plant.y"]
    assert sorted(src.removed) == [("plant.x", 0), ("plant.x", 1)]
    src.events.append(("records", "plant.x", 0, recs(2, 1), -1))  # queued before it was removed: ignored
    mirror.pump(T0 + 6000 + M.FORGET_AFTER_MS)
    assert mirror.status(T0)["pending"] == 0


def test_a_topic_missing_once_and_listed_again_is_kept():
    mirror, gw, src = make()
    src.events += [listing(plant_x=1), listing(), listing(plant_x=1)]
    mirror.pump(T0)
    src.events.append(listing(plant_x=1))
    mirror.pump(T0 + 2 * M.FORGET_AFTER_MS)
    assert mirror.status(T0)["topics"] == 1 and src.removed == []
