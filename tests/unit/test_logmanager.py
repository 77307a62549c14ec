"""The broker's partition logs on disk (zbroker.core.logmanager)."""

import pytest

from storage import LogConfig, build_native_batch
from zbroker.core.logmanager import LogManager

pytestmark = pytest.mark.timeout(30)


def test_a_directory_of_an_earlier_topic_of_that_name_is_moved_aside_not_served(tmp_path):
    lm = LogManager(tmp_path)
    lg = lm.open(("t", 0), LogConfig(), 0, topic_id="old")
    lg.append(build_native_batch([(1, None, b"old", None)]), 0)
    lm.close()
    lm = LogManager(tmp_path)
    lg = lm.open(("t", 0), LogConfig(), 0, topic_id="new")
    assert lg.log_end_offset == 0  # the new topic starts empty
    assert (tmp_path / "t-0" / "partition.metadata").read_text().strip() == "topic_id: new"
    assert len(lm.trash) == 1 and lm.trash[0].name.endswith("-delete")
    assert lm.purge_deleted(10) == 1 and not [p for p in tmp_path.iterdir() if p.name.endswith("-delete")]
    lm.close()
