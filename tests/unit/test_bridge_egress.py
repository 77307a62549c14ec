"""The egress bridge's logic (sans-IO): start positions, sending, holding, commits, replay.

Time is passed in; the gateway is a fake with logs in memory (egress_fakes.py)."""

from __future__ import annotations

import pytest

from storage import COMPRESSION_GZIP, COMPRESSION_ZSTD, build_native_batch
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.bridge.egress import COMMIT_MS, EgressBridge
from zbroker.frontends.bridge.egress_replay import newest

from tests.unit.egress_fakes import FakeGateway, Socket, egress_config, failed

T0 = 1_000_000

pytestmark = pytest.mark.timeout(30)


def make(gw=None, **cfg) -> tuple[EgressBridge, FakeGateway, Socket]:
    gw = gw or FakeGateway()
    sock = Socket()
    return EgressBridge(egress_config(**cfg), gw, sock, T0), gw, sock


def run(bridge: EgressBridge, now: int, turns: int = 5) -> None:
    for _ in range(turns):
        bridge.tick(now)


def subscribe(bridge: EgressBridge, sock: Socket, prefix: bytes, now: int = T0) -> list[bytes]:
    """A new subscription to ``prefix`` on a bridge that sent all it had: the values sent then."""
    sock.sent.clear()
    bridge.on_subscribe(prefix, now)
    run(bridge, now)
    return sock.values()


def test_earliest_sends_every_record_as_topic_key_value_whatever_the_batch_format():
    bridge, gw, sock = make(start="earliest")
    gw.append("t", 0, [b"a", b"b"], keys=[b"k1", None])
    gw.append("t", 0, [b"c"], kafka=True)
    gw.append("t", 0, [b"d", None], kafka=True, compression=COMPRESSION_ZSTD)
    gw.append("t", 0, [b"e"], compression=COMPRESSION_GZIP)
    run(bridge, T0)
    assert sock.sent == [[b"t", b"k1", b"a"], [b"t", b"", b"b"], [b"t", b"", b"c"], [b"t", b"", b"d"], [b"t", b"", b""],
                         [b"t", b"", b"e"]]
    st = bridge.status(T0)
    assert st["sent"] == 6 and st["state"] == "running" and st["kind"] == "egress"
    assert st["partitions"][0]["position"] == 6 and st["partitions"][0]["lag"] == 0


def test_latest_sends_only_what_comes_after_the_start_and_live_data_wakes_parked_fetches():
    bridge, gw, sock = make(start="latest")
    gw.append("t", 0, [b"old1", b"old2"])
    run(bridge, T0)
    assert sock.sent == []
    assert gw.parked, "an empty partition's fetch waits for data (long poll)"
    gw.append("t", 0, [b"new"])
    assert bridge.next_deadline(T0) <= T0
    run(bridge, T0)
    assert sock.values() == [b"new"]


def test_committed_starts_at_the_group_offset_and_falls_back_to_latest():
    gw = FakeGateway({"t": 2})
    gw.append("t", 0, [b"a0", b"a1", b"a2"])
    gw.append("t", 1, [b"b0", b"b1"])
    gw.offsets[("bridge.out", ("t", 0))] = 1
    bridge, gw, sock = make(gw, start="committed")
    run(bridge, T0)
    assert sock.values() == [b"a1", b"a2"]
    gw.append("t", 1, [b"b2"])
    run(bridge, T0)
    assert sock.values() == [b"a1", b"a2", b"b2"]


def test_with_start_committed_a_partition_is_sent_only_once_its_start_is_committed():
    """A restart before the first regular commit must not fall back to the log end and pass over what was sent."""
    bridge, gw, sock = make(start="committed")
    gw.append("t", 0, [b"old"])
    bridge.tick(T0)
    gw.append("t", 0, [b"a", b"b"])
    gw.hold = True  # the commit of the start position is not answered yet
    run(bridge, T0)
    assert gw.commits == [{("t", 0): 1}] and sock.sent == []
    gw.hold = False
    gw.release()
    run(bridge, T0)
    assert sock.values() == [b"a", b"b"]


