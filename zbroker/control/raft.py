"""Controller election and metadata-log replication: Raft, pull-based (KRaft, KIP-595).

Pure: messages and ``now`` in, messages out; the log and the persisted election
state sit behind small interfaces, so tests step whole clusters with a fake clock
and a simulated network that loses, duplicates, delays and partitions messages.

Theory of operation
-------------------
Every configured broker is a *voter*.  The quorum is ``len(voters) // 2 + 1`` of
the configured voters, never of the live ones.  Each voter persists
``(epoch, voted_for)`` before it acts on them, so it votes at most once per epoch
even across restarts.

- **Election.**  A voter that has heard nothing from a leader for the fetch
  timeout (``2 * election_timeout_ms``; at start, ``election_timeout_ms``) plus a
  delay that grows with its rank among the voter ids (lowest id first, a little
  jitter) first asks for *pre-votes* (KIP-996): would you vote for me in epoch + 1?
  Nothing is persisted and no epoch moves; a voter says yes only if the asker's
  log is complete enough and it has no live leader, and every answer carries the
  voter's epoch and leader, so a voter that was cut off catches up instead of
  inflating epochs and deposing a healthy controller when it returns.  With a
  quorum of pre-votes it becomes a *candidate*: epoch + 1, votes for itself, asks every voter.
  A voter grants its vote if it has not voted in that epoch and the candidate's
  log is at least as complete as its own (last epoch, then end offset) -- so a
  new leader holds every committed record.  A candidate with a quorum of votes is
  the leader (the controller) of that epoch and tells everyone (``begin_epoch``).
  Any message with a higher epoch turns its receiver into a follower of that
  epoch.  At most one leader per epoch: a quorum of distinct single votes.
- **Replication.**  Followers pull: ``fetch(epoch, offset, last_fetched_epoch)``.
  The leader checks the follower's log against its own by epoch (KIP-101): if the
  follower holds records of an epoch the leader does not know, or past where that
  epoch ended, the leader answers with the *diverging* epoch and end offset and
  the follower truncates there.  Otherwise it records the follower's end offset
  and returns records after it.  When nothing is new, the leader parks the fetch
  (long poll) and answers it on the next append, high-watermark change or timeout.
- **Commit.**  The high watermark is the largest offset held by a quorum,
  counted only once a record of the leader's own epoch (the leader-change record
  it appends on election) is held by a quorum (Raft's commit rule).  Followers
  learn it from fetch responses.  Everyone applies records below it.
- **Snapshots.**  Each voter's owner may snapshot its applied state at a committed
  offset S and drop the log below it (the log start moves up to S).  A fetch the
  leader cannot check against its log any more -- below its log start, or ending
  in an epoch older than its oldest remaining one -- is answered with the leader's
  latest snapshot id ``(S, epoch of record S-1)``; the follower downloads it in
  chunks (``fetch_snapshot``), installs it (its log restarts empty at S) and fetches
  on from S.  A snapshot holds committed records only, so installing one never
  loses a committed record and never keeps an uncommitted one.
- **Fencing.**  Fetches from an older epoch are answered FENCED_LEADER_EPOCH with
  the current epoch and leader; a leader that sees a higher epoch, or that has not
  been fetched from by a quorum within the fetch timeout, steps down.
"""

from __future__ import annotations

import enum
import logging
import random
from dataclasses import dataclass
from typing import Any, Protocol

from zbroker.errors import ErrorCode

log = logging.getLogger(__name__)

# Message types.  The native protocol carries them under the same names and checks their
# fields (zbroker/protocol.py, RAFT_SCHEMAS; tests/unit/test_architecture.py keeps the two equal).
PRE_VOTE = "raft_pre_vote"
PRE_VOTE_RESPONSE = "raft_pre_vote_response"
VOTE = "raft_vote"
VOTE_RESPONSE = "raft_vote_response"
BEGIN_EPOCH = "raft_begin_epoch"
FETCH = "raft_fetch"
FETCH_RESPONSE = "raft_fetch_response"
FETCH_SNAPSHOT = "raft_fetch_snapshot"
FETCH_SNAPSHOT_RESPONSE = "raft_fetch_snapshot_response"
MESSAGE_TYPES = (PRE_VOTE, PRE_VOTE_RESPONSE, VOTE, VOTE_RESPONSE, BEGIN_EPOCH, FETCH, FETCH_RESPONSE, FETCH_SNAPSHOT,
                 FETCH_SNAPSHOT_RESPONSE)

