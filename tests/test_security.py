"""Security suite for exbe's outputs (issue 13, items 1, 8, 9 and 10): hostile passwords and hostile server strings
through every output channel, and a scan of every artifact for the password in each encoding.

For each password in :data:`PASSWORDS` the same fleet run is written twice:

* *masked*: the password planted in server-side strings (as whole values everywhere, in each of the forms the
  redactor knows, and inside longer text wherever the form is long enough to be masked there), through a
  :class:`~exbe.redaction.Redactor` that knows it;
* *expected*: ``***`` planted in the same places, through a redactor that knows nothing.

Every channel must give the same result both ways -- same structure, same non-secret values -- which is what "the
redactor works on values, never on keys or names" means: JSON and JUnit are parsed, text channels compared whole.
Then every artifact is scanned for the password in each of :data:`ENCODINGS`: a form of 8 characters or more must
not occur anywhere; a shorter form must not be a whole value (a JSON string, an XML attribute or text, a line).
Hostile server strings (terminal escapes, workflow and logging commands, Markdown and HTML) ride along in both runs,
and the CI artifacts are checked for raw control characters and live Markdown.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus
from xml.sax.saxutils import escape as xml_escape

import junitparser
import pytest

from exbe.ci import (
    AzureReporter,
    CiReporter,
    GitHubReporter,
    azure_escape,
    github_escape_data,
    github_escape_property,
    markdown_code,
    markdown_text,
)
from exbe.model import CheckResult, ServerRun, StepResult
from exbe.redaction import (
    MASK,
    MIN_SUBSTRING_LENGTH,
    VOCABULARY,
    RedactingFilter,
    Redactor,
    secret_forms,
    visible_controls,
)
from exbe.report import summary_table, write_json, write_junit

USER = "CONTOSO\\svc-exbe"
OLD, NEW = "BFDC0014BC99FCAD6B3F728F6C46BEE7B762FB39", "3E587C8F4A02A8361B6D705E38C453660118D23E"

#: The passwords tried: one character each, JSON/XML/Markdown punctuation, a JSON literal, exbe's own status word,
#: one full of quotes, ``$()`` and backticks, and a long ordinary one.
PASSWORDS = ["a", "e", "1", "t", '"', "<", "&", "true", "failed",
             "'\"`$(whoami)`\"'$(rm -rf ~)`id`;\"'&<>|",
             "Correct-Horse-Battery-Staple-42"]

#: Strings a server might send back, in both runs: they must come out harmless and unchanged in meaning.
HOSTILE = ["\x1b]8;;https://evil.example\x07click\x1b]8;;\x07 \x1b[2J\x1b[31mred\x1b[0m",
           "NUL\x00BEL\x07DEL\x7fCSI\x9b31m RLO\u202eLS\u2028end",
           "line one\r\n::error::injected\n##vso[task.setvariable variable=EXBE_PASSWORD]pwned",
           "[click](https://evil.example) ![x](https://evil.example/t.png) <img src=x onerror=alert(1)> "
           "admin@evil.example www.evil.example",
           "a < b & \"c\" 'd' is true; 1 check(s) failed; e t"]

#: How a password may appear in an artifact; every artifact is scanned for each.
ENCODINGS: dict[str, Callable[[str], str | bytes]] = {
    "raw": lambda p: p,
    "utf-8 bytes": lambda p: p.encode("utf-8"),
    "utf-16-le bytes (PowerShell -EncodedCommand)": lambda p: p.encode("utf-16-le"),
    "url": lambda p: quote(p, safe=""),
    "url-plus": quote_plus,
    "json": lambda p: json.dumps(p)[1:-1],
    "json-unicode": lambda p: json.dumps(p, ensure_ascii=False)[1:-1],
    "html": lambda p: html.escape(p, quote=True),
    "xml-text": xml_escape,
    "xml-attribute": lambda p: xml_escape(p, {'"': "&quot;", "\n": "&#10;"}),
    "base64": lambda p: base64.b64encode(p.encode()).decode(),
    "basic-header": lambda p: base64.b64encode(f"{USER}:{p}".encode()).decode(),
    "azure-command": azure_escape,
    "github-command-data": github_escape_data,
    "github-command-property": github_escape_property,
    "markdown-escaped": markdown_text,
    "markdown-code": lambda p: markdown_code(p).strip("` "),
    "controls-shown": visible_controls,
}


# -- the run, with a secret or the mask planted -----------------------------------------------------------------------
def _forms(password: str) -> list[str]:
    return sorted(secret_forms(password, USER))


def _shown(form: str) -> str:
    """What the redactor must leave of ``form``: ``***``, or the form itself when it is one of exbe's own words."""
    return form if form in VOCABULARY else MASK


