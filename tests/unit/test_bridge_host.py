"""BridgeHost: ticks what is due, starts mirrors on the controller's broker and stops them elsewhere."""

from __future__ import annotations

import pytest

from zbroker.bridge_config import MirrorConfig
from zbroker.frontends.bridge.host import IDLE_TICK_MS, BridgeHost

pytestmark = pytest.mark.timeout(30)


class Runner:
    def __init__(self, name, due=None):
        self.name, self.due, self.ticks, self.closed = name, due, [], False

    def tick(self, now_ms):
        self.ticks.append(now_ms)

    def next_deadline(self, now_ms):
        return self.due

    def status(self, now_ms):
        if self.name == "broken":
            raise RuntimeError("boom")
        return {"name": self.name, "kind": "pull", "state": "running"}

    def close(self, now_ms):
        self.closed = True


def mirror(name):
    return MirrorConfig(name, "zbroker://h:1", "zbroker", "h:1", ".*")


def test_runners_are_ticked_when_due_and_reported():
    host = BridgeHost(1, lambda: False)
    a, b, broken = Runner("a", due=100), Runner("b"), Runner("broken", due=10_000)
    for r in (a, b, broken):
        host.add(r)
    host.tick(50)
    assert a.ticks == [] and host.next_timer_ms(50) == 50
    host.tick(100)
    assert a.ticks == [100] and b.ticks == []
    assert [s["name"] for s in host.status(100)] == ["a", "b", "broken"]
    assert host.status(100)[2] == {"broker": 1, "name": "broken", "state": "failed"}  # a failing status is shown, not raised
    host.close(200)
    assert a.closed and b.closed and host.runners == {}


def test_mirrors_follow_controllership_and_a_failed_start_is_tried_again():
    leading = [False]
    started, fail = [], {"bad"}

    def start(config, now_ms):
        started.append(config.name)
        if config.name in fail:
            raise OSError("key file unreadable")
        return Runner(config.name)

    host = BridgeHost(2, lambda: leading[0], (mirror("good"), mirror("bad")), start)
    host.tick(0)
    assert started == []
    leading[0] = True
    host.tick(IDLE_TICK_MS)
    assert started == ["good", "bad"] and set(host.runners) == {"good"}
    fail.clear()
    host.tick(2 * IDLE_TICK_MS)
    assert started == ["good", "bad", "bad"] and set(host.runners) == {"good", "bad"}
    good = host.runners["good"]
    leading[0] = False
    host.tick(3 * IDLE_TICK_MS)
    assert host.runners == {} and good.closed


def test_a_failing_mirror_start_is_tried_again_with_back_off_and_logged_once_with_its_traceback(caplog):
    from zbroker.frontends.bridge import host as H

    tries = []

    def start(config, now_ms):
        tries.append(now_ms)
        raise OSError("key file unreadable")

    host = BridgeHost(1, lambda: True, (mirror("bad"),), start)
    with caplog.at_level("INFO", logger=H.__name__):
        for now in range(0, 200_001, IDLE_TICK_MS):
            host.tick(now)
    assert tries[:6] == [0, 1000, 3000, 7000, 15000, 31000]  # 1 s doubling ...
    assert {b - a for a, b in zip(tries[5:], tries[6:])} == {H.START_RETRY_MAX_MS}  # ... to 30 s
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "key file unreadable" in caplog.text
    lines = [r for r in caplog.records if "still cannot start" in r.getMessage()]
    assert 0 < len(lines) <= len(tries) - 1
    # it starts once the cause is gone: the pause is forgotten
    host._start_mirror = lambda config, now_ms: Runner(config.name)
    host.tick(300_000)
    assert set(host.runners) == {"bad"} and host._start_failures == {}


def test_settled_waits_for_the_closed_runners_that_say_they_are_busy():
    host = BridgeHost(1, lambda: False)
    busy, quiet = Runner("busy"), Runner("quiet")
    busy.settled = lambda: busy.closed and not getattr(busy, "answers_due", True)
    host.add(busy)
    host.add(quiet)
    host.close(0)
    assert not host.settled()  # busy's last commit has no answer yet; quiet has no settled(): nothing to wait for
    busy.answers_due = False
    assert host.settled()


def test_a_turn_asks_each_runner_for_its_deadline_once():
    host = BridgeHost(1, lambda: False)
    runner = Runner("a", due=100)
    asked = []
    deadline = runner.next_deadline
    runner.next_deadline = lambda now: asked.append(now) or deadline(now)
    host.add(runner)
    assert host.next_timer_ms(100) == 0  # the loop asks before its poll ...
    host.tick(100)  # ... and the tick uses that answer
    assert asked == [100] and runner.ticks == [100]
    host.tick(200)  # a tick without the loop's question (a test, the drain's first turn) asks itself
    assert asked == [100, 200] and runner.ticks == [100, 200]
