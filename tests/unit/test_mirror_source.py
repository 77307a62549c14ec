"""The mirror's source thread (zbroker/net/mirror_source.py) with a fake reader: events reach the
loop through the bounded queue and the wake socket, a full queue (events or bytes) holds the
thread back, a failed ``add`` is tried again, a paused partition is read again from just after
what was queued, and ``close`` ends the thread (``join`` waits for it)."""

from __future__ import annotations

import select
import threading
import time

import pytest

from zbroker.bridge_config import MirrorConfig
from zbroker.net import mirror_source as S

pytestmark = pytest.mark.timeout(30)

CONFIG = MirrorConfig("m1", "zbroker://127.0.0.1:1", "zbroker", "127.0.0.1:1", r"plant\..*")


def eventually(predicate, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise TimeoutError(f"timed out waiting for {what}")


class FakeLoop:
    def __init__(self):
        self.watched = {}

    def watch(self, listener, sock):
        self.watched[sock] = listener

    def unwatch(self, sock):
        self.watched.pop(sock, None)


class FakeReader:
    def __init__(self, endless=False, fail_adds=0):
        self.endless, self.fail_adds = endless, fail_adds
        self.added, self.polls, self.closed = [], 0, False
        self.lock = threading.Lock()

    def __call__(self, config):  # the factory: the thread makes its reader
        return self

    def topics(self):
        return {"plant.x": (1, {}, {})}

    def add(self, positions):
        if self.fail_adds:
            self.fail_adds -= 1
            raise ConnectionError("source down")
        self.added.append(positions)

    def pause(self, tps):
        self.added.append(("paused", list(tps)))

    remove = pause

    def poll(self, stop):
        with self.lock:
            self.polls += 1
        if self.endless:
            return [("records", "plant.x", 0, [(self.polls, 0, None, b"v", None)], -1)]
        stop.wait(0.01)
        return []

    def close(self):
        self.closed = True


@pytest.fixture
def made():
    sources = []

    def make(reader):
        source = S.MirrorSource(CONFIG, FakeLoop(), reader=reader)
        sources.append(source)
        return source
    yield make
    for source in sources:
        source.close()


def readable(sock) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def test_an_event_wakes_the_loop_and_is_taken(made):
    reader = FakeReader()
    source = made(reader)
    (sock,) = source.sockets()
    assert source.loop.watched == {sock: source}
    woken = []
    source.on_wake = lambda: woken.append(source.take(10))
    source.refresh()
    eventually(lambda: readable(sock), what="the wake socket")
    source.on_readable(sock)
    assert woken == [[("topics", {"plant.x": (1, {}, {})})]]
    assert not readable(sock)
    source.add({("plant.x", 0): 5})
    eventually(lambda: reader.added == [{("plant.x", 0): 5}], what="the assignment")


def test_a_full_queue_holds_the_thread_back(made):
    reader = FakeReader(endless=True)
    source = made(reader)
    eventually(lambda: source.queued()[0] >= S.QUEUE_EVENTS, what="a full queue")
    polls = reader.polls
    time.sleep(0.3)  # the thread waits on the queue, not reading more
    assert reader.polls <= polls + 1
    taken = source.take(10)
    assert [e[3][0][0] for e in taken] == list(range(1, 11))  # in the order read
    eventually(lambda: reader.polls > polls + 5, what="reading again")


def test_a_failed_add_is_reported_and_tried_again(made):
    reader = FakeReader(fail_adds=1)
    source = made(reader)
    source.add({("plant.x", 0): -2})
    errors = eventually(lambda: [e for e in source.take(5) if e[0] == "error"], what="an error event")
    assert "source down" in errors[0][1] and "zbroker://127.0.0.1:1" in errors[0][1]
    eventually(lambda: reader.added == [{("plant.x", 0): -2}], what="the assignment after the failure")


def test_close_ends_the_thread_and_the_reader(made):
    reader = FakeReader(endless=True)
    source = made(reader)
    eventually(lambda: source.queued()[0] >= S.QUEUE_EVENTS, what="a full queue")
    source.close()
    eventually(lambda: not source._thread.is_alive(), what="the thread to end")
    assert reader.closed and source.loop.watched == {}


def test_refreshes_asked_faster_than_a_listing_takes_are_one_and_reading_goes_on(made):
    class Slow(FakeReader):
        listings = 0

        def topics(self):
            self.listings += 1
            time.sleep(0.05)  # a slow source
            return super().topics()

    reader = Slow()
    source = made(reader)
    for _ in range(40):
        source.refresh()
    eventually(lambda: reader.listings >= 1 and source._commands.empty(), what="the refreshes taken")
    polls = reader.polls
    eventually(lambda: reader.polls > polls, what="reading between listings")
    assert reader.listings <= 3


class Partitioned(FakeReader):
    """Reads each assigned partition from its position, ``batch`` records a poll, values of ``size`` bytes."""

    def __init__(self, batch=10, size=10):
        super().__init__()
        self.batch, self.size, self.positions = batch, size, {}

    def add(self, positions):
        with self.lock:
            super().add(positions)
            self.positions.update({tp: max(o, 0) for tp, o in positions.items()})

    def pause(self, tps):
        with self.lock:
            super().pause(tps)
            for tp in tps:
                self.positions.pop(tp, None)

    def poll(self, stop):
        with self.lock:
            self.polls += 1
            out = []
            for (t, p), first in sorted(self.positions.items()):
                out.append(("records", t, p, [(o, 0, None, b"x" * self.size, None) for o in range(first, first + self.batch)], -1))
                self.positions[(t, p)] = first + self.batch
        stop.wait(0.001)
        return out


def offsets(events, tp) -> list[int]:
    return [r[0] for e in events if e[0] == "records" and (e[1], e[2]) == tp for r in e[3]]


def test_a_paused_partition_is_read_again_from_just_after_what_was_queued(made):
    reader = Partitioned()
    source = made(reader)
    a, b = ("plant.x", 0), ("plant.x", 1)
    source.add({a: 0, b: 0})
    eventually(lambda: source.queued()[0] >= S.QUEUE_EVENTS, what="a full queue")
    source.pause([a])
    got = []
    eventually(lambda: (got.extend(source.take(100)), len(offsets(got, b)) > 2000)[1], what="b read on")
    eventually(lambda: ("paused", [a]) in reader.added, what="a paused in the reader")
    before = len(offsets(got, a))
    got.extend(source.take(1000))
    time.sleep(0.1)  # a stays paused: nothing of it is queued
    got.extend(source.take(1000))
    assert len(offsets(got, a)) <= before + 10 * S.QUEUE_EVENTS
    paused_at = len(offsets(got, a))
    source.resume([a])
    eventually(lambda: (got.extend(source.take(100)), len(offsets(got, a)) > paused_at + 500)[1], what="a read again")
    assert offsets(got, a) == list(range(len(offsets(got, a))))  # no gap, no repeat
    assert offsets(got, b) == list(range(len(offsets(got, b))))


def test_the_queue_holds_the_thread_back_by_bytes_too(made):
    reader = Partitioned(batch=1, size=1 << 20)
    source = made(reader)
    source.add({("plant.x", 0): 0})
    eventually(lambda: source.queued()[1] >= S.QUEUE_BYTES - (2 << 20), what="the byte bound reached")
    polls = reader.polls
    time.sleep(0.2)
    events, size = source.queued()
    assert events < S.QUEUE_EVENTS and size <= S.QUEUE_BYTES and reader.polls <= polls + 1


def test_join_waits_for_the_thread_after_close(made):
    reader = FakeReader(endless=True)
    source = made(reader)
    source.close()
    assert source.join(5.0) and reader.closed
