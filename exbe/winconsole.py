"""ANSI escape sequences on a Windows console: only where the console interprets them.

exbe colours its lines and redraws its progress line with ANSI escape sequences (``exbe.console``). A Windows
console interprets them only in virtual-terminal mode (``ENABLE_VIRTUAL_TERMINAL_PROCESSING``, Windows 10 1511 and
later, Microsoft's "Console Virtual Terminal Sequences"): Windows Terminal turns it on for the programs it runs, the
classic console host does not, and Python does not ask for it, so ``\\x1b[32m`` would print as text. On Windows exbe
asks the console for that mode on its own handle (``GetConsoleMode``/``SetConsoleMode``); where that fails (no
console behind the handle, an older Windows) it writes no escape sequences.

A pipe is no console: Azure Pipelines' agent and GitHub's runner read a job's output through one, so there exbe
colours only with ``FORCE_COLOR``, and both logs render the sequences (``exbe.console.colour_wanted``).
"""

from __future__ import annotations

import sys
from typing import IO

#: SetConsoleMode's flag for virtual-terminal processing of output (wincon.h).
ENABLE_VIRTUAL_TERMINAL_PROCESSING = 0x0004


def ansi_ready(stream: IO[str]) -> bool:
    """Whether escape sequences written to ``stream`` are interpreted: always off Windows; on Windows, when its handle
    is a console that is, or can be put, in virtual-terminal mode."""
    if sys.platform != "win32":
        return True
    try:
        fileno = stream.fileno()
    except (AttributeError, OSError, ValueError):  # no file behind the stream
        return False
    import ctypes
    import msvcrt

    try:
        handle = msvcrt.get_osfhandle(fileno)
    except OSError:
        return False
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    mode = ctypes.c_ulong()
    if not kernel32.GetConsoleMode(handle, ctypes.byref(mode)):  # not a console: a pipe or a file
        return False
    if mode.value & ENABLE_VIRTUAL_TERMINAL_PROCESSING:
        return True
    return bool(kernel32.SetConsoleMode(handle, mode.value | ENABLE_VIRTUAL_TERMINAL_PROCESSING))
