"""api_versions against a real broker process, with raw frames."""

from __future__ import annotations

import pytest

from zbroker import protocol as P
from zbroker.frontends.native.handlers import ROUTES

pytestmark = pytest.mark.timeout(60)


def test_a_real_broker_answers_api_versions_with_every_request_type(raw):
    header, frames = raw.call("api_versions")
    assert header["error"] == 0 and frames == []
    served = {v["type"]: (v["min"], v["max"]) for v in header["versions"]}
    assert served == {r.kind: r.versions for r in ROUTES}
    assert served[P.API_VERSIONS] == (P.PROTOCOL_VERSION, P.PROTOCOL_VERSION)


def test_the_python_admin_reads_the_versions(broker):
    from clients.admin import Admin

    with Admin(broker.bootstrap, request_timeout_ms=10_000) as admin:
        assert admin.api_versions()["produce"] == (1, 1)
