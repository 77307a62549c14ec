"""The classic group state machine alone (Kafka's JoinGroup/SyncGroup/Heartbeat/LeaveGroup)."""

import random

import pytest

from zbroker.groups.classic import (TRANSITIONS, ClassicGroup, ClassicHeartbeat, ClassicState, IllegalTransition,
                                    JoinGroup, SyncGroup)

RANGE = (("range", b"sub-range"),)


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