def test_a_failed_start_commit_is_tried_again_at_the_commit_interval():
    bridge, gw, sock = make(start="committed")
    gw.hold = True
    bridge.tick(T0)
    gw.release()  # nothing committed: ...
    gw.release()  # ... the log end
    bridge.tick(T0)
    assert len(gw.commits) == 1
    gw.held.pop()[0].fail(RequestError(ErrorCode.COORDINATOR_NOT_AVAILABLE, "loading"))
    gw.hold = False
    run(bridge, T0 + 10)
    assert len(gw.commits) == 1 and bridge.next_deadline(T0 + 10) == T0 + COMMIT_MS
    run(bridge, T0 + COMMIT_MS)
    assert len(gw.commits) == 2 and bridge.status(T0)["retries"] == 1


def test_commits_every_second_only_what_zeromq_released_one_interval_late():
    bridge, gw, sock = make(start="earliest")
    sock.released = False  # PUSH: trackers not done yet
    gw.append("t", 0, [b"a", b"b", b"c"])
    run(bridge, T0)
    assert len(sock.sent) == 3
    run(bridge, T0 + COMMIT_MS)
    assert gw.commits == [{("t", 0): 0}]  # the start position: nothing released past it
    sock.handles[0].done = sock.handles[1].done = True
    run(bridge, T0 + 2 * COMMIT_MS)
    assert len(gw.commits) == 1  # 2 is released now: committed at the next interval
    run(bridge, T0 + 3 * COMMIT_MS)
    assert gw.commits[-1] == {("t", 0): 2}
    sock.handles[2].done = True
    bridge.close(T0 + 3 * COMMIT_MS + 10)  # at close, all that was released
    assert gw.commits[-1] == {("t", 0): 3}
    assert gw.offsets == {("bridge.out", ("t", 0)): 3}, "the group is bridge.NAME, apart from applications' groups"
    assert bridge.status(T0)["state"] == "closed"


def test_a_pub_bridge_commits_what_it_sent_at_once():
    bridge, gw, sock = make(socket="pub", start="earliest")
    gw.append("t", 0, [b"a", b"b"])
    run(bridge, T0)
    run(bridge, T0 + COMMIT_MS)
    assert gw.commits == [{("t", 0): 2}]


def test_a_pull_peer_gone_sends_again_from_the_last_commit():
    """ZeroMQ drops what it queued for a peer that disconnects; releasing it makes it look sent."""
    bridge, gw, sock = make(start="earliest")
    gw.append("t", 0, [b"a", b"b"])
    run(bridge, T0)
    run(bridge, T0 + COMMIT_MS)
    run(bridge, T0 + 2 * COMMIT_MS)
    assert gw.commits[-1] == {("t", 0): 2}
    gw.append("t", 0, [b"c", b"d"])
    run(bridge, T0 + 2 * COMMIT_MS)
    run(bridge, T0 + 3 * COMMIT_MS)  # c and d look released (their peer's queue was dropped) ...
    assert gw.commits[-1] == {("t", 0): 2}  # ... but the commit trails by one interval
    bridge.on_peer_gone(T0 + 3 * COMMIT_MS + 5)
    run(bridge, T0 + 3 * COMMIT_MS + 5)
    assert sock.values() == [b"a", b"b", b"c", b"d", b"c", b"d"]
    st = bridge.status(T0)
    assert st["rewinds"] == 1 and st["partitions"][0]["position"] == 4
    run(bridge, T0 + 4 * COMMIT_MS)
    assert gw.commits[-1] == {("t", 0): 2}  # nothing confirmed before the rewind is committed
    run(bridge, T0 + 5 * COMMIT_MS)
    assert gw.commits[-1] == {("t", 0): 4}


def test_a_peer_gone_before_any_commit_goes_back_to_the_start_and_abandons_a_waiting_fetch():
    bridge, gw, sock = make(start="earliest")
    gw.append("t", 0, [b"a"])
    run(bridge, T0)
    assert gw.parked
    bridge.on_peer_gone(T0 + 1)
    gw.append("t", 0, [b"b"])  # wakes nothing: the fetch was abandoned
    run(bridge, T0 + 1)
    assert sock.values() == [b"a", b"a", b"b"]


