"""A bounded LRU cache of open file handles.

A broker holds thousands of partitions, each with several segments of three files; opening
them all would exhaust file descriptors. Segments never keep a handle of their own: they ask
the cache right before each system call (``cache.get(path).fileno()``), so an evicted handle
is simply reopened on next use. Handles are unbuffered (``io.FileIO``) and used with
``os.pread`` / ``os.pwrite``, so there is no shared file position or buffer to go stale.
"""

from __future__ import annotations

import io
import logging
import os
from collections import OrderedDict

log = logging.getLogger(__name__)

__all__ = ["FileHandleCache"]


class FileHandleCache:
    """Opens files lazily and closes the least recently used beyond ``max_open``.

    Args:
        max_open: Upper bound on simultaneously open handles (at least 2).

    Not thread-safe: use it from the one thread that owns the logs.
    """

    def __init__(self, max_open: int = 1024) -> None:
        if max_open < 2:
            raise ValueError(f"max_open must be >= 2, got {max_open}")
        self.max_open = max_open
        self._open: OrderedDict[tuple[str, str], io.FileIO] = OrderedDict()
        self.opens = 0  # total number of open() calls, for tests and metrics

    def get(self, path: str | os.PathLike, mode: str = "r+b") -> io.FileIO:
        """Return an open unbuffered handle for ``path``, opening it if needed.

        Runtime complexity: O(1) when cached.

        Args:
            path: File path. Must exist unless ``mode`` creates it.
            mode: ``open()`` mode; never pass a truncating mode ("w") since an evicted
                handle is reopened with the same mode.

        Returns:
            The handle. Do not keep it across other ``get`` calls: it may be evicted.
        """
        key = (os.fspath(path), mode)
        f = self._open.get(key)
        if f is not None:
            self._open.move_to_end(key)
            return f
        f = open(key[0], mode, buffering=0)  # noqa: SIM115 - closed on eviction
        self.opens += 1
        self._open[key] = f
        while len(self._open) > self.max_open:
            _, old = self._open.popitem(last=False)
            old.close()
        return f

    def close(self, path: str | os.PathLike) -> None:
        """Close every cached handle of ``path`` (before deleting or renaming it)."""
        p = os.fspath(path)
        for key in [k for k in self._open if k[0] == p]:
            self._open.pop(key).close()

    def close_all(self) -> None:
        """Close every cached handle."""
        while self._open:
            _, f = self._open.popitem()
            f.close()

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, path: str | os.PathLike) -> bool:
        p = os.fspath(path)
        return any(k[0] == p for k in self._open)
