"""Owner-only files and directories for the sandbox's secrets (issue 13, item 6).

The sandbox writes a password (``credentials.env``, the NTLM account file), private keys (the WinRM HTTPS key, the
CA key, host state with the keys of its certificates, the 444 listener's PEM files) and caches keys between runs.
Each file is created with mode 0600 in the ``open`` call itself, never chmodded afterwards, so there is no moment at
which another user could open it; directories holding them are created 0700.

On Windows POSIX modes mean nothing to NTFS: a new file takes the ACL its directory passes on. Python applies an
access-control list (the current user and Administrators only, inherited by what is created inside) to a directory
``os.mkdir`` creates with mode 0o700, from 3.10.15, 3.11.10, 3.12.4 and 3.13 (CVE-2024-4030, python/cpython#118486);
so on Windows the sandbox refuses an older Python, and a directory that already existed keeps the ACL it has
(docs/security.md says to give the sandbox a new one).
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text`` (UTF-8), the file owner-only from its creation.

    The content goes to a temporary name created 0600 (``O_EXCL``: never an existing file, nor a link planted
    there) and is renamed over ``path``, so a reader sees the old file or the new one, never half of one; the name
    carries the process and thread, as several writers (test workers filling one key cache) may race."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags, FILE_MODE)
    except FileExistsError:  # left by a crashed writer that had our pid and thread id: never written through
        tmp.unlink()
        fd = os.open(tmp, flags, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter: created 0700 (parents as the umask gives them); an
    existing one of ours is narrowed to 0700; one owned by another user, or a symbolic link, is refused
    (:class:`PermissionError`): whoever controls it could read or replace what goes in."""
    path = Path(path)
    if sys.platform == "win32" and not owner_only_on_windows(sys.version_info):
        raise PermissionError(f"{path}: this Python ({sys.version.split()[0]}) cannot make an owner-only directory "
                              "on Windows; use Python 3.10.15, 3.11.10, 3.12.4, 3.13 or later")
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{path} is not a directory of its own (a symbolic link or a file)")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user (uid {info.st_uid})")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, DIR_MODE)
    return path


def owner_only_on_windows(version: tuple[int, ...]) -> bool:
    """Whether this Python's ``os.mkdir(mode=0o700)`` gives a Windows directory an owner-only ACL."""
    fixed = {(3, 10): 15, (3, 11): 10, (3, 12): 4}
    major_minor, micro = tuple(version[:2]), version[2]
    return major_minor >= (3, 13) or (major_minor in fixed and micro >= fixed[major_minor])
