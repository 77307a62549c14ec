"""Real Kafka clients for the Kafka door's tests: helpers to run them."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def kcat_path() -> str:
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat is not installed: run ./scripts/test.sh (it installs Debian's kcat)")
    return path


def kcat(bootstrap: str, *args: str, input: bytes | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run kcat against ``bootstrap``; the completed process (stdout and stderr as bytes)."""
    return subprocess.run([kcat_path(), "-b", bootstrap, *args], input=input, capture_output=True, timeout=timeout)
