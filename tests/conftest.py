"""Shared fixtures: sandbox fleets started in-process on free loopback ports (exbe.sandbox.fleet)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from exbe.config import Credentials
from exbe.inventory import load_inventory
from exbe.redaction import Secret
from exbe.sandbox.faults import Faults
from exbe.sandbox.fleet import Fleet
from exbe.transport import Session

PASSWORD = "Sandb0x-Pa55;'\"$(x)"
USERNAME = "SANDBOX\\exbe-admin"

# Hypothesis's per-example deadline is a timing assertion: the suite must pass beside a CPU hog, and speed lives in
# bench/, never in timed tests.
settings.register_profile("exbe", deadline=None)
settings.load_profile("exbe")


@pytest.fixture
def start_fleet(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    """Start a fleet: ``start_fleet([("exch01", "healthy")], faults={"exch01": Faults(...)}, latency_ms=0)``."""
    fleets: list[Fleet] = []

    def start(hosts: list[tuple[str, str]], *, faults: dict[str, Faults] | None = None, latency_ms: int = 0) -> Fleet:
        fleet = Fleet(tmp_path / f"sandbox{len(fleets)}", hosts, faults=faults, latency_ms=latency_ms,
                      username=USERNAME, password=PASSWORD)
        fleets.append(fleet)
        return fleet.start()

    yield start
    for fleet in fleets:
        fleet.stop()


@pytest.fixture
def fleet(start_fleet: Callable[..., Fleet]) -> Fleet:
    """One healthy host, exch01."""
    return start_fleet([("exch01", "healthy")])


def first_server_session(fleet: Fleet) -> Session:
    """A session (not yet opened) to the fleet's first server, with the sandbox's account."""
    server = load_inventory({"inventory": fleet.inventory()})[0]
    return Session(server, Credentials(USERNAME, Secret(PASSWORD)))


@pytest.fixture(autouse=True)
def _no_ci_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests decide for themselves whether they run 'in' Azure Pipelines or GitHub Actions."""
    for name in ("TF_BUILD", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT",
                 "EXBE_USERNAME", "EXBE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def exbe(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Run exbe in-process against a fleet: ``exbe(fleet, "renew", "--all")`` (tests/exbe_cli.py's run_exbe)."""
    from .exbe_cli import run_exbe  # it imports this module's credentials

    def run(fleet: Fleet, *args: str, **kwargs: Any) -> Any:
        return run_exbe(fleet, tmp_path, capsys, monkeypatch, *args, **kwargs)
    return run
