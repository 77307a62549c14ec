"""The composition root: one broker's services, wired together; timers.

:class:`App` builds the services and owns nothing else.  Each service owns its state:

- :class:`~zbroker.control.controlplane.ControlPlane` -- Raft over the metadata log,
  the metadata image, failure detection, the controller's duties;
- :class:`~zbroker.core.partitions.PartitionManager` -- the partitions this broker
  holds (open, close, reconcile with the image);
- :class:`~zbroker.core.produce.ProduceService`, :class:`~zbroker.core.fetch.FetchService`
  -- the data path; :class:`~zbroker.core.delete_records.DeleteRecordsService` -- moving
  log starts up; :class:`~zbroker.core.cluster.ClusterInfo` -- metadata answers;
- :class:`~zbroker.core.replication.Replication` -- follower fetching, ISR upkeep;
- :class:`~zbroker.control.topicadmin.TopicAdmin` -- topics, producer ids, ISR commits,
  through the controller;
- :class:`~zbroker.groups.coordinator.GroupCoordinator` -- consumer groups;
- :class:`~zbroker.core.housekeeping.Housekeeping` -- retention and compaction;
- the broker's one authorizer (:attr:`App.authorizer`, :func:`zbroker.security.acl.build_authorizer`
  over the ACLs of the metadata image), which every front door's router asks.
- :class:`~zbroker.security.quotas.QuotaManager` -- client byte-rate quotas (throttle times).

Front doors call the services through the app's attributes; broker-to-broker messages
leave through the :class:`~zbroker.context.PeerChannel` the app is given.  Time comes
from one clock: the loop passes ``now_ms`` into every call (the metadata log reads the
same clock for its timestamps).
"""

from __future__ import annotations

import logging
from typing import Callable

from zbroker.config import ClusterConfig
from zbroker.context import PeerChannel
from zbroker.control.controlplane import ControlPlane, RaftMessage
from zbroker.control.security_meta import DEFAULT_QUOTA_PRINCIPAL
from zbroker.control.topicadmin import META_KEY, TopicAdmin
from zbroker.core.cluster import ClusterInfo
from zbroker.core.delete_records import DeleteRecordsService
from zbroker.core.fetch import FetchService
from zbroker.core.housekeeping import Housekeeping
from zbroker.core.logmanager import LogManager
from zbroker.core.partitions import PartitionManager
from zbroker.core.produce import ProduceService
from zbroker.core.replication import Replication
from zbroker.groups.coordinator import GroupCoordinator
from zbroker.purgatory import Purgatory
from zbroker.security import Authorizer
from zbroker.security.acl import build_authorizer
from zbroker.security.quotas import QuotaManager

log = logging.getLogger(__name__)


