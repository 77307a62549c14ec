"""Fixtures shared by the service unit tests (helpers without fixtures: servicefakes.py)."""

import pytest

from tests.unit.servicefakes import leading_cluster


@pytest.fixture
def cluster(tmp_path):
    """``(app, now)``: broker 1 of three, controller and leader of ``t-0``
    (:func:`tests.unit.servicefakes.leading_cluster`); closed after the test."""
    app, now = leading_cluster(tmp_path)
    yield app, now
    app.close(now)
