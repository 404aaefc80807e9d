"""Values are data, never script text, in every pipeline file: a template parameter, a variable or a workflow input
reaches a script through its environment, never expanded into the script's text.

Azure Pipelines expands ``${{ parameters.* }}`` / ``${{ variables.* }}`` template expressions into a step's text
before the agent runs it, and ``$(NAME)`` macros too (Microsoft's documentation: "Define variables", "Template
expressions"); GitHub expands every ``${{ }}`` in a ``run:`` block into the script before the shell reads it. Anyone
who can queue a run with a chosen value (a parameter, an input, a branch name in ``github.event``) would then run
commands on the agent, in a job that holds the credentials. So a script body holds no expansion at all: the values
are mapped into ``env:`` and read as environment variables. Then, each pipeline's credential switch: secrets
that are turned on and empty stop the job before exbe starts, never a silent fall-back to the agent's own logon.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .pipelines_support import (
    AZURE_EXBE_LAUNCH,
    AZURE_NIGHTLY,
    AZURE_RELEASE,
    AZURE_STAGE,
    GITHUB_NIGHTLY,
    GITHUB_REUSABLE,
    ROOT,
    load,
    run_recorded,
    script,
    steps,
)

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PIPELINE_FILES = sorted((ROOT / "pipelines").glob("*/*.yml"))

#: What a platform expands into a script's text before the script runs: a template expression, an Azure macro
#: ``$(NAME)`` (also ``$(Build.SourceBranch)``; bash's ``$(command)`` is read as one too, so scripts use backticks
#: never) and a runtime expression ``$[ ]``.
EXPANSION = re.compile(r"\$\{\{.*?\}\}|\$\([A-Za-z_][A-Za-z0-9_.]*\)|\$\[")
#: On GitHub, the contexts whose values a person who triggers a run chooses; .github/workflows (the project's own
#: CI) may use the rest (matrix, steps' outputs) in a script, pipelines/ (what admins copy) uses none.
CHOSEN_BY_A_TRIGGER = re.compile(r"\$\{\{[^}]*\b(inputs|github\.event|github\.head_ref)\b")


def _script_bodies(path: Path) -> list[tuple[str, str]]:
    """(where, text) of every script a file's steps run: Azure ``script``/``bash``/``pwsh``/``powershell`` and the
    inline script of a task (PythonScript@0, PowerShell@2, Bash@3, CmdLine@2), GitHub ``run``."""
    found = []
    for _, step in steps(load(path)):
        text = script(step)
        inputs = step.get("inputs") or {}
        text += "\n" + str(inputs.get("inline") or "") if "inline" in inputs else ""
        if text.strip():
            found.append((f"{path.name}: {step.get('name') or step.get('displayName') or '?'}", text))
    return found


def expansions(path: Path, pattern: re.Pattern[str] = EXPANSION) -> list[str]:
    return [f"{where}: {match.group(0)}" for where, text in _script_bodies(path) for match in pattern.finditer(text)]


@pytest.mark.parametrize("path", PIPELINE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_pipeline_script_holds_an_expansion(path: Path) -> None:
    assert _script_bodies(path) or path.name == "release.yml"  # release.yml only references the stage template
    assert expansions(path) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_projects_own_workflows_take_no_triggering_value_into_a_script(path: Path) -> None:
    assert _script_bodies(path)
    assert expansions(path, CHOSEN_BY_A_TRIGGER) == []


def test_the_check_finds_each_kind_of_expansion(tmp_path: Path) -> None:
    azure = tmp_path / "azure.yml"
    azure.write_text("jobs:\n- job: a\n  steps:\n  - script: exbe -f ${{ parameters.config }} verify\n"
                     "  - bash: echo $(EXBE_GROUP)\n"
                     "  - task: PythonScript@0\n    inputs: {script: 'print(\"$[variables.x]\")'}\n"
                     "  - pwsh: echo ${{ variables.task }}\n  - script: echo $env:FINE %FINE% $FINE\n",
                     encoding="utf-8")
    github = tmp_path / "github.yml"
    github.write_text("on: push\njobs:\n  a:\n    steps:\n      - run: echo ${{ inputs.task }}\n"
                      "      - run: echo \"${{ github.event.pull_request.title }}\"\n      - run: echo $TASK\n",
                      encoding="utf-8")
    assert [found.rsplit(": ", 1)[1] for found in expansions(azure)] == [
        "${{ parameters.config }}", "$(EXBE_GROUP)", "$[", "${{ variables.task }}"]
    assert [found.rsplit(": ", 1)[1] for found in expansions(github, CHOSEN_BY_A_TRIGGER)] == [
        "${{ inputs", "${{ github.event"]


# -- the Azure exbe step builds exbe's command from its environment --------------------------------------------------
def _stage_exbe_step() -> dict[str, Any]:
    (step,) = [step for _, step in steps(load(AZURE_STAGE)) if AZURE_EXBE_LAUNCH in script(step)]
    return step


def _azure_command(step: dict[str, Any], tmp_path: Path, **env: str) -> tuple[int, list[str], list[str] | None]:
    ran = run_recorded(script(step), tmp_path, {"TF_BUILD": "True", **env})
    return ran.returncode, ran.lines, None if ran.command is None else ran.command[3:]


STAGE_VALUES = {"EXBE_CONFIG": "exbe.yaml", "EXBE_SERVERS": "", "EXBE_GROUP": "", "EXBE_DAYS": "60",
                "EXBE_MIN_AGE": "7", "EXBE_DRY_RUN": "False", "EXBE_HYBRID": "False", "EXBE_CREDENTIALS": "False",
                "EXBE_USERNAME": "", "EXBE_PASSWORD": ""}


@pytest.mark.parametrize(("values", "expected"), [
    ({"EXBE_TASK": "renew", "EXBE_GROUP": "dag1"}, ["renew", "--group", "dag1", "--days", "60"]),
    ({"EXBE_TASK": "cleanup", "EXBE_SERVERS": "exch01,exch02", "EXBE_DRY_RUN": "True"},
     ["cleanup", "--server", "exch01,exch02", "--min-age", "7", "--dry-run"]),
    ({"EXBE_TASK": "verify", "EXBE_DRY_RUN": "True"}, ["verify", "--all"]),
    # auth: the plan, then the change; --hybrid (and the .cer the stage publishes) only when asked, only for auth
    ({"EXBE_TASK": "auth", "EXBE_DRY_RUN": "True"}, ["auth", "--all", "--dry-run"]),
    ({"EXBE_TASK": "auth", "EXBE_HYBRID": "True"}, ["auth", "--all", "--hybrid", "--cer", "reports/auth-next.cer"]),
    ({"EXBE_TASK": "verify", "EXBE_HYBRID": "True"}, ["verify", "--all"]),
    # a value that would be code in a script is one argument here, as it is
    ({"EXBE_TASK": "verify", "EXBE_GROUP": "dag1 & del /q C:\\ ; rm -rf ~ $(whoami)"},
     ["verify", "--group", "dag1 & del /q C:\\ ; rm -rf ~ $(whoami)"]),
])
def test_the_azure_stage_runs_exbe_with_its_parameters_as_arguments(tmp_path: Path, values: dict[str, str],
                                                                    expected: list[str]) -> None:
    code, lines, argv = _azure_command(_stage_exbe_step(), tmp_path, **{**STAGE_VALUES, **values})
    task = values["EXBE_TASK"]
    assert argv == ["-f", "exbe.yaml", *expected, "--junit", f"reports/exbe-{task}.xml",
                    "--json", f"reports/exbe-{task}.json"], lines


def test_the_azure_stage_maps_every_parameter_the_command_needs_into_the_environment() -> None:
    env = _stage_exbe_step()["env"]
    assert set(STAGE_VALUES) | {"EXBE_TASK"} == set(env)
    assert env["EXBE_SERVERS"] == "${{ join(',', parameters.servers) }}"
    assert env["EXBE_PASSWORD"] == "${{ iif(parameters.credentials, '$(EXBE_PASSWORD)', '') }}"


@pytest.mark.parametrize("password", ["", "$(EXBE_PASSWORD)"], ids=["empty", "undefined"])
def test_azure_credentials_that_are_on_and_missing_stop_the_step_before_exbe_starts(tmp_path: Path,
                                                                                    password: str) -> None:
    for step in (_stage_exbe_step(), next(step for _, step in steps(load(AZURE_NIGHTLY))
                                          if AZURE_EXBE_LAUNCH in script(step))):
        code, lines, argv = _azure_command(step, tmp_path, **{**STAGE_VALUES, "EXBE_TASK": "verify",
                                                              "EXBE_CREDENTIALS": "True",
                                                              "EXBE_USERNAME": "CONTOSO\\svc-exbe",
                                                              "EXBE_PASSWORD": password})
        assert argv is None and code == 2
        (line,) = lines
        assert line.startswith("##vso[task.logissue type=error]exbe did not run: credentials are on but "
                               "EXBE_PASSWORD is empty or not defined")
        assert "agent's own logon" in line


def test_azure_credentials_that_are_on_and_set_run_exbe(tmp_path: Path) -> None:
    code, lines, argv = _azure_command(_stage_exbe_step(), tmp_path, **{
        **STAGE_VALUES, "EXBE_TASK": "verify", "EXBE_CREDENTIALS": "True", "EXBE_USERNAME": "CONTOSO\\svc-exbe",
        "EXBE_PASSWORD": "s3cret-value"})
    assert argv is not None and argv[2] == "verify"
    assert not any("s3cret" in line for line in lines)


def test_every_azure_exbe_step_is_the_same_script() -> None:
    bodies = {script(step) for path in (AZURE_STAGE, AZURE_NIGHTLY) for _, step in steps(load(path))
              if AZURE_EXBE_LAUNCH in script(step)}
    assert len(bodies) == 1


def test_the_release_verifies_whatever_renew_came_to_and_cleans_up_only_after_both_passed() -> None:
    stages = {stage["parameters"]["stageName"]: stage["parameters"] for stage in load(AZURE_RELEASE)["stages"]}
    assert stages["verify"]["condition"] == "succeededOrFailed()"
    assert stages["verify"]["dependsOn"] == ["renew"]
    assert stages["cleanup"]["dependsOn"] == ["renew", "verify"] and "condition" not in stages["cleanup"]
    template = load(AZURE_STAGE)
    (stage,) = template["stages"]
    assert stage["condition"] == "${{ parameters.condition }}"
    assert {p["name"]: p.get("default") for p in template["parameters"]}["condition"] == "succeeded()"


# -- GitHub: the secrets reach the job, and an empty one is a clear failure ------------------------------------------
def _exbe_run_step(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    (found,) = [(job, step) for job, step in steps(load(path)) if "exbe " in str(step.get("run", ""))
                and "EXBE_PASSWORD" in (step.get("env") or {})]
    return found


def test_the_reusable_workflow_reads_the_secrets_only_when_asked_and_runs_in_the_callers_environment() -> None:
    document = load(GITHUB_REUSABLE)
    call = document["on"]["workflow_call"]
    assert call["inputs"]["credentials"] == {"description": call["inputs"]["credentials"]["description"],
                                             "type": "boolean", "default": "false"}
    assert set(call["secrets"]) == {"EXBE_USERNAME", "EXBE_PASSWORD"}
    job, step = _exbe_run_step(GITHUB_REUSABLE)
    # environment secrets reach only a job that runs in that environment: the called job itself
    assert job["environment"] == "${{ inputs.environment }}"
    assert step["env"]["EXBE_PASSWORD"] == "${{ inputs.credentials && secrets.EXBE_PASSWORD || '' }}"
    assert step["env"]["EXBE_CREDENTIALS"] == "${{ inputs.credentials }}"


@pytest.mark.parametrize("path", [GITHUB_REUSABLE, GITHUB_NIGHTLY], ids=["reusable", "nightly"])
def test_github_credentials_that_are_on_and_empty_stop_the_job_before_exbe_starts(path: Path) -> None:
    """The guard's first lines, as PowerShell runs them: switched on and a secret empty -> an error annotation and
    exit 2 before the exbe line (checked on its text: no PowerShell here; the syntax is checked by
    test_pipelines_yaml)."""
    _, step = _exbe_run_step(path)
    run = step["run"]
    end = run.index("}\n", run.index("exit 2")) + 2
    guard, rest = run[:end], run[end:]
    assert re.search(r"^exbe ", rest, re.M)
    assert re.search(r"if \(\$env:EXBE_CREDENTIALS -eq '(true|secrets)' -and -not \(\$env:EXBE_USERNAME -and "
                     r"\$env:EXBE_PASSWORD\)\)", guard)
    assert "::error title=exbe credentials::" in guard and "exit 2" in guard
    assert "runner's own logon" in guard


def test_the_documented_credentials_switches_exist() -> None:
    docs = (ROOT / "docs" / "pipelines.md").read_text(encoding="utf-8")
    for text in ("credentials: true", "EXBE_CREDENTIALS", "secrets: inherit", "environment: exchange-backend"):
        assert text in docs, text
