"""A production task loads only what it uses (issue 26, item 4): neither ``importlib.metadata`` (Invoke and urllib3
import it for a version string) nor the sandbox, nor prometheus_client without ``--metrics``.

Each command runs as a real ``python -m exbe`` process, which lists its ``sys.modules`` when it exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from exbe import lean_imports

from .conftest import PASSWORD, USERNAME
from .exbe_cli import write_config

ROOT = Path(__file__).resolve().parent.parent
NEVER = ("importlib.metadata", "exbe.sandbox")


#: Runs ``python -m exbe ARGS`` and writes the names in ``sys.modules`` at exit (every module the process loaded and
#: kept; ``-X importtime`` misses those loaded through ``importlib.import_module``).
RUN_AND_LIST = """
import atexit, runpy, sys
atexit.register(lambda: sys.stderr.write("\\nMODULES " + " ".join(sorted(sys.modules)) + "\\n"))
sys.argv = ["exbe", *sys.argv[1:]]
runpy.run_module("exbe", run_name="__main__", alter_sys=True)
"""


def _imported(*args: str, cwd: Path) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EXBE_USERNAME": USERNAME, "EXBE_PASSWORD": PASSWORD}
    done = subprocess.run([sys.executable, "-c", RUN_AND_LIST, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    listed = [line for line in done.stderr.splitlines() if line.startswith("MODULES ")]
    assert listed, done.stderr[-2000:]
    modules = set(listed[-1].split()[1:])
    assert "exbe.main" in modules
    return modules, done


def _banned(modules: set[str], *extra: str) -> list[str]:
    return sorted(m for m in modules if m.startswith((*NEVER, *extra)))


@pytest.mark.parametrize("args", [["--help"], ["--list"], ["verify", "--help"]], ids=" ".join)
def test_help_and_list_load_neither_importlib_metadata_nor_the_sandbox(args, tmp_path):
    modules, done = _imported(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _banned(modules, "pypsrp", "requests", "prometheus_client") == []


def test_a_verify_on_servers_loads_neither_importlib_metadata_nor_the_sandbox(fleet, tmp_path):
    config = write_config(fleet, tmp_path / "exbe.yaml")
    modules, done = _imported("-f", str(config), "verify", "--all", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout
    assert {"pypsrp.powershell", "requests", "urllib3"} <= modules, "the run really went through pypsrp"
    assert _banned(modules, "prometheus_client") == []


def test_the_stand_in_reads_the_same_versions_as_importlib_metadata():
    from importlib import metadata

    for name in ("invoke", "urllib3", "requests"):
        assert lean_imports.version(name) == metadata.version(name)
