"""State of one partition on one broker: leader side and follower side (pure).

No sockets; the log does the file I/O; time comes in as ``now_ms``.

Leader side (Kafka's model)
---------------------------
The leader tracks each follower's log end offset, learned from the offset of its
fetches, and when it was last *caught up*: a fetch at or past the leader's log end
means caught up now; a fetch at or past where the leader's log ended at the
follower's previous fetch means it was caught up at that previous fetch.

- **High watermark** = the smallest log end offset over the ISR (with followers
  being added counted in: the "maximal ISR" of KIP-497), never moving back.
  Consumers read only below it; an ``acks=all`` produce is answered when it passes
  the batch.
- **ISR shrink**: a follower not caught up for ``replica_lag_ms`` leaves the ISR.
- **ISR expand**: a follower whose log end reaches the high watermark and the start
  of the current leader epoch joins it.
ISR changes are proposals (:meth:`Partition.isr_proposal`); they take effect only
when the controller commits them to the metadata log and the broker applies them
(:meth:`Partition.apply_metadata`), so every broker and every future leader agree
on who has every committed record.

Follower side
-------------
A follower appends the leader's batches unchanged and sets its high watermark to
``min(leader's high watermark, own log end)``; its log start moves up to the leader's,
clipped to its own log end (:mod:`zbroker.core.replication`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from storage import Log


@dataclass
class ReplicaState:
    """What a leader knows about one follower."""

    leo: int = -1  # unknown until it fetches
    last_caught_up_ms: int = -1
    last_fetch_ms: int = -1
    leader_leo_at_last_fetch: int = -1


@dataclass
class Partition:
    topic: str
    index: int
    log: Log
    broker_id: int
    topic_id: str = ""
    leader: int = -1
    leader_epoch: int = 0
    replicas: list[int] = field(default_factory=list)
    isr: list[int] = field(default_factory=list)
    high_watermark: int = 0
    epoch_start_offset: int = 0  # where this broker's current leadership began
    followers: dict[int, ReplicaState] = field(default_factory=dict)
    pending_isr: list[int] | None = None  # proposed to the controller, not committed yet
    pending_since_ms: int = 0
    producers: dict | None = None  # idempotent producers' state (zbroker/producer_state.py); None = rebuild

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.index)

    @property
    def is_leader(self) -> bool:
        return self.leader == self.broker_id

    # -- metadata ------------------------------------------------------------------

    def apply_metadata(self, leader: int, leader_epoch: int, replicas: list[int], isr: list[int], now_ms: int) -> bool:
        """Take the committed state; returns True if this broker just became leader."""
        became_leader = leader == self.broker_id and (not self.is_leader or leader_epoch != self.leader_epoch)
        self.replicas, self.isr = list(replicas), list(isr)
        if became_leader:
            self.epoch_start_offset = self.log.log_end_offset
            # record the new epoch now, not at the first append: a follower holding records of the
            # previous epoch must be told where that epoch ends here, not "unknown" (-> truncate all)
            self.log.leader_epoch_cache.assign(leader_epoch, self.log.log_end_offset)
            # followers get a fresh lag clock: one replica_lag_ms to show they keep up
            self.followers = {r: ReplicaState(last_caught_up_ms=now_ms) for r in replicas if r != self.broker_id}
        if self.pending_isr is not None and (sorted(self.pending_isr) == sorted(isr) or leader_epoch != self.leader_epoch):
            self.pending_isr = None
        self.leader, self.leader_epoch = leader, leader_epoch
        for r in replicas:
            if r != self.broker_id and r not in self.followers:
                self.followers[r] = ReplicaState(last_caught_up_ms=now_ms)
        return became_leader

    # -- leader side -----------------------------------------------------------------

    def maximal_isr(self) -> set[int]:
        members = set(self.isr)
        if self.pending_isr is not None:
            members |= set(self.pending_isr)
        return members

    def on_follower_fetch(self, replica: int, fetch_offset: int, now_ms: int) -> bool:
        """A follower fetched from ``fetch_offset``; returns True if the high watermark moved."""
        st = self.followers.setdefault(replica, ReplicaState(last_caught_up_ms=now_ms))
        leo = self.log.log_end_offset
        if fetch_offset >= leo:
            st.last_caught_up_ms = now_ms
        elif fetch_offset >= st.leader_leo_at_last_fetch >= 0:
            st.last_caught_up_ms = max(st.last_caught_up_ms, st.last_fetch_ms)
        st.leo, st.last_fetch_ms, st.leader_leo_at_last_fetch = fetch_offset, now_ms, leo
        return self.update_high_watermark()

    def update_high_watermark(self) -> bool:
        """Recompute the high watermark; returns True if it moved forward."""
        leo = self.log.log_end_offset
        ends = [leo]
        for r in self.maximal_isr():
            if r != self.broker_id:
                st = self.followers.get(r)
                ends.append(st.leo if st is not None and st.leo >= 0 else self.high_watermark)
        new = max(min(min(ends), leo), self.log.log_start_offset)
        if new > self.high_watermark:
            self.high_watermark = new
            return True
        if self.high_watermark > leo:  # the log was truncated below it (recovery cut a torn tail)
            self.high_watermark = leo
        return False

    def isr_proposal(self, now_ms: int, replica_lag_ms: int, live: set[int] | None = None) -> list[int] | None:
        """The ISR this leader should ask the controller for, or None if it is right."""
        if not self.is_leader or self.pending_isr is not None:
            return None
        isr = [r for r in self.isr if r == self.broker_id or now_ms - self.followers.get(r, ReplicaState()).last_caught_up_ms <= replica_lag_ms]
        for r in self.replicas:
            st = self.followers.get(r)
            if r in isr or st is None or st.leo < 0:
                continue
            if st.leo >= self.high_watermark and st.leo >= self.epoch_start_offset and now_ms - st.last_caught_up_ms <= replica_lag_ms:
                if live is None or r in live:
                    isr.append(r)
        isr = [r for r in self.replicas if r in isr]
        return isr if sorted(isr) != sorted(self.isr) else None

    # -- follower side ---------------------------------------------------------------

    def follower_high_watermark(self, leader_hw: int) -> bool:
        new = min(leader_hw, self.log.log_end_offset)
        if new > self.high_watermark:
            self.high_watermark = new
            return True
        if self.high_watermark > self.log.log_end_offset:
            self.high_watermark = self.log.log_end_offset
        return False
