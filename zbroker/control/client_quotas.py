"""Client quota changes as both front doors make them: Kafka's AlterClientQuotas operations
(set a key, remove a key) applied to a principal's entry, as one ``quota`` record.

The records are committed by ``TopicAdmin.alter_security`` (the controller checks them
again); what a request is told about a bad principal, key or value comes from here, so
the native door's ``alter_quotas`` and the Kafka door's AlterClientQuotas say the same.
Keys are the record's fields (``control.security_meta.QuotaEntry``); the Kafka door maps
``producer_byte_rate`` and ``consumer_byte_rate`` onto them.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Iterable

from zbroker.control.security_meta import DEFAULT_QUOTA_PRINCIPAL, QuotaEntry, SecurityImage, check_principal, quota_record
from zbroker.errors import ErrorCode, RequestError

#: The keys of a quota (bytes per second, None = no bound).
QUOTA_KEYS = tuple(f.name for f in fields(QuotaEntry))
MAX_RATE = 2**53
_SHOWN = 64


def quota_change(security: SecurityImage, principal: str, ops: Iterable[tuple[str, object, bool]]) -> dict:
    """The ``quota`` record that applies ``ops`` (``(key, value, remove)``) to ``principal``'s
    entry as ``security`` holds it (keys not named keep their values).

    Raises:
        RequestError: INVALID_REQUEST saying what is wrong.
    """
    if principal != DEFAULT_QUOTA_PRINCIPAL:
        try:
            check_principal(principal)
        except ValueError as exc:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"{exc} (or {DEFAULT_QUOTA_PRINCIPAL})") from None
    now = security.quotas.get(principal)
    entry = QuotaEntry(now.produce_bytes_per_s, now.fetch_bytes_per_s) if now is not None else QuotaEntry()
    for key, value, remove in ops:
        if key not in QUOTA_KEYS:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"unknown quota key {key!r:.{_SHOWN}} (known: {', '.join(QUOTA_KEYS)})")
        if remove:
            value = None
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= MAX_RATE:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"{key} must be a number of bytes per second from 1 to 2**53, "
                                                          f"got {value!r:.{_SHOWN}}")
        setattr(entry, key, value)
    return quota_record(principal, entry)


def quotas_of(security: SecurityImage, principals: Iterable[str] | None = None) -> list[tuple[str, QuotaEntry]]:
    """``(principal, entry)`` of every quota set, or of ``principals`` that have one; sorted."""
    quotas = security.quotas
    names = sorted(quotas) if principals is None else sorted(set(principals) & set(quotas))
    return [(name, quotas[name]) for name in names]