def _plants(password: str, expected: bool) -> tuple[list[str], list[str]]:
    """(whole values, values with the secret inside): the secret's forms, or with ``expected`` what must be left of
    them (:func:`_shown`).

    A form goes inside longer text only when it has :data:`MIN_SUBSTRING_LENGTH` characters or more: shorter ones
    are, by design, masked only as whole values or whole lines (exbe.redaction)."""
    whole = [_shown(form) if expected else form for form in _forms(password)]
    inside = []
    for form, template, times in [
            (password, "auth failed for admin:{} at exch01", 1),
            (quote(password, safe=""), "GET https://exch01/wsman?p={}&x=1", 1),
            (base64.b64encode(f"{USER}:{password}".encode()).decode(), "Authorization: Basic {}", 1),
            (json.dumps(password)[1:-1], 'body {{"p": "{}"}}', 1),
            (password, "twice {} in a row", 2)]:
        if len(form) >= MIN_SUBSTRING_LENGTH:
            inside.append(template.format((_shown(form) if expected else form) * times))
    return whole, inside


def fleet(password: str, expected: bool = False) -> list[ServerRun]:
    """Three servers' runs with the password in every server-side string field (with ``expected``: what must be left
    of it there)."""
    whole, inside = _plants(password, expected)
    secret = _shown(password) if expected else password
    texts = [*whole, *inside]
    data = {"note": secret, "forms": list(whole), "inside": list(inside), "nested": {"deep": [secret, HOSTILE[4]]},
            "count": 3, "flag": True, "none": None}
    checks = [CheckResult("backend_days_left", "fail", secret, details="\n".join(texts)),
              CheckResult("root_copy", "warn", inside[0] if inside else secret, details=HOSTILE[0]),
              CheckResult("tls_444_serves_bound", "skip", HOSTILE[1], value=secret),
              CheckResult("w3svc_running", "pass", HOSTILE[4], details=HOSTILE[3])]
    first = ServerRun(server="exch01", host="exch01.contoso.local", started_at="2026-06-01T08:00:00Z", duration_s=4.25,
                      old_thumbprint=OLD, new_thumbprint=NEW, steps=[
                          StepResult("exch01", "preflight", "ok", HOSTILE[4], data={"hostile": HOSTILE}),
                          StepResult("exch01", "renew", "changed", f"renewed {OLD} -> {NEW}", changed=True,
                                     before={"thumbprint": OLD, "said": secret}, after={"thumbprint": NEW},
                                     duration_s=1.5, warnings=[*texts, *HOSTILE]),
                          StepResult("exch01", "verify", "failed", "1 check(s) failed", checks=checks)])
    second = ServerRun(server="exch-02", host="exch02.contoso.local", started_at="2026-06-01T08:00:01Z",
                       duration_s=2.0, old_thumbprint=OLD, new_thumbprint=secret, steps=[
                           StepResult("exch-02", "bind", "failed", secret, data=data, warnings=list(inside)),
                           StepResult("exch-02", "cleanup", "skipped", inside[-1] if inside else HOSTILE[2])])
    third = ServerRun(server="exch03", host=secret, started_at="2026-06-01T08:00:02Z", error=secret)
    return [first, second, third]


# -- the channels ------------------------------------------------------------------------------------------------------
def _github_env(folder: Path) -> dict[str, str]:
    return {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(folder / "output"),
            "GITHUB_STEP_SUMMARY": str(folder / "summary.md")}


def artifacts(runs: list[ServerRun], redactor: Redactor, folder: Path, password: str) -> dict[str, str]:
    """Every output exbe makes from ``runs``, by channel, as text."""
    folder.mkdir(parents=True)
    redact = redactor.redact
    out: dict[str, str] = {}
    write_json(runs, folder / "run.json", redact=redact)
    write_junit(runs, folder / "run.xml", redact=redact)
    out["json"] = (folder / "run.json").read_text(encoding="utf-8")
    out["junit"] = (folder / "run.xml").read_text(encoding="utf-8")
    out["console table"] = summary_table(runs, redact=redact)
    for name, reporter_type, env in [("github", GitHubReporter, _github_env(folder / "github")),
                                     ("azure", AzureReporter, {"TF_BUILD": "True",
                                                               "AGENT_TEMPDIRECTORY": str(folder / "azure")})]:
        (folder / name).mkdir()
        stream = io.StringIO()
        reporter = reporter_type(env, stream, redact)
        reporter.mask(password)  # no EXBE_CI_MASK opt-in: must print nothing
        reporter.publish(runs)
        lines = [reporter.safe_line(line) for line in out["console table"].splitlines()]
        lines += [reporter.progress_line(run.server, step.step, step.status, step.message)
                  for run in runs for step in run.steps]
        out[f"{name} log"] = stream.getvalue() + "\n".join(lines)
        for path in sorted((folder / name).iterdir()):
            key = {"output": "github output variables", "summary.md": "github step summary"}.get(
                path.name, "azure step summary")
            out[key] = path.read_text(encoding="utf-8")
    out["log records"] = _log_records(runs, redactor)
    return out


