"""The reports of one mixed fleet run, read the way admins and their tools read them.

A sandbox fleet of five: one healthy, one with a warning (SHA-1 signed back-end certificate), one failing (20 days
left), one that drops the connection (unreachable) and one that refuses the credentials. ``exbe verify --all`` runs
on it once as if in GitHub Actions and once as if in Azure Pipelines, writing JUnit, the JSON record and metrics.
The JUnit -- written by junit-xml, exbe's only JUnit writer -- is read by junitparser (EnricoMi's publish action reads
with it), by xml-js, the parser of mikepenz/action-junit-report (tests/node/junit.mjs), and by xml2js as
dorny/test-reporter's java-junit parser reads it (tests/node/junit-dorny.mjs; both installed by ``npm ci --prefix
tests/node``); the metrics by prometheus_client's own parser; the step summary by cmark-gfm, GitHub's renderer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import junitparser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exbe.checks import CHECKS
from exbe.main import ExbeProgram
from exbe.sandbox.faults import Faults
from exbe.sandbox.fleet import Fleet

from .conftest import PASSWORD, USERNAME

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"
HOSTS = [("exch01", "healthy"), ("exch02", "sha1_backend"), ("exch03", "backend_expiring"), ("exch04", "healthy"),
         ("exch05", "healthy")]
FAULTS = {"exch04": Faults(drop_after=0), "exch05": Faults(auth_fail=True)}
CHECK_IDS = [check.__name__ for check in CHECKS]
VERDICTS = {"exch01": "passed", "exch02": "warnings", "exch03": "failed", "exch04": "unreachable",
            "exch05": "unreachable"}


@dataclasses.dataclass
class Run:
    """One `exbe verify --all` on the fleet: the files it wrote and what it printed."""

    folder: Path
    code: int
    out: str

    @property
    def junit(self) -> Path:
        return self.folder / "verify.xml"

    @property
    def record(self) -> dict[str, Any]:
        return json.loads((self.folder / "verify.json").read_text(encoding="utf-8"))

    def days_left(self, server: str) -> int:
        """The back-end certificate's days left on ``server`` as its backend_days_left check judged them (the
        sandbox dates its certificates from when the fleet starts, so a day boundary can pass in between)."""
        (days,) = [check["value"] for entry in self.record["servers"] if entry["server"] == server
                   for step in entry["steps"] for check in step["checks"] if check["id"] == "backend_days_left"]
        return int(days)

    @property
    def metrics(self) -> str:
        return (self.folder / "verify.prom").read_text(encoding="utf-8")


def _run(fleet: Fleet, folder: Path, platform: dict[str, str]) -> Run:
    folder.mkdir()
    config = folder / "exbe.json"
    config.write_text(json.dumps({"exbe": {"inventory": fleet.inventory()}}), encoding="utf-8")
    out = io.StringIO()
    code = 0
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"EXBE_USERNAME": USERNAME, "EXBE_PASSWORD": PASSWORD, **platform}.items():
            patch.setenv(name, value.format(folder=folder))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            try:
                ExbeProgram().run(["exbe", "-f", str(config), "verify", "--all", "--keep-going",
                                   "--junit", str(folder / "verify.xml"), "--json", str(folder / "verify.json"),
                                   "--metrics", str(folder / "verify.prom")])
            except SystemExit as exc:
                code = int(exc.code or 0)
    return Run(folder, code, out.getvalue())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    folder = tmp_path_factory.mktemp("mixed")
    with Fleet(folder / "sandbox", HOSTS, faults=FAULTS, username=USERNAME, password=PASSWORD) as fleet:
        return {
            "github": _run(fleet, folder / "github", {"GITHUB_ACTIONS": "true",
                                                      "GITHUB_STEP_SUMMARY": "{folder}/summary.md",
                                                      "GITHUB_OUTPUT": "{folder}/output"}),
            "azure": _run(fleet, folder / "azure", {"TF_BUILD": "True", "AGENT_TEMPDIRECTORY": "{folder}"}),
        }


@pytest.fixture(scope="module")
def github(runs: dict[str, Run]) -> Run:
    return runs["github"]


def _xml_js(path: Path) -> dict[str, Any]:
    """The JUnit file as mikepenz/action-junit-report's parser reads it."""
    node = shutil.which("node")
    if not node:
        pytest.fail("node is required to read JUnit with xml-js (node 20+; then: npm ci --prefix tests/node)")
    if not (NODE_DIR / "node_modules" / "xml-js").is_dir():
        npm = shutil.which("npm")
        assert npm, "npm is required: npm ci --prefix tests/node"
        installed = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
                                   capture_output=True, text=True, timeout=300)
        assert installed.returncode == 0, installed.stderr
    read = subprocess.run([node, str(NODE_DIR / "junit.mjs"), str(path)], capture_output=True, text=True, timeout=60)
    assert read.returncode == 0, read.stderr
    parsed: dict[str, Any] = json.loads(read.stdout)
    return parsed


