"""Gateways and bridge configs for the bridge's sans-IO unit tests (no sockets, time passed in).

- :class:`ScriptedGateway`: every call is recorded and answered as the test says (at once,
  later, or with an error), so retries, back-pressure and orderings can be stepped by hand.
(Tests over a real broker use the real :class:`~zbroker.frontends.bridge.gateway.Gateway`.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zbroker.bridge_config import BridgeConfig
from zbroker.context import Completion
from zbroker.control.topicadmin import ProducerId
from zbroker.core.produce import ProduceResult
from zbroker.errors import ErrorCode


def ingest_config(**fields) -> BridgeConfig:
    """An ingest bridge's config: a pull bound on a fake endpoint into topic ``t``, acks=all."""
    defaults = {"name": "sensors", "socket": "pull", "endpoint": "tcp://127.0.0.1:7001", "bind": True, "broker": 1,
                "topic": "t", "acks": -1}
    return BridgeConfig(**{**defaults, **fields})


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
