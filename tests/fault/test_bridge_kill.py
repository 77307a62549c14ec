"""An ingest bridge (PULL, acks = all) under kill -9 and under a stalled store, fed by a plain
pyzmq PUSH application.

What a kill -9 of the broker can lose is what had left the sender's ZeroMQ queue and was not
yet stored: the bytes in the sender's ZeroMQ encoder and kernel send buffer, the broker's
kernel receive buffer and ZeroMQ decoder, the bridge socket's receive queue (RCVHWM
messages) and the bridge's own in-flight records.  What was stored stays (acks = all on a
single broker: appended with ``pwrite``, which a killed process cannot take back); what
still sat in the sender's queue (up to its SNDHWM) is sent again when it reconnects to the
restarted broker.  :func:`loss_bound` adds those terms up for the test's settings.
"""

from __future__ import annotations

import json
import signal
import threading

import pytest

from bridge_apps import BridgeBroker, finish, start_app, stop
from support import ClusterProcesses, free_port, run_cli, wait_until
from zbroker.net.bridge_sockets import RCVBUF_BYTES

pytestmark = pytest.mark.timeout(240)

HWM = 100  # the bridge's hwm: its socket's RCVHWM and its in-flight bound
SNDHWM = 50  # the sender's
SNDBUF = 16 << 10  # the sender's SO_SNDBUF (asked for; Linux doubles it)
FRAME_BYTES = 100  # each frame: 88 x's and the message's number in 12 digits
ZMTP_FRAME_HEADER = 2  # flags + one-byte size: a 100-byte frame is 102 bytes on the wire
ZMQ_BATCH_BYTES = 8192  # libzmq's in_batch_size / out_batch_size: read or encoded ahead
LOOPBACK_SEGMENT = 65536  # the kernel may queue one segment past a full buffer


