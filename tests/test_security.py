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
import copy
import dataclasses
import datetime
import html
import io
import json
import logging
import os
import re
import shlex
import sys
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus
from xml.sax.saxutils import escape as xml_escape

import junitparser
import pytest

from exbe import quoting
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
from exbe.render import MANUAL_TASKS, TemplateDirError, check_template_dir
from exbe.report import write_json, write_junit
from exbe.sandbox.fleet import Fleet
from exbe.sandbox.state import Binding as SandboxBinding
from exbe.settings import SETTINGS
from exbe.transport import check_auth_available
from tests import pwsh

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
        for path in sorted(path for path in (folder / name).rglob("*") if path.is_file()):
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
    return re.sub(r"\S*exbe-summary-[0-9a-f]{8}/exbe(?: [a-z]+)?", "exbe-summary", text)


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

#: A value no string setting, key, variable or flag takes (issue 25: exchange_path, --run and EXBE_USERNAME took
#: 100 KB values).
OVERSIZED = ["x" * 100_000]
#: Every text no string input may hold.
BAD_TEXTS = [*CONTROLS, *OVERSIZED]


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
             for key in ("host", "exchange_host") for value in HOSTS + BAD_TEXTS]
    found += [Hostile("file", "exbe.inventory[0]: name", _load_file([{"name": value, "host": "exch01"}]))
              for value in [*BAD_TEXTS, "n" * 64]]
    found += [Hostile("file", f"{entry}: {key}", _load_file([{"name": "exch01", key: value}]))
              for key, values in (("groups", [[c] for c in BAD_TEXTS]), ("ca_file", BAD_TEXTS),
                                  ("exchange_path", PATHS + BAD_TEXTS))
              for value in values]
    found += [Hostile("file", known.key, _load_file(["exch01"], _nested(known.path, value)))
              for known in STRING_SETTINGS for value in BAD_TEXTS]
    found += [Hostile("file", "exbe.defaults.cert_validation", _load_file(["exch01"], {"cert_validation": False})),
              Hostile("file", "server 'lab01' (exbe.inventory[0]): cert_validation: false is refused with Basic",
                      _load_file([{"name": "lab01", "auth": "basic", "ssl": True, "exchange_ssl": True,
                                   "cert_validation": False}])),
              Hostile("file", "exbe.defaults.friendly_name", _load_file(["exch01"], {"friendly_name": "F" * 100_000}))]
    return found


def environment_inputs() -> list[Hostile]:
    """Hostile values in EXBE_* variables: every string setting, the fleet-wide TLS switch, the user name."""
    found = [Hostile("environment", known.env, _load_env({known.env: value}))
             for known in STRING_SETTINGS for value in BAD_TEXTS]
    found += [Hostile("environment", "EXBE_CERT_VALIDATION", _load_env({"EXBE_CERT_VALIDATION": value}))
              for value in ("false", "0", "no", "off")]
    found += [Hostile("environment", "EXBE_USERNAME",
                      lambda value=value: Credentials.from_env({"EXBE_USERNAME": value, "EXBE_PASSWORD": "Pa55-w0rd!"}))
              for value in BAD_TEXTS]
    return found


#: The task flags that take text, and a task that takes each.
TEXT_FLAGS = {"--server": "renew", "--group": "renew", "--shard": "renew", "--days": "renew", "--min-age": "renew",
              "--smtp": "renew", "--junit": "renew", "--json": "renew", "--thumbprint": "bind", "--run": "unlock"}


def flag_inputs() -> list[tuple[str, str, str]]:
    """(task, flag, value) for every text flag and every bad text."""
    return [(task, flag, value) for flag, task in TEXT_FLAGS.items() for value in BAD_TEXTS]


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
        for path in sorted(path for path in azure.rglob("*") if path.is_file()):
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


def test_the_suite_figures(written, end_to_end, flag_runs, round_two):
    """Inputs tried per channel, artifacts scanned, encodings, findings: printed (``pytest -rA`` shows it in the
    test's captured output), and written to the file that ``SECURITY_SUITE_FIGURES`` names
    (``SECURITY_SUITE_FIGURES=figures.md python -m pytest tests/test_security.py``)."""
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
    rows += [(f"{channel} (issue 25)", count, len(found)) for channel, count, found in round_two]
    second_round = sum(len(found) for _, _, found in round_two)
    findings = leaks + refusals + second_round
    lines = [
        "# Issues 13 and 25: security suite figures",
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
        f"output: {leaks}; a hostile input accepted, crashing or echoed raw: {refusals}; second round, issue 25: "
        f"{second_round}).",
        *(f"  - {finding}" for _, _, found in round_two for finding in found),
    ]
    text = "\n".join(lines) + "\n"
    print("\n" + text)  # shown by `pytest -rA` (also under xdist), and written to SECURITY_SUITE_FIGURES
    target = os.environ.get(FIGURES_VARIABLE)
    if target:
        Path(target).write_text(text, encoding="utf-8")
    assert findings == 0


# =====================================================================================================================
# Second round (issue 25): templates that read agent files, printed commands that carry server text, the lock folder,
# hostile configuration files, writes through links, credentials that cannot be sent. Each table below is one channel
# of hostile inputs; the figures test counts them (ROUND_TWO).
# =====================================================================================================================

#: The password of the second round's runs, and a file of the agent that holds it (as an environment or a key would).
AGENT_SECRET = "Agent-Secret-Value-9137"


