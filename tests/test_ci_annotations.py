"""In a pipeline, exbe speaks the platform's language, and no text from a server can speak it for exbe.

The unescape functions below follow the consumers: GitHub's runner (ActionCommand: ``%25 %0D %0A``, and in
properties also ``%3A %2C``) and the Azure Pipelines agent (CommandStringConvertor: ``%3B %0D %0A %5D``, then
``%AZP25``; the agent finds ``##vso[`` anywhere in a line and splits lines on a bare CR as well).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exbe.ci import (
    ANNOTATIONS_PER_KIND,
    AzureReporter,
    CiReporter,
    GitHubReporter,
    azure_escape,
    detect,
    github_escape_data,
    github_escape_property,
    output_name,
)
from exbe.model import CheckResult, ServerRun, StepResult
from exbe.redaction import Redactor
from exbe.summary import HEADERS

HOSTILE = [
    "100% done",
    "%0A already escaped %25 %AZP25 %3B %5D",
    "line one\r\nline two\rthree\nfour",
    "a;b]c",
    "::error::injected",
    "x\n::add-mask::oops",
    "##vso[task.setvariable variable=EXBE_PASSWORD]pwned",
    "##[group]fake",
    "title:with,colons and, commas",
    "",
]
hostile_text = st.one_of(st.sampled_from(HOSTILE), st.text(alphabet=st.sampled_from(list("ab%;]:,#[v so\r\n")) ))


def _lines(text: str) -> list[str]:
    """Log lines as the agents split them (CR, LF or CRLF)."""
    return [line for line in re.split(r"\r\n|\r|\n", text) if line]


def github_unescape_data(text: str) -> str:
    return text.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def github_unescape_property(text: str) -> str:
    return (text.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":").replace("%2C", ",")
            .replace("%25", "%"))


def azure_unescape(text: str) -> str:
    for token, replacement in ((";", "%3B"), ("\r", "%0D"), ("\n", "%0A"), ("]", "%5D")):
        text = text.replace(replacement, token)
    return text.replace("%AZP25", "%")


def parse_github(line: str) -> tuple[str, dict[str, str], str]:
    """A workflow command as the runner reads it: ``::name k=v,k=v::data`` at the start of the line."""
    body = line.lstrip()
    assert body.startswith("::")
    end = body.index("::", 2)
    name, _, props = body[2:end].partition(" ")
    properties = dict(pair.split("=", 1) for pair in props.split(",") if pair)
    return name, {k: github_unescape_property(v) for k, v in properties.items()}, github_unescape_data(body[end + 2:])


def parse_azure(line: str) -> tuple[str, dict[str, str], str]:
    """A logging command as the agent reads it: the first ``##vso[`` anywhere, up to the first ``]``."""
    start = line.index("##vso[") + len("##vso[")
    end = line.index("]", start)
    name, _, props = line[start:end].partition(" ")
    properties = dict(pair.split("=", 1) for pair in props.split(";") if pair)
    return name, {k: azure_unescape(v) for k, v in properties.items()}, azure_unescape(line[end + 1:])


def _github(tmp_path: Path) -> tuple[GitHubReporter, io.StringIO]:
    stream = io.StringIO()
    env = {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(tmp_path / "output"),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    reporter = detect(env, stream)
    assert isinstance(reporter, GitHubReporter)
    return reporter, stream


def _azure(tmp_path: Path) -> tuple[AzureReporter, io.StringIO]:
    stream = io.StringIO()
    reporter = detect({"TF_BUILD": "True", "AGENT_TEMPDIRECTORY": str(tmp_path)}, stream)
    assert isinstance(reporter, AzureReporter)
    return reporter, stream


def failed_run(server: str, *, message: str = "EXCH back-end certificate expires in 12 days; renew with `exbe "
               "renew`", days: int = 12) -> ServerRun:
    """A server whose back-end certificate fails backend_days_left."""
    check = CheckResult("backend_days_left", "fail", message, value=days)
    return ServerRun(server, f"{server}.contoso.local", "2026-06-01T08:00:00Z",
                     steps=[StepResult(server, "verify", "failed", "1 check(s) failed", checks=[check])])


# --- detection ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("env, kind", [
    ({"TF_BUILD": "True"}, AzureReporter),
    ({"GITHUB_ACTIONS": "true"}, GitHubReporter),
    ({}, CiReporter),
    ({"TF_BUILD": "False", "GITHUB_ACTIONS": "false"}, CiReporter),
])
def test_exbe_recognises_the_pipeline_it_runs_in_from_the_environment(env: dict[str, str], kind: type) -> None:
    assert type(detect(env)) is kind


