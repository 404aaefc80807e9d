"""The ``exbe`` command: an Invoke Program over exbe's task collection, reading ``exbe.yaml``.

Invoke's Program, given a bundled namespace, never loads a project config file (``parse_collection`` ends in
"TODO: load project conf"), silently ignores a ``-f`` file that does not exist, and reads its runtime-file variable
from ``INVOKE_RUNTIME_CONFIG``. :class:`ExbeProgram` loads ``exbe.yaml`` (or ``.yml``/``.json``) from the working
directory, refuses a missing ``-f`` file, reads ``EXBE_RUNTIME_CONFIG`` (and not ``INVOKE_RUNTIME_CONFIG``), and
turns any :class:`ExbeError` into its one line on stderr and its exit code. The ``EXBE_<SETTING>`` variables are
read when a task runs (:func:`exbe.config.load`), as under plain ``invoke``.

Help fits exbe: of Invoke's core flags only those that mean something here are offered (``--help``, ``--version``,
``--list``, ``-f``, ``--complete``, ``--print-completion-script``); the others configure Invoke's local command runner
(``-R/--dry``, ``--pty``, ``-e``, ``-w``, a sudo prompt...), which exbe never uses, so they are refused like any unknown
option. Flags show what they take (``--days=INT``, ``--junit=FILE``), ``exbe <task> --help`` works for every task
(``render`` included), and an unknown option or task is one line and exit code 2.

The collection (``exbe.tasks.ns``) is imported on first use, so ``import exbe.main`` stays cheap.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import exbe.lean_imports  # noqa: F401 - first: Invoke imported without importlib.metadata (issue 26)

# isort: split
from invoke.collection import Collection
from invoke.exceptions import Exit, ParseError
from invoke.parser.argument import Argument
from invoke.parser.context import ParserContext
from invoke.parser.parser import ParseResult
from invoke.program import Program
from invoke.util import Lexicon  # type: ignore[attr-defined]  # re-exported from its vendored lexicon

import exbe
from exbe import yaml_only
from exbe.config import ExbeConfig
from exbe.errors import ConfigError, ExbeError

yaml_only.install()  # before any configuration file is read: none is ever run as Python

RUNTIME_CONFIG_VAR = "EXBE_RUNTIME_CONFIG"

#: Invoke's core flags that exbe offers; the rest drive Invoke's local command runner, which exbe never uses.
CORE_FLAGS = ("help", "version", "list", "config", "complete", "print-completion-script")
#: What a flag takes, as help shows it (Invoke would say STRING for all of them).
CORE_METAVARS = {"config": "FILE", "help": "TASK", "list": "", "print-completion-script": "SHELL"}
HELP_TOKENS = ("-h", "--help")
_NO_IDEA = re.compile(r"No idea what '(.*)' is!")
_MISSING = re.compile(r"'(.+)' did not receive required positional arguments: '(.+)'")


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

    def core_args(self) -> list[Argument]:
        return [arg for arg in super().core_args() if arg.name in CORE_FLAGS]

    @property
    def args(self) -> Lexicon:
        """The core flags given; the ones exbe does not offer read as their defaults (Program's own code reads
        them)."""
        given: Lexicon = self.core[0].args
        for arg in super().core_args():
            if arg.name not in given:
                given[arg.name] = arg
        return given

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

    def create_config(self) -> None:
        # Invoke reads /etc/exbe.yaml and ~/.exbe.yaml here: a bad one is one line naming it, exit code 2 (a file
        # that cannot be read, or is not YAML or JSON, is a ConfigError of exbe.config_files)
        with _as_exit():
            super().create_config()

    def parse_collection(self) -> None:
        yaml_only.refuse_python_flag(self.args.config.value)
        super().parse_collection()
        with _as_exit():
            self.config.set_project_location(os.getcwd())
            self.config.load_project()

    def update_config(self, merge: bool = True) -> None:
        flag = self.args.config.value
        path = flag or os.environ.get(RUNTIME_CONFIG_VAR)
        with _as_exit():
            super().update_config(merge=False)
            if not flag:  # Invoke has read INVOKE_RUNTIME_CONFIG; the exbe command reads EXBE_RUNTIME_CONFIG only
                self.config.set_runtime_path(Path(path) if path else None)
                if path:
                    self.config.load_runtime(merge=False)
            if path and not self.config._runtime_found:
                raise ConfigError(f"config file {path!r} not found")
        if merge:
            self.config.merge()

    def parse_tasks(self) -> None:
        """A command line Invoke cannot parse is a usage error: one line, exit code 2, as documented (Invoke uses 1).
        ``exbe <task> --help`` asks for the task's help, also where the task takes a positional value (``render``)."""
        tokens = self.core.unparsed
        wanted = next((t for t in tokens if t in self.collection.task_names), None)
        if wanted and any(t in HELP_TOKENS for t in tokens):  # help, whatever else the line says
            self.parser = self._make_parser()
            self.tasks = ParseResult()
            self.args.help.value = wanted
            return
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise Exit(f"exbe: {unknown_input(exc)}", 2) from None
        except ValueError as exc:  # Invoke converts a flag whose default is a number while parsing (int("x"))
            shown = f" (`exbe {wanted} --help` gives each flag's type)" if wanted else ""
            raise Exit(f"exbe: a flag that takes a whole number got text: {exc}{shown}", 2) from None

    def print_help(self) -> None:
        print(f"Usage: {self.binary} [-f FILE] <task> [--options]   ({self.binary} <task> --help for a task's options)")
        print("")
        print("Options:")
        print("")
        self.print_columns(help_rows(self.initial_context, CORE_METAVARS))
        self.list_tasks()

    def print_task_help(self, name: str) -> None:
        task = self.collection[name]
        rows = help_rows(self.parser.contexts[name], getattr(task, "metavars", {}))
        positional = " ".join(f"[{arg.name.upper()}]" for arg in self.parser.contexts[name].positional_args)
        print(f"Usage: {self.binary} [-f FILE] {name} {positional + ' ' if positional else ''}[--options]")
        print("")
        for line in (inspect.getdoc(task) or "").splitlines():
            print(f"{self.leading_indent}{line}" if line.strip() else "")
        print("")
        print("Options:")
        if rows:
            self.print_columns(rows)
        else:
            print(f"{self.leading_indent}none")

    def execute(self) -> None:
        with _as_exit():
            super().execute()


