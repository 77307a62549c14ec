"""A fuzzer of the Kafka door -- framer, codec and router -- in-process, without sockets.

Bytes go into :class:`~zbroker.frontends.kafka.router.KafkaConnection` objects of one
broker (a :class:`~zbroker.node.BrokerNode` with the :class:`~zbroker.frontends.kafka.KafkaDoor`,
time passed in), through a transport that records what the connection writes, whether it
closed and whether it asked not to be read.  The inputs (:mod:`tests.fuzzcorpus`, drawn by
hypothesis with a bounded, derandomized budget): arbitrary bytes; size prefixes that are
negative, over the limit, or off by a few bytes; random API keys and versions; the valid
request of every served (API key, version), with fields set to their type's extremes and
bytes flipped, overwritten with lying lengths, cut or extended; the SASL exchange; each
stream cut into reads anywhere, or coalesced into one.  Like a TCP listener, the test
stops reading a connection that asked it to, and goes on once it asks again.

Properties, for every input, after a tick past every deadline:

- no exception leaves the door (nor the node's tick, which settles parked answers), and
  no handler fails (an ERROR log line: the router turned a bug into UNKNOWN_SERVER_ERROR);
- nothing unbounded is buffered: the framer holds less than one request of the size limit,
  requests cut but not run are at most what one read held, replies in flight at most
  ``MAX_IN_FLIGHT``;
- every reply is framed (its size prefix counts its bytes), answers a request of the
  stream, in request order, at most once, and decodes as that API and version's response
  (or the short UNSUPPORTED_VERSION answer to a key or version not served);
- the connection ends cleanly: closed, or every request read is answered (an acks=0
  produce has no answer) and nothing is left half-run;
- afterwards a well-formed ApiVersions and Metadata on a fresh connection are answered.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import struct
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kio.serial import entity_reader

from tests.fuzzcorpus import (
    KAFKA_BATCH, KAFKA_SEEDS, SASL_SEEDS, DrawChooser, encode_body, encode_request, fuzz_budget, fuzz_timeout, kafka_message,
    kafka_seed, mutate_bytes, mutate_entity, sasl_messages, served_versions, size_prefixed, split,
)
from zbroker import protocol as P
from zbroker.config import single_node_config
from zbroker.frontends.kafka import KafkaDoor, codec, lengths
from zbroker.frontends.kafka.handlers import ROUTES
from zbroker.frontends.kafka.router import MAX_IN_FLIGHT
from zbroker.node import BrokerNode

pytestmark = fuzz_timeout(120)

MAX_REQUEST = 8 << 20  # the door's size limit here (the least the config takes; the default is 100 MiB)
PAST_EVERY_DEADLINE_MS = 301_000  # a fetch waits at most 300 s, so does a produce
FAR_FUTURE_MS = 2**31  # past any group's rebalance or session timeout (an INT32 of milliseconds)
BUDGET = fuzz_budget(500)
UNSUPPORTED_VERSION = 35
SERVED = served_versions([(r.api_key, *r.versions) for r in ROUTES])
ROOT = Path(__file__).resolve().parents[2]

_ints = st.integers(-3, 3) | st.sampled_from([-2**63, 2**63 - 1, 2**64 - 1, 2**31, -1])
_values = st.recursive(st.none() | st.booleans() | _ints | st.text(max_size=8) | st.binary(max_size=8),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                       max_leaves=6)


class Wire:
    """A transport that records what the connection does with it."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False
        self.paused = False

    def write(self, data: list[bytes]) -> None:
        assert not self.closed, "a write after the connection closed"
        self.sent += data

    def close(self) -> None:
        self.closed = True

    def close_after_write(self, linger: bool = False) -> None:
        self.closed = True  # the replies before it are already in ``sent``

    def set_deadline(self, ms: int, why: str) -> None:
        """A deadline the connection sets on its transport (the SASL gate's): the test's inputs
        are over long before it."""

    def clear_deadline(self) -> None:
        pass

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class Errors(logging.Handler):
    """Collects ERROR records of the broker's loggers (a handler that raised, a reply that
    could not be encoded)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Door:
    """One broker and its Kafka door, with its clock in the test's hands."""

    def __init__(self, tmp_path) -> None:
        self.now = 1_000_000
        config = single_node_config(str(tmp_path), kafka=("127.0.0.1", 9092))
        # no checkpoint (fsync) per tick: the fuzzer ticks past every deadline after each input
        config = dataclasses.replace(config, settings={**config.settings, "flush_check_ms": 1 << 50,
                                                       "max_request_bytes": MAX_REQUEST})
        self.node = BrokerNode(config, 1, self.now, clock=lambda: self.now)
        self.door = KafkaDoor(self.node.app, self.node.metrics)
        self.served = served_versions(self.door.router.versions())
        self.ids = itertools.count(1)
        self.errors = Errors()
        self.make_topic()

    def make_topic(self) -> None:
        """Topic ``t`` of two partitions, one batch in ``t-0`` (again, when an input deleted it)."""
        native = self.node.handle
        native(b"\0fuzz", [P.encode(P.request(P.CREATE_TOPIC, 1, topic="t", partitions=2))], self.now)
        native(b"\0fuzz", [P.encode(P.request(P.PRODUCE, 2, batches=[{"topic": "t", "partition": 0}])), KAFKA_BATCH], self.now)
        assert [msgpack.unpackb(f[0])["error"] for _, f in self.node.outbox] == [0, 0]
        self.node.outbox.clear()

    def tick(self, step_ms: int = PAST_EVERY_DEADLINE_MS) -> None:
        self.now += step_ms
        self.node.tick(self.now)
        self.node.outbox.clear()

    def feed(self, reads: list[bytes]) -> tuple[Wire, object, bytes]:
        """Feed ``reads`` to a fresh connection as a TCP listener would, checking the buffers
        after each; returns the transport, the connection and the bytes it read."""
        wire = Wire()
        conn = self.door.connection(next(self.ids), "127.0.0.1:9", wire)
        fed = bytearray()
        for data in reads:
            if wire.paused:  # the listener reads no more until the connection asks: parked answers settle first
                self.tick()
                if wire.paused:
                    self.tick(FAR_FUTURE_MS)
                assert not wire.paused or wire.closed, "a connection paused with nothing left to wait for"
            if wire.closed:
                break
            buffered = conn.framer.buffered
            conn.data_received(data, self.now)
            fed += data
            assert conn.framer.buffered < 4 + MAX_REQUEST
            assert sum(map(len, conn._pending)) <= buffered + len(data)
            assert len(conn.replies) <= MAX_IN_FLIGHT
        self.tick()
        if not wire.closed and (len(conn.replies) or conn._pending):
            self.tick(FAR_FUTURE_MS)
        return wire, conn, bytes(fed)


