"""The cluster as one bridge or mirror sees it: produce, fetch, offsets and topics,
wherever the partition's leader or the group's coordinator is.

A bridge runs on one broker, but the partitions it writes and reads are led across the
cluster.  :class:`Gateway` routes each call: to this broker's services when it leads the
partition (coordinates the group, is the controller), else to the broker that does,
through the app's :class:`~zbroker.context.PeerChannel` (the native protocol on
``peer_port``, where the other broker serves it as for any broker).  The bridge's own
principal (``Bridge:NAME``) is authorized here, before anything is done or handed on: the
broker that serves a handed-on call sees this broker's principal, which may do anything.

Every call answers with a :class:`~zbroker.context.Completion` (settled at once when the
work is local and done at once) that fails with a :class:`~zbroker.errors.RequestError`
on any error, so a bridge handles one shape whatever the route; :func:`retriable` says
whether trying again later can help.  Sans-IO: time is passed in.
"""

from __future__ import annotations

from typing import Any, Callable

from zbroker.context import Completion, PeerReply, RequestContext
from zbroker.control.topicadmin import CreatePartitions, CreateTopic, ProducerId
from zbroker.core.fetch import FetchedPartition, FetchPartition, FetchRequest, FetchResult, ListOffsets, OffsetAnswer, OffsetQuery
from zbroker.core.produce import ProduceRequest, ProduceResult
from zbroker.errors import RETRIABLE, ErrorCode, RequestError
from zbroker.groups.coordinator import CommitOffset, CommittedOffset, OffsetCommit, OffsetFetch
from zbroker.security import CLUSTER, Operation, check_access, group, topic

LISTENER = "bridge"
CALL_SLACK_MS = 5_000  # a handed-on call waits this much longer than the work it asks for
CALL_TIMEOUT_MS = 30_000  # offset look-ups and commits handed on
#: codes a bridge waits out and tries again (leadership moving, a topic just created)
RETRY_CODES = RETRIABLE | {ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS}

TP = tuple[str, int]


def retriable(error: RequestError | None) -> bool:
    """Whether the call may succeed if tried again later."""
    return error is not None and error.code in RETRY_CODES


def _failed(code: ErrorCode, message: str) -> Completion:
    done: Completion = Completion()
    done.fail(RequestError(code, message))
    return done


def _done(value: Any = None) -> Completion:
    done: Completion = Completion()
    done.complete(value)
    return done


