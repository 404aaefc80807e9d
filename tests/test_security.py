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
import contextlib
import dataclasses
import html
import io
import json
import logging
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
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
)
from exbe.config import Credentials, load
from exbe.console import summary_table
from exbe.errors import ConfigError
from exbe.inventory import load_inventory, servers
from exbe.main import ExbeProgram
from exbe.markdown import markdown_code, markdown_text
from exbe.model import CheckResult, ServerRun, StepResult
from exbe.redaction import (
    MASK,
    MIN_SUBSTRING_LENGTH,
    REDACTOR,
    VOCABULARY,
    RedactingFilter,
    Redactor,
    secret_forms,
    visible_controls,
)
from exbe.render import MANUAL_TASKS
from exbe.report import write_json, write_junit
from exbe.sandbox.fleet import Fleet
from exbe.settings import SETTINGS
from exbe.transport import check_auth_available

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
    "utf-16-le bytes": lambda p: p.encode("utf-16-le"),
    "base64 of utf-16-le (PowerShell -EncodedCommand)": lambda p: base64.b64encode(p.encode("utf-16-le")).decode(),
    "hex": lambda p: p.encode().hex(),
    "HEX": lambda p: p.encode().hex().upper(),
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
                      old_thumbprint=OLD, new_thumbprint=NEW, warnings=[secret, HOSTILE[0]], steps=[
                          StepResult("exch01", "preflight", "ok", HOSTILE[4], data={"hostile": HOSTILE}),
                          StepResult("exch01", "renew", "changed", f"renewed {OLD} -> {NEW}", changed=True,
                                     before={"thumbprint": OLD, "said": secret}, after={"thumbprint": NEW},
                                     duration_s=1.5, warnings=[*texts, *HOSTILE]),
                          StepResult("exch01", "verify", "failed", "1 check(s) failed", checks=checks)])
    second = ServerRun(server="exch-02", host="exch02.contoso.local", started_at="2026-06-01T08:00:01Z",
                       duration_s=2.0, old_thumbprint=OLD, new_thumbprint=secret, steps=[
                           StepResult("exch-02", "bind", "failed", secret, data=data, warnings=list(inside)),
                           StepResult("exch-02", "cleanup", "skipped", inside[-1] if inside else HOSTILE[2])])
    third = ServerRun(server="exch03", host=secret, started_at="2026-06-01T08:00:02Z", error=secret,
                      error_kind="unreachable")
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
    if channel.endswith("json"):
        return json.loads(text)
    if channel.endswith("junit"):
        return _tree(ET.fromstring(text.encode("utf-8")))
    text = re.sub(r"EXBE_EOF_[0-9a-f]{32}", "EXBE_EOF", text)
    return re.sub(r"\S*exbe-summary-[0-9a-f]{8}\.md", "exbe-summary.md", text)


def _tree(element: ET.Element) -> tuple[Any, ...]:
    return (element.tag, sorted(element.attrib.items()), (element.text or "").strip(),
            [_tree(child) for child in element])


#: JUnit attributes that hold exbe's counts and times, numbers rather than text values.
_NUMERIC_ATTRIBUTES = {"tests", "failures", "errors", "skipped", "disabled", "time"}
#: JUnit properties whose value is one of exbe's counts.
_NUMERIC_PROPERTIES = {"warnings"}


def _values(channel: str, text: str) -> set[str]:
    """The whole values an artifact holds: JSON strings (keys are structure), XML attributes and texts (and their
    lines), and for text channels each line and its fields (table columns, cells, command data, ``name=value``)."""
    if channel.endswith("json"):
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
    if channel.endswith("junit"):
        root = ET.fromstring(text.encode("utf-8"))
        attributes = {v for e in root.iter() for k, v in e.attrib.items() if k not in _NUMERIC_ATTRIBUTES
                      and not (e.tag == "property" and k == "value" and e.get("name") in _NUMERIC_PROPERTIES)}
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
    assert [(s.name, s.failures + s.errors > 0) for s in suites] == [("exch01", True), ("exch-02", True),
                                                                     ("exch03", True)]


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

