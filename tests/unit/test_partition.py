"""Leader-side replication state: high watermark over the ISR, ISR shrink and expand (fake clock)."""

import pytest

from storage import Log, LogConfig, build_native_batch
from zbroker.core.partition import Partition

LAG = 1000


@pytest.fixture
def part(tmp_path):
    lg = Log(tmp_path / "t-0", LogConfig(), 0)
    p = Partition("t", 0, lg, broker_id=1)
    p.apply_metadata(leader=1, leader_epoch=3, replicas=[1, 2, 3], isr=[1, 2, 3], now_ms=0)
    yield p
    lg.close()


def append(p, n=1, now=0):
    p.log.append(build_native_batch([(1, None, b"x", None)] * n), now, leader_epoch=p.leader_epoch)


def test_high_watermark_is_the_smallest_isr_log_end(part):
    append(part, 10)
    assert not part.update_high_watermark() and part.high_watermark == 0  # followers have nothing yet
    part.on_follower_fetch(2, 10, now_ms=5)
    assert part.high_watermark == 0
    assert part.on_follower_fetch(3, 4, now_ms=5)
    assert part.high_watermark == 4
    part.on_follower_fetch(3, 10, now_ms=6)
    assert part.high_watermark == 10


def test_lagging_follower_is_proposed_out_and_back_in(part):
    append(part, 10, now=0)
    part.on_follower_fetch(2, 10, now_ms=100)
    part.on_follower_fetch(3, 2, now_ms=100)
    assert part.isr_proposal(100, LAG) is None
    part.on_follower_fetch(2, 10, now_ms=1500)
    assert part.isr_proposal(1500, LAG) == [1, 2]  # 3 has not caught up for more than replica_lag_ms
    part.apply_metadata(1, 3, [1, 2, 3], [1, 2], now_ms=1500)
    part.update_high_watermark()
    assert part.high_watermark == 10  # 3 no longer holds it back
    part.on_follower_fetch(3, 10, now_ms=1600)
    assert part.isr_proposal(1600, LAG) == [1, 2, 3]  # caught up to the high watermark: back in


def test_a_pending_addition_counts_for_the_high_watermark(part):
    part.apply_metadata(1, 3, [1, 2, 3], [1], now_ms=0)
    append(part, 5)
    part.update_high_watermark()
    assert part.high_watermark == 5
    part.on_follower_fetch(2, 5, now_ms=10)
    proposal = part.isr_proposal(10, LAG)
    assert proposal == [1, 2]
    part.pending_isr = proposal
    append(part, 5)
    part.update_high_watermark()
    assert part.high_watermark == 5  # waits for 2, which may already count as in sync elsewhere


def test_new_leadership_resets_follower_clocks_and_notes_the_epoch_start(part):
    append(part, 7)
    assert part.apply_metadata(1, 4, [1, 2, 3], [1, 2, 3], now_ms=50)
    assert part.epoch_start_offset == 7
    assert all(st.last_caught_up_ms == 50 and st.leo == -1 for st in part.followers.values())


def test_follower_high_watermark_is_bounded_by_its_log(part):
    part.apply_metadata(2, 4, [1, 2, 3], [1, 2, 3], now_ms=0)
    append(part, 3)
    assert part.follower_high_watermark(10) and part.high_watermark == 3
