"""Run the real `exbe` command line in-process against a sandbox fleet, the way an admin or a pipeline would."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from exbe.main import ExbeProgram
from exbe.sandbox.fleet import Fleet

from .conftest import PASSWORD, USERNAME


@dataclasses.dataclass
class CliResult:
    code: int
    out: str
    err: str


def write_config(fleet: Fleet, path: Path, **defaults: object) -> Path:
    document = {"exbe": {"inventory": fleet.inventory(), "defaults": defaults}}
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def run_exbe(fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
             *args: str, password: str = PASSWORD, config: Path | None = None, credentials: bool = True,
             env: dict[str, str] | None = None) -> CliResult:
    """`exbe -f <fleet inventory> ARGS` with the fleet's credentials in EXBE_USERNAME/EXBE_PASSWORD (none at all with
    ``credentials=False``) and ``env`` added to the environment."""
    config = config or write_config(fleet, tmp_path / "exbe.yaml")
    if credentials:
        monkeypatch.setenv("EXBE_USERNAME", USERNAME)
        monkeypatch.setenv("EXBE_PASSWORD", password)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    try:
        ExbeProgram().run(["exbe", "-f", str(config), *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def requests_seen(fleet: Fleet) -> int:
    """How many HTTP requests the fleet's servers have received so far."""
    return sum(count for endpoints in fleet.request_counts().values() for actions in endpoints.values()
               for count in actions.values())
