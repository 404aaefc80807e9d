"""The sandbox only when asked: without an inventory exbe stops with a hint; with --sandbox every report says the
servers were simulated."""

from __future__ import annotations

import json

import junitparser
import pytest
from invoke.program import Program

import tasks as checkout_tasks
from exbe.main import ExbeProgram

TASKS = ["preflight", "renew", "trust", "bind", "restart", "verify", "cleanup"]


def _run(program: Program, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        program.run(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("ci", [{}, {"TF_BUILD": "True"}, {"CI": "true", "GITHUB_ACTIONS": "true"}],
                         ids=["terminal", "azure", "github"])
def test_without_an_inventory_every_task_stops_with_one_line_naming_where_exbe_looked_and_sandbox(
        tmp_path, capsys, monkeypatch, task, ci):
    monkeypatch.chdir(tmp_path)
    for name, value in ci.items():
        monkeypatch.setenv(name, value)
    code, out, err = _run(ExbeProgram(), ["exbe", task, "--all"], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("exbe:")]
    assert len(lines) == 1 and "no inventory is configured" in lines[0] and "--sandbox" in lines[0]
    assert str(tmp_path) in lines[0], "it says where it looked"
    assert "SANDBOX" not in out + err, "nothing ran on simulated servers"


def test_plain_invoke_in_a_checkout_stops_the_same_way(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(Program(namespace=checkout_tasks.ns), ["invoke", "verify", "--all"], capsys)
    assert code == 2 and "no inventory is configured" in err and "--sandbox" in err


def test_with_sandbox_the_run_says_it_was_simulated_in_the_console_junit_and_json(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EXBE_SANDBOX_HOSTS", "2")
    monkeypatch.setenv("EXBE_SANDBOX_SCENARIOS", "healthy")
    code, out, err = _run(ExbeProgram(), ["exbe", "verify", "--all", "--sandbox", "--json", "r.json",
                                          "--junit", "r.xml"], capsys)
    assert code == 0, out + err
    assert err.startswith("SANDBOX: ") and "simulated servers; nothing ran on Windows" in err
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["simulated"] is True and all(server["simulated"] for server in record["servers"])
    for suite in junitparser.JUnitXml.fromfile(str(tmp_path / "r.xml")):
        assert {p.name: p.value for p in suite.properties()}["simulated"] == "true"
    assert not (tmp_path / ".exbe-sandbox").exists(), "the embedded fleet keeps its state in a directory of its own"