def test_outside_a_pipeline_exbe_adds_nothing_to_its_console_output(tmp_path: Path) -> None:
    stream = io.StringIO()
    reporter = detect({}, stream)
    reporter.error("exch01 bind failed", server="exch01")
    reporter.warning("exch02 expires in 20 days")
    reporter.mask("secret")
    reporter.set_output("exch01_new_thumbprint", "AB")
    reporter.summary("## exbe")
    reporter.publish([failed_run("exch01")])
    reporter.finish("warnings")
    assert stream.getvalue() == ""


# --- GitHub Actions ----------------------------------------------------------------------------------------------

@given(message=hostile_text, server=hostile_text)
def test_github_annotations_are_one_command_line_whose_text_round_trips(message: str, server: str) -> None:
    stream = io.StringIO()
    reporter = GitHubReporter({}, stream)
    reporter.error(message, server=server or None)
    reporter.warning(message)
    error, warning = _lines(stream.getvalue())
    title = " ".join(re.split(r"\r\n|\r|\n", server))  # a title is one line
    assert parse_github(error) == ("error", {"title": f"exbe {title}" if server else "exbe"}, message)
    assert parse_github(warning) == ("warning", {"title": "exbe"}, message)


def test_github_annotation_looks_as_documented() -> None:
    stream = io.StringIO()
    GitHubReporter({}, stream).error("exch01 bind: 444 has no certificate\nretry", server="exch01")
    assert stream.getvalue() == "::error title=exbe exch01::exch01 bind: 444 has no certificate%0Aretry\n"


def test_github_masks_the_password_and_each_line_of_a_multi_line_secret_when_asked_to() -> None:
    stream = io.StringIO()
    reporter = GitHubReporter({"EXBE_CI_MASK": "true"}, stream)
    reporter.mask("P@ss%w0rd;]")
    reporter.mask("line1\nline2")
    reporter.mask("")
    commands = [parse_github(line) for line in _lines(stream.getvalue())]
    assert commands == [("add-mask", {}, "P@ss%w0rd;]"), ("add-mask", {}, "line1\nline2"),
                        ("add-mask", {}, "line1"), ("add-mask", {}, "line2")]


def test_github_outputs_are_appended_to_the_github_output_file(tmp_path: Path) -> None:
    reporter, _ = _github(tmp_path)
    (tmp_path / "output").write_text("earlier=1\n", encoding="utf-8")
    reporter.set_output("exch-01_new_thumbprint", "0123ABCD")
    assert (tmp_path / "output").read_text(encoding="utf-8") == "earlier=1\nexch_01_new_thumbprint=0123ABCD\n"