#: The synthetic channels a terminal or a CI viewer shows: no raw control character may reach them.
RAW_FREE_CHANNELS = ["console table", "github log", "github step summary", "azure log", "azure step summary",
                     "github output variables"]


def _raw(artifacts: dict[str, str], names: list[str]) -> list[str]:
    """The outputs among ``names`` that hold a raw control character."""
    return [f"{name}: raw control characters" for name in names if _RAW_CONTROL.search(artifacts[name])]
_LIVE_MARKDOWN = re.compile(r"(?<![`\\])(\[[^\]`]*\]\(|<img|<script|https?://)")


@pytest.mark.parametrize("password", PASSWORDS)
def test_ci_logs_and_summaries_hold_no_raw_control_character_no_command_and_no_live_markdown(written, password):
    masked, _ = written[password]
    assert _raw(masked, RAW_FREE_CHANNELS) == []
    for channel in ["github log", "azure log"]:
        lines = masked[channel].splitlines()
        assert not any(line.startswith(("::add-mask::", "##vso[task.setsecret]")) for line in lines)
        assert not any("EXBE_PASSWORD]pwned" in line and "##vso[task.setvariable" in line for line in lines)
        assert "\r" not in masked[channel]
        # one error annotation per failed server, whatever the password and the servers' strings
        assert sum(line.lstrip().startswith("::error") for line in lines) == (3 if channel == "github log" else 0)
        assert sum(line.startswith("##vso[task.logissue") for line in lines) == (3 if channel == "azure log" else 0)
    for channel in ["github step summary", "azure step summary"]:
        for line in masked[channel].splitlines()[4:]:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            assert all(c == "" or re.fullmatch(r"(`+) .* \1", c) for c in cells), line


def test_plain_reporter_adds_nothing_even_for_a_hostile_run(tmp_path):
    stream = io.StringIO()
    reporter = CiReporter({}, stream, Redactor().redact)
    reporter.publish(fleet("Correct-Horse-Battery-Staple-42"))
    reporter.mask("Correct-Horse-Battery-Staple-42")
    assert stream.getvalue() == ""


# =====================================================================================================================
# Inputs: hostile values through every channel (issue 13, items 2, 4 and 10). Each is refused when the configuration
# loads, before any server is contacted: exit code 2 and one printable line that names where the value came from.
# =====================================================================================================================

#: Control characters and invisible formatting no setting may hold: NUL, BEL, ESC with a CSI sequence, DEL, the C1
#: CSI, CR LF with a workflow command, the Unicode line separator, a bidi override.
CONTROLS = ["exch\x0001", "exch\x0701", "exch\x1b[31m01", "exch\x7f01", "exch\x9b31m01", "exch01\r\n::error::x",
            "exch\u202801", "exch\u202e10"]

#: What a `host` or `exchange_host` may not be: URL parts, user info, a port, bare or zoned IPv6, names resolvers read
#: as addresses, spaces, escapes, non-ASCII, an over-long label.
HOSTS = ["127.0.0.1:5985/wsman?", "evil@127.0.0.1", "user:pw@exch01", "http://exch01", "exch01/wsman", "exch01?x=1",
         "exch01#x", "fd00::5", "[fd00::5]:5985", "[fe80::1%eth0]", "127.1", "2130706433", "exch 01", "exch%4101",
         "exch\u00e901", "a" * 64]

#: What an endpoint path may not be.
PATHS = ["PowerShell?x=1", "PowerShell#x", "../wsman", "Power%53hell", "Power Shell"]

STRING_SETTINGS = [known for known in SETTINGS if known.field.kind is str]


@dataclasses.dataclass(frozen=True)
class Hostile:
    """One hostile input: its channel, the label the refusal must start with, and how to give it to exbe."""

    channel: str
    label: str
    give: Callable[[], object]


