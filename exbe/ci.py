"""Speak the pipeline's own language: annotations, masks, output variables and a summary table.

:func:`detect` picks the reporter from an environment mapping (passed in, so it is testable): Azure Pipelines sets
``TF_BUILD=True``, GitHub Actions sets ``GITHUB_ACTIONS=true``; anywhere else the plain reporter adds nothing to
exbe's own console output.

Everything a reporter prints is escaped by the platform's rules, because the text comes from servers and
certificates (subjects, error messages) and must not be able to issue commands of its own:

* GitHub's runner reads a workflow command only at the start of a line (after whitespace) and unescapes
  ``%25 %0D %0A`` in the data, plus ``%3A %2C`` in property values.
* The Azure Pipelines agent finds ``##vso[`` *anywhere* in a line (and splits lines on a bare CR), takes the first
  ``]`` after it as the end of the properties, and unescapes ``%3B %0D %0A %5D`` and then ``%AZP25`` in both
  properties and data (azure-pipelines-agent ``CommandStringConvertor``; azure-pipelines-task-lib escapes the same
  way). So a message must not contain ``;`` or ``]`` raw, and text that is not a command (a group title, a log
  line) must not contain ``##vso[`` at all: :meth:`CiReporter.safe_line` defuses it.

Before that escaping, every value goes through :func:`exbe.redaction.clean` -- the secrets choke point, then control
characters (ESC, BEL, NUL, C1 such as CSI, bidi overrides...) written as ``\\xNN`` so no server string can drive the
log viewer's terminal emulation, and the choke point once more. That holds for annotations, log lines, output
variables and the step summary alike; :meth:`CiReporter.publish` redacts each value of a run on its own *before* it is
composed into an annotation, so a short password (masked only as a whole value) is caught there too. The summary
table's cells are Markdown code spans (:func:`exbe.markdown.markdown_code`), so links, images, autolinks, emphasis
and HTML from a server stay text.

**No secret on stdout.** Both platforms mask the values of their secret variables themselves (GitHub: every
``secrets.*`` value; Azure Pipelines: every secret variable, also when mapped into ``env:``), so :meth:`CiReporter.mask`
prints nothing by default: a ``::add-mask::<password>`` line would put the password on stdout, readable wherever
stdout is also captured (a ``tee``, a wrapper script's log). Set ``EXBE_CI_MASK=true`` only for a password that
reaches exbe *without* passing through the platform's secret store; then exbe registers it with
``::add-mask::``/``##vso[task.setsecret]`` as before (docs/pipelines.md).
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .redaction import REDACTOR, Redact, clean

if TYPE_CHECKING:
    from .model import ServerRun
    from .report import Location

#: What :meth:`CiReporter.finish` accepts: the overall outcome of the run.
STATUSES = ("succeeded", "warnings", "failed")

#: Annotations of one kind (errors, warnings) a step can show: GitHub shows 10 of each per step (50 per job);
#: Azure DevOps lists every issue, and its run summary the first 10 of each, so exbe keeps to 10 there too.
ANNOTATIONS_PER_KIND = 10

#: The variable that opts in to printing the password in the platform's mask command (see the module doc).
MASK_VARIABLE = "EXBE_CI_MASK"
_TRUE_WORDS = ("true", "1", "yes", "on")

_COMMAND_MARKER = re.compile(r"##(\s*(?:vso)?\s*\[)", re.IGNORECASE)
_NEWLINES = re.compile(r"\r\n|\r|\n")
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,63}")


def output_name(name: str) -> str:
    """A variable name both platforms accept in expressions: letters, digits and ``_`` (``exch-01`` -> ``exch_01``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return cleaned if cleaned[:1].isalpha() or cleaned[:1] == "_" else f"_{cleaned}"


class CiReporter:
    """No CI: exbe's console table and progress lines say it all, so every method adds nothing.

    The platform reporters below override what their platform supports. ``stream`` defaults to the current
    ``sys.stdout`` at write time (both agents read stdout); ``redact`` to :data:`exbe.redaction.REDACTOR`.
    """

    name = "plain"

    def __init__(self, env: Mapping[str, str] | None = None, stream: IO[str] | None = None,
                 redact: Redact | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self._stream = stream
        self._redact = REDACTOR.redact if redact is None else redact

    @property
    def masks_secrets(self) -> bool:
        """Whether :meth:`mask` prints the secret to the platform's mask command (opt-in: ``EXBE_CI_MASK=true``)."""
        return self.env.get(MASK_VARIABLE, "").strip().lower() in _TRUE_WORDS

    def publish(self, runs: Sequence[ServerRun], *, task: str | None = None,
                locations: Mapping[str, Location] | None = None) -> None:
        """Everything a run shows the platform: at most one annotation per server that did not pass, most severe
        first, within the platform's limits (:meth:`annotate`); the new thumbprints as output variables; the step
        summary (:mod:`exbe.summary`). ``locations`` places a server's annotation on its inventory entry. Each value
        is redacted on its own first."""
        from .summary import render, severity

        for run in runs:
            if run.new_thumbprint and run.new_thumbprint != run.old_thumbprint:
                self.set_output(f"{run.server}_new_thumbprint", self._value(run.new_thumbprint))
        self.annotate(sorted(runs, key=severity), locations or {})
        self.summary(render(runs, mermaid=self.renders_mermaid, redact=self._redact, task=task))

    def annotate(self, runs: Sequence[ServerRun], locations: Mapping[str, Location]) -> None:
        """One annotation per server that did not pass, in the order given (most severe first): an error naming
        every failing check (or why exbe could not work on the server), a warning naming every warning check. At
        most :data:`ANNOTATIONS_PER_KIND` of each kind: the last one allowed then says how many servers were left
        out, since the platform would drop the rest unseen."""
        from .report import findings, verdict, warnings

        errors: list[tuple[str, str]] = []
        notes: list[tuple[str, str]] = []
        for run in runs:
            server, outcome = self._value(run.server), verdict(run)
            if outcome in ("unreachable", "cancelled", "not_attempted") or (outcome == "failed" and run.error_kind):
                errors.append((f"{server} {outcome}: {self._value(run.error)}", run.server))
            elif outcome == "failed":
                failing = findings(run, "fail")
                first = next((s.message for s in run.steps if s.status == "failed" and not s.checks), None) or next(
                    (c.message for s in run.steps for c in s.checks if c.status == "fail"), "")
                errors.append((f"{server} failed {', '.join(self._word(f) for f in failing)}: {self._value(first)}",
                               run.server))
            elif outcome == "warnings":
                named = findings(run, "warn")
                what = ", ".join(self._word(f) for f in named) if named else self._value(warnings(run)[0])
                notes.append((f"{server} warnings: {what}", run.server))
        for kind, found, emit in (("failed or unreachable", errors, self.error), ("with warnings", notes,
                                                                                   self.warning)):
            shown = found if len(found) <= ANNOTATIONS_PER_KIND else found[:ANNOTATIONS_PER_KIND - 1]
            for message, name in shown:
                emit(message, server=self._value(name), location=locations.get(name))
            if len(shown) < len(found):
                emit(f"{len(found) - len(shown)} more server(s) {kind}, not annotated here (the platform shows "
                     f"{ANNOTATIONS_PER_KIND} per step): see the step summary and the test results")

    def _value(self, text: object) -> str:
        return clean(str(text or ""), self._redact, one_line=True)

    def _word(self, text: str) -> str:
        """A step name or check id: exbe's vocabulary, not a secret."""
        return text if _IDENTIFIER.fullmatch(text) else self._value(text)

    def progress_line(self, server: str, step: str, status: str, message: str) -> str:
        """One progress line (``server step status message``), each part redacted on its own, safe for this log."""
        parts = [clean(part, self._redact, one_line=True) for part in (server, step, status, message)]
        return self.safe_line(f"{parts[0]:<10} {parts[1]:<9} {parts[2]:<8} {parts[3]}")

    def error(self, message: str, server: str | None = None, location: Location | None = None) -> None:
        """Annotate a failure on ``server``, at ``location`` (its inventory entry) when given."""

    def warning(self, message: str, server: str | None = None, location: Location | None = None) -> None:
        """Annotate a warning on ``server``, at ``location`` (its inventory entry) when given."""

    def mask(self, secret: str) -> None:
        """With ``EXBE_CI_MASK=true`` only, have the platform replace ``secret`` with ``***`` in every later log line;
        otherwise nothing (the platform masks its own secret variables; the command would print the secret)."""

    def set_output(self, name: str, value: str) -> None:
        """Publish ``value`` as an output of this step/job (e.g. ``exch01_new_thumbprint``)."""

    #: Whether this platform's summary page renders Mermaid charts in Markdown.
    renders_mermaid = False

    def summary(self, markdown: str) -> None:
        """Show ``markdown`` (already redacted and escaped: :mod:`exbe.summary`) on the run's summary page."""

    def finish(self, status: str) -> None:
        """Report the overall outcome: one of :data:`STATUSES`. The exit code still fails the step on failure."""
        _check_status(status)

    def safe_line(self, text: str) -> str:
        """``text`` as one log line that this platform cannot read as a command (and no terminal as a control)."""
        return self._line(text)

    def _line(self, text: str) -> str:
        """``text`` redacted, on one line, its control characters visible."""
        return clean(text, self._redact, one_line=True)

    def _text(self, text: str) -> str:
        """``text`` redacted, its control characters visible; line breaks kept for the platform's escaping."""
        return clean(text, self._redact)

    def _write(self, line: str) -> None:
        """Print one command or line whose values are already redacted (the command's own text never is: masking
        stops at values, so a password that happens to spell part of ``##vso[`` cannot break the command)."""
        stream = self._stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()


class AzureReporter(CiReporter):
    """Azure Pipelines logging commands (``##vso[...]``) and formatting lines."""

    name = "azure"

    def error(self, message: str, server: str | None = None, location: Location | None = None) -> None:
        self._issue("error", message, location)

    def warning(self, message: str, server: str | None = None, location: Location | None = None) -> None:
        self._issue("warning", message, location)

    def _issue(self, kind: str, message: str, location: Location | None) -> None:
        where = "" if location is None else (f"sourcepath={azure_escape(self._line(location[0]))};"
                                             f"linenumber={int(location[1])};")
        self._write(f"##vso[task.logissue type={kind};{where}]{azure_escape(self._text(message))}")

    def mask(self, secret: str) -> None:
        if not self.masks_secrets:
            return
        for value in _mask_values(secret):
            self._write(f"##vso[task.setsecret]{azure_escape(value)}")

    def set_output(self, name: str, value: str) -> None:
        variable = azure_escape(output_name(name))
        self._write(f"##vso[task.setvariable variable={variable};isOutput=true]{azure_escape(self._text(value))}")

    def summary(self, markdown: str) -> None:
        """Write ``markdown`` to the agent's temp directory and attach it to the run's summary page."""
        temp = self.env.get("AGENT_TEMPDIRECTORY")
        if not temp:
            return
        path = Path(temp) / f"exbe-summary-{secrets.token_hex(4)}.md"
        path.write_text(markdown, encoding="utf-8")
        self._write(f"##vso[task.uploadsummary]{azure_escape(str(path))}")

    def finish(self, status: str) -> None:
        _check_status(status)
        if status == "warnings":
            self._write("##vso[task.complete result=SucceededWithIssues;]exbe finished with warnings")

    def safe_line(self, text: str) -> str:
        return _COMMAND_MARKER.sub(r"# #\1", self._line(text))


class GitHubReporter(CiReporter):
    """GitHub Actions workflow commands (``::error::``) and the ``$GITHUB_OUTPUT``/``$GITHUB_STEP_SUMMARY`` files."""

    name = "github"

    renders_mermaid = True

    def error(self, message: str, server: str | None = None, location: Location | None = None) -> None:
        self._annotate("error", message, server, location)

    def warning(self, message: str, server: str | None = None, location: Location | None = None) -> None:
        self._annotate("warning", message, server, location)

    def mask(self, secret: str) -> None:
        if not self.masks_secrets:
            return
        for value in _mask_values(secret):
            self._write(f"::add-mask::{github_escape_data(value)}")

    def set_output(self, name: str, value: str) -> None:
        path = self.env.get("GITHUB_OUTPUT")
        if path:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(github_file_entry(output_name(name), self._text(value)))

    def summary(self, markdown: str) -> None:
        path = self.env.get("GITHUB_STEP_SUMMARY")
        if path:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(markdown + "\n")

    def safe_line(self, text: str) -> str:
        line = _COMMAND_MARKER.sub(r"# #\1", self._line(text))
        stripped = line.lstrip()
        if stripped.startswith("::"):
            line = line[: len(line) - len(stripped)] + ": :" + stripped[2:]
        return line

    def _annotate(self, kind: str, message: str, server: str | None, location: Location | None) -> None:
        title = f"exbe {self._line(server)}" if server else "exbe"
        where = "" if location is None else (f"file={github_escape_property(self._line(location[0]))},"
                                             f"line={int(location[1])},")
        self._write(f"::{kind} {where}title={github_escape_property(title)}::"
                    f"{github_escape_data(self._text(message))}")


def detect(env: Mapping[str, str], stream: IO[str] | None = None, redact: Redact | None = None) -> CiReporter:
    """The reporter for the pipeline this process runs in, judged from ``env`` (e.g. ``os.environ``)."""
    if env.get("TF_BUILD", "").lower() == "true":
        return AzureReporter(env, stream, redact)
    if env.get("GITHUB_ACTIONS", "").lower() == "true":
        return GitHubReporter(env, stream, redact)
    return CiReporter(env, stream, redact)


def azure_escape(text: str) -> str:
    """Escape a logging-command property value or message for the Azure Pipelines agent."""
    return (str(text).replace("%", "%AZP25").replace(";", "%3B").replace("\r", "%0D").replace("\n", "%0A")
            .replace("]", "%5D"))


def github_escape_data(text: str) -> str:
    """Escape the data (after the last ``::``) of a GitHub workflow command."""
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_escape_property(text: str) -> str:
    """Escape a property value (``title=...``) of a GitHub workflow command."""
    return github_escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_file_entry(name: str, value: str) -> str:
    """One ``$GITHUB_OUTPUT``/``$GITHUB_ENV`` entry: ``name=value``, or a heredoc with a random delimiter for
    multi-line values (a delimiter the value does not contain, so the value cannot end the entry early)."""
    if "\n" not in value and "\r" not in value:
        return f"{name}={value}\n"
    delimiter = f"EXBE_EOF_{secrets.token_hex(16)}"
    while delimiter in value:
        delimiter = f"EXBE_EOF_{secrets.token_hex(16)}"
    return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"


def _mask_values(secret: str) -> list[str]:
    """The whole secret, and each line of a multi-line one (both platforms mask line by line)."""
    if not secret:
        return []
    lines = [line for line in _NEWLINES.split(secret) if line.strip()]
    return [secret] + [line for line in lines if line != secret]


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown run status {status!r}; expected one of {', '.join(STATUSES)}")
