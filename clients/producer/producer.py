"""The producer's public API: ``send()`` appends to the accumulator; the sender ships batches.

``send()`` runs in the caller's thread and does only O(1) work: pick the
partition, append a tuple to that partition's open batch, return a
:class:`~clients.producer.accumulator.RecordFuture`.  The
:class:`~clients.producer.sender.Sender` runs in the network thread: it drains
sendable batches grouped by leader, encodes each batch once (one
``msgpack.packb``), sends one ``produce`` request per leader and resolves the
futures from the response.  Idempotence (producer id, sequence numbers) is
:class:`~clients.producer.idempotence.IdempotenceState`.

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

from clients.connection import NetworkClient
from clients.metadata import MetadataManager
from clients.partitioner import Partitioner
from clients.producer.accumulator import RECORD_OVERHEAD, RecordAccumulator, RecordFuture, failed_future
from clients.producer.idempotence import IdempotenceState
from clients.producer.sender import Sender
from clients.serde import SERIALIZERS, bytes_serializer, resolve
from clients.structs import TopicPartition
from clients.throttle import ThrottleStats
from storage.compression import COMPRESSION_BY_NAME
from zbroker.errors import (
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
        curve_secret_key_file: this client's CurveZMQ key pair (``NAME.key_secret``), for
            brokers with ``[security] curve = true``; None reads ``ZBROKER_CURVE_SECRET_KEY_FILE``.
        curve_server_key: the bootstrap broker's public key (Z85, or a ``.key`` file); the
            other brokers' come with the metadata.  None reads ``ZBROKER_CURVE_SERVER_KEY``.
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
        curve_secret_key_file: str | None = None,
        curve_server_key: str | bytes | None = None,
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
        self.max_block_ms = max_block_ms if max_block_ms is not None else request_timeout_ms
        self._key_ser = resolve(key_serializer, SERIALIZERS, "key_serializer")
        self._value_ser = resolve(value_serializer, SERIALIZERS, "value_serializer")
        self._net = NetworkClient(bootstrap, client_id, request_timeout_ms, name="zbroker-producer",
                                  curve_secret_key_file=curve_secret_key_file, curve_server_key=curve_server_key)
        self._meta = MetadataManager(self._net, backoff_ms=retry_backoff_ms)
        self._acc = RecordAccumulator(batch_size, linger_ms, max_request_bytes)
        self._part = Partitioner()
        self._part_lock = threading.Lock()
        self._sticky_open: dict = {}  # topic -> batch that null-key records currently go to
        self._closed = False
        self._sender = Sender(
            self._acc, self._net, self._meta, acks=self.acks, compression=self.compression,
            request_timeout_ms=request_timeout_ms, retries=retries, delivery_timeout=self.delivery_timeout,
            retry_backoff=self.retry_backoff, max_in_flight=max_in_flight, metadata_max_age=self.metadata_max_age,
            idempotence=IdempotenceState() if self.enable_idempotence else None,
        )
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
            self._sender.stop_retrying = True
            self._net.close()
            self._acc.fail_all(ClientClosedError("producer closed before the record was acknowledged"))

    @property
    def throttle(self) -> ThrottleStats:
        """Produce answers brokers held back by a quota (``count``, ``total_ms``, ``last_ms``)."""
        return self._sender.throttle

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