@pytest.fixture(scope="module")
def door(tmp_path_factory):
    door = Door(tmp_path_factory.mktemp("kafka-fuzz"))
    logger = logging.getLogger("zbroker")
    logger.addHandler(door.errors)
    yield door
    logger.removeHandler(door.errors)
    door.node.close(door.now)


# -- checks ---------------------------------------------------------------------------------

def cut(stream: bytes) -> tuple[list[bytes], bool]:
    """The requests a framer cuts from ``stream``, and whether a size prefix refuses the rest."""
    frames, pos = [], 0
    while len(stream) - pos >= 4:
        (size,) = struct.unpack_from(">i", stream, pos)
        if size < 0 or size > MAX_REQUEST:
            return frames, True
        if len(stream) - pos - 4 < size:
            break
        frames.append(stream[pos + 4:pos + 4 + size])
        pos += 4 + size
    return frames, False


def check_reply(door: Door, request: bytes, reply: bytes) -> None:
    """``reply`` is a well-formed answer to ``request``."""
    key, version, cid = struct.unpack_from(">hhi", request)
    route = door.door.router.table.get(key)
    if route is None or not route.versions[0] <= version <= route.versions[1]:
        if route is not None and route.any_version:  # ApiVersions: the list, in v0, with the error
            version = 0
        else:
            assert reply[8:] == struct.pack(">h", UNSUPPORTED_VERSION), (key, version, reply)
            return
    schema = codec.response_schema(key, version)
    offset = 8 + (1 if schema.__flexible__ and key != codec.API_VERSIONS_KEY else 0)
    _body, size = entity_reader(schema)(reply, offset)
    assert offset + size == len(reply), (route.name, version, "bytes after the response")


def no_reply_expected(request: bytes) -> bool:
    """An acks=0 produce (the only request Kafka leaves unanswered)."""
    key, version = struct.unpack_from(">hh", request)
    if key != 0:
        return False
    try:
        header = codec.decode_header(request, bool(codec.request_schema(0, version).__flexible__))
        return codec.decode_body(codec.request_schema(0, version), request, header.size).acks == 0
    except Exception:
        return False


