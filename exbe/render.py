"""Render exbe's PowerShell templates into step scripts (WinRM) and hand-run scripts (Exchange Management Shell).

The templates under ``ps_templates/`` are fixed text. Jinja chooses which fixed text goes in (blocks, includes)
and prints the step's registered name and one value: the one-line JSON input document inside the contract's
here-string. So a rendered
script is recognised by re-rendering it (:func:`is_exbe_rendering`), and no value can change the code around it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from . import __version__, contract, steps
from .contract import ListOf, Schema
from .errors import ConfigError

if TYPE_CHECKING:
    from .model import Settings


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
    """``path`` as a template override directory, or :class:`TemplateDirError` (for configuration loading too)."""
    path = Path(path)
    if not path.exists():
        raise TemplateDirError(path, "does not exist")
    if not path.is_dir():
        raise TemplateDirError(path, "is not a directory")
    return path


@functools.lru_cache(maxsize=8)
def _environment(search_path: tuple[str, ...]) -> jinja2.Environment:
    """A sandboxed environment for every rendering, shipped templates included: a template reads the variables it
    is given and the templates it includes, and cannot reach Python (attributes starting with ``_``, ``mro``,
    ``__globals__``, ``str.format`` on arbitrary objects, mutating methods). The shipped templates need nothing the
    sandbox forbids, so one kind of environment serves both and an override cannot do more than a shipped one."""
    return ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(list(search_path)),
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
        return _environment((str(TEMPLATE_DIR),))
    return _environment((str(check_template_dir(override_dir)), str(TEMPLATE_DIR)))


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


def template_hash(env: jinja2.Environment, names: list[str]) -> str:
    """First 12 hex digits of sha256 over the names and sources of the templates used."""
    digest = hashlib.sha256()
    for name, source in _sources(env, names):
        digest.update(name.encode("utf-8") + b"\0" + source.encode("utf-8") + b"\0")
    return digest.hexdigest()[:12]


def _render(env: jinja2.Environment, header_step: str, roots: list[str], context: dict[str, Any]) -> str:
    body = env.get_template(roots[0]).render(context)
    return contract.header(header_step, __version__, template_hash(env, roots)) + "\n" + body


def render_step(step: str, data: Mapping[str, Any], *, override_dir: Path | None = None) -> str:
    """The script for one WinRM step; it writes one result envelope (contract.py) to its output stream."""
    declared = steps.get(step)
    declared.check_input(data)
    env = _env(override_dir)
    return _render(env, step, ["_base.ps1.j2", declared.template],
                   {"step": step, "mutating": declared.mutating, "input_document": contract.encode_input(data)})


def render_manual(task: str, data: Mapping[str, Any], *, override_dir: Path | None = None) -> str:
    """The one script an administrator runs in the Exchange Management Shell for ``task`` (supports -WhatIf)."""
    if task not in MANUAL_TASKS:
        raise ValueError(f"unknown task {task!r} for a hand-run script; known: {', '.join(MANUAL_TASKS)}")
    contract.validate(f"manual {task} input", data, MANUAL_INPUT, choices=MANUAL_CHOICES)
    env = _env(override_dir)
    return _render(env, f"manual_{task}", [f"manual_{task}.ps1.j2"],
                   {"step": f"manual_{task}", "input_document": contract.encode_input(data)})


def is_exbe_rendering(text: str) -> tuple[bool, str]:
    """Whether ``text`` is exactly what the shipped templates render for its own step and input document."""
    try:
        step, data = contract.parse_script(text)
        expected = render_step(step, data)
    except (ValueError, jinja2.TemplateError) as exc:  # ContractError is a ValueError
        return False, str(exc)
    if text != expected:
        return False, f"the text differs from exbe {__version__}'s {step} template"
    return True, f"exbe {__version__} {step} step"


def to_file_bytes(text: str) -> bytes:
    """A script as Windows PowerShell 5.1 reads it correctly: UTF-8 with BOM (without one it assumes ANSI)."""
    return b"\xef\xbb\xbf" + text.encode("utf-8")
