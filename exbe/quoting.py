"""Commands exbe prints for an administrator to run, with every value quoted for the shell they are meant for.

Values in those commands can come from a server (an IIS site name, a binding's address, the run id in a lock file
that a local user could have planted) or from the configuration (a server's name). Pasted into a shell unquoted,
such a value would be code: ``x; rm -rf ~`` or ``$(…)``. So every command exbe prints is built here:

* ``exbe …`` commands for a POSIX shell (the agent's bash or sh), each value with :func:`shlex.quote`;
* PowerShell commands (``Remove-WebBinding …``) with each value in a single-quoted string, where PowerShell expands
  nothing; a quote inside is doubled, and PowerShell takes the typographic single quotes U+2018-U+201B for ``'``
  too (its tokenizer's ``IsSingleQuote``), so those are doubled as well.

A value no quoting makes safe to show -- control characters, line breaks, bidi controls, which a terminal would
interpret or which would split the command when pasted -- is never printed: :func:`exbe_command` and
:func:`powershell_command` then give a sentence that says which value was held back instead of a command.
"""

from __future__ import annotations

import shlex

from .redaction import visible_controls

#: The characters PowerShell's tokenizer reads as a single quote (``'`` and the typographic ones).
POWERSHELL_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"

#: The longest value exbe puts in a printed command.
MAX_VALUE = 256

Value = str | int


class Unquotable(ValueError):
    """A value exbe will not put into a printed command; ``str`` says why, without the value."""


def _checked(value: Value, what: str) -> str:
    text = str(value)
    if visible_controls(text, keep="") != text or not text.isprintable():
        raise Unquotable(f"the {what} holds control or invisible characters")
    if len(text) > MAX_VALUE:
        raise Unquotable(f"the {what} is longer than {MAX_VALUE} characters")
    return text


def posix(value: Value, what: str = "value") -> str:
    """``value`` as one word of a POSIX shell command (:func:`shlex.quote`), or :class:`Unquotable`."""
    return shlex.quote(_checked(value, what))


def powershell(value: Value, what: str = "value") -> str:
    """``value`` as a PowerShell single-quoted string (every kind of single quote doubled), or
    :class:`Unquotable`. An integer stays a bare number."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    text = _checked(value, what)
    return "'" + "".join(char * 2 if char in POWERSHELL_SINGLE_QUOTES else char for char in text) + "'"


def exbe_command(task: str, *flags: tuple[str, Value]) -> str:
    """```exbe TASK --flag VALUE …``` (in backticks, as messages show commands) for a POSIX shell, each value one
    quoted word. A value that cannot be quoted (or starts with ``-``, which Invoke's parser takes for a flag
    whatever the quoting) gives a sentence instead of the command, without backticks:
    ``exbe unlock (the command is not shown: the --run value holds control characters)``."""
    try:
        words = []
        for flag, value in flags:
            if str(value).startswith("-"):  # Invoke's parser reads `--run --yes` (or `--run=--yes`) as the flag
                raise Unquotable(f"the {flag} value starts with '-', which exbe's command line reads as an option")
            words += [flag, posix(value, f"{flag} value")]
    except Unquotable as exc:
        return f"exbe {task} (the command is not shown: {exc})"
    return "`" + " ".join(["exbe", task, *words]) + "`"


def posix_command(*words: str) -> str:
    """A command line for a POSIX shell, every word quoted (``. '/path/credentials.env'``); when a word cannot be
    quoted, a sentence instead of the command."""
    try:
        return " ".join(posix(word, "path") for word in words)
    except Unquotable as exc:
        return f"{words[0]} (the command is not shown: {exc})"


def powershell_command(name: str, *parameters: tuple[str, Value]) -> str:
    """A cmdlet call ``name -Parameter 'value' …``; when a value cannot be quoted, a sentence instead of the
    command."""
    parts = [name]
    try:
        for parameter, value in parameters:
            parts.append(f"-{parameter} {powershell(value, parameter)}")
    except Unquotable as exc:
        return f"{name} (the command is not shown: {exc})"
    return " ".join(parts)


def unlock_command(server: str, run_id: str | None = None, *, any_lock: bool = False) -> str:
    """``exbe unlock --server S [--run R | --yes]``: the run id often comes from the server's lock file."""
    command = exbe_command("unlock", ("--server", server), *((("--run", run_id),) if run_id is not None else ()))
    return f"{command[:-1]} --yes`" if any_lock and command.endswith("`") else command


def verify_command(server: str) -> str:
    """``exbe verify --server S``."""
    return exbe_command("verify", ("--server", server))
