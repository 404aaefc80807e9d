"""The wire form of a rendered script: only the functions it uses (:func:`prune_functions`), sent without comments
and indentation (:func:`compact`). Serializing a script into PSRP is the largest part of exbe's CPU per server, and
every step script used to carry the whole function library; the readable form stays for ``exbe render``.

Both read PowerShell text conservatively: what this reader cannot place for sure raises :class:`UnsupportedScript`,
and the caller then sends the script as rendered."""

from __future__ import annotations

import dataclasses
import re

# -- reading PowerShell text: code, strings, comments ----------------------------------------------------------------
#: PowerShell reads the typographic quotes as the ASCII ones.
_SINGLE_QUOTES = frozenset("'\u2018\u2019\u201a\u201b")
_DOUBLE_QUOTES = frozenset('"\u201c\u201d\u201e')
_QUOTES = _SINGLE_QUOTES | _DOUBLE_QUOTES
_BLANKS = " \t"
#: Where a code segment may end; everything between two of these is plain code (the reader jumps over it).
_CODE_STOP = re.compile("[\n`#<@$\\-" + "".join(sorted(_QUOTES)) + "]")
_SINGLE_STOP = re.compile("[" + "".join(sorted(_SINGLE_QUOTES)) + "]")
_DOUBLE_STOP = re.compile("[`$" + "".join(sorted(_DOUBLE_QUOTES)) + "]")


class UnsupportedScript(ValueError):
    """PowerShell text the wire-form reader cannot read with certainty; such a script is sent as rendered."""


@dataclasses.dataclass(frozen=True)
class _Segment:
    kind: str  # code | string | comment | continuation | newline
    start: int
    end: int


def _segments(text: str) -> list[_Segment]:
    """PowerShell text cut into code, strings (here-strings included), comments, line continuations and newlines.

    ``#`` and ``<#`` count as comments only where PowerShell certainly starts one: at the start of a line or after a
    blank (``#requires`` lines are code). What this reader cannot place for sure (a ``#`` glued to a word, an
    unterminated string, the stop-parsing token ``--%``) raises :class:`UnsupportedScript` instead of a guess."""
    segments: list[_Segment] = []
    i, n, code_start = 0, len(text), 0
    while True:
        stop = _CODE_STOP.search(text, i)
        if stop is None:
            break
        i = stop.start()
        ch = text[i]
        kind = ""
        if ch == "\n":
            kind, end = "newline", i + 1
        elif ch == "`":
            if text.startswith("\n", i + 1):
                kind, end = "continuation", i + 1
            else:
                _refuse_escaped_blank_before_comment(text, i)
                i += 2  # an escaped character is code
                continue
        elif ch == "#" or (ch == "<" and text.startswith("#", i + 1)):
            if i and text[i - 1] not in " \t\n":
                if ch == "<":  # the -lt of another language, never PowerShell's; a redirection is refused below
                    raise UnsupportedScript(f"'<#' glued to a word at offset {i}")
                raise UnsupportedScript(f"a '#' glued to a word at offset {i}")
            end = _comment_end(text, i)
            kind = "code" if text[i:i + 9].lower() == "#requires" else "comment"
        elif ch == "@" and i + 1 < n and text[i + 1] in _QUOTES:
            here = _here_string_end(text, i)
            if here is None:
                i += 1
                continue
            kind, end = "string", here
        elif ch in _QUOTES:
            kind, end = "string", _string_end(text, i)
        elif ch == "$" and text.startswith("{", i + 1):
            i = _braced_variable_end(text, i)
            continue
        elif ch == "-" and text.startswith("--%", i):
            raise UnsupportedScript(f"the stop-parsing token --% at offset {i}")
        else:
            i += 1
            continue
        if i > code_start:
            segments.append(_Segment("code", code_start, i))
        segments.append(_Segment(kind, i, end))
        i = code_start = end
    if n > code_start:
        segments.append(_Segment("code", code_start, n))
    return segments


