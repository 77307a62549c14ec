"""Group membership and incremental assignment, stepped with a fake clock."""

import random

import pytest

from zbroker.errors import ErrorCode
from zbroker.groups.assignors import assign_range, assign_round_robin, assign_sticky
from zbroker.groups.group import Group, GroupError, GroupState, Member, MemberHeartbeat

SESSION = 1000
COUNTS = {"t": 6, "u": 3}


def parts(topic):
    return COUNTS.get(topic)


class Client:
    """A well-behaved member: releases what it is told to, reports what it owns."""

    def __init__(self, group, topics=("t",), instance_id=None, assignor=None):
        self.group, self.topics, self.instance_id, self.assignor = group, list(topics), instance_id, assignor
        self.member_id, self.epoch, self.owned = "", 0, set()

    def beat(self, now, release=True):
        req = MemberHeartbeat("g", self.epoch, self.member_id, instance_id=self.instance_id, topics=self.topics,
                              owned=sorted(self.owned), assignor=self.assignor, rebalance_timeout_ms=5000)
        resp, _, _ = self.group.heartbeat(req, now, SESSION, parts)
        self.member_id, self.epoch = resp.member_id, resp.member_epoch
        new = {tuple(tp) for tp in resp.assignment}
        if release:
            self.owned = new  # released what was taken away, took what was given
        else:
            self.owned |= new
        self.group._check()
        return new

    def leave(self, now, static=False):
        req = MemberHeartbeat("g", -2 if static else -1, self.member_id, owned=[])
        self.group.heartbeat(req, now, SESSION, parts)
        self.owned = set()


def settle(group, clients, now, rounds=6):
    for _ in range(rounds):
        for c in clients:
            c.beat(now)
    return now


def test_three_members_share_six_partitions_one_owner_each():
    g = Group("g")
    cs = [Client(g) for _ in range(3)]
    settle(g, cs, 0)
    owned = [c.owned for c in cs]
    assert all(len(o) == 2 for o in owned)
    assert set().union(*owned) == {("t", p) for p in range(6)}
    assert g.state is GroupState.STABLE


def test_handover_waits_for_the_previous_owner_to_release():
    g = Group("g")
    a = Client(g)
    settle(g, [a], 0)
    assert len(a.owned) == 6
    b = Client(g)
    assert b.beat(1) == set()  # everything is still a's
    assert len(a.beat(2, release=False)) == 3  # told to keep 3 ... but has not released the rest yet
    assert b.beat(3) == set()  # so b still gets nothing
    a.owned = {tp for tp in a.owned if tp in g.members[a.member_id].assigned}  # a releases
    a.beat(4)
    assert len(b.beat(5)) == 3  # now b gets them


def test_session_expiry_frees_partitions_and_a_clean_leave_is_immediate():
    g = Group("g")
    a, b = Client(g), Client(g)
    settle(g, [a, b], 0)
    b.leave(10)
    assert len(a.beat(11)) == 6
    c = Client(g)
    settle(g, [a, c], 20)
    assert len(c.owned) == 3
    assert g.expire(20 + SESSION - 1, parts) == []
    a.beat(20 + SESSION - 1)
    assert g.expire(20 + SESSION + 5, parts) == [c.member_id]
    assert len(a.beat(20 + SESSION + 6)) == 6


def test_static_member_keeps_its_partitions_across_a_quick_restart():
    g = Group("g")
    a, s = Client(g), Client(g, instance_id="web-1")
    settle(g, [a, s], 0)
    before, epoch_before = set(s.owned), g.epoch
    s.leave(5, static=True)
    assert len(a.beat(6)) == 3  # nothing moved to a
    back = Client(g, instance_id="web-1")
    assert back.beat(7) == before and g.epoch == epoch_before


def test_stale_epochs_are_fenced_and_commits_checked():
    g = Group("g")
    a, b = Client(g), Client(g)
    settle(g, [a, b], 0)
    with pytest.raises(GroupError) as info:
        g.heartbeat(MemberHeartbeat("g", a.epoch + 7, a.member_id, owned=[]), 1, SESSION, parts)
    assert info.value.code == ErrorCode.FENCED_MEMBER_EPOCH
    with pytest.raises(GroupError) as info:  # fenced = removed: its commits are refused too
        g.validate_commit(a.member_id, a.epoch, sorted(a.owned))
    assert info.value.code == ErrorCode.UNKNOWN_MEMBER_ID
    with pytest.raises(GroupError) as info:
        g.validate_commit(b.member_id, b.epoch + 7, sorted(b.owned))
    assert info.value.code == ErrorCode.STALE_MEMBER_EPOCH
    with pytest.raises(GroupError) as info:
        g.validate_commit("", -1, [("t", 0)])  # an outsider (admin reset), while the group has members
    assert info.value.code == ErrorCode.NON_EMPTY_GROUP
    with pytest.raises(GroupError):
        g.heartbeat(MemberHeartbeat("g", 3, "nobody", owned=[]), 1, SESSION, parts)


