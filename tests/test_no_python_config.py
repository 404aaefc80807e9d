"""No Python file is ever run as configuration: Invoke's loader would run ./exbe.py, ~/.exbe.py, ./invoke.py and a
``-f x.py`` file; whoever can drop one where a pipeline runs exbe would run code with its credentials."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLANTED = ("exbe.py", "invoke.py", "home/.exbe.py")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A checkout's layout (tasks.py beside the exbe package) with a Python configuration file planted in every
    place Invoke looks for one; each writes a marker file if it ever runs."""
    work = tmp_path / "checkout"
    (tmp_path / "home").mkdir()
    work.mkdir()
    shutil.copy(ROOT / "tasks.py", work / "tasks.py")
    (work / "exbe").symlink_to(ROOT / "exbe", target_is_directory=True)
    for planted in PLANTED:
        target = work / planted if "/" not in planted else tmp_path / planted
        marker = tmp_path / f"RAN-{Path(planted).name}"
        target.write_text(f"open({str(marker)!r}, 'w').write('ran')\nexbe = {{'defaults': {{'days': 1}}}}\n")
    (work / "x.py").write_text(f"open({str(tmp_path / 'RAN-x.py')!r}, 'w').write('ran')\n")
    return work


def _run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(project.parent / "home"), "PYTHONPATH": str(ROOT), "EXBE_SANDBOX_HOSTS": "1",
           "NO_COLOR": "1"}
    for name in ("EXBE_USERNAME", "EXBE_PASSWORD", "INVOKE_RUNTIME_CONFIG", "EXBE_RUNTIME_CONFIG"):
        env.pop(name, None)
    # -P: the working directory is not put on sys.path, as for the installed `exbe` and `invoke` scripts
    return subprocess.run([sys.executable, "-P", "-m", *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def _ran(project: Path) -> list[str]:
    return sorted(path.name for path in project.parent.glob("RAN-*"))


@pytest.mark.parametrize("command", [("exbe", "--list"), ("exbe", "verify", "--sandbox", "--all"),
                                     ("invoke", "--list")], ids=" ".join)
def test_no_planted_python_file_runs_under_either_entry_point(project: Path, command: tuple[str, ...]) -> None:
    result = _run(project, *command)
    assert result.returncode == 0, result.stderr
    assert _ran(project) == [], f"a planted Python file ran: {_ran(project)}"
    assert "verify" in result.stdout
    said = [line for line in result.stderr.splitlines() if " ignored: exbe never runs a Python file" in line]
    assert said, "the file that was not read is named, so nobody believes their settings are in force"


@pytest.mark.parametrize("command", [("exbe", "-f", "x.py", "--list"), ("exbe", "-f", "x.py", "verify", "--sandbox"),
                                     ("invoke", "-f", "x.py", "verify", "--sandbox")], ids=" ".join)
def test_a_python_f_file_is_one_line_and_exit_2(project: Path, command: tuple[str, ...]) -> None:
    for planted in PLANTED:  # only the -f file here: its refusal is the one line
        (project / planted if "/" not in planted else project.parent / planted).unlink()
    result = _run(project, *command)
    assert (result.returncode, result.stderr.count("\n")) == (2, 1), result.stderr
    assert result.stderr.startswith("exbe: -f x.py: exbe reads configuration from YAML or JSON only, never from "
                                    "Python")
    assert _ran(project) == []
