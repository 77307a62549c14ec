"""Raft election and metadata-log replication, stepped with a fake clock over a
simulated network that loses, duplicates, delays, reorders and partitions messages."""

from __future__ import annotations

import random

import pytest

from zbroker.control.raft import LEADER_CHANGE, ElectionState, NotLeader, RaftNode, Role


class MemoryLog:
    """A RaftLog kept in a list of (epoch, record) from ``start``, with snapshots: a snapshot
    is ``(offset, epoch, every entry below offset)``."""

    def __init__(self):
        self.start = 0
        self.entries: list[tuple[int, bytes]] = []
        self.snapshot: tuple[int, int, tuple] | None = None

    def end_offset(self):
        return self.start + len(self.entries)

    def last_epoch(self):
        if self.entries:
            return self.entries[-1][0]
        if self.snapshot is not None and self.snapshot[0] == self.start:
            return self.snapshot[1]
        return 0

    def entry(self, offset):
        return self.snapshot[2][offset] if offset < self.start else self.entries[offset - self.start]

    def end_offset_for_epoch(self, epoch):
        best = (-1, -1)
        for i, (e, _) in enumerate(self.entries):
            if e <= epoch:
                best = (e, self.start + i + 1)
        if best[0] == -1 or (self.start > 0 and epoch < self.entries[0][0]):
            return (-1, -1)  # with a dropped prefix, an epoch older than what is left is unknown
        return best

    def append_as_leader(self, records, epoch):
        base = self.end_offset()
        self.entries.extend((epoch, r) for r in records)
        return base

    def read(self, offset, max_bytes):
        i = offset - self.start
        assert i >= 0, (offset, self.start)
        return [(offset + k, e, r) for k, (e, r) in enumerate(self.entries[i : i + 50])]

    def append_chunk(self, chunk):
        for offset, epoch, record in chunk:
            assert offset == self.end_offset(), (offset, self.end_offset())
            self.entries.append((epoch, record))

    def truncate_to(self, offset):
        assert offset >= self.start, (offset, self.start)
        del self.entries[offset - self.start :]

    def start_offset(self):
        return self.start

    def snapshot_id(self):
        return None if self.snapshot is None else self.snapshot[:2]

    def snapshot_size(self):
        return len(self.snapshot[2])

    def read_snapshot(self, position, max_bytes):
        return list(self.snapshot[2][position : position + 7])

    def install_snapshot(self, snapshot_id, chunks):
        data = tuple(x for c in chunks for x in c)
        assert len(data) == snapshot_id[0]
        self.snapshot = (snapshot_id[0], snapshot_id[1], data)
        self.start, self.entries = snapshot_id[0], []

    # the owner's side (ControlPlane): snapshot what is committed, drop a prefix below it
    def take_snapshot(self, offset):
        data = tuple(self.entry(o) for o in range(offset))
        self.snapshot = (offset, data[-1][0], data)

    def drop_prefix(self, offset):
        assert offset <= self.snapshot[0]
        if offset > self.start:
            del self.entries[: offset - self.start]
            self.start = offset


