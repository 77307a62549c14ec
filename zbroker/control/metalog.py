"""The cluster metadata log on disk: ``__cluster_metadata-0`` and the election state.

Layout under ``<data_dir>/``::

    __cluster_metadata-0/        a storage.Log; every Raft entry is a record whose value is
                                 a msgpack map (zbroker.control.metadata records) or empty (the
                                 leader-change marker); batch leader_epoch = Raft epoch
    meta/quorum-state            JSON {"epoch", "voted_for", "high_watermark"}, atomic
    meta/<offset>-<epoch>.snapshot   the image as of offset (every record below it applied),
                                 epoch = Raft epoch of record offset-1; written atomically.
                                 The log's segments wholly below the latest one are deleted.

A snapshot file is ``ZBSN`` + u32 CRC-32C (big-endian) of the body + the body, a msgpack
map ``{"offset", "epoch", "records": [bytes]}``: each record a msgpack metadata record
(zbroker.control.metadata) that rebuilds the image when applied to an empty one.  Followers that
fall behind the controller's log start download these bytes as they are (raft.py).

:class:`MetadataLog` adapts a storage.Log to the :class:`zbroker.control.raft.RaftLog`
interface: a leader's proposal becomes one native batch (so it is appended, and
replicated, atomically), a follower appends the leader's batches unchanged
(``assign_offsets=False``), and the log's leader-epoch cache answers "where did
epoch E end" for KIP-595 divergence checks.  Appends are fsynced: a voter's fetch
offset counts as its vote that it holds the records.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from pathlib import Path
from typing import Callable, Iterator

import crc32c
import msgpack

from storage import FileHandleCache, Log, LogConfig, build_native_batch, decode_native_records, iter_batches, write_atomic
from storage.batch import parse_header
from zbroker.control.raft import ElectionState

log = logging.getLogger(__name__)

METADATA_TOPIC = "__cluster_metadata"
METADATA_DIR = f"{METADATA_TOPIC}-0"
SNAPSHOT_MAGIC = b"ZBSN"
_SNAPSHOT_FILE = re.compile(r"^(\d{20})-(\d{10})\.snapshot$")
SNAPSHOTS_KEPT = 2


class SnapshotError(ValueError):
    """A snapshot's bytes are not a valid snapshot."""


def encode_snapshot(offset: int, epoch: int, records: list[bytes]) -> bytes:
    body = msgpack.packb({"offset": offset, "epoch": epoch, "records": records}, use_bin_type=True)
    return SNAPSHOT_MAGIC + struct.pack(">I", crc32c.crc32c(body)) + body


def decode_snapshot(data: bytes) -> tuple[int, int, list[bytes]]:
    """``(offset, epoch, records)`` of a snapshot's bytes.

    Raises:
        SnapshotError: Bad magic, CRC or structure.
    """
    if len(data) < 8 or data[:4] != SNAPSHOT_MAGIC:
        raise SnapshotError("not a metadata snapshot (bad magic)")
    (crc,) = struct.unpack(">I", data[4:8])
    body = data[8:]
    if crc32c.crc32c(body) != crc:
        raise SnapshotError("metadata snapshot CRC mismatch")
    try:
        doc = msgpack.unpackb(body, raw=False)
        offset, epoch, records = doc["offset"], doc["epoch"], doc["records"]
    except Exception as exc:
        raise SnapshotError(f"malformed metadata snapshot: {exc}") from None
    if not (isinstance(offset, int) and isinstance(epoch, int) and isinstance(records, list)
            and all(isinstance(r, bytes) for r in records)):
        raise SnapshotError("malformed metadata snapshot: wrong field types")
    return offset, epoch, records


