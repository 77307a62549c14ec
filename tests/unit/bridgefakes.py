"""Gateways and bridge configs for the bridge's sans-IO unit tests (no sockets, time passed in).

- :class:`ScriptedGateway`: every call is recorded and answered as the test says (at once,
  later, or with an error), so retries, back-pressure and orderings can be stepped by hand.
- :class:`AppGateway`: the Gateway calls over a real single-node :class:`~zbroker.app.App`
  (the real produce service: sequence checks, duplicates acknowledged, appends to disk).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zbroker.context import INTERNAL, Completion
from zbroker.control.topicadmin import CreateTopic, ProducerId
from zbroker.core.produce import ProduceResult
from zbroker.errors import ErrorCode, RequestError


@dataclass(frozen=True)
class IngestConfig:
    """The ingest fields of a bridge config (zbroker.bridge_config.BridgeConfig's names)."""

    name: str = "sensors"
    socket: str = "pull"
    endpoint: str = "tcp://127.0.0.1:7001"
    bind: bool = True
    broker: int = 1
    topic: str | None = "t"
    topic_from: str | None = None
    key_from: str | None = None
    subscribe: tuple[str, ...] = ("",)
    acks: int = -1
    curve: bool | None = None
    server_key: bytes | None = None
    hwm: int = 1000

    @property
    def ingest(self) -> bool:
        return True

    @property
    def principal(self) -> str:
        return f"Bridge:{self.name}"


@dataclass
class Produced:
    topic: str
    partition: int
    batch: bytes
    acks: int
    done: Completion = field(default_factory=Completion)

    def ok(self, base_offset: int = 0) -> None:
        self.done.complete(ProduceResult(self.topic, self.partition, 0, None, base_offset))

    def error(self, code: ErrorCode, message: str = "no") -> None:
        result = ProduceResult(self.topic, self.partition)
        result.fail(code, message)
        self.done.complete(result)


class ScriptedGateway:
    """Records every produce; answers nothing until the test says (``auto_ok`` answers at once)."""

    def __init__(self, topics: dict[str, int] | None = None, auto_ok: bool = False, pid: int | None = 42) -> None:
        self.topic_counts = dict(topics if topics is not None else {"t": 3})
        self.auto_ok = auto_ok
        self.produced: list[Produced] = []
        self.pid_asks: list[Completion] = []
        self.created: list[tuple[str, int | None, Completion]] = []
        self._pid = pid

    def partition_count(self, topic: str) -> int | None:
        return self.topic_counts.get(topic)

    def topics(self) -> dict[str, int]:
        return dict(self.topic_counts)

    def produce(self, topic, partition, batch, acks, timeout_ms, now_ms) -> Completion:
        p = Produced(topic, partition, bytes(batch), acks)
        self.produced.append(p)
        if self.auto_ok:
            p.ok()
        return p.done

    def producer_id(self, now_ms) -> Completion:
        done = Completion()
        self.pid_asks.append(done)
        if self._pid is not None:
            done.complete(ProducerId(self._pid + len(self.pid_asks) - 1, 0))
        return done

    def create_topic(self, name, partitions, configs, now_ms) -> Completion:
        done = Completion()
        self.created.append((name, partitions, done))
        return done


class AppGateway:
    """The Gateway's data calls straight onto a single-node App's services."""

    def __init__(self, app) -> None:
        self.app = app

    def partition_count(self, topic: str) -> int | None:
        meta = self.app.control.image.get(topic)
        return None if meta is None else len(meta.partitions)

    def topics(self) -> dict[str, int]:
        return {name: len(t.partitions) for name, t in self.app.control.image.topics.items()}

    def produce(self, topic, partition, batch, acks, timeout_ms, now_ms) -> Completion:
        done = Completion()
        answer = self.app.produce.produce(INTERNAL, acks, timeout_ms, [(topic, partition, batch)], now_ms)
        if answer is None:
            done.complete(ProduceResult(topic, partition))
        elif isinstance(answer, Completion):
            answer.on_done(lambda c: done.fail(c.error) if c.error else done.complete(c.value[0]))
        else:
            done.complete(answer[0])
        return done

    def producer_id(self, now_ms) -> Completion:
        return self.app.admin.init_producer_id(INTERNAL, now_ms)

    def create_topic(self, name, partitions, configs, now_ms) -> Completion:
        done = Completion()
        try:
            answer = self.app.admin.create_topic(INTERNAL, CreateTopic(name, partitions, None, dict(configs)), now_ms)
        except RequestError as exc:
            done.fail(exc)
            return done
        if isinstance(answer, Completion):
            answer.on_done(lambda c: done.fail(c.error) if c.error else done.complete(None))
        else:
            done.complete(None)
        return done
