"""Consumer-group administration (Admin and `zbroker groups`) against a real broker."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from clients import Admin, Consumer, Producer
from clients.structs import GroupDescription, MemberInfo, OffsetInfo
from support import one_line_error, run_cli, wait_until
from zbroker.errors import GroupIdNotFoundError, NonEmptyGroupError

TOPIC = "orders"
PER_PARTITION = 5


def zb(bootstrap: str, *args: str, timeout: float = 30):
    return run_cli("--bootstrap", bootstrap, "groups", *args, timeout=timeout)


def produce(broker, count_per_partition: int = PER_PARTITION) -> list:
    """``count_per_partition`` records into each of the topic's 2 partitions; their metadata."""
    with Producer(bootstrap=broker.bootstrap) as p:
        futs = [p.send(TOPIC, b"%d-%d" % (part, i), partition=part) for part in (0, 1) for i in range(count_per_partition)]
        p.flush(10)
        return [f.result(10) for f in futs]


def setup_topic(broker) -> None:
    with Admin(broker.bootstrap) as admin:
        admin.create_topic(TOPIC, partitions=2, replication_factor=1)
    produce(broker)


def consume_until(consumer: Consumer, pred, timeout: float = 20.0) -> list:
    """Poll until ``pred(records so far)`` holds or the deadline passes."""
    out: list = []
    deadline = time.monotonic() + timeout
    while not pred(out) and time.monotonic() < deadline:
        out.extend(consumer.poll(timeout_ms=200))
    return out


def group_consumer(broker, **kw) -> Consumer:
    return Consumer(TOPIC, group="g", bootstrap=broker.bootstrap, session_timeout_ms=5000, enable_auto_commit=False,
                    client_id="admin-test", **kw)


def first_offsets(records) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in records:
        out[r.partition] = min(out.get(r.partition, r.offset), r.offset)
    return out


def active_group(broker) -> Consumer:
    """A consumer of group "g" that has read everything and committed 3 (p0) and 5 (p1)."""
    setup_topic(broker)
    c = group_consumer(broker)
    got = consume_until(c, lambda recs: len(recs) >= 2 * PER_PARTITION)
    assert len(got) == 2 * PER_PARTITION
    c.commit({(TOPIC, 0): 3, (TOPIC, 1): 5})
    return c


def stable(admin: Admin) -> GroupDescription:
    return wait_until(lambda: (lambda d: d if d.state == "stable" and d.members and d.members[0].assignment else None)(
        admin.describe_group("g")), 20, 0.05, "a stable group")


@pytest.mark.timeout(60)
def test_list_and_describe_an_active_group(broker):
    c = active_group(broker)
    try:
        with Admin(broker.bootstrap) as admin:
            assert "g" in admin.list_groups()
            desc = stable(admin)
            assert desc.group == "g" and desc.state == "stable"
            assert len(desc.members) == 1
            m = desc.members[0]
            assert isinstance(m, MemberInfo) and m.client_id == "admin-test"
            assert sorted(m.assignment) == [(TOPIC, 0), (TOPIC, 1)]
            assert m.topics == (TOPIC,) and m.member_epoch > 0 and m.instance_id is None
            assert desc.offsets == {(TOPIC, 0): OffsetInfo(3, 5, 2), (TOPIC, 1): OffsetInfo(5, 5, 0)}
            assert desc.group_epoch > 0

            # more records: log end and lag move, the committed offsets do not
            produce(broker, 2)
            desc = admin.describe_group("g")
            assert desc.offsets == {(TOPIC, 0): OffsetInfo(3, 7, 4), (TOPIC, 1): OffsetInfo(5, 7, 2)}

            with pytest.raises(NonEmptyGroupError):
                admin.reset_offsets("g", TOPIC, to_earliest=True)
            with pytest.raises(NonEmptyGroupError):
                admin.delete_group("g")
            assert admin.describe_group("g").offsets[(TOPIC, 0)].committed == 3  # nothing changed

        out = zb(broker.bootstrap, "list")
        assert out.returncode == 0, out.stderr
        assert "g" in out.stdout.decode().split()

        out = zb(broker.bootstrap, "describe", "g")
        assert out.returncode == 0, out.stderr
        text = out.stdout.decode()
        assert "Group: g  state: stable  members: 1" in text
        lines = text.splitlines()
        header = next(line for line in lines if line.startswith("TOPIC"))
        assert header.split() == ["TOPIC", "PARTITION", "MEMBER", "CLIENT", "COMMITTED", "LOG_END", "LAG"]
        rows = {tuple(line.split()[:2]): line.split() for line in lines if line.startswith(TOPIC + " ")}
        assert rows[(TOPIC, "0")][3:] == ["admin-test", "3", "7", "4"]
        assert rows[(TOPIC, "1")][3:] == ["admin-test", "5", "7", "2"]
        assert rows[(TOPIC, "0")][2] == m.member_id
        assert any(m.member_id in line and "2" in line.split() for line in lines[lines.index("Members:"):])

        out = zb(broker.bootstrap, "reset-offsets", "g", "--topic", TOPIC, "--to-earliest")
        assert out.returncode == 1
        line = one_line_error(out)
        assert "stop the consumers" in line
    finally:
        c.close()


