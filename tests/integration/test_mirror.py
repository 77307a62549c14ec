"""[[mirror]] between two clusters started here: zbroker:// and kafka:// (the source cluster's own
Kafka front door) sources, topics created to match, records kept whole, new topics picked up,
positions kept across a restart, a kill -9 of the mirroring broker of a 3-broker target (from
either kind of source), a partition the target refuses holding back only itself, and the
minimal documented ACLs."""

from __future__ import annotations

import collections
import json
import threading
import time

import confluent_kafka
import pytest

from clients import Admin, Consumer, Producer
from clients.acls import AclBinding
from support import ClusterProcesses, run_cli, wait_until

pytestmark = pytest.mark.timeout(150)

T0 = 1_600_000_000_000  # record timestamps the producer sets: kept by the mirror, not the append time


def mirror_table(source: str, name: str = "m", topics: str = r"plant\\..*", prefix: str = "a.") -> str:
    return f'\n[[mirror]]\nname = "{name}"\nsource = "{source}"\ntopics = "{topics}"\nprefix = "{prefix}"\nrefresh_ms = 300\n'


def cluster(root, n=1, mirror: str = "", **settings) -> ClusterProcesses:
    c = ClusterProcesses(root, n=n, **settings)
    if mirror:
        c.config.write_text(c.config.read_text() + mirror)
    c.start()
    wait_until(c.agreed_controller, timeout=20, what="a controller")
    return c


def send(producer: Producer, topic: str, first: int, n: int, partitions: int = 2) -> list[tuple]:
    """Records ``first`` .. ``first + n - 1`` spread over the partitions by hand; returns what was
    sent as it reads back: ``(partition, timestamp, key, value, headers items)``."""
    sent = []
    for i in range(first, first + n):
        part, key, value, ts = i % partitions, b"k%d" % i, b"v%d" % i, T0 + i
        producer.send(topic, value=value, key=key, headers={"n": b"%d" % i}, partition=part, timestamp_ms=ts)
        sent.append((part, ts, key, value, (("n", b"%d" % i),)))
    return sent


def produce(bootstrap: str, topic: str, first: int, n: int, partitions: int = 2) -> list[tuple]:
    with Producer(bootstrap=bootstrap, linger_ms=5) as p:
        sent = send(p, topic, first, n, partitions)
        p.flush(timeout=30)
    return sent


def seeded(source: ClusterProcesses, topic: str, n: int, partitions: int = 2, config: dict | None = None) -> list[tuple]:
    """Create ``topic`` on the source with ``n`` records (see :func:`produce`)."""
    with Admin(source.bootstrap) as admin:
        admin.create_topic(topic, partitions=partitions, config=config)
    return produce(source.bootstrap, topic, 0, n, partitions)


