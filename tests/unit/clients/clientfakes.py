"""Fakes for the clients' unit tests: a network that records requests, metadata, a clock."""

from __future__ import annotations

from types import SimpleNamespace


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class FakeNet:
    """Records every request; a test answers one by calling its ``callback``."""

    def __init__(self) -> None:
        self.sent: list = []
        self.requests: list = []
        self.wakeups = 0

    def send(self, address, kind, fields=None, frames=(), callback=None, timeout_ms=None, expect_response=True, on_sent=None):
        self.sent.append(SimpleNamespace(address=address, kind=kind, fields=fields or {}, frames=list(frames),
                                         callback=callback, timeout_ms=timeout_ms, on_sent=on_sent))
        return len(self.sent)

    def request(self, address, kind, fields=None, frames=(), timeout_ms=None, check=True):
        self.requests.append(SimpleNamespace(address=address, kind=kind, fields=fields or {}, timeout_ms=timeout_ms))
        return {"error": 0}, []

    def wakeup(self) -> None:
        self.wakeups += 1

    def of_kind(self, kind: str) -> list:
        return [r for r in self.sent if r.kind == kind]


class FakeMeta:
    """A metadata manager with fixed leaders; counts the refreshes asked for."""

    def __init__(self, leaders=None, brokers=("b1:9555",)) -> None:
        self.cache = SimpleNamespace(leaders=dict(leaders or {}), updated_at=0.0, topic_errors={}, partition_counts={})
        self.brokers = list(brokers)
        self.updates = 0

    def candidates(self) -> list[str]:
        return list(self.brokers)

    def request_update(self, now=None) -> bool:
        self.updates += 1
        return True


def reseal(batch: bytes, payload: bytes) -> bytes:
    """``batch`` with its payload replaced by ``payload``: length and CRC-32C made valid again
    (a batch a broker accepts whatever the payload holds)."""
    import struct

    import crc32c

    buf = bytearray(batch[:61] + payload)
    struct.pack_into(">i", buf, 8, len(buf) - 12)
    struct.pack_into(">I", buf, 17, crc32c.crc32c(bytes(buf[21:])))
    return bytes(buf)