def test_a_later_release_does_not_commit_past_an_earlier_unreleased_record():
    bridge, gw, sock = make(start="earliest")
    sock.released = False
    gw.append("t", 0, [b"a", b"b", b"c"])
    run(bridge, T0)
    sock.handles[1].done = sock.handles[2].done = True  # two PULL peers: the first record's peer is slow
    run(bridge, T0 + COMMIT_MS)
    assert gw.commits[-1] == {("t", 0): 0}


def test_a_send_that_would_block_holds_the_record_and_loses_nothing():
    bridge, gw, sock = make(start="earliest")
    gw.append("t", 0, [b"%d" % i for i in range(10)])
    sock.budget = 4
    run(bridge, T0)
    assert sock.values() == [b"0", b"1", b"2", b"3"]
    st = bridge.status(T0 + 1)
    assert st["state"] == "blocked" and st["held"] == 6 and st["partitions"][0]["position"] == 4
    assert st["blocked_ms"] == 1
    deadline = bridge.next_deadline(T0)
    assert T0 < deadline <= T0 + 50
    run(bridge, T0 + 1)
    assert len(sock.sent) == 4  # not before the hold ends
    sock.budget = None
    run(bridge, deadline)
    assert sock.values() == [b"%d" % i for i in range(10)]
    assert bridge.status(deadline)["blocked_ms"] == 0
    run(bridge, deadline + COMMIT_MS)
    assert gw.commits[-1] == {("t", 0): 10}


def test_partitions_and_topics_that_appear_later_start_at_their_earliest_offset():
    gw = FakeGateway({"t": 1})
    bridge, gw, sock = make(gw, start="latest", topics=("t", "u"))
    gw.append("t", 0, [b"before"])
    run(bridge, T0)
    assert bridge.status(T0)["missing_topics"] == ["u"]
    gw.counts["t"] = 2
    gw.counts["u"] = 1
    gw.append("t", 1, [b"t1"])
    gw.append("u", 0, [b"u0"])
    run(bridge, T0 + 1000)
    assert sorted(sock.values()) == [b"t1", b"u0"]
    assert bridge.status(T0 + 1000)["missing_topics"] == []


def test_offset_out_of_range_moves_to_the_log_start_and_counts_what_was_skipped():
    gw = FakeGateway()
    gw.append("t", 0, [b"a", b"b", b"c", b"d", b"e"])
    gw.delete_before(("t", 0), 5)
    gw.append("t", 0, [b"f"])
    gw.offsets[("bridge.out", ("t", 0))] = 1
    bridge, gw, sock = make(gw, start="committed")
    run(bridge, T0)
    assert sock.values() == [b"f"]
    assert bridge.status(T0)["skipped"] == 4


def test_retention_under_a_waiting_fetch_skips_to_the_log_start():
    bridge, gw, sock = make(start="earliest")
    gw.append("t", 0, [b"a"])
    run(bridge, T0)
    assert gw.parked  # waiting at offset 1
    gw.log_start[("t", 0)] = 3  # records 1 and 2 came and went while nobody looked
    gw.batches[("t", 0)] = []
    gw.expire()
    gw.append("t", 0, [b"d"])
    run(bridge, T0 + 100)
    assert sock.values() == [b"a", b"d"]
    assert bridge.status(T0)["skipped"] == 2


def test_errors_back_off_and_are_counted_retriable_ones_as_retries():
    bridge, gw, sock = make(start="earliest")
    gw.append("t", 0, [b"a"])
    gw.fail_fetch = RequestError(ErrorCode.NOT_LEADER_OR_FOLLOWER, "moved")
    bridge.tick(T0)
    st = bridge.status(T0)
    assert (st["retries"], st["errors"], st["last_error"]) == (1, 0, None)
    assert bridge.next_deadline(T0) == T0 + 100
    gw.fail_fetch = RequestError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Bridge:out may not read t")
    run(bridge, T0 + 100)
    st = bridge.status(T0)
    assert st["errors"] == 1 and "TOPIC_AUTHORIZATION_FAILED" in st["last_error"]
    assert bridge.feeds[("t", 0)].not_before == T0 + 100 + 5000
    gw.fail_fetch = None
    run(bridge, T0 + 5000)
    assert sock.sent == []
    run(bridge, T0 + 5100)
    assert sock.values() == [b"a"]


