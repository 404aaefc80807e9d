"""Render exbe's PowerShell templates into step scripts (WinRM) and hand-run scripts (Exchange Management Shell).

The templates under ``ps_templates/`` are fixed text. Jinja chooses which fixed text goes in (blocks, includes)
and prints the step's registered name and one value: the one-line JSON input document inside the contract's
here-string. So a rendered
script is recognised by re-rendering it (:func:`is_exbe_rendering`), and no value can change the code around it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import stat
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import meta
from jinja2.loaders import split_template_path
from jinja2.sandbox import ImmutableSandboxedEnvironment

from . import __version__, contract, steps
from .contract import ListOf, Schema
from .errors import ConfigError
from .redaction import visible_controls
from .safe_write import is_link
from .wire_form import UnsupportedScript, compact, prune_functions

if TYPE_CHECKING:
    from .model import Settings

log = logging.getLogger("exbe.render")


def _template_dir() -> Path:
    """Package data when installed (``exbe/ps_templates``), else ``ps_templates/`` at the top of the checkout."""
    packaged = Path(__file__).parent / "ps_templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "ps_templates"


TEMPLATE_DIR: Path = _template_dir()


#: Tasks of the hand-run script (``exbe render <task>``).
MANUAL_TASKS: tuple[str, ...] = ("renew", "verify", "trust", "bind", "cleanup")

#: The input of every hand-run script, built by :func:`manual_input` from the settings and rule constants the
#: pipeline decides with, so the script judges by the same numbers. ``thumbprint`` null means "the selected Back
#: End certificate"; ``days``, ``force``, ``trust`` and ``smtp`` matter to renew only.
MANUAL_INPUT: Schema = {
    "backend_site": (str,), "frontend_site": (str,), "friendly_name": (str,), "thumbprint": (str, type(None)),
    "days": (int,), "warn_days": (int,), "fail_days": (int,), "force": (bool,), "trust": (bool,), "smtp": (str,),
    "min_key_size": (int,), "new_key_sizes": (ListOf(int),), "weak_signatures": (ListOf(str),),
    "auth_subject": (str,),
}

MANUAL_CHOICES = {"smtp": ("keep", "move")}


def manual_input(settings: Settings, *, thumbprint: str | None = None) -> dict[str, Any]:
    """The hand-run script's input document: the operator's settings and the rule constants of the Python
    decisions (``exbe.selection``, their one place), so the script carries no thresholds of its own."""
    from . import selection  # only the hand-run script needs exbe's decisions; step scripts render without them

    return {
        "backend_site": settings.backend_site,
        "frontend_site": settings.frontend_site,
        "friendly_name": settings.friendly_name,
        "thumbprint": thumbprint,
        "days": settings.days,
        "warn_days": settings.warn_days,
        "fail_days": settings.fail_days,
        "force": settings.force,
        "trust": settings.trust,
        "smtp": settings.smtp,
        "min_key_size": selection.MIN_KEY_SIZE,
        "new_key_sizes": list(selection.NEW_EXCHANGE_KEY_SIZES),
        "weak_signatures": list(selection.WEAK_SIGNATURES),
        "auth_subject": selection.AUTH_SUBJECT,
    }


class TemplateDirError(ConfigError, ValueError):
    """The template override directory does not exist or is not a directory (exit code 2, like any ConfigError)."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(f"template override directory {str(path)!r} {problem}; set exbe.defaults.template_dir to an "
                         "existing directory of .ps1.j2 templates, or remove it to use the shipped templates")


def check_template_dir(path: Path | str) -> Path:
    """``path`` as a template override directory, or :class:`TemplateDirError` (for configuration loading too): it
    must exist, be a directory, and hold no symbolic link (or junction) and no template Jinja cannot parse. The path
    the admin names may itself be a link: it is resolved once, and nothing under it is followed."""
    path = Path(path)
    if not path.exists():
        raise TemplateDirError(path, "does not exist")
    if not path.is_dir():
        raise TemplateDirError(path, "is not a directory")
    real = Path(os.path.realpath(path))
    for folder, directories, files in os.walk(real, followlinks=False):
        for name in [*directories, *files]:
            entry = Path(folder, name)
            if is_link(entry):
                raise TemplateDirError(path, f"holds {_shown_name(real, entry)}, a link: override templates are read "
                                             "only as regular files inside the directory; replace the link by a copy")
            if name.endswith(".j2") and name in files:
                try:
                    _PARSER.parse(_read_override(real, entry.relative_to(real).parts, path))
                except jinja2.TemplateSyntaxError as exc:
                    raise TemplateDirError(path, f"holds {_shown_name(real, entry)}, which Jinja cannot parse "
                                                 f"(line {exc.lineno}: {visible_controls(exc.message or '')})") \
                        from None
    check_templates(path)
    return path