def _render_verify(config: Path, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    return _run_cli(["exbe", "-f", str(config), "render", "verify"],
                    {"EXBE_USERNAME": USER, "EXBE_PASSWORD": AGENT_SECRET, **(environ or {})})


def _override_including(folder: Path, name: str) -> Path:
    """An override directory whose hand-run verify script includes ``name`` (NULs of an environment block made
    blanks, so the script renders), and the configuration file that names it."""
    templates = folder / "templates"
    templates.mkdir()
    shipped = (Path(__file__).parent.parent / "ps_templates" / "manual_verify.ps1.j2").read_text(encoding="utf-8")
    include = '{% set x %}{% include "' + name + '" %}{% endset %}{{ x|replace("\\x00", " ") }}'
    (templates / "manual_verify.ps1.j2").write_text(shipped.replace("# Read only:", f"# {include}"), encoding="utf-8")
    config = folder / "exbe.json"
    config.write_text(json.dumps({"exbe": {"inventory": ["exch01"], "defaults": {"template_dir": str(templates)}}}),
                      encoding="utf-8")
    return config


def _plant_link_to_environment(templates: Path, secret: Path) -> str:
    os.symlink("/proc/self/environ", templates / "_env.ps1.j2")
    return "_env.ps1.j2"


def _plant_link_to_a_file(templates: Path, secret: Path) -> str:
    os.symlink(secret, templates / "_secret.ps1.j2")
    return "_secret.ps1.j2"


def _plant_linked_folder(templates: Path, secret: Path) -> str:
    os.symlink(secret.parent, templates / "linked")
    return f"linked/{secret.name}"


def _plant_hard_link(templates: Path, secret: Path) -> str:
    os.link(secret, templates / "_hard.ps1.j2")
    return "_hard.ps1.j2"


def _plant_other_file(templates: Path, secret: Path) -> str:
    (templates / "secret.txt").write_text(secret.read_text(encoding="utf-8"), encoding="utf-8")
    return "secret.txt"


def _plant_parent_path(templates: Path, secret: Path) -> str:
    return f"../{secret.name}"


def _plant_override_is_a_link(templates: Path, secret: Path) -> str:
    (templates / "manual_verify.ps1.j2").unlink()
    os.symlink(secret, templates / "manual_verify.ps1.j2")
    return ""


#: Ways an override directory could carry a file of the agent into a script (the include each one needs).
TEMPLATE_PLANTS: dict[str, Callable[[Path, Path], str]] = {
    "a link to /proc/self/environ": _plant_link_to_environment,
    "a link to a file outside the directory": _plant_link_to_a_file,
    "a linked folder": _plant_linked_folder,
    "a hard link to a file outside": _plant_hard_link,
    "a file that is not a *.j2 template": _plant_other_file,
    "a path out of the directory (..)": _plant_parent_path,
    "the override template itself a link": _plant_override_is_a_link,
}


@pytest.mark.parametrize("plant", TEMPLATE_PLANTS)
def test_an_override_directory_carries_no_file_of_the_agent_into_a_script(tmp_path, plant):
    _check_template_plant(tmp_path, plant)


def _check_template_plant(tmp_path: Path, plant: str) -> None:
    """The finding: a link in the override directory pointing at /proc/self/environ made `exbe render` print
    EXBE_PASSWORD; step scripts use the same loader. Every way in is refused in one line, exit code 2."""
    secret = tmp_path / "agent-secret.ps1.j2"
    secret.write_text(f"EXBE_PASSWORD={AGENT_SECRET}\n", encoding="utf-8")
    config = _override_including(tmp_path, "")
    templates = tmp_path / "templates"
    name = TEMPLATE_PLANTS[plant](templates, secret)
    text = (templates / "manual_verify.ps1.j2")
    if name:
        text.write_text(text.read_text(encoding="utf-8").replace('include ""', f'include "{name}"'), encoding="utf-8")
    code, out, err = _render_verify(config)
    assert AGENT_SECRET not in out + err
    assert code == 2, out[-300:] + err
    [line] = err.splitlines()
    assert line.startswith(f"exbe: template override directory {str(templates)!r} ") and "Traceback" not in err
    with pytest.raises(TemplateDirError):  # what a run checks before contacting any server (step scripts)
        check_template_dir(templates)


#: Override templates Jinja or exbe rejects: each one line and exit code 2, not a traceback.
REJECTED_TEMPLATES = {"a syntax error": "{% if %}\n", "an undefined variable": "{{ nothing }}\n",
                      "a reach for Python": '{{ "".__class__.__mro__ }}\n', "no input document": "Write-Output 1\n"}


@pytest.mark.parametrize("template", REJECTED_TEMPLATES)
def test_a_rejected_override_template_is_one_line_and_exit_code_2(tmp_path, template):
    _check_rejected_template(tmp_path, template)


def _check_rejected_template(tmp_path: Path, template: str) -> None:
    config = _override_including(tmp_path, "")
    templates = tmp_path / "templates"
    (templates / "manual_verify.ps1.j2").write_text(REJECTED_TEMPLATES[template], encoding="utf-8")
    code, out, err = _render_verify(config)
    assert code == 2 and "Traceback" not in err, err
    [line] = err.splitlines()
    assert line.startswith(f"exbe: template override directory {str(templates)!r} holds ")
    assert visible_controls(line, keep="") == line


# -- printed commands: server text quoted for the shell the command is meant for ------------------------------------
#: Run ids a local user could write into %ProgramData%\exbe\lock.json for exbe to print in `exbe unlock --run ...`.
HOSTILE_RUN_IDS = ["x; touch pwned #", "$(touch pwned)", "`touch pwned`", "a'b\"c d", "x' --yes '", "~root/*", "$HOME",
                   "x\\", "\u2019; touch pwned"]
#: Run ids no quoting makes safe to show (control characters; a leading '-', which exbe's command line reads as an
#: option whatever the quoting): exbe prints no command for them.
UNPRINTABLE_RUN_IDS = ["x\ntouch pwned", "\x1b[31mred", "a\u202eb", "--yes", "-rf"]
#: IIS site names and binding addresses a server could report for an IP-specific 444 binding.
HOSTILE_BINDINGS = [("Evil'; Remove-Item C:\\ -Recurse; '", "10.0.0.5"),
                    ("Site $(Stop-Computer) `whoami` \"x\"", "10.0.0.6"),
                    ("Site \u2019; Stop-Computer; \u2018", "10.0.0.7"),
                    ("Exchange Back End", "10.0.0.8';Stop-Computer;'"),
                    ("Exchange Back End", "10.0.0.9$(Stop-Computer)")]


def _plant_lock(fleet: Fleet, name: str, run_id: str) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    record = {"exbe_lock": 1, "run_id": run_id, "agent": "planted", "task": "renew",
              "started_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
              "expires_at": (now + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"), "journal": []}
    fleet.host(name).state.exbe_files["lock.json"] = {"text": json.dumps(record),
                                                      "written_at": now.strftime("%Y-%m-%dT%H:%M:%SZ")}


def _printed_exbe_commands(text: str) -> list[str]:
    """The `exbe ...` commands a message tells the admin to run (between the backticks around them)."""
    found = []
    for end in re.finditer(r"` (?:removes|once|shows)", text):
        start = text.rfind("`exbe ", 0, end.start())
        if start >= 0:
            found.append(text[start + 1:end.start()])
    return found


@pytest.fixture(scope="module")
def unlock_runs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str, int, str]]:
    """`exbe unlock --server exch01` against a server whose lock file a local user planted, for each run id, then the
    printed command run as an admin would paste it: (run id, the refusal, exit code of the pasted command, the lock
    record left)."""
    folder = tmp_path_factory.mktemp("unlock")
    results = []
    with Fleet(folder / "sandbox", [("exch01", "healthy")], username=USER, password=AGENT_SECRET) as fleet:
        config = folder / "exbe.json"
        config.write_text(json.dumps({"exbe": {"inventory": fleet.inventory()}}), encoding="utf-8")
        credentials = {"EXBE_USERNAME": USER, "EXBE_PASSWORD": AGENT_SECRET}
        for run_id in HOSTILE_RUN_IDS + UNPRINTABLE_RUN_IDS:
            _plant_lock(fleet, "exch01", run_id)
            record = folder / "unlock.json"
            code, out, err = _run_cli(["exbe", "-f", str(config), "unlock", "--server", "exch01", "--json",
                                       str(record)], credentials)
            [server] = json.loads(record.read_text(encoding="utf-8"))["servers"]
            message = next(step["message"] for step in server["steps"] if step["step"] == "unlock")
            pasted = -1
            for command in _printed_exbe_commands(message):
                try:
                    argv = shlex.split(command)
                except ValueError as exc:
                    raise AssertionError(f"{command!r} does not split: {exc}; the message: {message!r}") from None
                pasted, _, _ = _run_cli([*argv[:1], "-f", str(config), *argv[1:]], credentials)
            left = fleet.host("exch01").state.exbe_files.get("lock.json", {}).get("text", "")
            results.append((run_id, message, pasted, left))
            fleet.host("exch01").state.exbe_files.clear()
    return results


def test_the_unlock_command_printed_for_a_planted_lock_removes_exactly_that_lock_when_pasted(unlock_runs):
    """The finding: a non-admin on the server plants lock.json and chooses the command exbe prints. Quoted for the
    shell, the run id stays one argument: pasted into a POSIX shell the command removes that lock and does nothing
    else."""
    for run in unlock_runs[:len(HOSTILE_RUN_IDS)]:
        _check_unlock_printed(run)


def _check_unlock_printed(run: tuple[str, str, int, str]) -> None:
    run_id, message, pasted, left = run
    if run_id in UNPRINTABLE_RUN_IDS:
        assert _printed_exbe_commands(message) == [] and "(the command is not shown: the --run value " in message, (
            run_id, message)
        assert left, "no command, so nothing pasted, nothing removed (the record keeps the run id as data)"
        return
    [command] = _printed_exbe_commands(message)
    argv = shlex.split(command)
    assert argv == ["exbe", "unlock", "--server", "exch01", "--run", run_id], (run_id, command)
    assert pasted == 0 and left == "", (run_id, command)


def test_no_command_is_printed_for_a_run_id_no_quoting_makes_safe(unlock_runs):
    for run in unlock_runs[len(HOSTILE_RUN_IDS):]:
        _check_unlock_printed(run)


def _powershell_arguments(command: str) -> list[tuple[str, str]]:
    """``(parameter, value)`` of one PowerShell command as tree-sitter-pwsh tokenizes it; each value must be one
    verbatim (single-quoted) string or a number."""
    assert pwsh.syntax_errors(command) == [], command
    [found] = [node for node in pwsh._walk(pwsh.parse(command).root_node) if node.type == "command"]
    elements = next(child for child in found.children if child.type == "command_elements")
    arguments, parameter = [], None
    for child in elements.children:
        if child.type == "command_parameter":
            parameter = pwsh._text(child)
        elif child.type != "command_argument_sep":
            literals = [n for n in pwsh._walk(child) if n.type in (
                "verbatim_string_characters", "decimal_integer_literal", "expandable_string_literal", "variable")]
            assert len(literals) == 1 and literals[0].type != "expandable_string_literal", (command,
                                                                                            pwsh._text(child))
            text = pwsh._text(literals[0])
            if literals[0].type == "verbatim_string_characters":
                assert text[0] in quoting.POWERSHELL_SINGLE_QUOTES and text[-1] in quoting.POWERSHELL_SINGLE_QUOTES
                text = re.sub(f"([{quoting.POWERSHELL_SINGLE_QUOTES}])\\1", r"\1", text[1:-1])
            arguments.append((str(parameter), text))
    return arguments


_QUOTE = f"[{quoting.POWERSHELL_SINGLE_QUOTES}]"
#: A Remove-WebBinding command as exbe prints it: parameters with a number or a single-quoted string each.
_REMOVE_BINDING = re.compile(rf"Remove-WebBinding(?: -\w+ (?:\d+|{_QUOTE}(?:[^{quoting.POWERSHELL_SINGLE_QUOTES}]"
                             rf"|{_QUOTE}{_QUOTE})*{_QUOTE}))+")


@pytest.fixture(scope="module")
def binding_runs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str, list[str]]]:
    """`exbe verify` and `exbe bind` against a server reporting each hostile IP-specific 444 binding on its back-end
    site (named by the server, and by the admin's backend_site): (site, address, the Remove-WebBinding commands in
    every message of the JSON records)."""
    folder = tmp_path_factory.mktemp("bindings")
    results = []
    with Fleet(folder / "sandbox", [("exch01", "healthy")], username=USER, password=AGENT_SECRET) as fleet:
        credentials = {"EXBE_USERNAME": USER, "EXBE_PASSWORD": AGENT_SECRET}
        state = fleet.host("exch01").state
        for site, address in HOSTILE_BINDINGS:
            config = folder / "exbe.json"
            config.write_text(json.dumps({"exbe": {"inventory": fleet.inventory(),
                                                   "defaults": {"backend_site": site}}}), encoding="utf-8")
            backend = state.sites.pop("Exchange Back End")
            state.sites[site] = dataclasses.replace(backend, name=site,
                                                    bindings=[*backend.bindings,
                                                              SandboxBinding("https", f"{address}:444:")])
            commands = []
            for task in ("verify", "bind"):
                record = folder / f"{task}.json"
                _run_cli(["exbe", "-f", str(config), task, "--all", "--json", str(record)], credentials)
                text = "\n".join(_values("json", record.read_text(encoding="utf-8")))
                commands += _REMOVE_BINDING.findall(text)
            del state.sites[site]
            state.sites["Exchange Back End"] = backend
            results.append((site, address, commands))
    return results


