"""The layers of the house hold: the import-linter contracts in pyproject.toml (docs/architecture.md §1)."""

import subprocess
import sys
from pathlib import Path

from zbroker import protocol as P
from zbroker.control import raft
from zbroker.frontends.native.handlers import ROUTES

ROOT = Path(__file__).resolve().parents[2]
LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))")


def test_import_contracts_are_kept():
    # in its own process: import-linter configures logging, which would silence this run's loggers
    run = subprocess.run([sys.executable, "-c", LINT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_native_protocol_carries_every_raft_message_and_routes_every_request_type():
    assert set(raft.MESSAGE_TYPES) == set(P.RAFT_SCHEMAS)
    assert {route.kind for route in ROUTES} == set(P.SCHEMAS)