def _dorny(path: Path) -> dict[str, Any]:
    """The JUnit file as dorny/test-reporter's java-junit parser reads it (xml2js)."""
    _xml_js(path)  # installs tests/node's packages when they are missing
    read = subprocess.run([shutil.which("node") or "node", str(NODE_DIR / "junit-dorny.mjs"), str(path)],
                          capture_output=True, text=True, timeout=60)
    assert read.returncode == 0, read.stderr
    parsed: dict[str, Any] = json.loads(read.stdout)
    return parsed


def _junitparser_cases(path: Path) -> list[dict[str, Any]]:
    cases = []
    for suite in junitparser.JUnitXml.fromfile(str(path)):
        for case in suite:
            (result, *_) = case.result or [None]
            cases.append({"suite": suite.name, "classname": case.classname, "name": case.name, "time": case.time,
                          "result": {junitparser.Failure: "failure", junitparser.Error: "error",
                                     junitparser.Skipped: "skipped", type(None): "passed"}[type(result)],
                          "message": result.message if result is not None else None,
                          "body": (result.text or "") if result is not None else "",
                          "systemOut": case.system_out or ""})
    return cases


@pytest.fixture(scope="module", params=["junitparser", "xml-js"])
def cases(request: pytest.FixtureRequest, github: Run) -> list[dict[str, Any]]:
    """Every test case of the run's JUnit, as each parser reads it."""
    if request.param == "junitparser":
        return _junitparser_cases(github.junit)
    return list(_xml_js(github.junit)["cases"])


def _check(case: dict[str, Any]) -> str:
    return str(case["name"]).split(": ", 1)[1]


# -- JUnit -----------------------------------------------------------------------------------------------------------
def test_the_run_fails_because_one_server_fails_and_two_cannot_be_reached(github: Run) -> None:
    assert github.code == 1
    assert {server["server"]: server["verdict"] for server in github.record["servers"]} == VERDICTS


def test_every_title_names_its_server_in_azure_and_in_the_github_reporters(cases: list[dict[str, Any]]) -> None:
    assert {case["suite"] for case in cases} == {*VERDICTS, "organization"}  # the organization's check: once
    for case in cases:
        server = case["suite"]
        assert case["name"].startswith(f"{server}: "), case      # Azure DevOps' Tests tab: the test name
        assert case["classname"] == f"exbe.{server}"              # reporters: classname.name
    names = [case["name"] for case in cases]
    assert len(names) == len(set(names)), "one history per server and check"


def test_names_are_the_same_on_every_run(runs: dict[str, Run]) -> None:
    first, second = (sorted(case["name"] for case in _junitparser_cases(run.junit)) for run in runs.values())
    assert first == second


def test_the_failures_are_exactly_the_failing_checks_with_no_summary_case(github: Run,
                                                                          cases: list[dict[str, Any]]) -> None:
    failing = {(server["server"], check["id"]) for server in github.record["servers"] for step in server["steps"]
               for check in step["checks"] if check["status"] == "fail"}
    assert failing == {("exch03", "backend_days_left")}
    assert {(case["suite"], _check(case)) for case in cases if case["result"] == "failure"} == failing
    assert not [case for case in cases if _check(case) == "verify"], "no 'N check(s) failed' case"