def test_the_remove_binding_command_keeps_each_server_value_one_powershell_argument(binding_runs):
    for run in binding_runs:
        _check_binding_printed(run)


def _check_binding_printed(run: tuple[str, str, list[str]]) -> None:
    site, address, commands = run
    assert len(commands) >= 2, (site, address, "verify's check and bind's blocker each print one")
    for command in commands:
        assert _powershell_arguments(command) == [("-Name", site), ("-IPAddress", address), ("-Port", "444"),
                                                  ("-Protocol", "https")], command


@pytest.mark.parametrize("value", [*HOSTILE_RUN_IDS, *(s for s, _ in HOSTILE_BINDINGS)])
def test_every_quoted_value_is_one_argument_to_both_shells(value):
    assert shlex.split(quoting.exbe_command("verify", ("--server", value)).strip("`")) == [
        "exbe", "verify", "--server", value]
    assert _powershell_arguments(quoting.powershell_command("Remove-WebBinding", ("Name", value))) == [
        ("-Name", value)]


@pytest.mark.parametrize("server", ["exch01", "exch 01;x", "exch$(id)"])
def test_the_unlock_commands_keep_the_server_one_argument_with_run_or_yes(server):
    for command, tail in [(quoting.unlock_command(server), []), (quoting.unlock_command(server, "r1"), ["--run", "r1"]),
                          (quoting.unlock_command(server, any_lock=True), ["--yes"])]:
        assert shlex.split(command.strip("`")) == ["exbe", "unlock", "--server", server, *tail], command