#: The largest override template read (the biggest shipped one is under 30 KB).
MAX_TEMPLATE_BYTES = 1024 * 1024


def _shown_name(directory: Path, entry: Path) -> str:
    return repr(visible_controls(entry.relative_to(directory).as_posix()))


def _read_override(directory: Path, pieces: tuple[str, ...] | list[str], shown: Path) -> str:
    """The text of the template ``pieces`` under ``directory``, read without following any link: each component is
    checked with ``lstat``, the file opened with ``O_NOFOLLOW`` where the system has it, and the open file must be
    the one checked (same device and inode); a regular file with no other hard link, within
    :data:`MAX_TEMPLATE_BYTES`. :class:`FileNotFoundError` when there is no such template."""
    path = directory
    checked = None
    for piece in pieces:
        path = path / piece
        checked = os.lstat(path)  # FileNotFoundError: no such template here
        if is_link(path):
            raise TemplateDirError(shown, f"holds {_shown_name(directory, path)}, a link: override templates are read "
                                          "only as regular files inside the directory; replace the link by a copy")
    assert checked is not None
    name = _shown_name(directory, path)
    if not stat.S_ISREG(checked.st_mode):
        if stat.S_ISDIR(checked.st_mode):
            raise FileNotFoundError(path)
        raise TemplateDirError(shown, f"holds {name}, which is not a regular file")
    if checked.st_nlink > 1:
        raise TemplateDirError(shown, f"holds {name}, a file with other hard links: override templates are read only "
                                      "as files of their own; replace it by a copy")
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(descriptor, "rb") as handle:
        opened = os.fstat(handle.fileno())
        if (opened.st_dev, opened.st_ino) != (checked.st_dev, checked.st_ino):
            raise TemplateDirError(shown, f"holds {name}, which changed while it was read")
        data = handle.read(MAX_TEMPLATE_BYTES + 1)
    if len(data) > MAX_TEMPLATE_BYTES:
        raise TemplateDirError(shown, f"holds {name}, larger than {MAX_TEMPLATE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise TemplateDirError(shown, f"holds {name}, which is not UTF-8 text") from None


class _OverrideLoader(jinja2.FileSystemLoader):
    """The override directory first, then the shipped templates. From the override directory only ``*.j2`` names
    are read, each by :func:`_read_override`: no link is followed, so no file of the agent outside the directory
    (``/proc/self/environ``, a key, a secret file) can become part of a script."""

    def __init__(self, override: Path, shown: Path) -> None:
        super().__init__([str(override), str(TEMPLATE_DIR)])
        self.override = override
        self.shown = shown
        self.shipped = jinja2.FileSystemLoader(str(TEMPLATE_DIR))

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        pieces = split_template_path(template)  # refuses '..'
        if template.endswith(".j2"):
            try:
                source = _read_override(self.override, pieces, self.shown)
            except FileNotFoundError:
                pass
            else:
                path = os.path.join(self.override, *pieces)
                stamp = os.lstat(path).st_mtime_ns

                def uptodate() -> bool:
                    try:
                        return os.lstat(path).st_mtime_ns == stamp
                    except OSError:
                        return False

                return source, path, uptodate
        return self.shipped.get_source(environment, template)


@functools.lru_cache(maxsize=8)
def _environment(override: str | None, shown: str | None) -> jinja2.Environment:
    """A sandboxed environment for every rendering, shipped templates included: a template reads the variables it
    is given and the templates it includes, and cannot reach Python (attributes starting with ``_``, ``mro``,
    ``__globals__``, ``str.format`` on arbitrary objects, mutating methods). The shipped templates need nothing the
    sandbox forbids, so one kind of environment serves both and an override cannot do more than a shipped one. An
    override directory is read through :class:`_OverrideLoader` (no link followed, ``*.j2`` only)."""
    loader = (jinja2.FileSystemLoader([str(TEMPLATE_DIR)]) if override is None or shown is None
              else _OverrideLoader(Path(override), Path(shown)))
    return ImmutableSandboxedEnvironment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        newline_sequence="\n",
        auto_reload=True,
    )