@given(value=st.text(alphabet=st.sampled_from(list("ab\nEXBE_OF_<>=")), min_size=1).filter(lambda v: "\n" in v))
def test_a_multi_line_github_output_uses_a_delimiter_the_value_does_not_contain(value: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "output"
        GitHubReporter({"GITHUB_OUTPUT": str(path)}).set_output("notes", value)
        text = path.read_text(encoding="utf-8")
    header, _, rest = text.partition("\n")
    name, _, delimiter = header.partition("<<")
    assert name == "notes" and len(delimiter) >= 32
    assert delimiter not in value
    assert rest == f"{value}\n{delimiter}\n"


def test_two_multi_line_outputs_get_different_delimiters(tmp_path: Path) -> None:
    reporter, _ = _github(tmp_path)
    reporter.set_output("a", "1\n2")
    reporter.set_output("b", "1\n2")
    headers = [line for line in (tmp_path / "output").read_text(encoding="utf-8").splitlines() if "<<" in line]
    assert len({header.partition("<<")[2] for header in headers}) == 2


def test_github_summary_is_appended_to_the_step_summary(tmp_path: Path) -> None:
    reporter, stream = _github(tmp_path)
    (tmp_path / "summary.md").write_text("earlier step\n", encoding="utf-8")
    reporter.summary("## exbe renew")
    reporter.summary("## exbe verify")
    assert (tmp_path / "summary.md").read_text(encoding="utf-8") == "earlier step\n## exbe renew\n## exbe verify\n"
    assert stream.getvalue() == ""


def test_github_has_no_succeeded_with_issues_so_finish_prints_nothing(tmp_path: Path) -> None:
    reporter, stream = _github(tmp_path)
    reporter.finish("warnings")
    assert stream.getvalue() == ""


@given(text=hostile_text)
def test_a_github_log_line_made_safe_cannot_be_read_as_a_command(text: str) -> None:
    line = GitHubReporter({}).safe_line(text)
    assert len(_lines(line)) <= 1
    assert not line.lstrip().startswith("::")
    assert "##[" not in line


# --- Azure Pipelines ---------------------------------------------------------------------------------------------

@given(message=hostile_text)
def test_azure_issues_are_one_logging_command_whose_text_round_trips(message: str) -> None:
    stream = io.StringIO()
    reporter = AzureReporter({}, stream)
    reporter.error(message, server="exch01")
    reporter.warning(message)
    error, warning = _lines(stream.getvalue())
    assert parse_azure(error) == ("task.logissue", {"type": "error"}, message)
    assert parse_azure(warning) == ("task.logissue", {"type": "warning"}, message)
    assert error.count("##vso[") + warning.count("##vso[") == 2 + 2 * message.count("##vso[")


def test_azure_issue_looks_as_documented() -> None:
    stream = io.StringIO()
    AzureReporter({}, stream).warning("exch02: expires in 20%; renew]\nsoon")
    assert stream.getvalue() == "##vso[task.logissue type=warning;]exch02: expires in 20%AZP25%3B renew%5D%0Asoon\n"


def test_azure_reports_warnings_only_as_succeeded_with_issues() -> None:
    stream = io.StringIO()
    reporter = AzureReporter({}, stream)
    reporter.finish("succeeded")
    reporter.finish("failed")
    assert stream.getvalue() == ""
    reporter.finish("warnings")
    [line] = _lines(stream.getvalue())
    assert parse_azure(line)[:2] == ("task.complete", {"result": "SucceededWithIssues"})


def test_an_unknown_run_status_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="succeeded, warnings, failed"):
        AzureReporter({}).finish("partial")


@given(name=hostile_text, value=hostile_text)
def test_azure_output_variables_carry_any_value_and_a_safe_name(name: str, value: str) -> None:
    stream = io.StringIO()
    AzureReporter({}, stream).set_output(name, value)
    [line] = _lines(stream.getvalue())
    command, properties, data = parse_azure(line)
    assert command == "task.setvariable"
    assert properties == {"variable": output_name(name), "isOutput": "true"}
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", properties["variable"])
    assert data == value


def test_azure_output_variable_for_a_new_thumbprint() -> None:
    stream = io.StringIO()
    AzureReporter({}, stream).set_output("exch01_new_thumbprint", "0123ABCD")
    assert stream.getvalue() == "##vso[task.setvariable variable=exch01_new_thumbprint;isOutput=true]0123ABCD\n"


def test_azure_marks_the_password_secret_when_asked_to() -> None:
    stream = io.StringIO()
    AzureReporter({"EXBE_CI_MASK": "yes"}, stream).mask("P@ss%w0rd;]")
    [line] = _lines(stream.getvalue())
    assert parse_azure(line) == ("task.setsecret", {}, "P@ss%w0rd;]")


def test_azure_summary_is_attached_as_a_markdown_file(tmp_path: Path) -> None:
    reporter, stream = _azure(tmp_path)
    reporter.summary("## exbe verify", title="exbe verify")
    reporter.summary("## exbe renew", title="exbe renew")
    lines = _lines(stream.getvalue())
    assert len(lines) == 2
    for line, title in zip(lines, ("exbe verify", "exbe renew"), strict=True):
        command, _, path = parse_azure(line)
        assert command == "task.uploadsummary"
        # the agent names the section after the file name (Path.GetFileName, extension and all)
        assert Path(path).name == title and Path(path).parent.parent == tmp_path
        assert Path(path).read_text(encoding="utf-8") == f"## {title}"


def test_azure_without_a_temp_directory_skips_the_summary() -> None:
    stream = io.StringIO()
    AzureReporter({}, stream).summary("## exbe")
    assert stream.getvalue() == ""


@given(text=hostile_text)
def test_an_azure_log_line_made_safe_holds_no_logging_command(text: str) -> None:
    line = AzureReporter({}).safe_line(text)
    assert len(_lines(line)) <= 1
    assert "##vso[" not in line.lower() and "##[" not in line


