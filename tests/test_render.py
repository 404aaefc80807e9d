"""Rendering: inputs checked against the contract, templates overridable but never mistaken for exbe's own, the
hand-run script a single Exchange Management Shell file."""

from __future__ import annotations

import inspect
import json
import re
import shutil
from pathlib import Path

import jinja2
import pytest
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from exbe import __version__, contract, selection, tasks
from exbe.errors import ConfigError
from exbe.main import ExbeProgram
from exbe.model import Settings
from exbe.render import (
    MANUAL_INPUT,
    MANUAL_TASKS,
    TEMPLATE_DIR,
    TemplateDirError,
    _env,
    check_template_dir,
    is_exbe_rendering,
    manual_input,
    render_manual,
    render_step,
    to_file_bytes,
)
from exbe.steps import REGISTRY
from tests import pwsh

OLD = "A1" * 20
NEW = "B2" * 20
SITES = {"backend_site": "Exchange Back End", "frontend_site": "Default Web Site"}
TRUST = {"thumbprint": NEW, "dry_run": False}
BIND = {"thumbprint": NEW, **SITES, "backend_binding": "*:444:", "loopback_binding": "127.0.0.1:443:",
        "loopback_from": OLD, "after_trust": False, "dry_run": True}
MANUAL = manual_input(Settings())


def _document(text: str) -> dict:
    lines = text.split("\n")
    return json.loads(lines[lines.index(contract.INPUT_OPEN) + 1])


def _code(text: str) -> str:
    """A script without its input document."""
    lines = text.split("\n")
    index = lines.index(contract.INPUT_OPEN) + 1
    return "\n".join(lines[:index] + lines[index + 1:])


def _template_hash(text: str) -> str:
    return re.match(r"# exbe-step: \S+ \| exbe \S+ \| template ([0-9a-f]{12})\n", text).group(1)


@pytest.fixture
def template_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, copy)
    return copy


def test_the_shipped_templates_are_found_beside_the_package_or_at_the_top_of_the_checkout() -> None:
    assert (TEMPLATE_DIR / "_base.ps1.j2").is_file()
    assert {step.template for step in REGISTRY.values()} <= {p.name for p in TEMPLATE_DIR.iterdir()}


def test_a_missing_input_key_fails_naming_the_key() -> None:
    with pytest.raises(ValueError, match="bind input lacks loopback_from"):
        render_step("bind", {k: v for k, v in BIND.items() if k != "loopback_from"})


def test_an_unknown_input_key_fails_naming_the_key() -> None:
    with pytest.raises(ValueError, match="unknown key.*force"):
        render_step("trust", {**TRUST, "force": True})


def test_a_value_of_the_wrong_type_fails_naming_the_key() -> None:
    with pytest.raises(ValueError, match="dry_run must be true or false"):
        render_step("trust", {**TRUST, "dry_run": 1})
    with pytest.raises(ValueError, match="key_length must be a whole number"):
        render_step("clone", {"source_thumbprint": OLD, "provider": "p", "key_length": True, "hash_algorithm": "SHA256",
                              "validity_years": 5, "dry_run": False})
    with pytest.raises(ValueError, match="thumbprints must be a list of strings"):
        render_step("cleanup", {"thumbprints": [1], **SITES, "dry_run": False})
    with pytest.raises(ValueError, match="new_key_sizes must be a list of whole numbers"):
        render_manual("verify", {**MANUAL, "new_key_sizes": [2048, True]})
    with pytest.raises(ValueError, match="backend_binding must be a string or null"):
        render_step("bind", {**BIND, "backend_binding": 444})


def test_a_restart_method_other_than_iisreset_or_services_is_refused() -> None:
    with pytest.raises(ValueError, match="method must be one of iisreset, services"):
        render_step("restart", {"method": "reboot", "timeout_seconds": 60, "dry_run": False})


def test_an_unknown_step_or_task_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown exbe step 'renew'"):
        render_step("renew", {})
    with pytest.raises(ValueError, match="unknown task 'restart'"):
        render_manual("restart", MANUAL)


