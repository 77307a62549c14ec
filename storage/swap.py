"""The crash-safe swap of a rewritten segment (compaction), and its recovery on open.

A cleaned copy of segment ``<base>`` is written as ``<base>.log.cleaned`` (with
``.index.cleaned`` and ``.timeindex.cleaned``), then:

1. fsynced (the cleaner);
2. renamed to ``<base>.log.swap`` and the directory fsynced -- the commit point
   (:func:`commit_swap`);
3. the new indexes renamed over the old ones and ``.swap`` renamed over ``.log``,
   directory fsynced (:func:`finish_swap`).

A crash before step 2 leaves a ``.cleaned`` file, swept as a stray on open: the old
segment stands.  A crash after it leaves a ``.swap`` file, which
:func:`complete_interrupted_swaps` finishes when the log is opened.  Both the log (on
open) and the cleaner use this module; the log does not depend on the cleaner.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from storage.checkpoint import fsync_dir
from storage.handles import FileHandleCache
from storage.segment import INDEX_SUFFIX, LOG_SUFFIX, TIMEINDEX_SUFFIX, segment_name

log = logging.getLogger(__name__)

CLEANED = ".cleaned"  # the suffix a cleaned copy of any segment file carries
CLEANED_SUFFIX = LOG_SUFFIX + CLEANED
SWAP_SUFFIX = LOG_SUFFIX + ".swap"


def complete_interrupted_swaps(directory: Path, handles: FileHandleCache | None = None) -> int:
    """Recovery: finish every swap whose ``<base>.log.swap`` file exists (called on log open).

    ``.cleaned`` files (interrupted before the commit point) are left to the caller's stray
    file sweep.

    Returns:
        Number of swaps completed.
    """
    n = 0
    for entry in os.scandir(directory):
        stem = entry.name[:-len(SWAP_SUFFIX)]
        if entry.name.endswith(SWAP_SUFFIX) and len(stem) == 20 and stem.isdigit():
            log.info("completing interrupted segment swap path=%s", entry.path)
            finish_swap(Path(directory), int(stem), handles)
            n += 1
    return n


def commit_swap(cleaned: Path) -> Path:
    """Step 2 (the commit point): rename ``.cleaned`` to ``.swap`` durably."""
    swap = cleaned.with_name(cleaned.name[:-len(CLEANED_SUFFIX)] + SWAP_SUFFIX)
    os.replace(cleaned, swap)
    fsync_dir(cleaned.parent)
    return swap


def finish_swap(directory: Path, base: int, handles: FileHandleCache | None) -> None:
    """Step 3: put the new indexes in place of the old ones (or, if they are not there, drop
    the old ones: opening rebuilds them), rename ``.swap`` over ``.log`` durably."""
    stem = directory / segment_name(base)
    for suffix in (INDEX_SUFFIX, TIMEINDEX_SUFFIX, LOG_SUFFIX):
        if handles is not None:
            handles.close(str(stem) + suffix)
            handles.close(str(stem) + suffix + CLEANED)
    for suffix in (INDEX_SUFFIX, TIMEINDEX_SUFFIX):
        try:
            os.replace(str(stem) + suffix + CLEANED, str(stem) + suffix)
        except FileNotFoundError:
            try:
                os.unlink(str(stem) + suffix)
            except FileNotFoundError:
                pass
    os.replace(str(stem) + SWAP_SUFFIX, str(stem) + LOG_SUFFIX)
    fsync_dir(directory)
