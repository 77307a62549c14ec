"""The control plane of one broker: Raft voter, metadata image, membership, controller duties.

No sockets: the server hands in Raft messages and gossip heartbeats, calls
:meth:`ControlPlane.step` with ``now``, and sends what lands in
:attr:`ControlPlane.peer_outbox` (to other brokers) and :meth:`heartbeat`
(on the PUB socket).

Every broker is a voter of the metadata quorum (:mod:`zbroker.control.raft`) and keeps a
copy of ``__cluster_metadata`` (:mod:`zbroker.control.metalog`).  Records below the
Raft high watermark are *committed*; every broker applies them, in order, to its
:class:`~zbroker.control.metadata.MetadataImage`, which is what metadata requests are
answered from and what decides which partitions this broker leads.

The Raft leader is the *controller*.  It turns admin requests into records
(:meth:`propose`), and on every step, once its image is current, compares
partition leaderships with the brokers gossip says are alive and proposes the
changes :func:`zbroker.control.controller.leadership_changes` asks for: leadership moves
off brokers dead for ``session_timeout_ms`` and back to preferred leaders that
return.  A leadership change bumps the partition's leader epoch.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from storage import write_atomic
from zbroker.control import raft as R
from zbroker.config import ClusterConfig
from zbroker.control.controller import leadership_changes
from zbroker.control.membership import Membership
from zbroker.control.metadata import MetadataImage, apply_record, image_records
from zbroker.control.metalog import MetadataLog, QuorumStateFile

log = logging.getLogger(__name__)

HEARTBEAT = "heartbeat"


@dataclass(slots=True)
class RaftMessage:
    """A Raft message for another broker: its fields (``type`` included) and an optional payload."""

    fields: dict
    payload: bytes | None = None


class ControlPlane:
    """Raft + metadata image + failure detection for one broker."""

    def __init__(self, config: ClusterConfig, broker_id: int, handles, now_ms: int, clock) -> None:
        self.config = config
        self.broker_id = broker_id
        self.voters = sorted(b.id for b in config.brokers)
        data_dir = config.broker(broker_id).data_dir
        self.metalog = MetadataLog(data_dir, clock, handles, segment_bytes=config.setting("metadata_segment_bytes"))
        self.state_file = QuorumStateFile(data_dir)
        state, known_hw = self.state_file.load()
        self.raft = R.RaftNode(
            broker_id,
            self.voters,
            self.metalog,
            state,
            self._persist,
            now_ms,
            election_timeout_ms=config.setting("election_timeout_ms"),
            fetch_max_wait_ms=min(500, config.setting("election_timeout_ms") // 2),
            rng=random.Random(),
        )
        self.membership = Membership(
            broker_id, self.voters, now_ms, config.setting("heartbeat_ms"), config.setting("session_timeout_ms")
        )
        self.image = MetadataImage()
        self.applied = 0
        self._reloaded: list[dict] = []  # a snapshot's records, applied in place of the image
        self._load_snapshot()
        self.raft.high_watermark = max(min(known_hw, self.metalog.end_offset()), self.applied)
        self._saved_hw = self.raft.high_watermark
        self.peer_outbox: list[tuple[int, dict, Any]] = []
        self.incarnation = self._next_incarnation(data_dir, now_ms)
        self._seq = 0
        self._leadership_pending: int | None = None  # end offset of an in-flight leadership proposal
        self._ready = False
        self.apply_committed()
        self.raft.tick(now_ms)  # a quorum of one elects itself at once
        self._drain_raft()
        self.apply_committed()

    # -- persistence -----------------------------------------------------------------

    @staticmethod
    def _next_incarnation(data_dir: str, now_ms: int) -> int:
        """A number larger at every start of this broker, so peers can tell a restarted
        process's heartbeats from a late beat of the old one (persisted, not the clock,
        so a clock stepping back cannot make a restarted broker look stale)."""
        path = Path(data_dir) / "meta" / "incarnation"
        try:
            previous = int(path.read_text())
        except (FileNotFoundError, ValueError):
            previous = 0
        value = max(previous + 1, now_ms)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, str(value).encode())
        return value

    def _persist(self, state: R.ElectionState) -> None:
        self.state_file.save(state, self.raft.high_watermark if hasattr(self, "raft") else 0)

    # -- queries ---------------------------------------------------------------------

    @property
    def is_controller(self) -> bool:
        return self.raft.role is R.Role.LEADER

    @property
    def controller(self) -> int:
        return self.raft.leader if self.raft.leader is not None else -1

    @property
    def epoch(self) -> int:
        return self.raft.epoch

    def live_brokers(self, now_ms: int) -> set[int]:
        return self.membership.live_brokers(now_ms)

    @property
    def ready(self) -> bool:
        """This broker's image has caught up with the controller's at least once since it
        started.  Until then it neither leads nor follows partitions: a restarted broker's
        image may still name it leader of a partition that has since moved, and two such
        stale brokers could otherwise acknowledge writes the real leader never sees."""
        if not self._ready and self.raft.caught_up() and self.applied >= self.raft.high_watermark:
            self._ready = True
            log.info("metadata caught up at offset %d: serving partitions", self.applied)
        return self._ready

    def in_contact(self, now_ms: int) -> bool:
        """This broker hears from a live controller (or is one, followed by a quorum).  A broker
        cut off from the controller may have been replaced as a partition's leader without
        knowing it, so it stops answering for consumer groups."""
        return self.raft.leader_is_fresh(now_ms)

    def caught_up(self) -> bool:
        """The image holds every record this broker has (so a controller may act on it)."""
        return self.applied >= self.metalog.end_offset() and self.raft.high_watermark >= self.metalog.end_offset()

    # -- inputs ----------------------------------------------------------------------

    def on_raft_message(self, msg: dict, payload: Any, now_ms: int) -> None:
        self.raft.receive(msg, payload, now_ms)
        if self.raft.installed_snapshot is not None:
            self.raft.installed_snapshot = None
            self._load_snapshot()
        self._drain_raft()

    def on_heartbeat(self, hb: dict, now_ms: int) -> None:
        if hb.get("cluster") != self.config.name:
            return
        try:
            sender, inc, seq, epoch, ctl = hb["broker"], hb["incarnation"], hb["seq"], hb["epoch"], hb["controller"]
        except KeyError:
            return
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (sender, inc, seq, epoch, ctl)):
            return
        if self.membership.observe(sender, inc, seq, now_ms, hb):
            # Only the controller's own word names it: a follower's beat may still name a
            # controller that has since died.  Anyone's beat can tell of a newer epoch.
            self.raft.observe(epoch, sender if ctl == sender else None, now_ms)
            self._drain_raft()

    def heartbeat(self) -> dict:
        self._seq += 1
        return {
            "type": HEARTBEAT,
            "cluster": self.config.name,
            "broker": self.broker_id,
            "incarnation": self.incarnation,
            "seq": self._seq,
            "epoch": self.raft.epoch,
            "controller": self.controller,
        }

    # -- stepping --------------------------------------------------------------------

    def step(self, now_ms: int) -> list[dict]:
        """Run timers; returns the committed records newly applied (for the broker to act on)."""
        self.raft.tick(now_ms)
        self._drain_raft()
        applied = self.apply_committed()
        if self.is_controller:
            self._controller_duties(now_ms)
        return applied

    def next_deadline(self) -> int:
        return self.raft.next_deadline()

    def _drain_raft(self) -> None:
        if self.raft.outbox:
            self.peer_outbox.extend(self.raft.outbox)
            self.raft.outbox = []

    def _load_snapshot(self) -> None:
        """Replace the image by the metadata log's latest snapshot (at start, or once one is
        downloaded from the controller)."""
        snapshot = self.metalog.snapshot_id()
        if snapshot is None or snapshot[0] <= self.applied:
            return
        records = self.metalog.snapshot_records()
        self.image.clear()
        for record in records:
            apply_record(self.image, record)
        self.applied = snapshot[0]
        self._reloaded = records
        log.info("metadata image loaded from snapshot offset=%d epoch=%d topics=%d", *snapshot, len(self.image.topics))

    def _maybe_snapshot(self) -> None:
        """Every ``metadata_snapshot_records`` applied records: snapshot the image, drop the
        log below it.  Only applied (so committed) state goes in a snapshot."""
        latest = self.metalog.snapshot_id()
        if self.applied - (latest[0] if latest else 0) < self.config.setting("metadata_snapshot_records"):
            return
        records = [msgpack.packb(r, use_bin_type=True) for r in image_records(self.image)]
        snapshot = self.metalog.write_snapshot(self.applied, records)
        log.info("metadata snapshot written offset=%d epoch=%d records=%d; metadata log starts at %d",
                 *snapshot, len(records), self.metalog.start_offset())

    def apply_committed(self) -> list[dict]:
        hw = self.raft.high_watermark
        if self._reloaded:
            reloaded, self._reloaded = self._reloaded, []
            return reloaded + self.apply_committed()
        if hw <= self.applied:
            return []
        applied = []
        for offset, record in self.metalog.records(self.applied, hw):
            if record is not None:
                try:
                    apply_record(self.image, record)
                    applied.append(record)
                except (ValueError, KeyError, TypeError) as exc:  # a record this version cannot read
                    log.error("skipping unreadable metadata record at offset %d: %s", offset, exc)
            self.applied = offset + 1
        self.applied = max(self.applied, hw)
        self._maybe_snapshot()
        if hw != self._saved_hw:
            self._saved_hw = hw
            self.state_file.save(self.raft.state, hw)
        return applied

    # -- controller --------------------------------------------------------------------

    def propose(self, records: list[dict]) -> int:
        """Append records as the controller; returns the offset they are committed at
        (wait until :attr:`applied` reaches it).

        Raises:
            zbroker.control.raft.NotLeader: this broker is not the controller.
        """
        _, end = self.raft.propose([msgpack.packb(r, use_bin_type=True) for r in records])
        self._drain_raft()
        self.apply_committed()
        return end

    def _controller_duties(self, now_ms: int) -> None:
        if not self.caught_up():
            return
        if self._leadership_pending is not None and self.applied < self._leadership_pending:
            return
        self._leadership_pending = None
        live = self.live_brokers(now_ms)
        settings = self.config.topic_settings
        changes = leadership_changes(self.image, live, lambda t: settings(t.overrides)["unclean_leader_election"])
        if changes:
            for rec in changes:
                log.info("controller: %s-%s leader -> %s (epoch %s)", rec["topic"], rec["partition"], rec["leader"], rec["leader_epoch"])
            self._leadership_pending = self.propose(changes)

    def take_outbox(self) -> list[tuple[int, dict, Any]]:
        """The Raft messages queued for peers since the last call: ``(broker id, fields, payload)``."""
        out, self.peer_outbox = self.peer_outbox, []
        return out

    def close(self) -> None:
        self.state_file.save(self.raft.state, self.raft.high_watermark)
        self.metalog.close()

