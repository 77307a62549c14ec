"""Server-side assignors: the target assignment of a group's partitions to its members (pure).

Each takes the members (anything with a ``topics`` list, keyed by member id) and
``partitions_of(topic) -> count`` and returns ``{member id: {(topic, partition), ...}}``:

- ``range`` -- per topic, consecutive partitions to the subscribed members in id order
  (Kafka's RangeAssignor);
- ``round_robin`` -- every subscribed partition in turn to the next subscribed member;
- ``sticky`` (the default) -- keeps each member's current partitions where the balance allows,
  moves as few as possible (the KIP-848 ``uniform`` assignor's aim).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from zbroker.groups.group import Member

TP = tuple[str, int]

ASSIGNORS = ("sticky", "range", "round_robin")


def _partitions(topics: set[str], partitions_of: Callable[[str], int | None]) -> list[TP]:
    out = []
    for t in sorted(topics):
        n = partitions_of(t) or 0
        out.extend((t, p) for p in range(n))
    return out


def assign_range(members: dict[str, Member], partitions_of) -> dict[str, set[TP]]:
    """Per topic, contiguous ranges over the members subscribed to it (Kafka's range)."""
    out = {m: set() for m in members}
    topics = {t for m in members.values() for t in m.topics}
    for t in sorted(topics):
        subs = sorted(m for m, mem in members.items() if t in mem.topics)
        n = partitions_of(t) or 0
        if not subs:
            continue
        per, extra = divmod(n, len(subs))
        start = 0
        for i, m in enumerate(subs):
            count = per + (1 if i < extra else 0)
            out[m].update((t, p) for p in range(start, start + count))
            start += count
    return out


def assign_round_robin(members: dict[str, Member], partitions_of) -> dict[str, set[TP]]:
    """All partitions in order, dealt to the subscribed members in turn."""
    out = {m: set() for m in members}
    ids = sorted(members)
    i = 0
    for tp in _partitions({t for m in members.values() for t in m.topics}, partitions_of):
        for _ in range(len(ids)):
            m = ids[i % len(ids)]
            i += 1
            if tp[0] in members[m].topics:
                out[m].add(tp)
                break
    return out


def assign_sticky(members: dict[str, Member], partitions_of) -> dict[str, set[TP]]:
    """Balanced, keeping every partition where it is when balance allows (fewest moves)."""
    out = {m: set() for m in members}
    if not members:
        return out
    every = _partitions({t for m in members.values() for t in m.topics}, partitions_of)
    eligible = {tp: sorted(m for m, mem in members.items() if tp[0] in mem.topics) for tp in every}
    quota_base, extra = divmod(len(every), len(members))
    ids = sorted(members)
    quota = {m: quota_base + (1 if i < extra else 0) for i, m in enumerate(ids)}
    free = []
    for tp in every:
        holder = next((m for m in ids if tp in members[m].assigned or tp in members[m].revoking), None)
        if holder is not None and holder in eligible[tp] and len(out[holder]) < quota[holder]:
            out[holder].add(tp)
        else:
            free.append(tp)
    for tp in free:
        candidates = eligible[tp]
        if candidates:
            best = min(candidates, key=lambda m: (len(out[m]) - quota[m], len(out[m]), m))
            out[best].add(tp)
    return out


ASSIGNOR_FUNCS = {"sticky": assign_sticky, "range": assign_range, "round_robin": assign_round_robin}