# --- escaping primitives -----------------------------------------------------------------------------------------

@given(text=st.text())
def test_escaping_round_trips_for_any_text(text: str) -> None:
    assert azure_unescape(azure_escape(text)) == text
    assert github_unescape_data(github_escape_data(text)) == text
    assert github_unescape_property(github_escape_property(text)) == text
    assert not set("\r\n;]") & set(azure_escape(text))
    assert not set("\r\n:,") & set(github_escape_property(text))


# --- no secret on stdout (issue 13, item 8) ----------------------------------------------------------------------

@pytest.mark.parametrize("reporter_type", [GitHubReporter, AzureReporter])
@pytest.mark.parametrize("env", [{}, {"EXBE_CI_MASK": "false"}, {"EXBE_CI_MASK": ""}])
def test_the_password_is_not_printed_to_a_mask_command_unless_asked_to(reporter_type: type, env: dict) -> None:
    stream = io.StringIO()
    reporter = reporter_type(env, stream)
    reporter.mask("P@ss%w0rd;]")
    assert stream.getvalue() == "" and not reporter.masks_secrets


# --- control characters and Markdown (issue 13, item 9) ----------------------------------------------------------

CONTROLS = ("\x1b]8;;https://evil.example\x07click\x1b]8;;\x07 \x1b[2J\x1b[31mred NUL\x00 BEL\x07 DEL\x7f "
            "CSI\x9b31m NEL\x85 VT\x0b FF\x0c FS\x1c RLO\u202eevil LS\u2028next surrogate\ud800")
_RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _everything(reporter: CiReporter, text: str) -> str:
    reporter.error(text, server=text)
    reporter.warning(text, server=text)
    reporter.set_output("exch01_new_thumbprint", text)
    run = failed_run(text)
    run.error, run.error_kind = text, "unreachable"
    reporter.publish([run, failed_run("exch02", message=text)])
    return reporter.safe_line(text) + "\n" + reporter.progress_line(text, "bind", "failed", text)


@pytest.mark.parametrize("make", [_github, _azure], ids=["github", "azure"])
def test_no_control_character_from_a_server_reaches_the_log_outputs_or_the_summary_raw(
        tmp_path: Path, make) -> None:
    reporter, stream = make(tmp_path)
    lines = _everything(reporter, CONTROLS)
    files = "".join(p.read_text(encoding="utf-8", errors="surrogateescape") for p in tmp_path.rglob("*")
                    if p.is_file())
    for text in (lines, stream.getvalue(), files):
        assert _RAW.findall(text.replace("\r\n", "\n")) == []
    assert "\\x1b" in stream.getvalue() and "\\x00" in stream.getvalue()  # shown, not dropped


def _markdown_cells(text: str) -> list[str]:
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [cell for row in rows[1:] for cell in re.split(r"(?<!\\)\|", row)[1:-1]]


HOSTILE_MARKDOWN = ["[click](https://evil.example/x)", "![pixel](https://evil.example/t.png)", "https://evil.example",
                    "www.evil.example", "mail admin@evil.example", "<img src=x onerror=alert(1)>",
                    "<script>alert(1)</script>", "**bold** _em_ ~~del~~", "&lt;b&gt; &#x41;", "a | b || c",
                    "`code` ``two`` \\| \\", "# heading", "> quote", "- item", ":smile: @octocat", "***"]


def test_every_summary_cell_is_a_code_span_so_no_markdown_from_a_server_is_live(tmp_path: Path) -> None:
    reporter, _ = _github(tmp_path)
    runs = [failed_run(text) for text in HOSTILE_MARKDOWN]
    for run in runs:
        run.error, run.error_kind = run.server, "auth"
    reporter.publish(runs)
    markdown = (tmp_path / "summary.md").read_text(encoding="utf-8")
    table = markdown[:markdown.index("### ")]
    cells = _markdown_cells(table)
    assert len(cells) == len(HEADERS) * len(HOSTILE_MARKDOWN)
    for cell in cells:
        body = cell.strip()
        assert body == "" or re.fullmatch(r"(`+) .* \1", body), body


