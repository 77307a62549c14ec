"""Classic groups (Kafka's JoinGroup/SyncGroup/Heartbeat/LeaveGroup) through an App on one node.

The state machine is stepped with explicit times: requests carry ``now``, and ``app.tick(now)``
runs the timers (rebalance and session deadlines are purgatory timers, so the app's
``next_deadline`` covers them).  Every step ends with the group's ``_check()``.
"""

import random
from dataclasses import replace

import pytest

from tests.unit.servicefakes import START_MS, error_code, settle, single_app
from tests.unit.test_coordinator import offsets_tp, start
from zbroker.context import INTERNAL, Completion
from zbroker.control.metadata import PARTITION_CHANGE_RECORD
from zbroker.errors import ErrorCode
from zbroker.groups.classic import (TRANSITIONS, ClassicGroup, ClassicHeartbeat, ClassicState, IllegalTransition,
                                    JoinedMember, JoinGroup, LeaveGroup, SyncGroup)
from zbroker.groups.coordinator import CommitOffset, OffsetCommit
from zbroker.groups.group import MemberHeartbeat

NOW = START_MS
GROUP = "g"
SESSION = 10_000
REBALANCE = 30_000
E = ErrorCode
RANGE = (("range", b"sub-range"),)


@pytest.fixture
def app(tmp_path):
    app = start(single_app(tmp_path))
    yield app
    check(app)
    app.close(NOW)


def check(app):
    for g in app.groups.classic.values():
        g._check()


def join(app, member_id="", now=NOW, *, instance=None, protocols=RANGE, protocol_type="consumer", session=SESSION,
         rebalance=REBALANCE, require_known=False, client="c") -> Completion:
    req = JoinGroup(GROUP, member_id, instance, client, "/10.0.0.1", protocol_type, list(protocols), session, rebalance,
                    require_known, "test")
    done = app.groups.join_group(INTERNAL, req, now)
    check(app)
    return done


def sync(app, joined, assignments=(), now=NOW, *, generation=None, instance=None) -> Completion:
    req = SyncGroup(GROUP, joined.generation_id if generation is None else generation, joined.member_id, instance,
                    "consumer", joined.protocol_name, list(assignments))
    done = app.groups.sync_group(INTERNAL, req, now)
    check(app)
    return done


def beat(app, joined, now=NOW, *, generation=None, instance=None):
    gen = joined.generation_id if generation is None else generation
    return app.groups.classic_heartbeat(INTERNAL, ClassicHeartbeat(GROUP, gen, joined.member_id, instance), now)


def leave(app, *members, now=NOW):
    out = app.groups.leave_group(INTERNAL, LeaveGroup(GROUP, list(members)), now)
    check(app)
    return out


def tick(app, now):
    app.tick(now)
    check(app)


def commit(app, member_id, generation, offset=5, now=NOW, instance=None):
    req = OffsetCommit(GROUP, [CommitOffset("t", 0, offset)], member_id, generation, instance)
    return settle(app.groups.offset_commit(INTERNAL, req, now))


def group(app) -> ClassicGroup:
    return app.groups.classic[GROUP]


def stable_pair(app, now=NOW):
    """Two members, Stable at generation 2 with a as leader; returns their JoinResults."""
    a = settle(join(app, now=now, client="a"))  # alone: its join round ends at once
    assert (a.error, a.generation_id, a.leader, a.members) == (E.NONE, 1, a.member_id, [JoinedMember(a.member_id, None, b"sub-range")])
    assert settle(sync(app, a, [(a.member_id, b"all")], now)).assignment == b"all"
    b_join = join(app, now=now, client="b")
    assert not b_join.done and group(app).state is ClassicState.PREPARING_REBALANCE
    assert beat(app, a, now) == E.REBALANCE_IN_PROGRESS
    a = settle(join(app, a.member_id, now))
    b = settle(b_join)
    assert a.generation_id == b.generation_id == 2 and a.leader == b.leader == a.member_id
    assert [m.member_id for m in a.members] == [a.member_id, b.member_id] and b.members == []
    return a, b


# -- join and sync ----------------------------------------------------------------------------