def _log_records(runs: list[ServerRun], redactor: Redactor) -> str:
    filt = RedactingFilter(redactor)
    lines = []
    for run in runs:
        for step in run.steps:
            record = logging.LogRecord("exbe.flow", logging.INFO, __file__, 1, "%s %s: %s", (run.server, step.step,
                                                                                               step.message), None)
            filt.filter(record)
            lines.append(record.getMessage())
    return "\n".join(lines)


def _normalised(channel: str, text: str) -> Any:
    """What a channel means, for comparing two runs: parsed documents, random names taken out."""
    if channel == "json":
        return json.loads(text)
    if channel == "junit":
        return _tree(ET.fromstring(text.encode("utf-8")))
    text = re.sub(r"EXBE_EOF_[0-9a-f]{32}", "EXBE_EOF", text)
    return re.sub(r"\S*exbe-summary-[0-9a-f]{8}\.md", "exbe-summary.md", text)


def _tree(element: ET.Element) -> tuple[Any, ...]:
    return (element.tag, sorted(element.attrib.items()), (element.text or "").strip(),
            [_tree(child) for child in element])


#: JUnit attributes that hold exbe's counts and times, numbers rather than text values.
_NUMERIC_ATTRIBUTES = {"tests", "failures", "errors", "skipped", "disabled", "time"}


def _values(channel: str, text: str) -> set[str]:
    """The whole values an artifact holds: JSON strings (keys are structure), XML attributes and texts (and their
    lines), and for text channels each line and its fields (table columns, cells, command data, ``name=value``)."""
    if channel == "json":
        found: set[str] = set()

        def walk(value: Any) -> None:
            if isinstance(value, str):
                found.add(value)
            elif isinstance(value, dict):
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        walk(json.loads(text))
        return found
    if channel == "junit":
        root = ET.fromstring(text.encode("utf-8"))
        attributes = {v for e in root.iter() for k, v in e.attrib.items() if k not in _NUMERIC_ATTRIBUTES}
        texts = {e.text.strip() for e in root.iter() if e.text and e.text.strip()}
        lines = {part.strip() for t in texts for line in t.splitlines() for part in (line, line.partition(": ")[2])}
        return attributes | texts | lines
    fields: set[str] = set()
    for line in text.splitlines():
        fields.update([line, line.rpartition("::")[2], line.rpartition("]")[2], line.rpartition(": ")[2],
                       line.partition("=")[2], *re.split(r"\s{2,}", line),
                       *(cell.strip().strip("`") for cell in re.split(r"(?<!\\)\|", line))])
    return {field.strip() for field in fields}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """Per password: (masked artifacts, expected artifacts)."""
    result = {}
    for index, password in enumerate(PASSWORDS):
        folder = tmp_path_factory.mktemp(f"password{index}")
        redactor = Redactor()
        redactor.add(password, username=USER)
        masked = artifacts(fleet(password), redactor, folder / "masked", password)
        expected = artifacts(fleet(password, expected=True), Redactor(), folder / "expected", password)
        result[password] = (masked, expected)
    return result


CHANNELS = ["json", "junit", "console table", "github log", "github output variables", "github step summary",
            "azure log", "azure step summary", "log records"]


@pytest.mark.parametrize("password", PASSWORDS)
def test_every_channel_means_the_same_with_the_password_masked_as_with_the_mask_planted(written, password):
    masked, expected = written[password]
    assert sorted(masked) == sorted(expected) == sorted(CHANNELS)
    for channel in CHANNELS:
        assert _normalised(channel, masked[channel]) == _normalised(channel, expected[channel]), channel
    document = json.loads(masked["json"])
    assert document["failed"] is True and [s["failed"] for s in document["servers"]] == [True, True, True]
    assert [step["status"] for step in document["servers"][0]["steps"]] == ["ok", "changed", "failed"]
    suites = list(junitparser.JUnitXml.fromstring(masked["junit"]))
    assert [(s.name, s.tests, s.failures, s.skipped) for s in suites] == [
        ("exch01", 7, 2, 1), ("exch-02", 2, 1, 1), ("exch03", 1, 1, 0)]


