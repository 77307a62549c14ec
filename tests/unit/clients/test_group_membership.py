"""GroupMembership with a fake network and a fake clock: no sockets, no sleeps."""

from __future__ import annotations

import pytest

from clients.consumer.group import GroupMembership
from clients.consumer.fetcher import Fetcher
from tests.unit.clients.clientfakes import FakeClock, FakeMeta, FakeNet
from zbroker.errors import ErrorCode

P0, P1, P2 = ("t", 0), ("t", 1), ("t", 2)
COORD = "10.0.0.2:9555"


class FakeOffsets:
    def __init__(self, committed=None, enable_auto_commit=True) -> None:
        self.enable_auto_commit = enable_auto_commit
        self.committed = dict(committed or {})
        self.commits: list = []
        self.fetches: list = []

    def commit_positions(self, tps, quiet=False):
        self.commits.append((list(tps), quiet))

    def fetch_committed(self, tps):
        self.fetches.append(list(tps))
        return {tp: self.committed.get(tp, -1) for tp in tps}


def make(session_timeout_ms=3000, max_poll_interval_ms=60000, instance_id=None, committed=None, auto_commit=True):
    net, clock = FakeNet(), FakeClock()
    meta = FakeMeta(brokers=["b1:9555", "b2:9555"])
    fetcher = Fetcher(net, meta, auto_offset_reset="earliest", fetch_max_wait_ms=500, fetch_min_bytes=1,
                      max_partition_fetch_bytes=1 << 20)
    offsets = FakeOffsets(committed, auto_commit)
    calls: list = []
    g = GroupMembership(net, meta, fetcher, offsets, lambda name, tps: calls.append((name, list(tps))), "g1",
                        instance_id, "sticky", session_timeout_ms, max_poll_interval_ms, "client-1", clock=clock)
    g.topics = ["t"]
    g.fetcher_, g.offsets_, g.calls, g.clock_ = fetcher, offsets, calls, clock
    return g, net


def found(g, net):
    """Run until the coordinator is known."""
    g.run(g.clock_())
    (find,) = net.of_kind("find_coordinator")
    find.callback({"error": 0, "coordinator": 2, "host": "10.0.0.2", "port": 9555}, [], None)
    return find


def beat(g, net, answer=None, exc=None):
    """Run, take the heartbeat sent and answer it."""
    g.run(g.clock_())
    hb = net.of_kind("group_heartbeat")[-1]
    hb.callback(answer, [], exc)
    return hb


def member(*tps, epoch=1, **kw):
    """A membership that found its coordinator and owns ``tps``."""
    g, net = make(**kw)
    found(g, net)
    beat(g, net, assignment(*tps, epoch=epoch))
    g.apply()
    return g, net


def assignment(*tps, epoch=1, member_id="m-1", interval_ms=1000):
    return {"error": 0, "member_id": member_id, "member_epoch": epoch, "heartbeat_interval_ms": interval_ms,
            "assignment": [list(tp) for tp in tps]}


def test_finds_the_coordinator_then_heartbeats_to_it():
    g, net = make()
    assert g.run(g.clock_()) == pytest.approx(g.clock_() + 0.2)
    find = net.of_kind("find_coordinator")[0]
    assert find.address == "b2:9555" and find.fields == {"group": "g1"}  # tries rotate over the brokers
    assert find.timeout_ms == 1000  # a third of the session
    g.run(g.clock_())
    assert len(net.of_kind("find_coordinator")) == 1  # one lookup at a time
    find.callback({"error": 0, "coordinator": 2, "host": "10.0.0.2", "port": 9555}, [], None)
    assert g.coordinator == COORD
    g.run(g.clock_())
    (hb,) = net.of_kind("group_heartbeat")
    assert hb.address == COORD
    assert hb.fields["member_epoch"] == 0 and hb.fields["topics"] == ["t"] and hb.fields["owned"] == []
    assert hb.fields["session_timeout_ms"] == 3000 and hb.fields["rebalance_timeout_ms"] == 60000


def test_failed_lookup_tries_the_next_broker():
    g, net = make()
    g.run(g.clock_())
    net.sent[-1].callback(None, [], TimeoutError("no answer"))
    assert g.coordinator is None
    g.run(g.clock_())
    assert [r.address for r in net.of_kind("find_coordinator")] == ["b2:9555", "b1:9555"]


def test_new_assignment_is_applied_in_poll_with_committed_offsets():
    g, net = make(committed={P0: 42})
    found(g, net)
    beat(g, net, assignment(P0, P1))
    assert g.member_id == "m-1" and g.epoch == 1 and g.pending() and g.owned == set()
    assert g.run(g.clock_()) == pytest.approx(g.clock_() + 0.5)  # no heartbeat until poll() applied it
    g.apply()
    assert g.owned == {P0, P1} and not g.pending()
    assert g.offsets_.fetches == [[P0, P1]]
    assert g.calls == [("on_assigned", [P0, P1])]
    with g.fetcher_.lock:
        assert g.fetcher_.position(P0) == 42  # the committed offset
        assert g.fetcher_.position(P1) is None and g.fetcher_.states[P1].reset == "earliest"  # none: the reset
    g.run(g.clock_())
    assert net.of_kind("group_heartbeat")[-1].fields["owned"] == [list(P0), list(P1)]


