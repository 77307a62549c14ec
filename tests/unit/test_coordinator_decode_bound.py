"""Loading __consumer_offsets inflates no batch past storage.batch.decode_limit."""

import logging
import tracemalloc

import msgpack

from storage import COMPRESSION_ZSTD, build_native_batch
from storage.batch import decode_limit
from tests.unit.servicefakes import single_app
from tests.unit.test_coordinator import NOW, commit, fetch_offsets, offsets_tp, reopen, start


def test_a_decompression_bomb_in_the_offsets_partition_is_skipped_within_the_bound(tmp_path, caplog):
    app = start(single_app(tmp_path))
    commit(app, {0: 5})
    part = app.partitions.get(offsets_tp(app))
    limit = decode_limit(part.log.config.max_message_bytes)
    value = bytes(limit + (16 << 20))  # a few KiB on disk
    bomb = build_native_batch([(NOW, msgpack.packb(["g", "x"]), value, None)], compression=COMPRESSION_ZSTD)
    del value
    part.log.append(bomb, NOW, leader_epoch=part.leader_epoch)
    commit(app, {1: 6})
    tracemalloc.start()
    try:
        with caplog.at_level(logging.ERROR, logger="zbroker.groups.coordinator"):
            app = reopen(app, tmp_path, NOW + 100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"over the limit of {limit} bytes" in errors[0], errors
    assert peak < 16 << 20, peak
    assert fetch_offsets(app) == {("t", 0): 5, ("t", 1): 6}
    app.close(NOW + 10_000)
