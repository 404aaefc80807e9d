"""Read the pipeline YAML under pipelines/ the way the platforms would, far enough to test what they run.

:func:`nightly_command` gives the exbe command line a nightly pipeline runs, as an argv list with its template
expressions resolved for a scheduled run, so a test can run exactly that against the sandbox.
:func:`install_steps` gives the steps that install exbe, with the environment a run maps into them (template
expressions resolved, Azure ``$(VAR)`` macros expanded or, when undefined, left as text, as Azure does), and
:func:`run_install_step` runs one's script with pip replaced by a recorder, so a test sees what it would install.
:func:`github_expression` evaluates the few GitHub expression forms the workflows use outside ``run`` scripts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ROOT / "pipelines"
AZURE_NIGHTLY = PIPELINES / "azure" / "nightly-verify.yml"
AZURE_RELEASE = PIPELINES / "azure" / "release.yml"
AZURE_STAGE = PIPELINES / "azure" / "exbe-stage.yml"
GITHUB_NIGHTLY = PIPELINES / "github" / "nightly-verify.yml"
GITHUB_REUSABLE = PIPELINES / "github" / "exbe-reusable.yml"
PIPELINE_FILES = sorted(PIPELINES.glob("*/*.yml"))

_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_PS_ENV = re.compile(r"\$env:([A-Za-z_][A-Za-z0-9_]*)")


def load(path: Path) -> dict[str, Any]:
    # BaseLoader keeps every scalar a string, as Azure Pipelines does ("true", "60").
    return yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)


def steps(document: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(job, step) pairs of an Azure pipeline's or a GitHub workflow's jobs, those of Azure stages and deployment
    jobs included (a stage that is a template reference has no steps of its own here)."""
    jobs = document.get("jobs", {})
    all_jobs = list(jobs.values()) if isinstance(jobs, dict) else list(jobs)
    for stage in document.get("stages", []):
        all_jobs += stage.get("jobs", [])
    for job in all_jobs:
        strategy = job.get("strategy") or {}
        deploy = (strategy.get("runOnce") or {}).get("deploy") or {} if isinstance(strategy, dict) else {}
        for step in [*job.get("steps", []), *deploy.get("steps", [])]:
            yield job, step


def script(step: dict[str, Any]) -> str:
    """The script a step runs: Azure ``script``/``powershell``/``bash``/``pwsh``, a task's inline ``script`` input
    (PythonScript@0, PowerShell@2), or a GitHub ``run``."""
    for key in ("script", "powershell", "pwsh", "bash", "run"):
        if isinstance(step.get(key), str):
            return str(step[key])
    return str((step.get("inputs") or {}).get("script") or "")


#: How the Azure pipelines' exbe step starts exbe: a Python script that builds exbe's arguments from its environment.
AZURE_EXBE_LAUNCH = '[sys.executable, "-m", "exbe", *argv]'


