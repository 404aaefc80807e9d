"""What `pip install` ships: every package of exbe, and for a production install nothing of the sandbox's server
side."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_python_package_under_exbe_is_shipped():
    declared = set(PROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "exbe").rglob("__init__.py")}
    assert found <= declared, f"not in [tool.setuptools] packages: {sorted(found - declared)}"


def test_a_production_install_does_not_pull_the_sandbox_server_side():
    core = {re.split(r"[<>=\[ ;]", requirement, maxsplit=1)[0].lower() for requirement in
            PROJECT["project"]["dependencies"]}
    assert "psrpcore" not in core, "the PSRP server side belongs to exbe[sandbox]"  # (pyspnego comes with pypsrp)
    sandbox = " ".join(PROJECT["project"]["optional-dependencies"]["sandbox"])
    assert "psrpcore" in sandbox
