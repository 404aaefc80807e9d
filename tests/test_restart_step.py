"""The restart step: when the renew chain needs it, and one start attempt for W3SVC/WAS a restart left stopped, in
the sandbox's handler and the template alike; ``--restart-iis`` restarts when needed, ``--restart-iis=always`` every
time (issue 12, item 6)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from exbe.facts import HostFacts
from exbe.model import Settings, StepResult
from exbe.render import TEMPLATE_DIR
from exbe.sandbox import windows
from exbe.sandbox.faults import Faults
from exbe.sandbox.records import ErrorInfo
from exbe.sandbox.state import HostState
from exbe.sandbox.steps import run_step
from exbe.steps import facts, get, restart

from .exbe_cli import requests_seen


def host_facts(**services: str) -> HostFacts:
    state = HostState.from_scenario("exch01", "healthy")
    state.services.update(services)
    return HostFacts.parse(run_step(state, "facts", facts.plan(Settings()), Faults())["data"])


@pytest.mark.parametrize("bind_changed,services,reason", [
    (False, {}, None),
    (True, {}, "this run changed a binding"),
    (False, {"W3SVC": "Stopped"}, "W3SVC is Stopped"),
    (False, {"WAS": "StopPending"}, "WAS is StopPending"),
    (True, {"WAS": "Stopped", "W3SVC": "Stopped"}, "this run changed a binding; WAS is Stopped; W3SVC is Stopped"),
])
def test_the_chain_restarts_only_when_a_binding_changed_or_a_web_service_is_down(bind_changed, services, reason):
    assert restart.needed(host_facts(**services), bind_changed=bind_changed) == reason


def restart_on(state: HostState, faults: Faults | None = None, *, method: str = "iisreset", dry_run: bool = False):
    envelope = run_step(state, "restart", restart.plan(dry_run=dry_run, method=method), faults or Faults())
    get("restart").check_result(envelope)
    return envelope


@pytest.mark.parametrize("method", ["iisreset", "services"])
def test_under_the_timeout_fault_the_one_start_attempt_fails_and_the_step_says_so(method):
    state = HostState.from_scenario("exch01", "healthy")
    envelope = restart_on(state, Faults(iisreset_timeout=True), method=method)
    assert not envelope["ok"] and envelope["changed"]
    assert envelope["data"]["stopped_after_restart"] == ["W3SVC"] and envelope["data"]["started"] == []
    assert (envelope["data"]["w3svc_after"], envelope["data"]["was_after"]) == ("Stopped", "Running")
    assert envelope["error"].startswith(f"W3SVC is Stopped after {method} and one start attempt (waited 120 s)")
    assert [w.split(":")[0] for w in envelope["warnings"]] == [method, "starting W3SVC failed", "W3SVC not running "
                                                               f"after {method}; one start attempt started none"]
    assert state.services["W3SVC"] == "Stopped"


def test_a_restart_that_left_both_services_stopped_starts_was_then_w3svc(monkeypatch):
    def slow(state, faults, timeout_seconds):
        state.iis_restarts += 1
        state.services.update(WAS="Stopped", W3SVC="Stopped")
        raise windows.WindowsCallError(ErrorInfo("Restart attempt failed.", error_id="NativeCommandError"))

    monkeypatch.setattr(windows, "iisreset", slow)
    started: list[str] = []
    real_start = windows.start_service
    monkeypatch.setattr(windows, "start_service", lambda state, faults, name, timeout: (
        started.append(name), real_start(state, faults, name, timeout))[-1])
    state = HostState.from_scenario("exch01", "healthy")
    envelope = restart_on(state)
    assert envelope["ok"] and envelope["changed"]
    assert started == ["WAS", "W3SVC"], "each once, WAS first (W3SVC depends on it)"
    assert envelope["data"]["started"] == ["WAS", "W3SVC"] == envelope["data"]["stopped_after_restart"]
    assert state.services == {"WAS": "Running", "W3SVC": "Running"}
    line = StepResult.from_envelope("exch01", envelope, 0.0).message
    assert line == "ran iisreset: W3SVC Running -> Running (started WAS, W3SVC after it)"


def test_a_w3svc_left_stop_pending_by_a_timed_out_iisreset_is_waited_for_until_stopped_then_started():
    """real-server-shapes.md §4: after a timed-out ``iisreset /noforce`` W3SVC may stay StopPending; waiting for
    Running never starts it. The step waits for Stopped, starts it, waits for Running."""
    state = HostState.from_scenario("exch01", "healthy")
    envelope = restart_on(state, Faults(iisreset_stop_pending=True))
    assert envelope["ok"] and envelope["changed"], envelope["error"]
    assert envelope["data"]["stopped_after_restart"] == ["W3SVC"] and envelope["data"]["started"] == ["W3SVC"]
    assert (envelope["data"]["w3svc_after"], envelope["data"]["was_after"]) == ("Running", "Running")
    assert state.services["W3SVC"] == "Running"


def test_waiting_for_running_never_starts_a_stop_pending_or_stopped_service_and_start_refuses_a_stopping_one():
    state = HostState.from_scenario("exch01", "healthy")
    state.services["W3SVC"] = "StopPending"
    with pytest.raises(windows.WindowsCallError, match="Time out has expired"):
        windows.wait_for_status(state, "W3SVC", "Running", 60)
    with pytest.raises(windows.WindowsCallError, match="Cannot start service W3SVC"):
        windows.start_service(state, Faults(), "W3SVC", 60)
    assert state.services["W3SVC"] == "StopPending"
    windows.wait_for_status(state, "W3SVC", "Stopped", 60)
    windows.start_service(state, Faults(), "W3SVC", 60)
    assert state.services["W3SVC"] == "Running"


def test_the_template_waits_for_stopped_before_it_starts_and_for_running_after():
    source = (TEMPLATE_DIR / "restart.ps1.j2").read_text(encoding="utf-8")
    attempt = source[source.index("function Start-ExbeStoppedService"):source.index("function Invoke-ExbeRestart")]
    order = [attempt.index(call) for call in ("$service.WaitForStatus('Stopped', $bound)", "$service.Start()",
                                              "$service.WaitForStatus('Running', $bound)")]
    assert order == sorted(order)
    assert "if ($service.Status -eq 'StopPending')" in attempt
    assert "WaitForStatus('Running'" not in source.replace(attempt, ""), "no wait for Running outside the attempt"


def test_starting_w3svc_starts_its_dependency_was_too():
    state = HostState.from_scenario("exch01", "healthy")
    state.services.update(WAS="Stopped", W3SVC="Stopped")
    windows.start_service(state, Faults(), "W3SVC", 60)
    assert state.services == {"WAS": "Running", "W3SVC": "Running"}


def test_a_clean_restart_tries_no_start_and_a_dry_run_neither():
    state = HostState.from_scenario("exch01", "healthy")
    clean = restart_on(state)
    assert clean["ok"] and (clean["data"]["stopped_after_restart"], clean["data"]["started"]) == ([], [])
    assert clean["warnings"] == []
    state.services["W3SVC"] = "Stopped"
    dry = restart_on(state, dry_run=True)
    assert dry["ok"] and dry["changed"], "it would restart; a W3SVC that -WhatIf left stopped is no restart failure"
    assert dry["data"]["started"] == [] and state.services["W3SVC"] == "Stopped", "a dry run attempts nothing"
    assert StepResult.from_envelope("exch01", dry, 0.0).message == "would run iisreset (W3SVC is Stopped now)"


def test_the_template_reports_every_key_of_the_result_schema_and_tries_each_service_once():
    source = (TEMPLATE_DIR / "restart.ps1.j2").read_text(encoding="utf-8")
    initial = re.search(r"\$data = \[ordered\]@\{(.*)\}\n", source)
    assert initial is not None
    assert set(re.findall(r"(\w+) = ", initial.group(1))) == set(restart.RESULT)
    assert "foreach ($name in @('WAS', 'W3SVC'))" in source, "WAS first, as the sandbox"
    assert source.count("Start-ExbeStoppedService -Name") == 1 and source.count("$service.Start()") == 1
    assert "$bound = [System.TimeSpan]::FromSeconds($TimeoutSeconds)" in source, "a bounded wait"


# -- --restart-iis on the command line: when needed, or =always ------------------------------------------------------


def restart_record(fleet, exbe, tmp_path, *flags: str) -> tuple[int, dict, int]:
    """Renew a healthy server (nothing to bind) with ``flags``: the exit code, the restart step, IIS restarts."""
    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", *flags, "--json", str(record))
    assert result.code == 0, result.out + result.err
    steps = {s["step"]: s for s in json.loads(record.read_text())["servers"][0]["steps"]}
    host = fleet.host("exch01")
    with host.lock:
        return result.code, steps["restart"], host.state.iis_restarts


@pytest.mark.parametrize("flag", ["--restart-iis", "--restart-iis=needed"])
def test_restart_iis_without_always_skips_the_restart_when_nothing_needs_it(fleet, exbe, tmp_path, flag):
    _, restart_step, restarts = restart_record(fleet, exbe, tmp_path, flag)
    assert (restart_step["status"], restart_step["message"]) == ("skipped", restart.NOT_NEEDED)
    assert restarts == 0


@pytest.mark.parametrize("flags", [["--restart-iis=always"], ["--restart-iis", "always"], ["--restart-iis=ALWAYS"]])
def test_restart_iis_always_restarts_even_when_nothing_bound_changed_and_w3svc_runs(fleet, exbe, tmp_path, flags):
    _, restart_step, restarts = restart_record(fleet, exbe, tmp_path, *flags)
    assert restart_step["status"] == "changed"
    assert restart_step["data"]["reason"] == "forced (--restart-iis=always)"
    assert restarts == 1


def test_restart_iis_always_names_the_other_reasons_too(start_fleet, exbe, tmp_path):
    fleet = start_fleet([("exch01", "w3svc_stopped")])
    _, restart_step, restarts = restart_record(fleet, exbe, tmp_path, "--restart-iis=always")
    assert restart_step["data"]["reason"] == "forced (--restart-iis=always); W3SVC is Stopped"
    assert restarts == 1


@pytest.mark.parametrize("value", ["sometimes", "", "true"])
def test_any_other_restart_iis_value_is_a_usage_error_before_any_server_is_contacted(fleet, exbe, value):
    fleet.host("exch01").reset_counts()
    result = exbe(fleet, "renew", "--server", "exch01", f"--restart-iis={value}")
    assert result.code == 2
    assert "--restart-iis takes no value" in result.err and "=always" in result.err
    assert requests_seen(fleet) == 0


def test_the_help_of_renew_says_what_restart_iis_always_does():
    shown = subprocess.run([sys.executable, "-m", "exbe", "renew", "--help"], capture_output=True, text=True,
                           check=True, env={**os.environ, "COLUMNS": "120"})
    text = " ".join(shown.stdout.split())
    assert "--restart-iis[=always]" in text
    assert "--restart-iis=always restarts every time" in text
