"""A check's advice as a command to paste: run as printed, on the state that raised it, it fixes the finding.

Checks judge facts and name no inventory entry (they see the server's own computer name); the console, the HTML
report and `exbe status` print each `exbe <task>` of an advice with ``--server NAME`` for the server it is about.
"""

from __future__ import annotations

import re

from .quoting import Unquotable, posix

_ADVICE = re.compile(r"`exbe ([a-z]+)([^`]*)`")


def runnable(text: str, server: str) -> str:
    """``text`` with each `exbe <task> ...` in it given ``--server NAME`` (unless it names a server already)."""
    def one(found: re.Match[str]) -> str:
        if "--server" in found[2]:
            return found[0]
        try:
            word = posix(server, "--server value")
        except Unquotable:  # a name no shell word can carry: the advice stays as the check wrote it
            return found[0]
        return f"`exbe {found[1]}{found[2]} --server {word}`"

    return _ADVICE.sub(one, text)