@pytest.mark.parametrize("value", UNPRINTABLE_RUN_IDS)
def test_a_value_no_quoting_makes_safe_is_never_printed(value):
    commands = [quoting.exbe_command("unlock", ("--run", value))]
    if not value.startswith("-"):  # a quoted string is never a parameter to PowerShell
        commands.append(quoting.powershell_command("Remove-WebBinding", ("Name", value)))
    for command in commands:
        assert value not in command and "(the command is not shown: " in command


#: Folder names an admin could give `exbe sandbox` (--state-dir, --inventory), in the commands it prints.
HOSTILE_PATH_PARTS = ["state $(touch pwned)", "it's `id`", "a;b&c|d"]


@pytest.mark.parametrize("part", HOSTILE_PATH_PARTS)
def test_the_commands_exbe_sandbox_prints_keep_each_path_one_word(tmp_path, capsys, part):
    _check_sandbox_printed(tmp_path, part)
    capsys.readouterr()


def _check_sandbox_printed(tmp_path: Path, part: str) -> None:
    from exbe.sandbox.cli import serve

    folder = tmp_path / part
    stop = threading.Event()
    stop.set()
    output = io.StringIO()
    with contextlib.redirect_stdout(output), _process_redactor_restored():
        serve(hosts=1, scenarios="healthy", faults="", latency_ms=0, state_dir=str(folder / "state"),
              inventory=str(folder / "inventory.yaml"), https=False, keep=False, stop=stop)
    lines = output.getvalue().splitlines()
    [credentials] = [line.split("   ")[0].removeprefix("credentials: ") for line in lines
                     if line.startswith("credentials: ")]
    assert shlex.split(credentials) == [".", str(folder / "state" / "credentials.env")], credentials
    # the hint an admin pastes into another shell: load the credentials, then verify the fleet
    [command] = [line.strip() for line in lines if " && " in line]
    assert shlex.split(command) == [".", str(folder / "state" / "credentials.env"), "&&",
                                    "exbe", "-f", str(folder / "inventory.yaml"), "verify", "--all"], command


