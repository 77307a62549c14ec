"""The producer's sender: the I/O side, run in the network thread as a task.

``run(now)`` drains sendable batches from the :class:`RecordAccumulator` grouped by
leader, encodes each batch once (one ``msgpack.packb``; numbered by the
:class:`IdempotenceState` when idempotence is on), sends one ``produce`` request
per leader and resolves the batches from the response.  Its loop reads as
Kafka's: no error -> done; retriable -> refresh metadata if the error says so and
re-queue at the front of the partition; else -> fail the batch's futures.

Ordering under retries: at most one produce request per partition is in flight
(the accumulator mutes drained partitions; see :mod:`clients.producer.accumulator`).
"""

from __future__ import annotations

import logging
import time

from clients.producer.accumulator import RecordAccumulator
from clients.producer.idempotence import IdempotenceState
from clients.throttle import ThrottleStats
from storage.batch import encode_native_batch
from zbroker.errors import ErrorCode, RequestTimeoutError, ZBrokerError, error_from

log = logging.getLogger(__name__)


class Sender:
    """Runs in the network thread: drains the accumulator and resolves batches.

    Args:
        acc: the producer's record accumulator.
        net: the transport (``send``, ``wakeup``): a NetworkClient or a fake.
        meta: the metadata manager (``cache.leaders``, ``cache.updated_at``,
            ``request_update``, ``candidates``).
        idempotence: the producer id and sequence state, or None (not idempotent).
        clock: ``time.monotonic`` or a fake, for the callbacks (``run`` gets ``now``).
        The other arguments are the producer's settings of the same names
        (``delivery_timeout``, ``retry_backoff`` and ``metadata_max_age`` in seconds).
    """

    def __init__(
        self,
        acc: RecordAccumulator,
        net,
        meta,
        *,
        acks: int,
        compression: int,
        request_timeout_ms: int,
        retries: int,
        delivery_timeout: float,
        retry_backoff: float,
        max_in_flight: int,
        metadata_max_age: float,
        idempotence: IdempotenceState | None = None,
        clock=time.monotonic,
    ) -> None:
        self.acc = acc
        self.net = net
        self.meta = meta
        self.acks = acks
        self.compression = compression
        self.request_timeout_ms = request_timeout_ms
        self.retries = retries
        self.delivery_timeout = delivery_timeout
        self.retry_backoff = retry_backoff
        self.max_in_flight = max_in_flight
        self.metadata_max_age = metadata_max_age
        self.idem = idempotence
        self.clock = clock
        self.stop_retrying = False  # set when the producer's close() gave up waiting
        self.inflight: dict[str, int] = {}
        self.producer_id_retry_at = 0.0  # after a refused init_producer_id: not asked again before this
        self.throttle = ThrottleStats("produce")  # answers a broker held back by a quota

    def _can_send(self, address: str) -> bool:
        return self.inflight.get(address, 0) < self.max_in_flight

    def _idempotence_ready(self, now: float) -> bool:
        """Make sure there is a producer id before batches are numbered."""
        idem = self.idem
        if idem.ready(any(self.inflight.values())):
            return True
        if now < self.producer_id_retry_at or not self.acc.has_undrained():
            return False
        address = idem.next_request(self.meta.candidates())
        if address is not None:
            self.net.send(address, "init_producer_id", {}, (), self._on_producer_id, timeout_ms=min(5000, self.request_timeout_ms))
        return False

    def _on_producer_id(self, header, _frames, exc) -> None:
        if exc is None and not header.get("error"):
            self.idem.on_producer_id(header["producer_id"], header["producer_epoch"])
            log.debug("producer id %s epoch %s", self.idem.producer_id, self.idem.producer_epoch)
        else:
            self.idem.on_producer_id_failed()
            self.producer_id_retry_at = self.clock() + self.retry_backoff
            error = exc or error_from(header["error"], header.get("error_message"))
            log.debug("init_producer_id failed: %s", error)
            if isinstance(error, ZBrokerError) and not error.retriable:
                # refused (not allowed to write, say): what is queued cannot be sent; it fails with
                # the broker's reason now, as Kafka's producer fails sends on a fatal error.  A later
                # send asks again (an ACL may have been granted meanwhile).
                for b in self.acc.take_queued():
                    self._finish(b, -1, error)
            self.meta.request_update(self.clock())
        self.net.wakeup()

    def run(self, now: float):
        acc = self.acc
        if not acc.queues:
            return None
        for b in acc.expired(now, self.delivery_timeout):
            self._finish(b, -1, RequestTimeoutError(f"{b.tp[0]}-{b.tp[1]}: record not sent within delivery_timeout_ms"))
        if self.idem is not None and not self._idempotence_ready(now):
            return now + self.retry_backoff if acc.has_undrained() else None
        if now - self.meta.cache.updated_at > self.metadata_max_age:
            self.meta.request_update(now)
        by_leader, deadline, leaderless = acc.drain(now, self.meta.cache.leaders.get, self._can_send)
        if leaderless:
            self.meta.request_update(now)
            retry = now + self.retry_backoff
            deadline = retry if deadline is None or retry < deadline else deadline
        for address, items in by_leader.items():
            self._send(address, items)
        return deadline

    def _encode(self, tp, b) -> bytes:
        idem = self.idem
        if idem is None:
            return encode_native_batch(b.records, b.base_ts, b.max_ts, self.compression)
        b.base_seq = idem.assign(tp, len(b.records))
        return encode_native_batch(b.records, b.base_ts, b.max_ts, self.compression, idem.producer_id, idem.producer_epoch, b.base_seq)

    def _send(self, address: str, items: list) -> None:
        frames = []
        descs = []
        for tp, batches in items:
            for b in batches:
                if b.encoded is None:
                    b.encoded = self._encode(tp, b)
                b.attempts += 1
                frames.append(b.encoded)
                descs.append({"topic": tp[0], "partition": tp[1]})
        fields = {"acks": self.acks, "timeout_ms": self.request_timeout_ms, "batches": descs}
        self.inflight[address] = self.inflight.get(address, 0) + 1
        if self.acks == 0:
            self.net.send(
                address, "produce", fields, frames, None, expect_response=False,
                on_sent=lambda exc: self._on_sent(address, items, exc),
            )
        else:
            self.net.send(
                address, "produce", fields, frames,
                lambda h, _f, exc: self._on_response(address, items, h, exc),
                timeout_ms=self.request_timeout_ms + 5000,
            )

    def _finish(self, b, base_offset: int, error) -> None:
        if b.base_seq >= 0 and error is not None and self.idem is not None:
            self.idem.on_batch_failed(error)
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
                and b.attempts <= self.retries
                and now - b.created < self.delivery_timeout
                and not self.stop_retrying
            ):
                retry.append(b)
            else:
                self._finish(b, -1, exc)
        return retry

    def _on_response(self, address: str, items: list, header, exc) -> None:
        self.inflight[address] -= 1
        now = self.clock()
        refresh = False
        self.throttle.note(header, address, now)
        if exc is None and header.get("error"):
            exc = error_from(header["error"], header.get("error_message"))
        if exc is not None:
            log.debug("produce to %s failed: %s", address, exc)
            refresh = getattr(exc, "invalid_metadata", False)
            for tp, batches in items:
                retry = self._retry_or_fail(tp, batches, exc, now)
                if retry:
                    self.acc.reenqueue(tp, retry, now + self.retry_backoff)
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
                    self.acc.reenqueue(tp, retry, now + self.retry_backoff)
                self.acc.unmute(tp)
        if refresh:
            self.meta.request_update(now)
        self.net.wakeup()
