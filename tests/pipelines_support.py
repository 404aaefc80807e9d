"""Read the pipeline YAML under pipelines/ the way the platforms would, far enough to test what they run.

:func:`nightly_command` gives the exbe command line a nightly pipeline runs, as an argv list with its template
expressions resolved for a scheduled run, so a test can run exactly that against the sandbox.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ROOT / "pipelines"
AZURE_NIGHTLY = PIPELINES / "azure" / "nightly-verify.yml"
GITHUB_NIGHTLY = PIPELINES / "github" / "nightly-verify.yml"

_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_PS_ENV = re.compile(r"\$env:([A-Za-z_][A-Za-z0-9_]*)")


def load(path: Path) -> dict[str, Any]:
    # BaseLoader keeps every scalar a string, as Azure Pipelines does ("true", "60").
    return yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)


def steps(document: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(job, step) pairs of an Azure pipeline's or a GitHub workflow's jobs."""
    jobs = document.get("jobs", {})
    for job in jobs.values() if isinstance(jobs, dict) else jobs:
        for step in job.get("steps", []):
            yield job, step


def exbe_step(document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The one step that runs exbe (not pip), with its job and its exbe command line."""
    found = [(job, step, line.strip()) for job, step in steps(document)
             for line in (step.get("script") or step.get("run") or "").splitlines()
             if line.strip().startswith("exbe ")]
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
    line = _PS_ENV.sub(lambda m: _evaluate_text(env[m.group(1)], values), line)
    return shlex.split(_evaluate_text(line, values))


def _evaluate_text(text: str, values: dict[str, str]) -> str:
    return _EXPRESSION.sub(lambda m: _evaluate(m.group(1), values), text)


def _evaluate(expression: str, values: dict[str, str]) -> str:
    """The few expression forms the nightly pipelines use: a name, or ``name || 'fallback'``."""
    for alternative in (part.strip() for part in expression.split("||")):
        value = alternative[1:-1] if alternative.startswith("'") else values[alternative]
        if value:
            return value
    return ""
