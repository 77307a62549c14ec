"""Egress bridges on a real broker, read by plain pyzmq applications (processes that import
only zmq, tests/egress_apps.py): a SUB app gets produced records from a PUB bridge; start =
earliest, latest, committed; a late SUB gets the replay of the last N records, then live data,
and a second subscriber's replay reaches the first too; a PULL app gets every record of a PUSH
bridge, in order per partition, across SIGTERM and kill -9 of the broker; CURVE with a client
key, and curve = false on a secured broker; a slow subscriber slows the bridge down and loses
nothing; a connecting PUSH bridge is a CURVE client of an app that binds."""

from __future__ import annotations

import pytest
import zmq

from egress_apps import App, cluster_with, status, wait_status
from support import free_port, run_cli, wait_until

pytestmark = pytest.mark.timeout(180)


def produce(c, topic: str, values: list[bytes], keys: list[bytes] | None = None) -> None:
    from clients import Producer

    with Producer(bootstrap=c.bootstrap, acks="all", request_timeout_ms=20_000, **c.client_options()) as producer:
        futures = [producer.send(topic, value=v, key=k) for v, k in zip(values, keys or [None] * len(values))]
        for f in futures:
            f.result(timeout=30)


def create_topic(c, name: str, partitions: int = 1) -> None:
    from clients import Admin

    with Admin(bootstrap=c.bootstrap, **c.client_options()) as admin:
        admin.create_topic(name, partitions=partitions, replication_factor=1)


def grant(c, bridge: str, topic: str) -> None:
    """With security on, a bridge acts as its own principal under the ACLs: let it read its
    topic and commit in its group."""
    admin = ["--curve-secret-key-file", str(c.client_keys["admin"][0]), "--curve-server-key", c.broker_publics[1].decode()]
    for resource in (["--topic", topic], ["--group", f"bridge.{bridge}"]):
        proc = run_cli(*admin, "acl", "add", "--principal", f"Bridge:{bridge}", "--operation", "read", *resource,
                       bootstrap=c.bootstrap)
        assert proc.returncode == 0, proc.stderr.decode()


@pytest.fixture
def made(tmp_path):
    """Clusters and apps made by a test; killed at its end."""
    things: list = []
    yield things
    for thing in reversed(things):
        thing.close()


def start(made, tmp_path, bridges: list[dict], **options):
    c = cluster_with(tmp_path / "cluster", bridges, **options)
    made.append(c)
    c.start()
    return c


def app(made, tmp_path, name: str, type: str, endpoint: str, **options) -> App:
    a = App(tmp_path / f"{name}.out", type, endpoint, **options)
    made.append(a)
    return a


def subscribed(c, name: str, count: int) -> None:
    wait_status(c, name, lambda s: s["subscriptions"] >= count, f"{count} subscriptions to bridge {name}")


