"""Consumer-group membership on the client side (docs/protocol.md §4.11-4.16).

The network thread heartbeats to the group's coordinator (:meth:`GroupMembership.run`)
with the subscription and the partitions the consumer owns; the coordinator answers
with the member's assignment.  Changes are *applied in the user's thread*, inside
``poll()`` (:meth:`GroupMembership.apply`), so the callbacks run where the user's code
runs and a partition is released -- callback called, position committed, fetching
stopped -- before the next heartbeat reports it gone:

- partitions taken away: ``on_revoked(partitions)``, auto-commit of their positions,
  then they are dropped;
- partitions given: their committed offsets are looked up (or ``auto_offset_reset``
  applies), then ``on_assigned(partitions)``;
- membership lost (fenced, or removed after ``max_poll_interval_ms`` without a
  ``poll()``): ``on_lost(partitions)``, everything dropped without a commit, and the
  consumer joins again.

A member that does not call ``poll()`` for ``max_poll_interval_ms`` leaves the group
by itself, as in Kafka, so its partitions move to members that make progress.

No sockets here: requests go through ``net`` (``send``/``request``/``wakeup``), time
comes from ``now`` or the injected ``clock``, so tests drive it with fakes.
"""

from __future__ import annotations

import logging
import threading
import time

from zbroker.errors import ErrorCode, ZBrokerError, error_from

log = logging.getLogger(__name__)

_REFIND = {ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_NOT_AVAILABLE, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS}
_FENCED = {ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.FENCED_MEMBER_EPOCH}


