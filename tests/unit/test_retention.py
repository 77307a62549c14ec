"""Retention decisions with a fake clock and tiny segments."""

from zbroker.core.retention import retention_cutoff

DAY = 86_400_000


def segs(*specs):
    """(base, size, max_ts) -> segments_info rows; the last one is the active segment."""
    return [(b, s, ts, ts) for b, s, ts in specs]


def test_time_retention_deletes_expired_closed_segments_oldest_first():
    s = segs((0, 100, 1 * DAY), (10, 100, 2 * DAY), (20, 100, 5 * DAY), (30, 50, 6 * DAY))
    assert retention_cutoff(s, 35, now_ms=6 * DAY, retention_ms=3 * DAY, retention_bytes=-1) == 20
    assert retention_cutoff(s, 35, now_ms=6 * DAY, retention_ms=10 * DAY, retention_bytes=-1) is None


def test_the_active_segment_is_never_deleted():
    s = segs((0, 100, 0), (10, 100, 0))
    assert retention_cutoff(s, 20, now_ms=100 * DAY, retention_ms=0, retention_bytes=-1) == 10


def test_size_retention_keeps_at_least_the_bound():
    s = segs((0, 100, 0), (10, 100, 0), (20, 100, 0), (30, 100, 0))
    assert retention_cutoff(s, 40, now_ms=0, retention_ms=-1, retention_bytes=250) == 10  # 300 left >= 250
    assert retention_cutoff(s, 40, now_ms=0, retention_ms=-1, retention_bytes=100) == 30
    assert retention_cutoff(s, 40, now_ms=0, retention_ms=-1, retention_bytes=1000) is None


def test_nothing_above_the_high_watermark_goes():
    s = segs((0, 100, 0), (10, 100, 0), (20, 100, 0))
    assert retention_cutoff(s, 15, now_ms=DAY, retention_ms=0, retention_bytes=-1) == 10


def test_deletion_stops_at_the_first_kept_segment():
    s = segs((0, 100, 1 * DAY), (10, 100, 9 * DAY), (20, 100, 1 * DAY), (30, 10, 9 * DAY))
    assert retention_cutoff(s, 40, now_ms=9 * DAY, retention_ms=2 * DAY, retention_bytes=-1) == 10


def test_infinite_retention():
    s = segs((0, 100, 0), (10, 100, 0))
    assert retention_cutoff(s, 20, now_ms=10**12, retention_ms=-1, retention_bytes=-1) is None
