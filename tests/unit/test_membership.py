"""Failure detection under lost, duplicated, late and reordered heartbeats (fake clock)."""

import random

from zbroker.control.membership import Membership, PeerState

HB, SESSION = 100, 1000


def view(now=0):
    return Membership(1, [1, 2, 3], now, heartbeat_ms=HB, session_timeout_ms=SESSION)


def test_grace_then_dead_when_never_heard():
    m = view()
    assert m.state(2, 0) is PeerState.SUSPECT and m.alive(2, SESSION - 1)
    assert m.state(2, SESSION) is PeerState.DEAD
    assert m.state(1, 10**9) is PeerState.ALIVE  # ourselves


def test_alive_suspect_dead_as_beats_stop():
    m = view()
    assert m.observe(2, 1, 0, now_ms=50)
    assert m.state(2, 50 + 3 * HB - 1) is PeerState.ALIVE
    assert m.state(2, 50 + 3 * HB) is PeerState.SUSPECT
    assert m.state(2, 50 + SESSION) is PeerState.DEAD
    assert m.live_brokers(50 + SESSION) == {1}


def test_duplicated_or_reordered_beats_never_extend_liveness():
    m = view()
    m.observe(2, 1, 5, now_ms=100)
    assert not m.observe(2, 1, 5, now_ms=900)  # duplicate
    assert not m.observe(2, 1, 3, now_ms=900)  # late, reordered
    assert m.state(2, 100 + SESSION) is PeerState.DEAD


def test_restart_with_higher_incarnation_resets_sequence():
    m = view()
    m.observe(2, 1, 500, now_ms=0)
    assert m.observe(2, 2, 0, now_ms=10)  # new process, sequence starts over
    assert not m.observe(2, 1, 501, now_ms=20)  # the old process's late beat is ignored


def test_gaps_are_counted():
    m = view()
    m.observe(2, 1, 0, 0)
    m.observe(2, 1, 4, 10)
    assert m.peers[2].gaps == 3


def test_random_loss_duplication_and_reordering_keep_the_rule():
    """Under any delivery pattern, a peer is dead iff its newest sent beat we received is older than the session."""
    rng = random.Random(7)
    m = view()
    sent = [(seq, seq * HB) for seq in range(200)]  # (seq, send time)
    deliveries = []
    for seq, t in sent:
        if rng.random() < 0.3:
            continue  # lost
        for _ in range(rng.choice([1, 1, 2])):  # sometimes duplicated
            deliveries.append((t + rng.randint(0, 5 * HB), seq))  # delayed, so reordered
    deliveries.sort()
    newest_seq, newest_at = -1, None
    for at, seq in deliveries:
        m.observe(2, 1, seq, at)
        if seq > newest_seq:
            newest_seq, newest_at = seq, at
        assert m.peers[2].last_heard_ms == newest_at
        assert m.alive(2, at) == (at - newest_at < SESSION)