class GroupMembership:
    """Heartbeats (network thread) and assignment changes (user thread) of one consumer.

    Args:
        net: the transport (``send``, ``request``, ``wakeup``).
        meta: the metadata manager (``candidates()``: brokers to ask for the coordinator).
        fetcher: the consumer's fetcher (``set_assignment``, ``seek``, ``cond``).
        offsets: the consumer's :class:`~clients.consumer.offsets.ConsumerOffsets`
            (``enable_auto_commit``, ``commit_positions``, ``fetch_committed``).
        callback: ``callback(name, partitions)`` runs the user's ``on_assigned``,
            ``on_revoked`` or ``on_lost``.
        clock: ``time.monotonic`` or a fake.
    """

    def __init__(self, net, meta, fetcher, offsets, callback, group: str, instance_id: str | None, assignor: str,
                 session_timeout_ms: int, max_poll_interval_ms: int, client_id: str | None, clock=time.monotonic) -> None:
        self.net = net
        self.meta = meta
        self.fetcher = fetcher
        self.offsets = offsets
        self.callback = callback
        self.clock = clock
        self.group = group
        self.instance_id = instance_id
        self.assignor = assignor
        self.session_timeout_ms = session_timeout_ms
        # A heartbeat (or a coordinator lookup) to a broker that died is never answered: ZeroMQ
        # does not tell us the peer is gone. Waiting longer than a third of the session for it
        # would let the new coordinator expire us before we even look for it.
        self.rpc_timeout_ms = max(200, min(5000, session_timeout_ms // 3))
        self.max_poll_interval = max_poll_interval_ms / 1000.0
        self.client_id = client_id or ""
        self.lock = threading.Lock()
        self.topics: list[str] | None = None  # None: not subscribed (assign() mode)
        self.coordinator: str | None = None
        self.member_id = ""
        self.epoch = 0
        self.owned: set[tuple[str, int]] = set()
        self.target: set[tuple[str, int]] | None = None
        self.lost = False
        self.left = False
        self.inflight = False
        self.finding = False
        self.find_tries = 0
        self.next_beat = 0.0
        self.interval = 1.0
        self.last_poll = clock()
        self.last_ok = clock()  # last heartbeat the coordinator answered
        self.closed = False

    # -- network thread -------------------------------------------------------------

    def run(self, now: float):
        if self.closed or self.topics is None:
            return None
        if self.coordinator is None:
            self._find(now)
            return now + 0.2
        if self.lost or self.target is not None:
            return now + 0.5  # poll() has changes to apply first
        if self.owned and now - self.last_ok > self.session_timeout_ms / 1000.0:
            # no coordinator has confirmed us for a whole session: it may have removed us and
            # given our partitions away; stop reading them (on_lost) rather than risk two owners
            log.warning("group %s: no heartbeat answered for %.1f s: giving up the partitions", self.group, now - self.last_ok)
            with self.lock:
                self.lost = True
            self._wake_poll()
            return now + 0.5
        if self.epoch > 0 and now - self.last_poll > self.max_poll_interval and not self.left:
            log.warning("group %s: no poll() for %.0f s (max_poll_interval_ms): leaving the group", self.group, now - self.last_poll)
            self.left = True
            self._send_heartbeat(now, leave=True)
            return now + 0.5
        if self.left:
            return now + 0.5  # poll() rejoins
        if not self.inflight and now >= self.next_beat:
            self._send_heartbeat(now)
        return max(self.next_beat, now + 0.05)

    def _find(self, now: float) -> None:
        if self.finding:
            return
        candidates = self.meta.candidates()
        if not candidates:
            return
        self.finding = True
        self.find_tries += 1
        address = candidates[self.find_tries % len(candidates)]
        self.net.send(address, "find_coordinator", {"group": self.group}, (), self._on_find, timeout_ms=self.rpc_timeout_ms)

    def _on_find(self, header, _frames, exc) -> None:
        self.finding = False
        if exc is None and not header.get("error"):
            self.coordinator = f"{header['host']}:{header['port']}"
            self.next_beat = 0.0
            log.info("group %s: coordinator is broker %s at %s", self.group, header.get("coordinator"), self.coordinator)
        self.net.wakeup()

    def _fields(self, leave: bool = False) -> dict:
        epoch = self.epoch
        if leave:
            epoch = -2 if self.instance_id else -1
        return {
            "group": self.group, "member_id": self.member_id, "member_epoch": epoch, "instance_id": self.instance_id,
            "client_id": self.client_id, "topics": list(self.topics or ()), "owned": sorted(map(list, self.owned)),
            "assignor": self.assignor, "rebalance_timeout_ms": int(self.max_poll_interval * 1000),
            "session_timeout_ms": self.session_timeout_ms,
        }

    def _send_heartbeat(self, now: float, leave: bool = False) -> None:
        self.inflight = True
        self.next_beat = now + self.interval
        self.net.send(self.coordinator, "group_heartbeat", self._fields(leave), (), self._on_heartbeat,
                      timeout_ms=self.rpc_timeout_ms)

    def _on_heartbeat(self, header, _frames, exc) -> None:
        self.inflight = False
        now = self.clock()
        if exc is not None:
            self.coordinator = None  # timed out or broke: find it again
        elif header.get("error"):
            code = header["error"]
            if code in _REFIND:
                self.coordinator = None
            elif code in _FENCED:
                log.warning("group %s: membership lost: %s", self.group, header.get("error_message"))
                with self.lock:
                    self.lost = True
                self._wake_poll()
            else:
                log.warning("group %s: heartbeat error %s: %s", self.group, code, header.get("error_message"))
                self.next_beat = now + 1.0
        elif header.get("member_epoch", 0) >= 0:
            self.last_ok = now
            with self.lock:
                self.member_id = header["member_id"]
                self.epoch = header["member_epoch"]
                self.interval = max(0.05, header.get("heartbeat_interval_ms", 1000) / 1000.0)
                self.next_beat = now + self.interval
                assignment = {tuple(tp) for tp in header.get("assignment") or ()}
                if assignment != self.owned and not self.left:
                    self.target = assignment
            if self.target is not None:
                self._wake_poll()
        self.net.wakeup()

    def _wake_poll(self) -> None:
        with self.fetcher.cond:
            self.fetcher.cond.notify_all()

    # -- user thread --------------------------------------------------------------------

    def pending(self) -> bool:
        return self.lost or self.target is not None or self.left

    def apply(self) -> None:
        """Apply membership changes (inside poll(): callbacks run in the user's thread)."""
        self.last_poll = now = self.clock()
        fetcher = self.fetcher
        if self.lost or self.left:
            with self.lock:
                gone, self.owned, self.target = sorted(self.owned), set(), None
                self.lost = self.left = False
                self.epoch = 0  # join again (same member id where the coordinator still knows it)
                self.last_ok = now
            fetcher.set_assignment([])
            if gone:
                self.callback("on_lost", gone)
            self._beat_now()
            return
        with self.lock:
            target = self.target
        if target is None:
            return
        revoked = sorted(self.owned - target)
        added = sorted(target - self.owned)
        if revoked:
            self.callback("on_revoked", revoked)
            if self.offsets.enable_auto_commit:
                self.offsets.commit_positions(revoked, quiet=True)
            keep = [tp for tp in self.owned if tp in target]
            fetcher.set_assignment(keep)
        if added:
            fetcher.set_assignment(sorted((self.owned & target) | set(added)))
            committed = self.offsets.fetch_committed(added)
            for tp in added:
                offset = committed.get(tp, -1)
                if offset is not None and offset >= 0:
                    fetcher.seek(tp, offset)
            self.callback("on_assigned", added)
        with self.lock:
            self.owned = set(target)
            if self.target is target:
                self.target = None
        if revoked or added:
            log.info("group %s: epoch %s owns %d partitions (+%d -%d)", self.group, self.epoch, len(self.owned), len(added), len(revoked))
        self._beat_now()

    def _beat_now(self) -> None:
        self.next_beat = 0.0
        self.net.wakeup()

    def commit_fields(self) -> tuple[str, int]:
        """(member_id, member_epoch) for an offset commit; ("", -1) outside a group membership."""
        if self.topics is None or self.epoch <= 0:
            return "", -1
        return self.member_id, self.epoch

    def leave(self, timeout: float = 2.0) -> None:
        """Leave the group now (a static member keeps its partitions for its session)."""
        self.closed = True
        if self.coordinator is None or self.epoch <= 0 or self.topics is None:
            return
        try:
            self.net.request(self.coordinator, "group_heartbeat", self._fields(leave=True), timeout_ms=int(timeout * 1000))
        except ZBrokerError as exc:
            log.info("group %s: leave not acknowledged: %s", self.group, exc)


    def call(self, kind: str, fields: dict, timeout_s: float) -> dict:
        """A request to the group's coordinator (user thread), finding it again on
        NOT_COORDINATOR and the like; returns the response header.

        Raises:
            ZBrokerError: the coordinator's error, or COORDINATOR_NOT_AVAILABLE after ``timeout_s``.
        """
        deadline = self.clock() + timeout_s
        last: ZBrokerError | None = None
        while self.clock() < deadline:
            address = self.coordinator
            if address is None:
                self._find(self.clock())
                time.sleep(0.05)
                continue
            try:
                header, _ = self.net.request(address, kind, fields, timeout_ms=int(max(0.1, deadline - self.clock()) * 1000))
                return header
            except ZBrokerError as exc:
                last = exc
                if exc.code in _REFIND or exc.code == ErrorCode.REQUEST_TIMED_OUT or getattr(exc, "invalid_metadata", False):
                    self.coordinator = None
                    time.sleep(0.05)
                    continue
                raise
        raise last or error_from(ErrorCode.COORDINATOR_NOT_AVAILABLE, f"no coordinator for group {self.group!r}")