def test_a_sub_app_receives_produced_records_as_topic_key_value(made, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    c = start(made, tmp_path, [{"name": "out", "socket": "pub", "endpoint": endpoint, "topics": ["sensors", "other"]}])
    create_topic(c, "sensors")
    create_topic(c, "other")
    sub = app(made, tmp_path, "sub", "SUB", endpoint, subscribe=["sensors"])
    subscribed(c, "out", 1)
    produce(c, "sensors", [b"v%d" % i for i in range(300)], keys=[b"k%d" % i if i % 2 else None for i in range(300)])
    produce(c, "other", [b"not for this subscriber"])
    sub.wait_values(300)
    assert sub.messages() == [[b"sensors", b"k%d" % i if i % 2 else b"", b"v%d" % i] for i in range(300)]
    s = wait_status(c, "out", lambda s: s["sent"] == 301 and s["lag"] == 0, "the bridge to send every record")
    assert (s["kind"], s["socket"], s["state"], s["errors"]) == ("egress", "pub", "running", 0)


def test_start_latest_earliest_and_committed_across_a_restart(made, tmp_path):
    ends = {name: f"tcp://127.0.0.1:{free_port()}" for name in ("latest", "earliest", "committed")}
    c = start(made, tmp_path, [{"name": name, "socket": "push", "endpoint": e, "topics": ["t"], "start": name}
                               for name, e in ends.items()])
    create_topic(c, "t")  # created after the bridges started: each sends it from its first record
    apps = {name: App(tmp_path / f"{name}-1.out", "PULL", e) for name, e in ends.items()}
    made.extend(apps.values())
    produce(c, "t", [b"a%d" % i for i in range(5)])
    for name, a in apps.items():
        assert a.wait_values(5) == [b"a%d" % i for i in range(5)]
        wait_status(c, name, lambda s: s["partitions"][0]["committed"] == 5, f"bridge {name} to commit 5")
        a.close()  # nobody reads now: each bridge holds what comes next (a disconnection goes back to the commit: 5)
    produce(c, "t", [b"b%d" % i for i in range(5)])
    for name in ends:
        s = wait_status(c, name, lambda s: s["partitions"][0]["committed"] == 5 and s["held"] > 0,
                        f"bridge {name} to commit 5 and hold the rest")
        assert s["state"] == "blocked"
    assert c.brokers[1].stop() == 0
    c.brokers[1].start()
    apps = {name: App(tmp_path / f"{name}-2.out", "PULL", e) for name, e in ends.items()}
    made.extend(apps.values())
    for name in ends:  # started: the latest bridge at offset 10, before anything new comes
        wait_status(c, name, lambda s: s["state"] == "running" or s["sent"] > 0, f"bridge {name} to start")
    produce(c, "t", [b"c%d" % i for i in range(5)])
    a, b, cc = ([b"%s%d" % (x, i) for i in range(5)] for x in (b"a", b"b", b"c"))
    assert apps["latest"].wait_values(5) == cc
    assert apps["committed"].wait_values(10) == b + cc
    assert apps["earliest"].wait_values(15) == a + b + cc


def test_a_late_subscriber_gets_the_replay_then_live_data_and_others_see_a_new_replay_too(made, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    c = start(made, tmp_path, [{"name": "lvc", "socket": "pub", "endpoint": endpoint, "topics": ["sensors"], "replay": 5}])
    create_topic(c, "sensors")
    produce(c, "sensors", [b"%d" % i for i in range(20)])  # published to nobody
    wait_status(c, "lvc", lambda s: s["sent"] == 20, "the bridge to pass the first 20")
    first = app(made, tmp_path, "first", "SUB", endpoint, subscribe=["sensors"])
    assert first.wait_values(5) == [b"%d" % i for i in range(15, 20)]
    produce(c, "sensors", [b"%d" % i for i in range(20, 23)])
    assert first.wait_values(8)[5:] == [b"20", b"21", b"22"]
    second = app(made, tmp_path, "second", "SUB", endpoint, subscribe=["sens"])
    assert second.wait_values(5) == [b"%d" % i for i in range(18, 23)]
    produce(c, "sensors", [b"23"])
    assert second.wait_values(6)[5:] == [b"23"]
    # the first subscriber saw the second one's replay too (one PUB socket: last-value-cache caveat)
    assert first.wait_values(14) == [b"%d" % i for i in (*range(15, 23), *range(18, 23), 23)]
    s = status(c)["lvc"]
    assert (s["replays"], s["replayed"], s["subscriptions"]) == (2, 10, 2)


def test_a_subscriber_that_reconnects_after_a_broker_restart_gets_the_replay_again(made, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    c = start(made, tmp_path, [{"name": "lvc", "socket": "pub", "endpoint": endpoint, "topics": ["sensors"], "replay": 2,
                                "start": "committed"}])
    create_topic(c, "sensors")
    sub = app(made, tmp_path, "sub", "SUB", endpoint, subscribe=["sensors"])
    subscribed(c, "lvc", 1)
    produce(c, "sensors", [b"a", b"b", b"c"])
    assert sub.wait_values(3) == [b"a", b"b", b"c"]
    assert c.brokers[1].stop() == 0
    c.brokers[1].start()  # the SUB reconnects by itself and subscribes again
    assert sub.wait_values(5)[3:] == [b"b", b"c"]
    produce(c, "sensors", [b"d"])
    assert sub.wait_values(6)[5:] == [b"d"]


def _no_gaps_in_order(messages: list[list[bytes]], keys: int, per_key: int) -> None:
    """Every value of every key arrived, and a key's values never jump ahead (duplicates from
    a replay after a restart are allowed: at-least-once, in order per partition)."""
    highest: dict[bytes, int] = {}
    for _topic, key, value in messages:
        seq = int(value.split(b":")[1])
        assert seq <= highest.get(key, -1) + 1, f"key {key!r}: {seq} came after {highest.get(key)} (a gap)"
        highest[key] = max(highest.get(key, -1), seq)
    assert highest == {b"k%d" % k: per_key - 1 for k in range(keys)}


def test_a_push_bridge_is_at_least_once_across_sigterm_and_kill_9(made, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    c = start(made, tmp_path, [{"name": "feed", "socket": "push", "endpoint": endpoint, "topics": ["jobs"],
                                "start": "committed", "hwm": 100}], partitions=3)
    create_topic(c, "jobs", partitions=3)
    pull = app(made, tmp_path, "pull", "PULL", endpoint)
    keys, rounds, per_round = 6, 3, 400
    seq = 0
    for how in ("kill", "stop", None):
        values = [b"k%d:%d" % (k, seq + i) for i in range(per_round) for k in range(keys)]
        produce(c, "jobs", values, keys=[v.split(b":")[0] for v in values])
        seq += per_round
        if how is not None:
            wait_until(lambda: len(pull.messages()) > (seq - per_round) * keys + 100, timeout=30, what="sending under way")
            if how == "kill":
                c.brokers[1].kill()
            else:
                assert c.brokers[1].stop() == 0
            c.brokers[1].start()
    wait_until(lambda: len({tuple(m) for m in pull.messages()}) == keys * rounds * per_round, timeout=60,
               what="every record at the PULL app")
    _no_gaps_in_order(pull.messages(), keys, rounds * per_round)
    s = wait_status(c, "feed", lambda s: s["lag"] == 0, "the bridge to catch up")
    assert s["errors"] == 0


def test_curve_with_a_client_key_and_curve_false_for_a_legacy_app(made, tmp_path):
    secure, legacy = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    c = cluster_with(tmp_path / "cluster", [
        {"name": "secure", "socket": "pub", "endpoint": secure, "topics": ["s"], "replay": 3, "start": "earliest"},
        {"name": "legacy", "socket": "push", "endpoint": legacy, "topics": ["s"], "curve": False, "start": "earliest"},
        {"name": "denied", "socket": "push", "endpoint": f"tcp://127.0.0.1:{free_port()}", "topics": ["s"]},
    ], curve=True)
    made.append(c)
    _, public, secret = c.add_client_key("sensor-reader")
    c.start()
    for name in ("secure", "legacy"):
        grant(c, name, "s")
    create_topic(c, "s")
    produce(c, "s", [b"x%d" % i for i in range(5)])
    wait_status(c, "secure", lambda s: s["sent"] == 5, "the records to be published (to nobody yet)")
    keyed = app(made, tmp_path, "keyed", "SUB", secure, subscribe=[""], curve=(public, secret, c.broker_publics[1]))
    assert keyed.wait_values(3) == [b"x2", b"x3", b"x4"]  # the replay
    plain = app(made, tmp_path, "plain", "PULL", legacy)
    assert plain.wait_values(5) == [b"x%d" % i for i in range(5)]
    stranger = app(made, tmp_path, "stranger", "SUB", secure, subscribe=[""])  # no key: the handshake fails
    produce(c, "s", [b"x5"])
    assert keyed.wait_values(4)[3:] == [b"x5"]
    assert plain.wait_values(6)[5:] == [b"x5"]
    s = status(c)
    assert s["secure"]["subscriptions"] == 1 and s["secure"]["errors"] == 0 and s["legacy"]["errors"] == 0
    assert stranger.values() == []
    denied = wait_status(c, "denied", lambda s: s["errors"] > 0, "the bridge without ACLs to be refused")
    assert "AUTHORIZATION_FAILED" in denied["last_error"] and denied["sent"] == 0


def test_a_bridge_reads_partitions_led_by_other_brokers_and_commits_through_their_coordinator(made, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    c = cluster_with(tmp_path / "cluster", [{"name": "spread", "socket": "push", "endpoint": endpoint, "topics": ["t"],
                                             "start": "committed", "broker": 1}], n=3, partitions=6)
    made.append(c)
    c.start()
    wait_until(c.agreed_controller, timeout=15, what="a controller")
    create_topic(c, "t", partitions=6)
    from clients import Admin

    with Admin(bootstrap=c.bootstrap) as admin:
        leaders = {p.leader for p in admin.describe_topic("t").partitions}
    assert leaders - {1}, "some partitions are led by other brokers"
    pull = app(made, tmp_path, "pull", "PULL", endpoint)
    values = [b"v%d" % i for i in range(600)]
    produce(c, "t", values, keys=[b"k%d" % (i % 12) for i in range(600)])
    assert sorted(pull.wait_values(600)) == sorted(values)
    s = wait_status(c, "spread", lambda s: all(p["committed"] == p["end"] for p in s["partitions"]), "every position committed")
    assert s["broker"] == 1 and len(s["partitions"]) == 6 and s["errors"] == 0


def test_a_leader_killed_under_a_bridge_loses_nothing(made, tmp_path):
    """kill -9 of the broker leading some of the bridge's partitions (not the bridge's own):
    the bridge retries at the new leaders and goes on from its positions."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    c = cluster_with(tmp_path / "cluster", [{"name": "ha", "socket": "push", "endpoint": endpoint, "topics": ["t"],
                                             "start": "committed", "broker": 1}],
                     n=3, partitions=3, replication_factor=3, min_insync_replicas=2)
    made.append(c)
    c.start()
    wait_until(c.agreed_controller, timeout=15, what="a controller")
    from clients import Admin

    with Admin(bootstrap=c.bootstrap) as admin:
        admin.create_topic("t", partitions=3, replication_factor=3)
        victim = next(p.leader for p in admin.describe_topic("t").partitions if p.leader != 1)
    pull = app(made, tmp_path, "pull", "PULL", endpoint)
    keys = [b"k%d" % k for k in range(6)]
    first = [b"%s:%d" % (k, i) for i in range(200) for k in keys]
    produce(c, "t", first, keys=[v.split(b":")[0] for v in first])
    wait_until(lambda: len(pull.messages()) >= 600, timeout=30, what="sending under way")
    c.brokers[victim].kill()
    second = [b"%s:%d" % (k, i) for i in range(200, 400) for k in keys]
    produce(c, "t", second, keys=[v.split(b":")[0] for v in second])
    wait_until(lambda: len(set(pull.values())) == len(first) + len(second), timeout=90, what="every record at the PULL app")
    _no_gaps_in_order(pull.messages(), len(keys), 400)


def test_a_slow_subscriber_slows_a_pub_bridge_down_and_loses_nothing(made, tmp_path):
    """XPUB_NODROP: past the high-water mark the bridge holds records instead of ZeroMQ dropping them."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    c = start(made, tmp_path, [{"name": "out", "socket": "pub", "endpoint": endpoint, "topics": ["t"], "hwm": 5}])
    create_topic(c, "t")
    slow = app(made, tmp_path, "slow", "SUB", endpoint, subscribe=["t"], rcvhwm=5, delay_ms=2)
    subscribed(c, "out", 1)
    values = [b"%d" % i for i in range(600)]
    produce(c, "t", values)
    blocked = wait_status(c, "out", lambda s: s["state"] == "blocked", "the bridge to hold records for the slow subscriber")
    assert blocked["held"] > 0
    assert slow.wait_values(600, timeout=60) == values
    s = wait_status(c, "out", lambda s: s["sent"] == 600, "every record sent")
    assert s["errors"] == 0


def test_a_connecting_push_bridge_is_a_curve_client_of_a_pull_app_that_binds(made, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    app_public, app_secret = zmq.curve_keypair()
    c = cluster_with(tmp_path / "cluster", [{"name": "to-app", "socket": "push", "endpoint": endpoint, "bind": False,
                                             "server_key": app_public.decode(), "topics": ["t"], "start": "earliest"}],
                     curve=True)
    made.append(c)
    c.start()
    grant(c, "to-app", "t")
    create_topic(c, "t")
    produce(c, "t", [b"a", b"b"])
    wait_status(c, "to-app", lambda s: s["state"] == "blocked", "the bridge to hold records while the app is away")
    pull = app(made, tmp_path, "pull", "PULL", endpoint, bind=True, curve_server=app_secret)
    assert pull.wait_values(2) == [b"a", b"b"]


def test_a_pull_app_that_dies_mid_stream_loses_nothing_its_successor_does_not_get(made, tmp_path):
    """ZeroMQ drops what it queued for a PULL peer that goes away; the bridge hears of it and
    sends again from its last commit, so the next app gets those records (and some twice)."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    c = start(made, tmp_path, [{"name": "feed", "socket": "push", "endpoint": endpoint, "topics": ["t"],
                                "start": "committed"}])
    create_topic(c, "t")
    values = [b"%d" % i for i in range(20000)]
    produce(c, "t", values)
    first = app(made, tmp_path, "first", "PULL", endpoint)
    wait_until(lambda: len(first.messages()) >= 5000, timeout=30, what="the first app to be under way")
    first.close()  # kill -9: what ZeroMQ queued for it is gone
    wait_status(c, "feed", lambda s: s["rewinds"] >= 1, "the bridge to hear of the disconnection")
    second = app(made, tmp_path, "second", "PULL", endpoint)
    wait_until(lambda: second.values()[-1:] == [values[-1]], timeout=60, what="the second app to get the last record")
    got = first.values() + second.values()
    assert set(got) == set(values)
    assert second.values() == values[int(second.values()[0]):]  # from where it went back to, in order


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_subscription_flood_does_not_starve_live_data_nor_grow_the_broker(made, tmp_path):
    """A client subscribing and unsubscribing in a tight loop ("" and ever new prefixes) while a
    normal SUB reads: replays are coalesced, the SUB gets every live record, the broker's RSS
    stays bounded."""
    import threading

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    c = start(made, tmp_path, [{"name": "out", "socket": "pub", "endpoint": endpoint, "topics": ["t"], "replay": 5}])
    create_topic(c, "t")
    produce(c, "t", [b"old%d" % i for i in range(5)])
    sub = app(made, tmp_path, "sub", "SUB", endpoint, subscribe=["t"])
    subscribed(c, "out", 1)
    sub.wait_values(5)
    pid = c.brokers[1].proc.pid
    before = _rss_kib(pid)
    stop = threading.Event()
    flooded = [0]

    def flood() -> None:  # a hostile client: only zmq
        ctx = zmq.Context()
        xsub = ctx.socket(zmq.XSUB)
        xsub.setsockopt(zmq.LINGER, 0)
        xsub.connect(endpoint)
        try:
            i = 0
            while not stop.is_set():
                prefix = b"" if i % 2 else b"t%d" % i
                xsub.send(b"\x01" + prefix)
                xsub.send(b"\x00" + prefix)
                while xsub.poll(0):  # what the replays send it: read and drop
                    xsub.recv_multipart()
                i += 1
            flooded[0] = i
        finally:
            xsub.close()
            ctx.term()
    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        live = [b"live%d" % i for i in range(300)]
        for k in range(0, 300, 30):  # live data for about 5 s during the flood
            produce(c, "t", live[k:k + 30])
            wait_until(lambda: set(live[:k + 30]) <= set(sub.values()), timeout=20, what="live data during the flood")
            during = status(c)["out"]
    finally:
        stop.set()
        flooder.join(10)
    assert flooded[0] > 1000, flooded[0]
    assert during["subscriptions"] > 1000 and during["replays"] < 30, during  # about one a second, not one a subscribe
    grown = _rss_kib(pid) - before
    assert grown < 64 * 1024, f"the broker grew by {grown} KiB under the flood"


def test_a_subscriber_that_never_reads_does_not_hold_a_pub_bridge_for_good(made, tmp_path):
    """A connected subscriber that never reads fills its connection and holds the bridge
    (XPUB_NODROP); a second subscriber that reads gets live data again soon after: the broker's
    ZMTP heartbeat cuts the first off (its libzmq stops reading its connection, PINGs included,
    once its queue is full), or, for a peer without heartbeats, the bridge gives NODROP up after
    10 s (that mechanism: tests/unit and tests/integration/test_bridge_out_socket.py)."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    c = start(made, tmp_path, [{"name": "out", "socket": "pub", "endpoint": endpoint, "topics": ["t"], "hwm": 5}])
    create_topic(c, "t")
    ctx = zmq.Context()
    stuck = ctx.socket(zmq.SUB)  # connected, never read
    stuck.setsockopt(zmq.LINGER, 0)
    stuck.setsockopt(zmq.RCVHWM, 5)
    stuck.setsockopt(zmq.RCVBUF, 4096)  # a small kernel buffer: its connection fills soon
    stuck.setsockopt(zmq.SUBSCRIBE, b"t")
    stuck.connect(endpoint)
    try:
        reader = app(made, tmp_path, "reader", "SUB", endpoint, subscribe=["t"])
        subscribed(c, "out", 2)
        produce(c, "t", [b"%04d" % i + b"x" * 32768 for i in range(400)])  # more than the stuck one's buffers take
        wait_status(c, "out", lambda s: s["state"] == "blocked", "the stuck subscriber to hold the bridge")
        live = [b"live%d" % i for i in range(20)]
        produce(c, "t", live)
        wait_until(lambda: set(live) <= set(reader.values()), timeout=40, what="live data at the reading subscriber")
        s = wait_status(c, "out", lambda s: s["lag"] == 0 and s["state"] == "running", "the bridge to go on")
        assert s["errors"] == 0
    finally:
        stuck.close()
        ctx.term()