def test_a_template_using_an_undefined_variable_fails_instead_of_rendering_blank(template_copy: Path) -> None:
    (template_copy / "trust.ps1.j2").write_text("function Invoke-ExbeTrust {\n    {{ thumbprint }}\n}\n")
    with pytest.raises(jinja2.UndefinedError, match="'thumbprint' is undefined"):
        render_step("trust", TRUST, override_dir=template_copy)


def test_an_override_directory_wins_but_its_scripts_are_not_recognised_as_exbes(tmp_path: Path) -> None:
    shipped = (TEMPLATE_DIR / "trust.ps1.j2").read_text()
    (tmp_path / "trust.ps1.j2").write_text(shipped.replace("# The public part", "# Site-specific: the public part"))
    assert "# Site-specific: the public part" in render_step("trust", TRUST, override_dir=tmp_path, readable=True)
    text = render_step("trust", TRUST, override_dir=tmp_path)
    assert _template_hash(text) != _template_hash(render_step("trust", TRUST))
    recognised, reason = is_exbe_rendering(text)
    assert not recognised and "differs" in reason


def test_the_header_hash_covers_exactly_the_templates_a_step_uses(template_copy: Path) -> None:
    shipped = _template_hash(render_step("trust", TRUST))
    assert _template_hash(render_step("trust", TRUST, override_dir=template_copy)) == shipped
    restart = template_copy / "restart.ps1.j2"
    restart.write_text(restart.read_text() + "\n")
    assert _template_hash(render_step("trust", TRUST, override_dir=template_copy)) == shipped
    base = template_copy / "_base.ps1.j2"
    base.write_text(base.read_text().replace("Set-StrictMode -Version 2.0", "Set-StrictMode -Version Latest"))
    assert _template_hash(render_step("trust", TRUST, override_dir=template_copy)) != shipped


def test_a_manual_script_hash_changes_when_an_included_step_template_changes(template_copy: Path) -> None:
    shipped = _template_hash(render_manual("renew", MANUAL))
    bind = template_copy / "bind.ps1.j2"
    bind.write_text(bind.read_text().replace("refusing to bind", "will not bind"))
    assert _template_hash(render_manual("renew", MANUAL, override_dir=template_copy)) != shipped


def test_rendering_is_deterministic_with_unix_line_endings_and_one_input_document() -> None:
    first = render_step("bind", BIND)
    assert first == render_step("bind", BIND)
    assert "\r" not in first and first.endswith("\n")
    assert first.count(contract.INPUT_OPEN) == 1
    assert contract.encode_input(BIND) in first.split("\n")


def test_a_step_script_is_recognised_and_anything_else_is_refused_with_a_reason() -> None:
    text = render_step("trust", TRUST)
    assert is_exbe_rendering(text) == (True, f"exbe {__version__} trust step")
    for other in (text.replace("\n", "\r\n"), text + "Stop-Computer\n", "\ufeff" + text, text.split("\n", 1)[1],
                  "Get-ChildItem Cert:\\LocalMachine\\My\n"):
        recognised, reason = is_exbe_rendering(other)
        assert not recognised and reason


def test_a_hand_run_script_is_never_accepted_as_a_step_script() -> None:
    recognised, reason = is_exbe_rendering(render_manual("renew", MANUAL))
    assert not recognised and "manual_renew" in reason


def test_step_scripts_never_open_a_second_hop_to_the_exchange_endpoint() -> None:
    for step, data in [("trust", TRUST), ("bind", BIND)]:
        names = {c.name for c in pwsh.commands(render_step(step, data))}
        assert not names & {"New-PSSession", "Import-PSSession", "Enter-PSSession", "Invoke-Command"}