def _refuse_escaped_blank_before_comment(text: str, i: int) -> None:
    """A blank or tab escaped by the backtick at ``i`` is argument text, so a ``#`` or ``<#`` right after it is text
    too (``Write-Output a` #b`` writes ``a #b``; real-server-shapes.md §4): this reader would take it for a comment,
    so it refuses rather than cut the argument short."""
    if i + 1 < len(text) and text[i + 1] in _BLANKS and text.startswith(("#", "<#"), i + 2):
        raise UnsupportedScript(f"a backtick-escaped blank before '#' at offset {i}")


def _comment_end(text: str, i: int) -> int:
    if text.startswith("<#", i):
        close = text.find("#>", i + 2)
        if close < 0:
            raise UnsupportedScript(f"an unterminated block comment at offset {i}")
        return close + 2
    close = text.find("\n", i)
    return len(text) if close < 0 else close


def _here_string_end(text: str, i: int) -> int | None:
    """The end of the here-string opening at ``i`` (``@'`` or ``@"`` then a line break; it closes with the quote and
    ``@`` at the start of a line), or None when ``@`` and the quote are not a here-string header."""
    line_end = text.find("\n", i + 2)
    if line_end < 0 or text[i + 2:line_end].strip(_BLANKS):
        return None
    quotes = _SINGLE_QUOTES if text[i + 1] in _SINGLE_QUOTES else _DOUBLE_QUOTES
    j = line_end
    while j >= 0:
        if j + 2 < len(text) and text[j + 1] in quotes and text[j + 2] == "@":
            return j + 3
        j = text.find("\n", j + 1)
    raise UnsupportedScript(f"an unterminated here-string at offset {i}")


def _string_end(text: str, i: int) -> int:
    """The end of the quoted string opening at ``i``: ``''`` (or ``""``) is an escaped quote; in a double-quoted
    string a backtick escapes the next character and ``$( )`` holds code (with strings of its own)."""
    n = len(text)
    single = text[i] in _SINGLE_QUOTES
    quotes = _SINGLE_QUOTES if single else _DOUBLE_QUOTES
    stops = _SINGLE_STOP if single else _DOUBLE_STOP
    j = i + 1
    while True:
        stop = stops.search(text, j)
        if stop is None:
            break
        j = stop.start()
        c = text[j]
        if c in quotes:
            if j + 1 < n and text[j + 1] in quotes:
                j += 2
                continue
            return j + 1
        if not single and c == "`":
            j += 2
        elif not single and c == "$" and text.startswith("(", j + 1):
            j = _subexpression_end(text, j + 2)
        elif not single and c == "$" and text.startswith("{", j + 1):
            j = _braced_variable_end(text, j)
        else:
            j += 1
    raise UnsupportedScript(f"an unterminated string at offset {i}")


def _subexpression_end(text: str, j: int) -> int:
    """The end of the ``$( ... )`` whose code starts at ``j``."""
    depth, n = 1, len(text)
    while j < n:
        c = text[j]
        if c == "`":
            _refuse_escaped_blank_before_comment(text, j)
            j += 2
        elif c == "@" and j + 1 < n and text[j + 1] in _QUOTES:
            j = _here_string_end(text, j) or j + 1
        elif c in _QUOTES:
            j = _string_end(text, j)
        elif (c == "#" or text.startswith("<#", j)) and text[j - 1] in " \t\n(":
            j = _comment_end(text, j)
        elif c == "$" and text.startswith("{", j + 1):
            j = _braced_variable_end(text, j)
        else:
            depth += (c == "(") - (c == ")")
            j += 1
            if depth == 0:
                return j
    raise UnsupportedScript("an unterminated $( ) subexpression")


def _braced_variable_end(text: str, i: int) -> int:
    """The end of ``${name}`` at ``i`` (any character but an unescaped ``}`` belongs to the name)."""
    j = i + 2
    while j < len(text):
        if text[j] == "`":
            j += 2
        elif text[j] == "}":
            return j + 1
        else:
            j += 1
    raise UnsupportedScript(f"an unterminated ${{...}} variable at offset {i}")