def test_two_members_join_then_the_leaders_sync_hands_out_every_assignment(app):
    a, b = stable_pair(app)
    assert group(app).state is ClassicState.COMPLETING_REBALANCE
    assert beat(app, b) == E.NONE  # heartbeats are fine while the leader assigns
    first = sync(app, b)
    b_sync = sync(app, b)  # sent again: the first is answered
    assert settle(first).error == E.REBALANCE_IN_PROGRESS
    assert not b_sync.done  # a follower waits for the leader
    a_sync = sync(app, a, [(a.member_id, b"A"), (b.member_id, b"B"), ("stranger", b"X")])
    assert (settle(a_sync).error, settle(a_sync).assignment, settle(a_sync).protocol_name) == (E.NONE, b"A", "range")
    assert settle(b_sync).assignment == b"B"
    assert group(app).state is ClassicState.STABLE
    assert settle(sync(app, b)).assignment == b"B"  # Stable: the current assignment again
    assert beat(app, a) == beat(app, b) == E.NONE


def test_a_member_the_leader_leaves_out_gets_an_empty_assignment(app):
    a, b = stable_pair(app)
    b_sync = sync(app, b)
    settle(sync(app, a, [(a.member_id, b"A")]))
    assert settle(b_sync).assignment == b""


def test_sync_and_heartbeat_check_member_generation_and_state(app):
    a, b = stable_pair(app)
    assert settle(sync(app, b, generation=1)).error == E.ILLEGAL_GENERATION
    assert beat(app, b, generation=3) == E.ILLEGAL_GENERATION
    assert settle(sync(app, replace(b, member_id="nobody"))).error == E.UNKNOWN_MEMBER_ID
    assert beat(app, replace(b, member_id="nobody")) == E.UNKNOWN_MEMBER_ID
    req = SyncGroup(GROUP, b.generation_id, b.member_id, None, "consumer", "roundrobin", [])
    assert settle(app.groups.sync_group(INTERNAL, req, NOW)).error == E.INCONSISTENT_GROUP_PROTOCOL
    join(app, client="c")  # a rebalance: a sync now is told so
    assert settle(sync(app, b)).error == E.REBALANCE_IN_PROGRESS
    other = ClassicHeartbeat("other", 1, "x")  # a group nobody joined
    assert app.groups.classic_heartbeat(INTERNAL, other, NOW) == E.UNKNOWN_MEMBER_ID


def test_a_third_member_triggers_a_rebalance_and_the_leader_stays(app):
    a, b = stable_pair(app)
    settle(sync(app, a, [(a.member_id, b"A"), (b.member_id, b"B")]))
    c_join = join(app, client="c")
    assert not c_join.done and group(app).state is ClassicState.PREPARING_REBALANCE
    assert beat(app, a) == beat(app, b) == E.REBALANCE_IN_PROGRESS
    assert settle(sync(app, a)).error == E.REBALANCE_IN_PROGRESS
    a_join = join(app, a.member_id)
    assert not a_join.done  # b has not rejoined yet
    b3 = settle(join(app, b.member_id))
    a3, c = settle(a_join), settle(c_join)
    assert a3.generation_id == b3.generation_id == c.generation_id == 3
    assert a3.leader == a.member_id and len(a3.members) == 3 and b3.members == c.members == []


def test_a_leader_rejoining_a_stable_group_starts_a_rebalance_a_follower_does_not(app):
    a, b = stable_pair(app)
    settle(sync(app, a, [(a.member_id, b"A"), (b.member_id, b"B")]))
    again = settle(join(app, b.member_id))  # nothing new: the current generation, then SyncGroup
    assert (again.error, again.generation_id, again.members) == (E.NONE, 2, [])
    assert group(app).state is ClassicState.STABLE
    assert not join(app, a.member_id).done  # the leader asks for a new assignment
    assert group(app).state is ClassicState.PREPARING_REBALANCE


def test_a_rebalance_while_completing_answers_parked_syncs_rebalance_in_progress(app):
    a, b = stable_pair(app)
    b_sync = sync(app, b)
    join(app, client="c")
    assert settle(b_sync).error == E.REBALANCE_IN_PROGRESS


# -- timers -----------------------------------------------------------------------------------


