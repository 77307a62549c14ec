"""A stream-processing application through the Kafka door: quixstreams' stateful count.

quixstreams (on librdkafka) uses the classic group protocol with range assignment, creates
a compacted changelog topic per state store, reads topic configs with DescribeConfigs and
turns idempotence on.  The application counts words per key; a second run with its local
state wiped must restore the counts from the changelog topic and go on counting.
"""

from __future__ import annotations

import collections
import logging

import pytest
from confluent_kafka import Producer

from zbroker import Admin

pytestmark = pytest.mark.timeout(240)

WORDS = ["apple", "pear", "fig", "plum", "kiwi"]


def produce_words(bootstrap: str, topic: str, count: int, start: int = 0) -> collections.Counter:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    sent = collections.Counter()
    for i in range(start, start + count):
        word = WORDS[i * 7 % len(WORDS)]
        producer.produce(topic, key=word.encode(), value=f"{word}-{i}".encode())
        sent[word] += 1
    assert producer.flush(30) == 0
    return sent


def run_counter(bootstrap: str, state_dir, expected_outputs: int) -> dict[str, int]:
    """Run the quixstreams app until it has emitted ``expected_outputs`` counts; the last
    count it emitted per word."""
    from quixstreams import Application

    app = Application(broker_address=bootstrap, consumer_group="word-counter", auto_offset_reset="earliest",
                      state_dir=str(state_dir), loglevel=logging.WARNING, commit_every=10)
    words = app.topic("words", key_deserializer="str", value_deserializer="bytes")
    sdf = app.dataframe(words)  # 3 partitions: the topic is auto-created with the broker's defaults

    def count(value, key, timestamp, headers, state):
        total = state.get("count", 0) + 1
        state.set("count", total)
        return {"word": key, "count": total}

    sdf.apply(count, stateful=True, metadata=True)
    rows = app.run(count=expected_outputs, timeout=120)
    last: dict[str, int] = {}
    for row in rows:
        last[row["word"]] = max(last.get(row["word"], 0), row["count"])
    return last


def test_a_stateful_count_is_right_and_survives_losing_its_local_state(kbroker, tmp_path):
    bootstrap = kbroker.kafka_bootstrap
    sent = produce_words(bootstrap, "words", 200)
    assert run_counter(bootstrap, tmp_path / "state-1", 200) == dict(sent)
    changelogs = [t for t in Admin(bootstrap=kbroker.bootstrap).list_topics() if t.startswith("changelog__word-counter")]
    assert len(changelogs) == 1, changelogs
    described = Admin(bootstrap=kbroker.bootstrap).describe_topic(changelogs[0])
    assert described.config["cleanup_policy"] == "compact" and len(described.partitions) == 3
    # more input; a fresh state dir: the counts come back from the compacted changelog topic
    sent += produce_words(bootstrap, "words", 50, start=200)
    assert run_counter(bootstrap, tmp_path / "state-2", 50) == dict(sent)
