"""The rate-limited log, with time passed in."""

import logging

from zbroker.ratelimit import RateLimitedLog


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def limited(burst=3, window_s=10.0):
    logger = logging.getLogger("test.ratelimit")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers[:] = [Lines()]
    return RateLimitedLog(logger, burst, window_s), logger.handlers[0].lines


def test_writes_at_most_burst_lines_per_window_then_one_summary():
    rl, lines = limited()
    written = [rl.log(0.5 * i, "bad", logging.WARNING, "line %d", i) for i in range(10)]
    assert written == [True] * 3 + [False] * 7
    assert lines == ["line 0", "line 1", "line 2"]
    assert rl.log(10.0, "bad", logging.WARNING, "line %d", 99)  # a new window
    assert lines[3:] == ["suppressed 7 similar messages (kind=bad) in the last 10 s", "line 99"]


def test_kinds_are_limited_separately():
    rl, lines = limited(burst=1)
    assert rl.log(0, "a", logging.WARNING, "a1")
    assert not rl.log(0, "a", logging.WARNING, "a2")
    assert rl.log(0, "b", logging.WARNING, "b1")
    assert lines == ["a1", "b1"]


def test_no_summary_when_nothing_was_suppressed():
    rl, lines = limited(burst=2)
    rl.log(0, "a", logging.WARNING, "x")
    rl.log(11, "a", logging.WARNING, "y")
    assert lines == ["x", "y"]


def test_the_window_starts_at_the_first_line_not_at_zero():
    rl, lines = limited(burst=1, window_s=10.0)
    rl.log(100, "a", logging.WARNING, "x")
    assert not rl.log(109.9, "a", logging.WARNING, "y")
    assert rl.log(110, "a", logging.WARNING, "z")
    assert lines == ["x", "suppressed 1 similar messages (kind=a) in the last 10 s", "z"]