def test_the_rebalance_timeout_ends_the_join_round_without_a_member_that_did_not_rejoin(app):
    a, b = stable_pair(app)
    settle(sync(app, a, [(a.member_id, b"A"), (b.member_id, b"B")]))
    c_join = join(app, now=NOW + 1000, client="c")
    a_join = join(app, a.member_id, NOW + 2000)
    deadline = NOW + 1000 + REBALANCE  # fixed when the round started
    assert app.next_deadline(NOW + 2000) <= NOW + 2000 + SESSION  # the app's loop wakes up for the timers
    for t in range(NOW + 5000, deadline, 5000):  # b is alive -- it heartbeats -- but does not rejoin
        assert beat(app, b, t) == E.REBALANCE_IN_PROGRESS
        tick(app, t)
    tick(app, deadline - 1)
    assert not a_join.done
    assert app.purgatory.next_deadline() == deadline and app.next_deadline(deadline - 1) <= deadline
    tick(app, deadline)
    a3, c = settle(a_join), settle(c_join)
    assert a3.generation_id == 3 and {m.member_id for m in a3.members} == {a.member_id, c.member_id}
    assert beat(app, b, deadline) == E.UNKNOWN_MEMBER_ID  # removed


def test_a_member_that_never_syncs_is_removed_and_the_group_rebalances(app):
    a, b = stable_pair(app)
    a_sync = sync(app, a, [(a.member_id, b"A"), (b.member_id, b"B")], NOW + 10)
    assert settle(a_sync).error == E.NONE
    for t in range(NOW + 5000, NOW + REBALANCE, 5000):
        assert beat(app, a, t) == E.NONE and beat(app, b, t) == E.NONE  # b heartbeats but never syncs
    tick(app, NOW + REBALANCE)
    assert beat(app, b, NOW + REBALANCE) == E.UNKNOWN_MEMBER_ID
    assert beat(app, a, NOW + REBALANCE) == E.REBALANCE_IN_PROGRESS


def test_a_leader_that_never_syncs_is_removed_and_the_parked_follower_told_to_rejoin(app):
    a, b = stable_pair(app)
    b_sync = sync(app, b, now=NOW + 100)
    tick(app, NOW + REBALANCE)
    assert settle(b_sync).error == E.REBALANCE_IN_PROGRESS
    b3 = settle(join(app, b.member_id, NOW + REBALANCE))  # alone now: it leads generation 3
    assert (b3.generation_id, b3.leader) == (3, b.member_id)


def test_a_silent_member_expires_after_its_session_and_the_group_rebalances(app):
    a, b = stable_pair(app)
    settle(sync(app, a, [(a.member_id, b"A"), (b.member_id, b"B")]))
    settle(sync(app, b))
    for t in (NOW + 3000, NOW + 6000, NOW + 9000):  # b heartbeats; a says nothing
        assert beat(app, b, t) == E.NONE
        tick(app, t)
    assert set(group(app).members) == {a.member_id, b.member_id}
    assert app.next_deadline(NOW + 9000) <= NOW + SESSION
    tick(app, NOW + SESSION)
    assert beat(app, a, NOW + SESSION) == E.UNKNOWN_MEMBER_ID
    assert beat(app, b, NOW + SESSION) == E.REBALANCE_IN_PROGRESS
    b3 = settle(join(app, b.member_id, NOW + SESSION))
    assert (b3.generation_id, b3.leader, [m.member_id for m in b3.members]) == (3, b.member_id, [b.member_id])


def test_join_sync_and_commit_keep_a_session_alive(app):
    a, b = stable_pair(app)
    settle(sync(app, a, [(a.member_id, b"A"), (b.member_id, b"B")], NOW + 9000))
    settle(sync(app, b, now=NOW + 9000))
    assert beat(app, a, NOW + 12_000) == E.NONE
    commit(app, b.member_id, 2, now=NOW + 18_000)
    assert settle(join(app, b.member_id, NOW + 18_500)).generation_id == 2  # a follower's rejoin, nothing new
    assert beat(app, a, NOW + 20_000) == E.NONE
    tick(app, NOW + 28_499)
    assert set(group(app).members) == {a.member_id, b.member_id}
    tick(app, NOW + 28_500)  # b's rejoin at 18.5 s was its last word
    assert set(group(app).members) == {a.member_id}