def test_every_failure_says_what_in_one_line_and_its_body_the_evidence_and_what_to_do(
        github: Run, cases: list[dict[str, Any]]) -> None:
    failures = [case for case in cases if case["result"] in ("failure", "error")]
    assert len(failures) == 3
    for case in failures:
        assert case["message"] and "\n" not in case["message"]
        assert case["body"].startswith(case["message"]) and "\nwhat to do: " in case["body"]
    (days,) = [case for case in failures if case["result"] == "failure"]
    left = github.days_left("exch03")
    assert left < 30 and f"expires in {left} days" in days["message"]
    assert f"value: {left}" in days["body"] and "evidence: NotAfter " in days["body"]
    assert "what to do: renew with `exbe renew`" in days["body"]


def test_a_warning_passes_but_shows_and_is_counted(github: Run, cases: list[dict[str, Any]]) -> None:
    (warned,) = [case for case in cases if case["suite"] == "exch02" and _check(case) == "backend_signature"]
    assert warned["result"] == "passed"
    assert warned["systemOut"].startswith("WARNING: ") and "sha1RSA" in warned["systemOut"]
    suites = {suite.name: suite for suite in junitparser.JUnitXml.fromfile(str(github.junit))}
    properties = {name: {p.name: p.value for p in suite.properties()} for name, suite in suites.items()}
    assert properties["exch02"]["warnings"] == "1" and properties["exch02"]["verdict"] == "warnings"
    assert properties["exch01"]["warnings"] == "0"


@pytest.mark.parametrize("server, kind", [("exch04", "dropped"), ("exch05", "auth")])
def test_a_server_exbe_could_not_reach_is_an_error_with_every_check_skipped_and_why(
        cases: list[dict[str, Any]], server: str, kind: str) -> None:
    mine = [case for case in cases if case["suite"] == server]
    errors = [case for case in mine if case["result"] == "error"]
    assert [_check(case) for case in errors] == ["connect"]
    assert f"kind: {kind}" in errors[0]["body"]
    skipped = [case for case in mine if case["result"] == "skipped"]
    assert [_check(case) for case in skipped] == CHECK_IDS
    assert all(case["message"].startswith(f"not checked: {server} (") for case in skipped)
    assert not [case for case in mine if case["result"] == "failure"], "an unreachable server has no findings"


def test_every_server_carries_the_same_checks(cases: list[dict[str, Any]]) -> None:
    for server in VERDICTS:
        assert [_check(c) for c in cases if c["suite"] == server and _check(c) in CHECK_IDS] == CHECK_IDS


def test_every_case_has_a_time_and_the_root_has_the_counts_and_the_wall_time(github: Run,
                                                                             cases: list[dict[str, Any]]) -> None:
    assert all(float(case["time"]) >= 0 for case in cases)
    assert all(float(case["time"]) > 0 for case in cases if case["result"] == "passed")
    root = _xml_js(github.junit)["root"]
    results = [case["result"] for case in cases]
    assert (int(root["tests"]), int(root["failures"]), int(root["errors"]), int(root["skipped"])) == (
        len(cases), results.count("failure"), results.count("error"), results.count("skipped"))
    suites = list(junitparser.JUnitXml.fromfile(str(github.junit)))
    assert max(s.time for s in suites) <= float(root["time"]) < sum(s.time for s in suites), \
        "the servers ran side by side: the run took longer than the slowest, less than their sum"


def test_dorny_test_reporter_reads_every_case_with_its_time_result_and_the_runs_wall_time(
        github: Run, cases: list[dict[str, Any]]) -> None:
    read = _dorny(github.junit)
    dorny = [case for suite in read["suites"] for case in suite["cases"]]
    assert [(case["name"], case["group"]) for case in dorny] == [(case["name"], case["classname"]) for case in cases]
    assert all(case["group"].startswith("exbe.") for case in dorny), "grouped by server, never under the suite"
    assert all(case["timeMs"] is not None and case["timeMs"] >= 0 for case in dorny), "a missing time reads as NaN"
    expected = {"failure": "failed", "error": "failed", "skipped": "skipped", "passed": "success"}
    assert [case["result"] for case in dorny] == [expected[case["result"]] for case in cases]
    for mine, theirs in zip(cases, dorny, strict=True):
        if theirs["result"] == "failed":
            assert (theirs["message"], theirs["details"].strip()) == (mine["message"], mine["body"].strip())
    suites = [suite["timeMs"] for suite in read["suites"]]
    assert max(suites) <= read["timeMs"] < sum(suites), "the run's time is its wall time, not the servers' sum"


