"""One corpus for the fuzzers of both doors: valid requests, and the mutations made of them.

Two drivers take their choices from it through a :class:`Chooser`:

- the unit fuzzers (``tests/unit/test_fuzz_*.py``) draw from hypothesis (:class:`DrawChooser`):
  a bounded, derandomized budget in CI, and a failure shrinks;
- ``scripts/fuzz.py`` draws from a seeded :class:`random.Random` (:class:`RandomChooser`):
  a million frames against a real broker process.

What is here:

- native requests: :func:`native_message` (a valid request of ``tests/unit/test_fuzz_router.py``'s
  table, which has every type, mutated: wrong types, huge values, missing fields, extra
  payload frames);
- Kafka requests: :data:`KAFKA_SEEDS` (field values of every served API, for every version,
  built into kio's dataclasses by :func:`kafka_seed`), :func:`encode_request`,
  :func:`mutate_entity` (fields set to their type's extremes, lists emptied or repeated),
  :func:`mutate_bytes` (flips, overwrites with interesting int32s, inserts, cuts),
  :func:`size_prefixed` (a size prefix that is right, or lies), :func:`kafka_message`
  (any of those), :func:`sasl_messages` (the SASL exchange) and :func:`split` (one stream
  cut into reads);
- record batches: :data:`BATCHES` (every magic and codec) and :func:`mutate_batch` (lying
  length, count and offset fields, codec bits, payload damage, a CRC that matches or not).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import io
import os
import struct
import typing
import uuid
from typing import Any, Protocol, Sequence

import cramjam
import lz4.frame
import msgpack
import zstandard
from kio.serial import entity_writer

from storage.batch import (
    COMPRESSION_GZIP, COMPRESSION_LZ4, COMPRESSION_NONE, COMPRESSION_SNAPPY, COMPRESSION_ZSTD, HEADER_SIZE,
    build_kafka_batch, build_native_batch,
)
from storage.compression import compress
from tests.unit.batchforge import forge
from zbroker import protocol as P
from zbroker.frontends.kafka.codec import build, request_schema

# -- choices ------------------------------------------------------------------------------


class Chooser(Protocol):
    """Where a fuzzer's choices come from."""

    def integer(self, low: int, high: int) -> int:
        """An integer of ``[low, high]``."""

    def choice(self, options: Sequence) -> Any:
        """One of ``options``."""

    def binary(self, max_size: int) -> bytes:
        """Up to ``max_size`` arbitrary bytes."""

    def value(self) -> Any:
        """An arbitrary msgpack-able value (nil, bools, ints, floats, str, bin, small lists and maps)."""


class RandomChooser:
    """Choices from a seeded :class:`random.Random` (the long run: fast, reproducible by seed)."""

    def __init__(self, rng) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, options: Sequence) -> Any:
        return options[self.rng.randrange(len(options))]

    def binary(self, max_size: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, max_size))

    def value(self, depth: int = 0) -> Any:
        kind = self.rng.randrange(10 if depth < 3 else 8)
        if kind == 0:
            return None
        if kind == 1:
            return self.rng.random() < 0.5
        if kind == 2:
            return self.choice(INTERESTING_INTS)
        if kind == 3:
            return self.rng.randint(-2**63, 2**64 - 1)
        if kind == 4:
            return self.choice([0.5, -1.0, float("inf"), float("nan"), 1e300])
        if kind == 5:
            return self.choice(STRINGS)
        if kind == 6:
            return self.binary(12).decode("latin-1")
        if kind == 7:
            return self.binary(12)
        if kind == 8:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 4))]
        return {self.choice(STRINGS[:8]): self.value(depth + 1) for _ in range(self.rng.randint(0, 4))}


class DrawChooser:
    """Choices drawn from hypothesis (the unit fuzzers: bounded, shrinking): ``draw`` is
    ``st.data()``'s or a composite strategy's, ``values`` the strategy :meth:`value` draws from."""

    def __init__(self, draw, values) -> None:
        from hypothesis import strategies as st

        self.draw = draw
        self.st = st
        self.values = values

    def integer(self, low: int, high: int) -> int:
        return self.draw(self.st.integers(low, high))

    def choice(self, options: Sequence) -> Any:
        return self.draw(self.st.sampled_from(options))

    def binary(self, max_size: int) -> bytes:
        return self.draw(self.st.binary(max_size=max_size))

    def value(self) -> Any:
        return self.draw(self.values)


