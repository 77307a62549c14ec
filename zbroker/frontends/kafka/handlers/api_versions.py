"""ApiVersions (key 18): which APIs and versions this broker serves.

Served at any version (KIP-511): a client that asks with a version newer than this
broker knows gets UNSUPPORTED_VERSION *and* the list, in a v0 response, and retries
with a version from it.  Served before SASL authentication too (clients ask first).  aiokafka sends v0 first; librdkafka its newest.
"""

from __future__ import annotations

from zbroker.errors import ErrorCode
from zbroker.frontends.kafka.router import KafkaRoute

API_KEY = 18
VERSIONS = (0, 4)


def route(table: list[KafkaRoute]) -> KafkaRoute:
    """The ApiVersions route, answering with ``table`` plus itself."""
    listed = sorted([(r.api_key, *r.versions) for r in table] + [(API_KEY, *VERSIONS)])
    api_keys = [{"api_key": key, "min_version": lo, "max_version": hi} for key, lo, hi in listed]

    def api_versions(app, ctx, request, version, now_ms):
        error = 0 if VERSIONS[0] <= version <= VERSIONS[1] else ErrorCode.UNSUPPORTED_VERSION
        return {"error_code": error, "api_keys": api_keys}

    def error(request, version, code, message):
        return {"error_code": code, "api_keys": api_keys}

    return KafkaRoute(API_KEY, "ApiVersions", VERSIONS, api_versions, error=error, any_version=True, before_auth=True)
