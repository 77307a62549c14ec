"""Client quotas and per-connection limits, pure: the rate and throttle math with time passed
in, the quota manager over a security image, the in-flight counter."""

from __future__ import annotations

import pytest

from zbroker.control.security_meta import DEFAULT_QUOTA_PRINCIPAL, QuotaEntry, SecurityImage, apply_security_record, quota_record
from zbroker.security.quotas import FETCH, PRODUCE, ByteRate, InFlightLimit, QuotaManager, throttle_time_ms

pytestmark = pytest.mark.timeout(60)

NOW = 1_000_000


# -- the rate and the throttle time -------------------------------------------------------------


def test_a_rate_is_spread_over_at_least_samples_minus_one_whole_samples():
    r = ByteRate(samples=11, sample_ms=1000)
    r.record(10_000, NOW)
    assert r.window_ms(NOW) == 10_000 and r.rate(NOW) == 1000.0  # one burst counts over 10 s
    r.record(10_000, NOW + 500)  # same sample
    assert r.window_ms(NOW + 500) == 10_500 and r.rate(NOW + 500) == pytest.approx(20_000 / 10.5)
    assert r.window_ms(NOW + 10_500) == 10_500  # ten whole samples since the oldest: no padding
    assert r.window_ms(NOW + 10_999) == 10_999
    assert r.idle(NOW + 11_000) and r.rate(NOW + 11_000) == 0.0  # the whole window passed


def test_old_samples_leave_the_window_and_at_most_samples_are_kept():
    r = ByteRate(samples=3, sample_ms=100)
    for i in range(10):
        r.record(100, NOW + i * 100)  # one sample each
    now = NOW + 900
    assert r.window_ms(now) == 200 and r.rate(now) == pytest.approx(300 * 1000 / 200)
    r.record(1, now + 50)
    assert r.rate(now + 50) == pytest.approx(301 * 1000 / 250)


def test_a_clock_that_steps_back_never_makes_a_negative_window():
    r = ByteRate(samples=11, sample_ms=1000)
    r.record(1000, NOW)
    assert r.window_ms(NOW - 5000) == 10_000


def test_throttle_time_is_how_long_to_stay_idle_to_fall_back_to_the_quota():
    assert throttle_time_ms(2000.0, 1000.0, 10_000) == 10_000
    assert throttle_time_ms(1000.0, 1000.0, 10_000) == 0
    assert throttle_time_ms(1500.0, 1000.0, 11_000) == 5_500
    # the promise: idle for that long, the same bytes over the longer window are the quota
    r = ByteRate(samples=11, sample_ms=1000)
    r.record(30_000, NOW)
    wait = throttle_time_ms(r.rate(NOW), 1000.0, r.window_ms(NOW))
    assert wait == 20_000
    assert 30_000 * 1000 / (r.window_ms(NOW) + wait) == 1000.0


# -- the quota manager over the metadata image ----------------------------------------------------


class Image:
    def __init__(self):
        self.security = SecurityImage()

    def set(self, principal, produce=None, fetch=None):
        apply_security_record(self.security, quota_record(principal, QuotaEntry(produce, fetch)))


def manager(image, **kw):
    return QuotaManager(lambda: image.security, DEFAULT_QUOTA_PRINCIPAL, **{"samples": 11, "sample_ms": 1000,
                                                                            "max_throttle_ms": 60_000, **kw})


def test_no_quota_anywhere_never_throttles_and_keeps_nothing():
    image = Image()
    q = manager(image)
    assert q.record(PRODUCE, "User:a", 10**9, NOW) == 0 and q.tracked() == 0


def test_the_default_applies_to_everyone_without_an_own_value_per_key():
    image = Image()
    image.set(DEFAULT_QUOTA_PRINCIPAL, produce=1000, fetch=1000)
    image.set("User:big", produce=100_000)  # its own produce quota; the default's fetch quota
    q = manager(image)
    assert q.quota(PRODUCE, "User:ANONYMOUS") == 1000 and q.quota(FETCH, "User:big") == 1000
    assert q.record(PRODUCE, "User:ANONYMOUS", 20_000, NOW) == 10_000  # 2000 B/s over 10 s against 1000
    assert q.record(PRODUCE, "User:big", 20_000, NOW) == 0
    assert q.record(FETCH, "User:big", 20_000, NOW) == 10_000
    assert q.record(FETCH, "Broker:2", 10**9, NOW) == 0  # replication is never throttled
    assert q.quota(FETCH, "Broker:2") is None


def test_a_change_in_the_image_takes_effect_on_the_next_request():
    image = Image()
    q = manager(image)
    assert q.record(PRODUCE, "User:a", 50_000, NOW) == 0
    image.set("User:a", produce=1000)
    assert q.record(PRODUCE, "User:a", 50_000, NOW) == 40_000  # counted from the quota on: 5000 B/s
    image.set("User:a", produce=10_000)  # raised: the history is kept
    assert q.record(PRODUCE, "User:a", 0, NOW) == 0
    image.set("User:a", produce=1000)
    assert q.record(PRODUCE, "User:a", 0, NOW) == 40_000
    image.set("User:a")  # removed: forgotten
    assert q.record(PRODUCE, "User:a", 0, NOW) == 0 and q.tracked() == 0


def test_throttles_are_capped():
    image = Image()
    image.set(DEFAULT_QUOTA_PRINCIPAL, produce=1)
    assert manager(image, max_throttle_ms=3000).record(PRODUCE, "User:a", 10**6, NOW) == 3000


def test_idle_rates_are_dropped_when_many_are_kept(monkeypatch):
    monkeypatch.setattr("zbroker.security.quotas.SWEEP_AT", 4)
    image = Image()
    image.set(DEFAULT_QUOTA_PRINCIPAL, produce=1000)
    q = manager(image)
    for i in range(4):
        q.record(PRODUCE, f"User:u{i}", 1, NOW)
    q.record(PRODUCE, "User:late", 1, NOW + 11_000)
    assert q.tracked() == 1


def test_in_flight_counts_per_connection_and_forgets_idle_connections():
    limit = InFlightLimit(2)
    limit.acquire(b"a")
    limit.acquire(b"b")
    assert not limit.full(b"a")
    limit.acquire(b"a")
    assert limit.full(b"a") and not limit.full(b"b") and limit.held(b"a") == 2
    for conn in (b"a", b"a", b"b"):
        limit.release(conn)
    assert len(limit) == 0
    with pytest.raises(ValueError):
        InFlightLimit(0)


def test_a_fetch_already_over_its_quota_loses_its_records_uncounted():
    image = Image()
    image.set("User:c", fetch=1000)
    q = manager(image)
    assert q.answer_fetch("User:c", 5000, NOW) == (0, True)  # within: counted and kept
    assert q.answer_fetch("User:c", 25_000, NOW) == (20_000, True)  # takes it over: kept, throttled
    assert q.throttled_ms(FETCH, "User:c", NOW) == 20_000
    # already over: no records, not counted (30 KB over 10.1 s: 19.9 s more to wait)
    assert q.answer_fetch("User:c", 10**6, NOW + 100) == (19_900, False)
    assert q.answer_fetch("User:c", 1000, NOW + 20_000) == (0, True)  # once the throttle passed
    assert q.answer_fetch("User:other", 10**6, NOW) == (0, True)  # no quota