def test_the_junit_is_junit_xmls_and_no_other_module_writes_junit(github: Run) -> None:
    """junit-xml (named in exbe's design, a dependency) writes it: its marks are there -- ``disabled`` counts and a
    ``type`` on every skipped -- and no module of exbe but report.py builds a testcase or testsuite element."""
    import tomllib

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert [d for d in dependencies if re.match(r"junit-xml\b", d)]
    text = github.junit.read_text(encoding="utf-8")
    assert re.search(r"<testsuites disabled=\"0\"", text) and '<skipped type="skipped"' in text
    writers = [path.relative_to(ROOT).as_posix() for path in (ROOT / "exbe").rglob("*.py")
               if re.search(r"[\"'](testcase|testsuites?)[\"']", path.read_text(encoding="utf-8"))]
    assert writers == ["exbe/report.py"]
    report = (ROOT / "exbe" / "report.py").read_text(encoding="utf-8")
    assert "junit_xml.TestSuite(" in report and "junit_xml.to_xml_report_string(" in report
    assert "ET.Element(" not in report and "ET.SubElement(" not in report


def test_a_warning_case_says_so_in_the_status_junit_xml_writes(github: Run) -> None:
    statuses = {case.get("name"): case.get("status") for case in
                __import__("xml.etree.ElementTree", fromlist=["parse"]).parse(github.junit).iter("testcase")}
    assert statuses["exch02: backend_signature"] == "warn"
    assert statuses["exch01: backend_days_left"] == "pass"
    assert statuses["exch03: backend_days_left"] is None  # a failure says so itself


def test_each_suite_says_whether_its_servers_were_simulated(github: Run) -> None:
    for suite in junitparser.JUnitXml.fromfile(str(github.junit)):
        assert {p.name: p.value for p in suite.properties()}["simulated"] == "false"  # an inventory, not --sandbox


# -- annotations -----------------------------------------------------------------------------------------------------
def test_one_annotation_per_server_that_did_not_pass_most_severe_first(github: Run) -> None:
    annotations = [line for line in github.out.splitlines() if line.startswith(("::error", "::warning"))]
    servers = [re.search(r"title=exbe (\S+)::", line).group(1) for line in annotations]  # type: ignore[union-attr]
    assert servers == ["exch04", "exch05", "exch03", "exch02"], "unreachable first: nothing about them is known"
    assert "exch03 failed backend_days_left: EXCH03 back-end certificate " in annotations[2]
    assert f"expires in {github.days_left('exch03')} days" in annotations[2]
    assert "exch05 unreachable: " in annotations[1] and "authentication failed" in annotations[1]
    assert annotations[3] == "::warning title=exbe exch02::exch02 warnings: backend_signature"
    assert not [line for line in annotations if "file=" in line], "no inventory file given: no location"


# -- step summary ----------------------------------------------------------------------------------------------------
def _rendered(markdown: str) -> str:
    import cmarkgfm
    from cmarkgfm.cmark import Options

    return str(cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE))


