"""The fetcher at offsets the broker lost to damage on its disk (protocol.md §10).

The broker answers such a fetch CORRUPT_MESSAGE (2) with ``damaged = [start, end]``: the
consumer returns every record fetched before the range, then parks the partition with a
CorruptRecordError(offset=start, next_offset=end) like a batch it cannot read, without
fetching it again; ``seek(..., end)`` goes on.
"""

from __future__ import annotations

import pytest

from tests.unit.clients.test_fetch_unreadable import fetcher, fetches
from tests.unit.clients.test_fetcher import TP, answer, batch, collect, ok, position
from zbroker.errors import CorruptRecordError, ErrorCode

CORRUPT = int(ErrorCode.CORRUPT_MESSAGE)


def lost(start, end, hw=100):
    return {**ok(hw), "error": CORRUPT, "error_message": f"offsets [{start}, {end}) are lost", "damaged": [start, end]}


def test_records_before_a_damaged_range_come_first_then_the_error_then_seek_to_its_end_goes_on():
    f, net = fetcher()
    answer(fetches(net)[0], [ok()], [batch(0, 2)])
    f.run(0.0)  # fetches ahead while 0-1 wait in the buffer
    ahead = fetches(net)[-1]
    assert ahead.fields["partitions"][0]["offset"] == 2
    answer(ahead, [lost(2, 4)], [b""])
    assert [r.offset for r in collect(f)] == [0, 1]  # nothing fetched before the range is dropped
    with pytest.raises(CorruptRecordError, match=r"t-0: offsets \[2, 4\) were lost .*seek\('t', 0, 4\)") as info:
        collect(f)
    exc = info.value
    assert (exc.topic, exc.partition, exc.offset, exc.next_offset, exc.code) == ("t", 0, 2, 4, CORRUPT)
    assert position(f) == 2
    f.seek(TP, exc.next_offset)
    f.run(0.0)
    refetch = fetches(net)[-1]
    assert refetch.fields["partitions"][0]["offset"] == 4
    answer(refetch, [ok()], [batch(4, 1)])
    assert [r.offset for r in collect(f)] == [4] and position(f) == 5


def test_a_damaged_range_is_raised_on_every_poll_and_never_fetched_again_until_a_seek():
    f, net = fetcher()
    answer(fetches(net)[0], [lost(0, 3)], [b""])
    errors = []
    for _ in range(20):
        assert f.run(0.0) is None  # nothing sent, nothing to wait for: parked, not retried
        with pytest.raises(CorruptRecordError) as info:
            collect(f)
        errors.append(info.value)
    assert len(fetches(net)) == 1 and all(e is errors[0] for e in errors)
    assert f.buffered_total == 0 and not f.completed and position(f) == 0


def test_corrupt_message_without_a_range_parks_at_the_fetch_offset_with_no_next_offset():
    f, net = fetcher()
    answer(fetches(net)[0], [ok()], [batch(0, 3)])
    f.run(0.0)
    answer(fetches(net)[-1], [{**ok(), "error": CORRUPT, "error_message": "damaged"}], [b""])
    assert [r.offset for r in collect(f)] == [0, 1, 2]
    with pytest.raises(CorruptRecordError, match="did not say how far") as info:
        collect(f)
    assert (info.value.offset, info.value.next_offset) == (3, None)
    f.run(0.0)
    assert len(fetches(net)) == 2
    f.seek(TP, 9)
    f.run(0.0)
    assert fetches(net)[-1].fields["partitions"][0]["offset"] == 9


@pytest.mark.parametrize("damaged", [[5, 5], [4, 2], ["2", 4], [2], [0, 2]])
def test_a_malformed_or_stale_range_is_treated_as_no_range(damaged):
    f, net = fetcher()
    answer(fetches(net)[0], [ok()], [batch(0, 2)])
    f.run(0.0)
    answer(fetches(net)[-1], [{**ok(), "error": CORRUPT, "damaged": damaged}], [b""])
    assert [r.offset for r in collect(f)] == [0, 1]
    with pytest.raises(CorruptRecordError) as info:
        collect(f)
    assert (info.value.offset, info.value.next_offset) == (2, None)
