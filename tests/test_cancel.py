"""Cancellation (issue 12, item 4): on SIGINT or SIGTERM exbe starts no further server or step, lets the running
steps end, writes complete reports with the servers it did not finish marked cancelled, says so in one line and
exits 130; a second signal stops the wait and still leaves whole reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import junitparser
import pytest

from exbe import jobs
from exbe.sandbox.state import BACKEND_SITE, HostState
from exbe.sandbox.steps import LOCK_FILE

HOSTS = 6


def sandbox_renew(tmp_path: Path, *, latency_ms: int, concurrency: int) -> subprocess.Popen[str]:
    """`exbe renew --all --sandbox` as a pipeline runs it: a process of its own, reports to files."""
    env = {**os.environ, "EXBE_SANDBOX_HOSTS": str(HOSTS), "EXBE_SANDBOX_LATENCY_MS": str(latency_ms),
           "EXBE_CONCURRENCY": str(concurrency), "EXBE_SANDBOX_STATE_DIR": str(tmp_path / "sandbox"),
           "NO_COLOR": "1"}
    return subprocess.Popen([sys.executable, "-m", "exbe", "renew", "--all", "--sandbox", "--json",
                             str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


#: How long a wait may last before the test gives up: only a bound for a hung run, never what a test relies on (a
#: loaded agent is slow, not wrong).
PATIENCE_S = 600.0


def wait_for_file(path: Path, timeout: float = PATIENCE_S) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def wait_for_state_change(path: Path, timeout: float = PATIENCE_S) -> None:
    """Until the simulated server's saved state changes (a step changed it): the run is well under way."""
    deadline = time.monotonic() + timeout
    wait_for_file(path, timeout)
    first = path.stat().st_mtime_ns
    while path.stat().st_mtime_ns == first:
        assert time.monotonic() < deadline, f"{path} never changed"
        time.sleep(0.02)


def reports(tmp_path: Path) -> tuple[dict[str, dict], dict[str, junitparser.TestSuite]]:
    record = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    servers = {server["server"]: server for server in record["servers"]}
    suites = {suite.name: suite for suite in junitparser.JUnitXml.fromfile(str(tmp_path / "r.xml"))}
    return servers, suites


def junit_text(suite: junitparser.TestSuite) -> str:
    return " ".join(f"{case.name} {' '.join(r.message or '' for r in case.result)}" for case in suite)


def test_sigint_during_a_fleet_renew_writes_complete_reports_marks_the_cancelled_servers_and_exits_130(tmp_path):
    process = sandbox_renew(tmp_path, latency_ms=30, concurrency=1)
    wait_for_state_change(tmp_path / "sandbox" / "sim-exch02.json")  # exch01 done, exch02 renewing
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=PATIENCE_S)

    assert process.returncode == 130, out + err
    assert "Traceback" not in out + err
    assert err.count("exbe: cancelled (exbe received SIGINT): ") == 1, err
    servers, suites = reports(tmp_path)
    names = [f"sim-exch{n:02d}" for n in range(1, HOSTS + 1)]
    assert sorted(servers) == sorted(suites) == names, "every server is in both reports"
    finished = [name for name in names if servers[name]["error"] is None]
    cancelled = [name for name in names if servers[name]["error_kind"] == "cancelled"]
    assert finished and cancelled and sorted(finished + cancelled) == names
    assert finished == names[:len(finished)], "one server at a time: the finished ones are the first"
    for name in finished:
        assert {s["step"]: s["status"] for s in servers[name]["steps"]}["verify"] == "ok", name
    for name in cancelled:
        assert servers[name]["error"].startswith("cancelled before"), servers[name]["error"]
        assert "exbe received SIGINT" in servers[name]["error"]
        assert "cancelled" in junit_text(suites[name]), f"{name}'s JUnit suite says it was cancelled"
    started = [name for name in cancelled if servers[name]["steps"][0]["step"] != "connect"]
    assert started == ["sim-exch02"], "the server under way stopped before its next step; the rest never started"
    assert all(servers[name]["steps"] == [servers[name]["steps"][0]] and servers[name]["steps"][0]["status"] ==
               "skipped" for name in cancelled if name not in started)


def test_a_second_signal_stops_waiting_for_running_steps_and_still_writes_whole_reports(tmp_path):
    process = sandbox_renew(tmp_path, latency_ms=400, concurrency=2)
    for name in ("sim-exch01", "sim-exch02"):  # both took their lock: a dozen round trips of 400 ms to go
        wait_for_state_change(tmp_path / "sandbox" / f"{name}.json")
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGTERM)  # handled after the SIGINT (Python runs pending handlers by number)
    out, err = process.communicate(timeout=PATIENCE_S)

    assert process.returncode == 130, out + err
    assert "SIGTERM again: not waiting for the running steps" in err
    servers, suites = reports(tmp_path)
    assert len(servers) == len(suites) == HOSTS
    unknown = [name for name, server in servers.items() if "outcome" in (server["error"] or "")]
    assert unknown == ["sim-exch01", "sim-exch02"], "the servers left running: their current step's outcome unknown"
    for name in unknown:
        assert servers[name]["error_kind"] == "cancelled"
        lock = HostState.load(tmp_path / "sandbox" / f"{name}.json").exbe_files.get(LOCK_FILE)
        said = " ".join(servers[name]["warnings"])
        assert lock is None or f"`exbe unlock --server {name} --run {json.loads(lock['text'])['run_id']}`" in said, \
            f"{name}: its lock stays for 30 minutes, unreported"
        assert f"exbe verify --server {name}" in servers[name]["error"]
    assert "left running (outcome unknown)" in err



