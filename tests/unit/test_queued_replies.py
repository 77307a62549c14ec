"""The per-connection count of reply bytes ZeroMQ still holds, with fake trackers (no sockets)."""

from zbroker.net.zmq_listeners import QueuedReplies


class Tracker:
    def __init__(self, done=False):
        self.done = done


def test_bytes_are_held_until_zeromq_releases_the_replies_in_order():
    q, first, second = QueuedReplies(), Tracker(), Tracker()
    q.add(b"a", first, 100)
    q.add(b"a", second, 50)
    q.add(b"b", Tracker(), 7)
    assert (q.held(b"a"), q.held(b"b")) == (150, 7)
    first.done = True
    assert q.held(b"a") == 50
    second.done = True
    assert q.held(b"a") == 0 and q.peers() == 1


def test_a_reply_already_released_is_not_counted():
    q = QueuedReplies()
    q.add(b"a", Tracker(done=True), 100)
    assert q.held(b"a") == 0 and q.peers() == 0


def test_peers_never_heard_from_again_are_swept():
    q, trackers = QueuedReplies(), []
    for i in range(1000):
        trackers.append(Tracker())
        q.add(b"peer-%d" % i, trackers[-1], 10)
        trackers[-1].done = True  # written and gone: this peer never sends again
    assert q.peers() <= 128
