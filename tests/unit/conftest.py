"""Fixtures shared by the service unit tests (helpers without fixtures: servicefakes.py)."""

import pytest

from tests.unit.servicefakes import START_MS, create_topic, leading_cluster, single_app


@pytest.fixture
def cluster(tmp_path):
    """``(app, now)``: broker 1 of three, controller and leader of ``t-0``
    (:func:`tests.unit.servicefakes.leading_cluster`); closed after the test."""
    app, now = leading_cluster(tmp_path)
    yield app, now
    app.close(now)


@pytest.fixture
def app(tmp_path):
    """A single-node App with topic ``t`` of two partitions; closed after the test (a test file
    may define its own ``app``)."""
    app = single_app(tmp_path)
    create_topic(app, "t", partitions=2)
    yield app
    app.close(START_MS)
