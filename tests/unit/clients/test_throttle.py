"""The clients' record of throttled answers: counted, summed, logged at most every 10 s."""

import logging

from clients.throttle import LOG_EVERY_S, ThrottleStats


def test_throttled_answers_are_counted_and_logged_sparingly(caplog):
    stats = ThrottleStats("produce")
    with caplog.at_level(logging.INFO, logger="clients.throttle"):
        stats.note({"throttle_time_ms": 0}, "b:1", 0.0)
        stats.note({}, "b:1", 0.0)
        stats.note(None, "b:1", 0.0)  # a failed request has no header
        stats.note({"throttle_time_ms": True}, "b:1", 0.0)  # not a number of ms
        assert stats.count == 0 and caplog.records == []
        stats.note({"throttle_time_ms": 250}, "b:1", 1.0)
        stats.note({"throttle_time_ms": 400}, "b:1", 2.0)
        stats.note({"throttle_time_ms": 100}, "b:1", 1.0 + LOG_EVERY_S)
    assert (stats.count, stats.total_ms, stats.last_ms) == (3, 750, 100)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "1 produce answers" in lines[0] and "2 produce answers" in lines[1]
