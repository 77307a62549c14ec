"""Client quotas and per-connection limits: byte rates, throttle times, answers owed.

Theory of operation (Kafka's client quotas, KIP-13, and their answers, KIP-219)
-------------------------------------------------------------------------------
A quota bounds the bytes per second one principal may produce, and may fetch, **on each
broker**.  Every produce and consumer fetch a front door answers is recorded against its
principal's :class:`ByteRate` (the record batches' bytes in, or out): a rate measured over
``samples`` samples of ``sample_ms`` each (Kafka: 11 samples of 1 s).  The window it
divides by is the time since the oldest sample started, but never less than
``samples - 1`` whole samples, so one burst is spread over at least ten seconds (Kafka's
``Rate.windowSize``).  When the rate is above the quota, the throttle time is the time
the principal must stay idle for the rate over the window to fall back to the quota::

    throttle_ms = (rate - quota) / quota * window_ms        (capped at max_throttle_ms)

Throttling never refuses or drops data: the request is carried out and answered as
usual, and its answer says ``throttle_time_ms``; the front door then slows the client
down (the Kafka door stops reading the connection for that long; the native door, whose
ROUTER cannot stop reading one peer, holds the answer back for that long).  A fetch by a
principal that is *already* over its fetch quota is answered without records (Kafka's
rule; :meth:`QuotaManager.answer_fetch`): the records stay in the log for its next fetch,
and no answer held back by a throttle holds more than one quota's worth of records.

The quotas themselves are ``quota`` records of the metadata log
(``control.security_meta``): per principal (``User:NAME``) and one default entry for every
principal without a value of its own, per key (a principal with only a produce quota
gets the default's fetch quota).  :class:`QuotaManager` reads them from the metadata image
whenever its version moves; with no quota anywhere a call costs a version compare.
Brokers (``Broker:N``: replication) are never throttled.

:class:`InFlightLimit` counts, per connection, the answers a front door still owes
(parked long polls and acks=all produces, answers held back by a throttle): a connection
at its limit has its next request refused (THROTTLING_QUOTA_EXCEEDED, retriable), so what
a client pipelines never grows the broker's memory past limit x answers.

Pure: no sockets, no clock; ``now_ms`` is passed in.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Hashable

PRODUCE = "produce"
FETCH = "fetch"
KINDS = (PRODUCE, FETCH)
#: The record field of each kind (``control.security_meta.QuotaEntry``).
FIELDS = {PRODUCE: "produce_bytes_per_s", FETCH: "fetch_bytes_per_s"}
#: Rates kept before idle ones are dropped (a rate idle for a whole window is empty anyway).
SWEEP_AT = 4096


class ByteRate:
    """Bytes per second over the last ``samples`` samples of ``sample_ms`` each (Kafka's
    ``Rate`` over a ``SampledStat``).

    A sample starts with the first bytes recorded after the previous one ended; samples
    older than the whole window are dropped.

    >>> r = ByteRate(samples=11, sample_ms=1000)
    >>> r.record(50_000, now_ms=0)
    >>> r.window_ms(0), r.rate(0)
    (10000, 5000.0)
    """

    __slots__ = ("samples", "sample_ms", "_buckets")

    def __init__(self, samples: int, sample_ms: int) -> None:
        if samples < 2 or sample_ms < 1:
            raise ValueError("a rate needs at least 2 samples of at least 1 ms")
        self.samples = samples
        self.sample_ms = sample_ms
        self._buckets: deque[list[int]] = deque()  # [start_ms, bytes], oldest first

    def _purge(self, now_ms: int) -> None:
        span = self.samples * self.sample_ms
        buckets = self._buckets
        while buckets and now_ms - buckets[0][0] >= span:
            buckets.popleft()

    def record(self, nbytes: int, now_ms: int) -> None:
        """Add ``nbytes`` at ``now_ms``.  O(1) amortized."""
        self._purge(now_ms)
        buckets = self._buckets
        if not buckets or now_ms >= buckets[-1][0] + self.sample_ms:
            buckets.append([now_ms, 0])
            if len(buckets) > self.samples:
                buckets.popleft()
        buckets[-1][1] += nbytes

    def idle(self, now_ms: int) -> bool:
        """Nothing recorded within the window."""
        self._purge(now_ms)
        return not self._buckets

    def window_ms(self, now_ms: int) -> int:
        """The time the rate is measured over: since the oldest sample began, at least
        ``samples - 1`` whole samples."""
        self._purge(now_ms)
        elapsed = max(0, now_ms - self._buckets[0][0]) if self._buckets else 0
        whole = elapsed // self.sample_ms
        if whole < self.samples - 1:
            elapsed += (self.samples - 1 - whole) * self.sample_ms
        return elapsed

    def rate(self, now_ms: int) -> float:
        """Bytes per second over :meth:`window_ms`."""
        window = self.window_ms(now_ms)
        return sum(b for _, b in self._buckets) * 1000.0 / window


def throttle_time_ms(rate: float, quota: float, window_ms: int) -> int:
    """How long a principal at ``rate`` must stay idle for its rate over ``window_ms`` to fall
    back to ``quota`` (KIP-13); 0 at or below the quota.

    >>> throttle_time_ms(5000.0, 1000.0, 10_000)
    40000
    >>> throttle_time_ms(900.0, 1000.0, 10_000)
    0
    """
    if rate <= quota:
        return 0
    return int(round((rate - quota) / quota * window_ms))


class QuotaManager:
    """Byte rates per (kind, principal) against the quotas of the metadata image.

    Args:
        image: returns the security image (``.version``, ``.quotas``: principal ->
            an entry with ``produce_bytes_per_s`` and ``fetch_bytes_per_s``, None = no bound).
        default_principal: the key of the entry for every principal without its own.
        samples, sample_ms: the measuring window (``quota_samples``, ``quota_sample_ms``).
        max_throttle_ms: the longest throttle ever answered (``quota_max_throttle_ms``).
    """

    def __init__(self, image: Callable[[], Any], default_principal: str, samples: int = 11, sample_ms: int = 1000,
                 max_throttle_ms: int = 10_000) -> None:
        self._image = image
        self.default_principal = default_principal
        self.samples = samples
        self.sample_ms = sample_ms
        self.max_throttle_ms = max_throttle_ms
        self._version: int | None = None
        self._limits: dict[str, dict[str, float | None]] = {}  # principal -> kind -> bytes/s
        self._rates: dict[tuple[str, str], ByteRate] = {}

    def _refresh(self) -> None:
        security = self._image()
        if security.version == self._version:
            return
        self._version = security.version
        self._limits = {principal: {kind: getattr(entry, FIELDS[kind]) for kind in KINDS}
                        for principal, entry in security.quotas.items()}
        # a principal whose bound went away starts again from nothing if one comes back
        for key in [k for k in self._rates if self._bound(*k) is None]:
            del self._rates[key]

    def enabled(self) -> bool:
        """Whether any quota is set: a version compare while the image does not change, so
        the front doors skip quota work entirely without quotas."""
        self._refresh()
        return bool(self._limits)

    def quota(self, kind: str, principal: str) -> float | None:
        """The bound on ``principal``'s ``kind`` bytes per second, or None."""
        self._refresh()
        return self._bound(kind, principal)

    def _bound(self, kind: str, principal: str) -> float | None:
        if principal.startswith("Broker:"):
            return None
        own = self._limits.get(principal)
        if own is not None and own[kind] is not None:
            return own[kind]
        default = self._limits.get(self.default_principal)
        return default[kind] if default is not None else None

    def record(self, kind: str, principal: str, nbytes: int, now_ms: int) -> int:
        """Record ``nbytes`` of ``kind`` (:data:`PRODUCE` or :data:`FETCH`) by ``principal``;
        returns the throttle time in ms (0: within its quota, or no quota applies).

        O(1) (a version compare) while no quota is set anywhere.
        """
        self._refresh()
        if not self._limits:
            return 0
        bound = self._bound(kind, principal)
        if bound is None:
            return 0
        key = (kind, principal)
        rate = self._rates.get(key)
        if rate is None:
            if len(self._rates) >= SWEEP_AT:
                self._sweep(now_ms)
            rate = self._rates[key] = ByteRate(self.samples, self.sample_ms)
        rate.record(nbytes, now_ms)
        return min(self.max_throttle_ms, throttle_time_ms(rate.rate(now_ms), bound, rate.window_ms(now_ms)))

    def throttled_ms(self, kind: str, principal: str, now_ms: int) -> int:
        """``principal``'s throttle time now, recording nothing (0: within its quota)."""
        self._refresh()
        bound = self._bound(kind, principal)
        rate = self._rates.get((kind, principal)) if bound is not None else None
        if rate is None:
            return 0
        return min(self.max_throttle_ms, throttle_time_ms(rate.rate(now_ms), bound, rate.window_ms(now_ms)))

    def answer_fetch(self, principal: str, nbytes: int, now_ms: int) -> tuple[int, bool]:
        """``(throttle ms, keep the records)`` for a fetch answer of ``nbytes`` records.

        A principal already over its fetch quota gets its answer without records, and they
        are not counted (Kafka's rule: the consumer asks again once the throttle is over);
        otherwise the records are counted and kept, even if they take it over.  So a held
        back answer only holds records for a principal that was within its quota: what the
        front doors hold for a principal stays near its quota's worth.
        """
        over = self.throttled_ms(FETCH, principal, now_ms)
        if over > 0:
            return over, False
        return self.record(FETCH, principal, nbytes, now_ms), True

    def _sweep(self, now_ms: int) -> None:
        for key in [k for k, r in self._rates.items() if r.idle(now_ms)]:
            del self._rates[key]

    def tracked(self) -> int:
        """Rates held (principals x kinds with a bound that sent something lately)."""
        return len(self._rates)


