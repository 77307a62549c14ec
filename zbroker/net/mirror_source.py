"""A mirror's source side: a client of the other cluster, in a thread of its own.

A ``[[mirror]]`` reads another cluster as any client would, with the tested client
libraries (as Kafka's MirrorMaker uses Kafka's clients): ``zbroker://`` through
:class:`clients.Consumer` (manual ``assign``/``seek``, no group: the source needs to grant
only read and describe) and :class:`clients.Admin` (topics, partitions, topic configs);
``kafka://`` through ``confluent_kafka.Consumer`` (``incremental_assign`` with offsets,
``list_topics``, ``get_watermark_offsets``; nothing committed) and
``confluent_kafka.admin.AdminClient.describe_configs``.  It authenticates like any client:
``source_config`` goes to librdkafka (``security.protocol``, ``sasl.*``, ``ssl.*``); the
CURVE keys (``curve_server_key``, ``curve_secret_key_file``) to the native client.

The thread and the broker's loop share two queues::

    loop  --add(positions) / pause / resume / remove / refresh() / close()-->  thread   (commands, small)
    loop  <--("topics", ...) ("records", ...) ("error", msg)--  thread   (bounded: the thread
                                        blocks while it holds QUEUE_EVENTS events or QUEUE_BYTES)

and a socketpair: after queuing an event the thread writes a byte (unless one is already
unread), which wakes the loop (the read end is watched like any listener's socket); the
loop then calls ``on_wake``, and the mirror takes events while it has room
(:mod:`zbroker.frontends.bridge.mirror` defines the events).  A partition the mirror pauses
(its backlog is full) is no longer read: from the call on, none of its records are queued,
and when it is resumed it is read again from just after the last record queued.  This is the one broker
module that imports the client library (pyproject.toml says why).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections import defaultdict, deque
from typing import Callable

from clients.admin import Admin
from clients.consumer.consumer import Consumer
from zbroker.errors import UnknownTopicOrPartitionError

log = logging.getLogger(__name__)
librdkafka_log = logging.getLogger(f"{__name__}.librdkafka")

#: events (record batches mostly) queued between the thread and the loop at most
QUEUE_EVENTS = 16
#: ... and at most about this many bytes of records (one event more than that is let through)
QUEUE_BYTES = 8 << 20
POLL_S = 0.2
MAX_RECORDS = 500
#: the source's requests time out after this; a slow source then shows as an error, and is asked again
REQUEST_TIMEOUT_MS = 10_000
#: pause after a failure before the thread tries again
RETRY_S = 1.0
#: how long a broker that shuts down waits for its mirrors' source threads (their clients closed), in all
JOIN_S = 5.0
#: Kafka's config source of a value set on the topic (DescribeConfigs DYNAMIC_TOPIC_CONFIG)
_KAFKA_TOPIC_CONFIG = 1


class MirrorSource:
    """The loop's handle on one mirror's source thread (a Listener of the event loop).

    Args:
        config: the :class:`~zbroker.bridge_config.MirrorConfig`.
        loop: the broker's :class:`~zbroker.net.loop.EventLoop`: the wake socket is watched
            from here until :meth:`close`.
        reader: ``reader(config)`` -> what reads the source (``topics()``, ``add(positions)``,
            ``pause(tps)``, ``poll(stop)`` -> events, ``close()``); by default the one for the
            config's scheme.
    """

    def __init__(self, config, loop, reader: Callable | None = None) -> None:
        self.config = config
        # what reads the source, made in the thread (tests pass their own)
        self._make_reader = reader or (_KafkaReader if config.scheme == "kafka" else _ZbrokerReader)
        self.loop = loop
        self.on_wake: Callable[[], None] | None = None
        self._events: deque = deque()  # (event, size)
        self._queued_bytes = 0
        self._room = threading.Condition()  # guards _events, _queued_bytes, _paused
        self._paused: set[tuple[str, int]] = set()
        # the thread's: per partition read, the offset after the last record queued (or where it
        # was added); and those whose records were dropped: none queued until read again from _next
        self._next: dict[tuple[str, int], int] = {}
        self._reseek: set[tuple[str, int]] = set()
        self._commands: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._signalled = False
        self._rsock, self._wsock = socket.socketpair()
        self._rsock.setblocking(False)
        self._wsock.setblocking(False)
        loop.watch(self, self._rsock)
        self._thread = threading.Thread(target=self._run, name=f"mirror-{config.name}", daemon=True)
        self._thread.start()

    # -- the loop's side -------------------------------------------------------------------

    def sockets(self) -> list:
        return [self._rsock]

    def on_readable(self, sock) -> None:
        try:
            while sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self._signalled = False  # after draining: a byte written from now on wakes the loop again
        if self.on_wake is not None:
            self.on_wake()

    def add(self, positions: dict[tuple[str, int], int]) -> None:
        """Read these partitions too, each from its offset (-2: the log start)."""
        self._commands.put(("add", dict(positions)))

    def refresh(self) -> None:
        """List the matching topics again (answered by a ``topics`` event)."""
        self._commands.put(("refresh",))

    def pause(self, tps) -> None:
        """Stop reading these partitions: none of their records is queued from now on."""
        with self._room:
            self._paused |= set(tps)
        self._commands.put(("pause", list(tps)))

    def resume(self, tps) -> None:
        """Read paused partitions again, each from just after the last record queued."""
        with self._room:
            self._paused -= set(tps)
        self._commands.put(("resume", list(tps)))

    def remove(self, tps) -> None:
        """Stop reading these partitions and forget them (their topic is gone from the source)."""
        with self._room:
            self._paused -= set(tps)
        self._commands.put(("remove", list(tps)))

    def take(self, limit: int) -> list[tuple]:
        out = []
        with self._room:
            while self._events and len(out) < limit:
                event, size = self._events.popleft()
                self._queued_bytes -= size
                out.append(event)
            if out:
                self._room.notify_all()
        return out

    def queued(self) -> tuple[int, int]:
        """Events and bytes queued for the loop."""
        with self._room:
            return len(self._events), self._queued_bytes

    def close(self) -> None:
        """Stop the thread (it closes its clients within about a request timeout) and the wake socket."""
        if self._stop.is_set():
            return
        self._stop.set()
        with self._room:
            self._room.notify_all()
        self.loop.unwatch(self._rsock)
        self._rsock.close()
        self._wsock.close()

    def alive(self) -> bool:
        """Whether the thread still runs (it ends soon after :meth:`close`)."""
        return self._thread.is_alive()

    def join(self, timeout: float = JOIN_S) -> bool:
        """Wait for the thread to end (after :meth:`close`); returns whether it did."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("mirror %s: its source thread did not end within %g s", self.config.name, timeout)
            return False
        return True

    # -- the thread ---------------------------------------------------------------------------

    def _emit(self, event: tuple) -> bool:
        """Queue ``event`` for the loop once there is room; False: stopping.  The records of a
        paused partition are dropped here, and so are all its later ones until it is read
        again from :attr:`_next` (a resume): what is queued has no gap."""
        size = _event_size(event)
        with self._room:
            while not self._stop.is_set() and (len(self._events) >= QUEUE_EVENTS
                                               or (self._events and self._queued_bytes + size > QUEUE_BYTES)):
                self._room.wait(POLL_S)
            if self._stop.is_set():
                return False
            if event[0] == "records":
                tp = (event[1], event[2])
                if tp in self._paused or tp in self._reseek:
                    self._reseek.add(tp)
                    return True
                self._next[tp] = event[3][-1][0] + 1
            self._events.append((event, size))
            self._queued_bytes += size
        if not self._signalled:
            self._signalled = True
            try:
                self._wsock.send(b"\0")
            except (BlockingIOError, InterruptedError):
                pass  # bytes unread already wake the loop
            except OSError:
                return False  # closed: stopping
        return True

    def _command(self, reader, command: tuple) -> None:
        """One command, in the thread (raises if the source fails: it is tried again)."""
        kind, arg = command
        if kind == "add":
            reader.add(arg)
            self._next.update(arg)
            self._reseek.difference_update(arg)
        elif kind == "pause":
            reader.pause(arg)
        elif kind == "resume":
            positions = {tp: self._next[tp] for tp in arg if tp in self._next}
            reader.add(positions)
            self._reseek.difference_update(positions)
        elif kind == "remove":
            reader.pause(arg)
            for tp in arg:
                self._next.pop(tp, None)
                self._reseek.discard(tp)

    def _run(self) -> None:
        reader = None
        commands: list[tuple] = []  # to do, in the order asked
        refresh = False  # a listing asked for (several asked meanwhile are one)
        while not self._stop.is_set():
            try:
                while True:
                    try:
                        command = self._commands.get_nowait()
                    except queue.Empty:
                        break
                    if command[0] == "refresh":
                        refresh = True
                    else:
                        commands.append(command)
                if reader is None:
                    reader = self._make_reader(self.config)
                while commands:
                    self._command(reader, commands[0])
                    commands.pop(0)  # only once done: a failed command is tried again, positions are not lost
                if refresh:
                    refresh = False  # a failed listing waits for the next refresh
                    self._emit(("topics", reader.topics()))
                for event in reader.poll(self._stop):  # between commands, always: a listing slower than
                    if not self._emit(event):          # refresh_ms must not starve the reading
                        break
            except Exception as exc:  # the source is down, refuses us, ...: say so, try again
                log.debug("mirror %s: source failed", self.config.name, exc_info=True)
                self._emit(("error", f"source {self.config.source}: {type(exc).__name__}: {exc}"))
                self._stop.wait(RETRY_S)
        if reader is not None:
            try:
                reader.close()
            except Exception:
                log.debug("mirror %s: closing the source's clients failed", self.config.name, exc_info=True)


