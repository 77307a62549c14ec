"""clients.Consumer at a range a real broker lost to damaged bytes on its disk: the records
before it, then CorruptRecordError naming the range, then seek(..., end) goes on -- it used to
retry the CORRUPT_MESSAGE answer forever, logging at DEBUG, and never reach what follows."""

from __future__ import annotations

import pytest

from clients import Consumer
from storage.batch import build_native_batch, iter_batches
from support import BrokerProcess, RawClient
from tests.integration.test_consumer_unreadable import poll_n, poll_until_error, produce, records

pytestmark = pytest.mark.timeout(60)


def test_the_consumer_reports_a_range_lost_on_the_broker_and_seeks_past_it(tmp_path):
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        raw = RawClient(broker.bootstrap)
        assert raw.call("create_topic", topic="t", partitions=1, config={})[0]["error"] == 0
        for i in range(5):
            assert produce(raw, "t", build_native_batch(records(1, b"v%d-" % i))) == i
        broker.stop()
        (segment,) = sorted((broker.data_dir / "t-0").glob("*.log"))
        data = bytearray(segment.read_bytes())
        pos, h = list(iter_batches(bytes(data)))[2]
        assert (h.base_offset, h.next_offset) == (2, 3)
        for k in range(pos + 61, pos + min(h.size, 65)):  # inside batch 2's payload only
            data[k] ^= 0xFF
        segment.write_bytes(bytes(data))
        broker.start()
        with Consumer(bootstrap=broker.bootstrap, auto_offset_reset="earliest") as c:
            c.assign([("t", 0)])
            got, exc = poll_until_error(c)
            assert [r.offset for r in got] == [0, 1]
            # the damaged batch's length still names where it ends and batch 3 continues the
            # offsets there: only batch 2 is lost
            assert (exc.topic, exc.partition, exc.offset, exc.next_offset) == ("t", 0, 2, 3)
            assert f"offsets [2, {exc.next_offset}) were lost to damage on the broker's disk" in str(exc)
            assert c.position("t", 0) == 2
            c.seek("t", 0, exc.next_offset)
            rest = range(exc.next_offset, 5)
            assert [(r.offset, r.value) for r in poll_n(c, len(rest))] == [(o, b"v%d-0" % o) for o in rest]
    finally:
        broker.close()
