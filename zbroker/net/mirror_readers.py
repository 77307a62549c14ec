"""What reads a mirror's source, in the mirror's thread (:mod:`zbroker.net.mirror_source`):
a client of the other cluster, through the tested client libraries (as Kafka's MirrorMaker
uses Kafka's clients).  This is the one broker module that imports the client library
(pyproject.toml says why).

- :class:`ZbrokerReader`: ``zbroker://`` through :class:`clients.Consumer` (manual
  ``assign``/``seek``, no group) and :class:`clients.Admin` (topics, partitions, configs);
- :class:`KafkaReader`: ``kafka://`` through ``confluent_kafka.Consumer``
  (``incremental_assign`` with offsets, ``list_topics``, cached watermarks; nothing
  committed) and ``AdminClient.describe_configs``.

Each has ``topics()``, ``add(positions)``, ``pause(tps)``, ``remove(tps)``, ``poll(stop)`` ->
events and ``close()`` (the events are :mod:`zbroker.frontends.bridge.mirror`'s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

from clients.admin import Admin
from clients.consumer.consumer import Consumer
from zbroker.errors import UnknownTopicOrPartitionError

log = logging.getLogger(__name__)
librdkafka_log = logging.getLogger(f"{__name__}.librdkafka")

POLL_S = 0.2
FETCH_WAIT_MS = 100
MAX_RECORDS = 500
#: the source's requests time out after this; a slow source then shows as an error, and is asked again
REQUEST_TIMEOUT_MS = 10_000
#: Kafka's config source of a value set on the topic (DescribeConfigs DYNAMIC_TOPIC_CONFIG)
_KAFKA_TOPIC_CONFIG = 1


def _records_events(rows) -> list[tuple]:
    """``("records", topic, partition, records, -1)`` per partition, in offset order."""
    by_tp: dict = defaultdict(list)
    for topic, partition, record in rows:
        by_tp[(topic, partition)].append(record)
    return [("records", t, p, records, -1) for (t, p), records in by_tp.items()]


class ZbrokerReader:
    """A zbroker source, through the native client library."""

    def __init__(self, config) -> None:
        self.config = config
        options = {"bootstrap": config.bootstrap, "client_id": f"mirror.{config.name}", "request_timeout_ms": REQUEST_TIMEOUT_MS}
        if config.curve_secret_key_file is not None:
            options.update(curve_secret_key_file=config.curve_secret_key_file, curve_server_key=config.curve_server_key)
        self.admin = Admin(**options)
        self.consumer = Consumer(**options, enable_auto_commit=False, auto_offset_reset="earliest")
        self.assigned: set[tuple[str, int]] = set()

    def topics(self) -> dict:
        out = {}
        for name in self.admin.list_topics():
            if not self.config.matches(name):
                continue
            try:
                d = self.admin.describe_topic(name)
            except UnknownTopicOrPartitionError:
                continue  # deleted since it was listed
            configs = {key: d.config[key] for key in d.overrides if key in d.config}
            offsets = {p.partition: (p.log_start_offset, p.high_watermark) for p in d.partitions if p.high_watermark >= 0}
            out[name] = (len(d.partitions), configs, offsets)
        return out

    def add(self, positions: dict) -> None:
        self.assigned |= set(positions)
        self.consumer.assign(sorted(self.assigned))
        for (topic, partition), offset in positions.items():
            if offset >= 0:
                self.consumer.seek(topic, partition, offset)
            else:
                self.consumer.seek_to_beginning((topic, partition))

    def pause(self, tps: list) -> None:
        """Stop reading ``tps`` (unassigned: what was fetched for them is dropped)."""
        self.assigned -= set(tps)
        self.consumer.assign(sorted(self.assigned))

    remove = pause

    def poll(self, stop: threading.Event) -> list[tuple]:
        if not self.assigned:
            stop.wait(POLL_S)
            return []
        rows = [(r.topic, r.partition, (r.offset, r.timestamp, r.key, r.value, r.headers or None))
                for r in self.consumer.poll(timeout_ms=int(POLL_S * 1000), max_records=MAX_RECORDS)]
        events = _records_events(rows)
        return [(kind, t, p, records, self.consumer.highwater(t, p)) for kind, t, p, records, _ in events]

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.admin.close()


class KafkaReader:
    """A Kafka-protocol source, through confluent-kafka (librdkafka)."""

    def __init__(self, config) -> None:
        import confluent_kafka
        from confluent_kafka.admin import AdminClient

        self.kafka = confluent_kafka
        self.config = config
        self._errors: list = []  # what librdkafka reported (a refused login, brokers down), served in poll()
        self._cause: str | None = None  # the last error that says why (not just "brokers are down")
        self._generic = (confluent_kafka.KafkaError._ALL_BROKERS_DOWN, confluent_kafka.KafkaError._TRANSPORT,
                         confluent_kafka.KafkaError._TIMED_OUT)
        # librdkafka's own log lines go to the broker's log
        base = {"bootstrap.servers": config.bootstrap, "client.id": f"mirror.{config.name}", **config.source_config,
                "logger": librdkafka_log, "error_cb": self._errors.append}
        # librdkafka wants a group.id even for assign(); nothing is committed to it
        # fetch.wait.max.ms: a partition resumed (its backlog drained) waits for the fetch in
        # flight to the broker to come back before its own starts: keep that long-poll short
        self.consumer = confluent_kafka.Consumer({"group.id": f"mirror.{config.name}", "auto.offset.reset": "earliest",
                                                  "fetch.wait.max.ms": FETCH_WAIT_MS, **base,
                                                  "enable.auto.commit": False, "enable.auto.offset.store": False})
        self.admin = AdminClient(base)
        self.assigned: set[tuple[str, int]] = set()
        self.paused: set[tuple[str, int]] = set()  # assigned, not fetched

    def topics(self) -> dict:
        from confluent_kafka.admin import ConfigResource

        timeout = REQUEST_TIMEOUT_MS / 1000
        metadata = self._metadata(timeout)
        names = sorted(n for n, t in metadata.topics.items() if t.error is None and not n.startswith("__") and self.config.matches(n))
        if not names:
            return {}
        futures = self.admin.describe_configs([ConfigResource("topic", n) for n in names], request_timeout=timeout)
        out = {}
        for resource, future in futures.items():
            name = resource.name
            try:
                entries = future.result(timeout=timeout)
            except self.kafka.KafkaException as exc:  # not allowed to describe its configs, say: mirror it without
                log.warning("mirror %s: the configs of source topic %s cannot be read (%s); it is mirrored without them",
                            self.config.name, name, exc)
                entries = {}
            configs = {e.name: e.value for e in entries.values() if e.source == _KAFKA_TOPIC_CONFIG and e.value is not None}
            partitions = metadata.topics[name].partitions
            offsets = {}
            for p in partitions:
                low, high = self._watermarks(name, p) if (name, p) in self.assigned else (-1, -1)
                if high >= 0:
                    offsets[p] = (low, high)
            out[name] = (len(partitions), configs, offsets)
        return out

    def add(self, positions: dict) -> None:
        """Read these partitions from these offsets: new ones are assigned, paused ones resumed
        and moved there (quicker than assigning them again)."""
        TopicPartition = self.kafka.TopicPartition
        # -2 is librdkafka's OFFSET_BEGINNING too
        new = [TopicPartition(t, p, offset) for (t, p), offset in positions.items() if (t, p) not in self.paused]
        if new:
            self.consumer.incremental_assign(new)
        again = [TopicPartition(t, p, offset) for (t, p), offset in positions.items() if (t, p) in self.paused]
        if again:
            self.consumer.resume([TopicPartition(tp.topic, tp.partition) for tp in again])
            for tp in again:
                self.consumer.seek(tp)
            self.paused -= set(positions)
        self.assigned |= set(positions)

    def pause(self, tps: list) -> None:
        """Stop fetching ``tps`` (what the mirror's thread had not queued yet it drops and reads again)."""
        held = [self.kafka.TopicPartition(t, p) for t, p in tps if (t, p) in self.assigned and (t, p) not in self.paused]
        if held:
            self.consumer.pause(held)
        self.paused |= {(tp.topic, tp.partition) for tp in held}

    def remove(self, tps: list) -> None:
        """Stop reading ``tps`` for good (unassigned)."""
        gone = [self.kafka.TopicPartition(t, p) for t, p in tps if (t, p) in self.assigned]
        if gone:
            self.consumer.incremental_unassign(gone)
        self.assigned -= set(tps)
        self.paused -= set(tps)

    def poll(self, stop: threading.Event) -> list[tuple]:
        self.admin.poll(0)  # serves the callbacks (errors) of the admin client
        if not self.assigned:
            self.consumer.poll(POLL_S)  # nothing assigned: serves the consumer's callbacks, returns nothing
            return self._reported()
        rows, errors = [], self._reported()
        for msg in self.consumer.consume(num_messages=MAX_RECORDS, timeout=POLL_S):
            error = msg.error()
            if error is not None:
                if error.code() != self.kafka.KafkaError._PARTITION_EOF:
                    errors.append(("error", f"source {self.config.source}: {error.str()}"))
                continue
            rows.append((msg.topic(), msg.partition(),
                         (msg.offset(), msg.timestamp()[1], msg.key(), msg.value(), msg.headers() or None)))
        events = [(kind, t, p, records, self._watermarks(t, p)[1]) for kind, t, p, records, _ in _records_events(rows)]
        if events:
            self._cause = None
        return events + errors

    def _metadata(self, timeout: float):
        """The source's topics.  Asked in one-second slices, so that an error that will not pass by
        waiting (a refused login, reported to the admin client's callback) ends the wait early and
        says why, rather than a timeout that says only that the brokers could not be reached."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                metadata = self.consumer.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
                self._cause = None
                return metadata
            except self.kafka.KafkaException as exc:
                self.admin.poll(0)
                for error in self._errors:
                    if error.code() not in self._generic:
                        self._cause = error.str()
                if self._cause is not None or time.monotonic() >= deadline:
                    raise self.kafka.KafkaException(self._explained(str(exc))) from None

    def _reported(self) -> list[tuple]:
        """Errors librdkafka reported since the last call, as one event (each text once).  A refused
        login is followed by "1/1 brokers are down" and failed requests: those carry the last error
        that says why, until the source answers again."""
        for error in self._errors:
            if error.code() not in self._generic:
                self._cause = error.str()
        texts, self._errors[:] = list(dict.fromkeys(e.str() for e in self._errors)), []
        return [("error", f"source {self.config.source}: {self._explained('; '.join(texts))}")] if texts else []

    def _explained(self, text: str) -> str:
        cause = self._cause
        return f"{text} (after: {cause})" if cause and cause not in text else text

    def _watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        """(log start, high watermark) as the last fetch answers said (-1: not known).  Asking the
        broker instead would wait behind the consumer's long-poll fetch on the same connection."""
        try:
            low, high = self.consumer.get_watermark_offsets(self.kafka.TopicPartition(topic, partition), cached=True)
        except self.kafka.KafkaException:
            return -1, -1
        return max(low, -1), max(high, -1)

    def close(self) -> None:
        self.consumer.close()