FUZZ_SCALE = int(os.environ.get("ZBROKER_FUZZ_SCALE", "1"))
"""``ZBROKER_FUZZ_SCALE=N`` in the environment runs the unit fuzzers N times as long, on new
inputs each run: a longer local hunt.  CI leaves it at 1."""


def fuzz_budget(examples: int):
    """hypothesis settings for a unit fuzzer: ``examples`` inputs, derandomized (CI runs the
    same ones every time); times :data:`FUZZ_SCALE`, randomized, when that is set."""
    from hypothesis import HealthCheck, settings

    return settings(max_examples=examples * FUZZ_SCALE, deadline=None, suppress_health_check=list(HealthCheck),
                    derandomize=FUZZ_SCALE == 1, database=None)


def fuzz_timeout(seconds: int):
    """A unit fuzzer module's pytest timeout, times :data:`FUZZ_SCALE`."""
    import pytest

    return pytest.mark.timeout(seconds * FUZZ_SCALE)


def one_in(ch: Chooser, n: int) -> bool:
    return ch.integer(0, n - 1) == 0


INTERESTING_INTS = [0, 1, -1, 2, 3, 127, 128, 255, 256, -128, 32767, -32768, 65535, 2**31 - 1, -2**31, 2**31,
                    2**32 - 1, 2**63 - 1, -2**63, 2**64 - 1, 1 << 20, 1 << 40]
STRINGS = ["", "t", "g", "m", "gone", "made", "x" * 300, "é\x00", "__consumer_offsets", "..", "a/b", "t" * 250,
           "retention.ms", "cleanup.policy", "range", "consumer", "PLAIN", "SCRAM-SHA-256"]

# -- native requests ----------------------------------------------------------------------

NATIVE_BATCH = build_native_batch([(5, b"k", b"v", None)])
TP = {"topic": "t", "partition": 0}


def _nested(depth: int) -> Any:
    out: Any = "t"
    for _ in range(depth):
        out = [out]
    return out


NATIVE_HUGE = [
    "x" * 300_000,
    ["t"] * 20_000,
    [{**TP, "offset": 0}] * 3,  # repeats
    [{"topic": "t", "partition": i, "offset": 0} for i in range(12_000)],
    {f"k{i}": i for i in range(2_000)},
    _nested(200),  # msgpack's packer stops at 512 levels
]
"""Values past every cap of the native schemas (lists, strings, maps, nesting)."""


def native_message(ch: Chooser, valid: dict[str, dict], huge_one_in: int = 1) -> tuple[dict, list[bytes]]:
    """A request of a random type of ``valid`` (type -> the fields of a valid request: the
    native unit fuzzer's ``VALID``, which has every type) with 0-3 fields set to arbitrary or
    huge values or dropped, and 0-3 extra payload frames: ``(header, frames)``.
    ``huge_one_in``: how rare a huge value is among the changes (1: as likely as the others)."""
    kind = ch.choice(sorted(valid))
    header = {"v": 1, "type": kind, "cid": ch.integer(0, 2**31), **valid[kind]}
    names = sorted({*header, "client_id", "junk"})
    for _ in range(ch.integer(0, 3)):
        name = ch.choice(names)
        how = ch.choice(["value", "huge", "drop"])
        if how == "drop":
            header.pop(name, None)
        elif how == "huge" and one_in(ch, huge_one_in):
            header[name] = ch.choice(NATIVE_HUGE)
        else:
            header[name] = ch.value()
    for name in ("partitions", "total"):  # creating thousands of partitions is an admin's right, not a fuzzer's
        if kind in (P.CREATE_TOPIC, P.CREATE_PARTITIONS) and isinstance(header.get(name), int):
            header[name] = min(header[name], 3)
    payloads = [NATIVE_BATCH] if kind == P.PRODUCE else []
    payloads += [ch.binary(64) for _ in range(ch.integer(0, 3))]
    return header, [msgpack.packb(header, use_bin_type=True), *payloads]


