"""Security records in the metadata log: checked before proposal, applied in order,
rebuilt from a snapshot, and committed through the controller (TopicAdmin.alter_security)."""

import pytest

from tests.unit.servicefakes import START_MS, error_code, settle, single_app
from zbroker.context import INTERNAL
from zbroker.control.metadata import MetadataImage, apply_record, image_records
from zbroker.control.security_meta import (
    DEFAULT_QUOTA_PRINCIPAL,
    AclBinding,
    QuotaEntry,
    ScramCredential,
    acl_record,
    check_record,
    quota_record,
    scram_credential_record,
)
from zbroker.control.topicadmin import AlterSecurity
from zbroker.errors import ErrorCode

CRED = ScramCredential("SCRAM-SHA-256", b"s" * 16, 4096, b"k" * 32, b"v" * 32)
READ_T = AclBinding("User:alice", "topic", "t", "literal", "read", "allow")


def test_records_apply_in_order_and_a_snapshot_rebuilds_the_same_state():
    image = MetadataImage()
    for record in [scram_credential_record("alice", CRED), acl_record(READ_T),
                   acl_record(AclBinding("User:*", "topic", "log-", "prefixed", "write", "deny")),
                   quota_record(DEFAULT_QUOTA_PRINCIPAL, QuotaEntry(1000, None)),
                   acl_record(READ_T, remove=True)]:
        apply_record(image, check_record(record))
    sec = image.security
    assert sec.users == {"alice": {"SCRAM-SHA-256": CRED}}
    assert sec.acls == {AclBinding("User:*", "topic", "log-", "prefixed", "write", "deny")}
    assert sec.quotas == {DEFAULT_QUOTA_PRINCIPAL: QuotaEntry(1000, None)}
    rebuilt = MetadataImage()
    for record in image_records(image):
        apply_record(rebuilt, record)
    assert (rebuilt.security.users, rebuilt.security.acls, rebuilt.security.quotas) == (sec.users, sec.acls, sec.quotas)
    apply_record(image, {"type": "remove_scram_credential", "name": "alice", "mechanism": None})
    apply_record(image, quota_record(DEFAULT_QUOTA_PRINCIPAL, QuotaEntry()))
    assert not image.security.users and not image.security.quotas


@pytest.mark.parametrize("record, named", [
    ({"type": "acl", "principal": "alice", "resource_type": "topic", "name": "t", "pattern": "literal",
      "operation": "read", "permission": "allow"}, "principal"),
    ({**acl_record(READ_T), "operation": "fly"}, "operation"),
    ({**acl_record(READ_T), "resource_type": "cluster", "name": "x"}, "cluster"),
    ({**scram_credential_record("alice", CRED), "iterations": 10}, "iterations"),
    ({**scram_credential_record("alice", CRED), "stored_key": b"short"}, "stored_key"),
    ({**quota_record("User:a", QuotaEntry(0, None))}, "produce_bytes_per_s"),
    ({"type": "topic"}, "not a security record"),
])
def test_a_bad_record_is_refused_naming_the_field(record, named):
    with pytest.raises(ValueError, match=named):
        check_record(record)


def test_alter_security_commits_through_the_controller_and_refuses_bad_records(tmp_path):
    app = single_app(tmp_path)
    try:
        assert settle(app.admin.alter_security(INTERNAL, AlterSecurity([acl_record(READ_T)]), START_MS)) is None
        assert app.control.image.security.acls == {READ_T}
        bad = AlterSecurity([acl_record(READ_T), {**acl_record(READ_T), "permission": "maybe"}])
        assert error_code(lambda: app.admin.alter_security(INTERNAL, bad, START_MS)) == ErrorCode.INVALID_REQUEST
    finally:
        app.close(START_MS)