def loss_bound() -> int:
    """The most frames a kill -9 can lose at these settings (see the module docstring)."""
    wire = FRAME_BYTES + ZMTP_FRAME_HEADER
    kernel = 2 * SNDBUF + 2 * RCVBUF_BYTES + 2 * LOOPBACK_SEGMENT
    engines = 2 * ZMQ_BATCH_BYTES
    return HWM + HWM + -(-(kernel + engines) // wire) + 2  # + a message half-decoded on each side


class Sender:
    """The plain PUSH app, its "SENT i" lines followed by a thread."""

    def __init__(self, endpoint: str, count: int, **extra) -> None:
        self.proc = start_app(type="PUSH", endpoint=endpoint, frames=["x" * (FRAME_BYTES - 12) + "{i}"], pad=12,
                              count=count, hwm=SNDHWM, sndbuf=SNDBUF, progress=True, **extra)
        self.last = -1
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            if line.startswith("SENT "):
                self.last = int(line.split()[1])

    def done(self) -> bool:
        return any(line.startswith(("DONE", "BLOCKED")) for line in self.lines)


def lines(bootstrap: str, topic: str, at_most: int | None = None) -> list[str]:
    """The values stored in ``topic``, in offset order (``zbroker consume``)."""
    limit = ["--max-messages", str(at_most)] if at_most else []
    proc = run_cli("consume", topic, "--from-beginning", *limit, "--timeout-ms", "3000", bootstrap=bootstrap, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode().splitlines()


def numbers(bootstrap: str, topic: str, at_most: int) -> list[int]:
    """The numbers of the frames stored in ``topic``, in offset order."""
    return [int(line[-12:]) for line in lines(bootstrap, topic, at_most)]


@pytest.fixture
def broker(tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    b = BridgeBroker(tmp_path, [{"name": "line", "socket": "pull", "endpoint": endpoint, "topic": "line", "acks": "all",
                                 "hwm": HWM}], partitions=1)
    b.endpoint = endpoint
    b.start()
    yield b
    b.close()


def test_kill_9_mid_stream_loses_at_most_the_in_flight_window_and_never_duplicates(broker):
    count = 60_000
    run_cli("topics", "create", "line", "--partitions", "1", bootstrap=broker.proc.bootstrap).check_returncode()
    sender = Sender(broker.endpoint, count)
    try:
        wait_until(lambda: broker.status()["line"]["stored"] >= 5000, timeout=60, what="5000 stored")
        broker.proc.kill()
        # the sender goes on until its queue is full, then blocks in send()
        blocked_at = wait_until(lambda: _steady(sender), timeout=30, what="the sender to block")
        broker.proc.start()
        wait_until(sender.done, timeout=180, what="the sender to finish")
        assert "DONE %d" % count in sender.lines
        wait_until(lambda: broker.status()["line"]["in_flight"] == 0, timeout=30)
    finally:
        stop(sender.proc)
    got = numbers(broker.proc.bootstrap, "line", count)
    assert len(got) == len(set(got)), "a frame was stored twice"
    assert got == sorted(got), "the sender's order was not kept"
    missing = sorted(set(range(count)) - set(got))
    if missing:
        # one window of the TCP stream, cut when the broker died; nothing sent after the restart
        assert missing == list(range(missing[0], missing[-1] + 1)), missing
        assert missing[-1] <= blocked_at
    assert len(missing) <= loss_bound(), (len(missing), loss_bound())
    print(f"kill -9: {len(missing)} frames lost (bound {loss_bound()}), frames {missing[:1]}..{missing[-1:]}; "
          f"sender blocked at {blocked_at}")


def _steady(sender: Sender) -> int | None:
    """The sender's last sent index once it stopped moving for a moment (blocked at its HWM)."""
    before = sender.last
    threading.Event().wait(0.3)
    return before if sender.last == before else None


def stalled_pair(tmp_path, socket: str, **table):
    """Two brokers, topic ``line`` with 2 replicas and min_insync_replicas = 2 (acks = all needs
    both); broker 1 runs the bridge (``socket``, ``table``: more keys).  A generator for a fixture."""
    cluster = ClusterProcesses(tmp_path, n=2, replication_factor=2, min_insync_replicas=2, partitions=1)
    cluster.endpoint = f"tcp://127.0.0.1:{free_port()}"
    keys = {"name": "line", "socket": socket, "endpoint": cluster.endpoint, "acks": "all", "hwm": HWM, "broker": 1, **table}
    with open(cluster.config, "a") as f:
        f.write("\n[[bridge]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items()))
    try:
        cluster.start()
        wait_until(cluster.agreed_controller, timeout=30, what="a controller")
        run_cli("topics", "create", "line", bootstrap=cluster.bootstrap).check_returncode()
        wait_until(lambda: bridge_status(cluster.brokers[1])["state"] == "running", timeout=30, what="the bridge's producer id")
        yield cluster
    finally:
        for b in cluster.brokers.values():
            if b.alive():
                b.proc.send_signal(signal.SIGCONT)
        cluster.close()


@pytest.fixture
def pair(tmp_path):
    yield from stalled_pair(tmp_path, "pull", topic="line")


def bridge_status(broker) -> dict:
    client = broker.raw_client()
    try:
        return client.call("bridge_status")[0]["bridges"][0]
    finally:
        client.close()


def test_a_stalled_store_pushes_back_to_the_sender_and_nothing_is_dropped(pair):
    one, two = pair.brokers[1], pair.brokers[2]
    # acks = all needs broker 2 (min_insync_replicas = 2): with it stopped every batch waits or
    # is refused (retriable) and retried; the bridge fills, stops reading, and ZeroMQ's queues fill
    two.proc.send_signal(signal.SIGSTOP)
    sender = Sender(pair.endpoint, 1_000_000, timeout_ms=2000)
    try:
        wait_until(sender.done, timeout=120, what="the sender's send to block (SNDTIMEO)")
        assert any(line.startswith("BLOCKED") for line in sender.lines), sender.lines[-3:]
        s = bridge_status(one)
        assert (s["state"], s["in_flight"], s["dropped"], s["failed"]) == ("back-pressure", HWM, 0, 0), s
        two.proc.send_signal(signal.SIGCONT)
        sent = sender.last + 1
        wait_until(lambda: bridge_status(one)["stored"] >= sent, timeout=120, what=f"{sent} stored")
    finally:
        stop(sender.proc)
    got = numbers(pair.bootstrap, "line", sent + 1)
    assert got == list(range(sent)), "every frame whose send returned is stored, once, in order"
    s = bridge_status(one)
    assert (s["received"], s["stored"], s["dropped"], s["failed"]) == (sent, sent, 0, 0), s


@pytest.fixture
def sub_pair(tmp_path):
    yield from stalled_pair(tmp_path, "sub", bind=False, topic_from="frame0", subscribe=["line", "probe"])


def test_a_sub_bridge_that_cannot_store_drains_its_pub_and_counts_what_it_drops(sub_pair):
    one, two = sub_pair.brokers[1], sub_pair.brokers[2]
    run_cli("topics", "create", "probe", "--replication-factor", "1", "--config", "min_insync_replicas=1",
            bootstrap=sub_pair.bootstrap).check_returncode()
    count = 20_000
    # a PUB with its default SNDHWM (1000), paced below what the broker reads: ZeroMQ drops nothing
    app = start_app(type="PUB", endpoint=sub_pair.endpoint, bind=True, frames=["line", "{i}"], count=count, rate=20_000,
                    probe=["probe", "p"])
    try:
        wait_until(lambda: bridge_status(one)["stored"] > 0, timeout=30, what="the probe (the subscription reached the PUB)")
        wait_until(lambda: bridge_status(one)["in_flight"] == 0, timeout=30)
        two.proc.send_signal(signal.SIGSTOP)  # from now on nothing of "line" can be stored
        app.stdin.write("go\n")
        app.stdin.flush()
        assert "DONE %d" % count in finish(app)

        def drained():
            s = bridge_status(one)
            return s if s["in_flight"] + s["dropped"] >= count else None

        s = wait_until(drained, timeout=60, what="every frame drained")
        assert s["state"] == "dropping" and s["in_flight"] == HWM and s["dropped_by_reason"] == {"buffer_full": count - HWM}
        two.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: bridge_status(one)["in_flight"] == 0, timeout=120, what="the held records stored")
    finally:
        stop(app)
    probes = len(lines(sub_pair.bootstrap, "probe"))
    s = bridge_status(one)
    assert s["received"] == probes + count and s["dropped"] == count - HWM and s["failed"] == 0
    assert numbers(sub_pair.bootstrap, "line", HWM + 1) == list(range(HWM))  # the first HWM were held, then stored
    assert "its buffer is full" in one.log_text(None)



def test_a_leader_killed_under_a_pull_bridge_loses_nothing_and_stores_nothing_twice(tmp_path):
    """The bridge's broker stays up; a broker leading some of its partitions is killed -9:
    batches in flight there are resent (same producer id and sequences) to the new leaders."""
    cluster = ClusterProcesses(tmp_path, n=3, replication_factor=3, min_insync_replicas=2, partitions=3)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with open(cluster.config, "a") as f:
        f.write(f'\n[[bridge]]\nname = "spread"\nsocket = "pull"\nendpoint = "{endpoint}"\ntopic = "spread"\nbroker = 1\n')
    count = 30_000
    sender = None
    try:
        cluster.start()
        wait_until(cluster.agreed_controller, timeout=30, what="a controller")
        run_cli("topics", "create", "spread", bootstrap=cluster.bootstrap).check_returncode()
        one = cluster.brokers[1]
        sender = Sender(endpoint, count, rate=10_000)
        wait_until(lambda: bridge_status(one)["stored"] >= 5000, timeout=60, what="5000 stored")
        cluster.brokers[2].kill()  # leads some of the 3 partitions (leaders are spread), maybe the controller
        wait_until(sender.done, timeout=120, what="the sender to finish")
        wait_until(lambda: bridge_status(one)["stored"] >= count, timeout=120, what="every frame stored")
        s = bridge_status(one)
        assert (s["received"], s["stored"], s["dropped"], s["failed"], s["in_flight"]) == (count, count, 0, 0, 0), s
        proc = run_cli("consume", "spread", "--from-beginning", "--max-messages", str(count + 1), "--timeout-ms", "3000",
                       "--print-offset", bootstrap=one.bootstrap, timeout=120)
        per_partition: dict[str, list[int]] = {}
        for line in proc.stdout.decode().splitlines():
            where, value = line.split("\t")
            per_partition.setdefault(where.split(":")[0], []).append(int(value[-12:]))
        got = [n for ns in per_partition.values() for n in ns]
        assert sorted(got) == list(range(count)), "every frame once"
        assert all(ns == sorted(ns) for ns in per_partition.values()), "in order per partition"
    finally:
        if sender is not None:
            stop(sender.proc)
        cluster.close()
