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
             *args: str, password: str = PASSWORD, config: Path | None = None) -> CliResult:
    """`exbe -f <fleet inventory> ARGS` with the fleet's credentials in EXBE_USERNAME/EXBE_PASSWORD."""
    config = config or write_config(fleet, tmp_path / "exbe.yaml")
    monkeypatch.setenv("EXBE_USERNAME", USERNAME)
    monkeypatch.setenv("EXBE_PASSWORD", password)
    capsys.readouterr()
    try:
        ExbeProgram().run(["exbe", "-f", str(config), *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)