class Cluster:
    def __init__(self, n=3, seed=0, loss=0.0, dup=0.0, max_delay=5, timeout=100, snapshot_every=0):
        self.rng = random.Random(seed)
        self.ids = list(range(1, n + 1))
        self.now = 0
        self.loss, self.dup, self.max_delay = loss, dup, max_delay
        self.timeout = timeout
        self.snapshot_every = snapshot_every  # ms between snapshots of a random node (0: never)
        self.gossip_ms = max(1, timeout // 4)
        self.logs = {i: MemoryLog() for i in self.ids}
        self.disk = {i: ElectionState() for i in self.ids}
        self.nodes: dict[int, RaftNode | None] = {}
        self.in_flight: list[tuple[int, int, int, dict, object]] = []  # (deliver_at, seq, dst, msg, payload)
        self.seq = 0
        self.cut: set[frozenset] = set()
        self.leaders_by_epoch: dict[int, set[int]] = {}
        self.committed: list[tuple[int, bytes]] = []  # the one committed sequence every node must agree with
        for i in self.ids:
            self.start(i)

    def start(self, i):
        def persist(state, i=i):
            self.disk[i] = state

        self.nodes[i] = RaftNode(i, self.ids, self.logs[i], self.disk[i], persist, self.now, election_timeout_ms=self.timeout,
                                 fetch_max_wait_ms=self.timeout // 2, rng=random.Random(self.rng.random()))
        snapshot = self.logs[i].snapshot_id()
        if snapshot is not None:  # as ControlPlane does: what a snapshot holds is committed
            self.nodes[i].high_watermark = snapshot[0]

    def crash(self, i):
        self.nodes[i] = None

    def partition(self, *groups):
        self.cut = {frozenset((a, b)) for g in groups for h in groups if g is not h for a in g for b in h}

    def heal(self):
        self.cut = set()

    def _route(self, src):
        node = self.nodes[src]
        out, node.outbox = node.outbox, []
        for dst, msg, payload in out:
            if frozenset((src, dst)) in self.cut or self.rng.random() < self.loss:
                continue
            copies = 2 if self.rng.random() < self.dup else 1
            for _ in range(copies):
                self.seq += 1
                self.in_flight.append((self.now + self.rng.randint(1, self.max_delay), self.seq, dst, msg, payload))

    def step(self, ms=1):
        for _ in range(ms):
            self.now += 1
            due = sorted(m for m in self.in_flight if m[0] <= self.now)
            self.in_flight = [m for m in self.in_flight if m[0] > self.now]
            for _, _, dst, msg, payload in due:
                if self.nodes.get(dst) is not None and frozenset((msg["from"], dst)) not in self.cut:
                    self.nodes[dst].receive(msg, payload, self.now)
            if self.now % self.gossip_ms == 0:
                self._gossip()
            if self.snapshot_every and self.now % self.snapshot_every == 0:
                self._snapshot(self.rng.choice(self.ids))
            for i, node in self.nodes.items():
                if node is not None:
                    node.tick(self.now)
                    self._route(i)
            self.check()

    def _snapshot(self, i):
        """Node i's owner snapshots its committed log and drops a prefix below the snapshot
        (some of it: a real log drops whole segments)."""
        node, lg = self.nodes[i], self.logs[i]
        if node is None or node.high_watermark == 0:
            return
        current = lg.snapshot_id()
        if current is None or node.high_watermark > current[0]:
            lg.take_snapshot(node.high_watermark)
        lg.drop_prefix(self.rng.randint(lg.start, lg.snapshot[0]))

    def _gossip(self):
        """The brokers' heartbeats: each tells its epoch, and names itself if it leads
        (ControlPlane.on_heartbeat); lossy like everything else."""
        for src, a in self.nodes.items():
            for dst, b in self.nodes.items():
                if a is None or b is None or src == dst or frozenset((src, dst)) in self.cut or self.rng.random() < self.loss:
                    continue
                b.observe(a.epoch, src if a.role is Role.LEADER else None, self.now)
                self._route(dst)

    def check(self):
        for i, node in self.nodes.items():
            if node is None:
                continue
            if node.role is Role.LEADER:
                self.leaders_by_epoch.setdefault(node.epoch, set()).add(i)
                assert len(self.leaders_by_epoch[node.epoch]) == 1, f"two leaders in epoch {node.epoch}"
            lg = self.logs[i]
            assert node.high_watermark <= lg.end_offset()
            # committed records are never changed or lost, on any node (below its log start:
            # in its snapshot)
            for off in range(min(node.high_watermark, len(self.committed))):
                assert lg.entry(off) == self.committed[off], f"node {i} disagrees at committed offset {off}"
            if node.high_watermark > len(self.committed):
                self.committed.extend(lg.entry(o) for o in range(len(self.committed), node.high_watermark))

    def leader(self):
        leaders = [n for n in self.nodes.values() if n is not None and n.role is Role.LEADER]
        return max(leaders, key=lambda n: n.epoch) if leaders else None

    def stable(self):
        """One leader, followed by every node in its epoch."""
        leader = self.leader()
        return leader is not None and all(n.leader == leader.id and n.epoch == leader.epoch for n in self.nodes.values())

    def run_until(self, pred, limit=20_000):
        for _ in range(limit):
            if pred():
                return
            self.step()
        raise AssertionError(f"condition not reached within {limit} ms (now={self.now})")


def test_one_leader_elected_lowest_id_preferred():
    c = Cluster(seed=1)
    c.run_until(lambda: c.leader() is not None)
    assert c.leader().id == 1 and c.leader().epoch == 1
    assert c.now < 3 * c.timeout
    c.run_until(lambda: all(n.leader == 1 for n in c.nodes.values()))


def test_proposals_commit_on_a_quorum_and_reach_everyone():
    c = Cluster(seed=2)
    c.run_until(lambda: c.leader() is not None)
    _, end = c.leader().propose([b"a", b"b"])
    c.run_until(lambda: all(n.high_watermark >= end for n in c.nodes.values()))
    assert [r for _, r in c.logs[3].entries] == [LEADER_CHANGE, b"a", b"b"]


def test_followers_refuse_proposals():
    c = Cluster(seed=3)
    c.run_until(lambda: c.leader() is not None and all(n.leader == c.leader().id for n in c.nodes.values()))
    follower = next(n for n in c.nodes.values() if n.role is not Role.LEADER)
    with pytest.raises(NotLeader) as info:
        follower.propose([b"x"])
    assert info.value.leader == c.leader().id


def test_leader_crash_elects_a_new_one_with_a_higher_epoch_keeping_committed_records():
    c = Cluster(seed=4)
    c.run_until(lambda: c.leader() is not None)
    old = c.leader()
    _, end = old.propose([b"x"])
    c.run_until(lambda: old.high_watermark >= end)
    c.crash(old.id)
    c.run_until(lambda: c.leader() is not None and c.leader().id != old.id)
    new = c.leader()
    assert new.epoch > old.epoch
    assert (old.epoch, b"x") in c.logs[new.id].entries
    c.start(old.id)  # comes back as a follower
    _, end = new.propose([b"y"])
    c.run_until(lambda: all(n.high_watermark >= end for n in c.nodes.values()))


def test_minority_leader_steps_down_and_its_uncommitted_writes_are_truncated():
    c = Cluster(seed=5)
    c.run_until(lambda: c.leader() is not None)
    old = c.leader()
    others = [i for i in c.ids if i != old.id]
    c.partition({old.id}, set(others))
    old.propose([b"lost"])  # can never commit: no quorum
    c.run_until(lambda: old.role is not Role.LEADER)  # check-quorum: steps down
    c.run_until(lambda: c.leader() is not None and c.leader().id in others)
    new = c.leader()
    _, end = new.propose([b"kept"])
    c.heal()
    c.run_until(lambda: all(n.high_watermark >= end for n in c.nodes.values()))
    assert all((e, b"lost") not in c.logs[old.id].entries[: old.high_watermark] for e in range(10))
    assert c.logs[old.id].entries[: end] == c.logs[new.id].entries[: end]


def test_returning_partitioned_voter_does_not_depose_a_healthy_leader():
    c = Cluster(seed=6)
    c.run_until(lambda: c.leader() is not None)
    leader = c.leader()
    loner = next(i for i in c.ids if i != leader.id)
    c.partition({loner}, {i for i in c.ids if i != loner})
    c.step(20 * c.timeout)  # the loner asks for pre-votes again and again, in vain
    assert c.nodes[loner].epoch == leader.epoch  # pre-vote: no epoch inflation
    c.heal()
    c.run_until(lambda: c.nodes[loner].leader == leader.id)
    assert c.leader() is leader and leader.epoch == 1  # not deposed


@pytest.mark.parametrize("snapshots", [False, True], ids=["log", "snapshots"])
@pytest.mark.parametrize("seed", range(int(__import__("os").environ.get("RAFT_SEEDS", "24"))))
def test_random_faults_never_break_safety_and_heal_to_agreement(seed, snapshots):
    c = Cluster(n=5 if seed % 2 else 3, seed=seed, loss=0.1, dup=0.1, max_delay=30, snapshot_every=37 if snapshots else 0)
    rng = random.Random(seed)
    proposed = 0
    for round_ in range(30):
        action = rng.random()
        if action < 0.2:
            victim = rng.choice(c.ids)
            c.crash(victim)
            c.step(rng.randint(50, 400))
            c.start(victim)
        elif action < 0.4:
            side = set(rng.sample(c.ids, rng.randint(1, len(c.ids) // 2)))
            c.partition(side, set(c.ids) - side)
            c.step(rng.randint(100, 600))
            c.heal()
        leader = c.leader()
        if leader is not None:
            leader.propose([b"r%d" % proposed])
            proposed += 1
        c.step(rng.randint(10, 200))
    # heal everything: one leader, everyone converges on its committed log
    c.loss = c.dup = 0.0
    c.max_delay = 5  # a healed network: ordinary latency
    c.heal()
    c.run_until(c.stable)
    _, end = c.leader().propose([b"final"])
    c.run_until(lambda: all(n.high_watermark >= end for n in c.nodes.values()), limit=50_000)
    logs = [[c.logs[i].entry(o) for o in range(end)] for i in c.ids]
    assert all(log == logs[0] for log in logs)


def test_a_voter_behind_the_leaders_log_start_catches_up_from_its_snapshot():
    c = Cluster(seed=8)
    c.run_until(c.stable)
    leader = c.leader()
    away = next(i for i in c.ids if i != leader.id)
    c.crash(away)
    for k in range(40):
        _, end = leader.propose([b"r%d" % k])
        c.step(5)
    c.run_until(lambda: leader.high_watermark >= end)
    lg = c.logs[leader.id]
    lg.take_snapshot(leader.high_watermark)
    lg.drop_prefix(leader.high_watermark)  # the leader keeps nothing the returning voter lacks
    assert lg.start_offset() > c.logs[away].end_offset()
    c.start(away)
    _, end = leader.propose([b"after"])
    c.run_until(lambda: c.nodes[away].high_watermark >= end)
    assert c.logs[away].snapshot_id() == lg.snapshot_id()
    assert [c.logs[away].entry(o) for o in range(end)] == [lg.entry(o) for o in range(end)]


def committed_everywhere(c, n):
    """A stable cluster whose leader committed ``n`` records on every node; returns the leader."""
    c.run_until(c.stable)
    leader = c.leader()
    for k in range(n):
        _, end = leader.propose([b"r%d" % k])
    c.run_until(lambda: all(node.high_watermark >= end for node in c.nodes.values()))
    return leader


def test_a_voter_that_lost_its_disk_is_rebuilt_from_a_snapshot():
    c = Cluster(seed=9)
    leader = committed_everywhere(c, 30)
    for i in c.ids:  # everyone snapshots and drops its log below the snapshot
        c.logs[i].take_snapshot(c.nodes[i].high_watermark)
        c.logs[i].drop_prefix(c.nodes[i].high_watermark)
    lost = next(i for i in c.ids if i != leader.id)
    c.crash(lost)
    c.logs[lost] = MemoryLog()
    c.disk[lost] = ElectionState()
    c.start(lost)
    _, end = leader.propose([b"after"])
    c.run_until(lambda: c.nodes[lost].high_watermark >= end)
    assert [c.logs[lost].entry(o) for o in range(end)] == [c.logs[leader.id].entry(o) for o in range(end)]


def test_a_deposed_leader_with_a_snapshot_truncates_only_its_uncommitted_tail():
    c = Cluster(seed=10)
    old = committed_everywhere(c, 10)
    snapshot_end = old.high_watermark
    c.logs[old.id].take_snapshot(snapshot_end)
    c.logs[old.id].drop_prefix(snapshot_end)
    c.partition({old.id}, set(c.ids) - {old.id})
    old.propose([b"lost%d" % k for k in range(5)])  # never committed
    c.run_until(lambda: c.leader() is not None and c.leader().id != old.id)
    new = c.leader()
    _, end = new.propose([b"kept"])
    c.heal()
    c.run_until(lambda: all(n.high_watermark >= end for n in c.nodes.values()))
    assert all(c.logs[i].entry(o) == c.logs[new.id].entry(o) for i in c.ids for o in range(end))
    assert c.logs[old.id].start_offset() == snapshot_end  # its snapshot stayed; only the tail went
