"""What the data-path handlers share: topic ids, leader hints, answers that come later.

- Newer versions of Produce (v13) and Fetch (v13+) name topics by id (KIP-516): the
  16-byte UUID Metadata hands out, which is the metadata image's ``topic_id`` (hex).
  :func:`topic_name` maps one back, through a map rebuilt from the image only when an id
  is not in it (or no longer names the same topic: a topic deleted and created again has
  another id).
- An answer of NOT_LEADER_OR_FOLLOWER (or a fenced epoch) may carry the partition's
  current leader and that broker's address (KIP-951), so a client goes to it without a
  Metadata round trip: :func:`leader_hint` and :func:`leader_endpoints`.
- A service's :class:`~zbroker.context.Completion` settles with a typed result; the
  router wants the response's dict: :func:`then` maps one onto the other.
- An API without a top-level error code answers a refused request per partition:
  :func:`partition_errors`, and authorizes each topic it names: :func:`topic_access`
  (by name, or by id: :class:`TopicId`, which the router resolves before it asks).
"""

from __future__ import annotations

import logging
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Callable

from storage.batch import decode_limit
from zbroker.context import Completion
from zbroker.errors import ErrorCode, RequestError
from zbroker.security import Operation, refusal, topic

log = logging.getLogger(__name__)

#: Errors whose answer carries the partition's current leader (KIP-951).
LEADER_MOVED = frozenset({int(ErrorCode.NOT_LEADER_OR_FOLLOWER), int(ErrorCode.FENCED_LEADER_EPOCH)})

_ids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # metadata image -> {topic id hex: name}


def topic_name(app, topic_id: uuid.UUID | None) -> str | None:
    """The name of the topic with ``topic_id``, or None if no topic has it.

    Runtime: O(1); O(topics) when the id is not in the map (it is rebuilt then).
    """
    if topic_id is None or topic_id.int == 0:
        return None
    image = app.control.image
    key = topic_id.hex
    names = _ids.get(image)
    for attempt in range(2):
        if names is not None:
            name = names.get(key)
            meta = image.get(name) if name is not None else None
            if meta is not None and meta.topic_id == key:
                return name
        if attempt == 0:
            names = _ids[image] = {meta.topic_id: name for name, meta in image.topics.items() if meta.topic_id}
    return None


def topic_id_of(app, name: str) -> str | None:
    """The id (hex) of topic ``name``, or None if it does not exist."""
    meta = app.control.image.get(name)
    return meta.topic_id if meta is not None and meta.topic_id else None


def leader_hint(app, topic: str, partition: int) -> dict | None:
    """``{"leader_id", "leader_epoch"}`` of a partition another broker leads, or None."""
    pm = app.control.image.partition(topic, partition)
    if pm is None or pm.leader < 0 or pm.leader == app.broker_id:
        return None
    return {"leader_id": pm.leader, "leader_epoch": pm.leader_epoch}


def leader_endpoints(app, hints) -> list[dict]:
    """The Kafka addresses of the brokers the ``hints`` (of :func:`leader_hint`) name."""
    from zbroker.frontends.kafka.handlers.metadata import kafka_brokers  # handlers import this module

    leaders = {h["leader_id"] for h in hints}
    return [b for b in kafka_brokers(app) if b["node_id"] in leaders]


def max_decompressed(app, topic: str) -> int:
    """The most bytes one stored batch of ``topic`` may inflate to when the door converts
    it for a Kafka client (:func:`storage.batch.decode_limit` of its max_message_bytes)."""
    meta = app.control.image.get(topic)
    settings = app.config.topic_settings(meta.overrides if meta is not None else None)
    return decode_limit(settings["max_message_bytes"])


def then(answer: Any, build: Callable[[Any], Any]) -> Any:
    """``build(answer)`` now, or -- for a :class:`Completion` -- a Completion settled with
    ``build`` of its value when it settles (its error passes through unchanged)."""
    if not isinstance(answer, Completion):
        return build(answer)
    done: Completion = Completion()

    def settled(inner: Completion) -> None:
        if inner.error is not None:
            done.fail(inner.error)
            return
        try:
            value = build(inner.value)
        except Exception as exc:  # settled from a service's callback: a bug must not reach it
            log.exception("error building the answer to a parked request")
            done.fail_with(ErrorCode.UNKNOWN_SERVER_ERROR, f"internal error: {exc!r}")
            return
        done.complete(value)

    answer.on_done(settled)
    done.on_abandon(answer.abandon)  # nobody waits for the answer: nor for what it is built from
    return done


def partition_errors(topics, topic_field: str, partition_field: str, code: int) -> list[dict]:
    """``[{topic_field: name, "partitions": [{partition_field: i, "error_code": code}]}]``
    for every partition of a request's ``topics`` (an API's answer to a refused request)."""
    return [{topic_field: getattr(t, topic_field), "partitions": [{partition_field: getattr(p, partition_field), "error_code": code}
                                                                  for p in t.partitions]} for t in topics]


@dataclass(frozen=True, slots=True)
class TopicId:
    """A topic a request names by id only (Produce v13, Fetch v13+, OffsetCommit v10,
    DeleteTopics v6): the router resolves it to the topic's name before authorizing."""

    topic_id: uuid.UUID


def topic_access(operation: Operation, topics, topic_field: str) -> list:
    """``(operation, topic)`` for every topic a request names (once each), by name, or by
    id (:class:`TopicId`) where the version names topics by id."""
    pairs = {}
    for t in topics:
        name = getattr(t, topic_field, None)
        if name:
            pairs[name] = (operation, topic(name))
        else:
            topic_id = getattr(t, "topic_id", None)
            if topic_id is not None and topic_id.int:
                pairs[topic_id] = (operation, TopicId(topic_id))
    return list(pairs.values())


def topic_refusal(ctx, operation: Operation, name: str | None) -> RequestError | None:
    """The error of topic ``name`` if the router refused it to this request (it is in
    ``ctx.refused``: TOPIC_AUTHORIZATION_FAILED), else None."""
    if ctx.refused and name is not None and topic(name) in ctx.refused:
        return refusal(ctx, operation, topic(name))
    return None
