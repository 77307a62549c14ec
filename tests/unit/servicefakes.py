"""Helpers for the service unit tests: Apps built without sockets, a recording PeerChannel,
Raft stepped by hand, and settling a service's answer (a value, a Completion, an error)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from storage import build_native_batch
from zbroker.app import App
from zbroker.config import ClusterConfig, parse_config, single_node_config
from zbroker.context import INTERNAL, Completion, PeerReply
from zbroker.control.metadata import PARTITION_CHANGE_RECORD
from zbroker.control.topicadmin import CreateTopic
from zbroker.core.fetch import FetchedPartition, FetchPartition, FetchRequest
from zbroker.errors import RequestError

START_MS = 1_000


@dataclass
class Call:
    broker_id: int
    message: Any
    on_reply: Callable[[PeerReply, int], None]
    timeout_ms: int
    now_ms: int


@dataclass
class RecordingPeers:
    """A PeerChannel that records what services send; tests answer calls by hand."""

    sent: list[tuple[int, Any]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    def send(self, broker_id: int, message: Any) -> None:
        self.sent.append((broker_id, message))

    def call(self, broker_id, message, on_reply, timeout_ms, now_ms) -> None:
        self.calls.append(Call(broker_id, message, on_reply, timeout_ms, now_ms))

    def raft(self, kind: str) -> list[dict]:
        """The fields of the Raft messages of ``kind`` sent so far."""
        return [m.fields for _, m in self.sent if hasattr(m, "fields") and m.fields["type"] == kind]


def three_brokers(tmp_path) -> ClusterConfig:
    """Brokers 1, 2 and 3, each with its own data dir under ``tmp_path``."""
    brokers = [{"id": i, "port": 9500 + 10 * i, "data_dir": f"d{i}"} for i in (1, 2, 3)]
    return parse_config({"broker": brokers}, base_dir=tmp_path)


def single_app(tmp_path, peers=None, now=START_MS) -> App:
    return App(single_node_config(str(tmp_path / "data")), 1, now, lambda: now, peers or RecordingPeers())


def raft_from(app: App, src: int, kind: str, now: int, **fields) -> None:
    """Deliver a Raft message from broker ``src`` in the app's current epoch (unless given)."""
    app.on_raft_message({"type": kind, "from": src, "epoch": fields.pop("epoch", app.control.epoch), **fields}, None, now)


def follow(app: App, controller: int, now: int, epoch: int = 1) -> None:
    """Make ``app`` a follower that knows ``controller`` leads ``epoch``."""
    raft_from(app, controller, "raft_begin_epoch", now, epoch=epoch, leader=controller)
    assert app.control.controller == controller and not app.control.is_controller


def elect(app: App, now: int) -> int:
    """Make broker 1 of a three-broker app the controller (broker 2 votes for it); returns
    the time it happened.  Nothing is committed until :func:`acknowledge` says broker 2 has it."""
    now += 2 * app.config.setting("election_timeout_ms")
    app.tick(now)  # the election timer fires: pre-votes go out
    raft_from(app, 2, "raft_pre_vote_response", now, proposed=app.control.epoch + 1, granted=True)
    raft_from(app, 2, "raft_vote_response", now, granted=True)
    assert app.control.is_controller
    acknowledge(app, now)
    assert app.control.ready
    return now


def acknowledge(app: App, now: int, follower: int = 2) -> None:
    """``follower`` fetches from the controller's log end: what it holds is committed."""
    metalog = app.control.metalog
    raft_from(app, follower, "raft_fetch", now, offset=metalog.end_offset(), last_fetched_epoch=metalog.last_epoch())
    app.tick(now)


def settle(answer):
    """A service's answer as a value: a settled Completion's value, or its RequestError raised."""
    if isinstance(answer, Completion):
        assert answer.done, "the completion has not settled"
        if answer.error is not None:
            raise answer.error
        return answer.value
    return answer


def error_code(call: Callable[[], Any]) -> int:
    """The code of the RequestError ``call`` raises (directly or through its Completion)."""
    with pytest.raises(RequestError) as info:
        settle(call())
    return info.value.code


# -- the data path ------------------------------------------------------------------------


def records_batch(n: int = 1, ts: int = START_MS, value: bytes = b"v", **header) -> bytes:
    """One native batch of ``n`` records at ``ts`` (``header``: producer_id, producer_epoch,
    base_sequence)."""
    return build_native_batch([(ts, None, value, None)] * n, **header)


def create_topic(app: App, name: str = "t", now: int = START_MS, **fields) -> None:
    """Create a topic through TopicAdmin and wait for its commit (single node: at once)."""
    settle(app.admin.create_topic(INTERNAL, CreateTopic(name, **fields), now))


def leading_cluster(tmp_path) -> tuple[App, int]:
    """Broker 1 of three, elected controller, with topic ``t``: 3 partitions on all three
    brokers, all in sync; broker 1 leads ``t-0`` (2 leads ``t-1``, 3 leads ``t-2``).
    Returns the app and the time; every peer is still in its start-up grace then."""
    app = App(three_brokers(tmp_path), 1, START_MS, lambda: START_MS, RecordingPeers())
    now = elect(app, START_MS)
    done = app.admin.create_topic(INTERNAL, CreateTopic("t", 3, 3), now)
    acknowledge(app, now)
    settle(done)
    assert [pm.leader for pm in app.control.image.get("t").partitions] == [1, 2, 3]
    assert app.partitions.get(("t", 0)).isr == [1, 2, 3]
    return app, now


def commit_records(app: App, now: int, *records: dict) -> None:
    """As the controller of three: propose metadata records, broker 2 acknowledges, applied."""
    app.control.propose(list(records))
    acknowledge(app, now)


def partition_change(leader: int, leader_epoch: int, isr: list[int], topic: str = "t", partition: int = 0) -> dict:
    return {"type": PARTITION_CHANGE_RECORD, "topic": topic, "partition": partition, "leader": leader,
            "leader_epoch": leader_epoch, "isr": isr}


def follower_fetch(app: App, replica: int, offset: int, now: int, epoch: int = 0, last_fetched_epoch: int | None = None,
                   topic: str = "t", partition: int = 0) -> FetchedPartition:
    """``replica``'s fetch of one partition, answered at once (its last fetched epoch: ``epoch``
    unless given)."""
    last = epoch if last_fetched_epoch is None else last_fetched_epoch
    req = FetchRequest([FetchPartition(topic, partition, offset, leader_epoch=epoch, last_fetched_epoch=last)],
                       max_wait_ms=0, replica_id=replica)
    (entry,) = settle(app.fetch.fetch(INTERNAL, req, now)).partitions
    return entry
