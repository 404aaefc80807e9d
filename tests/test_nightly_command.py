"""The nightly pipelines run the documented exbe command and publish the JUnit file that command writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from exbe.shard import parse_shard

from .pipelines_support import AZURE_NIGHTLY, GITHUB_NIGHTLY, exbe_step, load, nightly_command, steps

DOCUMENTED = ["verify", "--all", "--junit", "reports/exbe-verify.xml", "--json", "reports/exbe-verify.json",
              "--metrics", "reports/exbe-verify.prom"]


def _without(argv: list[str], *options: str) -> list[str]:
    """argv without the given options and their values."""
    rest, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token in options:
            skip = True
        else:
            rest.append(token)
    return rest


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _task_step(path: Path, task: str) -> dict:
    [step] = [step for _, step in steps(load(path)) if str(step.get("task", step.get("uses", ""))).startswith(task)]
    return step


@pytest.mark.parametrize("path", [AZURE_NIGHTLY, GITHUB_NIGHTLY], ids=["azure", "github"])
def test_the_nightly_pipeline_runs_the_documented_verify_command(path: Path) -> None:
    argv = nightly_command(path)
    assert argv[0] == "exbe"
    assert _option(argv, "-f") == "exbe.yaml"
    assert _without(argv[1:], "-f", "--shard") == DOCUMENTED


@pytest.mark.parametrize("path", [AZURE_NIGHTLY, GITHUB_NIGHTLY], ids=["azure", "github"])
def test_a_manual_run_can_point_the_nightly_command_at_another_config_file(path: Path) -> None:
    assert _option(nightly_command(path, config="lab/exbe.yaml"), "-f") == "lab/exbe.yaml"


def test_azure_publishes_the_junit_file_the_nightly_command_writes_even_when_verify_fails() -> None:
    publish = _task_step(AZURE_NIGHTLY, "PublishTestResults@2")
    assert publish["inputs"]["testResultsFormat"] == "JUnit"
    assert publish["inputs"]["testResultsFiles"] == _option(nightly_command(AZURE_NIGHTLY), "--junit")
    assert publish["condition"] == "succeededOrFailed()"


def test_azure_keeps_the_json_run_record_and_the_metrics_as_a_pipeline_artifact_even_when_verify_fails() -> None:
    artifact = _task_step(AZURE_NIGHTLY, "PublishPipelineArtifact@1")
    argv = nightly_command(AZURE_NIGHTLY)
    published = Path(artifact["inputs"]["targetPath"])
    assert {Path(_option(argv, "--json")).parent, Path(_option(argv, "--metrics")).parent} == {published}
    assert artifact["condition"] == "succeededOrFailed()"


def test_azure_maps_the_secret_credentials_into_the_exbe_step_explicitly_and_requires_them() -> None:
    _, step, _ = exbe_step(load(AZURE_NIGHTLY))
    assert {name: step["env"][name] for name in ("EXBE_USERNAME", "EXBE_PASSWORD", "EXBE_CREDENTIALS")} == {
        "EXBE_USERNAME": "$(EXBE_USERNAME)", "EXBE_PASSWORD": "$(EXBE_PASSWORD)", "EXBE_CREDENTIALS": "true"}


def test_azure_runs_nightly_even_when_nothing_was_committed() -> None:
    [schedule] = load(AZURE_NIGHTLY)["schedules"]
    assert schedule["always"] == "true"
    assert len(schedule["cron"].split()) == 5


def test_github_uploads_the_reports_the_nightly_command_writes_and_shows_the_junit_even_when_verify_fails() -> None:
    argv = nightly_command(GITHUB_NIGHTLY)
    junit = _option(argv, "--junit")
    upload = _task_step(GITHUB_NIGHTLY, "actions/upload-artifact@")
    report = _task_step(GITHUB_NIGHTLY, "mikepenz/action-junit-report@")
    assert {junit, _option(argv, "--json"), _option(argv, "--metrics")} <= set(upload["with"]["path"].split())
    assert report["with"]["report_paths"] == junit
    assert upload["if"] == report["if"] == "always()"


def test_github_runs_on_a_schedule_and_on_demand_on_the_self_hosted_exchange_runners() -> None:
    document = load(GITHUB_NIGHTLY)
    assert set(document["on"]) == {"schedule", "workflow_dispatch"}
    job, _, _ = exbe_step(document)
    assert job["runs-on"] == ["self-hosted", "windows", "exchange"]


def test_github_matrix_jobs_take_shards_one_to_n_of_the_inventory() -> None:
    job, _, _ = exbe_step(load(GITHUB_NIGHTLY))
    shards = job["strategy"]["matrix"]["shard"]
    total = len(shards)
    assert job["strategy"]["fail-fast"] == "false"
    specs = [_option(nightly_command(GITHUB_NIGHTLY, shard=(int(i), total)), "--shard") for i in shards]
    assert [parse_shard(spec) for spec in specs] == [(i, total) for i in range(1, total + 1)]