# -- record batches -----------------------------------------------------------------------

CODECS = (COMPRESSION_NONE, COMPRESSION_GZIP, COMPRESSION_SNAPPY, COMPRESSION_LZ4, COMPRESSION_ZSTD)
_RECORDS = [(1_000 + i, b"k%d" % i if i % 2 else None, b"v" * i, {"h": b"x"} if i % 3 == 0 else None) for i in range(5)]
BATCHES = {(magic, codec): builder(_RECORDS, compression=codec)
           for magic, builder in ((2, build_kafka_batch), (122, build_native_batch)) for codec in CODECS}
"""A valid batch of five records of each ``(magic, codec)``."""

# header fields a batch can lie about: name -> (bits, interesting values besides random ones)
_LIES = {
    "batch_length": (32, [-1, 0, 48, 49, 2**31 - 1, -2**31]),
    "record_count": (32, [-1, 0, 1, 6, 2**31 - 1, -2**31, 1 << 20]),
    "last_offset_delta": (32, [-1, 0, 3, 5, 2**31 - 1, -2**31]),
    "magic": (8, [0, 1, 2, 3, 122, -1, 127]),
    "attributes": (16, [0, 1, 2, 3, 4, 5, 6, 7, 0x08, 0x10, 0x20, 0x27, -1]),
    "base_offset": (64, [0, -1, 2**63 - 1, -2**63]),
    "base_timestamp": (64, [0, -1, 2**63 - 1, -2**63]),
    "max_timestamp": (64, [0, -1, 2**63 - 1, -2**63]),
    "producer_id": (64, [-1, 0, 2**63 - 1]),
    "producer_epoch": (16, [-1, 0, 32767]),
    "base_sequence": (32, [-1, 0, 2**31 - 1]),
}


def bomb(codec: int, size: int) -> bytes:
    """A payload of ``codec`` that decompresses to ``size`` zero bytes (a few KB for 64 MiB),
    in the framing readers meet least: lz4 and zstd without a declared content size, snappy
    as one raw block."""
    zeros = bytes(size)
    if codec == COMPRESSION_LZ4:
        return lz4.frame.compress(zeros, store_size=False)
    if codec == COMPRESSION_ZSTD:
        return zstandard.ZstdCompressor(write_content_size=False).compress(zeros)
    if codec == COMPRESSION_SNAPPY:
        return bytes(cramjam.snappy.compress_raw(zeros))
    return compress(codec, zeros)


BOMB_SIZE = 8 << 20  # over any bound a fuzzer passes; a 64 MiB snappy bomb would be 3 MB itself
BOMBS = {codec: bomb(codec, BOMB_SIZE) for codec in CODECS if codec != COMPRESSION_NONE}


def mutate_batch(ch: Chooser, batch: bytes) -> bytes:
    """``batch`` with 1-3 of: a header field that lies, payload bytes damaged, the payload of
    another codec or a decompression bomb; then the CRC made to match (usually: so the
    damage reaches the codec and the record decoders), cut short, or followed by more."""
    fields: dict[str, int] = {}
    payload = batch[HEADER_SIZE:]
    for _ in range(ch.integer(1, 3)):
        how = ch.integer(0, 5)
        if how <= 1:
            name = ch.choice(sorted(_LIES))
            bits, values = _LIES[name]
            fields[name] = ch.choice(values) if one_in(ch, 2) else ch.integer(-2 ** (bits - 1), 2 ** (bits - 1) - 1)
        elif how <= 3:
            payload = mutate_bytes(ch, payload)
        elif how == 4:
            payload = ch.choice([b"", ch.binary(64), *(BATCHES[k][HEADER_SIZE:] for k in sorted(BATCHES))])
        else:
            codec = ch.choice(sorted(BOMBS))
            payload = BOMBS[codec]
            fields["attributes"] = codec
    out = forge(batch, payload, **fields)
    if one_in(ch, 8):  # the CRC as the mutation left it
        out = out[:17] + batch[17:21] + out[21:]
    if one_in(ch, 6):
        out = out[:ch.integer(0, len(out))]
    if one_in(ch, 6):
        out += ch.choice([ch.binary(80), ch.choice(list(BATCHES.values()))])
    return out