class Gateway:
    """Routes one bridge's calls to the brokers that serve them, as ``Bridge:NAME``."""

    def __init__(self, app, peers, principal: str, client_id: str = "") -> None:
        self.app = app
        self.peers = peers
        self.ctx = RequestContext(principal=principal, listener=LISTENER, client_id=client_id or principal)

    # -- metadata --------------------------------------------------------------------

    def partition_count(self, name: str) -> int | None:
        meta = self.app.control.image.get(name)
        return None if meta is None else len(meta.partitions)

    def topics(self) -> dict[str, int]:
        """Every topic this principal may describe, with its partition count."""
        image = self.app.control.image
        return {name: len(meta.partitions) for name, meta in image.topics.items()
                if self.app.authorizer.authorize(self.ctx, Operation.DESCRIBE, topic(name))}

    def leader_of(self, name: str, partition: int) -> int | None:
        meta = self.app.control.image.partition(name, partition)
        return None if meta is None or meta.leader < 0 else meta.leader

    def _route(self, name: str, partition: int) -> int:
        """The leader's broker id; RequestError when the partition has none."""
        if self.app.control.image.partition(name, partition) is None:
            raise RequestError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no partition {name}-{partition}")
        leader = self.leader_of(name, partition)
        if leader is None:
            raise RequestError(ErrorCode.LEADER_NOT_AVAILABLE, f"{name}-{partition} has no leader")
        return leader

    def _check(self, *pairs) -> None:
        check_access(self.app.authorizer, self.ctx, pairs)

    # -- data ------------------------------------------------------------------------

    def produce(self, name: str, partition: int, batch: bytes, acks: int, timeout_ms: int,
                now_ms: int) -> Completion[ProduceResult]:
        """Append one batch to ``name``-``partition`` with ``acks`` (0, 1, -1)."""
        def run() -> Completion:
            self._check((Operation.WRITE, topic(name)))
            leader = self._route(name, partition)
            if leader == self.app.broker_id:
                return self._local_produce(name, partition, batch, acks, timeout_ms, now_ms)
            req = ProduceRequest(acks, timeout_ms, [(name, partition, batch)])
            if acks == 0:
                self.peers.send(leader, req)
                return _done(ProduceResult(name, partition))
            return self._call(leader, req, timeout_ms + CALL_SLACK_MS, now_ms, _first_result)
        return _guard(run)

    def _local_produce(self, name, partition, batch, acks, timeout_ms, now_ms) -> Completion[ProduceResult]:
        answer = self.app.produce.produce(self.ctx, acks, timeout_ms, [(name, partition, batch)], now_ms)
        if answer is None:  # acks=0
            return _done(ProduceResult(name, partition))
        return _adapt(answer, _first_result)

    def fetch(self, name: str, partition: int, offset: int, max_bytes: int, now_ms: int,
              max_wait_ms: int = 0) -> Completion[FetchedPartition]:
        """Read from ``offset`` (up to ``max_bytes``), waiting up to ``max_wait_ms`` for data."""
        def run() -> Completion:
            self._check((Operation.READ, topic(name)))
            leader = self._route(name, partition)
            req = FetchRequest([FetchPartition(name, partition, offset, max_bytes)], max_wait_ms, 1, max_bytes, -1)
            if leader == self.app.broker_id:
                return _adapt(self.app.fetch.fetch(self.ctx, req, now_ms), _first_partition)
            return self._call(leader, req, max_wait_ms + CALL_SLACK_MS, now_ms, _first_partition)
        return _guard(run)

    def list_offset(self, name: str, partition: int, timestamp: int, now_ms: int) -> Completion[int]:
        """The offset for ``timestamp``: -1 the end (latest), -2 the log start (earliest)."""
        def run() -> Completion:
            self._check((Operation.DESCRIBE, topic(name)))
            leader = self._route(name, partition)
            queries = [OffsetQuery(name, partition, timestamp)]
            if leader == self.app.broker_id:
                return _adapt(self.app.fetch.list_offsets(self.ctx, queries), _first_offset)
            return self._call(leader, ListOffsets(queries), CALL_TIMEOUT_MS, now_ms, _first_offset)
        return _guard(run)

    # -- group offsets ---------------------------------------------------------------

    def _coordinator(self, name: str, now_ms: int) -> int:
        return self.app.groups.find_coordinator(self.ctx, name, now_ms).broker_id

    def commit(self, name: str, offsets: dict[TP, int], now_ms: int) -> Completion[None]:
        """Commit ``offsets`` for group ``name`` as an admin commit (a group with no members)."""
        def run() -> Completion:
            self._check((Operation.READ, group(name)), *((Operation.READ, topic(t)) for t in {t for t, _ in offsets}))
            req = OffsetCommit(name, [CommitOffset(t, p, o, "") for (t, p), o in sorted(offsets.items())])
            coordinator = self._coordinator(name, now_ms)
            if coordinator == self.app.broker_id:
                return _adapt(self.app.groups.offset_commit(self.ctx, req, now_ms), lambda _: None)
            return self._call(coordinator, req, CALL_TIMEOUT_MS, now_ms, lambda _: None)
        return _guard(run)

    def committed(self, name: str, tps: list[TP], now_ms: int) -> Completion[dict[TP, int]]:
        """Group ``name``'s committed offsets of ``tps`` (-1: none committed)."""
        def run() -> Completion:
            self._check((Operation.DESCRIBE, group(name)), *((Operation.DESCRIBE, topic(t)) for t in {t for t, _ in tps}))
            coordinator = self._coordinator(name, now_ms)
            if coordinator == self.app.broker_id:
                return _adapt(self.app.groups.offset_fetch(self.ctx, name, list(tps), now_ms), _offsets)
            return self._call(coordinator, OffsetFetch(name, list(tps)), CALL_TIMEOUT_MS, now_ms, _offsets)
        return _guard(run)

    # -- topics ----------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int, configs: dict, now_ms: int) -> Completion[None]:
        """Create ``name`` (the controller commits it); a topic that already exists completes."""
        def run() -> Completion:
            if not self.app.authorizer.authorize(self.ctx, Operation.CREATE, CLUSTER):
                self._check((Operation.CREATE, topic(name)))
            if self.app.control.image.get(name) is not None:
                return _done()
            answer = self.app.admin.create_topic(self.ctx, CreateTopic(name, partitions, None, dict(configs)), now_ms)
            return _tolerate(answer, ErrorCode.TOPIC_ALREADY_EXISTS)
        return _guard(run)

    def create_partitions(self, name: str, total: int, now_ms: int) -> Completion[None]:
        """Grow ``name`` to ``total`` partitions (a topic already that large completes)."""
        def run() -> Completion:
            self._check((Operation.ALTER, topic(name)))
            count = self.partition_count(name)
            if count is not None and count >= total:
                return _done()
            return _tolerate(self.app.admin.create_partitions(self.ctx, CreatePartitions(name, total), now_ms),
                             ErrorCode.INVALID_PARTITIONS)
        return _guard(run)

    def producer_id(self, now_ms: int) -> Completion[ProducerId]:
        """A producer id and epoch for idempotent batches (from the controller)."""
        def run() -> Completion:
            self._check((Operation.IDEMPOTENT_WRITE, CLUSTER))
            return _adapt(self.app.admin.init_producer_id(self.ctx, now_ms), lambda pid: pid)
        return _guard(run)

    # -- handing on --------------------------------------------------------------------

    def _call(self, broker_id: int, message: Any, timeout_ms: int, now_ms: int, pick: Callable[[Any], Any]) -> Completion:
        done: Completion = Completion()

        def on_reply(reply: PeerReply, _now: int) -> None:
            if reply.error:
                done.fail(RequestError(_code(reply.error), reply.message or f"broker {broker_id} answered {_code(reply.error).name}"))
                return
            _settle(done, pick, reply.value)

        self.peers.call(broker_id, message, on_reply, timeout_ms, now_ms)
        return done