#: The record a new leader appends first; commits of earlier epochs ride on it.
#: An empty record: appliers skip it.
LEADER_CHANGE = b""


class Role(enum.Enum):
    FOLLOWER = "follower"  # with a known leader, or none yet ("unattached")
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass
class ElectionState:
    """What a voter must remember across restarts."""

    epoch: int = 0
    voted_for: int | None = None


class RaftLog(Protocol):
    """The replicated log, as Raft needs it.  Offsets start at 0."""

    def end_offset(self) -> int: ...

    def last_epoch(self) -> int: ...  # epoch of the last record, 0 if empty

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """(largest known epoch <= ``epoch``, offset where that epoch ended); (-1, -1) if none."""

    def append_as_leader(self, records: list[bytes], epoch: int) -> int:  # returns the base offset
        ...

    def read(self, offset: int, max_bytes: int) -> Any:  # an opaque chunk ("" or b"" / [] when empty)
        ...

    def append_chunk(self, chunk: Any) -> None:  # a chunk from the leader, starting at end_offset()
        ...

    def truncate_to(self, offset: int) -> None: ...

    def start_offset(self) -> int: ...  # first offset still in the log (0 until a prefix is dropped)

    def snapshot_id(self) -> tuple[int, int] | None: ...  # (offset, epoch) of the latest snapshot

    def snapshot_size(self) -> int: ...  # of the latest snapshot, in read_snapshot's units

    def read_snapshot(self, position: int, max_bytes: int) -> Any:  # a chunk of the latest snapshot
        ...

    def install_snapshot(self, snapshot_id: tuple[int, int], chunks: list) -> None:
        """Make the downloaded snapshot the latest and restart the log empty at its offset."""


class NotLeader(Exception):
    """Proposals go to the leader; ``leader`` is who that is, if known."""

    def __init__(self, leader: int | None, epoch: int) -> None:
        super().__init__(f"not the controller (controller={leader}, epoch={epoch})")
        self.leader = leader
        self.epoch = epoch


Message = tuple[int, dict, Any]  # (destination voter id, header fields, payload or None)