# -- bytes --------------------------------------------------------------------------------

_I32 = struct.Struct(">i")


def mutate_bytes(ch: Chooser, data: bytes, max_ops: int = 4) -> bytes:
    """``data`` after 1..``max_ops`` of: a bit flipped, a byte set, an interesting int32 written
    (a length or count that lies), bytes inserted, bytes cut, the end cut off or extended."""
    out = bytearray(data)
    for _ in range(ch.integer(1, max_ops)):
        how = ch.integer(0, 6)
        pos = ch.integer(0, max(0, len(out) - 1))
        if how == 0 and out:
            out[pos] ^= 1 << ch.integer(0, 7)
        elif how == 1 and out:
            out[pos] = ch.choice([0, 0xFF, 0x7F, 0x80, 1, ch.integer(0, 255)])
        elif how == 2 and len(out) >= 4:
            pos = min(pos, len(out) - 4)
            out[pos:pos + 4] = _I32.pack(ch.choice([-1, 0, 1, 0x7FFFFFFF, -0x80000000, 0x10000, 1 << 24, ch.integer(-2**31, 2**31 - 1)]))
        elif how == 3:
            out[pos:pos] = ch.binary(16)
        elif how == 4:
            del out[pos:pos + ch.integer(1, 16)]
        elif how == 5:
            del out[ch.integer(0, len(out)):]
        else:
            out += ch.binary(32)
    return bytes(out)


def split(ch: Chooser, stream: bytes, max_reads: int = 8) -> list[bytes]:
    """``stream`` as the reads a socket could return: whole, byte by byte, or cut anywhere."""
    how = ch.integer(0, 3)
    if how == 0 or len(stream) < 2:
        return [stream]
    if how == 1 and len(stream) <= 256:
        return [stream[i:i + 1] for i in range(len(stream))]
    cuts = sorted({ch.integer(1, len(stream) - 1) for _ in range(ch.integer(1, max_reads - 1))})
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]


# -- Kafka requests -----------------------------------------------------------------------

TOPIC_ID = uuid.UUID(int=5).hex
_CONSUMER_SUBSCRIPTION = b"\0\1\0\0\0\1\0\1t\0\0\0\0"  # ConsumerProtocol v1: topics ["t"], no user data
_CONSUMER_ASSIGNMENT = b"\0\1\0\0\0\1\0\1t\0\0\0\1\0\0\0\0\0\0\0\0"  # v1: t-0, no user data
KAFKA_BATCH = BATCHES[(2, COMPRESSION_NONE)]