def read_all(bootstrap: str, topic: str, partitions: int, at_least: int, timeout: float = 60) -> dict[int, list[tuple]]:
    """Every record of ``topic`` once at least ``at_least`` are there: {partition: [(ts, key, value, headers items)]}."""
    out: dict[int, list] = collections.defaultdict(list)
    deadline = time.monotonic() + timeout
    with Consumer(bootstrap=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest") as c:
        c.assign([(topic, p) for p in range(partitions)])
        while sum(map(len, out.values())) < at_least and time.monotonic() < deadline:
            for r in c.poll(timeout_ms=200):
                out[r.partition].append((r.timestamp, r.key, r.value, tuple(sorted(r.headers.items()))))
    return out


def read_until_all(bootstrap: str, topic: str, want: dict[int, list[tuple]], timeout: float = 90) -> dict[int, list[tuple]]:
    """Read ``topic`` from the start until every record of ``want`` ({partition: records}) is there
    (copies included), or the deadline passes."""
    out: dict[int, list] = collections.defaultdict(list)
    missing = {p: set(records) for p, records in want.items()}
    deadline = time.monotonic() + timeout
    with Consumer(bootstrap=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest") as c:
        c.assign([(topic, p) for p in want])
        while any(missing.values()) and time.monotonic() < deadline:
            for r in c.poll(timeout_ms=200):
                record = (r.timestamp, r.key, r.value, tuple(sorted(r.headers.items())))
                out[r.partition].append(record)
                missing[r.partition].discard(record)
    return out


def by_partition(sent: list[tuple]) -> dict[int, list[tuple]]:
    out: dict[int, list] = collections.defaultdict(list)
    for part, *rest in sent:
        out[part].append(tuple(rest))
    return out


def wait_topic(bootstrap: str, name: str, timeout: float = 30) -> None:
    def exists():
        with Admin(bootstrap, request_timeout_ms=3000) as admin:
            return name in admin.list_topics()
    wait_until(exists, timeout=timeout, interval=0.2, what=f"topic {name}")


def mirror_status(bootstrap: str, *options: str) -> dict | None:
    run = run_cli(*options, "bridge", "status", "--json", bootstrap=bootstrap, timeout=30)
    assert run.returncode == 0, run.stderr.decode()
    entries = [e for e in json.loads(run.stdout) if e.get("kind") == "mirror"]
    return entries[0] if entries else None


def source_url(source: ClusterProcesses, scheme: str) -> str:
    """The mirror's ``source``: the source cluster's native door, or its Kafka door."""
    return f"zbroker://{source.bootstrap}" if scheme == "zbroker" else f"kafka://{source.kafka_bootstrap}"


def in_order_at_least_once(got: list, want: list) -> bool:
    """Every record of ``want`` is in ``got`` and their first copies come in ``want``'s order
    (a copy sent again after a failure may follow later)."""
    return list(dict.fromkeys(got)) == want


@pytest.fixture
def source(tmp_path):
    c = cluster(tmp_path / "source", n=1, kafka=True, partitions=2, name="source")
    try:
        yield c
    finally:
        c.close()


def test_zbroker_source_records_configs_new_topics_and_lag(tmp_path, source):
    with Admin(source.bootstrap) as admin:
        admin.create_topic("plant.x", partitions=2, config={"retention_ms": 3_600_000})
        admin.create_topic("other", partitions=1)
    sent = produce(source.bootstrap, "plant.x", 0, 200)
    produce(source.bootstrap, "other", 0, 5, partitions=1)
    target = cluster(tmp_path / "target", n=1, mirror=mirror_table(f"zbroker://{source.bootstrap}"), name="target")
    try:
        wait_topic(target.bootstrap, "a.plant.x")
        sent += produce(source.bootstrap, "plant.x", 200, 100)  # while it runs
        got = read_all(target.bootstrap, "a.plant.x", 2, len(sent))
        assert dict(got) == by_partition(sent)  # keys, values, headers, timestamps, order: as on the source
        with Admin(target.bootstrap) as admin:
            described = admin.describe_topic("a.plant.x")
            assert len(described.partitions) == 2
            assert "retention_ms" in described.overrides and described.config["retention_ms"] == 3_600_000
            assert "a.other" not in admin.list_topics()
        # a topic created on the source after the mirror started is picked up
        with Admin(source.bootstrap) as admin:
            admin.create_topic("plant.y", partitions=1)
        later = produce(source.bootstrap, "plant.y", 0, 10, partitions=1)
        wait_topic(target.bootstrap, "a.plant.y")
        assert dict(read_all(target.bootstrap, "a.plant.y", 1, 10)) == by_partition(later)

        def caught_up():
            status = mirror_status(target.bootstrap)
            return status if status and status["state"] == "running" and status["lag"] == 0 and status["mirrored"] >= 310 else None
        status = wait_until(caught_up, timeout=30, interval=0.3, what="mirror status: lag 0")
        parts = {(p["topic"], p["partition"]): p for p in status["partitions"]}
        assert parts[("a.plant.x", 0)]["source_end"] == 150 and parts[("a.plant.x", 0)]["position"] == 150
        run = run_cli("bridge", "status", bootstrap=target.bootstrap, timeout=30)
        assert run.returncode == 0 and "mirror" in run.stdout.decode() and "LAG" in run.stdout.decode()
        # the source topic grows: so does the target, and the new partition is mirrored
        with Admin(source.bootstrap) as admin:
            admin.create_partitions("plant.x", 3)
        grown = [tuple(r[1:]) for r in produce(source.bootstrap, "plant.x", 1000, 30, partitions=3) if r[0] == 2]
        assert read_until_all(target.bootstrap, "a.plant.x", {2: grown}, timeout=30)[2] == grown
    finally:
        target.close()


def test_kafka_source_is_the_source_clusters_kafka_front_door(tmp_path, source):
    sent = seeded(source, "plant.k", 100, config={"retention_ms": 7_200_000, "cleanup_policy": "compact,delete"})
    target = cluster(tmp_path / "target", n=1, mirror=mirror_table(f"kafka://{source.kafka_bootstrap}", prefix=""), name="target",
                     kafka=True)
    try:
        wait_topic(target.bootstrap, "plant.k")
        got = read_all(target.bootstrap, "plant.k", 2, len(sent))
        assert dict(got) == by_partition(sent)
        # Kafka headers as Kafka clients see them: names may repeat, values may be null
        headers = [("h", b"1"), ("h", b"2"), ("nul", None)]
        kp = confluent_kafka.Producer({"bootstrap.servers": source.kafka_bootstrap})
        kp.produce("plant.k", key=b"hk", value=b"hv", partition=0, headers=headers, timestamp=T0 + 99_999)
        assert kp.flush(10) == 0
        kc = confluent_kafka.Consumer({"bootstrap.servers": target.kafka_bootstrap, "group.id": "check", "enable.auto.commit": False})
        try:
            kc.assign([confluent_kafka.TopicPartition("plant.k", 0, confluent_kafka.OFFSET_BEGINNING)])

            def the_record():
                for m in kc.consume(100, 0.2):
                    if m.error() is None and m.key() == b"hk":
                        return m
            m = wait_until(the_record, timeout=30, interval=0, what="the record with Kafka headers in the target")
            assert (m.value(), m.headers(), m.timestamp()) == (b"hv", headers, (confluent_kafka.TIMESTAMP_CREATE_TIME, T0 + 99_999))
        finally:
            kc.close()
        with Admin(target.bootstrap) as admin:
            described = admin.describe_topic("plant.k")
        assert len(described.partitions) == 2
        assert described.config["retention_ms"] == 7_200_000 and described.config["cleanup_policy"] in ("compact,delete", "delete,compact")
    finally:
        target.close()


def test_the_position_survives_a_restart_without_a_copy_again(tmp_path, source):
    sent = seeded(source, "plant.r", 300)
    target = cluster(tmp_path / "target", n=1, mirror=mirror_table(f"zbroker://{source.bootstrap}"), name="target")
    try:
        wait_topic(target.bootstrap, "a.plant.r")
        assert sum(map(len, read_all(target.bootstrap, "a.plant.r", 2, 300).values())) >= 300

        def committed():
            status = mirror_status(target.bootstrap)
            return status and all(p["committed"] == p["source_end"] for p in status["partitions"])
        wait_until(committed, timeout=30, interval=0.3, what="positions committed")
        broker = target.brokers[1]
        broker.kill()
        sent += produce(source.bootstrap, "plant.r", 300, 100)
        broker.start()
        got = read_all(target.bootstrap, "a.plant.r", 2, 400)
        assert {p: list(dict.fromkeys(rs)) for p, rs in got.items()} == by_partition(sent)
        assert sum(map(len, got.values())) == 400  # nothing copied twice: it went on from its committed position
    finally:
        target.close()


def test_a_clean_stop_commits_the_last_positions_so_a_restart_copies_nothing_twice(tmp_path, source):
    sent = seeded(source, "plant.st", 300)
    target = cluster(tmp_path / "target", n=1, mirror=mirror_table(f"zbroker://{source.bootstrap}"), name="target")
    try:
        with Admin(target.bootstrap) as admin:
            def all_appended():  # in-process, quickly: the stop should come before the next periodic commit
                mirrors = [e for e in admin.bridge_status() if e.get("kind") == "mirror"]
                return mirrors and mirrors[0]["mirrored"] == 300
            wait_until(all_appended, timeout=30, interval=0.02, what="300 records appended")
        broker = target.brokers[1]
        started = time.monotonic()
        assert broker.stop() == 0 and time.monotonic() - started < 10  # the source thread is joined, not waited out
        sent += produce(source.bootstrap, "plant.st", 300, 100)
        broker.start()
        got = read_all(target.bootstrap, "a.plant.st", 2, 400)
        assert dict(got) == by_partition(sent)  # each once: the stop committed what was appended
    finally:
        target.close()


@pytest.mark.parametrize("scheme", ["zbroker", "kafka"])
def test_kill_9_of_the_mirroring_broker_moves_the_mirror_and_loses_nothing(tmp_path, source, scheme):
    sent = seeded(source, "plant.k9", 500)
    target = cluster(tmp_path / "target", n=3, mirror=mirror_table(source_url(source, scheme)), name="target", replication_factor=3,
                     min_insync_replicas=2)
    stop = threading.Event()
    more: list = []

    def keep_producing():  # about 2,500 records/s before, during and after the kill
        with Producer(bootstrap=source.bootstrap, linger_ms=5) as p:
            while not stop.is_set():
                more.extend(send(p, "plant.k9", 500 + len(more), 50))
                stop.wait(0.02)
            p.flush(timeout=30)

    producer = threading.Thread(target=keep_producing)
    try:
        wait_topic(target.bootstrap, "a.plant.k9")
        producer.start()
        wait_until(lambda: (mirror_status(target.bootstrap) or {}).get("mirrored", 0) >= 1500, timeout=60, interval=0.2,
                   what="the mirror under way")
        controller, _ = target.agreed_controller()
        assert mirror_status(target.bootstrap)["broker"] == controller  # it runs on the controller's broker
        target.brokers[controller].kill()  # mid-stream: records keep coming to the source
        sent_at_kill = len(more)
        others = [i for i in target.brokers if i != controller]
        alive = ",".join(target.brokers[i].bootstrap for i in others)

        def moved():
            status = mirror_status(alive)
            return status if status and status["broker"] != controller and status["mirrored"] > 0 else None
        wait_until(moved, timeout=30, interval=0.2, what="the mirror running on another broker")
        stop.set()
        producer.join(60)
        wait_until(lambda: (mirror_status(alive) or {}).get("lag") == 0, timeout=60, interval=0.2, what="the mirror caught up")
        assert len(more) > sent_at_kill + 500  # the source kept growing while the mirror moved
        everything = sent + more
        want = by_partition(everything)
        got = read_until_all(alive, "a.plant.k9", want)
        for p in (0, 1):
            assert in_order_at_least_once(got[p], want[p]), f"partition {p}: {len(got[p])} records, {len(want[p])} sent"
        copies = sum(map(len, got.values())) - len(everything)
        print(f"sent {len(everything)}, {copies} of them appended twice (after the last commit of the killed broker)")
        assert copies < len(everything) // 2  # the new broker went on from the committed positions, no copy from the start
    finally:
        stop.set()
        target.close()


@pytest.mark.parametrize("scheme", ["zbroker", "kafka"])
def test_records_the_target_refuses_stay_behind_as_lag_and_an_error_not_skipped_and_hold_back_only_their_partition(
        tmp_path, source, scheme):
    behind = 60_000  # more than the mirror holds in all (50,000 records): only pausing the partition keeps the other going
    with Admin(source.bootstrap) as admin:
        admin.create_topic("plant.big", partitions=2)
    with Producer(bootstrap=source.bootstrap, linger_ms=5) as p:
        p.send("plant.big", value=b"x" * 5000, partition=0)  # over the target's max_message_bytes
        for i in range(behind):
            p.send("plant.big", value=b"s%d" % i, partition=0)
        p.flush(timeout=60)
    sent = produce(source.bootstrap, "plant.big", 0, 1000, partitions=2)  # half of it to partition 0, behind the rest
    target = ClusterProcesses(tmp_path / "target", n=1, name="target")
    text = target.config.read_text().replace("[topic_defaults]\n", "[topic_defaults]\nmax_message_bytes = 2048\n")
    target.config.write_text(text + mirror_table(source_url(source, scheme)))
    try:
        target.start()

        def stuck():
            status = mirror_status(target.bootstrap)
            parts = {p["partition"]: p for p in (status or {}).get("partitions", [])}
            if len(parts) == 2 and parts[0]["paused"] and parts[0]["lag"] == parts[0]["source_end"] == behind + 501 \
                    and parts[1]["lag"] == 0 and parts[1]["source_end"] == 500 and status["state"] == "error":
                return status
        status = wait_until(stuck, timeout=60, interval=0.3, what="partition 0 stuck and paused on a record too large, 1 flowing")
        assert "MESSAGE_TOO_LARGE" in status["last_error"]
        stuck_part = status["partitions"][0]
        assert stuck_part["position"] == 0 and stuck_part["backlog"] < 15_000  # paused: not all read into memory
        run = run_cli("bridge", "status", bootstrap=target.bootstrap, timeout=30)
        assert run.returncode == 0 and "MESSAGE_TOO_LARGE" in run.stdout.decode(), run.stdout.decode()
        # the other partition keeps flowing while partition 0 is stuck
        sent += produce(source.bootstrap, "plant.big", 1000, 1000, partitions=2)
        flowing = by_partition(sent)[1]
        assert read_until_all(target.bootstrap, "a.plant.big", {1: flowing}, timeout=30)[1] == flowing
        assert read_all(target.bootstrap, "a.plant.big", 1, 1, timeout=1) == {}  # the small ones do not jump the queue
        # the target takes the record once its topic does: partition 0 drains, is read again, nothing skipped
        with Admin(target.bootstrap) as admin:
            admin.alter_topic_config("a.plant.big", {"max_message_bytes": 10_000})
        want = [b"x" * 5000] + [b"s%d" % i for i in range(behind)] + [r[2] for r in by_partition(sent)[0]]
        got = read_all(target.bootstrap, "a.plant.big", 2, len(want) + len(flowing), timeout=90)
        assert [r[2] for r in got[0]] == want and got[1] == flowing
    finally:
        target.close()


def test_a_mirror_authenticates_to_its_source_like_a_client_and_acts_as_bridge_name_here(tmp_path):
    src = ClusterProcesses(tmp_path / "source", n=1, curve=True, partitions=1, name="source").start()
    target = ClusterProcesses(tmp_path / "target", n=1, curve=True, name="target")
    try:
        secret_file, _, _ = src.add_client_key("mirror")  # the source knows the mirror as User:mirror
        with Admin(src.bootstrap, **src.client_options()) as admin:
            admin.create_topic("plant.s", partitions=1)
            # read and describe on the source: no group, no write
            admin.create_acls([AclBinding("User:mirror", "topic", "plant.", operation=op, pattern="prefixed")
                               for op in ("read", "describe")])
        with Producer(bootstrap=src.bootstrap, **src.client_options()) as p:
            for i in range(20):
                p.send("plant.s", value=b"s%d" % i, timestamp_ms=T0 + i)
            p.flush(timeout=30)
        mirror = mirror_table(f"zbroker://{src.bootstrap}") + (f'curve_server_key = "{src.broker_publics[1].decode()}"\n'
                                                                 f'curve_secret_key_file = "{secret_file}"\n')
        target.config.write_text(target.config.read_text() + mirror)
        target.start()
        wait_until(target.agreed_controller, timeout=20, what="a controller")
        options = target.client_options()
        cli = ["--curve-secret-key-file", options["curve_secret_key_file"], "--curve-server-key", options["curve_server_key"]]

        def refused():
            status = mirror_status(target.bootstrap, *cli)
            return status if status and status["last_error"] and "Bridge:m may not" in status["last_error"] else None
        status = wait_until(refused, timeout=30, interval=0.3, what="Bridge:m refused on the target")
        assert status["mirrored"] == 0
        with Admin(target.bootstrap, **options) as admin:
            assert "a.plant.s" not in admin.list_topics()
            admin.create_acls([AclBinding("Bridge:m", "topic", "a.", operation="all", pattern="prefixed"),
                               AclBinding("Bridge:m", "group", "mirror.m", operation="all")])
        wait_topic_options = dict(options, request_timeout_ms=3000)

        def mirrored():
            with Admin(target.bootstrap, **wait_topic_options) as admin:
                if "a.plant.s" not in admin.list_topics():
                    return None
            return (mirror_status(target.bootstrap, *cli) or {}).get("mirrored") == 20
        wait_until(mirrored, timeout=30, interval=0.3, what="the records mirrored once Bridge:m may")
        with Consumer(bootstrap=target.bootstrap, enable_auto_commit=False, **options) as c:
            c.assign([("a.plant.s", 0)])
            got = []
            deadline = time.monotonic() + 20
            while len(got) < 20 and time.monotonic() < deadline:
                got += [(r.timestamp, r.value) for r in c.poll(timeout_ms=200)]
        assert got == [(T0 + i, b"s%d" % i) for i in range(20)]
    finally:
        target.close()
        src.close()


#: what docs/bridge.md (Security) lists for a mirror on the target cluster, and nothing more
MIRROR_TARGET_ACLS = [*(("topic", "a.", op, "prefixed") for op in ("create", "write", "describe", "alter", "read")),
                      *(("group", "mirror.m", op, "literal") for op in ("read", "describe"))]


def test_a_mirror_with_exactly_the_documented_acls_copies_and_commits(tmp_path, source):
    sent = seeded(source, "plant.acl", 200)
    target = ClusterProcesses(tmp_path / "target", n=1, curve=True, name="target")
    target.config.write_text(target.config.read_text() + mirror_table(f"zbroker://{source.bootstrap}"))
    try:
        target.start()
        wait_until(target.agreed_controller, timeout=20, what="a controller")
        options = target.client_options()
        cli = ["--curve-secret-key-file", options["curve_secret_key_file"], "--curve-server-key", options["curve_server_key"]]
        with Admin(target.bootstrap, **options) as admin:
            admin.create_acls([AclBinding("Bridge:m", kind, name, operation=op, pattern=pattern)
                               for kind, name, op, pattern in MIRROR_TARGET_ACLS])

        def committed():
            status = mirror_status(target.bootstrap, *cli)
            parts = (status or {}).get("partitions") or []
            done = len(parts) == 2 and all(p["source_end"] == 100 and p["committed"] == 100 for p in parts)
            return status if done and not status["failing"] else None
        status = wait_until(committed, timeout=60, interval=0.3, what="every position committed under the documented ACLs")
        assert status["state"] == "running" and status["mirrored"] == 200
        with Consumer(bootstrap=target.bootstrap, enable_auto_commit=False, **options) as c:
            c.assign([("a.plant.acl", 0), ("a.plant.acl", 1)])
            got: dict = collections.defaultdict(list)
            deadline = time.monotonic() + 20
            while sum(map(len, got.values())) < 200 and time.monotonic() < deadline:
                for r in c.poll(timeout_ms=200):
                    got[r.partition].append((r.timestamp, r.key, r.value, tuple(sorted(r.headers.items()))))
        assert dict(got) == by_partition(sent)
    finally:
        target.close()


def test_a_kafka_source_with_sasl_over_tls_takes_source_config(tmp_path):
    from kafka_sasl_support import add_user, start_broker

    src = start_broker(tmp_path / "source", tls=True, mechanisms=("SCRAM-SHA-256",))
    target = None
    try:
        add_user(src, "alice", "alice-secret")
        with Admin(src.bootstrap) as admin:  # the native door: no SASL there
            admin.create_topic("plant.sasl", partitions=1)
        sent = produce(src.bootstrap, "plant.sasl", 0, 20, partitions=1)
        settings = {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": "alice",
                    "sasl.password": "alice-secret", "ssl.ca.location": src.pki["ca"]}
        def table(**changed):
            return "[mirror.source_config]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in {**settings, **changed}.items())
        mirrors = (mirror_table(f"kafka://{src.kafka_bootstrap}") + table()
                   + mirror_table(f"kafka://{src.kafka_bootstrap}", name="bad", prefix="b.") + table(**{"sasl.password": "wrong"}))
        target = cluster(tmp_path / "target", n=1, mirror=mirrors, name="target")
        wait_topic(target.bootstrap, "a.plant.sasl")
        assert dict(read_all(target.bootstrap, "a.plant.sasl", 1, 20)) == by_partition(sent)

        def refused():
            run = run_cli("bridge", "status", "--json", bootstrap=target.bootstrap, timeout=30)
            bad = [e for e in json.loads(run.stdout) if e.get("name") == "bad"]
            return bad[0] if bad and bad[0]["state"] == "error" else None
        bad = wait_until(refused, timeout=30, interval=0.3, what="the mirror with a wrong password in error")
        assert "SASL authentication error" in bad["last_error"], bad["last_error"]  # at once, and it says why
        assert bad["mirrored"] == 0 and "b.plant.sasl" not in Admin(target.bootstrap).list_topics()
    finally:
        if target is not None:
            target.close()
        src.close()
