"""Idempotent producer sequence checks (pure)."""

import pytest

from zbroker import protocol as P
from zbroker.errors import ErrorCode
from zbroker.core.producer_state import check, record


def test_in_order_batches_pass_and_duplicates_return_their_offset():
    state = {}
    assert check(state, 7, 0, 0, 5) is None
    record(state, 7, 0, 0, 5, base_offset=100)
    assert check(state, 7, 0, 5, 3) is None
    record(state, 7, 0, 5, 3, base_offset=105)
    assert check(state, 7, 0, 0, 5) == 100  # a resend of the first batch
    assert check(state, 7, 0, 5, 3) == 105


def test_a_gap_or_an_old_epoch_is_refused():
    state = {}
    record(state, 7, 1, 0, 5, base_offset=0)
    with pytest.raises(P.RequestError) as gap:
        check(state, 7, 1, 9, 1)
    assert gap.value.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    with pytest.raises(P.RequestError) as fenced:
        check(state, 7, 0, 5, 1)
    assert fenced.value.code == ErrorCode.INVALID_PRODUCER_EPOCH


def test_only_the_last_five_batches_are_remembered():
    state = {}
    for i in range(7):
        record(state, 1, 0, i, 1, base_offset=i)
    assert check(state, 1, 0, 6, 1) == 6
    with pytest.raises(P.RequestError):
        check(state, 1, 0, 0, 1)  # too old to recognise: not appended again either


def test_unknown_producers_and_new_epochs_start_fresh():
    state = {}
    assert check(state, 9, 0, 42, 1) is None  # state lost (e.g. truncated away): accept
    record(state, 9, 0, 42, 1, base_offset=0)
    assert check(state, 9, 1, 0, 1) is None  # a new epoch starts at 0
    with pytest.raises(P.RequestError):
        check(state, 9, 2, 3, 1)