KAFKA_SEEDS: dict[int, dict] = {
    0: {"acks": 1, "timeout": 1000, "transactional_id": None,
        "topic_data": [{"name": "t", "topic_id": TOPIC_ID, "partition_data": [{"index": 0, "records": KAFKA_BATCH}]}]},
    1: {"replica_id": -1, "max_wait": 10, "min_bytes": 1, "max_bytes": 1 << 16, "isolation_level": 0, "session_id": 0,
        "session_epoch": -1, "rack_id": "", "replica_state": {"replica_id": -1, "replica_epoch": -1}, "forgotten_topics_data": [],
        "topics": [{"topic": "t", "topic_id": TOPIC_ID, "partitions": [
            {"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 16, "current_leader_epoch": -1,
             "log_start_offset": -1, "last_fetched_epoch": -1}]}]},
    2: {"replica_id": -1, "isolation_level": 0, "timeout": 1000,
        "topics": [{"name": "t", "partitions": [{"partition_index": 0, "timestamp": -1, "current_leader_epoch": -1}]}]},
    3: {"topics": [{"name": "t", "topic_id": None}], "allow_auto_topic_creation": False,
        "include_topic_authorized_operations": False, "include_cluster_authorized_operations": False},
    8: {"group_id": "g", "generation_id_or_member_epoch": -1, "generation_id": -1, "member_id": "", "group_instance_id": None,
        "retention_time": -1, "topics": [{"name": "t", "topic_id": TOPIC_ID, "partitions": [
            {"partition_index": 0, "committed_offset": 1, "committed_leader_epoch": -1, "committed_metadata": "m"}]}]},
    9: {"group_id": "g", "topics": [{"name": "t", "partition_indexes": [0]}], "require_stable": False,
        "groups": [{"group_id": "g", "member_id": None, "member_epoch": -1,
                    "topics": [{"name": "t", "topic_id": TOPIC_ID, "partition_indexes": [0]}]}]},
    10: {"key": "g", "key_type": 0, "coordinator_keys": ["g"]},
    11: {"group_id": "g", "session_timeout": 10000, "rebalance_timeout": 10000, "member_id": "", "group_instance_id": None,
         "protocol_type": "consumer", "protocols": [{"name": "range", "metadata": _CONSUMER_SUBSCRIPTION}], "reason": None},
    12: {"group_id": "g", "generation_id": 1, "member_id": "m", "group_instance_id": None},
    13: {"group_id": "g", "member_id": "m", "members": [{"member_id": "m", "group_instance_id": None, "reason": None}]},
    14: {"group_id": "g", "generation_id": 1, "member_id": "m", "group_instance_id": None, "protocol_type": "consumer",
         "protocol_name": "range", "assignments": [{"member_id": "m", "assignment": _CONSUMER_ASSIGNMENT}]},
    15: {"groups": ["g"], "include_authorized_operations": False},
    16: {"states_filter": [], "types_filter": []},
    18: {"client_software_name": "fuzz", "client_software_version": "1"},
    19: {"timeout": 1000, "validate_only": True, "topics": [
        {"name": "made", "num_partitions": 1, "replication_factor": 1, "assignments": [],
         "configs": [{"name": "retention.ms", "value": "1000"}]}]},
    20: {"topic_names": ["gone"], "topics": [{"name": "gone", "topic_id": None}], "timeout": 1000},
    21: {"topics": [{"name": "t", "partitions": [{"partition_index": 0, "offset": 0}]}], "timeout": 1000},
    22: {"transactional_id": None, "transaction_timeout": -1, "producer_id": -1, "producer_epoch": -1},
    23: {"replica_id": -1, "topics": [{"topic": "t", "partitions": [{"partition": 0, "current_leader_epoch": -1, "leader_epoch": 0}]}]},
    32: {"resources": [{"resource_type": 2, "resource_name": "t", "configuration_keys": None}], "include_synonyms": False,
         "include_documentation": False},
    33: {"validate_only": True, "resources": [
        {"resource_type": 2, "resource_name": "t", "configs": [{"name": "retention.ms", "value": "100000"}]}]},
    37: {"topics": [{"name": "t", "count": 3, "assignments": None}], "timeout": 1000, "validate_only": True},
    42: {"groups_names": ["g"]},
    44: {"validate_only": True, "resources": [
        {"resource_type": 2, "resource_name": "t", "configs": [{"name": "retention.ms", "config_operation": 0, "value": "100000"}]}]},
    60: {"include_cluster_authorized_operations": False, "endpoint_type": 1, "include_fenced_brokers": False},
    68: {"group_id": "g", "member_id": "m", "member_epoch": 0, "instance_id": None, "rack_id": None, "rebalance_timeout": 10000,
         "subscribed_topic_names": ["t"], "subscribed_topic_regex": None, "server_assignor": None, "topic_partitions": []},
    # ACLs, SCRAM credentials and quotas (issue 12): fuzzed as soon as the door serves them
    29: {"resource_type_filter": 1, "resource_name_filter": None, "pattern_type_filter": 1, "principal_filter": None,
         "host_filter": None, "operation": 1, "permission_type": 1},
    30: {"creations": [{"resource_type": 2, "resource_name": "t", "resource_pattern_type": 3, "principal": "User:fuzz",
                        "host": "*", "operation": 3, "permission_type": 3}]},
    31: {"filters": [{"resource_type_filter": 2, "resource_name_filter": "t", "pattern_type_filter": 3,
                      "principal_filter": "User:fuzz", "host_filter": "*", "operation": 3, "permission_type": 3}]},
    48: {"components": [{"entity_type": "user", "match_type": 0, "match": "fuzz"}], "strict": False},
    49: {"validate_only": True, "entries": [{"entity": [{"entity_type": "user", "entity_name": "fuzz"}],
                                              "ops": [{"key": "producer_byte_rate", "value": 1e9, "remove": False}]}]},
    50: {"users": [{"name": "fuzz"}]},
    51: {"deletions": [], "upsertions": [{"name": "fuzz", "mechanism": 1, "iterations": 4096, "salt": b"fuzz-salt-16byte",
                                         "salted_password": bytes(32)}]},
}
"""Field values of a valid request of every API the Kafka door serves, one dict for all its
versions (a version takes the fields it has: :func:`zbroker.frontends.kafka.codec.build`).
Names that change things ("gone", "made") are never the fuzzers' topic ``t`` or group ``g``,
and creations are validate-only (see :func:`_tame` for what mutations may not undo)."""

SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36
SASL_SEEDS: dict[int, dict] = {
    SASL_HANDSHAKE: {"mechanism": "SCRAM-SHA-256"},
    SASL_AUTHENTICATE: {"auth_bytes": b"n,,n=fuzz,r=fyko+d2lbbFgONRv9qkxdawL"},
}
"""SaslHandshake and SaslAuthenticate (KIP-152): what :func:`sasl_messages` starts from."""
SASL_TOKENS = [
    b"\0fuzz\0secret", b"fuzz\0fuzz\0secret", b"\0\0", b"\0" * 3, b"\0" + b"u" * 300 + b"\0p",  # PLAIN
    b"n,,n=fuzz,r=fyko+d2lbbFgONRv9qkxdawL", b"y,,n=fuzz,r=x", b"p=tls-unique,,n=fuzz,r=x", b"n,a=admin,n=fuzz,r=x",
    b"n,,n=,r=", b"n,,n=fu=2Czz,r=x", b"n,,n=fuzz", b"n,,r=x", b"n,,n=fuzz,r=" + b"x" * 5000,  # SCRAM client-first
    b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", b"c=biws,r=x,p=", b"c=,r=,p=####",  # client-final
]


def served_versions(routes) -> list[tuple[int, int]]:
    """Every ``(api_key, version)`` of ``routes`` (a router's table or ApiVersions' answer as
    ``(key, min, max)``)."""
    return [(key, v) for key, low, high in routes for v in range(low, high + 1)]


@functools.lru_cache(maxsize=None)
def kafka_seed(api_key: int, version: int):
    """The seed of ``api_key`` as kio's request dataclass of ``version``."""
    return build(request_schema(api_key, version), {**KAFKA_SEEDS, **SASL_SEEDS}[api_key])


def encode_body(entity) -> bytes | None:
    """kio's encoding of a request body, or None when kio cannot write it (a mutated value
    its type cannot hold)."""
    out = io.BytesIO()
    try:
        entity_writer(type(entity))(out, entity)
    except Exception:  # kio's writer raises struct.error, ValueError, TypeError, OverflowError
        return None
    return out.getvalue()


def encode_request(api_key: int, version: int, cid: int, body: bytes, client_id: str | None = "fuzz",
                   flexible: bool | None = None) -> bytes:
    """A request without its size prefix: header v1 (v2 when the version is flexible), then ``body``."""
    if flexible is None:
        schema = request_schema(api_key, version)
        flexible = bool(schema is not None and schema.__flexible__)
    head = struct.pack(">hhi", api_key, version, cid)
    if client_id is None:
        head += b"\xff\xff"
    else:
        raw = client_id.encode()
        head += struct.pack(">h", len(raw)) + raw
    return head + (b"\0" if flexible else b"") + body


def size_prefixed(ch: Chooser, message: bytes, max_size: int) -> bytes:
    """``message`` behind a size prefix that is usually right; otherwise negative, over
    ``max_size``, or off by a few bytes either way (the rest of the stream shifts)."""
    how = ch.integer(0, 9)
    size = len(message)
    if how == 7:
        size = ch.choice([-1, -2**31, -len(message) - 1, ch.integer(-2**31, -1)])
    elif how == 8:
        size = ch.choice([max_size + 1, 2**31 - 1, ch.integer(max_size + 1, 2**31 - 1)])
    elif how == 9:
        size = max(0, min(max_size, size + ch.choice([-4, -1, 1, 4, 100, ch.integer(-size, 64)])))
    return _I32.pack(size) + message


