"""Quotas and per-connection limits against a real broker process, through the native door:
Python clients and raw frames, quotas set with the CLI and the Admin client while the broker
runs.  Assertions are on the throttle times the answers report, on the data and on error
codes, never on how long anything took."""

from __future__ import annotations

import pytest

from clients import Admin, Consumer, Producer
from storage.batch import build_native_batch
from support import RawClient, run_cli, running_broker, wait_until

pytestmark = pytest.mark.timeout(120)

DEFAULT = "<default>"
ANONYMOUS = "User:ANONYMOUS"  # security off: every client's principal
MAX_THROTTLE_MS = 1000  # short throttles keep the tests short; what is asserted is that they are reported


@pytest.fixture
def broker(tmp_path):
    yield from running_broker(tmp_path, f"[cluster]\nquota_max_throttle_ms = {MAX_THROTTLE_MS}\n"
                                        "max_in_flight_per_connection = 4\n\n[[broker]]\nid = 1\n")


def produce_raw(raw: RawClient, size: int, topic: str = "t") -> dict:
    header, _ = raw.call("produce", (build_native_batch([(0, None, b"v" * size, None)]),),
                         batches=[{"topic": topic, "partition": 0}], timeout=10)
    assert header["error"] == 0 and header["results"][0]["error"] == 0, header
    return header


def test_the_cli_sets_lists_and_removes_quotas(broker):
    def cli(*args):
        proc = run_cli("quota", *args, bootstrap=broker.bootstrap)
        assert proc.returncode == 0, proc.stderr.decode()
        return proc.stdout.decode()

    assert cli("list") == "no quotas set\n"
    assert cli("set", "--default", "--produce-bytes-per-s", "1000") == f"quota of {DEFAULT}: produce 1000 B/s\n"
    assert "fetch 2048.5 B/s" in cli("set", "--principal", "User:app", "--fetch-bytes-per-s", "2048.5")
    cli("set", "--principal", "User:app", "--produce-bytes-per-s", "4096")
    assert cli("list").splitlines() == ["PRINCIPAL  PRODUCE_BYTES_PER_S  FETCH_BYTES_PER_S",
                                        f"{DEFAULT}  1000                 -",
                                        "User:app   4096                 2048.5"]
    assert cli("remove", "--principal", "User:app", "--fetch") == "removed the fetch quota of User:app\n"
    assert cli("list", "--principal", "User:app").splitlines()[1].split() == ["User:app", "4096", "-"]
    cli("remove", "--default")
    cli("remove", "--principal", "User:app")
    assert cli("list") == "no quotas set\n"
    for bad in (["set", "--default"], ["set", "--produce-bytes-per-s", "5"], ["set", "--default", "--principal", "User:a",
                                                                               "--produce-bytes-per-s", "5"]):
        assert run_cli("quota", *bad, bootstrap=broker.bootstrap).returncode == 2
    refused = run_cli("quota", "set", "--principal", "alice", "--produce-bytes-per-s", "5", bootstrap=broker.bootstrap)
    assert refused.returncode == 1 and "User:NAME" in refused.stderr.decode()


def test_a_native_producer_over_its_quota_is_slowed_and_every_record_is_kept(broker):
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("t", partitions=1)
        admin.set_quota(DEFAULT, produce_bytes_per_s=2000)
    values = [b"%05d" % i + b"p" * 2000 for i in range(60)]
    with Producer(broker.bootstrap, linger_ms=0, batch_size=4096) as producer:
        futures = [producer.send("t", v) for v in values]
        producer.flush(60)
        offsets = [f.result(30).offset for f in futures]
        assert producer.throttle.count > 0 and 0 < producer.throttle.last_ms <= MAX_THROTTLE_MS
    assert offsets == list(range(60))
    with Consumer("t", bootstrap=broker.bootstrap) as consumer:
        got = []
        wait_until(lambda: got.extend(r.value for r in consumer.poll(500)) or len(got) >= 60, 30, what="every record")
    assert got == values


def test_the_default_applies_until_a_principal_has_its_own_quota_and_changes_apply_at_once(broker):
    raw = RawClient(broker.bootstrap)
    assert raw.call("create_topic", topic="t", partitions=1)[0]["error"] == 0
    assert produce_raw(raw, 30_000)["throttle_time_ms"] == 0  # no quota
    with Admin(broker.bootstrap) as admin:
        admin.set_quota(DEFAULT, produce_bytes_per_s=1000)
        assert produce_raw(raw, 30_000)["throttle_time_ms"] == MAX_THROTTLE_MS  # the default applies to ANONYMOUS
        admin.set_quota(ANONYMOUS, produce_bytes_per_s=10**9)
        assert produce_raw(raw, 30_000)["throttle_time_ms"] == 0  # its own quota wins
        admin.set_quota(ANONYMOUS, fetch_bytes_per_s=1000)  # its produce quota stays
        assert produce_raw(raw, 30_000)["throttle_time_ms"] == 0
        header, frames = raw.call("fetch", max_wait_ms=0, partitions=[{"topic": "t", "partition": 0, "offset": 0}], timeout=10)
        assert header["throttle_time_ms"] == MAX_THROTTLE_MS and len(frames[0]) > 30_000
        admin.remove_quota(ANONYMOUS, fetch=False)  # back to the default's produce quota
        assert produce_raw(raw, 30_000)["throttle_time_ms"] > 0
        admin.remove_quota(DEFAULT)
        assert produce_raw(raw, 30_000)["throttle_time_ms"] == 0
        assert [q.principal for q in admin.list_quotas()] == [ANONYMOUS]
    raw.close()


def test_a_native_consumer_over_its_fetch_quota_reads_everything(broker):
    values = [b"%05d" % i + b"f" * 3000 for i in range(40)]
    with Admin(broker.bootstrap) as admin:  # one partition: the records are read in the order sent
        admin.create_topic("t", partitions=1)
    with Producer(broker.bootstrap) as producer:
        for v in values:
            producer.send("t", v)
        producer.flush(30)
    with Admin(broker.bootstrap) as admin:
        admin.set_quota(ANONYMOUS, fetch_bytes_per_s=1000)
    with Consumer("t", bootstrap=broker.bootstrap, max_partition_fetch_bytes=16_384) as consumer:
        got = []
        wait_until(lambda: got.extend(r.value for r in consumer.poll(500)) or len(got) >= 40, 60, what="every record")
        assert consumer.throttle.count > 0 and consumer.throttle.total_ms > 0
    assert got == values


def test_the_in_flight_limit_refuses_the_next_request_and_the_connection_goes_on(broker):
    raw = RawClient(broker.bootstrap)
    other = RawClient(broker.bootstrap)
    assert other.call("create_topic", topic="t", partitions=1)[0]["error"] == 0
    waiting = [raw.send({"type": "fetch", "max_wait_ms": 60_000, "partitions": [{"topic": "t", "partition": 0, "offset": 0}]})
               for _ in range(4)]  # long polls on an empty partition: four answers owed
    refused_cid = raw.send({"type": "metadata", "topics": []})
    header, _ = raw.recv(10)
    assert header["cid"] == refused_cid and header["error"] == 89  # THROTTLING_QUOTA_EXCEEDED, retriable
    assert "max_in_flight_per_connection" in header["error_message"]
    assert other.call("metadata", topics=[])[0]["error"] == 0  # another connection is not held to it
    produce_raw(other, 10)  # the long polls end with data
    answered = sorted(raw.recv(10)[0]["cid"] for _ in waiting)
    assert answered == sorted(waiting)
    assert raw.call("metadata", topics=[])[0]["error"] == 0  # and the connection goes on
    raw.close()
    other.close()
