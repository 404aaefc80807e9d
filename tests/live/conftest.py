"""Fixtures of the live suite: the host from ``EXBE_LIVE_*``, exbe run against it, and the gate before changes.

Every test here is skipped, with the reason, unless ``EXBE_LIVE_HOST`` is set; a test that changes the host is
skipped unless ``EXBE_LIVE_ALLOW_CHANGES=1`` too. The default test run collects this directory and skips it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from exbe.errors import CONNECTION_KINDS

from .target import ExbeRun, LiveTarget, run_exbe

NOT_CONFIGURED = ("live test: set EXBE_LIVE_HOST (with EXBE_LIVE_USERNAME and EXBE_LIVE_PASSWORD) to run it against "
                  "a Windows host; see docs/live-testing.md")
NO_CHANGES = "changes the host: set EXBE_LIVE_ALLOW_CHANGES=1 to allow it (docs/live-testing.md says what it changes)"

Exbe = Callable[..., ExbeRun]
AUTH_FAILED = CONNECTION_KINDS["auth"][0]


@pytest.fixture(scope="session")
def target() -> LiveTarget:
    found = LiveTarget.from_env(os.environ)
    if found is None:
        pytest.skip(NOT_CONFIGURED)
    return found


@pytest.fixture(autouse=True)
def _live_only(target: LiveTarget) -> None:
    """Requesting the target is what skips an unconfigured run: every live test depends on it."""


@pytest.fixture(scope="session")
def changes(target: LiveTarget) -> LiveTarget:
    """The target, for a test that changes it (skipped unless changes are allowed)."""
    if not target.allow_changes:
        pytest.skip(NO_CHANGES)
    return target


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exbe-live")


@pytest.fixture(scope="session")
def config(target: LiveTarget, workdir: Path) -> Path:
    # cleanup right after a renewal is what the suite checks: the min age would otherwise make it wait 7 days
    return target.write_config(workdir / "exbe.yaml", min_age_days=0)


@pytest.fixture(scope="session")
def exbe(target: LiveTarget, config: Path, workdir: Path) -> Exbe:
    """``exbe(TASK, *FLAGS)``: the exbe command against the live host (``--server`` added), with its record.

    Once the host refused the credentials, no further command is started (the test is skipped, saying so): each
    would be one more failed logon of the same account, and a suite's worth of them locks it out."""
    refused: list[str] = []

    def run(task: str, *flags: str) -> ExbeRun:
        if refused:
            pytest.skip(f"not attempted: `{refused[0]}` was refused the credentials; fix EXBE_LIVE_USERNAME/"
                        "EXBE_LIVE_PASSWORD before the account locks out")
        result = run_exbe(target, config, workdir, task, "--server", target.name, *flags)
        if result.record and AUTH_FAILED in str(result.server.get("error") or ""):
            refused.append(" ".join(result.argv))
        return result
    return run