def test_the_github_summary_has_a_row_per_server_and_a_mermaid_chart_of_the_fleets_expiry(github: Run) -> None:
    markdown = (github.folder / "summary.md").read_text(encoding="utf-8")
    html = _rendered(markdown)
    rows = [[re.sub(r"</?code>", "", cell) for cell in re.findall(r"<td>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)[1:]]
    days = {server: str(github.days_left(server)) for server in ("exch01", "exch02", "exch03")}
    bound = {entry["server"]: entry["old_thumbprint"] or "" for entry in github.record["servers"]}
    assert all(bound[server] for server in days), "verify names the certificate it judged"
    # the organization's Auth configuration is a row of its own, judged once (the sandbox's servers are stand-alone)
    assert [row for row in rows if row[0] == "organization"] == [["organization", "passed", "", "", "", "", ""]]
    rows = [row for row in rows if row[0] != "organization"]
    assert rows == [
        ["exch04", "unreachable", "", "", "", "", rows[0][6]],
        ["exch05", "unreachable", "", "", "", "", rows[1][6]],
        ["exch03", "failed", days["exch03"], bound["exch03"], "backend_days_left", "", ""],
        ["exch02", "warnings", days["exch02"], bound["exch02"], "", "backend_signature", ""],
        ["exch01", "passed", days["exch01"], bound["exch01"], "", "", ""],
    ]
    assert "the server closed the connection" in rows[0][6] and "authentication failed" in rows[1][6]
    assert "exbe verify: 5 server(s), 1 passed, 1 with warnings, 1 failed, 2 unreachable" in html
    chart = re.search(r"```mermaid\n(.*?)```", markdown, re.S)
    assert chart is not None
    assert chart.group(1).splitlines() == ["pie showData", "    title Back-end certificates by days left",
                                           '    "1-29 days" : 1', '    "1 year or more" : 2',
                                           '    "not judged" : 2']


def test_the_azure_summary_draws_the_expiry_as_a_text_bar_chart(runs: dict[str, Run]) -> None:
    azure = runs["azure"]
    (uploaded,) = re.findall(r"##vso\[task\.uploadsummary\](.+)", azure.out)
    markdown = Path(uploaded).read_text(encoding="utf-8")
    assert "```mermaid" not in markdown
    assert f"| ` exch03 ` | ` failed ` | ` {azure.days_left('exch03')} ` |" in markdown
    assert Path(uploaded).name == "exbe verify", "Azure titles the section with the file's name"
    bars = re.search(r"```text\n(.*?)```", markdown, re.S)
    assert bars is not None
    lines = {line.split("  ")[0].strip(): line for line in bars.group(1).splitlines()}
    assert list(lines) == ["expired", "1-29 days", "30-59 days", "60-364 days", "1 year or more", "not judged"]
    assert lines["1 year or more"].count("#") == 40 and lines["1 year or more"].endswith(" 2")
    assert lines["1-29 days"].count("#") == 20 and lines["expired"].endswith(" 0")


# -- metrics ---------------------------------------------------------------------------------------------------------
def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_metrics_file_reads_with_the_prometheus_parser(github: Run) -> None:
    samples = _samples(github.metrics)
    run = (("shard", "all"), ("task", "verify"))
    expires = {dict(labels)["server"]: value for (name, labels), value in samples.items()
               if name == "exbe_backend_certificate_not_after_timestamp_seconds"}
    assert set(expires) == {"exch01", "exch02", "exch03"}, "unjudged servers have no sample"
    for server, not_after in expires.items():  # days left, computed at query time, are the check's own
        assert int((not_after - time.time()) // 86400) in (github.days_left(server), github.days_left(server) - 1)
    assert samples[("exbe_check_status", (("check", "backend_days_left"), ("exbe_check_status", "fail"),
                                          ("server", "exch03"), *run))] == 1
    assert samples[("exbe_check_status", (("check", "backend_signature"), ("exbe_check_status", "warn"),
                                          ("server", "exch02"), *run))] == 1
    verdicts = {dict(labels)["server"]: dict(labels)["exbe_server_verdict"] for (name, labels), value in
                samples.items() if name == "exbe_server_verdict" and value == 1}
    assert verdicts == VERDICTS
    assert samples[("exbe_run_success", run)] == 0
    assert samples[("exbe_run_servers", (*run, ("verdict", "unreachable")))] == 2
    assert 0 < samples[("exbe_run_duration_seconds", run)] < 60


def test_no_report_holds_the_password(runs: dict[str, Run]) -> None:
    for run in runs.values():
        for path in run.folder.rglob("*"):
            if path.is_file():
                assert PASSWORD not in path.read_text(encoding="utf-8", errors="replace"), path
        assert PASSWORD not in run.out