def test_fetches_in_flight_are_bounded():
    gw = FakeGateway({"t": 10})
    gw.hold = True
    sock = Socket()
    bridge = EgressBridge(egress_config(start="earliest"), gw, sock, T0, max_in_flight=3)
    run(bridge, T0)  # start offsets
    gw.release()
    run(bridge, T0)
    assert len(gw.held) == 3
    gw.release()
    bridge.tick(T0 + 100)
    assert len(gw.held) == 3


def test_an_unreadable_batch_is_skipped_with_an_error():
    bridge, gw, sock = make(start="earliest")
    gw.append("t", 0, [b"a"])
    bad = bytearray(build_native_batch([(1, None, b"x", None), (2, None, b"y", None)], 1))
    bad[-1] ^= 0xFF  # CRC mismatch
    gw.append_raw("t", 0, 2, bytes(bad))
    gw.append("t", 0, [b"d"])
    run(bridge, T0)
    assert sock.values() == [b"a", b"d"]
    st = bridge.status(T0)
    assert st["skipped"] == 2 and st["errors"] == 1 and "CRC" in st["last_error"]


def test_close_abandons_fetches_and_commits():
    bridge, gw, sock = make(start="latest")
    gw.append("t", 0, [b"a"])
    run(bridge, T0)
    assert gw.parked
    bridge.close(T0 + 5)
    gw.append("t", 0, [b"b"])
    assert sock.sent == [] and bridge.next_deadline(T0 + 5) is None
    assert gw.commits == [{("t", 0): 1}]


def test_idle_bridge_sleeps_until_its_next_look_or_commit():
    bridge, gw, sock = make(start="latest")
    run(bridge, T0)
    assert bridge.next_deadline(T0) == T0 + 1000


# -- replay ----------------------------------------------------------------------------


def test_a_new_subscription_replays_the_last_n_records_before_live_data():
    bridge, gw, sock = make(socket="pub", start="earliest", replay=3, topics=("sensors", "other"))
    gw.counts = {"sensors": 1, "other": 1}
    gw.append("sensors", 0, [b"%d" % i for i in range(10)])
    gw.append("other", 0, [b"o"])
    run(bridge, T0)
    assert len(sock.sent) == 11
    sock.sent.clear()
    bridge.on_subscribe(b"sens", T0)
    assert bridge.next_deadline(T0) == T0
    gw.append("sensors", 0, [b"live"])
    run(bridge, T0)
    assert sock.values() == [b"7", b"8", b"9", b"live"]
    st = bridge.status(T0)
    assert st["replays"] == 1 and st["replayed"] == 3 and st["subscriptions"] == 1


def test_a_subscription_matching_no_topic_replays_nothing_and_an_empty_prefix_replays_all():
    bridge, gw, sock = make(socket="pub", start="earliest", replay=2, topics=("a", "b"))
    gw.counts = {"a": 1, "b": 1}
    gw.append("a", 0, [b"a0", b"a1", b"a2"])
    gw.append("b", 0, [b"b0"])
    run(bridge, T0)
    assert subscribe(bridge, sock, b"c") == []
    assert subscribe(bridge, sock, b"") == [b"a1", b"a2", b"b0"]


def test_replay_ends_where_live_data_goes_on():
    """The replay stops at the bridge's position: records fetched but not yet sent come once, after it."""
    bridge, gw, sock = make(socket="pub", start="earliest", replay=2)
    gw.append("t", 0, [b"a", b"b", b"c", b"d"])
    sock.budget = 2
    run(bridge, T0)  # a, b sent; c, d held
    bridge.on_subscribe(b"t", T0)
    sock.budget = None
    run(bridge, T0 + 100)
    assert sock.values() == [b"a", b"b", b"a", b"b", b"c", b"d"]


