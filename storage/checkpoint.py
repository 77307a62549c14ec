"""Small metadata files written atomically, and the offset checkpoint format.

Offset checkpoint file (``recovery-point-offset-checkpoint``,
``replication-offset-checkpoint``), text, one item per line::

    0                      <- format version
    2                      <- number of entries
    orders 0 1234          <- topic partition offset
    orders 1 998

Every write goes to ``<path>.tmp``, is fsynced, renamed over ``<path>``, and the directory
is fsynced, so a crash leaves either the old or the new file, never a torn one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from storage.errors import CheckpointError

log = logging.getLogger(__name__)

__all__ = ["write_atomic", "fsync_dir", "OffsetCheckpoint", "CheckpointError"]

CHECKPOINT_VERSION = 0


def fsync_dir(directory: str | os.PathLike) -> None:
    """fsync a directory so that file creations, renames and deletions in it are durable."""
    fd = os.open(os.fspath(directory), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Writes ``path.tmp``, fsyncs it, renames it over ``path`` and fsyncs the directory.

    Args:
        path: Destination file.
        data: Full new contents.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def parse_versioned_lines(path: Path, text: str, fields: int) -> list[list[str]]:
    """Parse the ``version / count / entries`` text format shared by checkpoints.

    Args:
        path: File name, for error messages.
        text: File contents.
        fields: Number of space-separated fields per entry line.

    Returns:
        The entry lines, split into fields.

    Raises:
        CheckpointError: Naming the file and the 1-based line number.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2:
        raise CheckpointError(f"{path}: line {len(lines) + 1}: missing version/count header")
    if lines[0].strip() != str(CHECKPOINT_VERSION):
        raise CheckpointError(f"{path}: line 1: unsupported version {lines[0]!r}")
    try:
        count = int(lines[1])
    except ValueError:
        raise CheckpointError(f"{path}: line 2: bad entry count {lines[1]!r}") from None
    if count != len(lines) - 2:
        raise CheckpointError(
            f"{path}: line 2: count says {count} entries, file has {len(lines) - 2}"
        )
    out = []
    for i, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if len(parts) != fields:
            raise CheckpointError(f"{path}: line {i}: expected {fields} fields, got {line!r}")
        out.append(parts)
    return out


def read_int_pairs(path: Path, what: str) -> list[tuple[int, int]]:
    """The entries of a versioned file of two integers per line (a missing file: none).

    Args:
        path: The file.
        what: What the two integers are, for the error message ("epoch and offset").

    Raises:
        CheckpointError: Naming the file and the line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: not UTF-8 text: {exc}") from None
    out = []
    for i, (a, b) in enumerate(parse_versioned_lines(path, text, 2), start=3):
        try:
            out.append((int(a), int(b)))
        except ValueError:
            raise CheckpointError(f"{path}: line {i}: {what} must be integers") from None
    return out


class OffsetCheckpoint:
    """A ``(topic, partition) -> offset`` map persisted atomically.

    Args:
        path: The checkpoint file (it need not exist yet).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def read(self) -> dict[tuple[str, int], int]:
        """Read the checkpoint; a missing file reads as an empty map.

        Raises:
            CheckpointError: The file is malformed (message names file and line).
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"{self.path}: not UTF-8 text: {exc}") from None
        out: dict[tuple[str, int], int] = {}
        for i, (topic, part, off) in enumerate(parse_versioned_lines(self.path, text, 3), start=3):
            try:
                out[(topic, int(part))] = int(off)
            except ValueError:
                raise CheckpointError(
                    f"{self.path}: line {i}: partition and offset must be integers"
                ) from None
        return out

    def write(self, offsets: dict[tuple[str, int], int]) -> None:
        """Atomically replace the checkpoint with ``offsets``.

        Raises:
            ValueError: A topic name contains whitespace.
        """
        lines = [str(CHECKPOINT_VERSION), str(len(offsets))]
        for (topic, part), off in sorted(offsets.items()):
            if not topic or any(c.isspace() for c in topic):
                raise ValueError(f"topic name {topic!r} cannot be checkpointed")
            lines.append(f"{topic} {int(part)} {int(off)}")
        write_atomic(self.path, ("\n".join(lines) + "\n").encode("utf-8"))