def _masked(text: str, segments: list[_Segment], kinds: frozenset[str]) -> str:
    """``text`` with the segments of ``kinds`` blanked (line breaks kept, so offsets and lines stay)."""
    parts = []
    last = 0
    for segment in segments:
        if segment.kind in kinds:
            parts.append(text[last:segment.start])
            parts.append(re.sub(r"[^\n]", " ", text[segment.start:segment.end]))
            last = segment.end
    parts.append(text[last:])
    return "".join(parts)


# -- the wire form -----------------------------------------------------------------------------------------------------
def compact(text: str) -> str:
    """``text`` without comments, indentation, trailing blanks and empty lines: the same tokens for PowerShell.

    Strings and here-strings stay exactly as written (their lines, blanks and ``#`` included); a line continuation
    keeps the line after it, even an empty one, and a blank escaped by a backtick stays. Raises
    :class:`UnsupportedScript` for text it cannot read with certainty."""
    lines: list[str] = []
    line: list[str] = []
    at_line_start = True
    continued = after_continuation = False
    for segment in _segments(text):
        piece = text[segment.start:segment.end]
        if segment.kind == "newline":
            _end_line(lines, line, keep_empty=after_continuation)
            after_continuation, continued = continued, False
            line, at_line_start = [], True
            continue
        if segment.kind == "comment":
            continue
        if at_line_start and segment.kind == "code":
            piece = piece.lstrip(_BLANKS)
        continued = segment.kind == "continuation"
        at_line_start = at_line_start and not piece
        line.append(piece)
    if line:
        _end_line(lines, line, keep_empty=after_continuation)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def _end_line(lines: list[str], line: list[str], *, keep_empty: bool) -> None:
    content = "".join(line)
    stripped = content.rstrip(_BLANKS)
    if stripped.endswith("`") and stripped != content:  # a backtick escapes the blank after it
        stripped = content
    if stripped or keep_empty:
        lines.append(stripped)


_FUNCTION_OR_BRACE = re.compile(
    r"(?P<function>^[ \t]*function[ \t]+(?:script:|global:)?(?P<name>[A-Za-z_][\w-]*))|(?P<open>\{)|(?P<close>\})",
    re.IGNORECASE | re.MULTILINE)
_NAME = re.compile(r"[A-Za-z_][\w-]*")


@dataclasses.dataclass
class _Function:
    name: str
    start: int  # start of its first line
    end: int  # after the line break that ends its closing brace's line


def prune_functions(text: str) -> str:
    """``text`` with only the top-level functions its own code uses, directly or through other functions.

    A function counts as used where its name appears, in any letter case, as a word of the code outside every
    function or of a used function's body, strings included (a name in a string may be invoked by it); comments do
    not count. Identical definitions after the first are dropped too (a template included twice). Comment lines
    directly above a dropped function and one empty line after it go with it. Text the reader cannot read with
    certainty is returned unchanged."""
    try:
        segments = _segments(text)
    except UnsupportedScript:
        return text
    structure = _masked(text, segments, frozenset({"string", "comment"}))
    # braced variables and escaped characters are not braces
    structure = re.sub(r"`.|\$\{(?:`.|[^}])*\}", lambda m: re.sub(r"[^\n]", " ", m.group()), structure, flags=re.S)
    words = _masked(text, segments, frozenset({"comment"}))
    functions = _top_level_functions(structure)
    if not functions or _computed_invocation(text, structure):
        return text
    defined = {f.name.lower() for f in functions}
    seen_texts: set[str] = set()
    duplicates: set[int] = set()
    for index, function in enumerate(functions):
        body = text[function.start:function.end]
        if body in seen_texts:
            duplicates.add(index)
        seen_texts.add(body)
    outside = []
    last = 0
    for function in functions:
        outside.append(words[last:function.start])
        last = function.end
    outside.append(words[last:])
    uses: dict[str, set[str]] = {f.name.lower(): set() for f in functions}
    for function in functions:
        uses[function.name.lower()] |= {w.lower() for w in _NAME.findall(words, function.start, function.end)} & defined
    used: set[str] = set()
    pending = [w.lower() for w in _NAME.findall("".join(outside)) if w.lower() in defined]
    while pending:
        name = pending.pop()
        if name not in used:
            used.add(name)
            pending.extend(uses[name] - used)
    kept = []
    last = 0
    for index, function in enumerate(functions):
        if function.name.lower() in used and index not in duplicates:
            continue
        start = _comment_lines_above(text, words, function.start, last)
        end = function.end + 1 if text.startswith("\n", function.end) else function.end
        kept.append(text[last:start])
        last = end
    kept.append(text[last:])
    return "".join(kept)


