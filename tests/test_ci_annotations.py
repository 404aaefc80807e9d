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
    AzureReporter,
    CiReporter,
    GitHubReporter,
    azure_escape,
    detect,
    github_escape_data,
    github_escape_property,
    output_name,
)

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
    reporter.summary([["exch01", "ok", "A", "B"]])
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
    assert parse_github(error) == ("error", {"title": f"exbe {server}" if server else "exbe"}, message)
    assert parse_github(warning) == ("warning", {"title": "exbe"}, message)


def test_github_annotation_looks_as_documented() -> None:
    stream = io.StringIO()
    GitHubReporter({}, stream).error("exch01 bind: 444 has no certificate\nretry", server="exch01")
    assert stream.getvalue() == "::error title=exbe exch01::exch01 bind: 444 has no certificate%0Aretry\n"


def test_github_masks_the_password_and_each_line_of_a_multi_line_secret() -> None:
    stream = io.StringIO()
    reporter = GitHubReporter({}, stream)
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


def test_github_summary_is_a_markdown_table_appended_to_the_step_summary(tmp_path: Path) -> None:
    reporter, stream = _github(tmp_path)
    reporter.summary([["exch01", "ok", "AAAA", "BBBB"], ["ex|ch02", "failed", "<b>x</b>\nnext", ""]])
    reporter.summary([["exch03", "ok", "", ""]])
    text = (tmp_path / "summary.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert rows[0] == "| Server | Result | Old thumbprint | New thumbprint |"
    assert rows[1] == "|---|---|---|---|"
    assert rows[2] == "| exch01 | ok | AAAA | BBBB |"
    assert rows[3] == "| ex\\|ch02 | failed | &lt;b&gt;x&lt;/b&gt; next |  |"
    assert "| exch03 | ok |  |  |" in rows
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


def test_azure_marks_the_password_secret() -> None:
    stream = io.StringIO()
    AzureReporter({}, stream).mask("P@ss%w0rd;]")
    [line] = _lines(stream.getvalue())
    assert parse_azure(line) == ("task.setsecret", {}, "P@ss%w0rd;]")


def test_azure_summary_is_attached_as_a_markdown_file(tmp_path: Path) -> None:
    reporter, stream = _azure(tmp_path)
    reporter.summary([["exch01", "ok", "AAAA", "BBBB"]])
    [line] = _lines(stream.getvalue())
    command, _, path = parse_azure(line)
    assert command == "task.uploadsummary"
    text = Path(path).read_text(encoding="utf-8")
    assert "| exch01 | ok | AAAA | BBBB |" in text and Path(path).parent == tmp_path


def test_azure_without_a_temp_directory_skips_the_summary() -> None:
    stream = io.StringIO()
    AzureReporter({}, stream).summary([["exch01", "ok", "", ""]])
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