@pytest.mark.parametrize("task", MANUAL_TASKS)
def test_a_hand_run_script_calls_exchange_cmdlets_directly_without_any_remote_session(task: str) -> None:
    text = render_manual(task, MANUAL)
    names = {c.name for c in pwsh.commands(text)}
    assert not names & {"New-PSSession", "Import-PSSession", "Enter-PSSession", "Invoke-Command", "Add-PSSnapin"}
    assert "New-PSSession" not in text


def test_the_hand_run_renew_uses_new_exchange_certificate_with_services_none_and_falls_back_to_a_csp_clone() -> None:
    text = render_manual("renew", MANUAL)
    calls = {c.name: c.parameters for c in pwsh.commands(text)}
    assert {"Get-ExchangeCertificate", "Get-AuthConfig", "Enable-ExchangeCertificate"} <= calls.keys()
    assert set(calls["New-ExchangeCertificate"]) >= {"SubjectName", "DomainName", "Services"}
    assert "-Services 'None'" in text and "Services 'SMTP'" in text
    assert "provider = 'Microsoft RSA SChannel Cryptographic Provider'" in text
    assert "Invoke-ExbeClone -Doc $request" in text


def test_the_hand_run_verify_reads_the_auth_certificate_and_serialization_signing() -> None:
    names = {c.name for c in pwsh.commands(render_manual("verify", MANUAL))}
    assert {"Get-AuthConfig", "Get-SettingOverride", "Get-ExchangeCertificate"} <= names


def test_the_hand_run_cleanup_only_lists_and_removes_nothing() -> None:
    names = {c.name for c in pwsh.commands(render_manual("cleanup", MANUAL))}
    assert not names & {"Remove-Item", "Remove-ExchangeCertificate", "Invoke-ExbeCleanup"}


def test_hand_run_scripts_reuse_the_step_functions_word_for_word() -> None:
    manual = render_manual("renew", MANUAL)
    for step, data in [("trust", TRUST), ("bind", BIND)]:
        script = render_step(step, data, readable=True)
        function = script[script.index(f"function Invoke-Exbe{step.capitalize()} {{"):script.index("$ExbeInput = ")]
        assert function.strip() in manual


def test_a_hand_run_smtp_choice_other_than_keep_or_move_is_refused() -> None:
    with pytest.raises(ValueError, match="smtp must be one of keep, move"):
        render_manual("renew", {**MANUAL, "smtp": "steal"})


def test_script_files_are_utf8_with_a_bom_so_windows_powershell_reads_them_right() -> None:
    text = render_manual("verify", MANUAL)
    data = to_file_bytes(text)
    assert data.startswith(b"\xef\xbb\xbf") and data[3:].decode("utf-8") == text


# -- the hand-run script decides as the pipeline does ------------------------------------------------------------------
def test_the_hand_run_input_carries_the_settings_thresholds_and_the_rule_constants_of_the_python_decisions() -> None:
    settings = Settings(days=45, warn_days=50, fail_days=20, force=True, smtp="move", trust=False,
                        backend_site="Back End 2", frontend_site="Front 2", friendly_name="Exchange Renewed")
    document = _document(render_manual("renew", manual_input(settings, thumbprint=NEW)))
    assert document == {
        "backend_site": "Back End 2", "frontend_site": "Front 2", "friendly_name": "Exchange Renewed",
        "thumbprint": NEW, "days": 45, "warn_days": 50, "fail_days": 20, "force": True, "trust": False, "smtp": "move",
        "min_key_size": selection.MIN_KEY_SIZE, "new_key_sizes": list(selection.NEW_EXCHANGE_KEY_SIZES),
        "weak_signatures": list(selection.WEAK_SIGNATURES), "auth_subject": selection.AUTH_SUBJECT,
    }
    assert set(document) == set(MANUAL_INPUT)