def _nested(path: str, value: object) -> dict[str, object]:
    head, _, rest = path.partition(".")
    return {head: _nested(rest, value) if rest else value}


def _load_file(entries: list[object], defaults: dict[str, object] | None = None) -> Callable[[], object]:
    def give() -> object:
        loaded = load({"exbe": {"inventory": entries, "defaults": defaults or {}}}, {})
        return servers(loaded.inventory, loaded.defaults)
    return give


def _load_env(environ: dict[str, str]) -> Callable[[], object]:
    return lambda: load({"exbe": {"inventory": ["exch01"]}}, environ)


def file_inputs() -> list[Hostile]:
    """Hostile values in exbe.yaml: inventory keys and every string setting under exbe.defaults."""
    entry = "server 'exch01' (exbe.inventory[0])"
    found = [Hostile("file", f"{entry}: {key}", _load_file([{"name": "exch01", key: value}]))
             for key in ("host", "exchange_host") for value in HOSTS + CONTROLS]
    found += [Hostile("file", "exbe.inventory[0]: name", _load_file([{"name": value, "host": "exch01"}]))
              for value in [*CONTROLS, "n" * 64]]
    found += [Hostile("file", f"{entry}: {key}", _load_file([{"name": "exch01", key: value}]))
              for key, values in (("groups", [[c] for c in CONTROLS]), ("ca_file", CONTROLS),
                                  ("exchange_path", PATHS + CONTROLS))
              for value in values]
    found += [Hostile("file", known.key, _load_file(["exch01"], _nested(known.path, value)))
              for known in STRING_SETTINGS for value in CONTROLS]
    found += [Hostile("file", "exbe.defaults.cert_validation", _load_file(["exch01"], {"cert_validation": False})),
              Hostile("file", "server 'lab01' (exbe.inventory[0]): cert_validation: false is refused with Basic",
                      _load_file([{"name": "lab01", "auth": "basic", "ssl": True, "exchange_ssl": True,
                                   "cert_validation": False}])),
              Hostile("file", "exbe.defaults.friendly_name", _load_file(["exch01"], {"friendly_name": "F" * 100_000}))]
    return found


def environment_inputs() -> list[Hostile]:
    """Hostile values in EXBE_* variables: every string setting, the fleet-wide TLS switch, the user name."""
    found = [Hostile("environment", known.env, _load_env({known.env: value}))
             for known in STRING_SETTINGS for value in CONTROLS]
    found += [Hostile("environment", "EXBE_CERT_VALIDATION", _load_env({"EXBE_CERT_VALIDATION": value}))
              for value in ("false", "0", "no", "off")]
    found += [Hostile("environment", "EXBE_USERNAME",
                      lambda value=value: Credentials.from_env({"EXBE_USERNAME": value, "EXBE_PASSWORD": "Pa55-w0rd!"}))
              for value in CONTROLS]
    return found


#: The task flags that take text, and a task that takes each.
TEXT_FLAGS = {"--server": "renew", "--group": "renew", "--shard": "renew", "--days": "renew", "--min-age": "renew",
              "--smtp": "renew", "--junit": "renew", "--json": "renew", "--thumbprint": "bind"}


def flag_inputs() -> list[tuple[str, str, str]]:
    """(task, flag, value) for every text flag and every control text."""
    return [(task, flag, value) for flag, task in TEXT_FLAGS.items() for value in CONTROLS]


def _refusal(hostile: Hostile) -> str | None:
    """None when ``hostile`` was refused as it must be, else what went wrong."""
    try:
        hostile.give()
    except ConfigError as exc:
        message = str(exc)
        if exc.exit_code != 2:
            return f"exit code {exc.exit_code}"
        if not message.startswith(hostile.label):
            return f"does not start with {hostile.label!r}: {message!r}"
        if visible_controls(message, keep="") != message:
            return f"raw control characters in {message!r}"
        return None
    except Exception as exc:  # noqa: BLE001 - a crash is the finding
        return f"crashed: {type(exc).__name__}: {exc}"
    return "accepted"