def test_a_member_waiting_in_a_join_round_does_not_expire(app):
    a, b = stable_pair(app)
    settle(sync(app, a, [(a.member_id, b"A"), (b.member_id, b"B")]))
    a_join = join(app, a.member_id, NOW + 1000, rebalance=60_000)  # a leader's rejoin: waits for b
    tick(app, NOW + 1000 + 2 * SESSION)  # b is silent and expires; a's parked join stands for it
    assert settle(a_join).generation_id == 3 and set(group(app).members) == {a.member_id}


# -- static membership ------------------------------------------------------------------------


def test_static_members_rejoin_fenced_and_replaced(app):
    a = settle(join(app, instance="i-a", client="a"))
    b_join = join(app, instance="i-b", client="b")
    a = settle(join(app, a.member_id, instance="i-a"))
    b = settle(b_join)
    settle(sync(app, a, [(a.member_id, b"A"), (b.member_id, b"B")], instance="i-a"))
    settle(sync(app, b, instance="i-b"))
    assert group(app).state is ClassicState.STABLE and a.generation_id == 2
    # a restarts: same instance id, empty member id, same protocols
    back = settle(join(app, instance="i-a", client="a"))
    assert back.error == E.NONE and back.member_id != a.member_id and back.generation_id == 2
    assert back.leader == back.member_id and back.skip_assignment  # the leader: members listed, nothing to assign
    assert {m.group_instance_id for m in back.members} == {"i-a", "i-b"}
    assert group(app).state is ClassicState.STABLE
    assert settle(sync(app, back, instance="i-a")).assignment == b"A"  # its slot, its assignment
    assert beat(app, a, instance="i-a") == E.FENCED_INSTANCE_ID  # the old id is fenced
    assert settle(sync(app, a, instance="i-a")).error == E.FENCED_INSTANCE_ID
    assert error_code(lambda: commit(app, a.member_id, 2, instance="i-a")) == E.FENCED_INSTANCE_ID
    assert beat(app, a) == E.UNKNOWN_MEMBER_ID  # without its instance id: simply unknown
    assert leave(app, (a.member_id, "i-a")) == [E.FENCED_INSTANCE_ID]
    assert beat(app, b, instance="i-b") == E.NONE
    # b comes back with other protocols: that needs a new assignment
    b_back = join(app, instance="i-b", client="b", protocols=(("range", b"new-topics"),))
    assert not b_back.done and group(app).state is ClassicState.PREPARING_REBALANCE


def test_a_static_member_replaced_while_its_join_is_parked_is_told_fenced(app):
    a = settle(join(app, instance="i-a", client="a"))
    b_join = join(app, client="b")
    a = settle(join(app, a.member_id, instance="i-a"))
    b = settle(b_join)
    c_join = join(app, client="c")  # round 3 waits for a and b
    old = join(app, a.member_id, instance="i-a")
    assert not old.done
    new = join(app, instance="i-a")
    assert settle(old).error == E.FENCED_INSTANCE_ID
    assert not new.done  # it waits in the round, in a's slot
    settle(join(app, b.member_id))
    new, c = settle(new), settle(c_join)
    assert new.generation_id == c.generation_id == 3
    assert new.leader == new.member_id and {m.member_id for m in new.members} == set(group(app).members)


def test_a_static_member_that_does_not_rejoin_stays_past_the_join_round(app):
    a = settle(join(app, instance="i-a", session=60_000, rebalance=5000))
    settle(sync(app, a, [(a.member_id, b"A")]))
    b_join = join(app, client="b", rebalance=5000)
    tick(app, NOW + 5000)  # the round's time is up: a static member is not dropped for that
    b = settle(b_join)
    assert b.generation_id == 2 and b.leader == b.member_id
    assert a.member_id in group(app).members and {m.member_id for m in b.members} == {a.member_id, b.member_id}
    settle(sync(app, b, [(b.member_id, b"B")], NOW + 5000))
    tick(app, NOW + 10_000)  # but it sent no SyncGroup in time
    assert a.member_id not in group(app).members