# -- the lock folder %ProgramData%\exbe: a local user can create it first, or plant a junction ------------------------
#: A local non-admin's SID (RID 1001), the creator and so the owner of what they plant.
LOCAL_USER_SID = "S-1-5-21-3623811015-3361044348-30300820-1001"
_FORGED = json.dumps({"exbe_lock": 1, "run_id": "forged", "agent": "mallory", "task": "renew",
                      "started_at": "2026-01-01T00:00:00Z", "expires_at": "2026-01-01T00:30:00Z",
                      "journal": [{"step": "lock", "phase": "begin", "replaces": {"my": []}}],
                      "ended": {"how": "removed"}})


def _plant_folder_owner(state: Any) -> None:
    state.exbe_directory_place = {"owner": LOCAL_USER_SID}
    state.exbe_directory_acl = ["S-1-5-32-544", "S-1-5-18"]  # an ACL that looks right does not make it exbe's


def _plant_folder_junction(state: Any) -> None:
    state.exbe_directory_place = {"reparse": "C:\\Users\\mallory\\exbe"}


def _plant_lock_file_owner(state: Any) -> None:
    state.exbe_files["lock.json"] = {"text": _FORGED, "written_at": "2026-01-01T00:00:00Z", "owner": LOCAL_USER_SID}


def _plant_journal_link(state: Any) -> None:
    state.exbe_files["last-run.json"] = {"text": _FORGED, "written_at": "2026-01-01T00:00:00Z",
                                         "reparse": "C:\\Windows\\System32\\drivers\\etc\\hosts"}


#: What a local user could plant in %ProgramData%\exbe before exbe's first run, and the words of the refusal.
LOCK_PLANTS: dict[str, tuple[Callable[[Any], None], str]] = {
    "a folder a user created (owner)": (_plant_folder_owner, f"C:\\ProgramData\\exbe is owned by {LOCAL_USER_SID}"),
    "a junction in place of the folder": (_plant_folder_junction, "C:\\ProgramData\\exbe is a junction or a link"),
    "a lock file a user owns": (_plant_lock_file_owner, f"lock.json is owned by {LOCAL_USER_SID}"),
    "a journal file that is a link": (_plant_journal_link, "last-run.json is a junction or a link"),
}


@pytest.mark.parametrize("plant", LOCK_PLANTS)
def test_a_planted_lock_folder_or_file_fails_the_run_before_anything_changes(tmp_path, plant):
    _check_lock_plant(tmp_path, plant)


def _check_lock_plant(tmp_path: Path, plant: str) -> None:
    """The finding: %ProgramData%\\exbe was trusted when it existed, with only a warning; a local non-admin could
    forge the journal exbe acts on or redirect its writes. Each planted place fails the lock step with the reason,
    and the server is left as it was."""
    with Fleet(tmp_path / "sandbox", [("exch01", "backend_expiring")], username=USER,
               password=AGENT_SECRET) as fleet:
        state = fleet.host("exch01").state
        do, words = LOCK_PLANTS[plant]
        do(state)
        before = [cert.thumbprint for cert in state.my], copy.deepcopy(state.sites)
        config, record = tmp_path / "exbe.json", tmp_path / "renew.json"
        config.write_text(json.dumps({"exbe": {"inventory": fleet.inventory()}}), encoding="utf-8")
        code, out, err = _run_cli(["exbe", "-f", str(config), "renew", "--all", "--json", str(record)],
                                  {"EXBE_USERNAME": USER, "EXBE_PASSWORD": AGENT_SECRET})
        assert code == 1, out[-600:] + err
        [server] = json.loads(record.read_text(encoding="utf-8"))["servers"]
        [lock] = [step for step in server["steps"] if step["step"] == "lock"]
        assert lock["status"] == "failed" and words in lock["message"] and "nothing was changed" in lock["message"]
        assert [step["step"] for step in server["steps"]] == ["lock"]
        assert ([cert.thumbprint for cert in state.my], state.sites) == before