def exbe_step(document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The one step that runs exbe (not pip), with its job and its exbe command line (a GitHub ``run`` line; empty
    for an Azure step, whose Python script builds the command from its environment: :func:`nightly_command`)."""
    found = [(job, step, line.strip()) for job, step in steps(document)
             for line in (step.get("script") or step.get("run") or "").splitlines()
             if line.strip().startswith("exbe ")]
    found += [(job, step, "") for job, step in steps(document) if AZURE_EXBE_LAUNCH in script(step)]
    if len(found) != 1:
        raise AssertionError(f"expected exactly one step running exbe, found {len(found)}")
    return found[0]


def nightly_command(path: Path, *, config: str | None = None, shard: tuple[int, int] | None = None) -> list[str]:
    """The exbe argv the nightly pipeline at ``path`` runs on its schedule.

    ``config`` stands for the configuration file a manual run would be given (default: the pipeline's own default);
    ``shard`` picks one job of a GitHub matrix as ``(i, n)`` (default: the first of the matrix's jobs).
    """
    document = load(path)
    job, step, line = exbe_step(document)
    values: dict[str, str] = {}
    for parameter in document.get("parameters", []):
        values[f"parameters.{parameter['name']}"] = parameter.get("default", "")
    dispatch = (document.get("on") or {}).get("workflow_dispatch") or {}
    for name in (dispatch.get("inputs") or {}):
        values[f"inputs.{name}"] = ""  # a scheduled run has no inputs
    if config is not None:
        values.update({"parameters.config": config, "inputs.config": config})
    shards = (job.get("strategy") or {}).get("matrix", {}).get("shard")
    if shards:
        index, total = shard or (int(shards[0]), len(shards))
        values.update({"matrix.shard": str(index), "strategy.job-total": str(total)})
    env = {**(document.get("env") or {}), **(job.get("env") or {}), **(step.get("env") or {})}
    if not line:  # Azure: run the step's script with its environment, exbe replaced by a recorder
        resolved = {name: _evaluate_text(str(value), values) for name, value in env.items()}
        resolved.update({"EXBE_USERNAME": "CONTOSO\\svc-exbe", "EXBE_PASSWORD": "a secret variable"})
        with tempfile.TemporaryDirectory() as cwd:
            ran = run_recorded(script(step), Path(cwd), resolved)
        if ran.command is None:
            raise AssertionError(f"{path.name}: the exbe step did not start exbe: {ran.lines}")
        return ["exbe", *ran.command[3:]]
    line = _PS_ENV.sub(lambda m: _evaluate_text(env[m.group(1)], values), line)
    return shlex.split(_evaluate_text(line, values))


def _evaluate_text(text: str, values: Mapping[str, str]) -> str:
    return _EXPRESSION.sub(lambda m: _evaluate(m.group(1), values), text)


def _evaluate(expression: str, values: Mapping[str, str]) -> str:
    """The few expression forms the steps use: a name, or ``name || 'fallback'``. A GitHub ``vars.NAME`` that is
    not defined is empty, as on GitHub; any other unknown name (a required input or parameter nobody gave) raises
    KeyError, as the platform refuses such a run."""
    for alternative in (part.strip() for part in expression.split("||")):
        if alternative.startswith("'"):
            value = alternative[1:-1]
        elif alternative.startswith("vars."):
            value = values.get(alternative, "")
        else:
            value = values[alternative]
        if value:
            return value
    return ""


# --- the steps that install exbe -------------------------------------------------------------------------------

_MACRO = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.]*)\)")


@dataclasses.dataclass(frozen=True)
class InstallStep:
    """A step that installs exbe, as one run sees it: where it is, its script, and the environment mapped into it."""

    where: str
    step: dict[str, Any]
    script: str
    env: dict[str, str]


def install_steps(path: Path, *, parameters: Mapping[str, str] | None = None, inputs: Mapping[str, str] | None = None,
                  variables: Mapping[str, str] | None = None) -> list[InstallStep]:
    """Every step under ``path`` that runs pip (one per job), for a run given these values.

    ``parameters``: an Azure pipeline's or template's parameters (defaults fill the rest); a stage that references
    a template is followed into it with the parameters it passes. ``inputs``: a GitHub workflow's inputs (defaults
    fill the rest). ``variables``: Azure pipeline variables (``$(NAME)`` expands to them; an undefined one stays
    text) or GitHub repository variables (``vars.NAME``; undefined ones are empty).
    """
    document = load(path)
    variables = dict(variables or {})
    azure = path.parent.name == "azure"
    values: dict[str, str] = {}
    found: list[InstallStep] = []
    if azure:
        values.update(_declared(document.get("parameters", []), parameters, prefix="parameters."))
        for stage in document.get("stages", []):
            if "template" in stage:
                # Only literal values are evaluated; `${{ trim(parameters.group) }}` and the like pass as text
                # (the install step reads exbePackage and exbeConstraints, which release.yml passes literally).
                given = {name: value for name, value in (stage.get("parameters") or {}).items()
                         if isinstance(value, str)}
                found += [dataclasses.replace(each, where=f"{path.name} stage {given.get('stageName', '?')}: "
                                                          f"{each.where}")
                          for each in install_steps(path.parent / stage["template"], parameters=given,
                                                    variables=variables)]
    else:
        triggers = document.get("on") or {}
        for trigger in ("workflow_call", "workflow_dispatch"):
            declared = ((triggers.get(trigger) or {}).get("inputs") or {}) if isinstance(triggers, dict) else {}
            values.update(_declared([{"name": name, **spec} for name, spec in declared.items()], inputs,
                                    prefix="inputs."))
        values.update({f"vars.{name}": value for name, value in variables.items()})
    for job, step in steps(document):
        text = script(step)
        if not re.search(r"\bpip\b", text):
            continue
        env = {**(document.get("env") or {}), **(job.get("env") or {}), **(step.get("env") or {})}
        resolved = {name: _evaluate_text(str(value), values) for name, value in env.items()}
        if azure:
            resolved = {name: _MACRO.sub(lambda m: variables.get(m.group(1), m.group(0)), value)
                        for name, value in resolved.items()}
        found.append(InstallStep(where=path.name, step=step, script=text, env=resolved))
    return found


def _declared(declared: list[dict[str, Any]], given: Mapping[str, str] | None, *, prefix: str) -> dict[str, str]:
    """Values of declared parameters/inputs: given ones, else defaults; one with neither is left out."""
    values = {prefix + spec["name"]: spec["default"] for spec in declared if "default" in spec}
    values.update({prefix + name: value for name, value in (given or {}).items()})
    return values


@dataclasses.dataclass(frozen=True)
class Recorded:
    """What a step's Python script did: its exit code, the lines it printed, and the command it started (None:
    none)."""

    returncode: int
    lines: list[str]
    command: list[str] | None


@dataclasses.dataclass(frozen=True)
class InstallResult:
    """What an install step did: its exit code, the lines it printed, and the pip command it ran (None: none)."""

    returncode: int
    lines: list[str]
    pip: list[str] | None


_PIP_RECORDER = """
import json, runpy, subprocess, sys
def call(command, *args, **kwargs):
    print("PIP-RECORDER " + json.dumps(command), flush=True)
    return 0
subprocess.call = subprocess.run = subprocess.check_call = subprocess.Popen = call
runpy.run_path(sys.argv[1], run_name="__main__")
"""


def run_install_step(found: InstallStep, cwd: Path, *, platform: Mapping[str, str] | None = None) -> InstallResult:
    """Run an install step's script in ``cwd`` (the checkout) with the step's environment and ``platform``'s
    variables (e.g. ``GITHUB_ACTIONS=true``), nothing inherited from this test run. pip never runs: the call that
    would start it is recorded instead, so a guard that wrongly lets a name through installs nothing."""
    if "subprocess.call(" not in found.script:
        raise AssertionError(f"{found.where}: the install script does not start pip with subprocess.call")
    ran = run_recorded(found.script, cwd, {**found.env, **(platform or {})})
    return InstallResult(ran.returncode, ran.lines, ran.command)


def run_recorded(text: str, cwd: Path, env: Mapping[str, str]) -> Recorded:
    """Run a step's Python script ``text`` in ``cwd`` with ``env`` (and PATH), nothing else inherited; the command
    it would start (pip, exbe) is recorded instead of run."""
    environment = {name: os.environ[name] for name in ("PATH", "SYSTEMROOT") if name in os.environ}
    environment.update(env)
    with tempfile.TemporaryDirectory() as scratch:
        script_path = Path(scratch) / "step.py"
        script_path.write_text(text, encoding="utf-8")
        proc = subprocess.run([sys.executable, "-c", _PIP_RECORDER, str(script_path)], cwd=cwd, env=environment,
                              capture_output=True, text=True, timeout=60)
    lines, command = [], None
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("PIP-RECORDER "):
            command = json.loads(line.removeprefix("PIP-RECORDER "))
        else:
            lines.append(line)
    return Recorded(proc.returncode, lines, command)


# --- GitHub expressions outside scripts ------------------------------------------------------------------------

_GITHUB_TOKEN = re.compile(r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<op>&&|\|\||==|!=|!|\(|\)|,)"
                           r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*))")


def _github_contains(haystack: Any, needle: Any) -> bool:
    if isinstance(haystack, list):
        return any(str(item).lower() == str(needle).lower() for item in haystack)
    return str(needle).lower() in str(haystack).lower()


_GITHUB_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "contains": _github_contains,
    "fromJSON": json.loads,
    "format": lambda template, *args: template.format(*args),
}


def github_expression(text: str, context: Mapping[str, str]) -> str:
    """``text`` with each ``${{ }}`` evaluated: string literals, context names (``inputs.task``, ``github.run_id``:
    from ``context``; a missing one raises KeyError), ``contains``/``fromJSON``/``format`` and ``&&``/``||``/``!``/
    ``==``/``!=``, which take and return operands as GitHub's do (Python's and/or/not share those semantics)."""

    def evaluate(expression: str) -> str:
        python, position = [], 0
        names: dict[str, Any] = {}
        while position < len(expression.rstrip()):
            match = _GITHUB_TOKEN.match(expression, position)
            if not match:
                raise ValueError(f"cannot read the expression at: {expression[position:]!r}")
            position = match.end()
            if match.group("string") is not None:
                python.append(repr(match.group("string")[1:-1].replace("''", "'")))
            elif match.group("op") is not None:
                python.append({"&&": " and ", "||": " or ", "!": " not "}.get(match.group("op"), match.group("op")))
            else:
                name = match.group("name")
                key = f"_v{len(names)}"
                follows_call = expression[position:].lstrip().startswith("(")
                names[key] = _GITHUB_FUNCTIONS[name] if follows_call else context[name]
                python.append(key)
        value = eval("".join(python), {"__builtins__": {}}, names)  # our own workflow text, a few known forms
        return {True: "true", False: "false"}.get(value, str(value)) if isinstance(value, bool) else str(value)

    return _EXPRESSION.sub(lambda m: evaluate(m.group(1)), text)
