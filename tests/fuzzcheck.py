"""The check of ``scripts/fuzz.py``: every well-formed request, answered as a fresh broker answers it.

:class:`Checker` sends one valid request of each kind on a fresh topic and fresh groups --
each native request type (``tests/unit/test_fuzz_router.py``'s table) and each Kafka API the
broker advertises, at its lowest and its highest version (the seeds of
:mod:`tests.fuzzcorpus`, in :data:`KAFKA_CHECK_ORDER`) -- and keeps the :func:`shape` of each
answer: the fields that do not depend on names, ids or the time (:data:`KEEP`).
:func:`compare` holds two such runs against each other (before and after a fuzz run), and
:data:`MUST_SUCCEED` against success.
"""

from __future__ import annotations

import socket
import struct
import time

import msgpack
import zmq
from kio.serial import entity_reader

from tests.fuzzcorpus import KAFKA_SEEDS, NATIVE_BATCH, SASL_SEEDS, TOPIC_ID, encode_body, encode_request
from zbroker import protocol as P
from zbroker.frontends.kafka.codec import build, request_schema, response_schema

CHECK_TIMEOUT_S = 30.0
KAFKA_CHECK_ORDER = [3, 0, 1, 2, 23, 8, 9, 10, 15, 16, 42, 11, 14, 12, 13, 68, 22, 19, 37, 32, 33, 44, 21, 20, 60, 18]
"""The order the check sends one request of each Kafka API in (produce before fetch, a commit
before its fetch, deletions last); keys the broker serves and this list lacks go at the end."""
KEEP = {"error", "error_code", "base_offset", "high_watermark", "last_stable_offset", "log_start_offset", "offset",
        "committed_offset", "partition", "partition_index", "index", "low_watermark", "num_partitions", "count",
        "generation_id", "member_epoch", "leader_id", "leader_epoch", "node_id", "records", "partitions_count",
        "api_key", "min_version", "max_version", "timestamp", "key_type"}
"""The fields of an answer the check compares (names, ids, member ids, timestamps of now differ
between two fresh topics and groups)."""
MUST_SUCCEED = {("native", P.PRODUCE), ("native", P.FETCH), ("native", P.LIST_OFFSETS), ("native", P.API_VERSIONS),
                ("native", P.INIT_PRODUCER_ID), ("native", P.FIND_COORDINATOR), *(("kafka", key) for key in (0, 1, 2, 3, 10, 18, 22, 60))}
"""Checks whose every error code must be 0, and whose records (a fetch's) must have come back:
the data path and the cluster's description work, not just answer as before."""


# -- the check: every well-formed request, answered as a fresh broker answers it -------------