def test_replay_over_partitions_takes_the_newest_by_timestamp_in_partition_order():
    gw = FakeGateway({"t": 2})
    gw.append("t", 0, [b"p0-1", b"p0-2", b"p0-3"], ts=[10, 20, 60])
    gw.append("t", 1, [b"p1-1", b"p1-2", b"p1-3"], ts=[30, 40, 50])
    bridge, gw, sock = make(gw, socket="pub", start="earliest", replay=3)
    run(bridge, T0)
    assert subscribe(bridge, sock, b"") == [b"p1-2", b"p1-3", b"p0-3"]


def test_replay_reads_from_the_log_start_when_retention_took_the_oldest():
    bridge, gw, sock = make(socket="pub", start="earliest", replay=5)
    gw.append("t", 0, [b"a", b"b", b"c", b"d"])
    run(bridge, T0)
    gw.delete_before(("t", 0), 2)
    assert subscribe(bridge, sock, b"") == [b"c", b"d"]


def test_a_replay_that_would_block_is_held_and_live_data_waits_for_it():
    bridge, gw, sock = make(socket="pub", start="earliest", replay=2)
    gw.append("t", 0, [b"a", b"b"])
    run(bridge, T0)
    sock.sent.clear()
    bridge.on_subscribe(b"", T0)
    sock.budget = 1
    run(bridge, T0)
    gw.append("t", 0, [b"live"])
    run(bridge, T0)
    assert sock.values() == [b"a"]
    assert bridge.status(T0)["state"] == "replaying"
    sock.budget = None
    run(bridge, T0 + 100)
    assert sock.values() == [b"a", b"b", b"live"]


def test_a_subscription_before_the_positions_are_known_waits_for_them_and_live_data_waits_for_the_replay():
    """After a broker's start, subscribers reconnect before the bridge knows where it is."""
    gw = FakeGateway()
    gw.append("t", 0, [b"a", b"b", b"c"])
    gw.offsets[("bridge.out", ("t", 0))] = 3
    gw.hold = True  # the committed position is not known yet
    sock = Socket()
    bridge = EgressBridge(egress_config(socket="pub", start="committed", replay=2), gw, sock, T0)
    bridge.on_subscribe(b"t", T0)
    run(bridge, T0)
    assert bridge.status(T0)["state"] == "replaying" and bridge.next_deadline(T0) == T0 + 1000
    gw.hold = False
    gw.release()
    assert bridge.next_deadline(T0) == T0
    gw.append("t", 0, [b"d"])
    run(bridge, T0 + 1)
    assert sock.values() == [b"b", b"c", b"d"]


def test_a_replay_waits_at_most_a_while_for_positions():
    gw = FakeGateway({"t": 2})
    gw.append("t", 0, [b"a", b"b"])
    sock = Socket()
    bridge = EgressBridge(egress_config(socket="pub", start="earliest", replay=5), gw, sock, T0)
    real = gw.list_offset
    gw.list_offset = lambda topic, p, ts, now: (real(topic, p, ts, now) if p == 0
                                                else failed(RequestError(ErrorCode.LEADER_NOT_AVAILABLE, "none")))
    bridge.on_subscribe(b"", T0)
    run(bridge, T0)
    assert sock.sent == [] and bridge.next_deadline(T0) <= T0 + 5000
    run(bridge, T0 + 5000)  # partition 1 still has no position: the replay goes without it
    assert sock.values()[:2] == [b"a", b"b"] and bridge.status(T0 + 5000)["replays"] == 1


def test_push_bridges_and_replay_zero_ignore_subscriptions():
    bridge, gw, sock = make(socket="pub", start="earliest", replay=0)
    gw.append("t", 0, [b"a"])
    run(bridge, T0)
    bridge.on_subscribe(b"", T0)
    run(bridge, T0)
    assert sock.values() == [b"a"]


def test_newest_keeps_each_partitions_order():
    # partition 0's timestamps go backwards: its share is still a suffix, in offset order
    p0 = [(50, 0, "p0a"), (10, 1, "p0b")]
    p1 = [(20, 0, "p1a"), (30, 1, "p1b")]
    assert newest([p0, p1], 2) == ["p1a", "p1b"]
    assert newest([p0, p1], 3) == ["p0b", "p1a", "p1b"]
    assert newest([p0, p1], 10) == ["p1a", "p1b", "p0a", "p0b"]
    assert newest([[], p1], 1) == ["p1b"]
    assert newest([], 3) == []


