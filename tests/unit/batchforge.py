"""Forge record batches for tests: any header fields, any payload, a CRC that matches.

What a hostile or buggy producer could send: the CRC is right, so only the broker's rules
stand between these bytes and the log.
"""

import struct

import crc32c

from storage import HEADER_SIZE, build_native_batch, parse_header

_TAIL = struct.Struct(">hiqqqhii")  # attributes .. record_count: what the CRC covers, with the payload


def forge(batch: bytes | None = None, payload: bytes | None = None, **fields) -> bytes:
    """``batch`` (default: one native record) with header ``fields`` and/or ``payload`` replaced.

    ``fields`` are :class:`storage.BatchHeader` names; ``batch_length`` follows the payload
    and the CRC is recomputed unless given.
    """
    batch = batch if batch is not None else build_native_batch([(1_000, None, b"v", None)])
    h = parse_header(batch)._asdict()
    body = batch[HEADER_SIZE:] if payload is None else payload
    h.update(fields)
    if "batch_length" not in fields:
        h["batch_length"] = HEADER_SIZE - 12 + len(body)
    tail = _TAIL.pack(h["attributes"], h["last_offset_delta"], h["base_timestamp"], h["max_timestamp"],
                      h["producer_id"], h["producer_epoch"], h["base_sequence"], h["record_count"])
    crc = fields.get("crc", crc32c.crc32c(body, crc32c.crc32c(tail)))
    return struct.pack(">qiibI", h["base_offset"], h["batch_length"], h["leader_epoch"], h["magic"], crc) + tail + body
