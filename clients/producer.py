"""The producer: ``send()`` appends to the accumulator; the sender ships batches.

``send()`` runs in the caller's thread and does only O(1) work: pick the
partition, append a tuple to that partition's open batch, return a
:class:`~clients.accumulator.RecordFuture`.  The :class:`_Sender` runs in the
network thread: it drains sendable batches grouped by leader, encodes each
batch once (one ``msgpack.packb``), sends one ``produce`` request per leader
and resolves the futures from the response.

Ordering under retries: at most one produce request per partition is in
flight (it carries every sendable batch of that partition); a batch that fails
with a retriable error goes back to the front of its partition's queue before
the partition may be drained again, so later batches can never overtake it.
This relies on the broker treating a partition's batches within one request
alike (a leadership or ISR error fails them all), which it does because it
handles one request at a time.  Without idempotence a retry after a lost
response may still duplicate a batch (as in Kafka).
"""

from __future__ import annotations

import logging
import threading
import time

from clients.accumulator import RECORD_OVERHEAD, RecordAccumulator, RecordFuture, failed_future
from clients.connection import NetworkClient
from clients.metadata import MetadataManager
from clients.partitioner import Partitioner
from clients.serde import SERIALIZERS, bytes_serializer, resolve
from clients.structs import TopicPartition
from storage.batch import encode_native_batch
from storage.compression import COMPRESSION_BY_NAME
from zbroker.errors import (
    ConnectionBrokenError,
    ClientClosedError,
    ErrorCode,
    RequestTimeoutError,
    UnknownTopicOrPartitionError,
    ZBrokerError,
    error_from,
)

log = logging.getLogger(__name__)

_ACKS = {0: 0, 1: 1, -1: -1, "0": 0, "1": 1, "-1": -1, "all": -1}


def _to_bytes(obj, what: str):
    if obj is None or type(obj) is bytes:
        return obj
    try:
        return bytes_serializer(obj)
    except TypeError:
        raise TypeError(f"{what} must be bytes, str or None (or set a serializer), got {type(obj).__name__}") from None


