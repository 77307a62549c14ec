"""The records of ``__consumer_offsets``: encoded, decoded and checked (pure).

A group's coordinator appends them to the group's offsets partition and replays them when it
becomes the partition's leader (:mod:`zbroker.groups.coordinator`).  Keys and values are
msgpack::

    ["o", group, topic, partition] -> {"offset", "metadata", "ts"}       a committed offset
    ["m", group, member_id]        -> Member.to_record() | nil          a member (nil: removed)
    ["g", group]                   -> {"epoch"} | nil                   the group (nil: deleted)

Classic groups (:mod:`zbroker.groups.classic`) write offsets only: their membership is kept in
memory.
"""

from __future__ import annotations

import msgpack


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def _check_tps(pairs, what: str) -> None:
    _check(pairs is None or (isinstance(pairs, list) and all(
        isinstance(tp, list) and len(tp) == 2 and isinstance(tp[0], str) and _is_int(tp[1]) for tp in pairs)),
        f"{what} must be a list of [topic, partition]")


def parse_record(key: bytes | None, value: bytes | None) -> tuple[list, dict | None]:
    """Unpack one ``__consumer_offsets`` record and check its shape (the module docstring draws them).

    Raises:
        ValueError (or msgpack's errors): naming what is wrong; nothing is applied then.
    """
    k = msgpack.unpackb(key, raw=False)
    v = None if value is None else msgpack.unpackb(value, raw=False)
    _check(isinstance(k, list) and len(k) >= 2 and isinstance(k[1], str) and k[1] != "", "key must be [kind, group, ...]")
    _check(v is None or isinstance(v, dict), "value must be a map or nil")
    kind = k[0]
    if kind == "o":
        _check(len(k) == 4 and isinstance(k[2], str) and _is_int(k[3]) and k[3] >= 0, "key must be ['o', group, topic, partition]")
        _check(v is None or (_is_int(v.get("offset")) and isinstance(v.get("metadata") or "", str)),
               "an offset value needs an integer 'offset' and a string 'metadata'")
    elif kind == "m":
        _check(len(k) == 3 and isinstance(k[2], str), "key must be ['m', group, member_id]")
        if v is not None:
            _check(v.get("member_id") == k[2], "a member value needs the key's 'member_id'")
            for name in ("instance_id", "assignor"):
                _check(v.get(name) is None or isinstance(v[name], str), f"member '{name}' must be a string or nil")
            _check(isinstance(v.get("client_id", ""), str), "member 'client_id' must be a string")
            _check(isinstance(v.get("topics") or [], list) and all(isinstance(t, str) for t in v.get("topics") or []),
                   "member 'topics' must be a list of strings")
            for name in ("rebalance_timeout_ms", "epoch", "session_ms"):
                _check(name not in v or _is_int(v[name]), f"member '{name}' must be an integer")
            for name in ("assigned", "revoking"):
                _check_tps(v.get(name), f"member '{name}'")
    elif kind == "g":
        _check(len(k) == 2 and (v is None or _is_int(v.get("epoch"))), "a group record is ['g', group] -> {epoch}")
    else:
        raise ValueError(f"unknown record kind {repr(kind)[:40]}")
    return k, v