class MetadataLog:
    """RaftLog over a storage.Log."""

    def __init__(self, data_dir: str | Path, clock: Callable[[], int], handles: FileHandleCache | None = None,
                 segment_bytes: int = 8 << 20) -> None:
        self._clock = clock
        config = LogConfig(segment_bytes=segment_bytes, fsync="always", max_message_bytes=16 << 20)
        self.log = Log(Path(data_dir) / METADATA_DIR, config, clock(), handles=handles)
        self.snapshot_dir = Path(data_dir) / "meta"
        self._snapshot: tuple[int, int] | None = None
        self._snapshot_bytes = b""
        self._snapshot_records: list[bytes] = []  # decoded once, when the snapshot is adopted
        self._load_snapshot()

    # -- snapshots ---------------------------------------------------------------

    def _snapshot_files(self) -> list[tuple[int, int, Path]]:
        """``(offset, epoch, path)`` of every snapshot file, newest first."""
        if not self.snapshot_dir.is_dir():
            return []
        found = []
        for entry in os.scandir(self.snapshot_dir):
            m = _SNAPSHOT_FILE.match(entry.name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)), Path(entry.path)))
        return sorted(found, reverse=True)

    def _load_snapshot(self) -> None:
        """Adopt the newest valid snapshot and make the log agree with it."""
        for offset, epoch, path in self._snapshot_files():
            try:
                data = path.read_bytes()
                got = decode_snapshot(data)
                if got[:2] != (offset, epoch):
                    raise SnapshotError(f"holds offset {got[0]} epoch {got[1]}")
            except (OSError, SnapshotError) as exc:
                log.warning("ignoring metadata snapshot %s: %s", path, exc)
                continue
            self._snapshot, self._snapshot_bytes, self._snapshot_records = (offset, epoch), data, got[2]
            break
        start, end = self.log.log_start_offset, self.log.log_end_offset
        if self._snapshot is None:
            if start > 0:  # the prefix is gone and nothing replaces it: fetch it all again
                log.warning("metadata log starts at %d but no valid snapshot covers it: discarding the local copy", start)
                self.log.truncate_fully_and_start_at(0)
            return
        offset, epoch = self._snapshot
        if end < offset or start > offset or (start < offset and self.epoch_at(offset - 1) != epoch):
            # the log does not continue the snapshot (lost segments, a crash while installing a
            # downloaded one, a log that diverged below it): it restarts at the snapshot
            log.warning("metadata log [%d, %d) does not continue snapshot %d: restarting it there", start, end, offset)
            self.log.truncate_fully_and_start_at(offset)

    def snapshot_id(self) -> tuple[int, int] | None:
        return self._snapshot

    def snapshot_size(self) -> int:
        return len(self._snapshot_bytes)

    def read_snapshot(self, position: int, max_bytes: int) -> bytes:
        return self._snapshot_bytes[position : position + max_bytes]

    def snapshot_records(self) -> list[dict]:
        """The latest snapshot's records, decoded (empty without a snapshot)."""
        if self._snapshot is None:
            return []
        return [msgpack.unpackb(r, raw=False) for r in self._snapshot_records]

    def _adopt(self, snapshot_id: tuple[int, int], data: bytes, records: list[bytes]) -> None:
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.snapshot_dir / f"{snapshot_id[0]:020d}-{snapshot_id[1]:010d}.snapshot", data)
        self._snapshot, self._snapshot_bytes, self._snapshot_records = snapshot_id, data, records
        for _offset, _epoch, path in self._snapshot_files()[SNAPSHOTS_KEPT:]:
            path.unlink(missing_ok=True)

    def write_snapshot(self, offset: int, records: list[bytes]) -> tuple[int, int]:
        """Snapshot the image as of ``offset`` (committed, applied; ``records`` rebuild it),
        then delete the log's segments wholly below it.  Returns the snapshot id."""
        snapshot_id = (offset, self.epoch_at(offset - 1))
        self._adopt(snapshot_id, encode_snapshot(*snapshot_id, records), records)
        self.log.delete_segments_before(offset)
        return snapshot_id

    def install_snapshot(self, snapshot_id: tuple[int, int], chunks: list) -> None:
        """A snapshot downloaded from the controller: keep it, restart the log empty at its
        offset (everything below is in the snapshot, everything above comes next).

        Raises:
            SnapshotError: The bytes are not the snapshot they claim to be.
        """
        data = b"".join(bytes(c) for c in chunks)
        offset, epoch, records = decode_snapshot(data)
        if (offset, epoch) != tuple(snapshot_id):
            raise SnapshotError(f"downloaded snapshot holds offset {offset} epoch {epoch}, not {tuple(snapshot_id)}")
        # the log first: a crash in between leaves an empty log above an older snapshot (or
        # none), which loading repairs by fetching again -- never a stale log beside this one
        self.log.truncate_fully_and_start_at(offset)
        self._adopt((offset, epoch), data, records)

    def epoch_at(self, offset: int) -> int:
        """Raft epoch of the record at ``offset`` (held in the log, or the snapshot's last)."""
        if offset < self.log.log_start_offset:
            if self._snapshot is not None and offset == self._snapshot[0] - 1:
                return self._snapshot[1]
            raise ValueError(f"offset {offset} is below the metadata log start {self.log.log_start_offset}")
        data = self.log.read(offset, 1).data
        if not data:
            raise ValueError(f"offset {offset} is not in the metadata log")
        return parse_header(data).leader_epoch

    # -- RaftLog ------------------------------------------------------------------

    def start_offset(self) -> int:
        return self.log.log_start_offset

    def end_offset(self) -> int:
        return self.log.log_end_offset

    def last_epoch(self) -> int:
        epoch = self.log.leader_epoch_cache.latest_epoch
        if epoch is None and self._snapshot is not None and self._snapshot[0] == self.log.log_end_offset:
            return self._snapshot[1]  # the log restarted empty at the snapshot
        return epoch if epoch is not None and epoch >= 0 else 0

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        cache = self.log.leader_epoch_cache
        if self.log.log_start_offset > 0:
            entries = cache.entries
            if not entries or epoch < entries[0][0]:
                return -1, -1  # older than what is left of the log: unknown, not "ended at the start"
        return cache.end_offset_for(epoch, self.log.log_end_offset)

    def append_as_leader(self, records: list[bytes], epoch: int) -> int:
        now = self._clock()
        batch = build_native_batch([(now, None, r, None) for r in records])
        return self.log.append(batch, now, leader_epoch=epoch).base_offset

    def read(self, offset: int, max_bytes: int) -> bytes:
        return self.log.read(offset, max_bytes).data

    def append_chunk(self, chunk: bytes) -> None:
        now = self._clock()
        view = memoryview(chunk)
        for pos, header in iter_batches(chunk):
            if header.base_offset < self.log.log_end_offset:
                continue  # already have it (cannot happen after the offset check; harmless)
            self.log.append(view[pos : pos + header.size], now, assign_offsets=False)

    def truncate_to(self, offset: int) -> None:
        self.log.truncate_to(offset)

    def records(self, start: int, end: int) -> Iterator[tuple[int, dict | None]]:
        """Decoded records with offsets in [start, end); None for the leader-change marker."""
        # Our batches are uncompressed, so none decodes to more than max_message_bytes.
        offset, limit = start, self.log.config.max_message_bytes
        while offset < end:
            data = self.log.read(offset, 1 << 20, max_offset=end).data
            if not data:
                return
            for pos, header in iter_batches(data):
                for rec_offset, _ts, _key, value, _headers in decode_native_records(data[pos : pos + header.size], limit):
                    if start <= rec_offset < end:
                        yield rec_offset, (msgpack.unpackb(value, raw=False) if value else None)
                offset = header.next_offset

    def close(self) -> None:
        self.log.close()


class QuorumStateFile:
    """Persisted election state (and the last known committed offset)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / "meta" / "quorum-state"

    def load(self) -> tuple[ElectionState, int]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return ElectionState(), 0
        except (ValueError, OSError) as exc:
            raise ValueError(f"{self.path}: corrupt quorum state: {exc}") from None
        return ElectionState(int(doc["epoch"]), doc.get("voted_for")), int(doc.get("high_watermark", 0))

    def save(self, state: ElectionState, high_watermark: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"epoch": state.epoch, "voted_for": state.voted_for, "high_watermark": high_watermark}
        write_atomic(self.path, json.dumps(doc).encode())