def test_a_round_left_with_static_members_that_did_not_rejoin_waits_for_them(app):
    a = settle(join(app, instance="i-a", session=60_000, rebalance=5000))
    b_join = join(app, client="b", rebalance=5000)
    a = settle(join(app, a.member_id, instance="i-a", session=60_000, rebalance=5000))
    b = settle(b_join)
    settle(sync(app, a, [(a.member_id, b"A"), (b.member_id, b"B")], instance="i-a"))
    assert leave(app, (b.member_id, None)) == [E.NONE]  # a round: a must rejoin
    tick(app, NOW + 5000)  # its time is up, nobody rejoined: a static member is waited for again
    assert group(app).state is ClassicState.PREPARING_REBALANCE and group(app).join_deadline_ms == NOW + 10_000
    assert beat(app, a, NOW + 6000, instance="i-a") == E.REBALANCE_IN_PROGRESS
    a3 = settle(join(app, a.member_id, NOW + 6000, instance="i-a", session=60_000, rebalance=5000))
    assert (a3.generation_id, a3.leader) == (3, a.member_id)


def test_leave_by_instance_id_removes_a_static_member(app):
    a = settle(join(app, instance="i-a"))
    settle(sync(app, a, [(a.member_id, b"A")]))
    assert leave(app, ("", "i-a"), ("", "i-x")) == [E.NONE, E.UNKNOWN_MEMBER_ID]
    assert GROUP not in app.groups.classic  # empty and no offsets: nothing left to remember


# -- leaving -----------------------------------------------------------------------------------


def test_a_leave_triggers_a_rebalance_and_the_last_leave_empties_the_group(app):
    a, b = stable_pair(app)
    settle(sync(app, a, [(a.member_id, b"A"), (b.member_id, b"B")]))
    commit(app, a.member_id, 2)  # offsets keep the group known once empty
    assert leave(app, (b.member_id, None), ("nobody", None)) == [E.NONE, E.UNKNOWN_MEMBER_ID]
    assert beat(app, a) == E.REBALANCE_IN_PROGRESS
    a3 = settle(join(app, a.member_id))
    assert (a3.generation_id, len(a3.members)) == (3, 1)
    assert leave(app, (a.member_id, None)) == [E.NONE]
    g = group(app)
    assert (g.state, g.generation, g.leader, g.protocol_name) == (ClassicState.EMPTY, 4, None, None)


def test_a_leaving_member_whose_join_is_parked_gets_unknown_member_id(app):
    a, b = stable_pair(app)
    c_join = join(app, client="c")
    c_id = group(app).members.keys() - {a.member_id, b.member_id}
    assert leave(app, (c_id.pop(), None)) == [E.NONE]
    assert settle(c_join).error == E.UNKNOWN_MEMBER_ID


# -- member ids, protocols -----------------------------------------------------------------------


def test_member_id_required_then_the_join_with_that_id(app):
    first = settle(join(app, require_known=True, client="cli"))
    assert first.error == E.MEMBER_ID_REQUIRED and first.member_id.startswith("cli-") and first.generation_id == -1
    assert GROUP in app.groups.classic and not group(app).members  # pending, not a member yet
    joined = settle(join(app, first.member_id, require_known=True))
    assert (joined.error, joined.member_id, joined.generation_id, joined.leader) == (E.NONE, first.member_id, 1, first.member_id)


def test_a_pending_member_holds_the_join_round_until_it_rejoins_or_its_session_ends(app):
    a, b = stable_pair(app)
    settle(sync(app, a, [(a.member_id, b"A"), (b.member_id, b"B")]))
    pending = settle(join(app, require_known=True, client="p", now=NOW + 100))
    b_join = join(app, b.member_id, NOW + 200)  # b's metadata: unchanged, Stable: no round
    assert settle(b_join).generation_id == 2
    new = join(app, require_known=False, client="n", now=NOW + 300)  # a round starts
    a_join, b_join = join(app, a.member_id, NOW + 300), join(app, b.member_id, NOW + 300)
    assert not new.done and not a_join.done  # everyone is in, but p may still come back
    tick(app, NOW + 100 + SESSION)  # p's time to come back is up
    assert settle(a_join).generation_id == settle(b_join).generation_id == settle(new).generation_id == 3
    assert settle(join(app, pending.member_id, NOW + 100 + SESSION)).error == E.UNKNOWN_MEMBER_ID