def test_exbe_render_builds_the_input_from_the_configured_settings_as_the_pipeline_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "exbe.json"
    config.write_text(json.dumps({"exbe": {"inventory": [], "defaults": {
        "days": 55, "warn_days": 50, "fail_days": 20, "friendly_name": "Exchange Renewed", "smtp": "move"}}}))
    monkeypatch.chdir(tmp_path)
    ExbeProgram().run(["exbe", "-f", str(config), "render", "verify", "--force", "--no-trust", "--thumbprint",
                       " ".join(NEW[i:i + 2].lower() for i in range(0, 40, 2))])
    expected = manual_input(Settings(days=55, warn_days=50, fail_days=20, friendly_name="Exchange Renewed",
                                     smtp="move", force=True, trust=False), thumbprint=NEW)
    assert _document(capsys.readouterr().out) == expected


def test_exbe_render_refuses_a_thumbprint_that_is_not_40_hex_digits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        ExbeProgram().run(["exbe", "render", "bind", "--thumbprint", "not-a-thumbprint"])
    assert exited.value.code == 2 and "40 hexadecimal digits" in capsys.readouterr().err


def _render_exit(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """(exit code, standard error) of `exbe render ARGS`."""
    with pytest.raises(SystemExit) as exited:
        ExbeProgram().run(["exbe", "render", *args])
    return int(exited.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize("name", ["renew\x00.ps1", "renew\x1b[2J.ps1", "renew\n.ps1"])
def test_exbe_render_refuses_a_control_character_in_the_output_path_in_one_line_writing_nothing(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _render_exit(capsys, "renew", "--output", str(tmp_path / name))
    assert (code, err.count("\n")) == (2, 1)
    assert err.startswith("exbe: --output must not contain control characters, got ")
    assert list(tmp_path.iterdir()) == []


def test_exbe_render_refuses_an_output_path_it_cannot_write_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a file, not a directory")
    code, err = _render_exit(capsys, "renew", "--output", "notes.txt/renew.ps1")
    assert (code, err) == (2, "exbe: --output 'notes.txt/renew.ps1' cannot be written: notes.txt is a file, not a "
                              "directory; choose another path\n")
    code, err = _render_exit(capsys, "verify", "--output", str(tmp_path))
    assert (code, err) == (2, f"exbe: --output {str(tmp_path)!r} is a directory; give a file name, such as "
                              f"{tmp_path / 'verify.ps1'}\n")


def test_exbe_render_output_creates_a_missing_directory_and_writes_the_script_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ExbeProgram().run(["exbe", "render", "renew", "--output", "scripts/exch01/renew.ps1"])
    assert (tmp_path / "scripts/exch01/renew.ps1").read_bytes() == to_file_bytes(render_manual("renew", MANUAL))


@pytest.mark.parametrize("task", MANUAL_TASKS)
def test_a_hand_run_script_holds_no_threshold_or_rule_value_of_its_own(task: str) -> None:
    code = _code(render_manual(task, MANUAL))
    assert re.findall(r"\b(?:30|60|1024|2048|3072|4096)\b", code) == []
    assert selection.AUTH_SUBJECT not in code
    assert not any(f"'{prefix}" in code.lower() for prefix in selection.WEAK_SIGNATURES)


def test_the_hand_run_renew_and_verify_judge_by_the_input_documents_thresholds() -> None:
    renew, verify = render_manual("renew", MANUAL), render_manual("verify", MANUAL)
    for key in ("days", "min_key_size", "new_key_sizes", "weak_signatures", "auth_subject", "friendly_name"):
        assert f"$Doc.{key}" in renew, key
    for key in ("warn_days", "fail_days", "min_key_size", "weak_signatures"):  # verify reads Auth from Get-AuthConfig
        assert f"$Doc.{key}" in verify, key


@pytest.mark.parametrize("task", MANUAL_TASKS)
def test_hand_run_exchange_certificate_cmdlets_name_the_server(task: str) -> None:
    calls = [c for c in pwsh.commands(render_manual(task, MANUAL))
             if c.name in {"New-ExchangeCertificate", "Enable-ExchangeCertificate", "Get-ExchangeCertificate"}]
    assert all("Server" in c.parameters for c in calls)
    assert calls or task == "trust"  # trust only copies the public part to LocalMachine\Root


def test_the_hand_run_renew_takes_a_documented_key_size_and_reads_the_new_thumbprint_from_the_store() -> None:
    text = render_manual("renew", MANUAL)
    assert "$keySize = Get-ExbeNewKeySize -KeySize $oldKeySize -Doc $Doc" in text
    assert "-KeySize $keySize" in text
    assert "Find-ExbeNewCertificate -Before $before -Reported $reported" in text


@pytest.mark.parametrize("task", MANUAL_TASKS)
def test_hand_run_advice_names_only_exbe_render_and_flags_it_has(task: str) -> None:
    text = render_manual(task, MANUAL)
    flags = {name.replace("_", "-") for name in inspect.signature(tasks.render.body).parameters}
    assert all(command.startswith("render ") for command in re.findall(r"`exbe ([^`]*)`", text))
    assert set(re.findall(r"(?<![\w-])--(\w[\w-]*)", text)) <= flags


def test_the_bind_step_removes_a_binding_it_created_by_the_object_never_by_an_address_glob() -> None:
    removals = [c.parameters for c in pwsh.commands(render_step("bind", BIND)) if c.name == "Remove-WebBinding"]
    assert removals == [("InputObject",)]


def test_the_platform_refusal_of_a_step_script_is_one_contract_envelope_built_without_exbes_functions() -> None:
    text = render_step("bind", BIND)
    line = next(line.strip() for line in text.split("\n") if line.strip().startswith("'{\"changed\""))
    first, middle, last = re.findall(r"'([^']*)'", line)
    assert line == f"'{first}' + $exbePlatform + '{middle}' + $exbeStep + '{last}'"
    error = "exbe needs Windows PowerShell 5.1 (Desktop); this host runs 4.0 Desktop"
    result = contract.parse_result("bind", [first + error + middle + "bind" + last])
    assert result == contract.make_result("bind", ok=False, error=error)


# -- templates from configuration (issue 13, item 5) -------------------------------------------------------------------
ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('touch PWNED').read() }}",
    "{{ lipsum.__globals__['os'].popen('touch PWNED').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ step.__class__.__base__.__subclasses__() }}",
    "{{ '{0.__class__.__mro__}'.format(step) }}",
    "{% set x = [] %}{{ x.append(1) }}",
]