class Producer:
    """Sends records to zbroker topics.

    Args:
        bootstrap: ``"host:port[,host:port...]"``; None reads ``ZBROKER_BOOTSTRAP``
            (default ``127.0.0.1:9555``).
        acks: 0 (no answer; futures resolve with offset -1 once sent), 1 (leader
            wrote it) or ``"all"`` (every in-sync replica; ``-1`` on the wire).
        linger_ms: how long a batch waits for more records (default 5).
        batch_size: batch size in bytes (estimated) that makes a batch full (default 65536).
        retries: how often a batch is retried on retriable errors (default: until
            ``delivery_timeout_ms``).
        enable_idempotence: on by default (with acks 1 or "all"): the producer gets a
            producer id from the cluster and numbers its records per partition, and
            brokers drop a resent batch they already have, so retries after a lost
            answer, a timeout or a leader change never write a record twice.  If a
            batch fails for good, the producer takes a new producer id so the
            sequence gap cannot block later sends.
        compression: ``"none"``, ``"gzip"``, ``"snappy"``, ``"lz4"`` or ``"zstd"``.
        request_timeout_ms: deadline of each request (default 30000).
        client_id: sent to brokers with every request.
        max_in_flight: produce requests in flight per broker (default 5); per
            partition it is always one (see the module docstring).
        delivery_timeout_ms: a record fails with RequestTimeoutError if it is not
            acknowledged within this time of being sent (default 120000).
        retry_backoff_ms: wait before a retry (default 100).
        key_serializer, value_serializer: callable or ``"bytes"``/``"str"``/``"json"``.
            Without one, keys and values must be bytes, str (UTF-8 encoded) or None.
        max_block_ms: how long ``send()`` may wait for an unknown topic's metadata
            (default: ``request_timeout_ms``).
        max_request_bytes: cap of one partition's batches in one produce request.
        metadata_max_age_ms: metadata is refreshed at least this often (new
            partitions, moved leaders) while records are being sent.
        buffer_memory: bytes of unacknowledged batches (counted as
            ``batch_size`` each) after which ``send()`` blocks, up to
            ``max_block_ms``, for the sender to catch up; then its future fails
            with RequestTimeoutError.
    """

    def __init__(
        self,
        bootstrap=None,
        acks=1,
        linger_ms: float = 5,
        batch_size: int = 65536,
        retries: int = 2147483647,
        enable_idempotence: bool = True,
        compression: str | None = "none",
        request_timeout_ms: int = 30000,
        client_id: str | None = None,
        max_in_flight: int = 5,
        delivery_timeout_ms: int = 120000,
        retry_backoff_ms: int = 100,
        key_serializer=None,
        value_serializer=None,
        max_block_ms: int | None = None,
        max_request_bytes: int = 8 << 20,
        metadata_max_age_ms: int = 300000,
        buffer_memory: int = 32 << 20,
    ) -> None:
        if acks not in _ACKS:
            raise ValueError(f"acks must be 0, 1 or 'all', got {acks!r}")
        if compression not in COMPRESSION_BY_NAME:
            raise ValueError(f"compression must be one of none, gzip, snappy, lz4, zstd, got {compression!r}")
        if batch_size < 1 or linger_ms < 0 or max_in_flight < 1:
            raise ValueError("batch_size and max_in_flight must be >= 1 and linger_ms >= 0")
        self.acks = _ACKS[acks]
        self.compression = COMPRESSION_BY_NAME[compression]
        self.request_timeout_ms = request_timeout_ms
        self.retries = retries
        self.delivery_timeout = delivery_timeout_ms / 1000.0
        self.retry_backoff = retry_backoff_ms / 1000.0
        self.max_in_flight = max_in_flight
        self.metadata_max_age = metadata_max_age_ms / 1000.0
        self.max_batches = max(4, buffer_memory // max(1, batch_size))
        self.enable_idempotence = enable_idempotence and self.acks != 0
        self._pid = -1  # producer id and epoch (idempotence); -1 until the cluster hands one out
        self._pid_epoch = -1
        self._pid_requested = False
        self._pid_tries = -1
        self._pid_reset = False
        self._seq: dict = {}  # tp -> next sequence number
        self.max_block_ms = max_block_ms if max_block_ms is not None else request_timeout_ms
        self._key_ser = resolve(key_serializer, SERIALIZERS, "key_serializer")
        self._value_ser = resolve(value_serializer, SERIALIZERS, "value_serializer")
        self._net = NetworkClient(bootstrap, client_id, request_timeout_ms, name="zbroker-producer")
        self._meta = MetadataManager(self._net, backoff_ms=retry_backoff_ms)
        self._acc = RecordAccumulator(batch_size, linger_ms, max_request_bytes)
        self._part = Partitioner()
        self._part_lock = threading.Lock()
        self._sticky_open: dict = {}  # topic -> batch that null-key records currently go to
        self._closed = False
        self._closed_hard = False  # set when close() gave up waiting: stop retrying
        self._sender = _Sender(self)
        self._net.add_task(self._sender)

    # -- public API ------------------------------------------------------------------

    def send(self, topic: str, value=None, key=None, headers=None, partition: int | None = None, timestamp_ms: int | None = None) -> RecordFuture:
        """Queue one record; returns a future resolving to ``RecordMetadata``.

        Args:
            topic: the topic (created with broker defaults if the broker allows
                auto-creation).
            value, key: bytes, str (UTF-8) or None, or anything the configured
                serializer takes.
            headers: ``dict[str, bytes | str]`` (or a list of pairs).
            partition: explicit partition; None = by key hash, or sticky round
                robin for null keys.
            timestamp_ms: create time in ms since the epoch (default: now).

        Returns:
            A future: ``result(timeout)`` gives ``RecordMetadata(topic, partition,
            offset, timestamp)`` or raises the :class:`ZBrokerError` of the send.

        Raises:
            ClientClosedError: the producer is closed.
            TypeError: key/value/headers of an unsupported type.

        Runtime: O(1) amortised (~1-2 µs when the topic's metadata is known).
        """
        if self._closed:
            raise ClientClosedError("producer is closed")
        if self._key_ser is not None:
            key = self._key_ser(key)
        elif key is not None and type(key) is not bytes:
            key = _to_bytes(key, "key")
        if self._value_ser is not None:
            value = self._value_ser(value)
        elif value is not None and type(value) is not bytes:
            value = _to_bytes(value, "value")
        size = RECORD_OVERHEAD
        if value is not None:
            size += len(value)
        if key is not None:
            size += len(key)
        if headers:
            headers, hsize = self._headers(headers)
            size += hsize
        else:
            headers = None
        ts = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        if partition is None and key is None:
            # fast path: append to the topic's current sticky batch (one lock, no calls)
            acc = self._acc
            with acc.lock:
                b = self._sticky_open.get(topic)
                if b is not None and not b.closed and b.size + size <= acc.batch_size:
                    recs = b.records
                    recs.append((ts - b.base_ts, None, value, headers))
                    b.size += size
                    if ts > b.max_ts:
                        b.max_ts = ts
                    return RecordFuture(b, len(recs) - 1)
        return self._append(topic, value, key, headers, partition, ts, size)

    def _append(self, topic, value, key, headers, partition, ts, size) -> RecordFuture:
        acc = self._acc
        if len(acc.incomplete) >= self.max_batches and not self._net.in_network_thread():
            self._net.wakeup()
            if not acc.wait_for_space(self.max_batches, self.max_block_ms / 1000.0):
                return failed_future(
                    TopicPartition(topic, -1 if partition is None else partition),
                    RequestTimeoutError(f"producer buffer full for {self.max_block_ms} ms (brokers too slow or unreachable)"),
                )
            if self._closed:
                raise ClientClosedError("producer is closed")
        n = self._meta.cache.partition_counts.get(topic)
        if n is None:
            n = self._wait_for_topic(topic)
            if isinstance(n, ZBrokerError):
                return failed_future(TopicPartition(topic, -1 if partition is None else partition), n)
        if partition is None:
            if key is not None:
                partition = self._part.keyed(key, n)
            else:
                with self._part_lock:
                    partition = self._part.sticky(topic, n)
                    r = acc.append((topic, partition), ts, key, value, headers, size, time.monotonic(), True)
                    if r is None:
                        partition = self._part.next_sticky(topic, n)
                        r = acc.append((topic, partition), ts, key, value, headers, size, time.monotonic())
                    self._sticky_open[topic] = r[0]._batch
                if r[1]:
                    self._net.wakeup()
                return r[0]
        elif partition < 0 or partition >= n:
            n = self._refresh_count(topic)
            if n is None or partition < 0 or partition >= n:
                return failed_future(
                    TopicPartition(topic, partition),
                    UnknownTopicOrPartitionError(f"topic {topic!r} has {n} partitions, no partition {partition}"),
                )
        fut, new = acc.append((topic, partition), ts, key, value, headers, size, time.monotonic())
        if new:
            self._net.wakeup()
        return fut

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and wait until every record is acknowledged or failed.

        Raises:
            TimeoutError: not done within ``timeout`` seconds.
        """
        acc = self._acc
        with acc.lock:
            acc.flushing += 1
        try:
            self._net.wakeup()
            deadline = None if timeout is None else time.monotonic() + timeout
            for b in acc.pending_batches():
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not b.wait(left):
                    raise TimeoutError(f"flush did not complete within {timeout}s")
        finally:
            with acc.lock:
                acc.flushing -= 1

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout`` seconds, None = until every record is resolved,
        which ``delivery_timeout_ms`` bounds), then stop; records still unresolved
        fail with ClientClosedError."""
        if self._closed:
            return
        self._closed = True
        if self._net.in_network_thread():
            timeout = 0  # called from a future's callback: waiting here would deadlock
        try:
            self.flush(timeout)
        except TimeoutError:
            log.warning("producer closed with records still unacknowledged")
        finally:
            self._closed_hard = True
            self._net.close()
            self._acc.fail_all(ClientClosedError("producer closed before the record was acknowledged"))

    def partitions_for(self, topic: str) -> list[int]:
        """Partition ids of ``topic`` (fetches metadata if needed)."""
        n = self._meta.cache.partition_counts.get(topic)
        if n is None:
            n = self._wait_for_topic(topic)
            if isinstance(n, ZBrokerError):
                raise n
        return list(range(n))

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------

    @staticmethod
    def _headers(headers):
        items = headers.items() if isinstance(headers, dict) else headers
        out = {}
        size = 0
        for k, v in items:
            if not isinstance(k, str):
                raise TypeError(f"header names must be str, got {type(k).__name__}")
            if v is not None and type(v) is not bytes:
                v = _to_bytes(v, f"header {k!r}")
            out[k] = v
            size += len(k) + (len(v) if v else 0) + 4
        return out, size

    def _refresh_count(self, topic: str) -> int | None:
        try:
            self._meta.refresh([topic], timeout_ms=self.max_block_ms)
        except ZBrokerError:
            pass
        return self._meta.cache.partition_counts.get(topic)

    def _wait_for_topic(self, topic: str):
        """Fetch the topic's metadata (auto-creating it if allowed); partition count or an error."""
        deadline = time.monotonic() + self.max_block_ms / 1000.0
        unknown_tries = 0
        last: ZBrokerError | None = None
        while True:
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0:
                return last or RequestTimeoutError(f"no metadata for topic {topic!r} within {self.max_block_ms} ms")
            try:
                self._meta.refresh([topic], allow_auto_create=True, timeout_ms=left)
            except ZBrokerError as exc:
                if not exc.retriable:
                    return exc
                last = exc
                time.sleep(0.05)
                continue
            n = self._meta.cache.partition_counts.get(topic)
            if n:
                return n
            err = self._meta.cache.topic_errors.get(topic, ErrorCode.LEADER_NOT_AVAILABLE)
            last = error_from(err, f"topic {topic!r}: metadata error {err}")
            if not last.retriable:
                return last
            if err == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                unknown_tries += 1
                if unknown_tries >= 10:
                    return last
            time.sleep(0.05)


class _Sender:
    """Runs in the network thread: drains the accumulator and resolves batches."""

    def __init__(self, producer: Producer, clock=time.monotonic) -> None:
        self.clock = clock  # injectable for tests
        self.p = producer
        self.acc = producer._acc
        self.net = producer._net
        self.meta = producer._meta
        self.inflight: dict[str, int] = {}

    def _can_send(self, address: str) -> bool:
        return self.inflight.get(address, 0) < self.p.max_in_flight

    def _idempotence_ready(self, now: float) -> bool:
        """Make sure there is a producer id before batches are numbered."""
        p = self.p
        if p._pid_reset and not any(self.inflight.values()):
            # batches already sent keep their id and numbers (their fate may be unknown: a
            # resend must still be recognised); batches not sent yet are numbered afresh
            p._pid, p._pid_reset, p._seq = -1, False, {}
        if p._pid >= 0:
            return True
        if not p._pid_requested:
            candidates = self.meta.candidates()
            if candidates:
                p._pid_requested = True
                p._pid_tries += 1  # a broker that does not answer: the next try goes to the next one
                address = candidates[p._pid_tries % len(candidates)]
                self.net.send(address, "init_producer_id", {}, (), self._on_producer_id, timeout_ms=min(5000, p.request_timeout_ms))
        return False

    def _on_producer_id(self, header, _frames, exc) -> None:
        p = self.p
        p._pid_requested = False
        if exc is None and not header.get("error"):
            p._pid, p._pid_epoch = header["producer_id"], header["producer_epoch"]
            log.debug("producer id %s epoch %s", p._pid, p._pid_epoch)
        else:
            log.debug("init_producer_id failed: %s", exc or header.get("error_message"))
            self.meta.request_update(self.clock())
        self.net.wakeup()

    def run(self, now: float):
        acc = self.acc
        if not acc.queues:
            return None
        if self.p.enable_idempotence and not self._idempotence_ready(now):
            return now + self.p.retry_backoff
        if now - self.meta.cache.updated_at > self.p.metadata_max_age:
            self.meta.request_update(now)
        expired = acc.expired(now, self.p.delivery_timeout)
        for b in expired:
            self._finish(b, -1, RequestTimeoutError(f"{b.tp[0]}-{b.tp[1]}: record not sent within delivery_timeout_ms"))
        by_leader, deadline, leaderless = acc.drain(now, self.meta.cache.leaders.get, self._can_send)
        if leaderless:
            self.meta.request_update(now)
            retry = now + self.p.retry_backoff
            deadline = retry if deadline is None or retry < deadline else deadline
        for address, items in by_leader.items():
            self._send(address, items)
        return deadline

    def _send(self, address: str, items: list) -> None:
        p = self.p
        frames = []
        descs = []
        for tp, batches in items:
            for b in batches:
                if b.encoded is None:
                    if p.enable_idempotence:
                        b.base_seq = p._seq.get(tp, 0)
                        p._seq[tp] = (b.base_seq + len(b.records)) % (1 << 31)
                        b.encoded = encode_native_batch(b.records, b.base_ts, b.max_ts, p.compression, p._pid, p._pid_epoch, b.base_seq)
                    else:
                        b.encoded = encode_native_batch(b.records, b.base_ts, b.max_ts, p.compression)
                b.attempts += 1
                frames.append(b.encoded)
                descs.append({"topic": tp[0], "partition": tp[1]})
        fields = {"acks": p.acks, "timeout_ms": p.request_timeout_ms, "batches": descs}
        self.inflight[address] = self.inflight.get(address, 0) + 1
        if p.acks == 0:
            self.net.send(
                address, "produce", fields, frames, None, expect_response=False,
                on_sent=lambda exc: self._on_sent(address, items, exc),
            )
        else:
            self.net.send(
                address, "produce", fields, frames,
                lambda h, _f, exc: self._on_response(address, items, h, exc),
                timeout_ms=p.request_timeout_ms + 5000,
            )

    def _finish(self, b, base_offset: int, error) -> None:
        if b.base_seq >= 0 and isinstance(error, ZBrokerError) and not error.retriable and not isinstance(
            error, (RequestTimeoutError, ConnectionBrokenError, ClientClosedError)
        ):
            # the broker refused it, so it is not in the log: the gap it leaves in the
            # sequence would block every later batch of the partition; start a new id
            self.p._pid_reset = True
        b.complete(base_offset, error)
        self.acc.completed(b)

    def _on_sent(self, address: str, items: list, exc) -> None:
        self.inflight[address] -= 1
        for tp, batches in items:
            for b in batches:
                self._finish(b, -1, exc)
            self.acc.unmute(tp)
        self.net.wakeup()

    def _retry_or_fail(self, tp, batches, exc: BaseException, now: float) -> list:
        """Split ``batches`` into those to retry (returned) and those failed now."""
        retry = []
        for b in batches:
            if (
                isinstance(exc, ZBrokerError)
                and exc.retriable
                and b.attempts <= self.p.retries
                and now - b.created < self.p.delivery_timeout
                and not self.p._closed_hard
            ):
                retry.append(b)
            else:
                self._finish(b, -1, exc)
        return retry

    def _on_response(self, address: str, items: list, header, exc) -> None:
        self.inflight[address] -= 1
        now = self.clock()
        refresh = False
        if exc is None and header.get("error"):
            exc = error_from(header["error"], header.get("error_message"))
        if exc is not None:
            log.debug("produce to %s failed: %s", address, exc)
            refresh = getattr(exc, "invalid_metadata", False)
            for tp, batches in items:
                retry = self._retry_or_fail(tp, batches, exc, now)
                if retry:
                    self.acc.reenqueue(tp, retry, now + self.p.retry_backoff)
                self.acc.unmute(tp)
        else:
            results = header.get("results") or ()
            i = 0
            for tp, batches in items:
                retry = []
                for b in batches:
                    r = results[i] if i < len(results) else None
                    i += 1
                    if r is None:
                        err, msg = ErrorCode.UNKNOWN_SERVER_ERROR, "produce response has no result for this batch"
                    else:
                        err, msg = r.get("error", 0), r.get("error_message")
                    if err == 0:
                        if retry:
                            log.warning("%s-%s: a later batch succeeded after an earlier one failed: order may change", tp[0], tp[1])
                        self._finish(b, r.get("base_offset", -1), None)
                        continue
                    e = error_from(err, msg or f"{tp[0]}-{tp[1]}: produce error {err}")
                    refresh = refresh or e.invalid_metadata
                    retry.extend(self._retry_or_fail(tp, [b], e, now))
                if retry:
                    self.acc.reenqueue(tp, retry, now + self.p.retry_backoff)
                self.acc.unmute(tp)
        if refresh:
            self.meta.request_update(now)
        self.net.wakeup()