def _code(value: int) -> ErrorCode:
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.UNKNOWN_SERVER_ERROR


def _guard(run: Callable[[], Completion]) -> Completion:
    """Run a call; a RequestError raised on the way is its failed answer."""
    try:
        return run()
    except RequestError as exc:
        done: Completion = Completion()
        done.fail(exc)
        return done


def _settle(done: Completion, pick: Callable[[Any], Any], value: Any) -> None:
    try:
        done.complete(pick(value))
    except RequestError as exc:
        done.fail(exc)


def _adapt(answer: Any, pick: Callable[[Any], Any]) -> Completion:
    """A service's answer (a value, or a Completion of one) as a Completion of ``pick(value)``."""
    done: Completion = Completion()
    if isinstance(answer, Completion):
        answer.on_done(lambda c: done.fail(c.error) if c.error is not None else _settle(done, pick, c.value))
    else:
        _settle(done, pick, answer)
    return done


def _tolerate(answer: Completion | None, ok: ErrorCode) -> Completion:
    """An admin answer, where ``ok`` means what was asked for already holds."""
    done: Completion = Completion()
    if answer is None:
        done.complete(None)
        return done

    def settled(c: Completion) -> None:
        if c.error is not None and c.error.code != ok:
            done.fail(c.error)
        else:
            done.complete(None)
    answer.on_done(settled)
    return done


def _first_result(results: list[ProduceResult]) -> ProduceResult:
    r = results[0]
    if r.error:
        raise RequestError(_code(r.error), r.error_message or f"{r.topic}-{r.partition}: {_code(r.error).name}")
    return r


def _first_partition(result: FetchResult) -> FetchedPartition:
    p = result.partitions[0]
    if p.error:
        raise RequestError(_code(p.error), f"fetching {p.topic}-{p.partition}: {_code(p.error).name}")
    return p


def _first_offset(answers: list[OffsetAnswer]) -> int:
    a = answers[0]
    if a.error:
        raise RequestError(_code(a.error), f"offsets of {a.topic}-{a.partition}: {_code(a.error).name}")
    return a.offset


def _offsets(committed: list[CommittedOffset]) -> dict[TP, int]:
    return {(o.topic, o.partition): o.offset for o in committed}