@pytest.fixture(scope="module")
def flag_runs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str, str, int, str, str]]:
    """The real `exbe` command line with each hostile flag: (task, flag, value, exit code, stdout, stderr)."""
    folder = tmp_path_factory.mktemp("flags")
    config = folder / "exbe.json"
    config.write_text(json.dumps({"exbe": {"inventory": [{"name": "exch01", "host": "exch01.contoso.invalid"}]}}),
                      encoding="utf-8")
    results = []
    for task, flag, value in flag_inputs():
        argv = ["exbe", "-f", str(config), task, f"{flag}={value}"] + ([] if flag == "--server" else ["--all"])
        code, out, err = _run_cli(argv, {})
        results.append((task, flag, value, code, out, err))
    return results


def _run_cli(argv: list[str], environ: dict[str, str]) -> tuple[int, str, str]:
    """``argv`` through the real command line in this process, with ``environ`` added: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for name in ("TF_BUILD", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "EXBE_USERNAME",
                     "EXBE_PASSWORD"):
            patch.delenv(name, raising=False)
        for name, value in environ.items():
            patch.setenv(name, value)
        try:
            ExbeProgram().run(argv)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("channel", ["file", "environment"])
def test_every_hostile_value_in_a_file_or_a_variable_is_refused_in_one_printable_line_naming_it(channel):
    inputs = file_inputs() if channel == "file" else environment_inputs()
    findings = [f"{hostile.label}: {problem}" for hostile in inputs if (problem := _refusal(hostile)) is not None]
    assert findings == []


def _flag_problem(flag: str, code: int, out: str, err: str) -> str | None:
    """None when a hostile ``flag`` ended as it must (exit code 2, one printable line naming the flag), else what."""
    lines = [line for line in err.splitlines() if line.strip()]
    if code != 2:
        return f"exit code {code}"
    if len(lines) != 1 or not lines[0].startswith(f"exbe: {flag} must") or "Traceback" in out + err:
        return f"said {err!r}"
    if visible_controls(out + err, keep="\n") != out + err:
        return "raw control characters in the output"
    return None


def test_every_hostile_flag_is_a_usage_error_in_one_printable_line_naming_the_flag(flag_runs):
    problems = [(task, flag, value, problem) for task, flag, value, code, out, err in flag_runs
                if (problem := _flag_problem(flag, code, out, err)) is not None]
    assert problems == []


def test_credssp_without_its_package_is_a_usage_error_before_any_server_is_contacted(monkeypatch):
    monkeypatch.setitem(sys.modules, "requests_credssp", None)  # what `import requests_credssp` sees when missing
    [server] = load_inventory({"inventory": [{"name": "exch01", "auth": "credssp"}]})
    with pytest.raises(ConfigError) as caught:
        check_auth_available([server])
    assert str(caught.value) == ("server 'exch01' uses auth: credssp, which needs the requests-credssp package, and it "
                                 "is not installed: `pip install 'pypsrp[credssp]'` on this agent, or choose another "
                                 "auth (negotiate)")
    assert caught.value.exit_code == 2
    check_auth_available(load_inventory({"inventory": ["exch01"]}))  # nobody asked for CredSSP: nothing to check


# =====================================================================================================================
# End to end: the real command line against sandbox servers, with each password and hostile strings coming back from
# the servers in their facts; every output and artifact scanned for the password in every encoding.
# =====================================================================================================================

#: The passwords of the end-to-end runs: one character, one full of quotes, `$()` and backticks, a long one.
E2E_PASSWORDS = ["a", "'\"`$(whoami)`\"'$(rm -rf ~)`id`;\"'&<>|", "Correct-Horse-Battery-Staple-42"]

#: The sandbox servers: one per scenario; the last one on HTTPS with TLS validation switched off in its entry.
E2E_HOSTS = [("exch01", "healthy"), ("exch02", "backend_expiring"), ("exch03", "healthy")]
NO_VALIDATION = "exch03"


def _server_strings(password: str) -> list[str]:
    """What the servers send back in their facts (friendly names of certificates in LocalMachine\\My): the hostile
    strings, and the password itself as a whole value."""
    return [*HOSTILE, password]


def _plant(fleet: Fleet, strings: list[str]) -> int:
    """Put ``strings`` into the friendly names of the certificates exbe does not manage (neither the back end's nor
    the Auth certificate's names matter to exbe's decisions); how many were planted."""
    slots = [cert for name, _ in E2E_HOSTS for cert in fleet.host(name).state.my
             if cert.friendly_name != "Microsoft Exchange"]
    for cert, text in zip(slots, strings, strict=False):
        cert.friendly_name = text
    return min(len(slots), len(strings))


@contextlib.contextmanager
def _process_redactor_restored() -> Iterator[None]:
    """The process-wide redactor as it was, afterwards: the runs register their passwords with it (as exbe does),
    and a one-character one must not mask ``a`` in later tests of this process."""
    saved = (set(REDACTOR._forms), REDACTOR._state)
    try:
        yield
    finally:
        with REDACTOR._lock:
            REDACTOR._forms, REDACTOR._state = saved


@contextlib.contextmanager
def _captured_logs() -> Iterator[io.StringIO]:
    """Every log record of the process at DEBUG, as a file handler would write it; the sandbox's server-side PSRP
    library (not part of a production install) stays at WARNING: it logs every message the servers send."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root, server_side = logging.getLogger(), logging.getLogger("psrpcore")
    levels = root.level, server_side.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    server_side.setLevel(logging.WARNING)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        server_side.setLevel(levels[1])