def test_a_pull_peer_reconnecting_in_a_loop_rewinds_at_most_once_per_commit_interval():
    """Disconnects within a commit interval of the last rewind are coalesced into one rewind at
    its end, nothing is committed meanwhile, and the commit advances once the loop pauses."""
    bridge, gw, sock = make(start="earliest")
    now = T0
    for i in range(300):  # 3 s of a peer disconnecting every 10 ms, records coming all along
        gw.append("t", 0, [b"%d" % i])
        bridge.on_peer_gone(now)
        run(bridge, now, turns=2)
        now += 10
    st = bridge.status(now)
    assert st["peer_disconnects"] == 300
    assert 2 <= st["rewinds"] <= 3, st["rewinds"]  # one per second, not 300
    assert all(v == {("t", 0): 0} for v in gw.commits)  # never past a disconnect's dropped records
    assert len(set(sock.values())) == 300  # every record went out (some more than once)
    assert len(sock.values()) < 2000  # not 300 rewinds' worth of repeats (~45,000)
    for _ in range(3):  # the loop stops: two intervals later the commit has advanced
        now += COMMIT_MS
        run(bridge, now)
    assert gw.commits[-1] == {("t", 0): 300}
    assert bridge.next_deadline(now) > now  # and nothing spins while idle


def test_a_pending_rewind_runs_at_close_before_the_final_commit():
    bridge, gw, sock = make(start="earliest")
    gw.append("t", 0, [b"a"])
    bridge.on_peer_gone(T0)  # the first rewind runs at once (nothing to undo)
    run(bridge, T0)
    gw.append("t", 0, [b"b"])
    run(bridge, T0 + 10)
    bridge.on_peer_gone(T0 + 20)  # pending until T0 + COMMIT_MS
    assert bridge.next_deadline(T0 + 20) == T0 + COMMIT_MS
    bridge.close(T0 + 30)
    assert gw.commits == [] or gw.commits[-1] == {("t", 0): 0}  # b may have been dropped: not committed


def test_a_subscriber_that_never_reads_makes_a_pub_bridge_give_up_nodrop_after_the_long_hold():
    from zbroker.frontends.bridge.egress import LONG_HOLD_MS
    from zbroker.frontends.bridge.egress_slow import DROP_MS, SHORT_HOLD_MS
    gw = FakeGateway()
    sock = Socket(blocked=True)  # the XPUB refuses: a subscriber at hwm
    modes: list[bool] = []

    def nodrop(on: bool) -> None:
        modes.append(on)
        sock.blocked = on  # without NODROP, ZeroMQ drops for the full subscriber and takes the message
    bridge = EgressBridge(egress_config(socket="pub", start="earliest"), gw, sock, T0, nodrop=nodrop)
    gw.append("t", 0, [b"a", b"b"])
    now = T0
    while now < T0 + LONG_HOLD_MS - 50:
        run(bridge, now, turns=1)
        now += 50
    assert sock.sent == [] and modes == [] and bridge.status(now)["blocked_ms"] >= LONG_HOLD_MS - 100
    run(bridge, T0 + LONG_HOLD_MS + 10, turns=2)
    assert modes == [False] and sock.values() == [b"a", b"b"]
    st = bridge.status(T0 + LONG_HOLD_MS + 10)
    assert st["dropped_slow_subscriber"] == 1 and st["sent_while_dropping"] == 2
    assert bridge.next_deadline(T0 + LONG_HOLD_MS + 10) <= T0 + LONG_HOLD_MS + 10 + DROP_MS
    back = T0 + LONG_HOLD_MS + 10 + DROP_MS
    run(bridge, back, turns=1)
    assert modes == [False, True]  # NODROP again
    gw.append("t", 0, [b"c"])
    run(bridge, back, turns=2)
    assert sock.values() == [b"a", b"b"]  # still refused: held again ...
    run(bridge, back + SHORT_HOLD_MS + 10, turns=2)  # ... and given up sooner, the subscriber being known slow
    assert modes == [False, True, False] and sock.values() == [b"a", b"b", b"c"]
    assert bridge.status(back)["dropped_slow_subscriber"] == 2


