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
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

#: What :meth:`CiReporter.finish` accepts: the overall outcome of the run.
STATUSES = ("succeeded", "warnings", "failed")

#: Columns of the run summary rows exbe.cli passes to :meth:`CiReporter.summary`.
SUMMARY_HEADERS = ("Server", "Result", "Old thumbprint", "New thumbprint")

_COMMAND_MARKER = re.compile(r"##(\s*(?:vso)?\s*\[)", re.IGNORECASE)
_NEWLINES = re.compile(r"\r\n|\r|\n")


def output_name(name: str) -> str:
    """A variable name both platforms accept in expressions: letters, digits and ``_`` (``exch-01`` -> ``exch_01``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return cleaned if cleaned[:1].isalpha() or cleaned[:1] == "_" else f"_{cleaned}"


class CiReporter:
    """No CI: exbe's console table and progress lines say it all, so every method adds nothing.

    The platform reporters below override what their platform supports. ``stream`` defaults to the current
    ``sys.stdout`` at write time (both agents read stdout).
    """

    name = "plain"

    def __init__(self, env: Mapping[str, str] | None = None, stream: IO[str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self._stream = stream

    def error(self, message: str, server: str | None = None) -> None:
        """Annotate a failure (a failed step or check) on ``server``."""

    def warning(self, message: str, server: str | None = None) -> None:
        """Annotate a warning (a check that needs attention soon) on ``server``."""


    def mask(self, secret: str) -> None:
        """Have the platform replace ``secret`` with ``***`` in every later log line."""

    def set_output(self, name: str, value: str) -> None:
        """Publish ``value`` as an output of this step/job (e.g. ``exch01_new_thumbprint``)."""

    def summary(self, rows: Sequence[Sequence[str]], headers: Sequence[str] = SUMMARY_HEADERS) -> None:
        """Show the run's result table on the run's summary page."""

    def finish(self, status: str) -> None:
        """Report the overall outcome: one of :data:`STATUSES`. The exit code still fails the step on failure."""
        _check_status(status)

    def safe_line(self, text: str) -> str:
        """``text`` as one log line that this platform cannot read as a command."""
        return text

    def _write(self, line: str) -> None:
        stream = self._stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()


class AzureReporter(CiReporter):
    """Azure Pipelines logging commands (``##vso[...]``) and formatting lines."""

    name = "azure"

    def error(self, message: str, server: str | None = None) -> None:
        self._write(f"##vso[task.logissue type=error;]{azure_escape(message)}")

    def warning(self, message: str, server: str | None = None) -> None:
        self._write(f"##vso[task.logissue type=warning;]{azure_escape(message)}")


    def mask(self, secret: str) -> None:
        for value in _mask_values(secret):
            self._write(f"##vso[task.setsecret]{azure_escape(value)}")

    def set_output(self, name: str, value: str) -> None:
        variable = azure_escape(output_name(name))
        self._write(f"##vso[task.setvariable variable={variable};isOutput=true]{azure_escape(value)}")

    def summary(self, rows: Sequence[Sequence[str]], headers: Sequence[str] = SUMMARY_HEADERS) -> None:
        """Write the table as Markdown to the agent's temp directory and attach it to the run's summary page."""
        temp = self.env.get("AGENT_TEMPDIRECTORY")
        if not temp:
            return
        path = Path(temp) / f"exbe-summary-{secrets.token_hex(4)}.md"
        path.write_text("## exbe\n\n" + markdown_table(headers, rows), encoding="utf-8")
        self._write(f"##vso[task.uploadsummary]{azure_escape(str(path))}")

    def finish(self, status: str) -> None:
        _check_status(status)
        if status == "warnings":
            self._write("##vso[task.complete result=SucceededWithIssues;]exbe finished with warnings")

    def safe_line(self, text: str) -> str:
        return _COMMAND_MARKER.sub(r"# #\1", " ".join(_NEWLINES.split(text)))


class GitHubReporter(CiReporter):
    """GitHub Actions workflow commands (``::error::``) and the ``$GITHUB_OUTPUT``/``$GITHUB_STEP_SUMMARY`` files."""

    name = "github"

    def error(self, message: str, server: str | None = None) -> None:
        self._annotate("error", message, server)

    def warning(self, message: str, server: str | None = None) -> None:
        self._annotate("warning", message, server)


    def mask(self, secret: str) -> None:
        for value in _mask_values(secret):
            self._write(f"::add-mask::{github_escape_data(value)}")

    def set_output(self, name: str, value: str) -> None:
        path = self.env.get("GITHUB_OUTPUT")
        if path:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(github_file_entry(output_name(name), value))

    def summary(self, rows: Sequence[Sequence[str]], headers: Sequence[str] = SUMMARY_HEADERS) -> None:
        path = self.env.get("GITHUB_STEP_SUMMARY")
        if path:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write("## exbe\n\n" + markdown_table(headers, rows) + "\n")

    def safe_line(self, text: str) -> str:
        line = _COMMAND_MARKER.sub(r"# #\1", " ".join(_NEWLINES.split(text)))
        stripped = line.lstrip()
        if stripped.startswith("::"):
            line = line[: len(line) - len(stripped)] + ": :" + stripped[2:]
        return line

    def _annotate(self, kind: str, message: str, server: str | None) -> None:
        title = f"exbe {server}" if server else "exbe"
        self._write(f"::{kind} title={github_escape_property(title)}::{github_escape_data(message)}")


def detect(env: Mapping[str, str], stream: IO[str] | None = None) -> CiReporter:
    """The reporter for the pipeline this process runs in, judged from ``env`` (e.g. ``os.environ``)."""
    if env.get("TF_BUILD", "").lower() == "true":
        return AzureReporter(env, stream)
    if env.get("GITHUB_ACTIONS", "").lower() == "true":
        return GitHubReporter(env, stream)
    return CiReporter(env, stream)


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


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; cells are flattened to one line and cannot break the table or add HTML."""
    def cell(value: object) -> str:
        text = " ".join(_NEWLINES.split(str(value)))
        return (text.replace("\\", "\\\\").replace("|", "\\|").replace("&", "&amp;").replace("<", "&lt;")
                .replace(">", "&gt;"))

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _mask_values(secret: str) -> list[str]:
    """The whole secret, and each line of a multi-line one (both platforms mask line by line)."""
    if not secret:
        return []
    lines = [line for line in _NEWLINES.split(secret) if line.strip()]
    return [secret] + [line for line in lines if line != secret]


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown run status {status!r}; expected one of {', '.join(STATUSES)}")