@dataclasses.dataclass
class EndToEnd:
    """One password's runs: every output by name, the servers' planted strings, the exit codes."""

    artifacts: dict[str, str]
    planted: int
    codes: dict[str, int]


def _end_to_end(password: str, folder: Path) -> EndToEnd:
    fleet = Fleet(folder / "sandbox", E2E_HOSTS, username=USER, password=password).start()
    try:
        planted = _plant(fleet, _server_strings(password))
        inventory = fleet.inventory()
        https = fleet.ports(NO_VALIDATION)["https"]
        lab = next(entry for entry in inventory if entry["name"] == NO_VALIDATION)
        lab.update(port=https, exchange_port=https, ssl=True, exchange_ssl=True, cert_validation=False)
        del lab["ca_file"]
        config = folder / "exbe.json"
        config.write_text(json.dumps({"exbe": {"inventory": inventory}}), encoding="utf-8")
        credentials = {"EXBE_USERNAME": USER, "EXBE_PASSWORD": password}
        artifacts: dict[str, str] = {}
        codes: dict[str, int] = {}
        github, azure = folder / "github", folder / "azure"
        github.mkdir()
        azure.mkdir()
        for name, task, environ in [
                ("github renew", "renew", {**credentials, **_github_env(github)}),
                ("azure verify", "verify", {**credentials, "TF_BUILD": "True", "AGENT_TEMPDIRECTORY": str(azure)})]:
            junit, record = folder / f"{task}.xml", folder / f"{task}.json"
            with _captured_logs() as logs:
                code, out, err = _run_cli(["exbe", "-f", str(config), task, "--all", "--junit", str(junit),
                                           "--json", str(record)], environ)
            codes[name] = code
            artifacts.update({f"{name} stdout": out, f"{name} stderr": err, f"{name} log": logs.getvalue(),
                              f"{name} junit": junit.read_text(encoding="utf-8"),
                              f"{name} json": record.read_text(encoding="utf-8")})
        artifacts["github step summary"] = (github / "summary.md").read_text(encoding="utf-8")
        artifacts["github output variables"] = (github / "output").read_text(encoding="utf-8")
        for path in sorted(azure.iterdir()):
            artifacts[f"azure {path.name}"] = path.read_text(encoding="utf-8")
        for task in MANUAL_TASKS:
            script = folder / f"{task}.ps1"
            codes[f"render {task}"], _, _ = _run_cli(["exbe", "render", task, "--output", str(script)], credentials)
            artifacts[f"rendered {task} script"] = script.read_bytes().decode("utf-8-sig")
        return EndToEnd(artifacts, planted, codes)
    finally:
        fleet.stop()


