"""No Python file is ever run as configuration, under either entry point.

Invoke's configuration loader reads ``.py`` files beside ``.yaml`` ones and runs them (``exbe.py`` or ``invoke.py`` in
the working directory, ``~/.exbe.py``, ``/etc/exbe.py``, and a ``-f x.py`` file): whoever can drop a file where a
pipeline runs exbe would run code with the pipeline's credentials. :func:`install` replaces that loader: a ``-f``
Python file is one line and exit code 2; any other Python configuration file is ignored, with a warning saying so.

The ``exbe`` command installs it before it builds its configuration; plain ``invoke`` installs it when it loads
``tasks.py`` (which imports :mod:`exbe.tasks`), which Invoke does after its system and user files
(``/etc/invoke.py``, ``~/.invoke.py``) and before the project and ``-f`` files: those two are out of exbe's reach
under plain ``invoke``.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

from invoke.config import Config
from invoke.exceptions import Exit


def _refuse_python(config: Config, path: str) -> dict[str, Any]:
    name = os.path.basename(path)
    if path == getattr(config, "_runtime_path", None):
        refuse_python_flag(path)
    if not os.path.exists(path):
        raise OSError(errno.ENOENT, "no such file", path)  # Invoke tries every suffix: the usual case
    print(f"exbe: warning: {path} ignored: exbe never runs a Python file as configuration; put the settings in "
          f"{os.path.splitext(name)[0]}.yaml", file=sys.stderr)
    raise OSError(errno.ENOENT, "a Python configuration file is not read", path)  # Invoke: as if absent


def refuse_python_flag(path: str | None) -> None:
    """``-f x.py``: one line and exit code 2, whatever the task (``--list`` included)."""
    if path and path.lower().endswith(".py"):
        raise Exit(f"exbe: -f {path}: exbe reads configuration from YAML or JSON only, never from Python; write it "
                   f"as {os.path.splitext(os.path.basename(path))[0]}.yaml (docs/configuration.md)", code=2)


def install() -> None:
    """Make every Invoke Config in this process (exbe's included) refuse Python configuration files."""
    Config._load_py = _refuse_python  # type: ignore[assignment, method-assign]