def cancel_after(monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    """Cancel the run (as the SIGINT handler does) the moment any server reports ``step``."""
    real = jobs.run_job

    def cancelling(servers, task, credentials, settings, options, progress, concurrency):
        def watch(server, reported, status, message):
            progress(server, reported, status, message)
            if reported == step:
                options.cancel.request("exbe received SIGINT", 60.0)
        return real(servers, task, credentials, settings, options, watch, concurrency)

    monkeypatch.setattr(jobs, "run_job", cancelling)


def test_a_server_cancelled_after_its_renewal_stops_before_the_bind_and_the_next_run_binds_that_certificate(
        start_fleet, exbe, tmp_path, monkeypatch):
    fleet = start_fleet([("exch01", "backend_expiring")])
    state_file = fleet.host("exch01").state_path
    before = HostState.load(state_file)
    old = before.https_binding(BACKEND_SITE, 444).certificate_hash
    cancel_after(monkeypatch, "renew")
    record = tmp_path / "cancelled.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--json", str(record))

    assert result.code == 130, result.out + result.err
    server = json.loads(record.read_text())["servers"][0]
    assert [(s["step"], s["status"]) for s in server["steps"]] == [("lock", "ok"), ("preflight", "ok"),
                                                                   ("renew", "changed"), ("bind", "skipped")]
    assert server["error"].startswith("cancelled before bind started (exbe received SIGINT)")
    after = HostState.load(state_file)
    new = next(step for step in server["steps"] if step["step"] == "renew")["after"]["thumbprint"]
    assert server["new_thumbprint"] is None, "created, not bound: not the new certificate"
    assert after.find("My", new) is not None, "the renewal ran whole"
    assert after.https_binding(BACKEND_SITE, 444).certificate_hash == old, "and nothing after it started"

    monkeypatch.undo()
    rerun = exbe(fleet, "renew", "--server", "exch01", "--json", str(tmp_path / "rerun.json"))
    assert rerun.code == 0, rerun.out + rerun.err
    assert HostState.load(state_file).https_binding(BACKEND_SITE, 444).certificate_hash == new, \
        "the next run reuses the staged certificate rather than making another"


def test_a_run_cancelled_after_the_bind_does_not_restart_iis(start_fleet, exbe, tmp_path, monkeypatch):
    fleet = start_fleet([("exch01", "backend_expiring")])
    cancel_after(monkeypatch, "bind")
    record = tmp_path / "r.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--restart-iis", "--json", str(record))
    assert result.code == 130
    steps = {s["step"]: s["status"] for s in json.loads(record.read_text())["servers"][0]["steps"]}
    assert steps["bind"] == "changed" and steps["restart"] == "skipped"
    host = fleet.host("exch01")
    with host.lock:
        assert host.state.iis_restarts == 0


@pytest.mark.parametrize("scenario", ["binding_empty", "binding_removed_by_update"])
def test_a_renewal_interrupted_before_its_bind_on_a_server_without_a_444_certificate_converges_on_the_next_run(
        start_fleet, exbe, tmp_path, monkeypatch, scenario):
    """444 carries nothing, so after the interruption LocalMachine\\My holds two back-end candidates: the next run
    binds the one the interrupted run made (its journal names it), with no human and no third certificate."""
    fleet = start_fleet([("exch01", scenario)])
    cancel_after(monkeypatch, "renew")
    record = tmp_path / "cancelled.json"
    assert exbe(fleet, "renew", "--server", "exch01", "--force", "--json", str(record)).code == 130
    server = json.loads(record.read_text())["servers"][0]
    assert server["new_thumbprint"] is None, "created, not bound: not the new certificate"
    new = next(step for step in server["steps"] if step["step"] == "renew")["after"]["thumbprint"]
    assert new
    monkeypatch.undo()
    state_file = fleet.host("exch01").state_path
    mine = {c.thumbprint for c in HostState.load(state_file).my}

    rerun = tmp_path / "rerun.json"
    result = exbe(fleet, "renew", "--server", "exch01", "--json", str(rerun))
    assert result.code == 0, result.out + result.err
    after = HostState.load(state_file)
    assert after.https_binding(BACKEND_SITE, 444).certificate_hash == new, "the interrupted run's certificate"
    assert {c.thumbprint for c in after.my} == mine, "no further certificate"
    assert exbe(fleet, "verify", "--server", "exch01").code == 0


def test_json_and_junit_call_a_cancelled_server_cancelled_not_unreachable(start_fleet, exbe, tmp_path, monkeypatch):
    fleet = start_fleet([("exch01", "backend_expiring")])
    cancel_after(monkeypatch, "renew")
    record, junit = tmp_path / "r.json", tmp_path / "r.xml"
    assert exbe(fleet, "renew", "--server", "exch01", "--json", str(record), "--junit", str(junit)).code == 130
    assert json.loads(record.read_text())["servers"][0]["verdict"] == "cancelled"
    (suite,) = junitparser.JUnitXml.fromfile(str(junit))
    assert {p.name: p.value for p in suite.properties()}.get("verdict") == "cancelled"