class RaftNode:
    """One voter of the metadata quorum."""

    def __init__(
        self,
        my_id: int,
        voters: list[int],
        log_: RaftLog,
        state: ElectionState,
        persist,
        now_ms: int,
        election_timeout_ms: int = 1000,
        fetch_max_wait_ms: int = 500,
        fetch_max_bytes: int = 1 << 20,
        rng: random.Random | None = None,
    ) -> None:
        self.id = my_id
        self.voters = sorted(voters)
        self.quorum = len(self.voters) // 2 + 1
        self.log = log_
        self.state = state
        self._persist = persist
        self.election_timeout_ms = election_timeout_ms
        self.fetch_timeout_ms = 2 * election_timeout_ms
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_max_bytes = fetch_max_bytes
        self.rng = rng or random.Random()
        self.role = Role.FOLLOWER
        self.leader: int | None = None
        self.high_watermark = 0
        self.outbox: list[Message] = []
        # candidate, and prospective candidate (pre-vote round for epoch + 1)
        self._votes: set[int] = set()
        self._prevotes: set[int] | None = None
        # leader
        self._epoch_start = 0
        self._followers: dict[int, list[int]] = {}  # id -> [end_offset, last_fetch_ms]
        self._parked: dict[int, tuple[dict, int, int]] = {}  # id -> (fetch request, deadline, received at)
        self._hw_sent: dict[int, int] = {}
        # follower
        self._caught_up_with: tuple[int, int] | None = None  # (leader, epoch) whose high watermark we hold
        self._leader_hw_seen = 0
        self._last_contact = now_ms
        self._fetch_sent_at: int | None = None
        self._download: tuple[tuple[int, int], list, int] | None = None  # snapshot id, chunks, position
        self.installed_snapshot: tuple[int, int] | None = None  # set on install; the owner resets it
        self._deadline = now_ms + election_timeout_ms + self._rank_delay()
        if len(self.voters) == 1:
            self._deadline = now_ms  # a quorum of one: no one to wait for

    # -- helpers -----------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self.state.epoch

    def _rank_delay(self) -> int:
        step = max(1, self.election_timeout_ms // 4)
        return self.voters.index(self.id) * step + self.rng.randint(0, max(1, step // 2))

    def _send(self, dst: int, kind: str, payload: Any = None, **fields: Any) -> None:
        self.outbox.append((dst, {"type": kind, "from": self.id, "epoch": self.state.epoch, **fields}, payload))

    def _save(self, epoch: int, voted_for: int | None) -> None:
        self.state = ElectionState(epoch, voted_for)
        self._persist(self.state)

    def _log_is_current(self, last_epoch: int, end_offset: int) -> bool:
        return (last_epoch, end_offset) >= (self.log.last_epoch(), self.log.end_offset())

    def _become_follower(self, epoch: int, leader: int | None, now_ms: int) -> None:
        was = (self.role, self.state.epoch, self.leader)
        if epoch > self.state.epoch:
            self._save(epoch, None)
        self.role = Role.FOLLOWER
        self.leader = leader
        self._prevotes = None
        self._parked.clear()
        self._followers.clear()
        self._fetch_sent_at = None
        self._download = None
        self._last_contact = now_ms
        self._deadline = now_ms + self.fetch_timeout_ms + self._rank_delay()
        if was != (self.role, self.state.epoch, self.leader):
            log.info("raft: follower epoch=%d leader=%s (was %s epoch=%d)", epoch, leader, was[0].value, was[1])

    def observe(self, epoch: int, leader: int | None, now_ms: int) -> None:
        """Learn of an epoch (and maybe its leader) from any message or heartbeat."""
        if leader == self.id and self.role is not Role.LEADER:
            leader = None  # news of our own leadership from before a restart: stale
        if epoch > self.state.epoch:
            self._become_follower(epoch, leader, now_ms)
        elif epoch == self.state.epoch and leader is not None and self.leader is None and leader != self.id:
            if self.role is not Role.LEADER:
                self._become_follower(epoch, leader, now_ms)

    # -- timers ------------------------------------------------------------------

    def next_deadline(self) -> int:
        deadline = self._deadline
        for _, due, _ in self._parked.values():
            deadline = min(deadline, due)
        return deadline

    def tick(self, now_ms: int) -> None:
        if self.role is Role.LEADER:
            for fid, (req, due, received) in list(self._parked.items()):
                if due <= now_ms:
                    del self._parked[fid]
                    self._answer_fetch(fid, req, received)
            if now_ms >= self._deadline:
                self._check_quorum(now_ms)
            return
        if now_ms >= self._deadline:
            self._start_pre_vote(now_ms)
            return
        if self.role is Role.FOLLOWER and self.leader is not None:
            # a fetch unanswered well past its long-poll wait was lost: ask again, soon enough
            # that one lost fetch never looks like a dead follower to the leader's quorum check
            resend_after = self.fetch_max_wait_ms + max(50, self.election_timeout_ms // 4)
            stale = self._fetch_sent_at is not None and now_ms - self._fetch_sent_at > resend_after
            if self._fetch_sent_at is None or stale:
                self._send_fetch(now_ms)

    def _check_quorum(self, now_ms: int) -> None:
        recent = 1 + sum(1 for _, seen in self._followers.values() if now_ms - seen < self.fetch_timeout_ms)
        if recent < self.quorum:
            log.warning("raft: leader of epoch %d lost sight of a quorum (%d of %d); stepping down", self.epoch, recent, len(self.voters))
            self._become_follower(self.epoch, None, now_ms)
        else:
            self._deadline = now_ms + self.fetch_timeout_ms

    # -- election ----------------------------------------------------------------

    def _start_pre_vote(self, now_ms: int) -> None:
        self.role = Role.FOLLOWER
        self.leader = None
        self._prevotes = {self.id}
        self._deadline = now_ms + self.election_timeout_ms + self._rank_delay()
        for v in self.voters:
            if v != self.id:
                self._send(v, PRE_VOTE, proposed=self.epoch + 1, last_epoch=self.log.last_epoch(), end_offset=self.log.end_offset())
        self._maybe_stand(now_ms)

    def _maybe_stand(self, now_ms: int) -> None:
        if self._prevotes is not None and len(self._prevotes) >= self.quorum:
            self._prevotes = None
            self._start_election(now_ms)

    def _on_pre_vote(self, src: int, msg: dict, now_ms: int) -> None:
        granted = (
            msg["proposed"] > self.state.epoch
            and not self.leader_is_fresh(now_ms)
            and self._log_is_current(msg["last_epoch"], msg["end_offset"])
        )
        self._send(src, PRE_VOTE_RESPONSE, proposed=msg["proposed"], granted=granted, leader=self._fresh_leader(now_ms))

    def _on_pre_vote_response(self, src: int, msg: dict, now_ms: int) -> None:
        if msg["epoch"] > self.state.epoch or (msg.get("leader") is not None and self.leader is None):
            self.observe(msg["epoch"], msg.get("leader"), now_ms)  # catch up instead of standing
            if self._prevotes is None:
                return
        if self._prevotes is not None and msg["granted"] and msg["proposed"] == self.epoch + 1:
            self._prevotes.add(src)
            self._maybe_stand(now_ms)

    def _start_election(self, now_ms: int) -> None:
        self._save(self.state.epoch + 1, self.id)
        self.role = Role.CANDIDATE
        self.leader = None
        self._votes = {self.id}
        self._deadline = now_ms + self.election_timeout_ms + self._rank_delay()
        log.info("raft: standing for election epoch=%d", self.epoch)
        for v in self.voters:
            if v != self.id:
                self._send(v, VOTE, last_epoch=self.log.last_epoch(), end_offset=self.log.end_offset())
        self._maybe_win(now_ms)

    def _maybe_win(self, now_ms: int) -> None:
        if self.role is not Role.CANDIDATE or len(self._votes) < self.quorum:
            return
        self.role = Role.LEADER
        self.leader = self.id
        self._followers = {v: [0, now_ms] for v in self.voters if v != self.id}
        self._hw_sent = {}
        self._parked.clear()
        self._epoch_start = self.log.append_as_leader([LEADER_CHANGE], self.epoch)
        self._deadline = now_ms + self.fetch_timeout_ms
        log.info("raft: elected controller epoch=%d votes=%s", self.epoch, sorted(self._votes))
        for v in self.voters:
            if v != self.id:
                self._send(v, BEGIN_EPOCH, leader=self.id)
        self._advance_hw()

    def leader_is_fresh(self, now_ms: int) -> bool:
        """True while we follow a leader we heard from within the election timeout,
        or lead with a quorum fetching: then a vote request is a disruption, ignored
        (Raft's leader stickiness), so a returning, partitioned voter cannot depose
        a healthy controller."""
        if self.role is Role.LEADER:
            recent = 1 + sum(1 for _, seen in self._followers.values() if now_ms - seen < self.election_timeout_ms)
            return recent >= self.quorum
        return self.leader is not None and now_ms - self._last_contact < self.election_timeout_ms

    def _fresh_leader(self, now_ms: int) -> int | None:
        """The leader to tell others about: only one we know is alive, never hearsay
        about a leader that may have died (that would send them back to it)."""
        return self.leader if self.leader_is_fresh(now_ms) else None

    def _on_vote(self, src: int, msg: dict, now_ms: int) -> None:
        epoch = msg["epoch"]
        if epoch > self.state.epoch and self.leader_is_fresh(now_ms):
            return
        if epoch > self.state.epoch:
            self._become_follower(epoch, None, now_ms)
        granted = (
            epoch == self.state.epoch
            and self.state.voted_for in (None, src)
            and self.role is Role.FOLLOWER
            and self.leader is None
            and self._log_is_current(msg["last_epoch"], msg["end_offset"])
        )
        if granted:
            self._save(epoch, src)
            self._deadline = now_ms + self.fetch_timeout_ms + self._rank_delay()
        self._send(src, VOTE_RESPONSE, granted=granted, leader=self._fresh_leader(now_ms))

    def _on_vote_response(self, src: int, msg: dict, now_ms: int) -> None:
        if msg["epoch"] > self.state.epoch:
            self._become_follower(msg["epoch"], msg.get("leader"), now_ms)
        elif msg["epoch"] == self.state.epoch and self.role is Role.CANDIDATE and msg["granted"]:
            self._votes.add(src)
            self._maybe_win(now_ms)

    # -- replication: follower side ------------------------------------------------

    def _send_fetch(self, now_ms: int) -> None:
        self._fetch_sent_at = now_ms
        if self._download is not None:
            snapshot_id, _chunks, position = self._download
            self._send(self.leader, FETCH_SNAPSHOT, snapshot=list(snapshot_id), position=position)
            return
        self._send(self.leader, FETCH, offset=self.log.end_offset(), last_fetched_epoch=self.log.last_epoch())

    def _from_our_leader(self, src: int, msg: dict, now_ms: int) -> bool:
        """Epoch checks of a leader's answer: a newer epoch or a fencing is news to act on;
        True if it comes from the leader we follow in our epoch (else it is stale)."""
        epoch = msg["epoch"]
        if epoch > self.state.epoch or (msg.get("error") == ErrorCode.FENCED_LEADER_EPOCH and epoch >= self.state.epoch):
            self.observe(epoch, msg.get("leader"), now_ms)
            return False
        return epoch == self.state.epoch and self.role is Role.FOLLOWER and src == self.leader

    def _on_fetch_snapshot_response(self, src: int, msg: dict, payload: Any, now_ms: int) -> None:
        if not self._from_our_leader(src, msg, now_ms) or self._download is None:
            return
        snapshot_id, chunks, position = self._download
        if tuple(msg["snapshot"]) != snapshot_id or msg["position"] != position:
            return  # a duplicate or reordered answer
        self._last_contact = now_ms
        self._deadline = now_ms + self.fetch_timeout_ms + self._rank_delay()
        self._fetch_sent_at = None
        if msg.get("error") or not payload and position < msg["size"]:
            self._download = None  # the leader has a newer snapshot: a plain fetch learns its id
        else:
            if payload:
                chunks.append(payload)
                position += len(payload)
            self._download = (snapshot_id, chunks, position)
            if position >= msg["size"]:
                self._download = None
                log.info("raft: installing metadata snapshot offset=%d epoch=%d", *snapshot_id)
                try:
                    self.log.install_snapshot(snapshot_id, chunks)
                except (ValueError, OSError) as exc:  # damaged, or our disk failed: fetch it again
                    log.error("raft: metadata snapshot from %d unusable: %s", src, exc)
                else:
                    self.installed_snapshot = snapshot_id
                    self.high_watermark = max(self.high_watermark, snapshot_id[0])
        self._send_fetch(now_ms)

    def _on_fetch_response(self, src: int, msg: dict, payload: Any, now_ms: int) -> None:
        if not self._from_our_leader(src, msg, now_ms):
            return
        if (msg["offset"], msg.get("last_fetched_epoch")) != (self.log.end_offset(), self.log.last_epoch()):
            return  # a duplicate or reordered answer to an older fetch (same end and epoch = same log tail)
        self._last_contact = now_ms
        self._deadline = now_ms + self.fetch_timeout_ms + self._rank_delay()
        self._fetch_sent_at = None
        snapshot = msg.get("snapshot")
        if snapshot is not None:
            # our log cannot be checked against the leader's any more: take its snapshot
            log.info("raft: fetching metadata snapshot offset=%d epoch=%d from %d", snapshot[0], snapshot[1], src)
            self._download = ((snapshot[0], snapshot[1]), [], 0)
            self._leader_hw_seen = msg["high_watermark"]
            self._send_fetch(now_ms)
            return
        diverging = msg.get("diverging")
        if diverging is not None:
            # Truncate to where the leader's and our copies of that epoch both end
            # (KIP-101/595); the next fetch checks the new end again, until they match.
            div_epoch, div_end = diverging
            _, own_end = self.log.end_offset_for_epoch(div_epoch)
            target = max(0, min(div_end, own_end if own_end >= 0 else 0, self.log.end_offset()))
            # never into what a snapshot covers: everything below our log start is committed,
            # so it agrees with any leader's log
            target = max(target, self.log.start_offset())
            log.info("raft: truncating metadata log to %d (diverged at epoch %d)", target, div_epoch)
            self.log.truncate_to(target)
        else:
            if payload:
                self.log.append_chunk(payload)
            # our log now matches the leader's up to its end: the leader's high watermark applies
            self.high_watermark = max(self.high_watermark, min(msg["high_watermark"], self.log.end_offset()))
            self._leader_hw_seen = msg["high_watermark"]
            if self.high_watermark >= self._leader_hw_seen:
                self._caught_up_with = (src, self.epoch)
        self._send_fetch(now_ms)

    # -- replication: leader side ----------------------------------------------------

    def _as_leader(self, src: int, msg: dict, now_ms: int, response: str, **echo: Any) -> bool:
        """Epoch checks of a follower's request: an older epoch is fenced (with ``echo`` in the
        answer), a newer one makes us a follower. True if we lead this epoch."""
        epoch = msg["epoch"]
        if epoch < self.state.epoch:
            self._send(src, response, error=int(ErrorCode.FENCED_LEADER_EPOCH), leader=self._fresh_leader(now_ms), **echo)
            return False
        if epoch > self.state.epoch:
            self._become_follower(epoch, None, now_ms)
            return False
        return self.role is Role.LEADER

    def _on_fetch(self, src: int, msg: dict, now_ms: int) -> None:
        if self._as_leader(src, msg, now_ms, FETCH_RESPONSE, offset=msg["offset"], last_fetched_epoch=msg["last_fetched_epoch"],
                           high_watermark=0):
            self._answer_fetch(src, msg, now_ms, may_park=True)

    def _answer_fetch(self, src: int, msg: dict, now_ms: int, may_park: bool = False) -> None:
        offset, last_epoch = msg["offset"], msg["last_fetched_epoch"]
        follower = self._followers.get(src)
        if follower is None:
            return  # not a voter
        start, snapshot = self.log.start_offset(), self.log.snapshot_id()
        if (offset > 0 or start > 0) and (offset, last_epoch) != snapshot:
            end_epoch, end_offset = self.log.end_offset_for_epoch(last_epoch) if offset >= start else (-1, -1)
            if end_epoch != last_epoch or offset > end_offset:
                reply = dict(error=0, leader=self.id, offset=offset, last_fetched_epoch=last_epoch, high_watermark=self.high_watermark)
                if start > 0 and (end_epoch < 0 or end_offset <= start) and snapshot is not None:
                    follower[1] = now_ms  # fetching, even if not yet from our log
                    self._send(src, FETCH_RESPONSE, snapshot=list(snapshot), **reply)
                else:
                    self._send(src, FETCH_RESPONSE, diverging=[end_epoch, max(end_offset, 0)], **reply)
                return
        follower[0], follower[1] = offset, now_ms
        self._advance_hw()
        chunk = self.log.read(offset, self.fetch_max_bytes) if offset < self.log.end_offset() else None
        if may_park and not chunk and self._hw_sent.get(src, -1) >= self.high_watermark:
            self._parked[src] = (msg, now_ms + self.fetch_max_wait_ms, now_ms)
            return
        self._hw_sent[src] = self.high_watermark
        self._send(src, FETCH_RESPONSE, chunk or None, error=0, leader=self.id, offset=offset, last_fetched_epoch=last_epoch,
                   high_watermark=self.high_watermark)

    def _on_fetch_snapshot(self, src: int, msg: dict, now_ms: int) -> None:
        if not self._as_leader(src, msg, now_ms, FETCH_SNAPSHOT_RESPONSE, snapshot=msg["snapshot"], position=msg["position"],
                               size=0):
            return
        follower = self._followers.get(src)
        if follower is None:
            return
        follower[1] = now_ms
        snapshot, position = self.log.snapshot_id(), msg["position"]
        reply = dict(leader=self.id, snapshot=msg["snapshot"], position=position)
        if snapshot is None or tuple(msg["snapshot"]) != snapshot:
            self._send(src, FETCH_SNAPSHOT_RESPONSE, error=int(ErrorCode.UNKNOWN_SERVER_ERROR), size=0, **reply)
            return
        size = self.log.snapshot_size()
        chunk = self.log.read_snapshot(position, self.fetch_max_bytes) if position < size else None
        self._send(src, FETCH_SNAPSHOT_RESPONSE, chunk or None, error=0, size=size, **reply)

    def _advance_hw(self) -> None:
        ends = sorted([self.log.end_offset()] + [f[0] for f in self._followers.values()], reverse=True)
        candidate = ends[self.quorum - 1]
        if candidate > self._epoch_start and candidate > self.high_watermark:
            self.high_watermark = candidate
            self._wake_parked()

    def _wake_parked(self) -> None:
        parked, self._parked = self._parked, {}
        for fid, (req, _, received) in parked.items():
            self._answer_fetch(fid, req, received)

    def caught_up(self) -> bool:
        """True once this voter holds everything the controller had committed when it last
        answered us (or, as the controller, once its own election record is committed)."""
        if self.role is Role.LEADER:
            return self.high_watermark > self._epoch_start
        return self._caught_up_with == (self.leader, self.epoch)

    def propose(self, records: list[bytes]) -> tuple[int, int]:
        """Append records as the leader; returns (first offset, end offset) -- committed once
        :attr:`high_watermark` >= the end offset.

        Raises:
            NotLeader: this voter is not the leader.
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader, self.epoch)
        base = self.log.append_as_leader(records, self.epoch)
        self._advance_hw()  # a single-voter quorum commits at once
        self._wake_parked()
        return base, self.log.end_offset()

    # -- dispatch --------------------------------------------------------------------

    def receive(self, msg: dict, payload: Any, now_ms: int) -> None:
        """Handle one message from a peer (type, from, epoch and the type's fields)."""
        src = msg["from"]
        if src not in self.voters or src == self.id:
            return
        kind = msg["type"]
        if msg.get("epoch", -1) < 0:
            return
        if kind == PRE_VOTE:
            self._on_pre_vote(src, msg, now_ms)
        elif kind == PRE_VOTE_RESPONSE:
            self._on_pre_vote_response(src, msg, now_ms)
        elif kind == VOTE:
            self._on_vote(src, msg, now_ms)
        elif kind == VOTE_RESPONSE:
            self._on_vote_response(src, msg, now_ms)
        elif kind == BEGIN_EPOCH:
            if msg["epoch"] >= self.state.epoch and self.role is not Role.LEADER or msg["epoch"] > self.state.epoch:
                self._become_follower(msg["epoch"], msg["leader"], now_ms)
                self._send_fetch(now_ms)
        elif kind == FETCH:
            self._on_fetch(src, msg, now_ms)
        elif kind == FETCH_RESPONSE:
            self._on_fetch_response(src, msg, payload, now_ms)
        elif kind == FETCH_SNAPSHOT:
            self._on_fetch_snapshot(src, msg, now_ms)
        elif kind == FETCH_SNAPSHOT_RESPONSE:
            self._on_fetch_snapshot_response(src, msg, payload, now_ms)