def test_unknown_member_id_for_a_group_that_does_not_exist_and_no_group_is_made(app):
    assert settle(join(app, "made-up")).error == E.UNKNOWN_MEMBER_ID
    assert app.groups.list_groups(INTERNAL) == []


def test_a_bad_session_timeout_is_refused(app):
    assert settle(join(app, session=10)).error == E.INVALID_SESSION_TIMEOUT
    assert settle(join(app, session=10**9)).error == E.INVALID_SESSION_TIMEOUT
    assert app.groups.list_groups(INTERNAL) == []


def test_the_protocol_with_most_votes_among_those_all_support_is_chosen(app):
    rr, rng, sticky = ("roundrobin", b"rr"), ("range", b"rg"), ("sticky", b"st")
    a = join(app, protocols=(sticky, rng, rr), client="a")
    a = settle(a)
    assert a.protocol_name == "sticky"  # alone: its first choice
    b_join = join(app, protocols=(rr, rng), client="b")
    c_join = join(app, protocols=(rr, sticky, rng), client="c")
    a2 = settle(join(app, a.member_id, protocols=(sticky, rng, rr)))
    b, c = settle(b_join), settle(c_join)
    # candidates: range and roundrobin (sticky is not b's); votes: a range, b roundrobin, c roundrobin
    assert a2.protocol_name == b.protocol_name == c.protocol_name == "roundrobin"
    assert {m.metadata for m in a2.members} == {b"rr"}  # each member's metadata for the chosen protocol


def test_a_joiner_sharing_no_protocol_or_another_protocol_type_is_refused(app):
    a = settle(join(app, protocols=(("range", b""), ("roundrobin", b""))))
    assert settle(join(app, protocols=(("sticky", b""),))).error == E.INCONSISTENT_GROUP_PROTOCOL
    assert settle(join(app, protocol_type="connect")).error == E.INCONSISTENT_GROUP_PROTOCOL
    assert settle(join(app, protocols=())).error == E.INCONSISTENT_GROUP_PROTOCOL
    assert set(group(app).members) == {a.member_id}
    # a member alone may change its own protocols
    assert settle(join(app, a.member_id, protocols=(("sticky", b""),))).protocol_name == "sticky"


def test_an_empty_protocol_list_creates_no_group(app):
    assert settle(join(app, protocols=())).error == E.INCONSISTENT_GROUP_PROTOCOL
    assert GROUP not in app.groups.classic


# -- classic and consumer groups share one namespace ----------------------------------------------


def consumer_join(app, now=NOW):
    return settle(app.groups.heartbeat(INTERNAL, MemberHeartbeat(GROUP, 0, topics=["t"]), now)).answer


def test_a_classic_join_to_a_consumer_group_with_members_is_refused_and_back(app):
    member = consumer_join(app)
    assert settle(join(app)).error == E.INCONSISTENT_GROUP_PROTOCOL
    settle(app.groups.heartbeat(INTERNAL, MemberHeartbeat(GROUP, -1, member.member_id), NOW))  # it leaves
    a = settle(join(app))  # an empty consumer group becomes a classic one
    assert a.error == E.NONE and GROUP not in app.groups.groups
    hb = MemberHeartbeat(GROUP, 0, topics=["t"])
    assert error_code(lambda: app.groups.heartbeat(INTERNAL, hb, NOW)) == E.INCONSISTENT_GROUP_PROTOCOL
    settle(sync(app, a, [(a.member_id, b"A")]))
    commit(app, a.member_id, a.generation_id, offset=7)
    assert leave(app, (a.member_id, None)) == [E.NONE]
    assert group(app).state is ClassicState.EMPTY  # kept: it has offsets
    consumer_join(app)  # an empty classic group becomes a consumer group, offsets and all
    assert GROUP not in app.groups.classic
    (listed,) = app.groups.list_groups(INTERNAL)
    assert (listed.group_type, listed.state, listed.members) == ("consumer", "stable", 1)
    assert app.groups.offset_fetch(INTERNAL, GROUP, [("t", 0)], NOW)[0].offset == 7


# -- offsets ----------------------------------------------------------------------------------------


