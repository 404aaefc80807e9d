"""What a renew reports when a step fails, read from a real run on the sandbox: one failure per cause (a failed trust
is the failure; the bind that could not run after it is skipped, saying why, never a second failure carrying trust's
message), and a bind that failed and was rolled back never reported as the new certificate (not in the output
variable, not as the JUnit ``new_thumbprint``, and in the summary as created but not bound)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import junitparser
import pytest

from exbe.main import ExbeProgram
from exbe.sandbox.faults import Faults
from exbe.sandbox.fleet import Fleet

from .conftest import PASSWORD, USERNAME

HOSTS = [("exch01", "backend_expiring"), ("exch02", "backend_expiring"), ("exch03", "backend_expiring")]
FAULTS = {"exch01": Faults(step_fail="trust"), "exch02": Faults(bind_com_error=True)}


@pytest.fixture(scope="module")
def renewed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("renew-causes")
    with Fleet(folder / "sandbox", HOSTS, faults=FAULTS, username=USERNAME, password=PASSWORD) as fleet:
        config = folder / "exbe.json"
        config.write_text(json.dumps({"exbe": {"inventory": fleet.inventory()}}), encoding="utf-8")
        out = io.StringIO()
        with pytest.MonkeyPatch.context() as patch:
            for name, value in {"EXBE_USERNAME": USERNAME, "EXBE_PASSWORD": PASSWORD, "GITHUB_ACTIONS": "true",
                                "GITHUB_OUTPUT": str(folder / "output"),
                                "GITHUB_STEP_SUMMARY": str(folder / "summary.md")}.items():
                patch.setenv(name, value)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()), \
                    contextlib.suppress(SystemExit):
                ExbeProgram().run(["exbe", "-f", str(config), "renew", "--all", "--junit", str(folder / "r.xml"),
                                   "--json", str(folder / "r.json")])
        (folder / "stdout").write_text(out.getvalue(), encoding="utf-8")
    return folder


def _cases(folder: Path, server: str) -> dict[str, junitparser.TestCase]:
    (suite,) = [suite for suite in junitparser.JUnitXml.fromfile(str(folder / "r.xml")) if suite.name == server]
    return {case.name.split(": ", 1)[1]: case for case in suite}


def test_a_failed_trust_is_one_failure_and_the_bind_it_stopped_is_skipped_saying_why(renewed: Path) -> None:
    cases = _cases(renewed, "exch01")
    failures = [name for name, case in cases.items() if any(isinstance(r, junitparser.Failure) for r in case.result)]
    assert failures == ["trust"]
    (skipped,) = cases["bind"].result
    assert isinstance(skipped, junitparser.Skipped)
    assert skipped.message.startswith("not run: trust failed")
    annotations = [line for line in (renewed / "stdout").read_text().splitlines() if line.startswith("::error")]
    (exch01,) = [line for line in annotations if "title=exbe exch01" in line]
    assert "exch01 failed trust: " in exch01 and "trust, bind" not in exch01


def test_a_certificate_whose_bind_never_ran_is_not_the_new_certificate(renewed: Path) -> None:
    record = {entry["server"]: entry for entry in json.loads((renewed / "r.json").read_text())["servers"]}
    renew = next(step for step in record["exch01"]["steps"] if step["step"] == "renew")
    created = renew["after"]["thumbprint"]
    assert created and record["exch01"]["new_thumbprint"] is None
    assert "exch01_new_thumbprint" not in (renewed / "output").read_text(encoding="utf-8")
    summary = (renewed / "summary.md").read_text(encoding="utf-8")
    assert f"` {record['exch01']['old_thumbprint']} kept; {created} created, not bound `" in summary


def test_a_rolled_back_bind_is_not_the_new_certificate_anywhere(renewed: Path) -> None:
    record = {entry["server"]: entry for entry in json.loads((renewed / "r.json").read_text())["servers"]}
    renew = next(step for step in record["exch02"]["steps"] if step["step"] == "renew")
    created = renew["after"]["thumbprint"]
    assert record["exch02"]["new_thumbprint"] is None
    assert record["exch03"]["new_thumbprint"] not in (None, record["exch03"]["old_thumbprint"])
    outputs = (renewed / "output").read_text(encoding="utf-8")
    assert "exch02_new_thumbprint" not in outputs and created not in outputs
    assert f"exch03_new_thumbprint={record['exch03']['new_thumbprint']}" in outputs
    suites = {suite.name: {p.name: p.value for p in suite.properties()}
              for suite in junitparser.JUnitXml.fromfile(str(renewed / "r.xml"))}
    assert suites["exch02"]["new_thumbprint"] == ""
    summary = (renewed / "summary.md").read_text(encoding="utf-8")
    old = record["exch02"]["old_thumbprint"]
    assert re.search(rf"` {old} kept; {created} created, not bound `", summary)
    assert f"` {record['exch03']['old_thumbprint']} → {record['exch03']['new_thumbprint']} `" in summary
