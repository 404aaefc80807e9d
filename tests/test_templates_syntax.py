"""Every script exbe renders is valid Windows PowerShell 5.1 that calls only documented commands and parameters.

No PowerShell runs here: tree-sitter-pwsh checks the syntax, tests/data/ps_commands.json (built from Microsoft's
documentation) checks command and parameter names.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from exbe import __version__, contract
from exbe.model import Settings
from exbe.render import MANUAL_TASKS, TEMPLATE_DIR, manual_input, render_manual, render_step
from tests import pwsh

OLD = "A1" * 20
NEW = "B2" * 20
SITES = {"backend_site": "Exchange Back End", "frontend_site": "Default Web Site"}
PS_COMMANDS = json.loads((Path(__file__).parent / "data" / "ps_commands.json").read_text(encoding="utf-8"))


def _step_variants() -> list[tuple[str, str, dict]]:
    variants = [("facts", "facts", {**SITES, "friendly_name": "Microsoft Exchange"})]
    for dry in (False, True):
        variants.append((f"clone-dry{dry}", "clone", {
            "source_thumbprint": OLD, "provider": "Microsoft RSA SChannel Cryptographic Provider", "key_length": 2048,
            "hash_algorithm": "SHA256", "validity_years": 5, "dry_run": dry}))
        variants.append((f"trust-dry{dry}", "trust", {"thumbprint": NEW, "dry_run": dry}))
        for backend in (None, "*:444:"):
            for loopback in (None, OLD):
                variants.append((f"bind-dry{dry}-backend{backend is not None}-loopback{loopback is not None}", "bind",
                                 {"thumbprint": NEW, **SITES, "backend_binding": backend,
                                  "loopback_binding": "127.0.0.1:443:" if loopback else None, "loopback_from": loopback,
                                  "after_trust": not dry, "dry_run": dry}))
        for method in ("iisreset", "services"):
            variants.append((f"restart-{method}-dry{dry}", "restart",
                             {"method": method, "timeout_seconds": 120, "dry_run": dry}))
        for count in (0, 1, 2):
            variants.append((f"cleanup-{count}-dry{dry}", "cleanup",
                             {"thumbprints": [OLD, NEW][:count], **SITES, "dry_run": dry}))
    return variants


def _manual_variants() -> list[tuple[str, str, dict]]:
    variants = []
    for task in MANUAL_TASKS:
        for thumbprint in (None, NEW):
            for smtp in ("keep", "move"):
                variants.append((f"manual-{task}-thumbprint{thumbprint is not None}-{smtp}", task, manual_input(
                    Settings(force=smtp == "move", trust=smtp == "keep", smtp=smtp), thumbprint=thumbprint)))
    return variants


STEP_VARIANTS = _step_variants()
MANUAL_VARIANTS = _manual_variants()
RENDERED = {name: render_step(step, data, readable=True) for name, step, data in STEP_VARIANTS}
RENDERED.update({name: render_manual(task, data) for name, task, data in MANUAL_VARIANTS})
#: the wire form exbe sends (comments and indentation stripped) is held to every check of the readable one
RENDERED.update({f"{name}-wire": render_step(step, data) for name, step, data in STEP_VARIANTS})


def _allowed_parameters(text: str) -> dict[str, set[str]]:
    """Command name (lower case) -> parameter names (lower case) it accepts, documented or script-defined."""
    common = {p.lower() for p in PS_COMMANDS["common_parameters"]["parameters"]}
    should_process = {p.lower() for p in PS_COMMANDS["common_parameters"]["should_process"]}
    allowed = {name.lower(): {p.lower() for p in spec["parameters"]} | (common if not name.endswith(".exe") else set())
               for name, spec in PS_COMMANDS["commands"].items()}
    advanced = pwsh.advanced_functions(text)
    for name, parameters in pwsh.functions(text).items():
        accepted = {p.lower() for p in parameters}
        if name in advanced:
            accepted |= common
            if re.search(r"function " + re.escape(name) + r" \{[^}]*SupportsShouldProcess = \$true", text):
                accepted |= should_process
        allowed[name.lower()] = accepted
    return allowed


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_every_rendered_script_parses_as_powershell_without_errors(name: str) -> None:
    assert pwsh.syntax_errors(RENDERED[name]) == []


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_every_command_called_is_documented_or_defined_in_the_script(name: str) -> None:
    allowed = _allowed_parameters(RENDERED[name])
    unknown = sorted({f"{c.name} (line {c.line})" for c in pwsh.commands(RENDERED[name])
                      if c.name.lower() not in allowed})
    assert unknown == []


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_every_parameter_passed_is_one_the_command_documents(name: str) -> None:
    allowed = _allowed_parameters(RENDERED[name])
    wrong = [f"{c.name} -{p} (line {c.line})" for c in pwsh.commands(RENDERED[name])
             for p in c.parameters if p.lower() not in allowed.get(c.name.lower(), set())]
    assert wrong == []


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_scripts_use_no_powershell_7_only_syntax(name: str) -> None:
    assert pwsh.ps7_only(RENDERED[name]) == []


PLATFORM_CHECK = "if (-not ($PSVersionTable.PSVersion.Major -eq 5 -and $PSVersionTable.PSVersion.Minor -ge 1 -and " \
                 "$PSVersionTable.PSEdition -eq 'Desktop')) {"


@pytest.mark.parametrize("name,step", [(n, s) for n, s, _ in STEP_VARIANTS])
def test_a_step_script_checks_for_windows_powershell_5_1_desktop_before_anything_else(name: str, step: str) -> None:
    text = RENDERED[name]
    before = text[:text.index(PLATFORM_CHECK)].split("\n")[1:]
    assert [line for line in before if line and not line.startswith("#")] == [f"$exbeStep = '{step}'"]


@pytest.mark.parametrize("name", [n for n, _, _ in MANUAL_VARIANTS])
def test_a_manual_script_checks_the_platform_then_elevation_before_anything_else_and_stops_on_either(name: str) -> None:
    text = RENDERED[name]
    before = text[:text.index(PLATFORM_CHECK)].split("\n")[1:]
    code = [line for line in before if line and not line.startswith("#")]
    # only the settings come first (the input document, data that ConvertFrom-Json reads on any PowerShell 3.0+)
    assert code[:3] == ["[CmdletBinding(SupportsShouldProcess = $true)]", "param()", "$ExbeInput = ConvertFrom-Json @'"]
    assert code[4:] == ["'@"] and code[3].startswith("{")
    checks = text[text.index(PLATFORM_CHECK):text.index("Set-StrictMode")]
    assert "IsInRole([System.Security.Principal.WindowsBuiltInRole]::Administrator)" in checks
    assert checks.count("exit 1") == 2 and "function " not in checks


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_every_script_parses_on_windows_powershell_4_0_so_its_platform_check_can_run(name: str) -> None:
    assert pwsh.newer_than_ps4(RENDERED[name]) == []


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_scripts_are_ascii_only_so_no_code_page_can_garble_them(name: str) -> None:
    assert RENDERED[name].isascii()


@pytest.mark.parametrize("path", sorted(TEMPLATE_DIR.glob("*.ps1.j2")), ids=lambda p: p.name)
def test_template_files_are_ascii_without_tabs_or_carriage_returns(path: Path) -> None:
    source = path.read_bytes()
    assert source.isascii() and b"\r" not in source and b"\t" not in source


@pytest.mark.parametrize("name,step", [(n, s) for n, s, _ in STEP_VARIANTS])
def test_a_step_script_starts_with_the_exbe_step_header(name: str, step: str) -> None:
    first = RENDERED[name].split("\n", 1)[0]
    assert re.fullmatch(rf"# exbe-step: {step} \| exbe {re.escape(__version__)} \| template [0-9a-f]{{12}}", first)
    assert contract.parse_script(RENDERED[name])[0] == step


@pytest.mark.parametrize("name,task", [(n, t) for n, t, _ in MANUAL_VARIANTS])
def test_a_manual_script_starts_with_its_header_then_declares_whatif_support(name: str, task: str) -> None:
    lines = RENDERED[name].split("\n")
    assert re.fullmatch(rf"# exbe-step: manual_{task} \| exbe {re.escape(__version__)} \| template [0-9a-f]{{12}}",
                        lines[0])
    header = list(itertools.takewhile(lambda line: line.startswith("#"), lines[1:]))
    assert lines[1 + len(header):4 + len(header)] == ["[CmdletBinding(SupportsShouldProcess = $true)]", "param()",
                                                      "$ExbeInput = ConvertFrom-Json @'"], "settings at the top"
    said = "\n".join(header)
    for needed in ("Run as administrator", f"Unblock-File -Path .\\{task}.ps1", f".\\{task}.ps1 -WhatIf",
                   "Exchange Management Shell", "Settings:"):
        assert needed in said, needed


@pytest.mark.parametrize("step", ["clone", "trust", "bind", "restart", "cleanup"])
def test_a_changing_step_runs_its_function_with_whatif_set_from_dry_run(step: str) -> None:
    text = next(RENDERED[name] for name, variant_step, _ in STEP_VARIANTS if variant_step == step)
    function = "Invoke-Exbe" + step.capitalize()
    assert function in pwsh.advanced_functions(text)
    assert re.search(r"function " + function + r" \{\s*#[^\n]*(\n\s*#[^\n]*)*\s*"
                     r"\[CmdletBinding\(SupportsShouldProcess = \$true\)\]", text)
    assert [c.parameters for c in pwsh.commands(text) if c.name == function] == [("Doc", "WhatIf")]


def test_every_documented_command_names_the_microsoft_page_it_comes_from() -> None:
    for name, spec in PS_COMMANDS["commands"].items():
        assert spec["parameters"] is not None and spec["doc"], name
        if not name.endswith(".exe"):
            assert spec["doc"].startswith("https://learn.microsoft.com/"), name


def test_the_exchange_cmdlets_exbe_sends_are_documented_with_the_parameters_it_uses() -> None:
    for cmdlet, parameters in contract.EXCHANGE_CMDLETS.items():
        assert set(parameters) <= set(PS_COMMANDS["commands"][cmdlet]["parameters"]), cmdlet


def test_the_checker_itself_reports_broken_syntax_ps7_syntax_and_undocumented_parameters() -> None:
    broken = "function f {\n    if ($true) {\n"
    assert pwsh.syntax_errors(broken)
    assert pwsh.ps7_only("$a = $b ?? 'x'\n$c = $d ? 1 : 2\nGet-Date && Get-Date\n$e?.F\n") != []
    assert len(pwsh.newer_than_ps4("using namespace System.Text\nclass A { [int] $b }\nenum C { D }\n")) == 3
    assert pwsh.newer_than_ps4("$a = [System.Text.StringBuilder]::new()\n") == [], "::new() only fails when it runs"
    script = "Get-Service -Name W3SVC -Parallel\n"
    allowed = _allowed_parameters(script)
    assert [p for c in pwsh.commands(script) for p in c.parameters if p.lower() not in allowed[c.name.lower()]] == \
        ["Parallel"]
