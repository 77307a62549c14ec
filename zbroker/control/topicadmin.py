"""Topic administration: create, delete, alter, add partitions -- through the controller.

A broker that is not the controller forwards these requests to the controller
(over its DEALER to that broker) and relays the answer; with no controller known
it answers NOT_CONTROLLER (retriable).  The controller checks the request against
its committed image (and the topics already being created or deleted), turns it
into metadata records, proposes them through Raft and answers only once they are
committed and applied -- so an acknowledged topic exists on a majority, survives
any controller failover, and is in this broker's image before the answer leaves.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import TYPE_CHECKING

from zbroker import protocol as P
from zbroker.config import TOPIC_CONFIG, ConfigError, validate_topic_config
from zbroker.controller import new_topic
from zbroker.errors import ErrorCode
from zbroker.metadata import (
    ADD_PARTITIONS_RECORD,
    REMOVE_TOPIC_RECORD,
    TOPIC_CONFIG_RECORD,
    TopicMeta,
    topic_name_problem,
    topic_record,
)
from zbroker.purgatory import DelayedOperation
from zbroker.raft import NotLeader

if TYPE_CHECKING:
    from zbroker.broker import Broker

log = logging.getLogger(__name__)

META_KEY = "__metadata_applied__"  # purgatory key: the image moved forward
ADMIN_TIMEOUT_MS = 30_000


class TopicAdmin:
    """Mixin of :class:`zbroker.broker.Broker`: the admin request handlers."""

    def _admin_request(self: Broker, peer, header, fields, frames, now_ms, build) -> dict | None:
        """Run ``build(fields, now_ms) -> (records, topic names)`` as the controller, or forward the request."""
        kind, cid = header["type"], header["cid"]
        if not self.control.is_controller:
            return self._forward_to_controller(peer, header, frames, now_ms)
        records, names = build(fields, now_ms)
        if not records:  # validate_only, or nothing to change
            return P.response(kind, cid)
        return self._admin_commit(peer, header, now_ms, records, lambda: P.response(kind, cid), names)

    def _admin_commit(self: Broker, peer, header, now_ms, records, make_response, names=()) -> None:
        """Propose ``records`` as the controller; answer ``make_response()`` once they are committed."""
        kind, cid = header["type"], header["cid"]
        epoch = self.control.epoch
        try:
            end = self.control.propose(records)
        except NotLeader as exc:
            raise P.RequestError(ErrorCode.NOT_CONTROLLER, str(exc)) from None
        self._pending_topics.update(dict.fromkeys(names, end))
        self._reconcile(now_ms)

        def try_complete() -> bool:
            if self.control.epoch != epoch or not self.control.is_controller:
                self._reply(peer, P.response(kind, cid, ErrorCode.NOT_CONTROLLER, "controller changed before the change was committed; retry"), [])
                return True
            if self.control.applied >= end:
                self._reply(peer, make_response(), [])
                return True
            return False

        def on_expire() -> None:
            self._reply(peer, P.response(kind, cid, ErrorCode.REQUEST_TIMED_OUT, "the change was not committed in time (is a majority of brokers up?)"), [])

        self.purgatory.park(DelayedOperation(now_ms + ADMIN_TIMEOUT_MS, [META_KEY], try_complete, on_expire))
        return None

    def _forward_to_controller(self: Broker, peer, header, frames, now_ms) -> dict | None:
        controller = self.control.controller
        if controller < 0 or controller == self.broker_id:
            raise P.RequestError(ErrorCode.NOT_CONTROLLER, "no controller elected yet; retry")
        self._forward_seq += 1
        fwd_cid = self._forward_seq
        self._forwards[fwd_cid] = (peer, header["cid"], header["type"], now_ms + ADMIN_TIMEOUT_MS)
        self.peer_outbox.append((controller, {**header, "cid": fwd_cid}, frames[1:]))
        return None

    def _forward_reply(self: Broker, header: dict, frames: list[bytes]) -> None:
        """The controller's answer to a request we forwarded: relay it to the client."""
        entry = self._forwards.pop(header["cid"], None)
        if entry is None:
            return  # timed out already
        peer, cid, _kind, _deadline = entry
        self._reply(peer, {**header, "cid": cid}, frames[1:])

    def _expire_forwards(self: Broker, now_ms: int) -> None:
        for fwd_cid, (peer, cid, kind, deadline) in list(self._forwards.items()):
            if deadline <= now_ms:
                del self._forwards[fwd_cid]
                self._reply(peer, P.response(kind, cid, ErrorCode.REQUEST_TIMED_OUT, "the controller did not answer in time"), [])

    # -- the requests --------------------------------------------------------------------

    def _checked_overrides(self: Broker, config: dict) -> dict:
        try:
            return validate_topic_config(config)
        except ConfigError as exc:
            raise P.RequestError(ErrorCode.INVALID_CONFIG, str(exc)) from None

    def _known_topic(self: Broker, name: str) -> TopicMeta:
        topic = self.image.get(name)
        if topic is None or name in self._pending_topics:
            raise P.RequestError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}")
        return topic

    def _build_create(self: Broker, fields: dict, now_ms: int, internal: bool = False):
        name = fields["topic"]
        problem = topic_name_problem(name, allow_internal=internal)
        if problem:
            raise P.RequestError(ErrorCode.INVALID_TOPIC_EXCEPTION, problem)
        if self.image.get(name) is not None or name in self._pending_topics:
            raise P.RequestError(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        partitions = fields.get("partitions")
        if partitions is None:
            partitions = self.config.default_partitions()
        if not 1 <= partitions <= 100_000:
            raise P.RequestError(ErrorCode.INVALID_PARTITIONS, f"partitions must be from 1 to 100000, got {partitions}")
        rf = fields.get("replication_factor")
        if rf is None:
            rf = self.config.default_replication_factor()
        brokers = [b.id for b in self.config.brokers]
        if not 1 <= rf <= len(brokers):
            raise P.RequestError(
                ErrorCode.INVALID_REPLICATION_FACTOR, f"replication factor {rf} must be from 1 to the {len(brokers)} configured brokers"
            )
        overrides = self._checked_overrides(fields.get("config") or {})
        if fields.get("validate_only"):
            return [], ()
        topic = new_topic(self.image, brokers, name, partitions, rf, overrides, self.control.live_brokers(now_ms))
        topic.internal = internal
        log.info("creating topic=%s partitions=%d rf=%d overrides=%s", name, partitions, rf, overrides)
        return [topic_record(topic)], (name,)

    def _build_delete(self: Broker, fields: dict, now_ms: int):
        topic = self._known_topic(fields["topic"])
        log.info("deleting topic=%s", topic.name)
        return [{"type": REMOVE_TOPIC_RECORD, "name": topic.name}], (topic.name,)

    def _build_alter(self: Broker, fields: dict, now_ms: int):
        topic = self._known_topic(fields["topic"])
        removals = [k for k, v in fields["config"].items() if v is None]
        for key in removals:
            if key not in TOPIC_CONFIG:
                raise P.RequestError(ErrorCode.INVALID_CONFIG, f"{key}: unknown topic setting")
        changes = self._checked_overrides({k: v for k, v in fields["config"].items() if v is not None})
        overrides = {k: v for k, v in topic.overrides.items() if k not in removals}
        overrides.update(changes)
        log.info("altering topic=%s set=%s removed=%s", topic.name, changes, removals)
        return [{"type": TOPIC_CONFIG_RECORD, "name": topic.name, "overrides": overrides}], ()

    def _build_add_partitions(self: Broker, fields: dict, now_ms: int):
        topic = self._known_topic(fields["topic"])
        if topic.internal:
            raise P.RequestError(ErrorCode.INVALID_PARTITIONS, f"{topic.name} is internal: its partition count is fixed")
        total, current = fields["total"], topic.partition_count
        if not current < total <= 100_000:
            raise P.RequestError(ErrorCode.INVALID_PARTITIONS, f"{topic.name} has {current} partitions: the new total must be more, at most 100000")
        brokers = [b.id for b in self.config.brokers]
        rf = len(topic.partitions[0].replicas)
        live = self.control.live_brokers(now_ms)
        added = new_topic(self.image, brokers, topic.name, total - current, rf, {}, live).partitions
        for i, pm in enumerate(added):
            pm.partition = current + i
        log.info("adding partitions to topic=%s: %d -> %d", topic.name, current, total)
        return [{"type": ADD_PARTITIONS_RECORD, "name": topic.name, "partitions": [asdict(pm) for pm in added]}], ()

    def _create_partitions(self: Broker, peer, header, fields, frames, now_ms):
        return self._admin_request(peer, header, fields, frames, now_ms, self._build_add_partitions)

    def _create_topic(self: Broker, peer, header, fields, frames, now_ms):
        return self._admin_request(peer, header, fields, frames, now_ms, self._build_create)

    def _delete_topic(self: Broker, peer, header, fields, frames, now_ms):
        return self._admin_request(peer, header, fields, frames, now_ms, self._build_delete)

    def _alter_topic_config(self: Broker, peer, header, fields, frames, now_ms):
        return self._admin_request(peer, header, fields, frames, now_ms, self._build_alter)

    def _auto_create(self: Broker, name: str, now_ms: int) -> None:
        """Start creating a topic a producer asked for (answers nobody; metadata is retried)."""
        if name in self._pending_topics or topic_name_problem(name) is not None:
            return
        header = P.request(P.CREATE_TOPIC, 0, topic=name)
        if self.control.is_controller:
            try:
                records, names = self._build_create({"topic": name}, now_ms)
                end = self.control.propose(records)
                self._pending_topics.update(dict.fromkeys(names, end))
                self._reconcile(now_ms)
            except (P.RequestError, NotLeader):
                pass
        elif self.control.controller >= 0:
            self.peer_outbox.append((self.control.controller, header, []))
