"""Markdown that renders exactly as the text it carries, for the step summaries of GitHub (cmark-gfm) and Azure DevOps
(markdown-it): the escaping the CI reporters (:mod:`exbe.ci`) and the summary (:mod:`exbe.summary`) share."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from .redaction import Redact, clean

_MARKDOWN_PUNCTUATION = re.compile("([" + re.escape(string.punctuation) + "])")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], redact: Redact | None = None) -> str:
    """A GitHub-flavoured Markdown table of inert text. Each cell is redacted, put on one line with its control
    characters visible, and written as a code span (:func:`markdown_code`): inside one, CommonMark and GFM make no
    links, images, autolinks (URLs, ``www.``, e-mail addresses), emphasis, entities or HTML, and a ``\\|`` is the
    one escape both GitHub (cmark-gfm) and Azure DevOps (markdown-it) read in a table. Headers are exbe's words,
    written with every ASCII punctuation character backslash-escaped (:func:`markdown_text`)."""
    def header(value: object) -> str:
        return markdown_text(clean(str(value), redact, one_line=True))

    def cell(value: object) -> str:
        return markdown_code(clean(str(value), redact, one_line=True))

    lines = ["| " + " | ".join(header(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown_code(text: str) -> str:
    """One line of ``text`` as a Markdown code span inside a table cell that renders as exactly ``text``: fenced by
    more backticks than its longest run of them, padded by one space each side (which CommonMark strips), ``|`` as
    ``\\|``; empty text stays empty."""
    if not text:
        return ""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text.replace('|', chr(92) + '|')} {fence}"


def markdown_text(text: str) -> str:
    """``text`` as Markdown that renders as ``text``: every ASCII punctuation character backslash-escaped
    (CommonMark 2.4). Not enough on its own for text from servers: GFM still autolinks an e-mail address."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)
