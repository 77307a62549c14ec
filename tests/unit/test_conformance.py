"""The conformance kit (tests/conformance/*.json) against the Python codec, partitioner and broker.

Each file must equal what tests/conformance/vectors.py builds now (so the kit cannot rot: a
change of behaviour fails here until the files are regenerated and the diff reviewed), and
the vectors are also checked the way another language would use them.
"""

import json

import pytest

from clients.partitioner import partition_for_key
from storage.batch import build_kafka_batch, build_native_batch, validate_batch
from storage.decode import decode_batches
from tests.conformance import vectors as V
from zbroker import protocol as P
from zbroker.hashing import murmur2

pytestmark = pytest.mark.timeout(60)


def load(name):
    return json.loads((V.HERE / name).read_text())


@pytest.mark.parametrize("name", sorted(V.FILES))
def test_each_file_is_what_the_broker_and_codec_produce_today(name):
    assert (V.HERE / name).read_text() == V.render(V.FILES[name]()), (
        f"{name} is out of date: run `python -m tests.conformance.vectors` and review the diff")


def test_the_kit_stays_small():
    assert sum(p.stat().st_size for p in V.HERE.iterdir() if p.suffix in (".json", ".md")) < 100_000


def test_murmur2_vectors():
    for v in load("murmur2.json")["vectors"]:
        key = bytes.fromhex(v["key_hex"])
        assert murmur2(key) == v["murmur2"]
        assert {str(n): partition_for_key(key, n) for n in map(int, v["partitions"])} == v["partitions"]
    assert any(v["key_hex"] == "" for v in load("murmur2.json")["vectors"])  # an empty key is hashed


def test_crc32c_vectors():
    import crc32c

    vectors = load("crc32c.json")["vectors"]
    assert {"data_hex": b"123456789".hex(), "crc32c": 0xE3069283} in vectors  # the standard check value
    for v in vectors:
        assert crc32c.crc32c(bytes.fromhex(v["data_hex"])) == v["crc32c"]


def _records(entry):
    return [(r["timestamp"], None if r["key_hex"] is None else bytes.fromhex(r["key_hex"]),
             None if r["value_hex"] is None else bytes.fromhex(r["value_hex"]),
             {k: None if h is None else bytes.fromhex(h) for k, h in r["headers"].items()} or None)
            for r in entry["records"]]


@pytest.mark.parametrize("index", range(4))
def test_batch_vectors_decode_and_encode(index):
    entry = load("batches.json")["batches"][index]
    data = bytes.fromhex(entry["batch_hex"])
    header = validate_batch(data)
    assert (header.magic, header.base_offset, header.record_count) == (entry["magic"], entry["base_offset"], len(entry["records"]))
    assert V._jsonable(decode_batches(data, "t", 0)) == entry["records"]
    assert [r["offset"] for r in entry["records"]] == [entry["base_offset"] + i for i in range(len(entry["records"]))]
    build = build_native_batch if entry["magic"] == 122 else build_kafka_batch
    codec = {"none": 0, "gzip": 1}[entry["codec"]]
    again = build(_records(entry), base_offset=entry["base_offset"], compression=codec, producer_id=entry["producer_id"],
                  producer_epoch=entry["producer_epoch"], base_sequence=entry["base_sequence"])
    assert decode_batches(again, "t", 0) == decode_batches(data, "t", 0)
    if codec == 0:
        assert again == data  # uncompressed bytes are exact


def test_transcripts_cover_every_client_request_type():
    seen = {e["request"]["type"] for e in load("transcripts.json")["exchanges"]}
    assert set(P.SCHEMAS) - P.BROKER_ONLY <= seen
