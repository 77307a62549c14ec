"""The layers of the house hold: the import-linter contracts in pyproject.toml (docs/architecture.md §1)."""

from pathlib import Path

from importlinter.cli import lint_imports

from zbroker import protocol as P
from zbroker.control import raft
from zbroker.frontends.native.handlers import ROUTES

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0, "see the broken contract above"


def test_the_native_protocol_carries_every_raft_message_and_routes_every_request_type():
    assert set(raft.MESSAGE_TYPES) == set(P.RAFT_SCHEMAS)
    assert {route.kind for route in ROUTES} == set(P.SCHEMAS)