_HINTS: dict[type, dict] = {}


def _hints(cls: type) -> dict:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


_INT_RANGE = {"int8": 8, "int16": 16, "int32": 32, "int64": 64, "timedelta_i32": 32, "timedelta_i64": 64,
              "datetime_i64": 64}
_EPOCH = datetime.datetime.fromtimestamp(0, datetime.timezone.utc)


def _extreme_int(ch: Chooser, bits: int) -> int:
    top = 2 ** (bits - 1)
    return ch.choice([0, 1, -1, 2, top - 1, -top, ch.integer(-top, top - 1), ch.integer(-4, 1 << min(bits - 1, 20))])


def _extreme(ch: Chooser, kafka_type: str | None, current: Any) -> Any:
    """A value of ``kafka_type`` at or near its type's limits, or an odd one of its domain."""
    if kafka_type in ("int8", "int16", "int32", "int64"):
        return _extreme_int(ch, _INT_RANGE[kafka_type])
    if kafka_type in ("uint16", "uint32", "uint64", "uint8"):
        return ch.choice([0, 1, 2 ** int(kafka_type[4:]) - 1])
    if kafka_type in ("timedelta_i32", "timedelta_i64"):
        return datetime.timedelta(milliseconds=_extreme_int(ch, 32))
    if kafka_type == "datetime_i64":
        return _EPOCH + datetime.timedelta(milliseconds=ch.choice([0, 1, 2**40, 253402300799000]))
    if kafka_type == "float64":
        return ch.choice([0.0, -1.0, float("inf"), float("-inf"), float("nan"), 1e308])
    if kafka_type == "bool":
        return not current
    if kafka_type == "string":
        return ch.choice(STRINGS) if not one_in(ch, 4) else ch.binary(20).decode("latin-1")
    if kafka_type == "uuid":
        return ch.choice([uuid.UUID(int=0), uuid.UUID(int=1), uuid.UUID(TOPIC_ID), uuid.UUID(int=2**128 - 1)])
    if kafka_type == "records":
        batch = ch.choice(list(BATCHES.values()))
        return ch.choice([b"", batch, batch * 2, mutate_batch(ch, batch), ch.binary(80)])
    if kafka_type == "bytes":
        return ch.choice([b"", ch.binary(40), b"\0" * 1000, _CONSUMER_SUBSCRIPTION, _CONSUMER_ASSIGNMENT,
                          mutate_bytes(ch, _CONSUMER_SUBSCRIPTION)])
    return current


def mutate_entity(ch: Chooser, entity, depth: int = 0):
    """``entity`` (a kio dataclass) with some fields changed: a value at its type's limits, None
    where nullable, a list emptied, repeated (up to 300 items) or with one item mutated;
    nested entities in turn."""
    hints = _hints(type(entity))
    changes = {}
    for f in dataclasses.fields(entity):
        if ch.integer(0, 3):
            continue
        current = getattr(entity, f.name)
        hint = hints[f.name]
        if type(None) in typing.get_args(hint) and one_in(ch, 4):
            changes[f.name] = None
        elif isinstance(current, tuple):
            changes[f.name] = _mutate_list(ch, current, f.metadata.get("kafka_type"), depth)
        elif dataclasses.is_dataclass(current):
            changes[f.name] = mutate_entity(ch, current, depth + 1)
        else:
            changes[f.name] = _extreme(ch, f.metadata.get("kafka_type"), current)
    return dataclasses.replace(entity, **changes) if changes else entity