def _scan(password: str, artifacts_by_channel: dict[str, str]) -> list[str]:
    """Where the password shows, in any of :data:`ENCODINGS`: a long form anywhere in the text or its UTF-8 bytes, a
    short one as a whole value. A form that is one of exbe's own words (``failed``) is exbe's, not the password."""
    findings = []
    for channel, text in artifacts_by_channel.items():
        data = text.encode("utf-8")
        values = _values(channel, text)
        for encoding, encode in ENCODINGS.items():
            form = encode(password)
            if isinstance(form, bytes):
                if len(form) >= MIN_SUBSTRING_LENGTH and form in data:
                    findings.append(f"{channel}: {encoding}")
            elif len(form) >= MIN_SUBSTRING_LENGTH:
                if form in text:
                    findings.append(f"{channel}: {encoding}")
            elif form in values and form not in VOCABULARY:
                findings.append(f"{channel}: {encoding} as a whole value")
    return findings


@pytest.mark.parametrize("password", PASSWORDS)
def test_no_artifact_holds_the_password_in_any_encoding(written, password):
    masked, _ = written[password]
    assert _scan(password, masked) == []
    unmasked = {"json": json.dumps([dataclasses.asdict(run) for run in fleet(password)], ensure_ascii=False)}
    if password not in VOCABULARY:
        assert _scan(password, unmasked), "the scan finds the password planted in the unmasked run"


_RAW_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_LIVE_MARKDOWN = re.compile(r"(?<![`\\])(\[[^\]`]*\]\(|<img|<script|https?://)")


@pytest.mark.parametrize("password", PASSWORDS)
def test_ci_logs_and_summaries_hold_no_raw_control_character_no_command_and_no_live_markdown(written, password):
    masked, _ = written[password]
    for channel in ["console table", "github log", "github step summary", "azure log", "azure step summary",
                    "github output variables"]:
        assert _RAW_CONTROL.findall(masked[channel]) == [], channel
    for channel in ["github log", "azure log"]:
        lines = masked[channel].splitlines()
        assert not any(line.startswith(("::add-mask::", "##vso[task.setsecret]")) for line in lines)
        assert not any("EXBE_PASSWORD]pwned" in line and "##vso[task.setvariable" in line for line in lines)
        assert "\r" not in masked[channel]
        assert sum(line.lstrip().startswith("::error") for line in lines) == (3 if channel == "github log" else 0)
        assert sum(line.startswith("##vso[task.logissue") for line in lines) == (4 if channel == "azure log" else 0)
    for channel in ["github step summary", "azure step summary"]:
        for line in masked[channel].splitlines()[4:]:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            assert all(c == "" or re.fullmatch(r"(`+) .* \1", c) for c in cells), line


def test_the_suite_figures(written, capsys):
    """Inputs tried per channel, artifacts scanned, encodings, findings (the issue's closing note)."""
    planted = {p: len([*_plants(p, False)[0], *_plants(p, False)[1]]) for p in PASSWORDS}
    masked_per_channel = {channel: sum(written[p][1][channel].count(MASK) for p in PASSWORDS) for channel in CHANNELS}
    artifacts_scanned = sum(len(masked) for masked, _ in written.values())
    findings = sum(len(_scan(p, written[p][0])) for p in PASSWORDS)
    with capsys.disabled():
        print(f"\nsecurity suite: {len(PASSWORDS)} passwords, {sum(planted.values())} planted secret values "
              f"({min(planted.values())}-{max(planted.values())} per password) and {len(HOSTILE)} hostile server "
              f"strings in {len(CHANNELS)} channels; masked places per channel (all passwords): "
              + ", ".join(f"{channel} {n}" for channel, n in masked_per_channel.items())
              + f"; {artifacts_scanned} artifacts scanned for {len(ENCODINGS)} encodings each; {findings} findings")
    assert findings == 0 and all(masked_per_channel.values())


def test_plain_reporter_adds_nothing_even_for_a_hostile_run(tmp_path):
    stream = io.StringIO()
    reporter = CiReporter({}, stream, Redactor().redact)
    reporter.publish(fleet("Correct-Horse-Battery-Staple-42"))
    reporter.mask("Correct-Horse-Battery-Staple-42")
    assert stream.getvalue() == ""