@pytest.mark.timeout(60)
def test_reset_offsets_after_the_consumers_stop(broker):
    c = active_group(broker)
    c.close()
    with Admin(broker.bootstrap) as admin:
        wait_until(lambda: not admin.describe_group("g").members, 10, 0.05, "an empty group")
        assert admin.describe_group("g").state == "empty"

        assert admin.reset_offsets("g", TOPIC, to_earliest=True) == {(TOPIC, 0): 0, (TOPIC, 1): 0}
        assert admin.describe_group("g").offsets == {(TOPIC, 0): OffsetInfo(0, 5, 5), (TOPIC, 1): OffsetInfo(0, 5, 5)}
        with group_consumer(broker) as c2:
            got = consume_until(c2, lambda recs: len(recs) >= 2 * PER_PARTITION)
        assert first_offsets(got) == {0: 0, 1: 0}
        assert len(got) == 2 * PER_PARTITION

        assert admin.reset_offsets("g", TOPIC, to_latest=True) == {(TOPIC, 0): 5, (TOPIC, 1): 5}
        assert admin.describe_group("g").offsets[(TOPIC, 1)] == OffsetInfo(5, 5, 0)

        # clamped into [log start, log end]; only the partitions asked for
        assert admin.reset_offsets("g", TOPIC, to_offset=99, partitions=[1]) == {(TOPIC, 1): 5}
        assert admin.reset_offsets("g", TOPIC, to_offset=2) == {(TOPIC, 0): 2, (TOPIC, 1): 2}
        with group_consumer(broker) as c2:
            got = consume_until(c2, lambda recs: len(recs) >= 2 * (PER_PARTITION - 2))
        assert first_offsets(got) == {0: 2, 1: 2}

        # by time: records produced after a moment in time start at offset 5 of each partition
        with Producer(bootstrap=broker.bootstrap) as p:
            last = max(p.send(TOPIC, b"x", partition=part).result(10).timestamp for part in (0, 1))
        cut_ms = last + 1
        wait_until(lambda: time.time() * 1000 > cut_ms + 2, 5, 0.001, "the clock to move on")
        later = produce(broker, 2)
        assert all(r.timestamp > cut_ms for r in later)
        moment = datetime.fromtimestamp(cut_ms / 1000)  # naive: local time
        assert admin.reset_offsets("g", TOPIC, to_datetime=moment) == {(TOPIC, 0): 6, (TOPIC, 1): 6}
        assert admin.reset_offsets("g", TOPIC, to_datetime=moment.astimezone().isoformat()) == {(TOPIC, 0): 6, (TOPIC, 1): 6}
        with group_consumer(broker) as c2:
            got = consume_until(c2, lambda recs: len(recs) >= 4)
        assert first_offsets(got) == {0: 6, 1: 6}
        # a time after every record: the log end
        assert admin.reset_offsets("g", TOPIC, to_datetime="2999-01-01T00:00:00+00:00") == {(TOPIC, 0): 8, (TOPIC, 1): 8}

        with pytest.raises(ValueError):
            admin.reset_offsets("g", TOPIC)
        with pytest.raises(ValueError):
            admin.reset_offsets("g", TOPIC, to_earliest=True, to_offset=1)

    out = zb(broker.bootstrap, "reset-offsets", "g", "--topic", TOPIC, "--to-offset", "1", "--partition", "0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == [f"{TOPIC}-0 -> 1"]
    with Admin(broker.bootstrap) as admin:
        assert admin.describe_group("g").offsets[(TOPIC, 0)].committed == 1


@pytest.mark.timeout(60)
def test_delete_group(broker):
    c = active_group(broker)
    c.close()
    with Admin(broker.bootstrap) as admin:
        wait_until(lambda: not admin.describe_group("g").members, 10, 0.05, "an empty group")
        admin.delete_group("g")
        assert "g" not in admin.list_groups()
        with pytest.raises(GroupIdNotFoundError):
            admin.describe_group("g")
        with pytest.raises(GroupIdNotFoundError):
            admin.delete_group("g")
        with pytest.raises(GroupIdNotFoundError):
            admin.delete_group("never-there")

    out = zb(broker.bootstrap, "delete", "never-there")
    assert out.returncode == 1
    assert "GroupIdNotFound" in one_line_error(out)

    with Admin(broker.bootstrap) as admin:
        admin.reset_offsets("h", TOPIC, to_latest=True)  # a group with offsets only
        assert "h" in admin.list_groups()
    out = zb(broker.bootstrap, "delete", "h")
    assert out.returncode == 0, out.stderr
    out = zb(broker.bootstrap, "list")
    assert out.returncode == 0 and "h" not in out.stdout.decode().split()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("targets", [(), ("--to-earliest", "--to-latest"), ("--to-offset", "3", "--to-datetime", "2024-01-01T00:00:00")])
def test_reset_offsets_needs_exactly_one_target(targets):
    out = zb("127.0.0.1:1", "reset-offsets", "g", "--topic", TOPIC, *targets)  # refused before any connection
    assert out.returncode == 2
    assert "exactly one of" in one_line_error(out)
    assert out.stdout == b""