def shape(value, path: str = "") -> list:
    """The ``(path, value)`` of every :data:`KEEP` field of an answer (a kio dataclass, a dict
    or a list of them); ``records`` as whether any came back."""
    out: list = []
    if hasattr(value, "__dataclass_fields__"):
        value = {name: getattr(value, name) for name in value.__dataclass_fields__}
    if isinstance(value, dict):
        for name, item in value.items():
            if name in KEEP and not isinstance(item, (dict, list, tuple)) and not hasattr(item, "__dataclass_fields__"):
                if name == "records":
                    item = bool(item)
                out.append((f"{path}.{name}", getattr(item, "value", item)))
            else:
                out += shape(item, f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            out += shape(item, f"{path}[{i}]")
    return out


def renamed(value, names: dict):
    """``value`` (a seed: dicts, lists, strings) with each string of ``names`` replaced."""
    if isinstance(value, dict):
        return {k: renamed(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [renamed(v, names) for v in value]
    return names.get(value, value) if isinstance(value, str) else value


class Checker:
    """Sends one well-formed request of each kind and keeps the shape of each answer."""

    def __init__(self, native: str, kafka: str, native_valid: dict[str, dict]) -> None:
        """``native_valid``: the fields of a valid request of each native type."""
        self.native, self.kafka, self.native_valid = native, kafka, native_valid
        self.ctx = zmq.Context.instance()

    def native_call(self, sock, header: dict, payloads=()) -> dict | None:
        sock.send_multipart([msgpack.packb(header, use_bin_type=True), *payloads])
        deadline = time.monotonic() + CHECK_TIMEOUT_S
        while sock.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            reply = msgpack.unpackb(sock.recv_multipart()[0], raw=False)
            if reply.get("cid") == header["cid"]:
                return reply
        return None

    def wait_open(self, sock, topic: str) -> None:
        """Until both partitions of the new ``topic`` are open on their leader (a broker opens
        16 new partitions a turn: after a fuzz run that created many, it takes a while)."""
        deadline = time.monotonic() + CHECK_TIMEOUT_S
        ask = {"v": 1, "type": P.LIST_OFFSETS, "cid": 2,
               "partitions": [{"topic": topic, "partition": i, "timestamp": -1} for i in (0, 1)]}
        while time.monotonic() < deadline:
            reply = self.native_call(sock, ask)
            if reply is not None and not reply.get("error") and not any(p.get("error") for p in reply.get("partitions", ())):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{topic} is not open after {CHECK_TIMEOUT_S} s")

    def count_topics(self) -> tuple[int, int]:
        """``(topics, partitions)`` the broker has."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://{self.native}")
        try:
            reply = self.native_call(sock, {"v": 1, "type": P.METADATA, "cid": 3}) or {}
        finally:
            sock.close(linger=0)
        topics = reply.get("topics") or []
        return len(topics), sum(len(t.get("partitions") or ()) for t in topics if isinstance(t, dict))

    def run(self, run_id: str, kafka_versions: list[tuple[int, int, int]]) -> dict:
        topic = f"fuzz-check-{run_id}"
        results: dict = {}
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://{self.native}")
        try:
            made = self.native_call(sock, {"v": 1, "type": P.CREATE_TOPIC, "cid": 1, "topic": topic, "partitions": 2})
            if made is None or made.get("error"):
                raise RuntimeError(f"cannot create {topic}: {made}")
            self.wait_open(sock, topic)
            names = {"t": topic, "u": f"{topic}-u", "made": f"{topic}-made", "gone": f"{topic}-gone", "g": f"{topic}-g",
                     "__x": f"__{topic}"}
            for i, (kind, fields) in enumerate(self.native_valid.items()):
                header = {"v": 1, "type": kind, "cid": 100 + i, **renamed(fields, names)}
                reply = self.native_call(sock, header, [NATIVE_BATCH] if kind == P.PRODUCE else [])
                results[("native", kind)] = None if reply is None else shape(reply)
        finally:
            sock.close(linger=0)
        with socket.create_connection(split_address(self.kafka), timeout=CHECK_TIMEOUT_S) as conn:
            topic_id = self.kafka_topic_id(conn, topic)
            order = [k for k in KAFKA_CHECK_ORDER if any(k == key for key, _, _ in kafka_versions)]
            order += sorted({key for key, _, _ in kafka_versions} - set(order))
            ranges = {key: (low, high) for key, low, high in kafka_versions}
            for version_end in (0, 1):
                for key in order:
                    version = ranges[key][version_end]
                    if version_end and version == ranges[key][0]:
                        continue
                    group = f"{topic}-g" if key in (8, 9, 15, 42) else f"{topic}-g{key}"
                    seed = renamed({**KAFKA_SEEDS, **SASL_SEEDS}[key],
                                   {**names, "g": f"{group}-v{version}", TOPIC_ID: topic_id})
                    results[("kafka", key, version)] = self.kafka_call(conn, key, version, seed)
        return results

    def kafka_call(self, conn: socket.socket, key: int, version: int, fields: dict):
        schema = request_schema(key, version)
        message = encode_request(key, version, 9, encode_body(build(schema, fields)))
        conn.sendall(struct.pack(">i", len(message)) + message)
        try:
            reply = recv_reply(conn)
        except (OSError, ConnectionError):
            return None
        response = response_schema(key, version)
        offset = 8 + (1 if response.__flexible__ and key != 18 else 0)
        return shape(entity_reader(response)(reply, offset)[0])

    def kafka_topic_id(self, conn: socket.socket, topic: str) -> str:
        deadline = time.monotonic() + CHECK_TIMEOUT_S
        while time.monotonic() < deadline:
            message = encode_request(3, 12, 1, encode_body(build(request_schema(3, 12), {"topics": [{"name": topic}]})))
            conn.sendall(struct.pack(">i", len(message)) + message)
            answer = entity_reader(response_schema(3, 12))(recv_reply(conn), 9)[0]
            (t,) = answer.topics
            if t.error_code.value == 0 and all(p.leader_id >= 0 for p in t.partitions):
                return t.topic_id.hex
            time.sleep(0.1)
        raise RuntimeError(f"{topic} has no leader after {CHECK_TIMEOUT_S} s")


def recv_reply(conn: socket.socket) -> bytes:
    """One whole Kafka reply (size prefix included)."""
    head = recv_exactly(conn, 4)
    (size,) = struct.unpack(">i", head)
    return head + recv_exactly(conn, size)


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return bytes(data)


def kafka_api_versions(kafka: str) -> list[tuple[int, int, int]]:
    with socket.create_connection(split_address(kafka), timeout=CHECK_TIMEOUT_S) as conn:
        message = encode_request(18, 3, 1, encode_body(build(request_schema(18, 3), {})))
        conn.sendall(struct.pack(">i", len(message)) + message)
        answer = entity_reader(response_schema(18, 3))(recv_reply(conn), 8)[0]
    return [(k.api_key, k.min_version, k.max_version) for k in answer.api_keys]


def split_address(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def compare(before: dict, after: dict, failures: list) -> tuple[int, int]:
    """How many of the reference's answers came again after the fuzz run (each that did not is
    a failure), out of how many."""
    for run, results in (("before", before), ("after", after)):
        for what, got in results.items():
            if what[:2] in MUST_SUCCEED and got is not None and any(
                    (path.endswith((".error", ".error_code")) and value != 0) or (path.endswith(".records") and not value)
                    for path, value in got):
                failures.append(f"check {what} {run} fuzzing: an error or no records: {got}")
    same = 0
    for what, expected in before.items():
        got = after.get(what)
        if expected is None:
            failures.append(f"check {what}: no answer even before fuzzing")
        elif got is None:
            failures.append(f"check {what}: no answer after fuzzing")
        elif got != expected:
            diff = [(e, g) for e, g in zip(expected, got) if e != g] or [(len(expected), len(got))]
            failures.append(f"check {what}: answered otherwise after fuzzing: {diff[:3]}")
        else:
            same += 1
    return same, len(before)
