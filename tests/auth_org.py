"""Shared fixtures of the Auth and Federation tests: a sandbox organization of three servers on a clock the tests
move, and `exbe` run on it. Imported by the test modules that use them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exbe.sandbox import clock
from exbe.sandbox.authconfig import Organization
from exbe.sandbox.fleet import Fleet

from .exbe_cli import CliResult, run_exbe

HOSTS = [("exch01", "healthy"), ("exch02", "healthy"), ("exch03", "healthy")]
Exbe = Callable[..., tuple[CliResult, dict]]


@pytest.fixture(autouse=True)
def real_time() -> Iterator[None]:
    """Every test starts and ends on real time, whatever it moved."""
    clock.reset()
    yield
    clock.reset()


@pytest.fixture
def world(start_fleet: Callable[..., Fleet]) -> Iterator[tuple[Fleet, Organization]]:
    """Three servers of one organization (exch01 reads and changes it)."""
    fleet = start_fleet(HOSTS)
    organization = Organization.of_fleet(fleet)
    yield fleet, organization
    organization.leave()


@pytest.fixture
def exbe(world: tuple[Fleet, Organization], tmp_path: Path, capsys: pytest.CaptureFixture,
         monkeypatch: pytest.MonkeyPatch) -> Exbe:
    """`exbe <args> --all --json <file>` on the organization's fleet: the outcome and the JSON record."""
    runs = iter(range(1, 1000))

    def run(*args: str) -> tuple[CliResult, dict]:
        record = tmp_path / f"run{next(runs)}.json"
        result = run_exbe(world[0], tmp_path, capsys, monkeypatch, *args, "--all", "--json", str(record))
        return result, json.loads(record.read_text(encoding="utf-8"))
    return run


@pytest.fixture
def org(world: tuple[Fleet, Organization]) -> Organization:
    """The organization of :func:`world`."""
    return world[1]
