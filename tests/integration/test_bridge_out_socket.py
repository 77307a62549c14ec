"""An egress bridge's socket (zbroker.net.bridge_out) with real ZeroMQ peers on loopback: the
XPUB reports every subscription (also a second one to the same prefix), refuses instead of
dropping for a subscriber at its high-water mark (XPUB_NODROP), a PUSH with no peer refuses,
its handles say when ZeroMQ released a message and it reports a peer that disconnects, and a
connecting socket queues nothing for a peer that is not there (IMMEDIATE)."""

from __future__ import annotations

import socket
import time

import pytest
import zmq

from support import free_port, wait_until
from zbroker.net.bridge_out import EgressSocket

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def egress(ctx):
    """``egress(kind, endpoint, bind, hwm, on_subscribe=None)``: an EgressSocket, closed at the end."""
    made: list[EgressSocket] = []

    def make(kind: str, endpoint: str, bind: bool, hwm: int, on_subscribe=None) -> EgressSocket:
        made.append(EgressSocket(ctx, "b", kind, endpoint, bind, hwm, on_subscribe))
        return made[-1]
    yield make
    for listener in made:
        listener.close()


def peer(ctx, kind: int, endpoint: str, bind: bool = False, rcvhwm: int = 1000, subscribe: bytes | None = None):
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    if subscribe is not None:
        sock.setsockopt(zmq.SUBSCRIBE, subscribe)
    sock.bind(endpoint) if bind else sock.connect(endpoint)
    return sock


def drain(listener: EgressSocket) -> None:
    if listener.sock.poll(10):
        listener.on_readable(listener.sock)


def send_until(listener: EgressSocket, frames: list[bytes], timeout: float = 5):
    """Send once the socket takes it (a peer connects asynchronously)."""
    return wait_until(lambda: listener.send(frames), timeout=timeout, interval=0.01, what="the socket to take a message")


def test_xpub_reports_every_subscription_even_to_a_prefix_already_subscribed(ctx, egress):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    seen: list[bytes] = []
    listener = egress("pub", endpoint, True, 100, seen.append)
    subs = [peer(ctx, zmq.SUB, endpoint, subscribe=b"sens") for _ in range(2)]
    wait_until(lambda: drain(listener) or len(seen) == 2, timeout=5, what="two subscriptions")
    assert seen == [b"sens", b"sens"]
    handle = listener.send([b"sensors", b"", b"v"])
    assert handle is not None and handle.done
    assert [s.recv_multipart() for s in subs] == [[b"sensors", b"", b"v"]] * 2


def test_xpub_refuses_a_send_a_full_subscriber_cannot_take_instead_of_dropping_it(ctx, egress):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    seen: list[bytes] = []
    listener = egress("pub", endpoint, True, 10, seen.append)
    sub = peer(ctx, zmq.SUB, endpoint, rcvhwm=10, subscribe=b"t")
    wait_until(lambda: drain(listener) or seen, timeout=5, what="the subscription")
    sent = 0
    deadline = time.monotonic() + 10
    while listener.send([b"t", b"", b"%d" % sent]) is not None:  # the subscriber does not read
        sent += 1
        assert time.monotonic() < deadline, "the XPUB never refused"
    assert listener.send([b"other", b"", b"x"]) is not None  # nobody's queue is full for this one
    got = []
    while len(got) < sent:
        assert sub.poll(5000)
        got.append(sub.recv_multipart()[2])
    assert got == [b"%d" % i for i in range(sent)]  # every message it took reached the subscriber