def test_the_summary_renders_as_the_text_given_with_no_link_image_or_html() -> None:
    import html as html_module

    import cmarkgfm  # GitHub's own renderer (a test dependency)
    from cmarkgfm.cmark import Options

    from exbe.markdown import markdown_table

    rendered = cmarkgfm.github_flavored_markdown_to_html(
        markdown_table(["Server", "Result"], [[text, "ok"] for text in HOSTILE_MARKDOWN]),
        options=Options.CMARK_OPT_UNSAFE)
    assert not re.search(r"<(a|img|script|b|strong|em|del|h1|blockquote|li)\b", rendered)
    cells = re.findall(r"<td>(.*?)</td>", rendered)
    shown = [html_module.unescape(re.sub(r"</?code>", "", cell)) for cell in cells[0::2]]
    assert shown == HOSTILE_MARKDOWN


# --- every channel through the choke point (issue 13, items 1 and 10) --------------------------------------------

def _redactor(password: str) -> Redactor:
    redactor = Redactor()
    redactor.add(password)
    return redactor


@pytest.mark.parametrize("platform", ["github", "azure"])
def test_the_step_summary_and_output_variables_are_redacted(tmp_path: Path, platform: str) -> None:
    secret = "Summ4ry-0utput-Pa55"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(tmp_path / "output"),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")} if platform == "github" else {
        "TF_BUILD": "True", "AGENT_TEMPDIRECTORY": str(tmp_path)}
    stream = io.StringIO()
    reporter = detect(env, stream, redact=_redactor(secret).redact)
    reporter.set_output("exch01_new_thumbprint", f"x{secret}y")
    run = failed_run(secret, message=f"said {secret}")
    run.error, run.error_kind = f"old {secret}", "auth"
    reporter.publish([run, failed_run("exch02", message=f"said {secret}")])
    reporter.error(f"said {secret}", server=secret)
    written = stream.getvalue() + "".join(p.read_text(encoding="utf-8") for p in tmp_path.rglob("*") if p.is_file())
    assert secret not in written and "x***y" in written and "| ` *** ` | ` unreachable ` |" in written


def test_publish_masks_each_value_before_composing_so_a_short_password_is_caught(tmp_path: Path) -> None:
    checks = [CheckResult("root_copy", "warn", "t"), CheckResult("w3svc_running", "fail", "t is stopped")]
    steps = [StepResult("exch01", "restart", "failed", "t"),
             StepResult("exch01", "verify", "failed", "1 failed", checks=checks)]
    run = ServerRun("exch01", "exch01.contoso.local", "2026-06-01T08:00:00Z", old_thumbprint="A" * 40,
                    new_thumbprint="B" * 40, steps=steps)
    reporter, stream = _github(tmp_path)
    reporter._redact = _redactor("t").redact
    reporter.publish([run])
    commands = [parse_github(line) for line in _lines(stream.getvalue())]
    assert [(name, data) for name, _, data in commands] == [("error", "exch01 failed restart, w3svc_running: ***")]
    assert (tmp_path / "output").read_text() == f"exch01_new_thumbprint={'B' * 40}\n"
    assert (f"| ` exch01 ` | ` failed ` |  | ` {'A' * 40} → {'B' * 40} ` | ` restart, w3svc_running ` "
            "| ` root_copy ` |  |") in (tmp_path / "summary.md").read_text()


def test_a_progress_line_masks_each_part_on_its_own() -> None:
    reporter = CiReporter({}, redact=_redactor("e").redact)
    assert reporter.progress_line("exch01", "bind", "failed", "e") == "exch01     bind      failed   ***"
    assert reporter.progress_line("exch01", "verify", "ok", "3 checks") == "exch01     verify    ok       3 checks"


# --- annotations within the platforms' limits (issue 14, item 2) -------------------------------------------------

def warned_run(server: str) -> ServerRun:
    checks = [CheckResult("backend_signature", "warn", f"{server} back-end certificate is signed with sha1RSA"),
              CheckResult("root_copy", "warn", f"{server}: not in LocalMachine\\Root")]
    return ServerRun(server, server, "2026-06-01T08:00:00Z",
                     steps=[StepResult(server, "verify", "ok", "2 checks, 2 warning(s)", checks=checks)])