def test_offset_commits_check_the_generation_like_kafka(app):
    a, b = stable_pair(app)
    assert error_code(lambda: commit(app, a.member_id, 2)) == E.REBALANCE_IN_PROGRESS  # assigning
    settle(sync(app, a, [(a.member_id, b"A"), (b.member_id, b"B")]))
    assert commit(app, a.member_id, 2, offset=3) == [("t", 0)]
    assert error_code(lambda: commit(app, a.member_id, 1)) == E.ILLEGAL_GENERATION
    assert error_code(lambda: commit(app, "nobody", 2)) == E.UNKNOWN_MEMBER_ID
    assert error_code(lambda: commit(app, "", -1)) == E.UNKNOWN_MEMBER_ID  # from outside: the group has members
    join(app, client="c")
    assert commit(app, b.member_id, 2, offset=4) == [("t", 0)]  # preparing a rebalance: still allowed
    assert app.groups.offset_fetch(INTERNAL, GROUP, [("t", 0)], NOW)[0].offset == 4


def test_a_commit_from_outside_any_group_is_allowed_when_the_group_is_empty_or_unknown(app):
    assert commit(app, "", -1, offset=1) == [("t", 0)]  # unknown group
    a = settle(join(app))
    settle(sync(app, a, [(a.member_id, b"A")]))
    assert leave(app, (a.member_id, None)) == [E.NONE]
    assert group(app).state is ClassicState.EMPTY
    assert commit(app, "", -1, offset=2) == [("t", 0)]
    assert error_code(lambda: commit(app, a.member_id, 1)) == E.UNKNOWN_MEMBER_ID


# -- describe, list, delete -------------------------------------------------------------------------


def test_describe_and_list_report_a_classic_group_as_kafka_does(app):
    a, b = stable_pair(app)
    (listed,) = app.groups.list_groups(INTERNAL)
    assert (listed.group, listed.state, listed.members, listed.group_type, listed.protocol_type) == \
        (GROUP, "CompletingRebalance", 2, "classic", "consumer")
    detail = app.groups.describe_group(INTERNAL, GROUP, NOW)
    assert (detail.state, detail.assignor, detail.group_type, detail.protocol_type) == \
        ("CompletingRebalance", "", "classic", "consumer")
    assert [m.member_metadata for m in detail.members] == [b"", b""]  # Kafka: no metadata until Stable
    settle(sync(app, a, [(a.member_id, b"A"), (b.member_id, b"B")]))
    commit(app, a.member_id, 2, offset=9)
    detail = app.groups.describe_group(INTERNAL, GROUP, NOW)
    assert (detail.state, detail.group_epoch, detail.assignor) == ("Stable", 2, "range")
    assert [(m.member_id, m.client_id, m.client_host, m.member_metadata, m.member_assignment, m.member_epoch)
            for m in detail.members] == [(a.member_id, "a", "/10.0.0.1", b"sub-range", b"A", 2),
                                         (b.member_id, "b", "/10.0.0.1", b"sub-range", b"B", 2)]
    assert [(o.topic, o.partition, o.offset) for o in detail.offsets] == [("t", 0, 9)]
    assert error_code(lambda: app.groups.delete_group(INTERNAL, GROUP, NOW)) == E.NON_EMPTY_GROUP
    assert leave(app, (a.member_id, None), (b.member_id, None)) == [E.NONE, E.NONE]
    assert app.groups.list_groups(INTERNAL)[0].state == "Empty"
    assert settle(app.groups.delete_group(INTERNAL, GROUP, NOW)) is None
    assert app.groups.list_groups(INTERNAL) == [] and GROUP not in app.groups.classic


def test_list_groups_shows_both_kinds_sorted(app):
    settle(app.groups.heartbeat(INTERNAL, MemberHeartbeat("z-consumer", 0, topics=["t"]), NOW))
    settle(app.groups.join_group(INTERNAL, JoinGroup("a-classic", "", None, "c", "h", "consumer", list(RANGE), SESSION,
                                                     REBALANCE), NOW))
    assert [(listed.group, listed.group_type) for listed in app.groups.list_groups(INTERNAL)] == \
        [("a-classic", "classic"), ("z-consumer", "consumer")]


# -- the coordinator moves -----------------------------------------------------------------------