@pytest.fixture(scope="module")
def end_to_end(tmp_path_factory: pytest.TempPathFactory) -> dict[str, EndToEnd]:
    with _process_redactor_restored():
        return {password: _end_to_end(password, tmp_path_factory.mktemp(f"e2e{index}"))
                for index, password in enumerate(E2E_PASSWORDS)}


@pytest.mark.parametrize("password", E2E_PASSWORDS)
def test_a_real_run_writes_the_password_nowhere_in_any_encoding(end_to_end, password):
    run = end_to_end[password]
    # renew brings the expiring server back; verify then passes everywhere; each script renders
    assert run.codes == {"github renew": 0, "azure verify": 0, **{f"render {task}": 0 for task in MANUAL_TASKS}}, (
        {name: text[-1500:] for name, text in run.artifacts.items() if name.endswith(("stdout", "stderr"))})
    assert run.planted == len(_server_strings(password))
    assert _scan(password, run.artifacts) == []
    for name, text in run.artifacts.items():
        assert "Traceback" not in text, name
        if name.endswith(" json"):
            json.loads(text)
        elif name.endswith(" junit"):
            junitparser.JUnitXml.fromstring(text)


@pytest.mark.parametrize("password", E2E_PASSWORDS)
def test_hostile_strings_from_the_servers_reach_no_ci_log_or_summary_raw(end_to_end, password):
    artifacts = end_to_end[password].artifacts
    assert set(HOSTILE) <= _values("json", artifacts["github renew json"]), "they come back in the facts, as data"
    assert _raw(artifacts, _ci_outputs(artifacts)) == []
    for name in _ci_outputs(artifacts):
        assert not any(line.startswith(("::add-mask::", "##vso[task.setsecret]", "##vso[task.setvariable "
                                        "variable=EXBE_PASSWORD")) for line in artifacts[name].splitlines()), name


def _ci_outputs(artifacts: dict[str, str]) -> list[str]:
    """The end-to-end outputs a terminal or a CI viewer shows: stdout, stderr, step summaries, output variables."""
    return [name for name in artifacts if name.endswith((" stdout", " stderr")) or "summary" in name
            or "output variables" in name]


def test_tls_validation_off_is_said_for_that_server_in_console_junit_and_json_on_every_run(end_to_end):
    """Validation switched off for one server (its entry only) is a warning of that server's run in every report,
    whatever the task; the other servers carry none."""
    for run in end_to_end.values():
        for task in ("github renew", "azure verify"):
            record = json.loads(run.artifacts[f"{task} json"])
            warned = {server["server"]: [w for w in server["warnings"] if w.startswith("TLS certificate validation")]
                      for server in record["servers"]}
            assert {name: len(found) for name, found in warned.items()} == {"exch01": 0, "exch02": 0, "exch03": 1}
            [warning] = warned[NO_VALIDATION]
            assert warning in run.artifacts[f"{task} stdout"] + run.artifacts[f"{task} stderr"]
            assert xml_escape(warning) in run.artifacts[f"{task} junit"]


# =====================================================================================================================
# The figures of the closing note, from the tables and runs above
# =====================================================================================================================

#: A Markdown file the figures test writes its table to, when this variable names one.
FIGURES_VARIABLE = "SECURITY_SUITE_FIGURES"