# -- configuration files: budgets, names exbe cannot read, keys echoed escaped ----------------------------------------
def _alias_bomb() -> str:
    """The billion laughs in YAML: nine levels of nine aliases, 9**9 values from under 500 bytes."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\nexbe: {inventory: [*i]}\n"


#: Configuration files exbe must refuse in one line and exit code 2: (file name, content; None: no file).
CONFIG_FILES: dict[str, tuple[str, str | None]] = {
    "the billion laughs (alias bomb)": ("bomb.yaml", _alias_bomb()),
    "nesting 5000 deep (YAML)": ("deep.yaml", "[" * 5000 + "]" * 5000),
    "nesting 5000 deep (JSON)": ("deep.json", "[" * 5000 + "]" * 5000),
    "a 5 MB file": ("big.yaml", "exbe: {inventory: [exch01]}\n" + "#" * 5_000_000 + "\n"),
    "a name that is not YAML or JSON": ("exbe.txt", "exbe: {inventory: [exch01]}\n"),
    "a name without a suffix": ("exbe", "exbe: {inventory: [exch01]}\n"),
    "a name over 255 characters": ("x" * 300 + ".yaml", None),
    "a folder": ("folder.yaml", None),
    "a raw control character": ("control.yaml", "exbe: {inventory: [exch01]}\n# \x1b[2J\x07\n"),
    "an unknown key under exbe, with ESC": ("key1.yaml", "exbe: {inventory: [exch01], \"x\\e[2Jy\": 1}\n"),
    "an unknown setting, with ESC": ("key2.yaml", "exbe: {inventory: [exch01], defaults: {\"x\\e[2Jy\": 1}}\n"),
    "an unknown sandbox setting, with a bidi control": (
        "key3.yaml", "exbe: {inventory: [exch01], defaults: {sandbox: {\"x\\u202ey\": 1}}}\n"),
    "an unknown inventory key, with BEL": ("key4.yaml", "exbe: {inventory: [{name: exch01, \"x\\ay\": 1}]}\n"),
    "a 100 KB exchange_path": ("long.yaml", json.dumps({"exbe": {"inventory": [
        {"name": "exch01", "exchange_path": "p" * 100_000}]}})),
}


def _one_line_usage_error(code: int, out: str, err: str) -> str | None:
    """None when a run ended as a bad input must: exit code 2, one printable line on stderr, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    if code != 2:
        return f"exit code {code}: {err[-300:]!r}"
    if len(lines) != 1 or "Traceback" in out + err:
        return f"said {err[-300:]!r}"
    if visible_controls(out + err, keep="\n") != out + err:
        return f"raw control characters in {err!r}"
    return None


@pytest.fixture(scope="module")
def config_file_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str]]:
    """`exbe -f FILE verify --all` for each of CONFIG_FILES (each refused before any server is contacted), and the
    alias bomb as ~/.exbe.yaml."""
    folder = tmp_path_factory.mktemp("config-files")
    runs = {}
    for label, (name, content) in CONFIG_FILES.items():
        path = folder / name
        if name == "folder.yaml":
            path.mkdir()
        elif content is not None:
            path.write_text(content, encoding="utf-8")
        try:
            runs[label] = _run_cli(["exbe", "-f", str(path), "verify", "--all"], {})
        except Exception as exc:  # noqa: BLE001 - a crash is the finding (exbe's entry point would print a traceback)
            runs[label] = (1, "", f"Traceback: {type(exc).__name__}: {exc}")
    home = folder / "home"
    home.mkdir()
    (home / ".exbe.yaml").write_text(_alias_bomb(), encoding="utf-8")
    runs["the alias bomb as ~/.exbe.yaml"] = _run_cli(["exbe", "verify", "--all"], {"HOME": str(home)})
    return runs


@pytest.mark.parametrize("label", [*CONFIG_FILES, "the alias bomb as ~/.exbe.yaml"])
def test_a_configuration_file_exbe_cannot_take_is_one_line_and_exit_code_2(config_file_runs, label):
    """The findings: a 488-byte alias bomb cost 52 s and 1 GB, then a traceback; -f with a non-YAML name and paths
    over 255 characters ended in tracebacks; unknown keys reached stderr with raw control characters."""
    _check_config_file(label, config_file_runs[label])


def _check_config_file(label: str, run: tuple[int, str, str]) -> None:
    assert _one_line_usage_error(*run) is None, (label, run[2][-300:])
    if "bomb" in label:
        assert "once its aliases are expanded" in run[2]


#: EXBE_* variables exbe does not read, whose names a pipeline could fill with control characters.
HOSTILE_VARIABLE_NAMES = ["EXBE_FOO\x1b[31m", "EXBE_\u202eSSAP", "EXBE_X\x07\x9b2J"]


@pytest.mark.parametrize("name", HOSTILE_VARIABLE_NAMES)
def test_an_unknown_variable_name_is_echoed_with_its_control_characters_escaped(name):
    _check_variable_name(name)


def _check_variable_name(name: str) -> None:
    code, out, err = _run_cli(["exbe", "render", "verify"], {name: "1"})
    assert code == 0 and "is not a variable exbe reads" in err
    assert visible_controls(err, keep="\n") == err


def test_a_former_variable_name_with_control_characters_is_refused_escaped():
    _check_former_variable_name()


def _check_former_variable_name() -> None:
    code, out, err = _run_cli(["exbe", "render", "verify"], {"EXBE_EXBE_DEFAULTS_\x1b[2JDAYS": "1"})
    assert _one_line_usage_error(code, out, err) is None


