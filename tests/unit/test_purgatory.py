"""The purgatory, stepped with time passed in."""

from zbroker.purgatory import DelayedOperation, Purgatory


class Op:
    def __init__(self, ready=False):
        self.ready = ready
        self.completed = []

    def make(self, deadline, keys):
        def try_complete(now_ms):
            if self.ready:
                self.completed.append("ready")
            return self.ready

        return DelayedOperation(deadline, keys, try_complete, lambda now_ms: self.completed.append("expired"))


def test_an_operation_that_can_complete_now_is_not_parked():
    p, op = Purgatory(), Op(ready=True)
    assert p.park(op.make(100, ["a"]), 0)
    assert op.completed == ["ready"] and len(p) == 0 and p.next_deadline() is None


def test_a_change_to_a_watched_key_completes_it_once():
    p, op = Purgatory(), Op()
    assert not p.park(op.make(100, ["a", "b"]), 0)
    assert p.check("a", 0) == 0
    op.ready = True
    assert p.check("b", 0) == 1
    assert p.check("a", 0) == 0  # already done; not completed twice
    p.expire(1000)
    assert op.completed == ["ready"]


def test_deadlines_expire_in_order_and_bound_the_sleep():
    p, first, second = Purgatory(), Op(), Op()
    p.park(second.make(200, ["a"]), 0)
    p.park(first.make(100, ["a"]), 0)
    assert p.next_deadline() == 100
    assert p.expire(99) == 0
    assert p.expire(100) == 1 and first.completed == ["expired"] and second.completed == []
    assert p.next_deadline() == 200
    assert p.expire(500) == 1 and second.completed == ["expired"]
    assert p.next_deadline() is None


def test_cancel_all_answers_everything():
    p, op = Purgatory(), Op()
    p.park(op.make(100, ["a"]), 0)
    p.cancel_all(0)
    assert op.completed == ["expired"] and len(p) == 0


def test_an_operation_done_through_one_key_leaves_every_key():
    p, op = Purgatory(), Op()
    p.park(op.make(100, ["busy", "idle"]), 0)
    op.ready = True
    assert p.check("busy", 0) == 1
    assert p._watchers == {}  # nothing left watching the idle key


def test_an_operation_watching_a_key_twice_is_retried_once_per_change():
    """A fetch naming one partition many times once cost each append parked x copies^2 retries."""
    p, tries = Purgatory(), []
    op = DelayedOperation(100, ["a"] * 50, lambda now: tries.append(now) and False, lambda now: None)
    assert not p.park(op, 0)
    tries.clear()
    p.check("a", 1)
    assert tries == [1]
    assert op.keys == ("a",)


def test_call_at_is_a_timer_run_once_its_time_has_passed_or_at_shutdown():
    p = Purgatory()
    ran = []
    p.call_at(150, lambda now: ran.append(("a", now)), 100)
    p.call_at(120, lambda now: ran.append(("b", now)), 100)
    assert p.next_deadline() == 120 and p.check("anything", 130) == 0
    p.expire(149)
    assert ran == [("b", 149)]
    p.call_at(500, lambda now: ran.append(("c", now)), 149)
    p.expire(150)
    p.cancel_all(160)
    assert ran == [("b", 149), ("a", 150), ("c", 160)]


def test_a_cancelled_operation_lets_go_of_its_callbacks_and_cancelled_ones_are_purged():
    purgatory = Purgatory()
    held = []
    ops = []
    for i in range(200):
        op = DelayedOperation(1_000, [("t", 0)], lambda now: False, lambda now: held.append(now))
        purgatory.park(op, 0)
        ops.append(op)
    for op in ops[:150]:
        purgatory.cancel(op)
    assert all(op._try is None and op._expire is None for op in ops[:150])
    assert len(purgatory._deadlines) < 200  # purged once the cancelled were half of all
    assert len(purgatory) == 50 and purgatory.check(("t", 0), 1) == 0
    assert purgatory.expire(1_000) == 50 and held == [1_000] * 50  # the cancelled never answer
