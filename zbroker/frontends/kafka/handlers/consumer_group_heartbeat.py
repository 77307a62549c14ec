"""ConsumerGroupHeartbeat (key 68): KIP-848's consumer protocol, on the native group.

The coordinator is KIP-848-shaped already, so a Kafka member is a native member: the
request becomes a :class:`MemberHeartbeat` and the answer its member id, epoch and
assignment.  A native ``clients.Consumer`` and a librdkafka consumer with
``group.protocol=consumer`` in one group therefore split its partitions.

Mapping:

- ``subscribed_topic_names`` -> ``topics``; ``subscribed_topic_regex`` (v1) is matched
  (whole-name) against the topics that exist when it is sent, and the matches join the
  names.  The regex runs on RE2 (``google-re2``), as Kafka runs it on RE2J: linear time
  whatever the pattern, so a client's ``(a+)+`` cannot stall the broker's one thread in
  backtracking (Python's ``re`` took seconds on a 28-character topic name, and doubles per
  character); RE2 syntax, as Kafka's (no backreferences or lookarounds: INVALID_REQUEST).  A topic created later is picked up when the client sends
  its subscription again (Kafka re-evaluates the regex on the broker; we do not);
- authorization, as Kafka 4.0 does: READ on the group, DESCRIBE on every topic named
  (else TOPIC_AUTHORIZATION_FAILED); a regex matches only the topics the principal may
  describe;
- ``topic_partitions`` (owned, by topic id) -> ``owned`` (by name; ids of topics that no
  longer exist are left out); the assignment goes back by topic id;
- ``server_assignor``: ``uniform`` -> ``sticky``, ``range`` -> ``range`` (see
  :data:`~zbroker.frontends.kafka.groupmap.ASSIGNOR_NAMES`);
- ``rebalance_timeout`` -> ``rebalance_timeout_ms``; the session timeout is the
  broker's (Kafka's ``group.consumer.session.timeout.ms``, 45 s, within the
  configured group session bounds): KIP-848 clients do not send one.

Null fields (and a rebalance timeout of -1) mean "unchanged since the last heartbeat"
and are passed on as None: the coordinator keeps what the member sent before.  The
assignment is sent on every answer (clients compare it with what they have); leaving
(epoch -1 or -2) answers no assignment.
"""

from __future__ import annotations

import re2

from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka import datapath, groupmap
from zbroker.frontends.kafka.codec import millis
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.groups.group import MemberHeartbeat
from zbroker.security import Operation, group, topic

API_KEY = 68
VERSIONS = (0, 1)
#: Kafka's ``group.consumer.session.timeout.ms`` default.
SESSION_TIMEOUT_MS = 45_000
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is the client's error, answered; not a line on stderr


def subscribed_topics(image, names, regex: str | None, visible=lambda name: True) -> list[str] | None:
    """The member's topics: its names plus the existing topics its regex matches (those
    ``visible(name)`` lets it see); None when it sent neither (unchanged).

    Raises:
        RequestError: INVALID_REQUEST for a regex that does not compile.
    """
    if not regex:
        return None if names is None else list(names)
    try:
        pattern = re2.compile(regex, _RE2_OPTIONS)
    except re2.error as exc:
        why = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise RequestError(ErrorCode.INVALID_REQUEST, f"subscribed_topic_regex {regex!r}: {why}") from None
    matched = {name for name, meta in image.topics.items() if not meta.internal and pattern.fullmatch(name) and visible(name)}
    return sorted(matched | set(names or ()))


LEAVE_EPOCHS = (-1, -2)  # leaving; -2: a static member leaving for now


def check(request, version) -> None:
    """Kafka's rules for a heartbeat, before the coordinator sees it.

    Raises:
        RequestError: INVALID_REQUEST naming the rule: an empty group id; from v1 an empty
            member id (KIP-1082: the client makes its id); an epoch below -2; a joining member
            (epoch 0) without a rebalance timeout, without a subscription (names or regex), or
            with owned partitions.
    """
    def invalid(why: str):
        raise RequestError(ErrorCode.INVALID_REQUEST, why)

    if not request.group_id:
        invalid("group_id can't be empty")
    if version >= 1 and not request.member_id:
        invalid("member_id can't be empty: from ConsumerGroupHeartbeat v1 the client generates it")
    if request.member_epoch < LEAVE_EPOCHS[1]:
        invalid(f"member_epoch {request.member_epoch} is not an epoch (-2, -1, 0 or a member's epoch)")
    if request.member_epoch == 0:
        if millis(request.rebalance_timeout) < 0:
            invalid("rebalance_timeout must be given when joining (member_epoch 0)")
        if request.subscribed_topic_names is None and not getattr(request, "subscribed_topic_regex", None):
            invalid("subscribed_topic_names or subscribed_topic_regex must be given when joining (member_epoch 0)")
        if request.topic_partitions:
            invalid("topic_partitions must be empty when joining (member_epoch 0)")


def to_heartbeat(app, ctx, request, version) -> MemberHeartbeat:
    """The coordinator's :class:`MemberHeartbeat` of a ConsumerGroupHeartbeat request."""
    check(request, version)
    image = app.control.image
    owned = None
    if request.topic_partitions is not None:
        owned = []
        for tps in request.topic_partitions:
            name = datapath.topic_name(app, tps.topic_id)
            if name is not None:
                owned.extend((name, int(p)) for p in tps.partitions)
    rebalance = millis(request.rebalance_timeout)
    lo, hi = app.config.setting("group_min_session_timeout_ms"), app.config.setting("group_max_session_timeout_ms")
    return MemberHeartbeat(
        group=request.group_id, member_epoch=request.member_epoch, member_id=request.member_id,
        instance_id=request.instance_id, client_id=ctx.client_id,
        topics=subscribed_topics(image, request.subscribed_topic_names, getattr(request, "subscribed_topic_regex", None),
                                 lambda name: app.authorizer.authorize(ctx, Operation.DESCRIBE, topic(name))),
        owned=owned, assignor=groupmap.coordinator_assignor(request.server_assignor),
        rebalance_timeout_ms=rebalance if rebalance >= 0 else None,
        session_timeout_ms=min(max(SESSION_TIMEOUT_MS, lo), hi))


def answer(app, result) -> dict:
    """The response fields of a :class:`HeartbeatResult`."""
    a = result.answer
    out = {"error_code": 0, "member_id": a.member_id, "member_epoch": a.member_epoch,
           "heartbeat_interval": result.heartbeat_interval_ms, "assignment": None}
    if a.member_epoch >= 0:
        topics = []
        for name, partitions in groupmap.group_by_topic(a.assignment).items():
            topic_id = datapath.topic_id_of(app, name)
            if topic_id is not None:  # a topic deleted since: the next heartbeat drops it
                topics.append({"topic_id": topic_id, "partitions": partitions})
        out["assignment"] = {"topic_partitions": topics}
    return out


def consumer_group_heartbeat(app, ctx, request, version, now_ms):
    result = app.groups.heartbeat(ctx, to_heartbeat(app, ctx, request, version), now_ms)
    return datapath.then(result, lambda r: answer(app, r))


def _access(request):
    return [(Operation.READ, group(request.group_id)),
            *((Operation.DESCRIBE, topic(name)) for name in dict.fromkeys(request.subscribed_topic_names or ()))]


ROUTE = KafkaRoute(API_KEY, "ConsumerGroupHeartbeat", VERSIONS, consumer_group_heartbeat, access=_access)
