"""What the Kafka group handlers share: names and embedded protocol bytes (pure).

The coordinator (:mod:`zbroker.groups`) speaks in its own assignor and state names and
typed results.  Kafka's group APIs speak Kafka's assignor names (``uniform``,
``range``), Kafka's state names (``Stable``, ``Empty``, ...) and ``ConsumerProtocol``
bytes.  The mappings live here so each handler stays a few lines:

- :func:`coordinator_assignor` -- KIP-848 ``server_assignor`` -> our assignors;
- :func:`kafka_state` -- our group states -> Kafka's;
- :func:`encode_assignment` / :func:`encode_subscription` -- ConsumerProtocol bytes
  (``INT16 version`` then the struct, as Kafka's ``ConsumerProtocol`` writes them);
- :func:`attempt` and :func:`gather` -- answers made of several service calls;
  :func:`check_group` -- a group the router refused, answered on its own.

Topic ids are mapped by :mod:`zbroker.frontends.kafka.datapath` (shared with the data path).
"""

from __future__ import annotations

import io
import logging
import struct
from typing import Callable, Iterable

from kio.schema.consumer_protocol_assignment.v0.data import ConsumerProtocolAssignment, TopicPartition
from kio.schema.consumer_protocol_subscription.v0.data import ConsumerProtocolSubscription
from kio.serial import entity_writer

from zbroker.context import Completion
from zbroker.errors import ErrorCode, RequestError
from zbroker.security import Operation, group, refusal

log = logging.getLogger(__name__)

TP = tuple[str, int]
_INT16 = struct.Struct(">h")

#: KIP-848 ``server_assignor`` names (what librdkafka and the Java client send) -> the
#: coordinator's assignors.  ``uniform`` is Kafka's default: balanced and sticky, which is
#: what our ``sticky`` does; ``range`` is the same algorithm on both sides.  Our own names
#: are accepted as well (a Kafka client may be told ``group.remote.assignor=round_robin``).
ASSIGNOR_NAMES = {"uniform": "sticky", "range": "range", "sticky": "sticky", "round_robin": "round_robin"}

#: Our group states -> Kafka's ``ConsumerGroupState`` names (KIP-848 groups).
STATE_NAMES = {"empty": "Empty", "reconciling": "Reconciling", "stable": "Stable", "assigning": "Assigning",
               "dead": "Dead", "preparing_rebalance": "PreparingRebalance",
               "completing_rebalance": "CompletingRebalance"}


def coordinator_assignor(name: str | None) -> str | None:
    """The coordinator's assignor for a KIP-848 ``server_assignor``: None stays None (keep
    the last one), an empty string is None (librdkafka's "let the broker choose"), an
    unknown name passes through so the coordinator refuses it with UNSUPPORTED_ASSIGNOR."""
    if not name:
        return None
    return ASSIGNOR_NAMES.get(name.lower(), name)


def kafka_state(state: str) -> str:
    """Kafka's name of one of our group states (``stable`` -> ``Stable``); a state Kafka
    has no name for is given capitalized."""
    return STATE_NAMES.get(state.lower(), state[:1].upper() + state[1:])


def state_matches(state: str, wanted: Iterable[str]) -> bool:
    """Whether a group in ``state`` passes ListGroups' ``states_filter`` (empty: every
    group; Kafka compares the names case-insensitively)."""
    wanted = [w.lower() for w in wanted]
    return not wanted or kafka_state(state).lower() in wanted


def group_by_topic(tps: Iterable[TP]) -> dict[str, list[int]]:
    """``[(topic, partition), ...]`` -> ``{topic: [partition, ...]}``, both sorted."""
    out: dict[str, list[int]] = {}
    for t, p in sorted(tps):
        out.setdefault(t, []).append(p)
    return out


# -- ConsumerProtocol bytes (embedded in JoinGroup, SyncGroup and DescribeGroups) ---------

def encode_assignment(tps: Iterable[TP], user_data: bytes | None = None) -> bytes:
    """A ``ConsumerProtocolAssignment`` v0 as the classic protocol carries it."""
    value = ConsumerProtocolAssignment(
        assigned_partitions=tuple(TopicPartition(topic=t, partitions=tuple(ps)) for t, ps in group_by_topic(tps).items()),
        user_data=user_data)
    return _encode(0, value)


def encode_subscription(topics: Iterable[str], user_data: bytes | None = None) -> bytes:
    """A ``ConsumerProtocolSubscription`` v0 (topics only)."""
    return _encode(0, ConsumerProtocolSubscription(topics=tuple(sorted(topics)), user_data=user_data))


def _encode(version: int, value) -> bytes:
    out = io.BytesIO()
    out.write(_INT16.pack(version))
    entity_writer(type(value))(out, value)
    return out.getvalue()


# -- answers made of several service calls ----------------------------------------------

def check_group(ctx, operation: Operation, name: str) -> None:
    """Raise GROUP_AUTHORIZATION_FAILED if the router refused group ``name`` to this request
    (it is in ``ctx.refused``: the request answers each group on its own)."""
    if ctx.refused and group(name) in ctx.refused:
        raise refusal(ctx, operation, group(name))


def attempt(call: Callable[[], object]) -> object:
    """``call()``, or the RequestError it raised (an answer for one item of a batch)."""
    try:
        return call()
    except RequestError as exc:
        return exc


def gather(items: list, build: Callable[[list], dict]) -> dict | Completion:
    """``build(values)`` once every item is known.

    Items are values, RequestErrors or Completions; each completion is replaced by its
    value, or by its RequestError if it failed, so one item's failure is that item's
    error, not the whole answer's.  Answers at once when nothing is pending.
    """
    pending = [i for i, item in enumerate(items) if isinstance(item, Completion)]
    if not pending:
        return build(items)
    values = list(items)
    done: Completion = Completion()
    left = [len(pending)]

    def settled(index: int, c: Completion) -> None:
        values[index] = c.error if c.error is not None else c.value
        left[0] -= 1
        if left[0] == 0:
            try:
                value = build(values)
            except RequestError as exc:
                done.fail(exc)
                return
            except Exception as exc:  # settled from the coordinator's callback: a bug must not reach it
                log.exception("error building the answer to a parked group request")
                done.fail_with(ErrorCode.UNKNOWN_SERVER_ERROR, f"internal error: {exc!r}")
                return
            done.complete(value)

    for index in pending:
        items[index].on_done(lambda c, index=index: settled(index, c))
    return done