@pytest.mark.parametrize("payload", ESCAPES)
def test_an_override_template_cannot_reach_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  payload: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "trust.ps1.j2").write_text("function Invoke-ExbeTrust {\n" + payload + "\n}\n")
    with pytest.raises(SecurityError):
        render_step("trust", TRUST, override_dir=tmp_path)
    assert not (tmp_path / "PWNED").exists()


def test_every_rendering_uses_the_sandbox_and_the_shipped_templates_render_as_before() -> None:
    assert isinstance(_env(None), SandboxedEnvironment)
    text = render_step("bind", BIND)
    assert is_exbe_rendering(text) == (True, f"exbe {__version__} bind step")
    for task in MANUAL_TASKS:
        assert render_manual(task, MANUAL).count(contract.INPUT_OPEN) == 1


def test_a_missing_override_directory_is_a_configuration_error_not_the_shipped_templates(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-templates"
    with pytest.raises(TemplateDirError) as raised:
        render_step("trust", TRUST, override_dir=missing)
    error = raised.value
    assert isinstance(error, ConfigError) and isinstance(error, ValueError) and error.exit_code == 2
    assert str(error) == (f"template override directory {str(missing)!r} does not exist; set "
                          "exbe.defaults.template_dir to an existing directory of .ps1.j2 templates, or remove it to "
                          "use the shipped templates")
    with pytest.raises(TemplateDirError, match="does not exist"):
        render_manual("verify", MANUAL, override_dir=missing)


def test_an_override_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "templates.txt"
    path.write_text("")
    with pytest.raises(TemplateDirError, match="is not a directory"):
        check_template_dir(path)
    assert check_template_dir(tmp_path) == tmp_path
