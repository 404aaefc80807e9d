"""The exact command the nightly pipelines run, against a sandbox fleet, leaves the JUnit where the YAML publishes
it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import junitparser
import pytest

from .conftest import PASSWORD, USERNAME
from .exbe_cli import write_config
from .pipelines_support import AZURE_NIGHTLY, GITHUB_NIGHTLY, nightly_command

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("pipeline", [AZURE_NIGHTLY, GITHUB_NIGHTLY], ids=["azure", "github"])
def test_the_nightly_command_runs_on_the_sandbox_and_writes_the_published_junit(start_fleet, tmp_path, pipeline):
    fleet = start_fleet([("exch01", "healthy"), ("exch02", "backend_expiring"), ("exch03", "healthy")])
    config = write_config(fleet, tmp_path / "exbe.yaml")
    argv = nightly_command(pipeline, config=str(config), shard=(1, 1))
    assert argv[0] == "exbe"
    env = {**os.environ, "EXBE_USERNAME": USERNAME, "EXBE_PASSWORD": PASSWORD, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "exbe", *argv[1:]], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    junit_path = tmp_path / argv[argv.index("--junit") + 1]
    assert junit_path.exists(), proc.stdout + proc.stderr
    xml = junitparser.JUnitXml.fromfile(str(junit_path))
    assert {s.name for s in xml} == {"exch01", "exch02", "exch03", "organization"}
    # the Auth and Federation certificates are judged too: per server, and once for the organization
    cases = {case.name for suite in xml for case in suite}
    assert {f"{server}: {check}" for server in ("exch01", "exch02", "exch03")
            for check in ("auth_cert", "auth_next", "auth_previous", "federation_cert")} <= cases
    assert "organization: auth_organization" in cases
    # exch02's certificate has 20 days left: the nightly job goes red and says why
    assert proc.returncode == 1
    assert "backend_days_left" in proc.stdout
    assert PASSWORD not in proc.stdout + proc.stderr + junit_path.read_text()
