"""A fake bridge gateway for the egress bridge's unit tests: logs in memory, no sockets.

Fetches answer at once when there is data; with ``max_wait_ms`` and nothing to read they
park until :meth:`FakeGateway.append` brings data or :meth:`FakeGateway.expire` times them out
(as the broker's purgatory does).  ``hold`` parks every answer until :meth:`release`."""

from __future__ import annotations

from dataclasses import dataclass, field

from storage import build_kafka_batch, build_native_batch
from zbroker.bridge_config import BridgeConfig
from zbroker.context import Completion
from zbroker.core.fetch import EARLIEST_TIMESTAMP, FetchedPartition
from zbroker.errors import ErrorCode, RequestError


def egress_config(name: str = "out", socket: str = "push", topics: tuple = ("t",), start: str = "earliest",
                  replay: int = 0) -> BridgeConfig:
    return BridgeConfig(name, socket, "tcp://127.0.0.1:7002", True, 1, topics=tuple(topics), start=start, replay=replay)


def failed(error: RequestError) -> Completion:
    c: Completion = Completion()
    c.fail(error)
    return c


class Handle:
    def __init__(self, done: bool) -> None:
        self.done = done


@dataclass
class Socket:
    """The send callback: records what was handed over; ``blocked`` makes sends would-block;
    ``released`` is whether new handles are done at once."""

    sent: list = field(default_factory=list)
    handles: list = field(default_factory=list)
    blocked: bool = False
    released: bool = True
    budget: int | None = None  # sends accepted before blocking

    def __call__(self, frames):
        if self.blocked or self.budget == 0:
            return None
        if self.budget is not None:
            self.budget -= 1
        self.sent.append(list(frames))
        handle = Handle(self.released)
        self.handles.append(handle)
        return handle

    def values(self) -> list[bytes]:
        return [f[2] for f in self.sent]


class FakeGateway:
    def __init__(self, partitions: dict[str, int] | None = None) -> None:
        self.counts = dict(partitions or {"t": 1})
        self.batches: dict[tuple[str, int], list[tuple[int, int, bytes]]] = {}  # (base, next, bytes)
        self.log_start: dict[tuple[str, int], int] = {}
        self.parked: list[tuple[tuple[str, int], int, int, Completion]] = []
        self.held: list[tuple[Completion, object]] = []
        self.hold = False
        self.offsets: dict[tuple[str, tuple[str, int]], int] = {}
        self.commits: list[dict] = []
        self.fetches: list[tuple[str, int, int]] = []
        self.fail_fetch: RequestError | None = None

    # -- test side --------------------------------------------------------------------

    def end(self, tp) -> int:
        batches = self.batches.get(tp)
        return batches[-1][1] if batches else self.log_start.get(tp, 0)

    def append(self, topic: str, partition: int, values: list[bytes], keys=None, ts: list[int] | None = None,
               kafka: bool = False, compression: int = 0) -> None:
        tp = (topic, partition)
        base = self.end(tp)
        ts = ts or [1000 + base + i for i in range(len(values))]
        keys = keys or [None] * len(values)
        records = [(t, k, v, None) for t, k, v in zip(ts, keys, values)]
        build = build_kafka_batch if kafka else build_native_batch
        self.batches.setdefault(tp, []).append((base, base + len(values), build(records, base, compression=compression)))
        still = []
        for ptp, offset, max_bytes, c in self.parked:
            if ptp == tp:
                c.complete(self._read(tp, offset, max_bytes))
            else:
                still.append((ptp, offset, max_bytes, c))
        self.parked = still

    def append_raw(self, topic: str, partition: int, count: int, data: bytes) -> None:
        tp = (topic, partition)
        base = self.end(tp)
        self.batches.setdefault(tp, []).append((base, base + count, data))

    def delete_before(self, tp, offset: int) -> None:
        self.log_start[tp] = offset
        self.batches[tp] = [b for b in self.batches.get(tp, []) if b[1] > offset]

    def expire(self) -> None:
        parked, self.parked = self.parked, []
        for tp, offset, max_bytes, c in parked:
            answer = self._read(tp, offset, max_bytes)
            if answer.error:
                c.fail(RequestError(ErrorCode(answer.error), f"fetching {tp[0]}-{tp[1]}"))
            else:
                c.complete(answer)

    def release(self) -> None:
        held, self.held = self.held, []
        for c, value in held:
            c.complete(value)

    def _answer(self, value) -> Completion:
        c: Completion = Completion()
        if self.hold:
            self.held.append((c, value))
        else:
            c.complete(value)
        return c

    def _read(self, tp, offset: int, max_bytes: int) -> FetchedPartition:
        start, end = self.log_start.get(tp, 0), self.end(tp)
        out = FetchedPartition(tp[0], tp[1], high_watermark=end, log_start_offset=start)
        if offset < start or offset > end:
            out.error = ErrorCode.OFFSET_OUT_OF_RANGE
            return out
        data = b""
        for _base, nxt, batch in self.batches.get(tp, []):
            if nxt > offset and (not data or len(data) + len(batch) <= max_bytes):
                data += batch
        out.data = data
        return out

    # -- the Gateway interface ----------------------------------------------------------

    def partition_count(self, topic: str) -> int | None:
        return self.counts.get(topic)

    def topics(self) -> dict[str, int]:
        return dict(self.counts)

    def fetch(self, topic, partition, offset, max_bytes, now_ms, max_wait_ms=0) -> Completion:
        self.fetches.append((topic, partition, offset))
        if self.fail_fetch is not None:
            c: Completion = Completion()
            c.fail(self.fail_fetch)
            return c
        tp = (topic, partition)
        answer = self._read(tp, offset, max_bytes)
        if answer.error:  # the real gateway fails the call with the partition's error
            c = Completion()
            c.fail(RequestError(ErrorCode(answer.error), f"fetching {topic}-{partition}"))
            return c
        if not answer.error and not answer.data and max_wait_ms > 0 and not self.hold:
            c = Completion()
            self.parked.append((tp, offset, max_bytes, c))
            return c
        return self._answer(answer)

    def list_offset(self, topic, partition, timestamp, now_ms) -> Completion:
        tp = (topic, partition)
        return self._answer(self.log_start.get(tp, 0) if timestamp == EARLIEST_TIMESTAMP else self.end(tp))

    def commit(self, group, offsets, now_ms) -> Completion:
        self.commits.append(dict(offsets))
        for tp, offset in offsets.items():
            self.offsets[(group, tp)] = offset
        return self._answer(None)

    def committed(self, group, tps, now_ms) -> Completion:
        return self._answer({tp: self.offsets.get((group, tp), -1) for tp in tps})
