"""exbe on a Windows agent or console: escape sequences only where the console interprets them.

A Windows console interprets ANSI sequences only in virtual-terminal mode, which exbe asks for on its own handle;
a pipe (how Azure Pipelines' agent and GitHub's runner read a job's output) is no console. The Windows console API
is replaced here by a fake that answers as kernel32 documents GetConsoleMode/SetConsoleMode; the Windows workflow
runs the real one on a runner, where stdout is a pipe.
"""

from __future__ import annotations

import ctypes
import io
import sys
import types

import pytest

from exbe import console, winconsole


class FakeKernel32:
    """GetConsoleMode fails for a handle that is no console; SetConsoleMode succeeds where the console allows it."""

    def __init__(self, mode: int | None, settable: bool) -> None:
        self.mode, self.settable, self.set_to = mode, settable, None

    def GetConsoleMode(self, handle, mode_ref) -> int:  # noqa: N802 - kernel32's name
        if self.mode is None:
            return 0
        mode_ref._obj.value = self.mode
        return 1

    def SetConsoleMode(self, handle, mode) -> int:  # noqa: N802 - kernel32's name
        self.set_to = mode
        return 1 if self.settable else 0


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return 1


@pytest.fixture
def windows(monkeypatch):
    """Pretend to be on Windows with a given console behind stdout."""
    def with_console(mode: int | None, settable: bool = True) -> FakeKernel32:
        kernel32 = FakeKernel32(mode, settable)
        monkeypatch.setattr(sys, "platform", "win32")
        monkeypatch.setitem(sys.modules, "msvcrt", types.SimpleNamespace(get_osfhandle=lambda fileno: 1000 + fileno))
        monkeypatch.setattr(ctypes, "WinDLL", lambda name, use_last_error=False: kernel32, raising=False)
        return kernel32
    return with_console


def test_off_windows_a_terminal_takes_escape_sequences_as_it_always_did():
    assert winconsole.ansi_ready(Terminal()) is True
    assert console.colour_wanted({}, Terminal()) is True


def test_a_windows_console_is_put_in_virtual_terminal_mode_before_exbe_colours(windows):
    kernel32 = windows(mode=0x0003)
    assert console.colour_wanted({}, Terminal()) is True
    assert kernel32.set_to == 0x0003 | winconsole.ENABLE_VIRTUAL_TERMINAL_PROCESSING, "its other modes kept"


def test_a_console_already_in_virtual_terminal_mode_is_left_as_it_is(windows):
    kernel32 = windows(mode=0x0007)
    assert winconsole.ansi_ready(Terminal()) is True and kernel32.set_to is None


def test_a_console_that_refuses_virtual_terminal_mode_gets_no_escape_sequences(windows):
    windows(mode=0x0003, settable=False)
    assert console.colour_wanted({}, Terminal()) is False


def test_a_pipe_is_no_console_and_force_color_still_colours_for_the_agents_log(windows):
    windows(mode=None)
    assert winconsole.ansi_ready(Terminal()) is False
    assert console.colour_wanted({}, Terminal()) is False
    assert console.colour_wanted({"FORCE_COLOR": "1"}, Terminal()) is True, "Azure's and GitHub's logs render them"
    assert console.colour_wanted({"FORCE_COLOR": "1", "NO_COLOR": "1"}, Terminal()) is False


# -- the sandbox's secret files on NTFS --------------------------------------------------------------------------------
@pytest.mark.parametrize(("version", "owner_only"), [
    ((3, 10, 14), False), ((3, 10, 15), True), ((3, 11, 9), False), ((3, 11, 10), True), ((3, 12, 3), False),
    ((3, 12, 4), True), ((3, 13, 0), True), ((3, 14, 1), True)])
def test_owner_only_directories_on_windows_need_the_python_that_applies_an_acl(version, owner_only):
    """Python's os.mkdir(mode=0o700) applies an owner-and-Administrators ACL on Windows from these releases on
    (CVE-2024-4030); before them the mode is ignored and the directory inherits its parent's ACL."""
    from exbe.sandbox.private import owner_only_on_windows

    assert owner_only_on_windows(version) is owner_only


def test_on_windows_an_older_python_is_refused_before_a_secret_is_written(monkeypatch, tmp_path):
    from exbe.sandbox import private

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(sys, "version_info", (3, 11, 4, "final", 0))
    with pytest.raises(PermissionError, match="cannot make an owner-only directory on Windows"):
        private.private_dir(tmp_path / "state")
    assert not (tmp_path / "state").exists()