def _env(override_dir: Path | None) -> jinja2.Environment:
    """Templates in ``override_dir`` win over the shipped ones, name by name; a missing directory is an error
    (:class:`TemplateDirError`), never silently the shipped templates."""
    if override_dir is None:
        return _environment(None, None)
    if not override_dir.is_dir():
        check_template_dir(override_dir)  # says what is wrong
    return _environment(os.path.realpath(override_dir), str(override_dir))


_PARSER = jinja2.Environment()  # parsing only: finds extends/include names, renders nothing


@functools.lru_cache(maxsize=64)
def _references(source: str) -> tuple[str, ...]:
    """Templates a source extends or includes by a literal name (the step include is dynamic: render_step names it)."""
    return tuple(ref for ref in meta.find_referenced_templates(_PARSER.parse(source)) if ref is not None)


def _sources(env: jinja2.Environment, names: list[str]) -> list[tuple[str, str]]:
    """Every template a rendering uses, with its source: the roots and what they extend or include by name."""
    assert env.loader is not None
    seen: dict[str, str] = {}
    pending = list(names)
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        source, _, _ = env.loader.get_source(env, name)
        seen[name] = source
        pending.extend(_references(source))
    return sorted(seen.items())


def _hash_of(sources: list[tuple[str, str]]) -> str:
    """First 12 hex digits of sha256 over the names and sources of the templates used."""
    digest = hashlib.sha256()
    for name, source in sources:
        digest.update(name.encode("utf-8") + b"\0" + source.encode("utf-8") + b"\0")
    return digest.hexdigest()[:12]


def render_step(step: str, data: Mapping[str, Any], *, override_dir: Path | None = None,
                readable: bool = False) -> str:
    """The script for one WinRM step; it writes one result envelope (contract.py) to its output stream.

    The default is the wire form exbe sends (:func:`compact`); ``readable`` keeps comments and indentation. Both
    carry only the functions the step uses (:func:`prune_functions`)."""
    steps.get(step).check_input(data)
    return _step_rendering(step, override_dir).script(contract.encode_input(data), readable=readable)


def _step_rendering(step: str, override_dir: Path | None) -> _Rendering:
    declared = steps.get(step)
    return _rendering(_env(override_dir), step, ("_base.ps1.j2", declared.template),
                      (("step", step), ("mutating", declared.mutating)), wire=True)


def _manual_rendering(task: str, override_dir: Path | None) -> _Rendering:
    return _rendering(_env(override_dir), f"manual_{task}", (f"manual_{task}.ps1.j2",),
                      (("step", f"manual_{task}"),), wire=False)


def check_templates(override_dir: Path) -> None:
    """Every step script and hand-run script rendered once with ``override_dir`` (the renderings are cached, so a run
    pays nothing more): a template Jinja refuses, that names an undefined variable or that misplaces the input
    document is a :class:`TemplateDirError` before any server is contacted, not a failure on each of them."""
    try:
        for step in steps.REGISTRY:
            _step_rendering(step, override_dir)
        for task in MANUAL_TASKS:
            _manual_rendering(task, override_dir)
    except TemplateDirError:
        raise
    except (jinja2.TemplateError, ValueError) as exc:
        where = f" ({exc.name}, line {exc.lineno})" if isinstance(exc, jinja2.TemplateSyntaxError) else ""
        raise TemplateDirError(override_dir, f"holds a template exbe cannot render{where}: "
                                             f"{visible_controls(' '.join(str(exc).split()))[:200]}") from None


def render_manual(task: str, data: Mapping[str, Any], *, override_dir: Path | None = None) -> str:
    """The one script an administrator runs in the Exchange Management Shell for ``task`` (supports -WhatIf)."""
    if task not in MANUAL_TASKS:
        raise ValueError(f"unknown task {task!r} for a hand-run script; known: {', '.join(MANUAL_TASKS)}")
    contract.validate(f"manual {task} input", data, MANUAL_INPUT, choices=MANUAL_CHOICES)
    if override_dir is not None:
        check_template_dir(override_dir)  # an admin's one script: every override checked, one line when refused
    return _manual_rendering(task, override_dir).script(contract.encode_input(data), readable=True)