def fence(g, client, now):
    with pytest.raises(GroupError) as info:
        g.heartbeat(MemberHeartbeat("g", client.epoch + 5, client.member_id, topics=["t"], owned=sorted(client.owned)),
                    now, SESSION, parts)
    assert info.value.code == ErrorCode.FENCED_MEMBER_EPOCH
    assert info.value.removed == [client.member_id]
    client.epoch, client.owned = 0, set()  # what the client does: drop everything, join again


@pytest.mark.parametrize("keep_member_id", [True, False])
def test_a_fenced_member_is_gone_at_once_whatever_id_it_rejoins_with(keep_member_id):
    g = Group("g")
    a, b = Client(g), Client(g)
    settle(g, [a, b], 0)
    old_id, held = a.member_id, set(a.owned)
    fence(g, a, 10)
    assert old_id not in g.members  # no ghost holding a's partitions until its session expires
    if not keep_member_id:
        a.member_id = ""
    settle(g, [a, b], 20)  # well inside the old session (SESSION = 1000)
    assert set(g.members) == {a.member_id, b.member_id} and len(g.members) == 2
    assert (a.member_id == old_id) == keep_member_id
    assert a.owned and b.owned and a.owned | b.owned == {("t", p) for p in range(6)}
    assert held & (a.owned | b.owned) == held


def test_a_join_with_a_known_member_id_replaces_that_member_at_once():
    g = Group("g")
    a, b = Client(g), Client(g)
    settle(g, [a, b], 0)
    a.epoch, a.owned = 0, set()  # restarted, same member id, epoch 0
    a.beat(10)
    assert len(g.members) == 2 and g.members[a.member_id].revoking == set()
    settle(g, [a, b], 20)
    assert len(a.owned) == 3 and len(b.owned) == 3


@pytest.mark.parametrize("fn", [assign_range, assign_round_robin, assign_sticky])
def test_assignors_cover_everything_once_and_balance(fn):
    members = {f"m{i}": Member(f"m{i}", None, "", ["t", "u"], None, 1000) for i in range(4)}
    out = fn(members, parts)
    every = [tp for s in out.values() for tp in s]
    assert sorted(every) == sorted([("t", p) for p in range(6)] + [("u", p) for p in range(3)])
    sizes = sorted(len(s) for s in out.values())
    assert sizes[-1] - sizes[0] <= (2 if fn is assign_range else 1)


def test_sticky_moves_as_little_as_possible():
    members = {f"m{i}": Member(f"m{i}", None, "", ["t"], None, 1000) for i in range(3)}
    first = assign_sticky(members, parts)
    for m, tps in first.items():
        members[m].assigned = tps
    members["m3"] = Member("m3", None, "", ["t"], None, 1000)
    second = assign_sticky(members, parts)
    moved = sum(1 for m in first for tp in first[m] if tp not in second[m])
    assert moved == 1 and all(len(s) in (1, 2) for s in second.values())


@pytest.mark.parametrize("seed", range(6))
def test_random_joins_leaves_deaths_and_slow_releases_never_double_assign(seed):
    rng = random.Random(seed)
    g = Group("g")
    clients, now = [], 0
    for _ in range(400):
        now += rng.randint(1, 50)
        op = rng.random()
        if op < 0.15 or not clients:
            clients.append(Client(g, topics=rng.choice([("t",), ("t", "u")]), instance_id=rng.choice([None, f"i{rng.randrange(3)}"])))
        elif op < 0.25:
            c = clients.pop(rng.randrange(len(clients)))
            c.leave(now, static=bool(c.instance_id) and rng.random() < 0.5)
        elif op < 0.3:
            clients.pop(rng.randrange(len(clients)))  # dies silently
        for c in list(clients):
            try:
                c.beat(now, release=rng.random() < 0.7)
            except GroupError as e:
                if e.code in (ErrorCode.FENCED_MEMBER_EPOCH, ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.UNRELEASED_INSTANCE_ID):
                    clients.remove(c)  # would rejoin as a new member (on_lost)
                else:
                    raise
        g.expire(now, parts)
        g._check()
    # everyone behaves from now on: the group converges on its target
    for _ in range(15):
        now += 150  # past every session timeout: the silent and the away are gone
        for c in clients:
            c.beat(now)
        g.expire(now, parts)
    if clients:
        assert g.state is GroupState.STABLE
        owned = [c.owned for c in clients]
        assert sum(map(len, owned)) == len(set().union(*owned))