class App:
    """One broker's services."""

    def __init__(self, config: ClusterConfig, broker_id: int, now_ms: int, clock: Callable[[], int],
                 peers: PeerChannel, authorizer: Authorizer | None = None) -> None:
        """``authorizer``: by default the one ``[security]`` calls for (tests pass their own)."""
        self.config = config
        self.broker_id = broker_id
        self.clock = clock
        self.peers = peers
        self.logs = LogManager(config.broker(broker_id).data_dir, config.setting("max_open_files"))
        self.control = ControlPlane(config, broker_id, self.logs.handles, now_ms, clock)
        self.authorizer = authorizer or build_authorizer(config.security, lambda: self.control.image.security)
        self.purgatory = Purgatory()
        self.partitions = PartitionManager(config, broker_id, self.logs, self.control, self.purgatory)
        self.admin = TopicAdmin(config, broker_id, self.control, self.purgatory, peers, after_propose=self.metadata_changed)
        self.produce = ProduceService(self.partitions, self.purgatory)
        self.fetch = FetchService(self.partitions, self.purgatory)
        self.delete_records = DeleteRecordsService(self.partitions)
        self.cluster = ClusterInfo(config, broker_id, self.control, self.partitions, self.admin, self.authorizer)
        self.replication = Replication(config, broker_id, self.control, self.partitions, self.admin, peers)
        self.groups = GroupCoordinator(config, broker_id, self.control, self.partitions, self.admin, self.purgatory)
        self.housekeeping = Housekeeping(config, self.partitions, now_ms)
        self.quotas = QuotaManager(lambda: self.control.image.security, DEFAULT_QUOTA_PRINCIPAL, config.setting("quota_samples"),
                                   config.setting("quota_sample_ms"), config.setting("quota_max_throttle_ms"))
        # the bridges and mirrors this broker runs (a zbroker.frontends.bridge.host.BridgeHost,
        # which the server sets and the loop ticks): `bridge_status` asks it
        self.bridges = None
        self._last_checkpoint_ms = now_ms
        self.metadata_changed(now_ms)
        self.partitions.open_pending(now_ms, everything=True)  # at start, everything before serving
        for stray in self.logs.stray_dirs(set(self.partitions.online)):
            log.warning("data dir holds %s, which belongs to no known partition of this broker; leaving it alone", stray)
        log.info("broker %s loaded topics=%d partitions=%d", broker_id, len(self.control.image.topics),
                 len(self.partitions.online))

    # -- the metadata image moved ------------------------------------------------

    def metadata_changed(self, now_ms: int) -> None:
        """After committed metadata was applied: partitions follow the image, admin forgets
        what committed, groups follow the offsets partitions this broker leads."""
        self.partitions.reconcile(now_ms)
        self.admin.prune_pending()
        if self.control.ready:
            self.groups.sync(now_ms)

    def drain_control(self, now_ms: int) -> None:
        """Send what Raft queued for peers; apply what committed."""
        for dst, fields, payload in self.control.take_outbox():
            self.peers.send(dst, RaftMessage(fields, payload))
        if self.control.apply_committed():
            self.metadata_changed(now_ms)
            self.purgatory.check(META_KEY, now_ms)

    def on_raft_message(self, message: dict, payload: bytes | None, now_ms: int) -> None:
        self.control.on_raft_message(message, payload, now_ms)
        self.drain_control(now_ms)

    def on_heartbeat(self, beat: dict, now_ms: int) -> None:
        """A gossip heartbeat from a peer."""
        self.control.on_heartbeat(beat, now_ms)
        self.drain_control(now_ms)

    def heartbeat(self) -> dict:
        return self.control.heartbeat()

    # -- timers ------------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        """Timers: Raft and controller duties, replication, parked requests, housekeeping,
        flush policy, checkpoints."""
        self.partitions.new_turn()
        applied = self.control.step(now_ms)
        self.drain_control(now_ms)
        if applied:
            self.metadata_changed(now_ms)
        elif self.partitions.opening or self.partitions.open_failed:
            self.partitions.open_pending(now_ms)
        self.purgatory.check(META_KEY, now_ms)  # also: controller changes fail pending admin requests
        self.replication.step(now_ms)
        if self.control.ready:
            self.groups.sync(now_ms)
            self.groups.expire_members(now_ms)
            self.housekeeping.step(now_ms)
        self.partitions.purge_deleted()
        self.purgatory.expire(now_ms)
        if now_ms - self._last_checkpoint_ms >= self.config.setting("flush_check_ms"):
            self._last_checkpoint_ms = now_ms
            self.logs.maybe_flush(now_ms)
            self.logs.checkpoint()

    def next_deadline(self, now_ms: int) -> int:
        """When :meth:`tick` next has work (absolute ms)."""
        due = min(self._last_checkpoint_ms + self.config.setting("flush_check_ms"), self.control.next_deadline(),
                  self.housekeeping.next_deadline(now_ms))
        for deadline in (self.purgatory.next_deadline(), self.replication.next_deadline(), self.partitions.next_open_ms(now_ms)):
            if deadline is not None:
                due = min(due, deadline)
        if self.logs.trash:
            due = min(due, now_ms + 10)
        return due

    def close(self, now_ms: int) -> None:
        """Answer parked requests, flush every log and write checkpoints."""
        try:
            self.purgatory.cancel_all(now_ms)
        finally:
            try:
                self.logs.close()
            finally:
                self.control.close()
        log.info("broker %s closed cleanly", self.broker_id)
