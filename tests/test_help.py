"""Help that fits exbe: no Invoke flag that means nothing here, flags shown with what they take, help for every task,
and one line with exit code 2 for an option or task exbe does not know."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from exbe.checks import CHECKS
from exbe.main import ExbeProgram
from exbe.sandbox.faults import FAULT_KINDS
from exbe.sandbox.state import SCENARIOS_FILE

TASKS = ["preflight", "renew", "trust", "bind", "restart", "verify", "cleanup", "status", "render", "sandbox"]
#: Invoke's flags for its local command runner, which exbe never uses.
RUNNER_FLAGS = ["-R", "--dry", "--pty", "-p", "--prompt-for-sudo-password", "-e", "--echo", "-w", "--warn-only",
                "-r", "--search-root", "-T", "--command-timeout", "--hide", "--write-pyc", "-c", "--collection",
                "--no-dedupe", "-d", "--debug", "-D", "--list-depth", "-F", "--list-format"]


def exbe(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        ExbeProgram().run(["exbe", *argv])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def flags_in(help_text: str) -> set[str]:
    """The flag names a help text offers (``-f``, ``--config``), read from its option column."""
    return set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)(?=[=\[, ]|$)", "\n".join(
        line.split("   ")[0] for line in help_text.splitlines() if line.startswith("  -")), re.MULTILINE))


def test_exbe_help_offers_only_the_flags_that_mean_something_for_exbe(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = exbe(capsys, "--help")
    assert code == 0
    offered = flags_in(out)
    assert offered == {"--complete", "-f", "--config", "-h", "--help", "-l", "--list", "--print-completion-script",
                       "-V", "--version"}
    assert "-f FILE, --config=FILE" in out and "STRING" not in out
    assert all(task in out for task in TASKS), "the tasks are listed"


@pytest.mark.parametrize("flag", RUNNER_FLAGS)
def test_an_invoke_runner_flag_is_refused_in_one_line_with_exit_code_2(capsys, tmp_path, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)
    code, out, err = exbe(capsys, flag, "verify", "--all")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("exbe: ") and flag in err, err


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_help_with_typed_flags(capsys, task):
    code, out, err = exbe(capsys, task, "--help")
    assert code == 0, err
    assert out.startswith(f"Usage: exbe [-f FILE] {task} ")
    assert "STRING" not in out, "every value is named for what it is"
    if task not in ("render", "sandbox"):
        assert "--verbose" in flags_in(out), "every task run on servers shows step detail on request"
        assert "--server=NAME" in out and "--json=FILE" in out and "--html=FILE" in out
        assert "--junit=FILE" in out or task == "status", "status is a table, not test cases"


def test_numbers_show_as_int_and_choices_as_their_values(capsys):
    _, renew, _ = exbe(capsys, "renew", "--help")
    for spec in ("--days=INT", "--min-age=INT", "--smtp=keep|move", "--shard=I/N", "--restart-iis[=always]"):
        assert spec in renew
    _, sandbox, _ = exbe(capsys, "sandbox", "--help")
    assert "--hosts=INT" in sandbox and "--latency-ms=INT" in sandbox
    assert "-h" not in flags_in(sandbox), "no short flag of a task shadows -h (help) or -f (the config file)"


def test_render_help_works_also_after_the_script_name(capsys):
    for argv in (["render", "--help"], ["render", "renew", "--help"], ["--help", "render"]):
        code, out, err = exbe(capsys, *argv)
        assert code == 0, err
        assert out.startswith("Usage: exbe [-f FILE] render [TASK_NAME] [--options]")
        assert "--output=FILE" in out and "--days=INT" in out


def test_render_help_names_the_scripts_it_writes(capsys):
    code, out, _ = exbe(capsys, "render", "--help")
    assert code == 0
    assert "Print one script (renew, verify, trust, bind or cleanup)" in out
    code, _, err = exbe(capsys, "render")
    assert code == 2 and err == "exbe: render needs a task name: `exbe render --help` says which\n"


def test_render_output_says_what_it_wrote(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = exbe(capsys, "render", "verify", "--output", "scripts/verify.ps1")
    written = (tmp_path / "scripts" / "verify.ps1").read_bytes()
    assert code == 0 and out == ""
    lines = written.decode("utf-8-sig").count("\n")
    assert err == (f"exbe: wrote scripts/verify.ps1: the verify script, {len(written):,} bytes, {lines:,} lines, "
                   "UTF-8 with BOM (what Windows PowerShell 5.1 reads); its header says how to run it\n")


def test_an_unknown_task_option_is_one_line_naming_the_task_and_exit_code_2(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = exbe(capsys, "verify", "--all", "--dayz", "3")
    assert (code, out) == (2, "")
    assert err == "exbe: verify has no option '--dayz'; `exbe verify --help` lists its options\n"


def test_a_missing_positional_value_is_one_line_and_exit_code_2(capsys):
    code, out, err = exbe(capsys, "render")
    assert (code, out) == (2, "")
    assert err == "exbe: render needs a task name: `exbe render --help` says which\n"


def test_text_for_a_number_flag_is_one_line_and_exit_code_2_before_anything_starts(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = exbe(capsys, "sandbox", "--hosts", "x")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "whole number" in err and "exbe sandbox --help" in err
    assert list(tmp_path.iterdir()) == [], "no fleet was started"


def test_an_unknown_task_is_one_line_and_exit_code_2(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = exbe(capsys, "verfy", "--all")
    assert code == 2 and err == "exbe: unknown task 'verfy'; `exbe --list` lists the tasks\n"


def test_sandbox_list_prints_every_scenario_and_fault_kind_and_starts_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = exbe(capsys, "sandbox", "--list")
    assert code == 0
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    scenarios = json.loads(SCENARIOS_FILE.read_text(encoding="utf-8"))["scenarios"]
    assert set(scenarios) <= listed
    assert {kind for kind in FAULT_KINDS} <= {name.split("=")[0] for name in listed}
    assert "backend_expiring               * backend.days_left=20" in out, "what a scenario changes, and 'mixed'"
    assert list(tmp_path.iterdir()) == [], "no fleet, no state directory, no inventory file"


def test_every_verify_check_is_documented_in_docs_checks_md_and_nothing_else_is():
    text = (Path(__file__).resolve().parents[1] / "docs" / "checks.md").read_text(encoding="utf-8")
    documented = re.findall(r"^### `([a-z0-9_]+)`$", text, re.MULTILINE)
    assert documented == [check.__name__ for check in CHECKS], "one section per check, in the order verify runs them"
    for section in re.split(r"^### ", text, flags=re.MULTILINE)[1:]:
        assert "**Looks at:**" in section and "**Do:**" in section, section.splitlines()[0]


def test_the_readme_links_the_check_reference_and_the_runbook():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "(docs/checks.md)" in readme and "(docs/runbook.md)" in readme
