"""The benchmark's fleet runs in processes of its own, so exbe's CPU is measured apart from the sandbox's, and those
processes still report what the benchmark needs: every host's requests and their own CPU time (issue 16, item 4)."""

from __future__ import annotations

import os

import requests

from bench.fleet import PASSWORD, ROOT, USERNAME, SandboxProcesses


def test_the_benchmark_fleet_is_split_over_processes_that_report_requests_and_cpu(tmp_path):
    env = {**os.environ, "EXBE_USERNAME": USERNAME, "EXBE_PASSWORD": PASSWORD, "PYTHONPATH": str(ROOT)}
    with SandboxProcesses(tmp_path, 3, "healthy", 0, 2, env) as sandbox:
        names = [entry["name"] for entry in sandbox.inventory]
        assert names == ["sim-exch01", "sim-exch02", "sim-exch03"], "one fleet, sliced without name clashes"
        assert len({entry["port"] for entry in sandbox.inventory}) == 3
        assert len({entry["ca_file"] for entry in sandbox.inventory}) == 2, "two processes, two state dirs"
        started = sandbox.ask("reset")
        third = sandbox.inventory[2]
        answer = requests.post(f"http://127.0.0.1:{third['port']}/wsman", data=b"", timeout=10)
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Negotiate"
        reports = sandbox.ask("report")
    counts = {name: per_host for report in reports for name, per_host in report["counts"].items()}
    assert counts["sim-exch03"]["winrm"] == {"auth": 1} and counts["sim-exch01"]["winrm"] == {}
    assert all(report["cpu_s"] >= before["cpu_s"] > 0 for report, before in zip(reports, started, strict=True))
    assert all(report["peak_kib"] > 10_000 for report in reports), "VmHWM of a Python process with a fleet"