def is_exbe_rendering(text: str) -> tuple[bool, str]:
    """Whether ``text`` is exactly what the shipped templates render for its own step and input document, in the
    wire form exbe sends or the readable form."""
    try:
        step, data = contract.parse_script(text)
        expected = {render_step(step, data), render_step(step, data, readable=True)}
    except (ValueError, jinja2.TemplateError) as exc:  # ContractError is a ValueError
        return False, str(exc)
    if text not in expected:
        return False, f"the text differs from exbe {__version__}'s {step} template"
    return True, f"exbe {__version__} {step} step"


def to_file_bytes(text: str) -> bytes:
    """A script as Windows PowerShell 5.1 reads it correctly: UTF-8 with BOM (without one it assumes ANSI)."""
    return b"\xef\xbb\xbf" + text.encode("utf-8")


# -- rendering once per template ---------------------------------------------------------------------------------------
#: Rendered in place of the input document, then replaced by it: the code around the document is rendered, pruned
#: and compacted once per template and process, and no value can change it (nor which functions it keeps).
_PLACEHOLDER_BLOCK = f'{contract.INPUT_OPEN}\n{{"exbe_input_document":"placeholder"}}\n{contract.INPUT_CLOSE}\n'


@dataclasses.dataclass(frozen=True)
class _Rendering:
    """One template's text before and after its input document, readable and wire form, and its header line."""

    header: str
    readable: tuple[str, str]
    wire: tuple[str, str]

    def script(self, document: str, *, readable: bool) -> str:
        before, after = self.readable if readable else self.wire
        return f"{self.header}\n{before}{contract.INPUT_OPEN}\n{document}\n{contract.INPUT_CLOSE}\n{after}"


@dataclasses.dataclass(frozen=True)
class _Cached:
    files: tuple[str, ...]  # every path that could supply one of the templates used
    signature: tuple[Any, ...]
    rendering: _Rendering


_CACHE: dict[tuple[Any, ...], _Cached] = {}
_KEY_LOCKS: dict[tuple[Any, ...], threading.Lock] = {}
_KEY_LOCKS_LOCK = threading.Lock()


def _rendering(env: jinja2.Environment, header_step: str, roots: tuple[str, ...],
               context: tuple[tuple[str, Any], ...], *, wire: bool) -> _Rendering:
    """The rendering of ``roots`` with ``context``, cached (with its wire form when ``wire``: hand-run scripts are
    only read); rendered again when a template file it used (or one that would now shadow it in an override
    directory) changed on disk. One thread renders while the others wait for it: a fleet's first servers all need
    the same scripts at once."""
    assert isinstance(env.loader, jinja2.FileSystemLoader)
    key = (tuple(env.loader.searchpath), header_step, roots, context, wire)
    with _KEY_LOCKS_LOCK:
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:
        cached = _CACHE.get(key)
        if cached is not None and _signature(cached.files) == cached.signature:
            return cached.rendering
        sources = _sources(env, list(roots))
        body = env.get_template(roots[0]).render({**dict(context), "input_document": "\0"}).replace(
            f"{contract.INPUT_OPEN}\n\0\n{contract.INPUT_CLOSE}\n", _PLACEHOLDER_BLOCK)
        if body.count(_PLACEHOLDER_BLOCK) != 1 or "\0" in body:
            raise ValueError(f"template {roots[0]} must print the input document exactly once, alone on its line "
                             f"in the contract's here-string ({contract.INPUT_OPEN!r} ... {contract.INPUT_CLOSE!r})")
        readable = prune_functions(body)
        if _PLACEHOLDER_BLOCK not in readable:
            raise ValueError(f"template {roots[0]} must carry the input document outside every function")
        compacted = readable
        if wire:
            try:
                compacted = compact(readable)
            except UnsupportedScript as exc:
                log.debug("the %s script is sent as rendered: %s", header_step, exc)
        rendering = _Rendering(contract.header(header_step, __version__, _hash_of(sources)),
                               _around_input(readable), _around_input(compacted))
        files = tuple(os.path.join(directory, name) for name, _ in sources for directory in env.loader.searchpath)
        _CACHE[key] = _Cached(files, _signature(files), rendering)
        return rendering


def _signature(files: tuple[str, ...]) -> tuple[Any, ...]:
    signature: list[Any] = []
    for path in files:
        try:
            stat = os.stat(path)
        except OSError:
            signature.append(None)
        else:
            signature.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(signature)


def _around_input(body: str) -> tuple[str, str]:
    before, _, after = body.partition(_PLACEHOLDER_BLOCK)
    return before, after
