"""The cluster metadata log on disk: ``__cluster_metadata-0`` and the election state.

Layout under ``<data_dir>/``::

    __cluster_metadata-0/        a storage.Log; every Raft entry is a record whose value is
                                 a msgpack map (zbroker.metadata records) or empty (the
                                 leader-change marker); batch leader_epoch = Raft epoch
    meta/quorum-state            JSON {"epoch", "voted_for", "high_watermark"}, atomic

:class:`MetadataLog` adapts a storage.Log to the :class:`zbroker.raft.RaftLog`
interface: a leader's proposal becomes one native batch (so it is appended, and
replicated, atomically), a follower appends the leader's batches unchanged
(``assign_offsets=False``), and the log's leader-epoch cache answers "where did
epoch E end" for KIP-595 divergence checks.  Appends are fsynced: a voter's fetch
offset counts as its vote that it holds the records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import msgpack

from storage import FileHandleCache, Log, LogConfig, build_native_batch, decode_native_records, iter_batches, write_atomic
from zbroker.raft import ElectionState

METADATA_TOPIC = "__cluster_metadata"
METADATA_DIR = f"{METADATA_TOPIC}-0"


class MetadataLog:
    """RaftLog over a storage.Log."""

    def __init__(self, data_dir: str | Path, clock: Callable[[], int], handles: FileHandleCache | None = None) -> None:
        self._clock = clock
        config = LogConfig(segment_bytes=64 << 20, fsync="always", max_message_bytes=16 << 20)
        self.log = Log(Path(data_dir) / METADATA_DIR, config, clock(), handles=handles)

    def end_offset(self) -> int:
        return self.log.log_end_offset

    def last_epoch(self) -> int:
        epoch = self.log.leader_epoch_cache.latest_epoch
        return epoch if epoch is not None and epoch >= 0 else 0

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        return self.log.leader_epoch_cache.end_offset_for(epoch, self.log.log_end_offset)

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
        offset = start
        while offset < end:
            data = self.log.read(offset, 1 << 20, max_offset=end).data
            if not data:
                return
            for pos, header in iter_batches(data):
                for rec_offset, _ts, _key, value, _headers in decode_native_records(data[pos : pos + header.size]):
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
