"""The broker's partition logs under one data directory.

On-disk layout (storage/ draws the inside of a partition directory)::

    <data_dir>/
        __cluster_metadata-0/                the replicated metadata log (zbroker/metalog.py)
        meta/quorum-state, meta/incarnation  election state, restart counter
        recovery-point-offset-checkpoint     per partition: offset up to which data is fsynced
        replication-offset-checkpoint        per partition: high watermark
        cleaner-offset-checkpoint            per compacted partition: where its last cleaning
                                             pass ended (so a restart does not redo it)
        <topic>-<partition>/                 one partition log (storage.Log), plus
                                             partition.metadata: the topic id it belongs to
        <topic>-<partition>.<uuid>-delete/   a deleted partition's log, being removed in the
                                             background (as Kafka names them)

Recovery after an unclean stop: each log is opened with its checkpointed
recovery point, so only segments holding data at or after it are scanned
(``storage.recovery``).  On a clean stop every log is flushed and both
checkpoints are written with the final offsets, so the next start CRC-checks
nothing (reads check what they return).
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections import deque
from pathlib import Path
from typing import Iterator

from storage import FileHandleCache, Log, LogConfig, OffsetCheckpoint, write_atomic
from storage.log import PARTITION_METADATA_FILE

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]

RECOVERY_CHECKPOINT = "recovery-point-offset-checkpoint"
HW_CHECKPOINT = "replication-offset-checkpoint"
CLEANER_CHECKPOINT = "cleaner-offset-checkpoint"
DELETED_SUFFIX = "-delete"


def log_config(settings: dict) -> LogConfig:
    """Storage settings from a topic's effective settings."""
    return LogConfig(
        segment_bytes=settings["segment_bytes"],
        segment_ms=settings["segment_ms"],
        index_interval_bytes=settings["index_interval_bytes"],
        flush_messages=settings["flush_messages"],
        flush_ms=settings["flush_ms"],
        fsync=settings["fsync"],
        max_message_bytes=settings["max_message_bytes"],
        allow_offset_gaps="compact" in settings["cleanup_policy"],
    )


def partition_dir_name(tp: TopicPartition) -> str:
    return f"{tp[0]}-{tp[1]}"


class LogManager:
    """Opens, creates, flushes, checkpoints and deletes partition logs."""

    def __init__(self, data_dir: str | Path, max_open_files: int = 1024) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.handles = FileHandleCache(max_open_files)
        self.logs: dict[TopicPartition, Log] = {}
        self._recovery = OffsetCheckpoint(self.data_dir / RECOVERY_CHECKPOINT)
        self._hw = OffsetCheckpoint(self.data_dir / HW_CHECKPOINT)
        self._recovery_points = self._read_checkpoint(self._recovery)
        self.high_watermarks = self._read_checkpoint(self._hw)
        self._cleaner = OffsetCheckpoint(self.data_dir / CLEANER_CHECKPOINT)
        self.cleaned_to = self._read_checkpoint(self._cleaner)  # written when it changes
        self._cleaned_to_saved = dict(self.cleaned_to)
        self.trash: deque[Path] = deque(p for p in self.data_dir.iterdir()
                                        if p.is_dir() and p.name.endswith(DELETED_SUFFIX))

    @staticmethod
    def _read_checkpoint(cp: OffsetCheckpoint) -> dict[TopicPartition, int]:
        try:
            return cp.read()
        except FileNotFoundError:
            return {}
        except Exception as exc:  # a damaged checkpoint only costs a longer recovery
            log.warning("ignoring unreadable checkpoint: %s", exc)
            return {}

    def open(self, tp: TopicPartition, config: LogConfig, now_ms: int, topic_id: str = "") -> Log:
        """Open (recovering if needed) or create the log of a partition.

        ``topic_id`` names the topic's incarnation (``partition.metadata`` in the directory):
        a directory left by an earlier topic of the same name -- deleted and created again
        while this broker was away -- is emptied first, never served as the new topic.
        """
        existing = self.logs.get(tp)
        if existing is not None:
            return existing
        path = self.data_dir / partition_dir_name(tp)
        marker = path / PARTITION_METADATA_FILE
        if topic_id and marker.exists() and marker.read_text().strip() != f"topic_id: {topic_id}":
            log.info("partition dir %s belongs to an earlier topic of that name: removing it", path)
            self.delete(tp)  # moved aside at once, removed in the background
            if path.exists():  # neither moved nor removed: never serve the old topic's data
                raise OSError(f"cannot remove {path}, left by an earlier topic of that name")
        recovery_point = self._recovery_points.get(tp)  # None: scan everything
        lg = Log(path, config, now_ms, handles=self.handles, recovery_point=recovery_point)
        if topic_id and not marker.exists():
            write_atomic(marker, f"topic_id: {topic_id}\n".encode())
        self.logs[tp] = lg
        return lg

    def get(self, tp: TopicPartition) -> Log | None:
        return self.logs.get(tp)

    def delete(self, tp: TopicPartition) -> None:
        """Close a partition's log and rename its directory to ``...-delete``: one rename,
        whatever the log's size. :meth:`purge_deleted` removes the files later."""
        lg = self.logs.pop(tp, None)
        self._recovery_points.pop(tp, None)
        self.high_watermarks.pop(tp, None)
        self.cleaned_to.pop(tp, None)
        suffix = f"-{tp[1]}.{uuid.uuid4().hex}{DELETED_SUFFIX}"
        trash = self.data_dir / (tp[0][: 255 - len(suffix)] + suffix)  # a file name holds 255 bytes
        path = self.data_dir / partition_dir_name(tp)
        try:
            if lg is not None:
                lg.delete(trash)
            else:
                path.replace(trash)
        except FileNotFoundError:
            return
        except OSError as exc:  # cannot rename: remove it now instead
            log.warning("cannot move %s aside (%s): removing it now", path, exc)
            shutil.rmtree(path, ignore_errors=True)
            return
        self.trash.append(trash)

    def purge_deleted(self, max_dirs: int) -> int:
        """Remove up to ``max_dirs`` directories of deleted partitions. Returns how many."""
        n = 0
        while self.trash and n < max_dirs:
            shutil.rmtree(self.trash.popleft(), ignore_errors=True)
            n += 1
        return n

    def stray_dirs(self, known: set[TopicPartition]) -> Iterator[Path]:
        """Partition-looking directories that belong to no known partition."""
        for child in self.data_dir.iterdir():
            if not child.is_dir() or child.name == "meta" or child.name.startswith("__cluster_metadata"):
                continue
            topic, _, part = child.name.rpartition("-")
            if topic and part.isdigit() and (topic, int(part)) not in known:
                yield child

    def maybe_flush(self, now_ms: int) -> None:
        for lg in self.logs.values():
            lg.maybe_flush(now_ms)

    def checkpoint(self) -> None:
        """Write the recovery-point and high-watermark checkpoints."""
        self._recovery.write({tp: lg.recovery_point for tp, lg in self.logs.items()})
        self._hw.write({tp: hw for tp, hw in self.high_watermarks.items() if tp in self.logs})
        cleaned = {tp: off for tp, off in self.cleaned_to.items() if tp in self.logs}
        if cleaned != self._cleaned_to_saved:
            self._cleaner.write(cleaned)
            self._cleaned_to_saved = cleaned

    def close(self) -> None:
        """Flush every log, write the checkpoints, close every file."""
        for lg in self.logs.values():
            lg.flush()
        self.checkpoint()
        for lg in self.logs.values():
            lg.close()
        self.logs.clear()