# -- writes through links: reports and `render --output` ---------------------------------------------------------------
#: The flags that name a file exbe writes, and the task that takes each.
WRITE_FLAGS = {"--junit": ["verify", "--all"], "--json": ["verify", "--all"], "--metrics": ["verify", "--all"],
               "--output": ["render", "verify"]}


def _plant_link_to_victim(folder: Path, name: str) -> tuple[Path, Path]:
    victim = folder / "victim" / "authorized_keys"
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_text("ssh-ed25519 AAAA the agent's own key\n", encoding="utf-8")
    link = folder / name
    os.symlink(victim, link)
    return link, victim


def _plant_dangling_link(folder: Path, name: str) -> tuple[Path, Path]:
    target = folder / "elsewhere" / "cron.d-exbe"
    target.parent.mkdir(parents=True, exist_ok=True)
    link = folder / name
    os.symlink(target, link)
    return link, target


LINK_PLANTS: dict[str, Callable[[Path, str], tuple[Path, Path]]] = {
    "a link to an existing file": _plant_link_to_victim, "a link to a file not there yet": _plant_dangling_link}


@pytest.mark.parametrize("plant", LINK_PLANTS)
@pytest.mark.parametrize("flag", WRITE_FLAGS)
def test_no_report_or_script_is_written_through_a_link(tmp_path, flag, plant):
    _check_write_link(tmp_path, flag, plant)


def _check_write_link(tmp_path: Path, flag: str, plant: str) -> None:
    """The finding: `render --output` and the report paths wrote through symbolic links. A link is refused in one
    line before anything runs, and what it points at stays as it was."""
    config = tmp_path / "exbe.json"
    config.write_text(json.dumps({"exbe": {"inventory": [{"name": "exch01", "host": "exch01.contoso.invalid"}]}}),
                      encoding="utf-8")
    link, target = LINK_PLANTS[plant](tmp_path, "report.out")
    before = target.read_bytes() if target.exists() else None
    task, *rest = WRITE_FLAGS[flag]
    code, out, err = _run_cli(["exbe", "-f", str(config), task, *rest, flag, str(link)], {})
    assert _one_line_usage_error(code, out, err) is None
    assert "is a symbolic link" in err and "exbe does not write through links" in err
    assert (target.read_bytes() if target.exists() else None) == before
    assert os.path.islink(link)


def test_a_report_whose_path_becomes_a_link_during_the_run_is_not_written_through_it(tmp_path):
    """The check before the run is not the only one: the writers refuse a link too (a report written after a run
    whose path was swapped meanwhile)."""
    _check_writer_link(tmp_path)


def _check_writer_link(tmp_path: Path) -> None:
    link, victim = _plant_link_to_victim(tmp_path, "run.xml")
    with pytest.raises(OSError, match="is a symbolic link"):
        write_junit(fleet("Correct-Horse-Battery-Staple-42"), link, redact=Redactor().redact)
    with pytest.raises(OSError, match="is a symbolic link"):
        write_json(fleet("Correct-Horse-Battery-Staple-42"), link, redact=Redactor().redact)
    assert victim.read_text(encoding="utf-8") == "ssh-ed25519 AAAA the agent's own key\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.xml", "victim"], "no temporary file left"


def test_the_links_target_is_written_when_the_admin_names_it(tmp_path):
    link, victim = _plant_link_to_victim(tmp_path, "verify.ps1")
    code, out, err = _run_cli(["exbe", "render", "verify", "--output", str(victim)], {})
    assert code == 0, err
    assert victim.read_bytes().startswith(b"\xef\xbb\xbf# exbe-step: manual_verify")
    assert os.path.islink(link) and link.read_bytes() == victim.read_bytes()


# -- `--sandbox` leaves nothing behind ---------------------------------------------------------------------------------
SANDBOX_OUTCOMES = ["a run that passes", "a run stopped by a bad --server"]


@pytest.mark.parametrize("outcome", SANDBOX_OUTCOMES)
def test_the_sandbox_removes_its_temporary_folder_whatever_the_outcome(tmp_path, outcome):
    _check_sandbox_folder(tmp_path, outcome)