def check_answers(door: Door, wire: Wire, conn, fed: bytes) -> None:
    """The replies answer the requests read, in order, each well-formed; a connection still
    open owes nothing."""
    requests, refused = cut(fed)
    if refused:
        assert wire.closed, "a size prefix the framer refuses closes the connection"
    pending = iter(requests)
    for reply in wire.sent:
        assert len(reply) >= 8 and struct.unpack_from(">i", reply)[0] == len(reply) - 4, reply[:16]
        (cid,) = struct.unpack_from(">i", reply, 4)
        for request in pending:
            if len(request) >= 8 and struct.unpack_from(">i", request, 4)[0] == cid:
                check_reply(door, request, reply)
                break
            assert no_reply_expected(request), ("a request skipped", request[:16], cid)
        else:
            raise AssertionError(f"a reply (cid {cid}) to no request read, or out of order")
    if not wire.closed:
        assert not conn._pending and len(conn.replies) == 0, "requests left half-run on an open connection"
        assert all(no_reply_expected(r) for r in pending), "an open connection left a request unanswered"
    assert not door.errors.records, [r.getMessage() for r in door.errors.records]


def still_serving(door: Door) -> None:
    """A fresh connection gets ApiVersions (the table) and Metadata (this broker) answered."""
    metadata = encode_request(3, 12, 8, encode_body(codec.build(codec.request_schema(3, 12), {"topics": None})))
    versions = encode_request(18, 3, 7, encode_body(kafka_seed(18, 3)))
    wire, _conn, _fed = door.feed([struct.pack(">i", len(versions)) + versions + struct.pack(">i", len(metadata)) + metadata])
    assert not wire.closed and len(wire.sent) == 2, wire.sent
    api, _ = entity_reader(codec.response_schema(18, 3))(wire.sent[0], 8)
    assert api.error_code.value == 0 and len(api.api_keys) == len(door.door.router.table)
    meta, _ = entity_reader(codec.response_schema(3, 12))(wire.sent[1], 9)
    assert [b.node_id for b in meta.brokers] == [1]
    if "t" not in {t.name for t in meta.topics}:  # a DeleteTopics named it: the next input finds it again
        door.make_topic()


def run(door: Door, reads: list[bytes]) -> None:
    wire, conn, fed = door.feed(reads)
    check_answers(door, wire, conn, fed)
    still_serving(door)


def stream(ch, messages: list[bytes]) -> bytes:
    return b"".join(size_prefixed(ch, m, MAX_REQUEST) for m in messages)


# -- the fuzzers ----------------------------------------------------------------------------

def test_every_seed_is_a_valid_request_of_every_served_version(door):
    """The corpus is valid where it claims to be: each served (key, version) seed is answered
    as a request, not refused as bytes (else the mutations start from garbage)."""
    assert {key for key, _ in door.served} <= set(KAFKA_SEEDS) | set(SASL_SEEDS)
    for key, version in door.served:
        body = encode_body(kafka_seed(key, version))
        message = encode_request(key, version, 1, body)
        wire, conn, fed = door.feed([struct.pack(">i", len(message)) + message])
        assert not wire.closed, (key, version)
        check_answers(door, wire, conn, fed)
    still_serving(door)


@BUDGET
@given(data=st.binary(max_size=600), reads=st.data())
def test_arbitrary_bytes(door, data, reads):
    run(door, split(DrawChooser(reads.draw, _values), data))


@fuzz_budget(1500)
@given(data=st.data(), count=st.integers(1, 4))
def test_mutated_requests_of_every_served_api(door, data, count):
    ch = DrawChooser(data.draw, _values)
    run(door, split(ch, stream(ch, [kafka_message(ch, door.served, cid=i) for i in range(count)])))


@BUDGET
@given(data=st.data())
def test_size_prefixes_that_lie(door, data):
    ch = DrawChooser(data.draw, _values)
    messages = [encode_request(*ch.choice(door.served), i, encode_body(kafka_seed(*ch.choice(door.served)))) for i in range(3)]
    prefixes = [data.draw(st.sampled_from([-1, -2**31, 0, 1, 7, 8, MAX_REQUEST, MAX_REQUEST + 1, 2**31 - 1]) | st.integers(-2**31, 2**31 - 1))
                for _ in messages]
    raw = b"".join(struct.pack(">i", p if data.draw(st.booleans()) else len(m)) + m for p, m in zip(prefixes, messages))
    run(door, split(ch, raw))


@BUDGET
@given(data=st.data())
def test_random_api_keys_and_versions(door, data):
    ch = DrawChooser(data.draw, _values)
    key = data.draw(st.integers(-2**15, 2**15 - 1) | st.integers(0, 80))
    version = data.draw(st.integers(-2**15, 2**15 - 1) | st.integers(-1, 20))
    body = data.draw(st.binary(max_size=64)) if data.draw(st.booleans()) else encode_body(kafka_seed(*ch.choice(door.served)))
    messages = [encode_request(key, version, 5, body, flexible=data.draw(st.booleans())), encode_request(18, 0, 6, b"")]
    run(door, split(ch, stream(ch, messages)))