def test_the_suite_figures(written, end_to_end, flag_runs, capsys):
    """Inputs tried per channel, artifacts scanned, encodings, findings: printed, and written to the file that
    ``SECURITY_SUITE_FIGURES`` names (``SECURITY_SUITE_FIGURES=figures.md python -m pytest tests/test_security.py``)."""
    file_findings = [h.label for h in file_inputs() if _refusal(h) is not None]
    env_findings = [h.label for h in environment_inputs() if _refusal(h) is not None]
    flag_findings = [flag for _, flag, _, code, out, err in flag_runs if _flag_problem(flag, code, out, err)]
    synthetic = {p: _scan(p, written[p][0]) + _raw(written[p][0], RAW_FREE_CHANNELS) for p in PASSWORDS}
    e2e = {p: _scan(p, run.artifacts) + _raw(run.artifacts, _ci_outputs(run.artifacts)) for p, run in
           end_to_end.items()}
    leaks = sum(map(len, synthetic.values())) + sum(map(len, e2e.values()))
    refusals = len(file_findings) + len(env_findings) + len(flag_findings)
    planted = sum(len([*_plants(p, False)[0], *_plants(p, False)[1]]) for p in PASSWORDS)
    outputs = sorted({re.sub(r"exbe-summary-[0-9a-f]+\.md", "exbe-summary-*.md", name)
                      for run in end_to_end.values() for name in run.artifacts})
    rows = [
        ("configuration file (inventory keys, exbe.defaults)", len(file_inputs()), len(file_findings)),
        ("environment (EXBE_* variables, EXBE_USERNAME)", len(environment_inputs()), len(env_findings)),
        ("task flags (the real command line)", len(flag_runs), len(flag_findings)),
        (f"server-side strings in sandbox facts (end to end, {len(E2E_PASSWORDS)} passwords)",
         sum(run.planted for run in end_to_end.values()), sum(map(len, e2e.values()))),
        (f"server-side strings in every report field (synthetic runs, {len(PASSWORDS)} passwords): hostile strings "
         "+ planted secret values", len(HOSTILE) * len(PASSWORDS) + planted, sum(map(len, synthetic.values()))),
    ]
    findings = leaks + refusals
    lines = [
        "# Issue 13: security suite figures",
        "",
        "Generated by `SECURITY_SUITE_FIGURES=<this file> .venv/bin/python -m pytest tests/test_security.py` "
        "(test_the_suite_figures, from the suite's own tables and runs).",
        "",
        "| input channel | inputs tried | findings |",
        "|---|---|---|",
        *(f"| {name} | {count} | {found} |" for name, count, found in rows),
        "",
        f"- Passwords: {len(PASSWORDS)} in the synthetic runs ({', '.join(repr(p) for p in PASSWORDS)}); "
        f"{len(E2E_PASSWORDS)} end to end ({', '.join(repr(p) for p in E2E_PASSWORDS)}).",
        f"- Artifacts scanned: {sum(len(m) for m, _ in written.values())} synthetic ({len(CHANNELS)} channels x "
        f"{len(PASSWORDS)} passwords) + {sum(len(run.artifacts) for run in end_to_end.values())} end to end "
        f"({len(outputs)} outputs x {len(E2E_PASSWORDS)} passwords: {', '.join(outputs)}).",
        f"- Encodings searched in each artifact: {len(ENCODINGS)} ({', '.join(ENCODINGS)}).",
        f"- Findings: {findings} (the password in an artifact, or a raw control character in a console or CI "
        f"output: {leaks}; a hostile input accepted, crashing or echoed raw: {refusals}).",
    ]
    text = "\n".join(lines) + "\n"
    with capsys.disabled():
        print("\n" + text)
    target = os.environ.get(FIGURES_VARIABLE)
    if target:
        Path(target).write_text(text, encoding="utf-8")
    assert findings == 0
