"""The heartbeat frame on the gossip PUB/SUB sockets: one msgpack map per beat."""

from __future__ import annotations

import msgpack


def encode_heartbeat(beat: dict) -> bytes:
    return msgpack.packb(beat, use_bin_type=True)


def decode_heartbeat(frame: bytes) -> dict | None:
    """The beat, or None for garbage (beats may be lost anyway: garbage is ignored)."""
    try:
        beat = msgpack.unpackb(frame, raw=False)
    except Exception:
        return None
    return beat if isinstance(beat, dict) else None
