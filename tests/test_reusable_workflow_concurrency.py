"""The reusable workflow lets one task that changes servers run at a time per inventory, across runs and callers,
while read-only tasks and the shards of one matrix never wait for each other.

The job's ``concurrency.group`` expression is evaluated for the calls an admin makes (tests/pipelines_support.py's
``github_expression``); two calls wait for each other exactly when their groups are equal.
"""

from __future__ import annotations

from typing import Any

import pytest

from .pipelines_support import GITHUB_REUSABLE, github_expression, load

WORKFLOW = load(GITHUB_REUSABLE)
[JOB] = WORKFLOW["jobs"].values()


def _group(run: int = 1, attempt: int = 1, **inputs: Any) -> str:
    """The concurrency group of one call: ``inputs`` as the caller passes them (others: their defaults)."""
    declared = WORKFLOW["on"]["workflow_call"]["inputs"]
    context = {f"inputs.{name}": str(spec.get("default", "")) for name, spec in declared.items()}
    context.update({f"inputs.{name.replace('_', '-')}": str(value) for name, value in inputs.items()})
    context.update({"github.run_id": str(run), "github.run_attempt": str(attempt)})
    return github_expression(JOB["concurrency"]["group"], context)


def test_the_job_queues_behind_a_running_one_instead_of_cancelling_it() -> None:
    assert JOB["concurrency"]["cancel-in-progress"] == "false"
    assert "concurrency" not in WORKFLOW  # job level: it holds the job that touches servers, not the caller's run


@pytest.mark.parametrize("task", ["renew", "trust", "bind", "cleanup"])
def test_two_runs_that_change_servers_of_one_inventory_wait_for_each_other(task: str) -> None:
    first = _group(run=1, task=task, group="dag1")
    assert _group(run=2, task=task, group="dag1") == first
    assert _group(run=3, task=task, servers="exch01,exch02") == first  # overlapping selections: one at a time
    assert _group(run=4, task="renew") == first                        # renew --all, and a cleanup, likewise
    assert _group(run=1, attempt=2, task=task, group="dag1") == first  # a re-run too


def test_changes_to_different_inventories_run_side_by_side() -> None:
    assert _group(task="renew", config="exbe.yaml") != _group(run=2, task="renew", config="lab/exbe.yaml")


def test_the_shards_of_one_renewal_matrix_do_not_wait_for_each_other() -> None:
    shards = {_group(task="renew", shard=f"{i}/4", report_name=f"renew-{i}") for i in range(1, 5)}
    assert len(shards) == 4
    # ... while the same shard of another run waits for this one
    assert _group(run=2, task="renew", shard="2/4") == _group(run=1, task="renew", shard="2/4")


@pytest.mark.parametrize("task", ["preflight", "verify"])
def test_read_only_tasks_never_wait(task: str) -> None:
    groups = {
        _group(run=1, task=task), _group(run=2, task=task), _group(run=1, attempt=2, task=task),
        _group(run=1, task=task, report_name="dag2"), _group(run=1, task=task, shard="1/2"),
        _group(run=1, task="renew"),
    }
    assert len(groups) == 6
