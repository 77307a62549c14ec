"""What the bridges and mirrors of a cluster are doing: every broker's ``bridge_status``.

A bridge runs on the broker its config names and a mirror on the controller's broker, so
the answer is gathered from every broker the cluster's metadata lists; a broker that does
not answer is reported as such rather than hiding its bridges.
"""

from __future__ import annotations

from zbroker.errors import ZBrokerError


def bridge_status(net, meta, timeout_ms: int = 5000) -> list[dict]:
    """One dict per bridge or mirror (``broker``, ``name``, ``kind``, ``state``, counters,
    positions and lag), sorted by name; a broker that did not answer is one entry with
    ``name`` None and ``error``.  ``net``: a NetworkClient; ``meta``: its MetadataManager."""
    meta.refresh([], timeout_ms=timeout_ms)
    out: list[dict] = []
    for info in sorted(meta.cache.brokers.values(), key=lambda b: b.id):
        address = f"{info.host}:{info.port}"
        try:
            header, _ = net.request(address, "bridge_status", {}, timeout_ms=timeout_ms)
        except ZBrokerError as exc:
            out.append({"broker": info.id, "name": None, "error": f"{type(exc).__name__}: {exc}"})
            continue
        out.extend(header.get("bridges") or ())
    return sorted(out, key=lambda e: (e.get("name") is None, e.get("name") or "", e.get("broker", 0)))
