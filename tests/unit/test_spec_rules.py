"""Rules docs/protocol.md states, checked over BrokerNode frames: `topics: []` in metadata,
and a fetch at an offset inside a compaction gap."""

import msgpack
import pytest

from storage import build_native_batch, decode_batches
from zbroker.config import single_node_config
from zbroker.node import BrokerNode

PEER = b"\x00client"


class Node:
    def __init__(self, data_dir, now=1_000):
        self.cfg, self.now = single_node_config(str(data_dir)), now
        self.node = BrokerNode(self.cfg, 1, now)

    def call(self, kind, *payloads, **fields):
        self.node.handle(PEER, [msgpack.packb({"v": 1, "type": kind, "cid": 1, **fields}), *payloads], self.now)
        ((_conn, frames),) = self.node.outbox
        self.node.outbox.clear()
        return msgpack.unpackb(frames[0]), frames[1:]


@pytest.fixture
def n(tmp_path):
    node = Node(tmp_path / "d")
    yield node
    node.node.close()


def test_metadata_with_an_empty_topic_list_lists_no_topics_and_nil_lists_all(n):
    assert n.call("create_topic", topic="t", partitions=1)[0]["error"] == 0
    none, _ = n.call("metadata", topics=[])
    assert none["error"] == 0 and none["topics"] == [] and none["brokers"]
    every, _ = n.call("metadata", topics=None)
    assert [t["topic"] for t in every["topics"]] == ["t"]
    assert [t["topic"] for t in n.call("metadata")[0]["topics"]] == ["t"]


def test_a_fetch_inside_a_compaction_gap_starts_at_the_next_kept_record(n):
    cfg = {"cleanup_policy": "compact", "segment_bytes": 1024, "min_cleanable_dirty_ratio": 0.01}
    assert n.call("create_topic", topic="c", partitions=1, config=cfg)[0]["error"] == 0
    for i in range(60):
        recs = [(n.now, b"k%d" % ((i + j) % 3), b"v%d-%d" % (i, j) + b"." * 20, None) for j in range(3)]
        assert n.call("produce", build_native_batch(recs), batches=[{"topic": "c", "partition": 0}])[0]["results"][0]["error"] == 0
    log = n.node.app.partitions.online[("c", 0)].log
    before = log.size_bytes()
    for _ in range(200):  # housekeeping compacts in bounded turns
        n.now += n.cfg.setting("retention_check_ms")
        n.node.tick(n.now)
        if ("c", 0) not in n.node.app.housekeeping.cleaners and log.size_bytes() < before:
            break
    header, (data,) = n.call("fetch", max_wait_ms=0, partitions=[{"topic": "c", "partition": 0, "offset": 0, "max_bytes": 1 << 20}])
    kept = [r[2] for r in decode_batches(data, "c", 0)]
    gaps = [o for o in range(kept[-1]) if o not in kept]
    assert gaps, "compaction left no gap"
    for offset in gaps:
        header, (data,) = n.call("fetch", max_wait_ms=0, partitions=[{"topic": "c", "partition": 0, "offset": offset}])
        assert header["partitions"][0]["error"] == 0  # not OFFSET_OUT_OF_RANGE: a gap is inside the log
        first = decode_batches(data, "c", 0)[0][2]
        assert first == min(k for k in kept if k > offset)


def test_every_error_code_the_broker_raises_is_in_the_protocol_error_table():
    import re
    from pathlib import Path

    from zbroker.errors import ErrorCode

    root = Path(__file__).resolve().parents[2]
    table = {int(code) for code in re.findall(r"^\| (-?\d+) \| [A-Z_]+ \|", (root / "docs/protocol.md").read_text(), re.M)}
    kafka_door = root / "zbroker/frontends/kafka"  # answers Kafka clients only: its codes are Kafka's (docs/kafka.md)
    raised = {name for src in [*root.glob("zbroker/**/*.py"), *root.glob("storage/**/*.py")]
              if src.name != "errors.py" and kafka_door not in src.parents
              for name in re.findall(r"ErrorCode\.([A-Z_]+)", src.read_text())}
    missing = sorted(name for name in raised if int(ErrorCode[name]) not in table)
    assert not missing, f"docs/protocol.md §3 lacks {missing}"
