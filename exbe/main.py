"""The ``exbe`` command: an Invoke Program over exbe's task collection, reading ``exbe.yaml``.

Invoke's Program, given a bundled namespace, never loads a project config file (``parse_collection`` ends in
"TODO: load project conf"), silently ignores a ``-f`` file that does not exist, and reads its runtime-file variable
from ``INVOKE_RUNTIME_CONFIG``. :class:`ExbeProgram` loads ``exbe.yaml`` (or ``.yml``/``.json``) from the working
directory, refuses a missing ``-f`` file, reads ``EXBE_RUNTIME_CONFIG`` (and not ``INVOKE_RUNTIME_CONFIG``), and
turns any :class:`ExbeError` into its one line on stderr and its exit code. The ``EXBE_<SETTING>`` variables are
read when a task runs (:func:`exbe.config.load`), as under plain ``invoke``.

The collection (``exbe.tasks.ns``) is imported on first use, so ``import exbe.main`` stays cheap.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.config import yaml  # type: ignore[attr-defined]  # Invoke's own YAML, whose errors its loaders raise
from invoke.exceptions import Exit, ParseError
from invoke.program import Program

import exbe
from exbe.config import ExbeConfig
from exbe.errors import ConfigError, ExbeError

RUNTIME_CONFIG_VAR = "EXBE_RUNTIME_CONFIG"


@contextlib.contextmanager
def _as_exit() -> Iterator[None]:
    """exbe's errors as Invoke's Exit: Program.run prints the message (no traceback) and exits with the code."""
    try:
        yield
    except ExbeError as err:
        raise Exit(str(err), err.exit_code) from None


class ExbeProgram(Program):
    """Invoke's Program with the configuration gaps of bundled namespaces closed."""

    _namespace: Collection | None

    def __init__(self, namespace: Collection | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("name", "exbe")
        kwargs.setdefault("binary", "exbe")
        kwargs.setdefault("version", exbe.__version__)
        kwargs.setdefault("config_class", ExbeConfig)
        super().__init__(namespace=namespace, **kwargs)

    # Program treats ``namespace is None`` as "look for tasks.py"; exbe always has its own collection.
    @property
    def namespace(self) -> Collection:
        if self._namespace is None:
            from exbe.tasks import ns

            self._namespace = ns
        return self._namespace

    @namespace.setter
    def namespace(self, value: Collection | None) -> None:
        self._namespace = value

    def parse_collection(self) -> None:
        super().parse_collection()
        with _as_exit():
            self.config.set_project_location(os.getcwd())
            try:
                self.config.load_project()
            except (OSError, yaml.YAMLError, ValueError) as exc:
                raise ConfigError(f"cannot read exbe.yaml in {os.getcwd()}: {' '.join(str(exc).split())}") from None

    def update_config(self, merge: bool = True) -> None:
        flag = self.args.config.value
        path = flag or os.environ.get(RUNTIME_CONFIG_VAR)
        with _as_exit():
            try:
                super().update_config(merge=False)
                if not flag:  # Invoke has read INVOKE_RUNTIME_CONFIG; the exbe command reads EXBE_RUNTIME_CONFIG only
                    self.config.set_runtime_path(Path(path) if path else None)
                    if path:
                        self.config.load_runtime(merge=False)
            except (yaml.YAMLError, ValueError) as exc:
                raise ConfigError(f"cannot read config file {path!r}: {' '.join(str(exc).split())}") from None
            if path and not self.config._runtime_found:
                raise ConfigError(f"config file {path!r} not found")
        if merge:
            self.config.merge()

    def parse_tasks(self) -> None:
        """A command line Invoke cannot parse is a usage error: exit code 2, as documented (Invoke uses 1)."""
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise Exit(f"exbe: {exc}", 2) from None

    def execute(self) -> None:
        with _as_exit():
            super().execute()


def make_program(namespace: Collection | None = None) -> ExbeProgram:
    """The exbe Program; tests pass a small collection, the installed command uses ``exbe.tasks.ns``."""
    return ExbeProgram(namespace=namespace)


program = make_program()


def main() -> None:
    """Entry point of the ``exbe`` console script."""
    program.run()