def _event_size(event: tuple) -> int:
    """About what an event holds in memory: the records' keys and values, 64 bytes more each."""
    if event[0] != "records":
        return 256
    return sum(64 + len(r[2] or b"") + len(r[3] or b"") for r in event[3])


def _records_events(rows) -> list[tuple]:
    """``("records", topic, partition, records, -1)`` per partition, in offset order."""
    by_tp: dict = defaultdict(list)
    for topic, partition, record in rows:
        by_tp[(topic, partition)].append(record)
    return [("records", t, p, records, -1) for (t, p), records in by_tp.items()]


class _ZbrokerReader:
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


class _KafkaReader:
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
        self.consumer = confluent_kafka.Consumer({"group.id": f"mirror.{config.name}", "auto.offset.reset": "earliest", **base,
                                                  "enable.auto.commit": False, "enable.auto.offset.store": False})
        self.admin = AdminClient(base)
        self.assigned: set[tuple[str, int]] = set()

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
        TopicPartition = self.kafka.TopicPartition
        # -2 is librdkafka's OFFSET_BEGINNING too
        self.consumer.incremental_assign([TopicPartition(t, p, offset) for (t, p), offset in positions.items()])
        self.assigned |= set(positions)

    def pause(self, tps: list) -> None:
        """Stop reading ``tps`` (unassigned: what was fetched for them is dropped)."""
        gone = [self.kafka.TopicPartition(t, p) for t, p in tps if (t, p) in self.assigned]
        if gone:
            self.consumer.incremental_unassign(gone)
        self.assigned -= set(tps)

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