#: The call operator ``&`` or dot-sourcing ``.`` in command position (a ``&`` after ``>`` is a redirection such as
#: ``2>&1``); what follows is read from the text, where strings are not blanked.
_INVOCATION = re.compile(r"(?<![>\w$.])&|(?:^|(?<=[;|{(=]))[ \t]*\.(?=[ \t])", re.MULTILINE)
#: Commands that run text as code or look commands up by a name built at run time.
_DYNAMIC_COMMANDS = re.compile(r"(?<![\w-])(?:Invoke-Expression|iex|InvokeCommand|InvokeScript|NewScriptBlock"
                               r"|ScriptBlock\]::Create)(?![\w-])", re.IGNORECASE)


def _computed_invocation(text: str, structure: str) -> str | None:
    """Where the script may call a command whose name it computes (``& ('Get-' + $n)``, ``& $name``,
    ``Invoke-Expression``), or None: no static reading sees which function that reaches (real-server-shapes.md §4),
    so nothing may be pruned. A call of a bare name, a literal string or a script block, and ``& $variable`` where
    every assignment of the variable is a script block literal, are static. ``structure`` is ``text`` with strings
    and comments blanked."""
    dynamic = _DYNAMIC_COMMANDS.search(structure)
    if dynamic:
        return dynamic.group()
    for match in _INVOCATION.finditer(structure):
        at = match.end()
        while at < len(text) and text[at] in _BLANKS:
            at += 1
        target = text[at:at + 1]
        if target == "{" or re.match(r"[A-Za-z_]", target) or target in _SINGLE_QUOTES:
            continue
        if target in _DOUBLE_QUOTES:
            literal = text[at:_string_end(text, at)]
            if "$" not in literal and "`" not in literal:
                continue
        elif target == "$":
            name = re.match(r"\$(?:script:|global:|local:)?(\w+)", text[at:])
            if name and _always_a_script_block(structure, name.group(1)):
                continue
        line_end = text.find("\n", at)
        return text[match.start():line_end if line_end >= 0 else len(text)].strip()
    return None


def _always_a_script_block(structure: str, variable: str) -> bool:
    """Every assignment of ``$variable`` in the script is a script block literal (and there is at least one)."""
    assignments = re.findall(r"\$(?:script:|global:|local:)?" + re.escape(variable) + r"[ \t]*=(?!=)[ \t]*(\S?)",
                             structure, flags=re.IGNORECASE)
    return bool(assignments) and all(first == "{" for first in assignments)


def _top_level_functions(structure: str) -> list[_Function]:
    functions = []
    depth = 0
    current: _Function | None = None
    opened = False
    for match in _FUNCTION_OR_BRACE.finditer(structure):
        if match.group("function") is not None:
            if depth == 0 and current is None:
                current, opened = _Function(match.group("name"), match.start(), -1), False
        elif match.group("open") is not None:
            depth += 1
            opened = opened or current is not None
        else:
            depth -= 1
            if depth < 0:
                return []  # unbalanced: leave the text alone
            if depth == 0 and current is not None and opened:
                line_end = structure.find("\n", match.end())
                current.end = len(structure) if line_end < 0 else line_end + 1
                if structure[match.end():current.end].strip():
                    return []  # code after the closing brace on its line: leave the text alone
                functions.append(current)
                current = None
    return functions if current is None and depth == 0 else []


def _comment_lines_above(text: str, words: str, start: int, floor: int) -> int:
    """The start of the comment-only lines directly above the line starting at ``start``, not above ``floor``
    (``words`` is ``text`` with its comments blanked)."""
    while start > floor:
        previous = text.rfind("\n", 0, start - 1) + 1
        if previous < floor or not text[previous:start - 1].strip() or words[previous:start - 1].strip():
            break
        start = previous
    return start
