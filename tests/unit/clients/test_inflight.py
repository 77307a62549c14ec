"""The in-flight table with a fake clock: no sockets, no sleeps."""

from __future__ import annotations

import doctest
import random

import pytest

import clients.inflight
from clients.inflight import InFlightTable


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def test_doctests():
    assert doctest.testmod(clients.inflight).failed == 0


def test_pop_on_response_removes_once_and_is_not_cancelled():
    t = InFlightTable()
    e = t.add(1, "b1", "cb", deadline=5.0, kind="fetch")
    assert 1 in t and len(t) == 1
    assert t.pop(1) is e and not e.cancelled
    assert t.pop(1) is None and 1 not in t
    assert t.expire(10.0) == []  # its deadline left a stale heap item: skipped


def test_duplicate_cid_is_refused():
    t = InFlightTable()
    t.add(1, "b1", None, 5.0, "fetch")
    with pytest.raises(ValueError, match="already in flight"):
        t.add(1, "b1", None, 6.0, "fetch")


def test_expire_returns_due_entries_in_deadline_order():
    clock = FakeClock()
    t = InFlightTable()
    t.add(1, "b1", None, clock.now + 3, "produce")
    t.add(2, "b2", None, clock.now + 1, "fetch")
    t.add(3, "b1", None, clock.now + 2, "metadata")
    assert t.next_deadline() == clock.now + 1
    assert t.expire(clock.advance(0.5)) == []
    due = t.expire(clock.advance(1.6))  # 102.1: cids 2 and 3 are due
    assert [e.cid for e in due] == [2, 3] and all(e.cancelled for e in due)
    assert len(t) == 1 and t.next_deadline() == 103.0
    assert t.expire(103.0)[0].cid == 1  # a deadline equal to now has passed
    assert t.next_deadline() is None and len(t) == 0


def test_next_deadline_may_name_a_gone_entry_and_expire_skips_it():
    t = InFlightTable()
    t.add(1, "b1", None, 1.0, "fetch")
    t.add(2, "b1", None, 2.0, "fetch")
    t.pop(1)
    assert t.next_deadline() == 1.0  # stale: waking early is harmless
    assert t.expire(1.0) == [] and t.next_deadline() == 2.0


def test_fail_address_takes_only_sent_entries_of_that_address():
    t = InFlightTable()
    sent = t.add(1, "b1", None, 9.0, "produce")
    sent.sent = True
    queued = t.add(2, "b1", None, 9.0, "produce")  # still in the outbox: never left the process
    other = t.add(3, "b2", None, 9.0, "produce")
    other.sent = True
    assert t.fail_address("b1") == [sent] and sent.cancelled
    assert 2 in t and 3 in t and not queued.cancelled
    assert t.fail_address("b1") == []


def test_cancel_and_drain():
    t = InFlightTable()
    e1 = t.add(1, "b1", None, 9.0, "fetch")
    e2 = t.add(2, "b2", None, 8.0, "fetch")
    assert t.cancel(1) is e1 and e1.cancelled and t.cancel(1) is None
    assert t.drain() == [e2] and e2.cancelled
    assert len(t) == 0 and t.next_deadline() is None and t.expire(100.0) == []


def test_stale_heap_items_are_swept():
    t = InFlightTable()
    for cid in range(1, 3001):
        t.add(cid, "b1", None, 1000.0 + cid, "fetch")
        if cid % 10:
            t.pop(cid)  # answered: leaves a stale heap item
    t.expire(0.0)
    assert len(t._heap) == len(t) == 300
    assert [e.cid for e in t.expire(1000.0 + 25)] == [10, 20]


def test_seeded_random_operations_match_a_model():
    rng = random.Random(7)
    clock = FakeClock(0.0)
    t = InFlightTable()
    model: dict[int, tuple[str, float, bool]] = {}  # cid -> (address, deadline, sent)
    cid = 0
    for _ in range(5000):
        op = rng.random()
        if op < 0.4:
            cid += 1
            address = rng.choice(["b1", "b2", "b3"])
            deadline = clock.now + rng.uniform(0.0, 5.0)
            e = t.add(cid, address, None, deadline, "fetch")
            e.sent = rng.random() < 0.7
            model[cid] = (address, deadline, e.sent)
        elif op < 0.6 and model:
            c = rng.choice(sorted(model))
            assert t.pop(c).cid == c
            del model[c]
        elif op < 0.65:
            address = rng.choice(["b1", "b2", "b3"])
            gone = {e.cid for e in t.fail_address(address)}
            assert gone == {c for c, (a, _d, s) in model.items() if a == address and s}
            for c in gone:
                del model[c]
        else:
            now = clock.advance(rng.uniform(0.0, 0.3))
            due = [e.cid for e in t.expire(now)]
            assert sorted(due) == sorted(c for c, (_a, d, _s) in model.items() if d <= now)
            for c in due:
                del model[c]
        assert len(t) == len(model)
        nd = t.next_deadline()
        if model:
            assert nd is not None and nd <= min(d for _a, d, _s in model.values())
