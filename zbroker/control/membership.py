"""Failure detection from gossip heartbeats (pure: heartbeats and ``now`` in, states out).

Every broker PUBs a heartbeat every ``heartbeat_ms`` on its gossip port and SUBs to
every peer's.  A heartbeat carries the sender's id, its *incarnation* (a number
fixed for the life of the process, larger after a restart) and a sequence number
that grows by one per beat.  A peer is

- ALIVE while its last beat is younger than ``suspect_after_ms`` (k missed beats),
- SUSPECT after that, and
- DEAD once ``session_timeout_ms`` passes without a fresh beat.

Beats travel over PUB/SUB and may be lost, duplicated, delayed or reordered.  Only
a beat that is *newer* than every beat seen from that peer (higher incarnation,
or same incarnation and higher sequence) refreshes it, so a duplicate or a
late, reordered beat can never keep a dead peer alive longer than its newest
beat allows.  Every peer gets one session timeout of grace from the moment this
view starts, so a broker that just started does not declare the others dead
before it could have heard them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class PeerState(enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


@dataclass
class PeerRecord:
    incarnation: int = -1
    seq: int = -1
    last_heard_ms: int | None = None
    gaps: int = 0  # beats we know we missed (sequence jumps)
    info: dict | None = None  # the newest beat's payload


class Membership:
    """One broker's view of its peers' liveness."""

    def __init__(self, my_id: int, peers: list[int], now_ms: int, heartbeat_ms: int, session_timeout_ms: int, suspect_beats: int = 3):
        self.my_id = my_id
        self.peers = {p: PeerRecord() for p in peers if p != my_id}
        self.started_ms = now_ms
        self.suspect_after_ms = min(heartbeat_ms * suspect_beats, session_timeout_ms)
        self.session_timeout_ms = session_timeout_ms

    def observe(self, sender: int, incarnation: int, seq: int, now_ms: int, info: dict | None = None) -> bool:
        """Record a heartbeat; returns True if it was fresh (newer than any seen)."""
        rec = self.peers.get(sender)
        if rec is None:
            return False  # not a configured peer (or ourselves)
        if (incarnation, seq) <= (rec.incarnation, rec.seq):
            return False  # duplicate or reordered: never refreshes liveness
        if incarnation == rec.incarnation and seq > rec.seq + 1:
            rec.gaps += seq - rec.seq - 1
        rec.incarnation, rec.seq, rec.last_heard_ms, rec.info = incarnation, seq, now_ms, info
        return True

    def state(self, peer: int, now_ms: int) -> PeerState:
        if peer == self.my_id:
            return PeerState.ALIVE
        rec = self.peers[peer]
        if rec.last_heard_ms is None:  # never heard: suspect during the start-up grace
            return PeerState.SUSPECT if now_ms - self.started_ms < self.session_timeout_ms else PeerState.DEAD
        silent = now_ms - rec.last_heard_ms
        if silent < self.suspect_after_ms:
            return PeerState.ALIVE
        if silent < self.session_timeout_ms:
            return PeerState.SUSPECT
        return PeerState.DEAD

    def alive(self, peer: int, now_ms: int) -> bool:
        """Not (yet) dead: alive or only suspected."""
        return self.state(peer, now_ms) is not PeerState.DEAD

    def live_brokers(self, now_ms: int) -> set[int]:
        return {self.my_id} | {p for p in self.peers if self.alive(p, now_ms)}

    def info(self, peer: int) -> dict | None:
        rec = self.peers.get(peer)
        return rec.info if rec else None
