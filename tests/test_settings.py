"""The settings schema: each setting declared once, and everything else (loading, flag help, the docs) from it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

from exbe import settings as schema
from exbe.cli import TaskOptions
from exbe.model import Settings
from exbe.settings import BY_FLAG, OTHER_VARIABLES, SETTINGS, Defaults, flag_help, with_tables

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"


def test_the_settings_tables_in_the_docs_are_the_generated_ones():
    document = DOC.read_text(encoding="utf-8")
    assert with_tables(document) == document, (
        "docs/configuration.md differs from exbe/settings.py: run `python -m exbe.settings --write "
        "docs/configuration.md` and commit the result")


def test_the_docs_say_how_to_regenerate_their_tables():
    assert "python -m exbe.settings --write docs/configuration.md" in DOC.read_text(encoding="utf-8")


def test_regenerating_rewrites_only_the_generated_part(tmp_path):
    copy = tmp_path / "configuration.md"
    copy.write_text(f"# Intro\n\n{schema.BEGIN}\nstale table\n{schema.END}\n\nOutro\n", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "exbe.settings", "--write", str(copy)], check=True, cwd=ROOT)
    text = copy.read_text(encoding="utf-8")
    assert text.startswith("# Intro\n\n") and text.endswith(f"{schema.END}\n\nOutro\n")
    assert "stale table" not in text and "| `days` | `EXBE_DAYS` | `--days` |" in text


def test_every_setting_is_documented_with_its_variable_in_the_docs():
    document = DOC.read_text(encoding="utf-8")
    for known in SETTINGS:
        assert f"| `{known.path}` | `{known.env}` |" in document


def test_every_setting_says_what_it_does_and_variable_names_do_not_collide():
    assert all(known.field.spec.help for known in SETTINGS)
    names = [known.env for known in SETTINGS] + list(OTHER_VARIABLES)
    assert len(names) == len(set(names))


def test_the_run_settings_take_their_defaults_from_the_schema_alone():
    assert Settings() == Settings.of(Defaults())
    hints, declared = typing.get_type_hints(Settings), typing.get_type_hints(Defaults)
    for field in dataclasses.fields(Settings):
        if field.name not in ("force", "dry_run"):
            assert hints[field.name] == declared[field.name], field.name


def test_every_flag_that_overrides_a_setting_shows_the_schemas_help():
    options = {field.name for field in dataclasses.fields(TaskOptions)}
    assert {flag.lstrip("-").replace("-", "_") for flag in BY_FLAG} <= options
    shown = subprocess.run([sys.executable, "-m", "exbe", "renew", "--help"], capture_output=True, text=True,
                           check=True, cwd=ROOT).stdout
    shown = " ".join(shown.split())
    for flag in BY_FLAG:
        assert f"{flag}" in shown and flag_help(flag) in shown, flag


def test_a_flags_help_names_its_default_and_where_else_it_is_set():
    assert flag_help("--days") == ("renew when fewer days are left: integer, at least 0 (default 60; "
                                   "exbe.defaults.days, EXBE_DAYS)")
    assert flag_help("--no-trust").startswith("turn trust off (default on; exbe.defaults.trust, EXBE_TRUST)")
