"""The Kafka door's KIP-554 handlers (DescribeUserScramCredentials, AlterUserScramCredentials)
over a real single-node App, without sockets."""

from __future__ import annotations

import hashlib

import pytest
from tests.unit.servicefakes import START_MS, settle

from zbroker.context import RequestContext
from zbroker.errors import ErrorCode
from zbroker.frontends.kafka import codec
from zbroker.frontends.kafka.handlers import ROUTES
from zbroker.frontends.kafka.sasl import verify_plain

pytestmark = pytest.mark.timeout(60)

CTX = RequestContext(listener="kafka")
ROUTE = {r.name: r for r in ROUTES}
SALT = b"0123456789abcdef0123456789abcdef"


def run(app, api: str, **fields):
    route = ROUTE[api]
    request = codec.build(codec.request_schema(route.api_key, 0), fields)
    answer = settle(route.call(app, CTX, request, 0, START_MS))
    codec.encode_response(route.api_key, 0, 7, answer)  # it encodes
    return answer


def upsertion(name: str, mechanism: int = 1, password: str = "pw", iterations: int = 4096, salt: bytes = SALT) -> dict:
    digest = "sha256" if mechanism == 1 else "sha512"
    return {"name": name, "mechanism": mechanism, "iterations": iterations, "salt": salt,
            "salted_password": hashlib.pbkdf2_hmac(digest, password.encode(), salt, iterations)}


def results(answer) -> dict:
    return {r["user"]: (r["error_code"], r.get("error_message")) for r in answer["results"]}


def test_upsert_then_describe_then_delete(app):
    answer = run(app, "AlterUserScramCredentials", deletions=[],
                 upsertions=[upsertion("alice"), upsertion("alice", 2, iterations=8192), upsertion("bob", 2)])
    assert results(answer) == {"alice": (0, None), "bob": (0, None)}
    users = app.control.image.security.users
    assert verify_plain(users["alice"]["SCRAM-SHA-512"], "pw") and users["alice"]["SCRAM-SHA-512"].iterations == 8192
    described = run(app, "DescribeUserScramCredentials", users=None)["results"]
    assert [(r["user"], r["credential_infos"]) for r in described] == [
        ("alice", [{"mechanism": 1, "iterations": 4096}, {"mechanism": 2, "iterations": 8192}]),
        ("bob", [{"mechanism": 2, "iterations": 4096}])]
    assert results(run(app, "AlterUserScramCredentials", deletions=[{"name": "alice", "mechanism": 1}],
                       upsertions=[])) == {"alice": (0, None)}
    assert set(users["alice"]) == {"SCRAM-SHA-512"}


def test_describe_names_unknown_and_repeated_users(app):
    run(app, "AlterUserScramCredentials", deletions=[], upsertions=[upsertion("alice")])
    described = run(app, "DescribeUserScramCredentials", users=[{"name": "alice"}, {"name": "zed"}, {"name": "alice"}])
    assert [(r["user"], r.get("error_code", 0)) for r in described["results"]] == [
        ("alice", ErrorCode.DUPLICATE_RESOURCE), ("zed", ErrorCode.RESOURCE_NOT_FOUND)]


def test_each_user_is_all_or_nothing_and_refusals_are_named(app):
    answer = run(app, "AlterUserScramCredentials",
                 deletions=[{"name": "ghost", "mechanism": 1}, {"name": "carol", "mechanism": 2}],
                 upsertions=[upsertion("carol"), upsertion("dave", 3), upsertion("erin", iterations=100),
                             upsertion("frank", salt=b"short"), upsertion("bad,name"), upsertion("gina"),
                             upsertion("gina"), {**upsertion("hal"), "salted_password": b"x" * 5}, upsertion("ivy")])
    got = results(answer)
    assert got["ghost"][0] == ErrorCode.RESOURCE_NOT_FOUND
    assert got["carol"][0] == ErrorCode.RESOURCE_NOT_FOUND  # its deletion failed: its upsertion is not applied either
    assert got["dave"] == (ErrorCode.UNSUPPORTED_SASL_MECHANISM, "unknown SCRAM mechanism 3 (1: SCRAM-SHA-256, 2: SCRAM-SHA-512)")
    assert got["erin"][0] == ErrorCode.UNACCEPTABLE_CREDENTIAL and "iterations" in got["erin"][1]
    assert got["frank"][0] == ErrorCode.UNACCEPTABLE_CREDENTIAL and "salt" in got["frank"][1]
    assert got["bad,name"][0] == ErrorCode.UNACCEPTABLE_CREDENTIAL and "not a user name" in got["bad,name"][1]
    assert got["gina"][0] == ErrorCode.DUPLICATE_RESOURCE
    assert got["hal"][0] == ErrorCode.UNACCEPTABLE_CREDENTIAL and "32 bytes" in got["hal"][1]
    assert got["ivy"] == (0, None)
    assert set(app.control.image.security.users) == {"ivy"}


def test_both_need_the_cluster_permission():
    assert [(o.value, r.type.value) for o, r in ROUTE["AlterUserScramCredentials"].access(None)] == [("alter", "cluster")]
    assert [(o.value, r.type.value) for o, r in ROUTE["DescribeUserScramCredentials"].access(None)] == [("describe", "cluster")]
