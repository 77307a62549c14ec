"""Builds the conformance vectors from the Python codec, partitioner and a BrokerNode.

``python -m tests.conformance.vectors`` (from the repository root) rewrites the JSON files;
tests/unit/test_conformance.py builds them again and checks that the files still say the
same, so a change of behaviour shows up as a failing test and a reviewed diff of the files.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import msgpack

from clients.partitioner import partition_for_key
from storage.batch import build_kafka_batch, build_native_batch
from storage.decode import decode_batches
from storage.compression import COMPRESSION_GZIP, COMPRESSION_NONE
from zbroker.config import single_node_config
from zbroker.hashing import murmur2
from zbroker.node import BrokerNode

HERE = Path(__file__).resolve().parent
PARTITION_COUNTS = (1, 3, 7, 12, 100)
NOW = 1_700_000_000_000
CLIENT = b"\x00conformance"


# -- murmur2 and CRC-32C ------------------------------------------------------------------

MURMUR_KEYS = [b"", b"21", b"foobar", b"a-little-bit-long-string", b"a-little-bit-longer-string",
               b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", b"abc", b"\x00", b"\xff\xfe\xfd",
               b"\x00\x00\x00\x00", "clé-ü".encode(), bytes(range(17))]


def murmur2_vectors() -> dict:
    return {
        "about": "key_hex -> murmur2 (signed 32-bit) and partition = (murmur2 & 0x7fffffff) % count; "
                 "the empty key is hashed like any other",
        "vectors": [{"key_hex": k.hex(), "murmur2": murmur2(k),
                     "partitions": {str(n): partition_for_key(k, n) for n in PARTITION_COUNTS}} for k in MURMUR_KEYS],
    }


CRC_INPUTS = [b"", b"a", b"123456789", bytes(32), b"\xff" * 32, bytes(range(32)), b"The quick brown fox jumps over the lazy dog"]


def crc32c_vectors() -> dict:
    from storage.batch import _crc  # the codec's own CRC-32C (Castagnoli)

    return {"about": "data_hex -> CRC-32C (Castagnoli, reflected, init and xorout 0xffffffff) as an unsigned int",
            "vectors": [{"data_hex": d.hex(), "crc32c": _crc(d)} for d in CRC_INPUTS]}


# -- batches ---------------------------------------------------------------------------------

RECORDS = [  # (timestamp ms, key, value, headers)
    (NOW, b"k0", b"v0", {"h": b"x"}),
    (NOW + 5, None, b"v1", None),
    (NOW - 3, b"k2", None, None),  # a null value (tombstone); an earlier timestamp: negative delta
    (NOW + 9, b"", b"", {"a": b"1", "b": b""}),  # empty key and value are not null
]


def _jsonable(records) -> list:
    return [{"offset": off, "timestamp": ts, "key_hex": None if k is None else k.hex(),
             "value_hex": None if v is None else v.hex(),
             "headers": {name: None if hv is None else hv.hex() for name, hv in sorted(h.items())}}
            for _t, _p, off, ts, k, v, h in records]


def batch_vectors() -> dict:
    out = []
    for magic, build in ((122, build_native_batch), (2, build_kafka_batch)):
        for name, codec in (("none", COMPRESSION_NONE), ("gzip", COMPRESSION_GZIP)):
            data = build(RECORDS, base_offset=100, compression=codec, producer_id=7, producer_epoch=1, base_sequence=40)
            out.append({"magic": magic, "codec": name, "base_offset": 100, "producer_id": 7, "producer_epoch": 1,
                        "base_sequence": 40, "batch_hex": data.hex(),
                        "records": _jsonable(decode_batches(data, "t", 0))})
    return {
        "about": "each entry: one batch (61-byte header + payload) and the records it decodes to; headers are "
                 "values hex (null = a null header value). The input records are 'records' with offsets "
                 "base_offset + i. Uncompressed bytes are exact for any encoder; gzip bytes are what zbroker's "
                 "encoder writes (zlib level 6, gzip mtime 0): other encoders must decode them, not equal them.",
        "batches": out,
    }


# -- transcripts -----------------------------------------------------------------------------

MASK = "<chosen by the broker>"
_MASKED_KEYS = {"member_id"}  # random UUIDs


def _mask(value):
    if isinstance(value, dict):
        return {k: (MASK if k in _MASKED_KEYS and v else _mask(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, bytes):
        return {"bin_hex": value.hex()}
    return value


class _Session:
    def __init__(self, data_dir: str) -> None:
        self.node = BrokerNode(single_node_config(data_dir), 1, NOW)
        self.cid = 0
        self.exchanges: list[dict] = []
        self.member_id = ""

    def call(self, kind: str, *payloads: bytes, note: str = "", **fields) -> dict:
        self.cid += 1
        request = {"v": 1, "type": kind, "cid": self.cid, **fields}
        self.node.handle(CLIENT, [msgpack.packb(request, use_bin_type=True), *payloads], NOW)
        for _ in range(20):
            if self.node.outbox:
                break
            self.node.tick(NOW)
        ((_conn, frames),) = self.node.outbox
        self.node.outbox.clear()
        response = msgpack.unpackb(frames[0], raw=False)
        self.exchanges.append({"note": note, "request": _mask(request), "request_frames_hex": [p.hex() for p in payloads],
                               "response": _mask(response), "response_frames_hex": [f.hex() for f in frames[1:]]})
        return response


def transcripts() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        s = _Session(str(Path(tmp) / "d"))
        try:
            _run_session(s)
        finally:
            s.node.close(NOW)
    return {"about": f"one broker (single_node_config), every exchange at time {NOW}; values of 'member_id' are "
                     f"masked as {MASK!r}; msgpack bin values are written {{'bin_hex': ...}}; payload frames as hex",
            "exchanges": s.exchanges}


def _run_session(s: _Session) -> None:
    s.call("api_versions", note="which request types and versions this broker serves")
    s.call("create_topic", topic="t", partitions=2, replication_factor=1, config={"retention_ms": 3_600_000})
    s.call("metadata", topics=["t", "missing"])
    s.call("metadata", topics=[], note="[] = no topics: brokers and controller only")
    s.call("alter_topic_config", topic="t", config={"retention_ms": None})
    s.call("create_partitions", topic="t", total=3)
    s.call("describe_topic", topic="t")
    batch = build_native_batch(RECORDS[:2])
    s.call("produce", batch, acks=1, batches=[{"topic": "t", "partition": 0}])
    s.call("produce", build_native_batch([(NOW, None, b"x", None)]), acks=1, batches=[{"topic": "t", "partition": 9}],
           note="an unknown partition: the error is per batch")
    s.call("fetch", max_wait_ms=0, partitions=[{"topic": "t", "partition": 0, "offset": 0}])
    s.call("fetch", max_wait_ms=0, partitions=[{"topic": "t", "partition": 0, "offset": 5}], note="out of range")
    s.call("list_offsets", partitions=[{"topic": "t", "partition": 0, "timestamp": ts} for ts in (-2, -1, NOW + 1)])
    s.call("init_producer_id")
    s.call("find_coordinator", group="g", note="the offsets topic does not exist yet: it is created, ask again")
    s.node.tick(NOW)
    s.call("find_coordinator", group="g")
    joined = s.call("group_heartbeat", group="g", member_epoch=0, topics=["t"], session_timeout_ms=30_000)
    member, epoch = joined["member_id"], joined["member_epoch"]
    s.call("group_heartbeat", group="g", member_id=member, member_epoch=epoch + 9, note="a stale epoch: fenced and removed")
    joined = s.call("group_heartbeat", group="g", member_id=member, member_epoch=0, topics=["t"], owned=[],
                    note="rejoin with the same member id and epoch 0")
    member, epoch = joined["member_id"], joined["member_epoch"]
    s.call("offset_commit", group="g", member_id=member, member_epoch=epoch,
           offsets=[{"topic": "t", "partition": 0, "offset": 2, "metadata": "m"}])
    s.call("offset_commit", group="g", member_id=member, member_epoch=epoch + 9,
           offsets=[{"topic": "t", "partition": 0, "offset": 2}], note="every commit error is top level")
    s.call("offset_fetch", group="g", partitions=[["t", 0], ["t", 1]])
    s.call("describe_group", group="g")
    s.call("list_groups")
    s.call("delete_group", group="g", note="refused while the group has members")
    s.call("group_heartbeat", group="g", member_id=member, member_epoch=-1, note="leave")
    s.call("delete_group", group="g")
    s.call("alter_quotas", entries=[{"principal": "User:app", "ops": [{"key": "produce_bytes_per_s", "value": 1_048_576}]}],
           note="a byte-rate quota for one principal ('<default>': everyone without one)")
    s.call("describe_quotas")
    s.call("delete_topic", topic="t")
    acl = {"principal": "User:alice", "resource_type": "topic", "name": "logs-", "pattern": "prefixed", "operation": "read"}
    s.call("create_acls", acls=[acl], note="enforced only with [security] on; answered once committed")
    s.call("describe_acls", name="logs-app", pattern="match", note="every binding that applies to topic logs-app")
    s.call("delete_acls", filters=[{"principal": "User:alice"}])
    s.call("upsert_user", user="alice", credentials=[
        {"mechanism": "SCRAM-SHA-256", "salt": bytes(range(32)), "iterations": 4096, "stored_key": b"\x01" * 32,
         "server_key": b"\x02" * 32}],
        note="credentials computed by the client (RFC 5802): never the password; values here are placeholders")
    s.call("list_users")
    s.call("remove_user", user="alice")
    s.call("bridge_status", note="the bridges and mirrors this broker runs (none here)")
    s.call("no_such_type", note="unknown type")
    s.call("metadata", topics="t", note="a field of the wrong type, named")


FILES = {"murmur2.json": murmur2_vectors, "crc32c.json": crc32c_vectors, "batches.json": batch_vectors,
         "transcripts.json": transcripts}


def render(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=False, ensure_ascii=True) + "\n"


def main() -> int:
    for name, build in FILES.items():
        (HERE / name).write_text(render(build()))
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