def unknown_input(exc: ParseError) -> str:
    """Invoke's parse error as exbe's one line: which option or task is unknown and where to look."""
    missing = _MISSING.search(str(exc))
    if missing:
        task, what = missing.groups()
        return f"{task} needs a {what.replace('_', ' ')}: `exbe {task} --help` says which"
    found = _NO_IDEA.search(str(exc))
    if not found:
        return str(exc)
    token = found.group(1)
    task = exc.context.name if exc.context is not None and exc.context.name else None
    if task:
        return f"{task} has no option {token!r}; `exbe {task} --help` lists its options"
    if token.startswith("-"):
        return f"unknown option {token!r}; `exbe --help` lists exbe's options, `exbe <task> --help` a task's"
    return f"unknown task {token!r}; `exbe --list` lists the tasks"


def help_rows(context: ParserContext, metavars: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``(flags, help)`` per option of ``context``, each flag with what it takes: ``metavars`` by option name, else
    INT for whole numbers and TEXT for other values (a repeatable flag too); an optional value in brackets."""
    unique = {id(arg): arg for arg in context.flags.values() if not arg.positional}
    rows: list[tuple[str, str | None]] = []
    for arg in sorted(unique.values(), key=lambda a: a.names[0]):
        metavar = metavars[arg.names[0]] if arg.names[0] in metavars else \
            {int: "INT", str: "TEXT", list: "TEXT"}.get(arg.kind, "")
        flags = []
        for name in sorted(arg.names, key=len):
            short = len(name) == 1
            flag = f"-{name}" if short else f"--{name}"
            if metavar:
                value = f" {metavar}" if short else f"={metavar}"
                flag += (f" [{metavar}]" if short else f"[{value}]") if arg.optional else value
            flags.append(flag)
        rows.append((", ".join(flags), arg.help))
    return rows


def make_program(namespace: Collection | None = None) -> ExbeProgram:
    """The exbe Program; tests pass a small collection, the installed command uses ``exbe.tasks.ns``."""
    return ExbeProgram(namespace=namespace)


program = make_program()


def main() -> None:
    """Entry point of the ``exbe`` console script."""
    try:
        program.run()
    except BrokenPipeError:  # `exbe --help | head`: the reader left; no traceback (Python's documented remedy)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
