"""Writing exbe's files -- reports (JUnit, JSON, metrics, HTML), step summaries, hand-run scripts -- without following
a link.

A report path is often in a shared folder (a pipeline's workspace, a collector's directory). A symbolic link planted
there under the report's name would make exbe write where the link points: over another file of the agent, or into
a file a collector trusts. So a path whose last component is a link (or a Windows junction) is refused, one line
naming it; when the admin means the link's target, they pass the target's own path, which is a plain file. Files
are written through a temporary file beside the target (created by exbe alone: ``O_EXCL``, and ``O_NOFOLLOW`` where
the system has it) and a rename, which replaces a link that appears meanwhile rather than writing through it, and
leaves either the old file or the whole new one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

from .errors import ConfigError
from .redaction import visible_controls


def is_link(path: Path | str) -> bool:
    """A symbolic link, or on Windows a junction (``os.path.isjunction``, Python 3.12; ``lstat``'s reparse tag
    before)."""
    if os.path.islink(path):
        return True
    isjunction = getattr(os.path, "isjunction", None)
    if isjunction is not None:
        return bool(isjunction(path))
    try:
        return bool(getattr(os.lstat(path), "st_reparse_tag", 0))
    except OSError:
        return False


class WriteRefused(ConfigError, OSError):
    """A path exbe will not write: a link, or something else than a regular file. A usage error (exit code 2) and an
    :class:`OSError` (``errno`` ELOOP, the message as ``strerror``), so a writer that maps OSErrors says it too."""

    def __init__(self, what: str, path: Path, problem: str) -> None:
        shown = repr(visible_controls(str(path), keep=""))
        message = f"{what} {shown} {problem}"
        ConfigError.__init__(self, message)
        self.errno = errno.ELOOP
        self.strerror = message
        self.filename = str(path)


def refuse_link(path: Path, what: str) -> None:
    """:class:`WriteRefused` when ``path`` is a link (its target named) or exists as something else than a regular
    file; ``what`` names it in the message (``--junit``, ``the JSON report``)."""
    if is_link(path):
        try:
            target = repr(visible_controls(os.readlink(path), keep=""))
        except OSError:
            target = "elsewhere"
        raise WriteRefused(what, path, f"is a symbolic link (to {target}): exbe does not write through links; pass "
                                       "the path of the file itself, or another path")
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(found.st_mode):
        raise WriteRefused(what, path, "exists and is not a regular file; pass the path of a file")


def write_atomically(path: Path, data: bytes, what: str) -> None:
    """``data`` into ``path`` whole or not at all, never through a link (:func:`refuse_link`); its folder is created
    when missing. Raises :class:`OSError` (:class:`WriteRefused` among them) and leaves no temporary file behind."""
    refuse_link(path, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary: Path | None = None
    try:
        temporary, descriptor = _temporary_beside(path)
        with open(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink()
        raise


def check_writable(path: Path, what: str) -> None:
    """That :func:`write_atomically` will be able to write ``path``, checked before a run and leaving nothing behind:
    its folder is created when missing, a temporary file is created beside it and removed, and a file already there
    is opened for appending (Windows will not replace a read-only file). ``path`` itself is never created: a reader
    waiting for the report (a pipeline step, a collector) would see an empty file come and go. Raises
    :class:`OSError` (:class:`WriteRefused` among them)."""
    refuse_link(path, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary, descriptor = _temporary_beside(path)
    os.close(descriptor)
    temporary.unlink()
    if path.exists():
        with open(path, "ab"):
            pass


def _temporary_beside(path: Path) -> tuple[Path, int]:
    """A new hidden file in ``path``'s folder, created by exbe alone (``O_EXCL``, never through a link) with the
    permissions a plain write would give (0666 less umask), and its open descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    while True:
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return candidate, os.open(candidate, flags, 0o666)
        except FileExistsError:
            continue