def test_with_nodrop_given_up_a_subscriber_that_never_reads_loses_messages_and_the_other_gets_them(ctx, egress):
    """What the bridge does after a long hold: NODROP off, ZeroMQ drops for the full subscriber only."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    seen: list[bytes] = []
    listener = egress("pub", endpoint, True, 10, seen.append)
    stuck = peer(ctx, zmq.SUB, endpoint, rcvhwm=10, subscribe=b"t")  # never read until the end
    reader = peer(ctx, zmq.SUB, endpoint, rcvhwm=10, subscribe=b"t")
    wait_until(lambda: drain(listener) or len(seen) >= 2, timeout=5, what="both subscriptions")
    value = b"v" * 65536
    got: list[bytes] = []

    def read() -> None:
        while reader.poll(0):
            got.append(reader.recv_multipart()[2][:8])
    sent, refused_since = 0, None
    deadline = time.monotonic() + 10
    while refused_since is None or time.monotonic() < refused_since + 0.5:  # until the stuck one is full for good
        assert time.monotonic() < deadline, "the XPUB never refused"
        listener.sock.getsockopt(zmq.EVENTS)  # as the broker's loop does: take in what the peers read
        read()
        if listener.send([b"t", b"", b"%08d" % sent + value]) is not None:
            sent, refused_since = sent + 1, None
        elif refused_since is None:
            refused_since = time.monotonic()
    wait_until(lambda: read() or len(got) >= sent, timeout=10, what="the reader to get what was sent")
    listener.set_nodrop(False)
    more = 500
    for i in range(sent, sent + more):  # the stuck one's queue is full: only its copies are dropped
        assert listener.send([b"t", b"", b"%08d" % i + value]) is not None
        # a reader that keeps up (without NODROP, a queue at hwm loses messages, whoever's it is)
        wait_until(lambda: read() or len(got) > i - 5, timeout=10, interval=0.001, what="the reader to keep up")
    wait_until(lambda: read() or len(got) >= sent + more, timeout=10, what="the reader to get every message")
    assert got == [b"%08d" % i for i in range(sent + more)]
    listener.set_nodrop(True)
    stuck_got = 0
    while stuck.poll(200):
        stuck.recv_multipart()
        stuck_got += 1
    assert stuck_got < sent + more  # it missed what it could not take


def test_push_refuses_without_a_peer_and_its_handles_follow_zeromq(ctx, egress):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    listener = egress("push", endpoint, True, 100)
    assert listener.sockets() == [listener.monitor]
    assert listener.send([b"t", b"", b"nobody"]) is None
    pull = peer(ctx, zmq.PULL, endpoint)
    handles = [send_until(listener, [b"t", b"", b"first"])]
    handles += [listener.send([b"t", b"k", b"%d" % i]) for i in range(50)]
    assert all(h is not None for h in handles)
    got = [pull.recv_multipart() for _ in range(51)]
    assert got[0] == [b"t", b"", b"first"] and got[-1] == [b"t", b"k", b"49"]
    # ZeroMQ holds its latest message until the next one comes: all but the last are released
    wait_until(lambda: all(h.done for h in handles[:-1]), timeout=5, what="the messages to be released")


def test_push_reports_a_pull_peer_that_disconnects(ctx, egress):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    listener = egress("push", endpoint, True, 100)
    gone: list[int] = []
    listener.on_peer_gone = lambda: gone.append(1)

    def reported():
        if listener.monitor.poll(10):
            listener.on_readable(listener.monitor)
        return gone

    for _ in range(3):  # connections that never become peers are not reported
        socket.create_connection(("127.0.0.1", int(endpoint.rsplit(":", 1)[1]))).close()
    pull = peer(ctx, zmq.PULL, endpoint)
    send_until(listener, [b"t", b"", b"x"])
    pull.close(linger=0)
    wait_until(reported, timeout=10, what="the disconnection to be reported")
    wait_until(lambda: not listener.monitor.poll(200) and reported(), timeout=5, what="the monitor to be drained")
    assert gone == [1]


def test_a_connecting_push_queues_nothing_for_an_absent_peer(ctx, egress):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    listener = egress("push", endpoint, False, 100)
    assert listener.send([b"t", b"", b"x"]) is None
    pull = peer(ctx, zmq.PULL, endpoint, bind=True)
    send_until(listener, [b"t", b"", b"y"])
    assert pull.poll(5000) and pull.recv_multipart() == [b"t", b"", b"y"]


def test_a_bad_endpoint_is_an_error_naming_the_bridge(ctx):
    with pytest.raises(OSError, match="bridge b: cannot bind pub socket to tcp://nowhere"):
        EgressSocket(ctx, "b", "pub", "tcp://nowhere:1", True, 100)