def test_a_subscription_flood_is_coalesced_and_live_data_goes_on():
    """XPUB_VERBOSE reports every subscribe, also "" repeated in a loop: a topic is replayed at
    most once per MIN_INTERVAL_MS, and live data is not paused between replays."""
    from zbroker.frontends.bridge.egress_replay import MIN_INTERVAL_MS
    bridge, gw, sock = make(socket="pub", start="earliest", replay=2)
    gw.append("t", 0, [b"old1", b"old2"])
    run(bridge, T0)
    sock.sent.clear()
    now = T0
    live = []
    for i in range(300):  # 3 s: a subscription every 10 ms, a live record every 10 ms
        bridge.on_subscribe(b"", now)
        gw.append("t", 0, [b"live%d" % i])
        live.append(b"live%d" % i)
        assert bridge.next_deadline(now) <= now + MIN_INTERVAL_MS
        run(bridge, now, turns=2)
        now += 10
    run(bridge, now)
    got = sock.values()
    assert [v for v in got if v.startswith(b"live")][-1] == b"live299"
    assert got[:2] == [b"old1", b"old2"]  # the first replay, at once
    st = bridge.status(now)
    assert 2 <= st["replays"] <= 4, st["replays"]  # once a second, not 300 times
    assert st["replays_coalesced"] >= 290 and st["subscriptions"] == 300
    sent_live = set(v for v in got if v.startswith(b"live"))
    assert sent_live == set(live)  # every live record went out (some again, in replays)
    assert bridge.next_deadline(now) > now  # nothing spins once the flood is over


def test_a_deferred_replay_comes_at_the_end_of_the_interval():
    from zbroker.frontends.bridge.egress_replay import MIN_INTERVAL_MS
    bridge, gw, sock = make(socket="pub", start="earliest", replay=1)
    gw.append("t", 0, [b"a"])
    run(bridge, T0)
    assert subscribe(bridge, sock, b"t", T0) == [b"a"]
    assert subscribe(bridge, sock, b"t", T0 + 10) == []  # replayed 10 ms ago: deferred
    assert bridge.next_deadline(T0 + 10) == T0 + MIN_INTERVAL_MS
    run(bridge, T0 + MIN_INTERVAL_MS)
    assert sock.values() == [b"a"]


def test_one_byte_budget_per_bridge_bounds_what_its_partitions_hold_decoded():
    gw = FakeGateway({"t": 4})
    for p in range(4):
        gw.append("t", p, [b"%d-%d-" % (p, i) + b"x" * 300 for i in range(10)])
    bridge, gw, sock = make(gw, start="earliest")
    bridge.max_bytes = 1000
    sock.blocked = True  # nothing goes out: what was fetched stays held
    run(bridge, T0)
    st = bridge.status(T0)
    assert 1000 <= st["held_bytes"] <= 10 * 305  # one partition's answer decoded; the others wait undecoded
    assert sum(f.raw is not None for f in bridge.feeds.values()) <= 3
    sock.blocked = False
    for i in range(40):
        run(bridge, T0 + 100 * (i + 1))
    assert len(sock.values()) == 40 and bridge.status(T0)["held_bytes"] == 0


def test_a_replay_keeps_within_the_byte_budget_its_newest_records():
    bridge, gw, sock = make(socket="pub", start="earliest", replay=10)
    bridge._replays.max_bytes = 1000
    gw.append("t", 0, [b"%d" % i + b"x" * 299 for i in range(10)])
    run(bridge, T0)
    assert [v[:1] for v in subscribe(bridge, sock, b"t")] == [b"7", b"8", b"9"]  # 3 x 300 bytes fit in 1000
    assert bridge.status(T0)["held_bytes"] == 0


def test_settled_after_close_only_once_the_last_commit_is_answered():
    bridge, gw, sock = make(start="earliest")
    gw.append("t", 0, [b"a", b"b"])
    run(bridge, T0)
    gw.hold = True  # the coordinator has not answered yet
    bridge.close(T0 + 10)
    assert not bridge.settled()
    gw.held.pop()[0].complete(None)
    assert bridge.settled()