def _check_sandbox_folder(tmp_path: Path, outcome: str) -> None:
    """The finding: `--sandbox` left its password and keys in a temporary folder after each run."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    selection = ["--all"] if outcome == "a run that passes" else ["--server", "no-such-server"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(temporary))
        patch.chdir(tmp_path)
        code, out, err = _run_cli(["exbe", "verify", "--sandbox", *selection],
                                  {"EXBE_SANDBOX_HOSTS": "1", "EXBE_SANDBOX_SCENARIOS": "healthy"})
    assert code == (0 if outcome == "a run that passes" else 2), out[-500:] + err
    assert list(temporary.iterdir()) == []


# -- Basic authentication with a password it cannot send -----------------------------------------------------------
#: Passwords with a character outside Latin-1, where it sits first, inside and last.
NON_LATIN1_PASSWORDS = ["\u20acuro-Secret-2026", "Pass\u2013word-Secret", "Secret-Password-\U0001f511"]


@pytest.mark.parametrize("password", NON_LATIN1_PASSWORDS)
def test_basic_with_a_password_it_cannot_send_is_refused_before_sending_naming_no_character(tmp_path, password):
    _check_basic_password(tmp_path, password)


def _check_basic_password(tmp_path: Path, password: str) -> None:
    """The finding: a Basic password with a non-Latin-1 character was revealed by position in the error."""
    config = tmp_path / "exbe.json"
    config.write_text(json.dumps({"exbe": {"inventory": [{"name": "lab01", "host": "127.0.0.1", "port": 9,
                                                          "auth": "basic", "ssl": True, "exchange_ssl": True}]}}),
                      encoding="utf-8")
    code, out, err = _run_cli(["exbe", "-f", str(config), "verify", "--all"],
                              {"EXBE_USERNAME": "admin", "EXBE_PASSWORD": password})
    assert _one_line_usage_error(code, out, err) is None
    assert err == ("exbe: EXBE_PASSWORD holds a character that HTTP Basic authentication cannot send (it carries "
                   "Latin-1 only), and server 'lab01' uses auth: basic; use negotiate, ntlm or kerberos for it, or an "
                   "account whose name and password are Latin-1\n"), "no character, no position"


# -- masking leaves exbe's own words alone -----------------------------------------------------------------------------
#: Passwords that are exbe's text for a typed value: (password, the value, its text in a report).
TYPED_VALUES = [("true", True, "true"), ("false", False, "false"), ("60", 60, "60"),
                ("null", ["a", None], '["a", null]')]


@pytest.mark.parametrize(("password", "value", "text"), TYPED_VALUES)
def test_masking_never_replaces_the_text_exbe_writes_for_a_typed_value(tmp_path, password, value, text):
    _check_typed_value(tmp_path, password, value, text)


def _check_typed_value(tmp_path: Path, password: str, value: object, text: str) -> None:
    """The finding: with EXBE_PASSWORD=true, JUnit's evidence `value: true` became `value: ***`. A boolean, a number
    or null is exbe's own text, never the password; the same word as a string from a server is masked."""
    redactor = Redactor()
    redactor.add(password, username=USER)
    run = ServerRun(server="exch01", host="exch01", started_at="2026-06-01T08:00:00Z", steps=[
        StepResult("exch01", "verify", "failed", "1 check(s) failed", checks=[
            CheckResult("w3svc_running", "fail", "W3SVC is stopped", value=value),
            CheckResult("root_copy", "fail", "said by the server", value=password)])])
    write_junit([run], tmp_path / "run.xml", redact=redactor.redact)
    junit = (tmp_path / "run.xml").read_text(encoding="utf-8")
    assert f"value: {xml_escape(text)}" in junit
    assert f"value: {xml_escape(json.dumps(MASK))}" in junit, "the password as a string is masked"


# -- the second round's figures ---------------------------------------------------------------------------------------
def _findings(cases: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> list[str]:
    """The cases whose check fails: each one a finding (exbe took the hostile input wrong)."""
    found = []
    for check, args in cases:
        try:
            check(*args)
        except AssertionError as exc:
            found.append(f"{check.__name__}{args!r}: {exc}"[:300])
    return found


@pytest.fixture(scope="module")
def round_two(tmp_path_factory: pytest.TempPathFactory, unlock_runs, binding_runs,
              config_file_runs) -> list[tuple[str, int, list[str]]]:
    """Per channel of the second round (issue 25): (channel, inputs tried, findings), every check run again."""
    folder = tmp_path_factory.mktemp("round-two")

    def fresh() -> Path:
        return Path(tempfile.mkdtemp(dir=folder))

    channels: dict[str, list[tuple[Callable[..., None], tuple[Any, ...]]]] = {
        "template override directory (links, hard links, other files, rejected templates)": [
            *((_check_template_plant, (fresh(), plant)) for plant in TEMPLATE_PLANTS),
            *((_check_rejected_template, (fresh(), template)) for template in REJECTED_TEMPLATES)],
        "lock-file text in printed `exbe unlock` commands (sandbox, pasted into the CLI)": [
            (_check_unlock_printed, (run,)) for run in unlock_runs],
        "IIS binding text in printed Remove-WebBinding commands (sandbox, tree-sitter-pwsh)": [
            (_check_binding_printed, (run,)) for run in binding_runs],
        "admin paths in the commands `exbe sandbox` prints (shlex)": [
            (_check_sandbox_printed, (fresh(), part)) for part in HOSTILE_PATH_PARTS],
        "lock folder %ProgramData%\\exbe and its files (sandbox: owner, junction, link)": [
            (_check_lock_plant, (fresh(), plant)) for plant in LOCK_PLANTS],
        "configuration files (-f, ~/.exbe.yaml: alias bomb, size, nesting, names, keys)": [
            (_check_config_file, (label, run)) for label, run in config_file_runs.items()],
        "EXBE_* variable names with control characters": [
            *((_check_variable_name, (name,)) for name in HOSTILE_VARIABLE_NAMES), (_check_former_variable_name, ())],
        "report and script paths (links: --junit, --json, --metrics, --output, writers)": [
            *((_check_write_link, (fresh(), flag, plant)) for flag in WRITE_FLAGS for plant in LINK_PLANTS),
            (_check_writer_link, (fresh(),))],
        "credentials (Basic with non-Latin-1 passwords)": [
            (_check_basic_password, (fresh(), password)) for password in NON_LATIN1_PASSWORDS],
        "masking (passwords that are exbe's text for a typed value)": [
            (_check_typed_value, (fresh(), *case)) for case in TYPED_VALUES],
        "--sandbox temporary folder (a run that passes, one that stops)": [
            (_check_sandbox_folder, (fresh(), outcome)) for outcome in SANDBOX_OUTCOMES],
    }
    return [(channel, len(cases), _findings(cases)) for channel, cases in channels.items()]