@fuzz_budget(300)
@given(data=st.data())
def test_the_sasl_exchange(door, data):
    """SaslHandshake and SaslAuthenticate (KIP-152) with every mechanism name and token the
    corpus has.  Without SASL configured the door answers both UNSUPPORTED_VERSION."""
    ch = DrawChooser(data.draw, _values)
    run(door, split(ch, stream(ch, sasl_messages(ch))))


@pytest.mark.parametrize("size", [MAX_REQUEST - 4, MAX_REQUEST])
def test_a_half_sent_request_of_the_size_limit_holds_one_request_then_closes_cleanly(door, size):
    """A client that announces a request of the limit and sends only part of it: the framer
    holds what came (less than the limit), answers nothing, and the connection goes on."""
    reads = [struct.pack(">i", size) + encode_request(3, 1, 1, b"")] + [bytes(256 << 10)] * 7
    wire, conn, _fed = door.feed(reads)
    assert not wire.closed and wire.sent == [] and conn.framer.buffered == sum(map(len, reads)) < 4 + MAX_REQUEST
    conn.connection_lost()
    still_serving(door)


@pytest.mark.parametrize("key, version, body", [
    (42, 1, b"\xff\xff\xff\xff"),  # DeleteGroups v1: groups_names, a legacy array of length -1
    (42, 2, b"\x00\x00"),  # v2 (flexible): a compact array of length 0 - 1 = -1, then no tagged fields
    (0, 9, b"\x00\x00\x01\x00\x00\x03\xe8\x02\x02t\x00\x00\x00"),  # Produce v9: topic_data[0].partition_data null
])
def test_a_null_where_the_schema_has_none_closes_the_connection(door, key, version, body):
    """Found by the fuzzer: kio reads an array of length -1 as None whether the field is
    nullable or not, and DeleteGroups' handler and its error answer then raised TypeError out
    of the door.  Kafka's parser refuses such a request; so does the codec now."""
    schema = codec.request_schema(key, version)
    with pytest.raises(codec.MalformedRequest, match="non-nullable field .* is null"):
        codec.decode_body(schema, body, 0)
    message = encode_request(key, version, 1, body)
    wire, conn, fed = door.feed([struct.pack(">i", len(message)) + message])
    assert wire.closed and wire.sent == []
    check_answers(door, wire, conn, fed)
    still_serving(door)


_LYING_COUNTS = r'''
import resource, struct, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # an allocation past it aborts this process
from tests.fuzzcorpus import encode_body, kafka_seed
from zbroker.frontends.kafka import codec
from zbroker.frontends.kafka.handlers import ROUTES
refused = 0
for route in ROUTES:
    for version in range(route.versions[0], route.versions[1] + 1):
        body = encode_body(kafka_seed(route.api_key, version))
        for pos in range(len(body)):
            for lie in (struct.pack(">i", 0x7FFFFFFF), struct.pack(">i", 0x0FFFFFFF), b"\xff\xff\xff\xff\x07"):
                try:
                    codec.decode_body(codec.request_schema(route.api_key, version), body[:pos] + lie + body[pos + len(lie):], 0)
                except codec.MalformedRequest:
                    refused += 1
print(refused)
'''


def test_a_count_that_lies_is_refused_before_kio_reserves_memory_for_it():
    """Found by scripts/fuzz.py: kio reserves room for an array's declared count before
    reading an item, so four bytes announcing 2**31 - 1 items made the broker ask for 154 GB
    and abort.  Every served request, with every position of its valid encoding overwritten
    by a huge count (INT32 and compact UVARINT), decodes in a process whose address space is
    capped at 3 GiB: the lengths are checked first (codec's lengths.py)."""
    limit = 3 << 30
    run = subprocess.run([sys.executable, "-c", _LYING_COUNTS, str(limit)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert int(run.stdout) > 1000


@fuzz_budget(300)
@given(data=st.data())
def test_the_length_walk_reads_what_kio_reads(data):
    """Where kio decodes a request, the length walk accepts it and ends where kio ended (it
    never refuses a valid request); where the walk accepts bytes, kio's reading ends there too."""
    ch = DrawChooser(data.draw, _values)
    key, version = ch.choice(SERVED)
    schema = codec.request_schema(key, version)
    body = encode_body(mutate_entity(ch, kafka_seed(key, version))) or encode_body(kafka_seed(key, version))
    if data.draw(st.booleans()):
        body = mutate_bytes(ch, body)
    try:
        walked = lengths._walk(lengths._plan(schema), body, 0, len(body))
    except lengths.LengthError:
        return
    try:
        _value, size = entity_reader(schema)(body, 0)
    except Exception:
        return  # kio refuses what the walk let through: a value, not a length, is wrong
    assert walked == size