def test_each_server_gets_one_annotation_naming_all_its_failing_checks_most_severe_first(tmp_path: Path) -> None:
    reporter, stream = _github(tmp_path)
    worst = failed_run("exch09", days=2)
    worst.steps[0].checks.append(CheckResult("root_copy", "fail", "exch09: not in Root and untrusted"))
    lost = ServerRun("exch07", "exch07", "2026-06-01T08:00:00Z", error="exch07 (exch07:5985): cannot connect; "
                     "check that the server is up", error_kind="unreachable")
    reporter.publish([warned_run("exch01"), failed_run("exch05", days=20), lost, worst])
    commands = [parse_github(line) for line in _lines(stream.getvalue())]
    assert [(kind, props["title"]) for kind, props, _ in commands] == [
        ("error", "exbe exch07"), ("error", "exbe exch09"), ("error", "exbe exch05"), ("warning", "exbe exch01")]
    assert commands[1][2].startswith("exch09 failed backend_days_left, root_copy: ")
    assert commands[0][2] == "exch07 unreachable: exch07 (exch07:5985): cannot connect; check that the server is up"
    assert commands[3][2] == "exch01 warnings: backend_signature, root_copy"


@pytest.mark.parametrize("make", [_github, _azure], ids=["github", "azure"])
def test_past_ten_of_a_kind_the_last_annotation_says_how_many_servers_were_left_out(tmp_path: Path, make) -> None:
    reporter, stream = make(tmp_path)
    reporter.publish([failed_run(f"exch{i:02}", days=i) for i in range(25)] + [warned_run(f"w{i}") for i in range(4)])
    lines = [line for line in _lines(stream.getvalue()) if line.startswith("::error") or "type=error;" in line]
    parse = parse_github if make is _github else parse_azure
    errors = [parse(line)[2] for line in lines]
    assert len(errors) == ANNOTATIONS_PER_KIND
    assert [message.split()[0] for message in errors[:-1]] == [f"exch{i:02}" for i in range(9)], "fewest days first"
    assert errors[-1].startswith("16 more server(s) failed or unreachable, not annotated here")
    warnings = [line for line in _lines(stream.getvalue()) if line.startswith("::warning") or "type=warning;" in line]
    assert len(warnings) == 4, "under the limit: every server, no closing line"


def unreachable_run(server: str, kind: str = "auth") -> ServerRun:
    return ServerRun(server, server, "2026-06-01T08:00:00Z", error=f"{server} ({server}:5985): authentication failed;"
                     " check EXBE_USERNAME/EXBE_PASSWORD", error_kind=kind)


def not_attempted_run(server: str, refused_by: str) -> ServerRun:
    reason = (f"not attempted: {refused_by} refused the credentials, so exbe stopped using them before the account "
              "locks out; fix EXBE_USERNAME/EXBE_PASSWORD (or pass --keep-going to try every server)")
    return ServerRun(server, server, "2026-06-01T08:00:00Z", error=reason, error_kind="not_attempted",
                     steps=[StepResult(server, "connect", "skipped", reason)])


@pytest.mark.parametrize("make", [_github, _azure], ids=["github", "azure"])
def test_the_cap_never_drops_a_run_wide_cause_or_an_unreachable_server(tmp_path: Path, make) -> None:
    """25 failing servers, 3 that refused the credentials and 12 exbe then did not try: the run-wide cause comes
    first, in one annotation for the 12, then the unreachable servers, then the failures by fewest days left."""
    reporter, stream = make(tmp_path)
    failed = [failed_run(f"exch{i:02}", days=i) for i in range(25)]
    unreachable = [unreachable_run(f"dag2-{i}") for i in range(3)]
    stopped = [not_attempted_run(f"dag3-{i:02}", "dag2-0") for i in range(12)]
    reporter.publish(failed + stopped + unreachable)
    parse = parse_github if make is _github else parse_azure
    errors = [parse(line)[2] for line in _lines(stream.getvalue())
              if line.startswith("::error") or "type=error;" in line]
    assert len(errors) == ANNOTATIONS_PER_KIND
    assert errors[0].startswith("12 server(s) not attempted (dag3-00, dag3-01, ")
    assert "dag2-0 refused the credentials" in errors[0]
    assert [error.split()[0] for error in errors[1:4]] == ["dag2-0", "dag2-1", "dag2-2"]
    assert [error.split()[0] for error in errors[4:9]] == [f"exch{i:02}" for i in range(5)]
    assert errors[9].startswith("20 more server(s) failed or unreachable, not annotated here")


