"""zbroker's log engine: record batches, segments, indexes, partition logs, checkpoints.

It also holds the one record-batch codec (batch, records, compression) that the broker,
tools and clients share.

Pure file I/O: never imports zmq or zbroker, never reads the clock (time comes in as
``now_ms``).
"""

from storage.batch import (
    COMPRESSION_GZIP, COMPRESSION_LZ4, COMPRESSION_MASK, COMPRESSION_NONE, COMPRESSION_SNAPPY,
    COMPRESSION_ZSTD, CONTROL_BIT, HEADER_SIZE, LOG_OVERHEAD, MAGIC_KAFKA, MAGIC_NATIVE,
    TIMESTAMP_TYPE_BIT, TRANSACTIONAL_BIT, BatchHeader, build_kafka_batch, build_native_batch,
    decode_native_records, encode_native_batch, iter_batches, parse_header,
    patch_batch, set_base_offset, validate_batch, validate_produced_batch, walk,
)
from storage.compression import COMPRESSION_BY_NAME
from storage.decode import decode_batches
from storage.checkpoint import OffsetCheckpoint, write_atomic
from storage.errors import (
    CheckpointError, CorruptBatchError, DamagedRangeError, InvalidRecordError, OffsetMismatch, OffsetOutOfRange,
    StorageError, UnsupportedCodecError,
)
from storage.handles import FileHandleCache
from storage.leader_epoch import LeaderEpochCache
from storage.log import AppendInfo, Log, LogConfig, ReadResult

__all__ = [
    "Log", "LogConfig", "AppendInfo", "ReadResult", "FileHandleCache", "OffsetCheckpoint",
    "write_atomic", "LeaderEpochCache", "StorageError", "OffsetOutOfRange", "OffsetMismatch",
    "CorruptBatchError", "CheckpointError", "DamagedRangeError", "InvalidRecordError", "UnsupportedCodecError",
    "validate_produced_batch",
    "HEADER_SIZE", "LOG_OVERHEAD", "MAGIC_KAFKA", "MAGIC_NATIVE", "COMPRESSION_NONE",
    "COMPRESSION_GZIP", "COMPRESSION_SNAPPY", "COMPRESSION_LZ4", "COMPRESSION_ZSTD",
    "COMPRESSION_MASK", "TIMESTAMP_TYPE_BIT", "TRANSACTIONAL_BIT", "CONTROL_BIT",
    "BatchHeader", "parse_header", "validate_batch", "patch_batch", "build_native_batch",
    "decode_native_records", "iter_batches", "build_kafka_batch", "encode_native_batch",
    "decode_batches", "walk", "set_base_offset", "COMPRESSION_BY_NAME",
]
