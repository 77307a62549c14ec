"""An ingest bridge: multipart messages from a plain ZeroMQ socket become records (sans-IO).

The socket (``pull``, ``sub`` or ``xsub``) lives in :mod:`zbroker.net.bridge_sockets`; the
server hands each message it receives to :meth:`IngestBridge.offer` and asks
:meth:`IngestBridge.has_room` before taking the next one off a PULL socket.

A message ``[frame0, frame1, ..., last]`` becomes one record:

- topic: the bridge's ``topic``, or with ``topic_from = "frame0"`` frame 0 (UTF-8, a valid
  topic name);
- key: frame N with ``key_from = "frameN"`` (frames indexed as received), else none;
- value: the last frame, which is never the topic's or the key's frame: a message needs
  ``max(used index) + 2`` frames (1 without topic_from and key_from); frames between are
  ignored;
- timestamp: when the broker took it off the socket.

A message that cannot become a record is dropped and counted by reason (``too_few_frames``,
``bad_topic``, ``unknown_topic``, ``buffer_full``) with a rate-limited log line naming what
was wrong.  A topic that does not exist is created as a producer's would be: when
``[cluster] auto_create_topics`` is on (``auto_create``), with the cluster's default
partition count, if the bridge's principal may create it -- its messages wait for the creation; a
retriable error (no controller during a failover, a timeout) asks again after a back-off, for as long
as it takes; a refusal fails the waiting messages, counted under ``failed`` by the error's name.
At most :data:`MAX_CREATING` topics are created at once: a PULL bridge parks a message for one
more and has no room until a creation is done (back-pressure); a SUB/XSUB bridge drops it
(``creating_full``).  Without auto-create the messages are dropped as ``unknown_topic``.

Partition: keyed records by murmur2 of the key (:func:`zbroker.hashing.positive_hash_mod`,
what the clients and Kafka's default partitioner do); keyless ones stick to one partition
of the topic until its batch is sent (or is due and waits behind one in flight), then move to
the next (round robin), so a slow partition does not hold up keyless records.

Batches, retries and idempotence: :mod:`zbroker.frontends.bridge.ingest_batches`.  A
record is *in flight* from the moment it is taken off the socket until it is stored or
has failed; the bridge holds at most ``max_in_flight_records`` records and
``max_in_flight_bytes`` bytes (plus one message) in flight.  :meth:`has_room` says whether
it can take another; once it says no, every open batch is sent at once, and ``on_room``
is called when room comes back.  A PULL listener stops reading meanwhile (the senders'
ZeroMQ queues fill to their high-water mark and their sends block: back-pressure, nothing
dropped); a SUB or XSUB listener keeps draining its socket and :meth:`offer` drops what
does not fit, counted as ``buffer_full``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from zbroker.context import Completion
from zbroker.control.metadata import topic_name_problem
from zbroker.frontends.bridge.gateway import retriable
from zbroker.frontends.bridge.callbacks import CallbackGuard, error_name
from zbroker.frontends.bridge.ingest_batches import RETRY_MAX_MS, RETRY_MIN_MS, BatchSender, PartitionQueue, record_size
from zbroker.hashing import positive_hash_mod
from zbroker.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

LINGER_MS = 5
MAX_BATCH_BYTES = 256 << 10
MAX_IN_FLIGHT_BYTES = 32 << 20
PRODUCE_TIMEOUT_MS = 10_000  # acks=all wait; a retry is idempotent, so a short wait costs nothing but a resend
MAX_CREATING = 8  # topics being auto-created at once; for more, pull stops reading, sub/xsub drop (creating_full)
PRODUCER_ID_RETRY_MS = 500
MAX_TOPICS_SEEN = 4096  # topic frames remembered as checked (then forgotten all at once)
CREATE_POLL_MS = 50  # how often a topic being created is looked for in the metadata image


class IngestBridge:
    """One ingest bridge's logic (see the module docstring)."""

    kind = "ingest"

    def __init__(self, config: Any, gateway: Any, now_ms: int, *, auto_create: bool = False,
                 max_in_flight_records: int | None = None, max_in_flight_bytes: int = MAX_IN_FLIGHT_BYTES,
                 linger_ms: int = LINGER_MS, max_batch_bytes: int = MAX_BATCH_BYTES, timeout_ms: int = PRODUCE_TIMEOUT_MS,
                 on_room: Callable[[], None] | None = None) -> None:
        """``config``: the bridge's :class:`~zbroker.bridge_config.BridgeConfig`; ``gateway``: its
        :class:`~zbroker.frontends.bridge.gateway.Gateway`; ``max_in_flight_records`` defaults to
        the bridge's ``hwm``; ``on_room()`` is called when :meth:`has_room` turns true again."""
        self.config = config
        self.name = config.name
        self.gateway = gateway
        self.lossy = config.socket != "pull"  # sub/xsub: always drained, drops counted
        self.topic_index = 0 if config.topic_from is not None else None  # "frame0", the one choice
        self.key_index = config.key_frame
        used = [i for i in (self.topic_index, self.key_index) if i is not None]
        self.min_frames = max(used) + 2 if used else 1
        self.auto_create = auto_create
        self.max_records = max_in_flight_records or config.hwm
        self.max_bytes = max_in_flight_bytes
        self.on_room = on_room
        self._now = now_ms
        self.guard = CallbackGuard(self.name, lambda: self._now)
        self.sender = BatchSender(gateway.produce, config.acks, timeout_ms, max_batch_bytes, linger_ms, self, self._exists,
                                  self.guard)
        self.received = self.stored = 0
        self.dropped: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.in_flight = self.in_flight_bytes = 0
        self._sticky: dict[str, int] = {}
        self._topics_seen: dict[bytes, str] = {}  # topic frame -> its valid name (names are checked once)
        self._creating: dict[str, list[tuple[int, bytes | None, bytes]]] = {}  # topic -> its waiting records
        self._create_failed: dict[str, str] = {}
        self._create_retry: dict[str, tuple[int, int]] = {}  # topic -> (attempts, when to ask again): a retriable error
        self._create_queued: list[str] = []  # pull: topics past MAX_CREATING, waiting for a slot (no room meanwhile)
        self._pid_wanted_at: int | None = now_ms
        self._pid_asking = False
        self._closed = False
        self._log = RateLimitedLog(log, burst=10, window_s=10.0)
        self._last_error: tuple[str, tuple] | None = None
        # the producer id is asked for at the first tick, not here: the server builds bridges before
        # its sockets to the other brokers are connected

    # -- input -------------------------------------------------------------------

    def has_room(self) -> bool:
        """Whether another message can be taken (records and bytes in flight under their bounds)."""
        return (self.in_flight < self.max_records and self.in_flight_bytes < self.max_bytes and not self._create_queued
                and not self._closed)

    def offer(self, frames: list[bytes], now_ms: int) -> None:
        """One multipart message off the socket: a record, or a counted drop."""
        self._now = self.sender.now_ms = now_ms
        self.received += 1
        if len(frames) < self.min_frames:
            self._drop("too_few_frames", "a message of %d frame(s); this bridge needs at least %d (topic_from=%s, key_from=%s)",
                       len(frames), self.min_frames, self.config.topic_from, self.config.key_from)
            return
        if self._closed:  # a message read in the same burst as the stop
            self._drop("closing", "the broker is stopping")
            return
        if self.lossy and not self.has_room():  # a PULL socket is not read while there is no room
            self._drop("buffer_full", "its buffer is full (%d records, %d bytes in flight): the store does not keep up",
                       self.in_flight, self.in_flight_bytes)
            return
        if self.topic_index is None:
            topic = self.config.topic
        else:
            topic = self._topic_of(frames[self.topic_index])
            if topic is None:
                return
        key = frames[self.key_index] if self.key_index is not None else None
        value = frames[-1]
        size = record_size(key, value)
        count = self.gateway.partition_count(topic)
        if count is not None and topic in self._creating:  # created: what waited goes first (order per key)
            self._settle_topic(topic, count, None, now_ms)
        if count is None and not self._await_topic(topic, (now_ms, key, value), size, now_ms):
            return
        self.in_flight += 1  # before it is placed: a batch it joins may be stored at once
        self.in_flight_bytes += size
        if count is not None:
            self._place(topic, count, (now_ms, key, value), size, now_ms)
        if not self.has_room():
            self.sender.send_ready(now_ms, urgent=True)

    def _topic_of(self, frame: bytes) -> str | None:
        """The topic a frame names, or None (counted and logged) if it names none."""
        topic = self._topics_seen.get(frame)
        if topic is not None:
            return topic
        try:
            topic = frame.decode()
        except UnicodeDecodeError:
            topic = None
        problem = "frame %d is not UTF-8" % self.topic_index if topic is None else topic_name_problem(topic)
        if problem is not None:
            self._drop("bad_topic", "a message whose topic frame is no topic name: %s", problem)
            return None
        if len(self._topics_seen) >= MAX_TOPICS_SEEN:
            self._topics_seen.clear()
        self._topics_seen[frame] = topic
        return topic

    def _place(self, topic: str, count: int, record: tuple[int, bytes | None, bytes], size: int, now_ms: int) -> None:
        key = record[1]
        if key is not None:
            partition = positive_hash_mod(key, count)
            q = self.sender.queue(topic, partition)
        else:  # sticky: the same partition until its open records leave in a batch (or are due and wait
            # behind a batch still in flight: a slow partition), then the next
            partition = self._sticky.get(topic, -1)
            q = self.sender.queues.get((topic, partition))
            if q is None or not q.open or partition >= count or (q.batch is not None and self.sender.due(q, now_ms)):
                partition = self._sticky[topic] = (partition + 1) % count
                q = self.sender.queue(topic, partition)
        q.add(record, size, now_ms)
        if q.open_bytes >= self.sender.max_batch_bytes and q.batch is None and self.sender.producer_id is not None:
            self.sender.seal(q, now_ms)

    def _await_topic(self, topic: str, record, size: int, now_ms: int) -> bool:
        """Park ``record`` until ``topic`` is created; False (counted) if it will not be."""
        waiting = self._creating.get(topic)
        if waiting is None:
            if not self.auto_create:
                self._drop("unknown_topic", "a message for topic %r, which does not exist (auto_create_topics is off)", topic)
                return False
            if len(self._creating) - len(self._create_queued) >= MAX_CREATING:
                if self.lossy:
                    self._drop("creating_full", "a message for topic %r, which does not exist: %d topics are being created "
                               "already", topic, MAX_CREATING)
                    return False
                self._create_queued.append(topic)  # a PULL bridge stops reading until a creation is done
                waiting = self._creating[topic] = []
            else:
                waiting = self._creating[topic] = []
                self._create(topic, now_ms)
        waiting.append(record)
        return True

    def _create(self, topic: str, now_ms: int) -> None:
        log.info("bridge %s: creating topic %s, which a message named", self.name, topic)
        try:
            done = self.gateway.create_topic(topic, None, {}, now_ms)  # the cluster's default partitions
        except Exception as exc:
            done = Completion()
            done.fail_with(-1, f"{type(exc).__name__}: {exc}")

        def created(c: Completion) -> None:
            if c.error is None or topic not in self._creating:
                return
            why = f"{error_name(c.error.code)}: {c.error.message}"
            if retriable(c.error):  # no controller during a failover, timed out: asked again, for as long as it takes
                attempts = self._create_retry.get(topic, (0, 0))[0] + 1
                self._create_retry[topic] = (attempts, self._now + min(RETRY_MAX_MS, RETRY_MIN_MS << min(attempts - 1, 5)))
                self._report("create_retry", logging.INFO, "bridge %s: creating topic %r again later: %s", self.name, topic, why)
            else:
                self._create_failed[topic] = why

        done.on_done(self.guard(created, "a topic creation's answer"))

    def _settle_creations(self, now_ms: int) -> None:
        for topic in list(self._creating):
            count = self.gateway.partition_count(topic)
            failed = self._create_failed.get(topic)
            if count is not None or failed is not None:
                self._settle_topic(topic, count, failed, now_ms)
                continue
            if topic in self._create_queued:
                continue
            retry = self._create_retry.get(topic)
            if retry is not None and retry[1] <= now_ms:
                self._create_retry[topic] = (retry[0], now_ms + RETRY_MAX_MS)  # until its answer says otherwise
                self._create(topic, now_ms)

    def _settle_topic(self, topic: str, count: int | None, failed: str | None, now_ms: int) -> None:
        """``topic`` was created (``count`` partitions) or will not be (``failed``): its waiting records
        are placed, in the order they came, or failed."""
        full = not self.has_room()
        self._create_failed.pop(topic, None)
        self._create_retry.pop(topic, None)
        waiting = self._creating.pop(topic)
        if topic in self._create_queued:  # it appeared before its turn (created elsewhere)
            self._create_queued.remove(topic)
        if self._create_queued and len(self._creating) - len(self._create_queued) < MAX_CREATING:
            self._create(self._create_queued.pop(0), now_ms)
        for record in waiting:
            size = record_size(record[1], record[2])
            if count is None:
                self.failed[_reason(failed)] = self.failed.get(_reason(failed), 0) + 1
                self._release(1, size)
            else:
                self._place(topic, count, record, size, now_ms)
        if count is None:
            self._report("create_failed", logging.WARNING,
                         "bridge %s: %d message(s) for topic %r failed: it could not be created: %s",
                         self.name, len(waiting), topic, failed)
        self._room_back(full)

    def _exists(self, topic: str, partition: int) -> bool:
        count = self.gateway.partition_count(topic)
        return count is not None and partition < count

    def _drop(self, reason: str, msg: str, *args) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self._report("drop_" + reason, logging.WARNING, "bridge %s dropped " + msg, self.name, *args)

    def _report(self, kind: str, level: int, msg: str, *args) -> None:
        """Log (rate-limited) and keep as the last error shown by ``status`` (formatted only then)."""
        self._last_error = (msg, args)
        self._log.log(self._now / 1000, kind, level, msg, *args)

    def _release(self, count: int, size: int) -> None:
        full = not self.has_room()
        self.in_flight -= count
        self.in_flight_bytes -= size
        self._room_back(full)

    def _room_back(self, was_full: bool) -> None:
        """Call ``on_room`` if there was no room before and there is now."""
        if was_full and self.has_room() and self.on_room is not None and not self._closed:
            self.on_room()

    # -- the sender's outcomes (ingest_batches.Outcome) ----------------------------

    def on_stored(self, queue: PartitionQueue, count: int, size: int) -> None:
        self.stored += count
        self._release(count, size)
        if not self.sender.busy:  # an answer that came later: the partition's next batch may leave now
            while self.sender.ready(queue, self._now, urgent=not self.has_room()):
                self.sender.seal(queue, self._now)

    def on_failed(self, queue: PartitionQueue, count: int, size: int, reason: str, message: str) -> None:
        self.failed[reason] = self.failed.get(reason, 0) + count
        self._report("failed", logging.WARNING, "bridge %s: %d record(s) for %s-%d were not stored: %s %s",
                     self.name, count, queue.topic, queue.partition, reason, message)
        self._release(count, size)

    def on_retry(self, queue: PartitionQueue, reason: str, message: str) -> None:
        self._report("retry", logging.INFO, "bridge %s: retrying a batch for %s-%d: %s %s",
                     self.name, queue.topic, queue.partition, reason, message)

    def on_resequence(self, producer_id: int) -> None:
        log.warning("bridge %s: producer id %d is out of sequence on the broker; taking a new one", self.name, producer_id)
        self._pid_wanted_at = self._now
        self._ask_producer_id(self._now)

    def _ask_producer_id(self, now_ms: int) -> None:
        if self._pid_asking or self._closed:
            return
        self._pid_asking = True
        self._pid_wanted_at = None
        try:
            done = self.gateway.producer_id(now_ms)
        except Exception as exc:
            done = Completion()
            done.fail_with(-1, f"{type(exc).__name__}: {exc}")

        def answered(c: Completion) -> None:
            self._pid_asking = False
            if c.error is None:
                self.sender.set_producer(c.value.producer_id, c.value.producer_epoch)
            else:
                self._pid_wanted_at = self._now + PRODUCER_ID_RETRY_MS
                self._report("producer_id", logging.WARNING, "bridge %s: no producer id yet: %s", self.name, c.error.message)

        done.on_done(self.guard(answered, "a producer id's answer"))

    # -- timers ------------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        self._now = self.sender.now_ms = now_ms
        if self._pid_wanted_at is not None and now_ms >= self._pid_wanted_at:
            self._ask_producer_id(now_ms)
        if self._creating:
            self._settle_creations(now_ms)
        self.sender.send_ready(now_ms, urgent=not self.has_room())

    def next_deadline(self, now_ms: int) -> int | None:
        due = self.sender.next_deadline()
        for at in (self._pid_wanted_at, now_ms + CREATE_POLL_MS if self._creating else None):
            if at is not None and (due is None or at < due):
                due = at
        return due

    def close(self, now_ms: int) -> None:
        """Take nothing more (:meth:`has_room` says no: a PULL socket is no longer read) and send
        what is open at once; what is in flight goes on being stored while the host still ticks
        the bridge (:meth:`settled`), until the broker stops (:meth:`finish`)."""
        self._closed = True
        self.tick(now_ms)
        self.sender.send_ready(now_ms, urgent=True)

    def settled(self) -> bool:
        """After :meth:`close`: whether every record taken off the socket is stored or has failed."""
        return self.in_flight == 0

    def finish(self, now_ms: int) -> None:
        """The broker stops: forget what is not stored, logged."""
        count, _ = self.sender.abandon()
        count += sum(len(w) for w in self._creating.values())
        if count:
            log.warning("bridge %s closed with %d record(s) taken off its socket and not stored", self.name, count)

    # -- status ------------------------------------------------------------------

    def status(self, now_ms: int) -> dict:
        c = self.config
        if self._closed:
            state = "closed"
        elif self.sender.producer_id is None:
            state = "starting"
        elif not self.has_room():
            state = "dropping" if self.lossy else "back-pressure"
        else:
            state = "running"
        return {"name": self.name, "kind": self.kind, "socket": c.socket, "endpoint": c.endpoint, "bind": c.bind,
                "acks": "all" if c.acks == -1 else c.acks, "state": state, "received": self.received, "stored": self.stored,
                "dropped": sum(self.dropped.values()), "dropped_by_reason": dict(self.dropped),
                "failed": sum(self.failed.values()), "failed_by_reason": dict(self.failed), "in_flight": self.in_flight,
                "in_flight_bytes": self.in_flight_bytes, "max_in_flight": self.max_records, "callback_errors": self.guard.errors,
                "last_error": None if self._last_error is None else self._last_error[0] % self._last_error[1]}


def _reason(failed: str | None) -> str:
    return (failed or "create_failed").split(":", 1)[0]