def _mutate_list(ch: Chooser, items: tuple, kafka_type: str | None, depth: int) -> tuple:
    how = ch.integer(0, 3)
    if how == 0 or not items:
        return ()
    if how == 1:
        return items * ch.choice([2, 3, 300 // len(items) + 1])
    i = ch.integer(0, len(items) - 1)
    item = items[i]
    if dataclasses.is_dataclass(item):
        item = mutate_entity(ch, item, depth + 1) if depth < 4 else item
    else:
        item = _extreme(ch, kafka_type, item)
    return items[:i] + (item,) + items[i + 1:]


def _tame(api_key: int, entity):
    """What a field mutation may not do: create a topic or add partitions by the thousand
    (an admin's right, not a fuzzer's: at most 3 unless validate-only), or set a quota (a
    default quota on everyone would throttle the rest of the run)."""
    if api_key == 19 and not entity.validate_only:
        topics = tuple(dataclasses.replace(t, num_partitions=min(t.num_partitions, 3)) for t in entity.topics or ())
        return dataclasses.replace(entity, topics=topics)
    if api_key == 37 and not entity.validate_only:
        topics = tuple(dataclasses.replace(t, count=min(t.count, 3)) for t in entity.topics or ())
        return dataclasses.replace(entity, topics=topics)
    if api_key == 49:
        return dataclasses.replace(entity, validate_only=True)
    return entity


def kafka_message(ch: Chooser, served: Sequence[tuple[int, int]], cid: int | None = None) -> bytes:
    """One Kafka request without its size prefix: the seed of a served ``(api_key, version)``,
    as it is or with fields mutated, then perhaps with its bytes mutated; or a header of any
    API key and version over a seed's body or random bytes."""
    cid = ch.integer(-2**31, 2**31 - 1) if cid is None else cid
    how = ch.integer(0, 9)
    if how == 9:  # any API key and version (most are not served), any body
        key, version = ch.integer(-2**15, 2**15 - 1), ch.integer(-2**15, 2**15 - 1)
        if one_in(ch, 2):
            key, version = ch.choice([(SASL_HANDSHAKE, 0), (SASL_HANDSHAKE, 1), (SASL_AUTHENTICATE, 2), (18, 99), (3, 14),
                                      (0, 2), (1, 3), (4, 0), (57, 0), (ch.integer(0, 80), ch.integer(0, 20))])
        body = ch.binary(64) if one_in(ch, 2) else encode_body(kafka_seed(*ch.choice(served))) or b""
        return encode_request(key, version, cid, body, flexible=bool(ch.integer(0, 1)))
    key, version = ch.choice(served)
    entity = kafka_seed(key, version)
    if how >= 4:
        entity = _tame(key, mutate_entity(ch, entity))
    body = encode_body(entity)
    if body is None:
        body = encode_body(kafka_seed(key, version))
    message = encode_request(key, version, cid, body, client_id=ch.choice(["fuzz", None, "", "c" * 300]))
    if how <= 1 or how == 8:
        message = mutate_bytes(ch, message)
    return message


def sasl_messages(ch: Chooser, cid: int = 1) -> list[bytes]:
    """A SASL exchange (KIP-152) without size prefixes: a SaslHandshake naming a mechanism (a
    served one, a wrong one, garbage), then SaslAuthenticate tokens (PLAIN, SCRAM client-first
    and client-final, mutated or random), perhaps out of order or repeated, perhaps followed by
    another request (which must be refused until authentication succeeded)."""
    out = []
    for step in range(ch.integer(1, 4)):
        if step == 0 or one_in(ch, 4):
            version = ch.integer(0, 1)
            mechanism = ch.choice(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "", "plain", "x" * 300])
            body = encode_body(build(request_schema(SASL_HANDSHAKE, version), {"mechanism": mechanism}))
            out.append(encode_request(SASL_HANDSHAKE, version, cid + step, body))
        else:
            version = ch.integer(0, 2)
            token = ch.choice(SASL_TOKENS)
            if one_in(ch, 3):
                token = mutate_bytes(ch, token)
            body = encode_body(build(request_schema(SASL_AUTHENTICATE, version), {"auth_bytes": token}))
            out.append(encode_request(SASL_AUTHENTICATE, version, cid + step, body))
        if one_in(ch, 5):
            out[-1] = mutate_bytes(ch, out[-1])
    if one_in(ch, 3):
        out.append(encode_request(3, 1, cid + 10, encode_body(kafka_seed(3, 1))))
    return out