def test_parked_joins_and_syncs_fail_not_coordinator_when_the_coordinator_moves(app):
    a, b = stable_pair(app)
    b_sync = sync(app, b)
    topic, index = offsets_tp(app)
    app.control.propose([{"type": PARTITION_CHANGE_RECORD, "topic": topic, "partition": index, "leader": -1,
                          "leader_epoch": 1, "isr": [1]}])
    app.metadata_changed(NOW)
    assert error_code(lambda: b_sync) == E.NOT_COORDINATOR
    assert GROUP not in app.groups.classic
    assert error_code(lambda: join(app)) == E.NOT_COORDINATOR
    assert error_code(lambda: beat(app, a)) == E.NOT_COORDINATOR


def test_a_parked_join_fails_not_coordinator_when_the_coordinator_moves(app):
    stable_pair(app)
    c_join = join(app, client="c")
    topic, index = offsets_tp(app)
    app.control.propose([{"type": PARTITION_CHANGE_RECORD, "topic": topic, "partition": index, "leader": -1,
                          "leader_epoch": 1, "isr": [1]}])
    app.metadata_changed(NOW)
    assert error_code(lambda: c_join) == E.NOT_COORDINATOR


def test_membership_is_not_kept_across_a_restart_but_offsets_are(tmp_path):
    app = start(single_app(tmp_path))
    a, b = stable_pair(app)
    settle(sync(app, a, [(a.member_id, b"A"), (b.member_id, b"B")]))
    commit(app, a.member_id, 2, offset=11)
    app.close(NOW)
    app = single_app(tmp_path, now=NOW + 100)
    assert beat(app, a, NOW + 100) == E.UNKNOWN_MEMBER_ID  # members rejoin the new coordinator
    assert app.groups.offset_fetch(INTERNAL, GROUP, [("t", 0)], NOW + 100)[0].offset == 11
    again = settle(join(app, now=NOW + 100))
    assert again.error == E.NONE and again.generation_id == 1
    app.close(NOW + 100)


# -- the state machine alone ------------------------------------------------------------------------


def test_the_transition_table_refuses_a_move_it_does_not_list():
    g = ClassicGroup("x")
    with pytest.raises(IllegalTransition):
        g._transition(ClassicState.STABLE)
    assert all(ClassicState.DEAD in targets for targets in TRANSITIONS.values())
    assert TRANSITIONS[ClassicState.EMPTY] == {ClassicState.PREPARING_REBALANCE, ClassicState.DEAD}


def test_random_steps_keep_the_invariants():
    """Seeded random joins, syncs, heartbeats, leaves and clock jumps on the bare state machine;
    ``_check()`` after every step, and no answer is ever left parked in a Dead or Stable group."""
    for seed in range(30):
        rng = random.Random(seed)
        g, now, known, parked = ClassicGroup("x"), 0, [], []
        for _ in range(200):
            now += rng.choice((0, 1, 500, 3000, 12_000))
            op = rng.random()
            if op < 0.3 or not known:
                mid = rng.choice(["", *known]) if known else ""
                instance = rng.choice((None, None, "i1", "i2"))
                protos = rng.choice((RANGE, (("range", b"x"), ("rr", b"")), (("rr", b""),)))
                done = g.join(JoinGroup("x", mid, instance, "c", "h", "consumer", list(protos), 10_000,
                                        rng.choice((5000, 20_000)), rng.random() < 0.3), now)
                parked.append(done)
                if done.done and done.value.member_id:
                    known.append(done.value.member_id)
            elif op < 0.5:
                mid = rng.choice(known)
                assignments = [(m, b"a") for m in g.members] if rng.random() < 0.5 else []
                parked.append(g.sync(SyncGroup("x", g.generation, mid, None, None, None, assignments), now))
            elif op < 0.7:
                g.heartbeat(ClassicHeartbeat("x", rng.choice((g.generation, g.generation - 1)), rng.choice(known)), now)
            elif op < 0.8:
                g.leave([(rng.choice(known), None)], now)
            else:
                g.expire(now)
                assert (g.next_deadline() or now + 1) > now  # nothing due is left behind: no busy loop
            g._check()
        # drive every timer out: then nothing may stay parked
        for _ in range(50):
            deadline = g.next_deadline()
            if deadline is None:
                break
            now = max(now, deadline)
            g.expire(now)
            g._check()
        assert g.is_empty and all(done.done for done in parked), seed