def test_a_rolled_back_bind_is_never_reported_as_the_new_certificate(tmp_path: Path) -> None:
    old, created, other = "A" * 40, "B" * 40, "C" * 40
    rolled_back = ServerRun("exch01", "exch01", "2026-06-01T08:00:00Z", old_thumbprint=old, new_thumbprint=created,
                            steps=[StepResult("exch01", "renew", "changed", f"renewed {old} -> {created}"),
                                   StepResult("exch01", "bind", "failed", f"binding {created} failed, previous "
                                              "certificates restored: AddSslCertificate failed")])
    renewed = ServerRun("exch02", "exch02", "2026-06-01T08:00:00Z", old_thumbprint=old, new_thumbprint=other,
                        steps=[StepResult("exch02", "bind", "changed", f"bound {other}")])
    reporter, stream = _github(tmp_path)
    reporter.publish([rolled_back, renewed], task="renew")
    assert (tmp_path / "output").read_text() == f"exch02_new_thumbprint={other}\n"
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith(r"## exbe renew\: 2 server\(s\)")
    assert f"| ` exch02 ` | ` passed ` |  | ` {old} → {other} ` |" in summary
    assert f"| ` exch01 ` | ` failed ` |  | ` {old} kept; {created} created, not bound ` |" in summary
    from exbe.report import render_junit

    junit = render_junit([rolled_back, renewed], task="renew")
    properties = re.findall(r'<property name="new_thumbprint" value="([^"]*)"', junit)
    assert properties == ["", other]


def test_an_annotation_points_at_the_servers_inventory_entry_only_when_exbe_knows_it(tmp_path: Path) -> None:
    github, github_out = _github(tmp_path)
    github.publish([failed_run("exch01"), failed_run("exch02")], locations={"exch01": ("inventory/exbe.yaml", 12)})
    first, second = (parse_github(line) for line in _lines(github_out.getvalue()))
    assert first[1] == {"file": "inventory/exbe.yaml", "line": "12", "title": "exbe exch01"}
    assert second[1] == {"title": "exbe exch02"}
    (tmp_path / "azure").mkdir()
    azure, azure_out = _azure(tmp_path / "azure")
    azure.publish([failed_run("exch01"), failed_run("exch02")], locations={"exch01": ("inventory/exbe.yaml", 12)})
    issues = [parse_azure(line) for line in _lines(azure_out.getvalue()) if "logissue" in line]
    assert [props for _, props, _ in issues] == [
        {"type": "error", "sourcepath": "inventory/exbe.yaml", "linenumber": "12"}, {"type": "error"}]


# --- the step summary's size (issue 14, item 3) -------------------------------------------------------------------

def test_a_summary_too_big_for_the_platform_keeps_the_most_severe_rows_and_says_how_many_it_left_out() -> None:
    from exbe.summary import LIMIT_BYTES, render

    runs = [failed_run(f"exch{i:05}-" + "x" * 200, days=i % 29) for i in range(6000)] + [warned_run("exch-warn")]
    markdown = render(runs, mermaid=True, redact=str)
    assert len(markdown.encode("utf-8")) <= LIMIT_BYTES
    rows = [line for line in markdown.splitlines() if line.startswith("| `")]
    assert 1000 < len(rows) < 6001 and "exch-warn" not in markdown
    assert f"{6001 - len(rows)} more server(s) not shown" in markdown
    assert markdown.rstrip().endswith("```"), "the chart is always there"
    small = render(runs[:3], mermaid=False, redact=str, limit=1200)
    assert "more server(s) not shown" in small and len(small.encode("utf-8")) <= 1200


def test_a_run_whose_only_warning_is_a_steps_ends_the_azure_task_with_issues(start_fleet, tmp_path, capsys,
                                                                               monkeypatch) -> None:
    """The task's end state uses the same verdict as the reports: a preflight warning (the Exchange endpoint down)
    with no warning check is still "succeeded with issues", not a clean success."""
    from exbe.sandbox.faults import Faults

    from .exbe_cli import run_exbe

    fleet = start_fleet([("exch01", "healthy")], faults={"exch01": Faults(exchange_unavailable=True)})
    result = run_exbe(fleet, tmp_path, capsys, monkeypatch, "verify", "--all",
                      env={"TF_BUILD": "True", "AGENT_TEMPDIRECTORY": str(tmp_path)})
    assert result.code == 0, result.out + result.err
    ends = [parse_azure(line) for line in result.out.splitlines() if line.startswith("##vso[task.complete")]
    assert [end[:2] for end in ends] == [("task.complete", {"result": "SucceededWithIssues"})], result.out