def test_revocation_calls_back_commits_and_stops_fetching_first():
    g, net = member(P0, P1)
    g.clock_.advance(1.0)
    beat(g, net, assignment(P1, P2, epoch=2))
    g.apply()
    assert g.calls[1:] == [("on_revoked", [P0]), ("on_assigned", [P2])]
    assert g.offsets_.commits == [([P0], True)]
    assert set(g.fetcher_.states) == {P1, P2} and g.owned == {P1, P2} and g.epoch == 2


def test_revocation_without_auto_commit_does_not_commit():
    g, net = member(P0, auto_commit=False)
    g.clock_.advance(1.0)
    beat(g, net, assignment(epoch=2))
    g.apply()
    assert g.calls[-1] == ("on_revoked", [P0]) and g.offsets_.commits == [] and g.owned == set()


@pytest.mark.parametrize("code", [ErrorCode.FENCED_MEMBER_EPOCH, ErrorCode.UNKNOWN_MEMBER_ID])
def test_fenced_or_unknown_member_loses_its_partitions_and_rejoins(code):
    g, net = member(P0, P1, epoch=3)
    g.clock_.advance(1.0)
    beat(g, net, {"error": int(code), "error_message": "fenced"})
    assert g.lost and g.pending()
    g.apply()
    assert g.calls[-1] == ("on_lost", [P0, P1]) and g.offsets_.commits == []  # lost: no commit
    assert g.owned == set() and g.fetcher_.states == {} and g.epoch == 0
    g.run(g.clock_())
    hb = net.of_kind("group_heartbeat")[-1]
    assert hb.fields["member_epoch"] == 0 and hb.fields["member_id"] == "m-1"  # joins again


@pytest.mark.parametrize("code", [ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_NOT_AVAILABLE])
def test_coordinator_moved_is_looked_up_again(code):
    g, net = member(P0)
    g.clock_.advance(1.0)
    beat(g, net, {"error": int(code)})
    assert g.coordinator is None and g.owned == {P0}  # the partitions stay
    g.run(g.clock_())
    assert len(net.of_kind("find_coordinator")) == 2


def test_heartbeat_timeout_looks_the_coordinator_up_again():
    g, net = make()
    found(g, net)
    beat(g, net, exc=TimeoutError("no answer"))
    assert g.coordinator is None


def test_other_heartbeat_errors_back_off_a_second():
    g, net = make()
    found(g, net)
    beat(g, net, {"error": int(ErrorCode.INVALID_REQUEST), "error_message": "bad"})
    assert g.coordinator == COORD and g.next_beat == pytest.approx(g.clock_() + 1.0)


def test_heartbeats_follow_the_coordinators_interval():
    g, net = make()
    found(g, net)
    beat(g, net, assignment(P0, interval_ms=250))
    g.apply()
    n = len(net.of_kind("group_heartbeat"))
    g.run(g.clock_())  # apply() asked for a beat now
    net.of_kind("group_heartbeat")[-1].callback(assignment(P0, interval_ms=250), [], None)
    g.clock_.advance(0.1)
    assert g.run(g.clock_()) == pytest.approx(g.clock_() + 0.15)
    assert len(net.of_kind("group_heartbeat")) == n + 1
    g.clock_.advance(0.15)
    g.run(g.clock_())
    assert len(net.of_kind("group_heartbeat")) == n + 2


def test_no_answer_for_a_session_gives_the_partitions_up():
    g, net = member(P0, session_timeout_ms=3000)
    g.clock_.advance(3.1)
    g.last_poll = g.clock_()
    g.run(g.clock_())
    assert g.lost
    g.apply()
    assert g.calls[-1] == ("on_lost", [P0])


def test_no_poll_for_max_poll_interval_leaves_the_group():
    g, net = member(P0, max_poll_interval_ms=10000)
    g.clock_.advance(10.5)
    g.last_ok = g.clock_()
    g.run(g.clock_())
    assert g.left and net.of_kind("group_heartbeat")[-1].fields["member_epoch"] == -1
    g.apply()  # the next poll()
    assert g.calls[-1] == ("on_lost", [P0]) and not g.left and g.epoch == 0


@pytest.mark.parametrize("instance_id, epoch", [(None, -1), ("static-1", -2)])
def test_leave_sends_the_leave_epoch_and_stops_heartbeats(instance_id, epoch):
    g, net = make(instance_id=instance_id)
    found(g, net)
    beat(g, net, assignment(P0))
    g.leave()
    (req,) = net.requests
    assert req.address == COORD and req.kind == "group_heartbeat" and req.fields["member_epoch"] == epoch
    assert g.run(g.clock_()) is None


def test_leave_before_joining_sends_nothing():
    g, net = make()
    g.leave()
    assert net.requests == [] and g.closed


def test_commit_fields_only_inside_a_membership():
    g, net = make()
    assert g.commit_fields() == ("", -1)
    found(g, net)
    beat(g, net, assignment(P0, epoch=4))
    assert g.commit_fields() == ("m-1", 4)
    g.topics = None  # assign() mode: commits as a non-member
    assert g.commit_fields() == ("", -1)