class InFlightLimit:
    """Answers each connection is still owed, at most ``limit`` per connection.

    A front door :meth:`acquire` s when a request's answer is parked (a long poll, an
    acks=all produce, an answer held back by a throttle) and :meth:`release` s when it
    is sent; while :meth:`full`, the connection's next request is refused.  Connections
    owed nothing take no memory.

    >>> limit = InFlightLimit(2)
    >>> limit.acquire(b"c"); limit.acquire(b"c"); limit.full(b"c")
    True
    >>> limit.release(b"c"); limit.full(b"c"), limit.held(b"c"), len(limit)
    (False, 1, 1)
    """

    __slots__ = ("limit", "_held")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("an in-flight limit must be at least 1")
        self.limit = limit
        self._held: dict[Hashable, int] = {}

    def __len__(self) -> int:
        """Connections owed at least one answer."""
        return len(self._held)

    def held(self, conn: Hashable) -> int:
        return self._held.get(conn, 0)

    def full(self, conn: Hashable) -> bool:
        return self._held.get(conn, 0) >= self.limit

    def acquire(self, conn: Hashable) -> None:
        self._held[conn] = self._held.get(conn, 0) + 1

    def release(self, conn: Hashable) -> None:
        left = self._held.get(conn, 0) - 1
        if left > 0:
            self._held[conn] = left
        else:
            self._held.pop(conn, None)
